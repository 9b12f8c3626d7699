"""Churn: 100,000 dynamic children (and 6,000 dynamic supervisors) started and terminated
under a daemon in its production configuration (metrics and their timings on, every event
logged, counted and kept in the recent-events ring), with no scrape in between. Memory stays
flat: what is traced over the last 20,000 (5,000) stays within a constant, far below what one
forgotten byte string per child would leave. The daemon runs in-process so that tracemalloc
sees every allocation; it is the same ``Daemon`` that ``corral run`` serves."""

from __future__ import annotations

import gc
import logging
import re
import time
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from tests.integration.test_daemon import make_daemon, serving
from tests.reliability.conftest import SOAK

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

GROWTH = 1024 * 1024  # bytes: over 20,000 children a leak of 64 bytes each would exceed it

POOL = """
[supervisor]
[[supervisor.children]]
id = "steady"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "pool"
type = "supervisor"
max-children = 10
child = {template}
"""
# name: (the pool's template, how many children churn, over how many of the last the memory
# is traced: everything before is warm-up)
TEMPLATES = {
    "workers": (
        '{ id = "w", start = "tests.e2e.actors:Echo", restart = "temporary" }',
        100_000,
        20_000,
    ),
    "supervisors": (
        '{ id = "s", type = "supervisor", restart = "temporary", children = ['
        '{ id = "w", start = "tests.e2e.actors:Echo" }] }',
        6_000,
        5_000,
    ),
}


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
async def test_churn_leaves_memory_flat(
    workdir: Path, anyio_backend: str, measured: dict[str, object], kind: str
) -> None:
    """100,000 pool children (6,000 pool supervisors, each with a child) started and
    terminated: traced memory stays flat over the last 20,000 (5,000), the pool ends empty,
    and the daemon still answers."""
    template, count, traced = TEMPLATES[kind]
    children = count * SOAK
    daemon = make_daemon(
        workdir,
        anyio_backend,
        POOL.format(template=template),
        daemon='metrics-listen = "127.0.0.1:0"',
    )
    logging.getLogger("corral").setLevel(logging.WARNING)  # 200,000 info lines say nothing here
    # The guard is a hang's, not a measure; the test keeps no events (serving's log would).
    async with serving(daemon, guard=120.0 * SOAK, observe=False) as running:
        pool = running.tree.supervisor("/pool")
        started = time.perf_counter()
        for n in range(children):
            path = await pool.start_child()
            assert path is not None  # it started (a child declining would answer None)
            await pool.terminate_child(path.rsplit("/", 1)[1])
            if n == children - traced:
                gc.collect()
                tracemalloc.start()
                before = tracemalloc.take_snapshot()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        measured.update(
            children=children,
            per_child_us=round((time.perf_counter() - started) / children * 1e6, 1),
            traced_growth_kib=grown // 1024,
        )
        assert grown < GROWTH
        assert pool.count_children().active == 0
        conn = await running.connect()
        assert (await conn.ok("status", path="/steady"))["state"] == "running"
        metrics = await conn.ok("metrics")
        assert not re.search(r'path="/pool/\d+"', metrics)  # the pool is one series, not 100,000
