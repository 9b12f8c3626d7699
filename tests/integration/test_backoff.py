"""Restart backoff: delayed restarts, their events and states, and what ends a wait early."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog, Worker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio

LONG = corral.Backoff(initial=60.0, jitter=0)
"""A backoff no test waits out: anything that ends its wait must do so early."""


def backoff_tree(
    backoff: corral.Backoff,
    *,
    strategy: corral.Strategy = corral.Strategy.ONE_FOR_ONE,
    intensity: int = 3,
) -> corral.SupervisorSpec:
    """Worker ``a`` with *backoff*, and worker ``b`` without."""
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("a", Worker, args={"name": "a"}, backoff=backoff),
            corral.ChildSpec("b", Worker, args={"name": "b"}),
        ],
        strategy=strategy,
        intensity=intensity,
    )


def child(tree: corral.Tree, child_id: str) -> corral.ChildStatistics:
    [stats] = [c for c in tree.statistics().children if c.id == child_id]
    return stats


async def crash_and_wait_for_schedule(tree: corral.Tree, events: EventLog) -> None:
    tree.lookup("/a").cast_nowait("crash")
    await events.wait_for(corral.RestartScheduled, "/a")


async def test_backoff_publishes_restart_scheduled_with_its_delay() -> None:
    """A crashed child with a backoff gets one RestartScheduled carrying the backoff's delay."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(corral.Backoff(initial=0.05, jitter=0))) as tree:
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
    assert [(e.supervisor, e.delay) for e in events.find(corral.RestartScheduled, "/a")] == [
        ("/", 0.05)
    ]


async def test_child_is_in_backoff_until_restarted_then_running() -> None:
    """While its restart waits the child is BACKOFF with next_restart_at; then RUNNING again."""
    seen: list[tuple[corral.ChildStatus, float | None, float]] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(corral.Backoff(initial=0.05, jitter=0))) as tree:

            def snapshot(event: corral.Event) -> None:
                if isinstance(event, corral.RestartScheduled):
                    stats = child(tree, "a")
                    seen.append((stats.state, stats.next_restart_at, event.at + event.delay))

            tree.events.subscribe(snapshot)
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
            after = child(tree, "a")
    [(state, next_restart_at, due)] = seen
    assert (state, next_restart_at) == (corral.ChildStatus.BACKOFF, due)
    assert (after.state, after.next_restart_at, after.restarts) == (
        corral.ChildStatus.RUNNING,
        None,
        1,
    )


async def test_consecutive_crashes_multiply_the_delay() -> None:
    """Each consecutive restart waits ``multiplier`` times longer than the one before."""
    events = EventLog()
    backoff = corral.Backoff(initial=0.01, multiplier=3.0, jitter=0)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(backoff)) as tree:
            tree.events.subscribe(events)
            for restarts in (1, 2):
                tree.lookup("/a").cast_nowait("crash")
                await events.wait_for(corral.ChildStarted, "/a", restarts=restarts)
    delays = [e.delay for e in events.find(corral.RestartScheduled, "/a")]
    assert delays == pytest.approx([0.01, 0.03])


async def test_jitter_takes_its_sample_from_the_trees_random() -> None:
    """The backoff's jitter shortens the delay by ``jitter * random()``, from open_tree's source."""
    events = EventLog()
    backoff = corral.Backoff(initial=0.04, jitter=0.5)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(backoff), random=lambda: 0.5) as tree:
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
    assert [e.delay for e in events.find(corral.RestartScheduled, "/a")] == [pytest.approx(0.03)]


async def test_terminate_child_ends_a_backoff_wait_at_once() -> None:
    """``terminate_child`` during a backoff wait returns at once and the restart never happens."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(LONG)) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
            await tree.supervisor().terminate_child("a")
            await anyio.wait_all_tasks_blocked()
            stats = child(tree, "a")
            # The core keeps FAILED (not STOPPED) for a child whose last exit was a crash.
            assert (stats.state, stats.next_restart_at) == (corral.ChildStatus.FAILED, None)
            assert events.find(corral.ChildStarted, "/a") == []
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /a is not running$"):
                await tree.lookup("/a").call("hi")


async def test_terminated_backoff_child_can_be_restarted_by_hand() -> None:
    """A child whose backoff wait was ended by terminate_child starts again with restart_child."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(LONG)) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
            sup = tree.supervisor()
            await sup.terminate_child("a")
            assert await sup.restart_child("a") == "/a"
            assert await tree.lookup("/a").call("back") == "back"


@pytest.mark.parametrize("operation", ["restart_child", "delete_child"])
async def test_restart_or_delete_during_backoff_raises_restarting(operation: str) -> None:
    """``restart_child`` and ``delete_child`` of a child in backoff raise RestartingError."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(LONG)) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
            call: Callable[[str], Awaitable[object]] = getattr(tree.supervisor(), operation)
            with pytest.raises(
                corral.RestartingError,
                match=r"^supervisor '/': child 'a' is waiting to restart$",
            ):
                await call("a")


async def test_messages_sent_during_backoff_wait_for_the_restart() -> None:
    """Casts sent while a child waits in backoff are queued, not refused."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(LONG)) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
            await tree.lookup("/a").cast("later")
            assert child(tree, "a").mailbox_depth == 1


async def test_tree_exit_ends_a_backoff_wait() -> None:
    """A tree whose child waits in backoff exits without waiting for the restart."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(backoff_tree(LONG)) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
    assert events.find(corral.ChildStarted, "/a") == []


async def test_sibling_restart_ends_a_backoff_wait() -> None:
    """A child waiting in backoff is started at once by a one-for-all restart of a sibling."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            backoff_tree(LONG, strategy=corral.Strategy.ONE_FOR_ALL)
        ) as tree:
            tree.events.subscribe(events)
            await crash_and_wait_for_schedule(tree, events)
            tree.lookup("/b").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/b", restarts=1)
            assert child(tree, "a").state is corral.ChildStatus.RUNNING
            assert await tree.lookup("/a").call("early") == "early"
