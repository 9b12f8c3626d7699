"""Message throughput: casts (one-way) and calls (request and reply) into one actor.

Casts: one producer task sends ``n`` small ints as fast as it can into one consumer through a
bounded queue of 1024; the clock stops when the consumer has taken the last one. corral uses
``await ref.cast(i)`` into a class actor (mailbox capacity 1024, the default); the baselines use
``asyncio.Queue(1024)`` and ``trio.open_memory_channel(1024)``.

Calls: one caller, ``n`` round trips one after another. corral uses ``await ref.call(i)``; the
baselines put ``(i, reply)`` on the same kind of queue and wait for the reply: an
``asyncio.Future`` on asyncio, a one-shot ``trio.Event`` with a value slot on trio.
"""

from __future__ import annotations

import asyncio
import time
from typing import final

import anyio
import trio

import corral

__all__ = (
    "QUEUE_SIZE",
    "corral_calls",
    "corral_casts",
    "raw_asyncio_calls",
    "raw_asyncio_casts",
    "raw_trio_calls",
    "raw_trio_casts",
)

QUEUE_SIZE = 1024


class Sink(corral.Actor):
    """Counts what it handles; replies with the message itself."""

    def __init__(self, expected: int, done: anyio.Event) -> None:
        self.expected = expected
        self.done = done
        self.count = 0

    async def handle(self, message: object) -> object:
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return message


class GuardedSink(Sink):
    """A Sink that handles each message through its closed breaker ``dep``."""

    async def handle(self, message: object) -> object:
        async with self.ctx.breaker("dep"):
            self.count += 1
            if self.count == self.expected:
                self.done.set()
            return message


class ProbedSink(Sink):
    """A Sink with a health probe (every ``PROBE_EVERY`` seconds)."""

    async def health(self) -> bool:
        return True


PROBE_EVERY = 0.1  # ten times a second: far more often than a real probe

BREAKERS = {"dep": corral.BreakerSpec(), "other": corral.BreakerSpec(failure_rate=0.5)}


def _sink_tree(
    expected: int, done: anyio.Event, sink: type[Sink] = Sink, *, breakers: bool = False
) -> corral.SupervisorSpec:
    mailbox = corral.MailboxSpec(capacity=QUEUE_SIZE)
    args = {"expected": expected, "done": done}
    child = corral.ChildSpec(
        "sink",
        sink,
        args=args,
        mailbox=mailbox,
        breakers=BREAKERS if breakers else {},
        health=corral.HealthSpec(interval=PROBE_EVERY) if sink is ProbedSink else None,
    )
    return corral.SupervisorSpec([child])


# -- casts ---------------------------------------------------------------------------------


async def corral_casts(
    n: int, *, timings: bool = False, sink: type[Sink] = Sink, breakers: bool = False
) -> float:
    """Casts per second into one actor (*timings*: as the daemon runs it with metrics on;
    *breakers*: the child declares two, closed; *sink*: GuardedSink handles each message
    through one)."""
    done = anyio.Event()
    spec = _sink_tree(n, done, sink, breakers=breakers)
    async with corral.open_tree(spec, timings=timings) as tree:
        ref = tree.lookup("/sink")
        start = time.perf_counter()
        for i in range(n):
            await ref.cast(i)
        await done.wait()
        return n / (time.perf_counter() - start)


async def raw_asyncio_casts(n: int) -> float:
    """Puts per second through an asyncio.Queue(1024) to one consumer task."""
    queue: asyncio.Queue[int] = asyncio.Queue(QUEUE_SIZE)

    async def consumer() -> None:
        for _ in range(n):
            await queue.get()

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(consumer())
        start = time.perf_counter()
        for i in range(n):
            await queue.put(i)
        await task
        return n / (time.perf_counter() - start)


async def raw_trio_casts(n: int) -> float:
    """Sends per second through a trio memory channel of 1024 to one consumer task."""
    send, receive = trio.open_memory_channel[int](QUEUE_SIZE)
    finished = trio.Event()

    async def consumer() -> None:
        for _ in range(n):
            await receive.receive()
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        start = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await finished.wait()
        return n / (time.perf_counter() - start)


# -- calls ---------------------------------------------------------------------------------


async def corral_calls(
    n: int, *, timings: bool = False, sink: type[Sink] = Sink, breakers: bool = False
) -> float:
    """Call round trips per second to one actor (*timings*: metrics on; *breakers*, *sink*:
    as for casts)."""
    done = anyio.Event()
    spec = _sink_tree(n, done, sink, breakers=breakers)
    async with corral.open_tree(spec, timings=timings) as tree:
        ref = tree.lookup("/sink")
        start = time.perf_counter()
        for i in range(n):
            reply = await ref.call(i, timeout=5)
            assert reply == i
        elapsed = time.perf_counter() - start
        assert done.is_set()
        return n / elapsed


async def raw_asyncio_calls(n: int) -> float:
    """Round trips per second: ``(i, future)`` on an asyncio.Queue(1024), the server resolves."""
    requests: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue(QUEUE_SIZE)

    async def server() -> None:
        while True:
            payload, reply = await requests.get()
            reply.set_result(payload)

    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server())
        start = time.perf_counter()
        for i in range(n):
            future: asyncio.Future[int] = loop.create_future()
            await requests.put((i, future))
            assert await future == i
        elapsed = time.perf_counter() - start
        task.cancel()
    return n / elapsed


@final
class _Reply:
    """A one-shot reply slot for trio."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: int | None = None

    def resolve(self, value: int) -> None:
        self.value = value
        self.event.set()

    async def wait(self) -> int | None:
        await self.event.wait()
        return self.value


async def raw_trio_calls(n: int) -> float:
    """Round trips per second: ``(i, reply)`` on a memory channel, the server sets the reply."""
    send, receive = trio.open_memory_channel[tuple[int, _Reply]](QUEUE_SIZE)

    async def server() -> None:
        async for payload, reply in receive:
            reply.resolve(payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        start = time.perf_counter()
        for i in range(n):
            reply = _Reply()
            await send.send((i, reply))
            assert await reply.wait() == i
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n / elapsed


async def corral_casts_timed(n: int) -> float:
    return await corral_casts(n, timings=True)


async def corral_calls_timed(n: int) -> float:
    return await corral_calls(n, timings=True)


async def corral_casts_breakers(n: int) -> float:
    return await corral_casts(n, breakers=True)


async def corral_calls_breakers(n: int) -> float:
    return await corral_calls(n, breakers=True)


async def corral_casts_guarded(n: int) -> float:
    return await corral_casts(n, sink=GuardedSink, breakers=True)


async def corral_calls_guarded(n: int) -> float:
    return await corral_calls(n, sink=GuardedSink, breakers=True)


async def corral_casts_probed(n: int) -> float:
    return await corral_casts(n, sink=ProbedSink)


async def corral_calls_probed(n: int) -> float:
    return await corral_calls(n, sink=ProbedSink)
