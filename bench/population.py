"""Many idle actors: memory per actor, and the time to start and to stop them all.

corral: one supervisor with ``n`` children of a class actor without ``on_start`` (so the
supervisor need not wait for each one's readiness). Start is ``open_tree`` entered and every
actor parked on its empty mailbox; stop is leaving the ``async with`` block (children stopped
one by one in reverse start order, as OTP does).

Baselines: ``n`` tasks in one ``asyncio.TaskGroup`` / trio nursery, each awaiting its own
``asyncio.Queue(1024).get()`` / memory channel ``receive()``. Start ends when the last task
has run up to that await (a counter and an event); stop cancels them all and waits.

Memory is a separate run from the timings, because tracing allocations slows everything down:
``tracemalloc``'s current size once everything is up and idle, minus its size before the specs
(or queues) were built, both after ``gc.collect()``, divided by ``n``. The collector is paused
while the actors start, which changes what is live afterwards in no way but saves time.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from typing import final

import anyio
import trio

import corral

__all__ = (
    "Timings",
    "corral_memory",
    "corral_timings",
    "raw_asyncio_memory",
    "raw_asyncio_timings",
    "raw_trio_memory",
    "raw_trio_timings",
)

_WARMUP = 16
"""Actors started once before memory is traced, so one-time allocations are not counted."""


@final
class Timings:
    """Seconds to start and to stop one population."""

    __slots__ = ("start", "stop")

    def __init__(self, start: float, stop: float) -> None:
        self.start = start
        self.stop = stop


@final
class _Traced:
    """Bytes allocated and still live since ``begin``, as ``tracemalloc`` counts them."""

    __slots__ = ("base",)

    def __init__(self) -> None:
        self.base = 0

    def begin(self) -> None:
        gc.collect()
        gc.disable()
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]

    def end(self) -> int:
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - self.base
        tracemalloc.stop()
        gc.enable()
        return size


class Idle(corral.Actor):
    """An actor that never gets a message."""

    async def handle(self, message: object) -> object:
        return None


def _idle_tree(n: int) -> corral.SupervisorSpec:
    return corral.SupervisorSpec([corral.ChildSpec(f"idle-{i}", Idle) for i in range(n)])


# -- corral --------------------------------------------------------------------------------


async def corral_timings(n: int) -> Timings:
    spec = _idle_tree(n)
    begin = time.perf_counter()
    async with corral.open_tree(spec):
        await anyio.wait_all_tasks_blocked()  # every actor parked on its mailbox
        up = time.perf_counter()
    return Timings(up - begin, time.perf_counter() - up)


async def corral_memory(n: int) -> float:
    """Bytes per idle actor: its spec, slot, cell, mailbox, ref, task and whatever they hold."""
    async with corral.open_tree(_idle_tree(_WARMUP)):  # one-time allocations and imports
        await anyio.wait_all_tasks_blocked()
    traced = _Traced()
    traced.begin()
    async with corral.open_tree(_idle_tree(n)) as tree:
        await anyio.wait_all_tasks_blocked()
        size = traced.end()
        assert tree.supervisor().count_children().active == n
    return size / n


async def corral_memory_awake(n: int) -> float:
    """Bytes per idle actor that has handled one message, so that it has its own task
    (an actor without on_start and on_stop stays dormant, with no task, until then)."""
    async with corral.open_tree(_idle_tree(_WARMUP)):
        await anyio.wait_all_tasks_blocked()
    traced = _Traced()
    traced.begin()
    async with corral.open_tree(_idle_tree(n)) as tree:
        for i in range(n):
            tree.lookup(f"/idle-{i}").cast_nowait(None)
        await anyio.wait_all_tasks_blocked()
        size = traced.end()
        assert sum(c.handled for c in tree.statistics().children) == n
    return size / n


# -- raw asyncio ---------------------------------------------------------------------------


async def _asyncio_population(n: int, traced: _Traced | None) -> tuple[Timings, int]:
    parked = 0
    all_parked = asyncio.Event()

    async def idle(queue: asyncio.Queue[object]) -> None:
        nonlocal parked
        parked += 1
        if parked == n:
            all_parked.set()
        await queue.get()

    size = 0
    begin = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(idle(asyncio.Queue(1024))) for _ in range(n)]
        await all_parked.wait()
        await asyncio.sleep(0)  # the last one parks
        up = time.perf_counter()
        if traced is not None:
            size = traced.end()
        for task in tasks:
            task.cancel()
    return Timings(up - begin, time.perf_counter() - up), size


async def raw_asyncio_timings(n: int) -> Timings:
    timings, _ = await _asyncio_population(n, None)
    return timings


async def raw_asyncio_memory(n: int) -> float:
    await _asyncio_population(_WARMUP, None)
    traced = _Traced()
    traced.begin()
    _, size = await _asyncio_population(n, traced)
    return size / n


# -- raw trio ------------------------------------------------------------------------------


async def _trio_population(n: int, traced: _Traced | None) -> tuple[Timings, int]:
    parked = 0
    all_parked = trio.Event()

    async def idle(receive: trio.MemoryReceiveChannel[object]) -> None:
        nonlocal parked
        parked += 1
        if parked == n:
            all_parked.set()
        await receive.receive()

    size = 0
    senders: list[trio.MemorySendChannel[object]] = []
    begin = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            send, receive = trio.open_memory_channel[object](1024)
            senders.append(send)  # someone holds the sending end, as with a mailbox
            nursery.start_soon(idle, receive)
        await all_parked.wait()
        await trio.lowlevel.checkpoint()  # the last one parks
        up = time.perf_counter()
        if traced is not None:
            size = traced.end()
        nursery.cancel_scope.cancel()
    assert len(senders) == n
    return Timings(up - begin, time.perf_counter() - up), size


async def raw_trio_timings(n: int) -> Timings:
    timings, _ = await _trio_population(n, None)
    return timings


async def raw_trio_memory(n: int) -> float:
    await _trio_population(_WARMUP, None)
    traced = _Traced()
    traced.begin()
    _, size = await _trio_population(n, traced)
    return size / n
