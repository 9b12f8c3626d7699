"""Restart latency: from a permanent child raising to the first line of its replacement.

One child is supervised one-for-one and crashed on demand, one crash at a time: the driver
waits until an incarnation runs, then tells it to raise. Each incarnation records
``perf_counter()`` at its first line and right before its ``raise``; a sample is the first
line of incarnation k + 1 minus the raise of incarnation k. The driver and the flags it uses
are outside that interval, and the same for corral and both baselines.

``daemon_restarts`` runs the same tree the way ``corral run`` runs it: the daemon's observers
(its log at info through the batching sink, the recent-events ring, the metrics counters, its
systemd bookkeeping), the message timings that metrics turn on, and the daemon's background
tasks (the sink's flusher, the loop monitor). Its baseline is corral in library mode.

The baselines are what one writes by hand: a wrapper that catches the child's exception and
reports it on a queue (asyncio.Queue / a trio memory channel), and a supervisor loop that reads
the queue and spawns a replacement (``TaskGroup.create_task`` / ``nursery.start_soon``).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import IO, TYPE_CHECKING, NoReturn, Protocol, final

import anyio
import trio

import corral
from corral.daemon import config
from corral.daemon.logging import setup
from corral.daemon.main import Daemon

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "Crash",
    "Probe",
    "corral_restarts",
    "daemon_restarts",
    "raw_asyncio_restarts",
    "raw_trio_restarts",
)


class Crash(Exception):
    """The failure a child raises when told to."""


class Flag(Protocol):
    """A one-shot event: ``anyio.Event``, ``asyncio.Event`` and ``trio.Event`` all are."""

    def set(self) -> None: ...

    async def wait(self) -> object: ...


@final
class Probe:
    """The timestamps of every incarnation, and the flags the driver crashes them with."""

    __slots__ = ("first_lines", "go", "new_flag", "raises", "up")

    def __init__(self, new_flag: Callable[[], Flag]) -> None:
        self.new_flag = new_flag
        self.first_lines: list[float] = []
        self.raises: list[float] = []
        self.up = new_flag()  # set by the next incarnation once it runs
        self.go = new_flag()  # set by the driver: the running incarnation may crash now

    async def crash_when_told(self) -> NoReturn:
        """The rest of an incarnation after its first line: report in, wait, raise."""
        go = self.go
        self.up.set()
        await go.wait()
        self.raises.append(time.perf_counter())
        raise Crash

    async def drive(self, crashes: int) -> None:
        """Crash the child *crashes* times, each time once its replacement runs."""
        for _ in range(crashes):
            await self.up.wait()
            self.up = self.new_flag()
            go, self.go = self.go, self.new_flag()
            go.set()
        await self.up.wait()

    def latencies(self, warmup: int) -> list[float]:
        """Seconds from each raise to the next first line, the first *warmup* left out."""
        pairs = zip(self.raises, self.first_lines[1:], strict=False)
        return [first - raised for raised, first in pairs][warmup:]


# -- corral --------------------------------------------------------------------------------


async def _crasher(ctx: corral.Context, probe: Probe) -> None:
    probe.first_lines.append(time.perf_counter())
    ctx.started()
    await probe.crash_when_told()


def _tree(probe: Probe) -> corral.SupervisorSpec:
    """A function actor, permanent, one-for-one, with a restart budget that never runs out."""
    child = corral.ChildSpec(
        "crasher", _crasher, args={"probe": probe}, restart=corral.RestartType.PERMANENT
    )
    return corral.SupervisorSpec(
        [child], strategy=corral.Strategy.ONE_FOR_ONE, intensity=10**9, period=1.0
    )


async def corral_restarts(crashes: int) -> Probe:
    """The tree in library mode: ``open_tree`` with nothing attached."""
    probe = Probe(anyio.Event)
    async with corral.open_tree(_tree(probe)):
        await probe.drive(crashes)
    return probe


async def daemon_restarts(
    crashes: int, backend: str, log_format: str, stream: IO[str] | None = None
) -> Probe:
    """The tree as ``corral run`` runs it on *backend*, logging in *log_format* (``json``: to
    *stream*; ``journal``: to the journald of this process)."""
    probe = Probe(anyio.Event)
    sink = setup(log_format, "info", stream)
    daemon = Daemon(config.parse("[supervisor]\n", "bench"), None, None, backend, sink=sink)
    async with anyio.create_task_group() as background:
        background.start_soon(sink.run)
        background.start_soon(daemon.monitor.run)
        async with corral.open_tree(_tree(probe), observers=daemon.observers(), timings=True):
            await probe.drive(crashes)
        background.cancel_scope.cancel()
    sink.flush()
    return probe


# -- raw asyncio ---------------------------------------------------------------------------


async def raw_asyncio_restarts(crashes: int) -> Probe:
    """A supervisor task reading exits from an asyncio.Queue and re-creating the child task."""
    probe = Probe(asyncio.Event)
    exits: asyncio.Queue[Exception] = asyncio.Queue()
    current: asyncio.Task[None] | None = None

    async def child() -> None:
        probe.first_lines.append(time.perf_counter())
        await probe.crash_when_told()

    async def supervised() -> None:
        try:
            await child()
        except Exception as exc:  # cancellation propagates; any failure is an exit
            exits.put_nowait(exc)

    async def supervisor(tg: asyncio.TaskGroup) -> None:
        nonlocal current
        while True:
            await exits.get()
            current = tg.create_task(supervised())

    async with asyncio.TaskGroup() as tg:
        current = tg.create_task(supervised())
        loop = tg.create_task(supervisor(tg))
        await probe.drive(crashes)
        loop.cancel()
        current.cancel()
    return probe


# -- raw trio ------------------------------------------------------------------------------


async def raw_trio_restarts(crashes: int) -> Probe:
    """A supervisor loop reading exits from a memory channel and ``start_soon``-ing the child."""
    probe = Probe(trio.Event)
    send, receive = trio.open_memory_channel[Exception](math.inf)

    async def child() -> None:
        probe.first_lines.append(time.perf_counter())
        await probe.crash_when_told()

    async def supervised() -> None:
        try:
            await child()
        except Exception as exc:  # cancellation propagates; any failure is an exit
            send.send_nowait(exc)

    async def supervisor(nursery: trio.Nursery) -> None:
        async for _ in receive:
            nursery.start_soon(supervised)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervised)
        nursery.start_soon(supervisor, nursery)
        await probe.drive(crashes)
        nursery.cancel_scope.cancel()
    return probe
