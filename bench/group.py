"""Group restarts and large awake populations, beside the same done by hand.

Group restart: ``n`` members under one supervisor (one-for-all, or rest-for-one with the first
member crashing, so that every member restarts either way). Each member has handled a message
before the crash, so it has a task of its own, as members of a working service do. A sample is
from the crashing member's ``raise`` to the group running again: for corral, the last
member's ``ChildStarted`` event (an observer counts them); by hand, the last new member's
first line. Members without on_start come back dormant (they get a task with their next
message; nothing of them runs before); a second variant has members with ``on_start``, which
come back with a task each, started one after another.

By hand (``raw_*_group``): a wrapper reports a member's exception on a queue; the supervisor
loop cancels the other members and waits for them (asyncio: ``task.cancel()`` on each in
reverse start order, then ``asyncio.wait``; trio: the group's nursery is cancelled), then
spawns ``n`` new members.

Awake start: ``n`` actors that have a task once started: with ``on_start`` (the supervisor
waits for each one's readiness, in order, as OTP does), or woken by a first message (dormant
actors each sent one message). By hand: ``n`` tasks spawned, each parked on its own queue;
and the least a supervisor on anyio adds to that (``raw_*_scoped_spawn``): each task inside a
cancel scope of its own, the handle that stops one task alone with shields respected, spawned
all at once or each awaited in turn.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from typing import final

import anyio
import anyio.lowlevel
import trio

import corral
from bench import population

__all__ = (
    "corral_awake_start",
    "corral_group_restart",
    "raw_asyncio_group",
    "raw_asyncio_scoped_spawn",
    "raw_asyncio_spawn",
    "raw_trio_group",
    "raw_trio_scoped_spawn",
    "raw_trio_spawn",
)


class Crash(Exception):
    """The failure a member raises when told to."""


@final
class Member(corral.Actor):
    """A worker without on_start or on_stop: it crashes when told to."""

    async def handle(self, message: object) -> object:
        if message == "crash":
            _crashed.append(time.perf_counter())
            raise Crash
        return None


_crashed: list[float] = []


@final
class AwakeMember(corral.Actor):
    """A member with on_start: every incarnation has a task from its start, and a restart
    waits for each one's readiness in turn (OTP's order)."""

    async def on_start(self) -> None:
        pass

    async def handle(self, message: object) -> object:
        if message == "crash":
            _crashed.append(time.perf_counter())
            raise Crash
        return None


async def corral_group_restart(
    n: int, restarts: int, strategy: corral.Strategy, *, on_start: bool = False
) -> float:
    """The median seconds from a member's raise to the group running again (*on_start*:
    members that have one, so that each restarted member has a task again)."""
    member = AwakeMember if on_start else Member
    spec = corral.SupervisorSpec(
        [corral.ChildSpec(f"m-{i}", member) for i in range(n)],
        strategy=strategy,
        intensity=10**9,
        period=1,
    )
    samples: list[float] = []
    restarted = 0
    all_up = anyio.Event()
    up = 0.0

    def count(event: corral.Event) -> None:
        nonlocal restarted, up
        if isinstance(event, corral.ChildStarted) and event.restart:
            restarted += 1
            if restarted == n:
                up = time.perf_counter()
                all_up.set()

    async with corral.open_tree(spec, observers=[count]) as tree:
        refs = [tree.lookup(f"/m-{i}") for i in range(n)]
        for _ in range(restarts):
            for ref in refs:  # every member awake, with its own task
                ref.cast_nowait(None)
            await refs[-1].call(None)  # the last has handled its message, so all have
            _crashed.clear()
            restarted = 0
            all_up = anyio.Event()
            refs[0].cast_nowait("crash")
            await all_up.wait()
            assert tree.supervisor().count_children().active == n
            samples.append(up - _crashed[0])
    return statistics.median(samples)


class Awake(corral.Actor):
    """An actor with on_start: it has its task from its start."""

    async def on_start(self) -> None:
        pass

    async def handle(self, message: object) -> object:
        return None


@final
class Woken(corral.Actor):
    """A dormant actor until its first message, which it counts."""

    async def handle(self, message: object) -> object:
        _handled.append(None)
        if len(_handled) == message:
            _all_handled.set()
        return None


_handled: list[None] = []
_all_handled = anyio.Event()


async def corral_awake_start(n: int, *, woken: bool) -> float:
    """Seconds until ``n`` actors each run a task parked on its empty mailbox: with on_start
    (``woken=False``: ``open_tree`` is entered once the last on_start has returned), or
    dormant ones each sent a message (``woken=True``: until the last has handled it)."""
    global _all_handled  # one per run: an Event belongs to its event loop
    _handled.clear()
    _all_handled = anyio.Event()
    start = Woken if woken else Awake
    spec = corral.SupervisorSpec([corral.ChildSpec(f"a-{i}", start) for i in range(n)])
    began = time.perf_counter()
    async with corral.open_tree(spec) as tree:
        if woken:
            for i in range(n):
                tree.lookup(f"/a-{i}").cast_nowait(n)
            await _all_handled.wait()
        await anyio.lowlevel.checkpoint()  # the last one parks
        up = time.perf_counter()
        assert tree.supervisor().count_children().active == n
    return up - began


# -- by hand on asyncio --------------------------------------------------------------------


async def _on_start() -> None:
    """A hand-written member's setup: as ``AwakeMember.on_start``, it does nothing."""


async def raw_asyncio_group(n: int, restarts: int, *, ordered: bool = False) -> float:
    """The median seconds from a member's raise to the group running again, by hand
    (*ordered*: each member runs its setup and is awaited before the next is spawned, the
    start order that corral keeps for members with ``on_start``)."""
    exits: asyncio.Queue[BaseException] = asyncio.Queue()
    crashed = 0.0
    up = 0.0
    running = 0
    samples: list[float] = []
    all_up = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def member(queue: asyncio.Queue[object], ready: asyncio.Future[None] | None) -> None:
        nonlocal running, up
        if ready is not None:
            await _on_start()
            ready.set_result(None)
        running += 1
        if running == n:
            up = time.perf_counter()
            all_up.set()
        while True:
            if await queue.get() == "crash":
                raise Crash

    async def wrapper(queue: asyncio.Queue[object], ready: asyncio.Future[None] | None) -> None:
        try:
            await member(queue, ready)
        except Crash as exc:
            nonlocal crashed
            crashed = time.perf_counter()
            exits.put_nowait(exc)

    async with asyncio.TaskGroup() as tg:

        async def spawn() -> tuple[list[asyncio.Task[None]], list[asyncio.Queue[object]]]:
            nonlocal running
            running = 0
            all_up.clear()
            queues: list[asyncio.Queue[object]] = [asyncio.Queue() for _ in range(n)]
            if not ordered:
                return [tg.create_task(wrapper(q, None)) for q in queues], queues
            tasks = []
            for q in queues:
                ready = loop.create_future()
                tasks.append(tg.create_task(wrapper(q, ready)))
                await ready
            return tasks, queues

        tasks, queues = await spawn()
        await all_up.wait()
        for _ in range(restarts):
            queues[0].put_nowait("crash")
            await exits.get()
            for task in reversed(tasks):
                task.cancel()
            await asyncio.wait(tasks)
            tasks, queues = await spawn()
            await all_up.wait()
            samples.append(up - crashed)
        for task in tasks:
            task.cancel()
    return statistics.median(samples)


async def raw_asyncio_spawn(n: int) -> float:
    """The ``lifecycle`` baseline's start: *n* tasks spawned, each parked on its queue."""
    return (await population.raw_asyncio_timings(n)).start


async def raw_asyncio_scoped_spawn(n: int, *, ordered: bool) -> float:
    """*n* tasks spawned, each inside an anyio cancel scope of its own (what stops one task
    alone, shields inside it respected) and parked on its queue; *ordered*: each runs its
    setup and is awaited before the next is spawned. The least any supervisor on anyio adds
    to bare spawning, measured beside corral's start."""
    parked = 0
    all_parked = asyncio.Event()
    new_scope = type(anyio.CancelScope())  # anyio's asyncio class, looked up once
    loop = asyncio.get_running_loop()

    async def member(queue: asyncio.Queue[object], ready: asyncio.Future[None] | None) -> None:
        nonlocal parked
        with new_scope():
            if ready is not None:
                await _on_start()
                ready.set_result(None)
                del ready  # held no longer than corral holds a readiness
            parked += 1
            if parked == n:
                all_parked.set()
            await queue.get()

    begin = time.perf_counter()
    tasks = []
    for _ in range(n):
        ready = loop.create_future() if ordered else None
        tasks.append(loop.create_task(member(asyncio.Queue(1024), ready)))
        if ready is not None:
            await ready
    await all_parked.wait()
    await asyncio.sleep(0)  # the last one parks
    up = time.perf_counter()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    return up - begin


# -- by hand on trio -----------------------------------------------------------------------


async def raw_trio_group(n: int, restarts: int, *, ordered: bool = False) -> float:
    """As ``raw_asyncio_group``; *ordered*: each member is started with ``nursery.start``
    and runs its setup before ``task_status.started()``."""
    send_exit, exits = trio.open_memory_channel[BaseException](math.inf)
    crashed = 0.0
    up = 0.0
    running = 0
    samples: list[float] = []

    async def member(
        receive: trio.MemoryReceiveChannel[object],
        all_up: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        nonlocal running, up
        if ordered:
            await _on_start()
            task_status.started()
        running += 1
        if running == n:
            up = time.perf_counter()
            all_up.set()
        while True:
            if await receive.receive() == "crash":
                raise Crash

    async def wrapper(
        receive: trio.MemoryReceiveChannel[object],
        all_up: trio.Event,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await member(receive, all_up, task_status)
        except Crash as exc:
            nonlocal crashed
            crashed = time.perf_counter()
            send_exit.send_nowait(exc)

    first = True
    for _ in range(restarts + 1):
        running = 0
        all_up = trio.Event()
        async with trio.open_nursery() as nursery:
            senders = []
            for _ in range(n):
                send, receive = trio.open_memory_channel[object](math.inf)
                senders.append(send)
                if ordered:
                    await nursery.start(wrapper, receive, all_up)
                else:
                    nursery.start_soon(wrapper, receive, all_up)
            await all_up.wait()
            if not first:
                samples.append(up - crashed)
            first = False
            if len(samples) == restarts:
                nursery.cancel_scope.cancel()
                break
            senders[0].send_nowait("crash")
            await exits.receive()
            nursery.cancel_scope.cancel()
    return statistics.median(samples)


async def raw_trio_spawn(n: int) -> float:
    """The ``lifecycle`` baseline's start: *n* tasks spawned, each parked on its channel."""
    return (await population.raw_trio_timings(n)).start


async def raw_trio_scoped_spawn(n: int, *, ordered: bool) -> float:
    """As ``raw_asyncio_scoped_spawn``, with trio's own cancel scope (*ordered*: the spawner
    waits on an event each member sets after its setup; ``nursery.start`` costs twice that)."""
    parked = 0
    all_parked = trio.Event()

    async def member(receive: trio.MemoryReceiveChannel[object], ready: trio.Event | None) -> None:
        nonlocal parked
        with trio.CancelScope():
            if ready is not None:
                await _on_start()
                ready.set()
                del ready  # held no longer than corral holds a readiness
            parked += 1
            if parked == n:
                all_parked.set()
            await receive.receive()

    senders: list[trio.MemorySendChannel[object]] = []
    begin = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            send, receive = trio.open_memory_channel[object](1024)
            senders.append(send)  # someone holds the sending end, as with a mailbox
            ready = trio.Event() if ordered else None
            nursery.start_soon(member, receive, ready)
            if ready is not None:
                await ready.wait()
        await all_parked.wait()
        await trio.lowlevel.checkpoint()  # the last one parks
        up = time.perf_counter()
        nursery.cancel_scope.cancel()
    assert len(senders) == n
    return up - begin
