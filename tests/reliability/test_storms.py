"""Crash storms on a real daemon, both backends: thousands of crashes a second, with and
without backoff, each leaving a dead letter. The daemon's memory and descriptors stay flat,
its socket answers throughout, and what it keeps (recent events, dead letters) stays bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import Daemon, Raw, write_config
from tests.reliability.conftest import SOAK, Footprint, Poller

if TYPE_CHECKING:
    from pathlib import Path

STORM_SECONDS = 3.0 * SOAK  # a load parameter; nothing asserts how fast anything is
RSS_SLACK = 4 * 1024 * 1024  # growth allowed after the warm-up (allocator slack): ~800 B a crash
DEAD_LETTERS = 200

TREE = """
[supervisor]
intensity = 1000000000
period = 1.0

[[supervisor.children]]
id = "steady"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "storm"
start = "tests.e2e.actors:DeadLetterStorm"
{backoff}
"""
BACKOFF = {
    "immediate": "",
    "backoff": "backoff = { initial = 0.0005, cap = 0.001, multiplier = 2.0, jitter = 0.5 }",
}


@pytest.mark.parametrize("kind", sorted(BACKOFF))
def test_a_crash_storm_leaks_nothing(
    workdir: Path,
    backend: str,
    daemons: list[Daemon],
    kind: str,
    measured: dict[str, object],
) -> None:
    """Thousands of crashes (each with a dead letter) leave the daemon's memory and
    descriptors flat and its socket answering; recent events and dead letters stay bounded."""
    config = write_config(
        workdir,
        TREE.format(backoff=BACKOFF[kind]),
        daemon=f"dead-letters = {DEAD_LETTERS}",
        log_format="json",
    )
    d = Daemon.start(config, backend)
    daemons.append(d)
    d.mute()
    with Poller(d.socket, "/steady") as poller:
        # The storm's length is its load, not something waited for.
        time.sleep(STORM_SECONDS / 3)  # warm-up: caches, the recent-events ring fill up
        warm = Footprint.of(d)
        time.sleep(STORM_SECONDS * 2 / 3)
        end = Footprint.of(d)
    assert poller.failure is None, poller.failure
    assert poller.answers > 0
    with Raw(d.socket) as client:
        storm = client.ask({"command": "status", "path": "/storm"})["result"]
        letters = client.ask({"command": "dead-letters", "limit": 10000})["result"]
        events = client.ask({"command": "events", "recent": 1000})["result"]
    crashes = storm["restarts"]
    assert crashes > 1000, storm  # a storm, not a drizzle
    assert len(letters) == DEAD_LETTERS // 20  # one path's newest of a reason, not every one
    assert {letter["path"] for letter in letters} == {"/storm"}
    assert len(events) == 1000
    assert end.fds <= warm.fds + 2
    assert end.rss - warm.rss < RSS_SLACK, (warm, end)
    measured.update(
        crashes=crashes, rss_growth_kib=(end.rss - warm.rss) // 1024, **poller.figures()
    )
    assert d.stop() == 0
