"""Statistics snapshots of a running tree: per child, per supervisor, nested."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog, Gated, Worker

pytestmark = pytest.mark.anyio


def stats_tree(gate: anyio.Event) -> corral.SupervisorSpec:
    """Root (intensity 3): worker ``a``, gated ``g`` (mailbox 8), ``sub`` with worker ``b``."""
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("a", Worker, args={"name": "a"}),
            corral.ChildSpec(
                "g", Gated, args={"gate": gate}, mailbox=corral.MailboxSpec(capacity=8)
            ),
            corral.ChildSpec(
                "sub", corral.SupervisorSpec([corral.ChildSpec("b", Worker, args={"name": "b"})])
            ),
        ],
        intensity=3,
        period=30.0,
    )


def child(stats: corral.SupervisorStatistics, child_id: str) -> corral.ChildStatistics:
    [found] = [c for c in stats.children if c.id == child_id]
    return found


async def crash_a(tree: corral.Tree) -> None:
    """Crash ``/a`` once and wait until it is running again."""
    events = EventLog()
    unsubscribe = tree.events.subscribe(events)
    tree.lookup("/a").cast_nowait("crash")
    await events.wait_for(corral.ChildStarted, "/a", restarts=1)
    unsubscribe()


async def test_supervisor_statistics_describe_the_supervisor() -> None:
    """A supervisor's snapshot has its path, strategy, intensity, period and children in order."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            stats = tree.statistics()
    assert (stats.path, stats.strategy, stats.intensity, stats.period, stats.dynamic) == (
        "/",
        corral.Strategy.ONE_FOR_ONE,
        3,
        30.0,
        False,
    )
    assert [(c.path, c.type, c.state) for c in stats.children] == [
        ("/a", corral.ChildType.WORKER, corral.ChildStatus.RUNNING),
        ("/g", corral.ChildType.WORKER, corral.ChildStatus.RUNNING),
        ("/sub", corral.ChildType.SUPERVISOR, corral.ChildStatus.RUNNING),
    ]


async def test_mailbox_depth_counts_queued_messages() -> None:
    """``mailbox_depth`` counts messages waiting behind the one being handled; capacity is shown."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            ref = tree.lookup("/g")
            ref.cast_nowait("hold")
            await anyio.wait_all_tasks_blocked()
            for n in range(3):
                ref.cast_nowait(n)
            g = child(tree.statistics(), "g")
    assert (g.mailbox_depth, g.mailbox_capacity) == (3, 8)


async def test_handled_counts_messages_handled() -> None:
    """``handled`` counts the messages an actor has finished handling, casts and calls."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            ref = tree.lookup("/a")
            ref.cast_nowait(1)
            ref.cast_nowait(2)
            await ref.call(3)
            assert child(tree.statistics(), "a").handled == 3


async def test_a_crash_shows_in_the_childs_statistics() -> None:
    """After a crash: restarts, last exit and exception, exits and dead letters are recorded."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            await crash_a(tree)
            a = child(tree.statistics(), "a")
    assert (a.restarts, a.last_exit, a.dead_letters, a.state) == (
        1,
        corral.ExitKind.ERROR,
        1,
        corral.ChildStatus.RUNNING,
    )
    assert isinstance(a.last_exception, Boom)
    assert str(a.last_exception) == "a crashed"
    assert [(e.path, e.kind, e.exception) for e in a.exits] == [
        ("/a", corral.ExitKind.ERROR, a.last_exception)
    ]


async def test_restarts_use_up_the_intensity_budget() -> None:
    """``restarts_remaining`` drops by one for each restart within the period."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            before = tree.statistics().restarts_remaining
            await crash_a(tree)
            after = tree.statistics().restarts_remaining
    assert (before, after) == (3, 2)


async def test_running_sub_supervisor_has_nested_statistics() -> None:
    """A running sub-supervisor's child entry carries its own snapshot, as its ref returns."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            nested = child(tree.statistics(), "sub").supervisor
            direct = tree.supervisor("/sub").statistics()
            workers = [child(tree.statistics(), name).supervisor for name in ("a", "g")]
    assert nested is not None
    assert (nested.path, [c.path for c in nested.children]) == ("/sub", ["/sub/b"])
    assert (direct.path, [c.path for c in direct.children]) == ("/sub", ["/sub/b"])
    assert workers == [None, None]


async def test_terminated_child_statistics() -> None:
    """A terminated child is STOPPED with no start time and no nested snapshot."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            running = child(tree.statistics(), "sub")
            await tree.supervisor().terminate_child("sub")
            stopped = child(tree.statistics(), "sub")
    assert running.started_at is not None
    assert (stopped.state, stopped.started_at, stopped.supervisor) == (
        corral.ChildStatus.STOPPED,
        None,
        None,
    )


async def test_count_children_counts_specs_active_supervisors_and_workers() -> None:
    """``count_children`` counts specs, running children, supervisors and workers."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stats_tree(anyio.Event())) as tree:
            sup = tree.supervisor()
            before = sup.count_children()
            await sup.terminate_child("a")
            after = sup.count_children()
    assert before == corral.Counts(specs=3, active=3, supervisors=1, workers=2)
    assert after == corral.Counts(specs=3, active=2, supervisors=1, workers=2)


async def test_dynamic_supervisor_statistics() -> None:
    """A dynamic supervisor's snapshot says dynamic and lists the children it started."""
    pool = corral.DynamicSupervisorSpec(corral.ChildSpec("w", Worker))
    spec = corral.SupervisorSpec([corral.ChildSpec("pool", pool)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.supervisor("/pool")
            await ref.start_child()
            await ref.start_child()
            stats = ref.statistics()
    assert (stats.dynamic, [c.path for c in stats.children]) == (True, ["/pool/1", "/pool/2"])
