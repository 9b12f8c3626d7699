"""Drain on stop (``drain=True``): a child stopped for good first handles what is queued,
within its shutdown time; a restart does not drain (its mailbox waits for the next
incarnation). On both backends."""

from __future__ import annotations

import anyio
import pytest

import corral
from corral.daemon import config
from corral.supervisors.spec import stop_bound
from tests.integration.support import HANG_GUARD, EventLog

pytestmark = pytest.mark.anyio


class Worker(corral.Actor):
    """Handles "job" messages once *gate* is set (records each); "hang" never ends."""

    def __init__(self, gate: anyio.Event, done: list[object]) -> None:
        self.gate, self.done = gate, done

    async def handle(self, message: object) -> object:
        await self.gate.wait()
        if message == "hang":
            await anyio.sleep_forever()
        self.done.append(message)
        return message


def tree(gate: anyio.Event, done: list[object], **options: object) -> corral.SupervisorSpec:
    child = corral.ChildSpec("w", Worker, args={"gate": gate, "done": done}, **options)  # type: ignore[arg-type]  # ChildSpec's keywords
    return corral.SupervisorSpec([child], intensity=10)


async def queue_jobs(ref: corral.ActorRef, count: int) -> None:
    for n in range(count):
        await ref.cast(n)


async def test_a_terminated_child_handles_its_queue_first() -> None:
    gate, done = anyio.Event(), list[object]()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(gate, done, drain=True)) as running:
            await queue_jobs(running.lookup("/w"), 50)
            gate.set()  # its first job runs once the stop has begun
            await running.supervisor().terminate_child("w")
            assert done == list(range(50))
            assert running.dead_letters() == ()


async def test_without_drain_the_queue_is_left() -> None:
    """The job being handled is cut short (a dead letter, "stopped"); the rest stays queued."""
    gate, done = anyio.Event(), list[object]()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(gate, done)) as running:
            await queue_jobs(running.lookup("/w"), 50)
            await running.supervisor().terminate_child("w")
            [w] = running.statistics().children
            assert (w.mailbox_depth, w.dead_letters) == (49, 1)
    assert done == []


async def test_the_tree_stopping_drains_too() -> None:
    gate, done = anyio.Event(), list[object]()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(gate, done, drain=True)) as running:
            await queue_jobs(running.lookup("/w"), 20)
            gate.set()
            letters = running  # read once it has stopped
    assert done == list(range(20))
    assert letters.dead_letters() == ()


async def test_a_drain_ends_with_the_shutdown_time() -> None:
    """A job that never ends: the drain is cut at the shutdown time; the rest stays queued
    and becomes undelivered dead letters when the tree stops."""
    gate, done = anyio.Event(), list[object]()
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            tree(gate, done, drain=True, shutdown=0.05), observers=[events]
        ) as running:
            ref = running.lookup("/w")
            await ref.cast(1)
            await ref.cast("hang")
            await ref.cast(2)
            gate.set()
            await running.supervisor().terminate_child("w")
            [w] = running.statistics().children
            assert (w.state, w.mailbox_depth) == (corral.ChildStatus.STOPPED, 1)
    assert done == [1]
    assert events.find(corral.ChildAbandoned, "/w") == []  # cancelled in time, not abandoned
    assert [(d.message, d.reason) for d in running.dead_letters()] == [
        ("hang", "stopped"),
        (2, "undelivered"),
    ]


async def test_a_restart_does_not_drain() -> None:
    """A one-for-all restart stops the drained child without handling its queue: the job it
    was handling is cut short (a dead letter, "stopped"), the rest waits in the mailbox,
    which outlives the incarnation, and the next one handles it."""
    gate, done = anyio.Event(), list[object]()
    events = EventLog()

    class Sibling(corral.Actor):
        async def handle(self, message: object) -> object:
            msg = "crash"
            raise RuntimeError(msg)

    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("w", Worker, args={"gate": gate, "done": done}, drain=True),
            corral.ChildSpec("s", Sibling),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
        intensity=10,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec, observers=[events]) as running:
            await queue_jobs(running.lookup("/w"), 10)
            running.lookup("/s").cast_nowait("x")
            await events.wait_for(corral.ChildStarted, "/w", restarts=1)
            assert done == []  # not drained: still queued for the new incarnation
            gate.set()
            await running.lookup("/w").call("last")
            [letter] = running.dead_letters("/w")
    assert done == [*range(1, 10), "last"]
    assert (letter.message, letter.reason) == (0, "stopped")


def test_drain_is_for_an_actor_class() -> None:
    async def fn(ctx: corral.Context) -> None:
        pass

    with pytest.raises(corral.SpecError, match="drain applies to an Actor class"):
        corral.ChildSpec("f", fn, drain=True)
    with pytest.raises(corral.SpecError, match="drain must be True or False, got 1"):
        corral.ChildSpec("w", Worker, drain=1)  # type: ignore[arg-type]  # on purpose
    [child] = config.parse(
        '[[supervisor.children]]\nid = "w"\nstart = "tests.integration.test_drain:Worker"\n'
        "args = { gate = 1, done = 2 }\ndrain = true\n",
        "corral.toml",
    ).spec.children
    assert child.drain is True
    assert stop_bound(child) == 10.0  # its queue, then its cleanup


async def test_a_message_that_woke_an_idle_actor_is_drained() -> None:
    """A cast wakes the idle actor, and the stop comes before it runs: it still handles the
    message before it returns."""
    gate, done = anyio.Event(), list[object]()
    gate.set()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(gate, done, drain=True)) as running:
            await running.lookup("/w").call("first")  # it ran, and idles again
            running.lookup("/w").cast_nowait("late")
            await running.supervisor().terminate_child("w")
            assert done == ["first", "late"]
