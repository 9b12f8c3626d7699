"""Stopping children: shutdown policies, abandonment, and nothing left running afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from tests.integration.support import (
    HANG_GUARD,
    Boom,
    EventLog,
    Worker,
    crash_until_cancelled,
    open_until_cancelled,
)

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio


class Stubborn(corral.Actor):
    """An on_stop that shields itself until *release* is set, then logs that it finished."""

    def __init__(self, release: anyio.Event, log: list[str]) -> None:
        self.release = release
        self.log = log

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.release.wait()
        self.log.append("on_stop finished")


class SlowStop(corral.Actor):
    """An on_stop that waits for *gate*, logging when it begins, ends or is cut off."""

    def __init__(self, gate: anyio.Event, log: list[str]) -> None:
        self.gate = gate
        self.log = log

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        self.log.append("on_stop began")
        try:
            await self.gate.wait()
        except anyio.get_cancelled_exc_class():
            self.log.append("on_stop cut off")
            raise
        self.log.append("on_stop finished")


async def flagged(ctx: corral.Context, *, name: str, flags: list[str]) -> None:
    """A function actor that records *name* in *flags* when its task ends, however it ends."""
    try:
        async for _ in ctx:
            pass
    finally:
        flags.append(name)


def release_when_stopped(release: anyio.Event) -> Callable[[corral.Event], None]:
    """An observer that sets *release* once ``/slow`` is abandoned or reported stopped.

    ChildStopped is a fallback: without it a missing ChildAbandoned would leave the
    shielded on_stop blocked and the tree's exit hung past any ``fail_after``.
    """

    def observe(event: corral.Event) -> None:
        if isinstance(event, corral.ChildAbandoned | corral.ChildStopped) and event.path == "/slow":
            release.set()

    return observe


def stubborn_tree(release: anyio.Event, log: list[str]) -> corral.SupervisorSpec:
    return corral.SupervisorSpec(
        [corral.ChildSpec("slow", Stubborn, args={"release": release, "log": log}, shutdown=0.1)]
    )


async def test_child_overrunning_its_shutdown_timeout_is_abandoned() -> None:
    """A child still stopping past its shutdown timeout is reported ChildAbandoned, then stopped."""
    release = anyio.Event()
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stubborn_tree(release, [])) as tree:
            tree.events.subscribe(events)
            tree.events.subscribe(release_when_stopped(release))
            await tree.supervisor().terminate_child("slow")
            assert events.summary(corral.ChildAbandoned, corral.ChildStopped) == [
                ("ChildAbandoned", "/slow"),
                ("ChildStopped", "/slow"),
            ]
            [abandoned] = events.find(corral.ChildAbandoned, "/slow")
            assert (abandoned.supervisor, abandoned.timeout) == ("/", 0.1)


async def test_tree_exit_goes_on_past_an_abandoned_child() -> None:
    """At tree exit a child overrunning its shutdown timeout is abandoned and the exit completes."""
    release = anyio.Event()
    log: list[str] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(stubborn_tree(release, log)) as tree:
            tree.events.subscribe(events)
            tree.events.subscribe(release_when_stopped(release))
    assert [e.path for e in events.find(corral.ChildAbandoned, "/slow")] == ["/slow"]
    assert log == ["on_stop finished"]  # released by the observer, then waited for


async def test_brutal_shutdown_skips_on_stop() -> None:
    """A child with shutdown brutal is stopped without its on_stop; others still get theirs."""
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("gentle", Worker, args={"name": "gentle", "log": log}),
            corral.ChildSpec(
                "rough", Worker, args={"name": "rough", "log": log}, shutdown=corral.BRUTAL
            ),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            await tree.supervisor().terminate_child("rough")
            assert log == ["start gentle", "start rough"]
    assert log == ["start gentle", "start rough", "stop gentle"]


async def test_infinity_shutdown_waits_for_on_stop_to_finish() -> None:
    """With shutdown infinity, terminate_child returns only after on_stop has finished."""
    gate = anyio.Event()
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "patient", SlowStop, args={"gate": gate, "log": log}, shutdown=corral.INFINITY
            )
        ]
    )

    async def terminate(sup: corral.SupervisorRef) -> None:
        await sup.terminate_child("patient")
        log.append("terminated")

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree, anyio.create_task_group() as tg:
            tg.start_soon(terminate, tree.supervisor())
            await anyio.wait_all_tasks_blocked()
            assert log == ["on_stop began"]
            gate.set()
    assert log == ["on_stop began", "on_stop finished", "terminated"]


async def test_numeric_shutdown_cuts_on_stop_off_at_the_timeout() -> None:
    """With a shutdown in seconds, an on_stop still running at the timeout is cancelled."""
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "bounded", SlowStop, args={"gate": anyio.Event(), "log": log}, shutdown=0.05
            )
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            await tree.supervisor().terminate_child("bounded")
            assert log == ["on_stop began", "on_stop cut off"]


# -- nothing is left running -----------------------------------------------------------------


async def noop(tree: corral.Tree) -> None:
    pass


def running_task_ids() -> set[int]:
    return {task.id for task in anyio.get_running_tasks()}


def busy_tree(flags: list[str]) -> corral.SupervisorSpec:
    """Function actors at the root, in a nested supervisor and in a dynamic supervisor."""

    def actor(name: str) -> corral.ChildSpec:
        return corral.ChildSpec(name, flagged, args={"name": name, "flags": flags})

    pool = corral.DynamicSupervisorSpec(
        corral.ChildSpec("w", flagged, args={"name": "pooled", "flags": flags})
    )
    return corral.SupervisorSpec(
        [
            actor("a"),
            corral.ChildSpec("sub", corral.SupervisorSpec([actor("b"), actor("c")])),
            corral.ChildSpec("pool", pool),
            corral.ChildSpec("crashy", Worker, args={"name": "crashy"}),
        ]
    )


async def test_no_actor_task_outlives_the_tree() -> None:
    """When open_tree exits, every actor task has ended (each function actor's finally ran)."""
    flags: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(busy_tree(flags)) as tree:
            await tree.supervisor("/pool").start_child()
    assert sorted(flags) == ["a", "b", "c", "pooled"]


async def test_no_task_outlives_the_tree() -> None:
    """When open_tree exits no task it started is left, after restarts and dynamic children too."""
    before = running_task_ids()
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(busy_tree([])) as tree:
            tree.events.subscribe(events)
            await tree.supervisor("/pool").start_child()
            tree.lookup("/crashy").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/crashy", restarts=1)
            assert running_task_ids() > before
    assert running_task_ids() == before


async def test_no_task_outlives_a_boot_failure() -> None:
    """When open_tree fails to boot no task it started is left."""

    class FailsToStart(corral.Actor):
        async def on_start(self) -> None:
            msg = "no db"
            raise Boom(msg)

    before = running_task_ids()
    flags: list[str] = []
    spec = corral.SupervisorSpec(
        [*busy_tree(flags).children, corral.ChildSpec("bad", FailsToStart)]
    )
    with anyio.fail_after(HANG_GUARD), pytest.raises(corral.StartError):
        await open_until_cancelled(spec, noop)
    assert running_task_ids() == before
    assert sorted(flags) == ["a", "b", "c"]


async def test_no_task_outlives_a_root_that_gave_up() -> None:
    """When the root gives up and open_tree raises, no task it started is left."""
    before = running_task_ids()
    flags: list[str] = []
    spec = corral.SupervisorSpec(busy_tree(flags).children, intensity=0)
    with anyio.fail_after(HANG_GUARD), pytest.raises(corral.SupervisorGaveUpError):
        await crash_until_cancelled(spec, "/crashy")
    assert running_task_ids() == before
    assert sorted(flags) == ["a", "b", "c"]
