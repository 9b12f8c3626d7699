"""OTP's answers, exactly (supervisor.erl): count_children of a dynamic supervisor, terminating
a dynamic child that has exited, `restarting` while restart attempts run, and a child that
declines to start (OTP's ``ignore``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog

pytestmark = pytest.mark.anyio

TRANSIENT = corral.RestartType.TRANSIENT
TEMPORARY = corral.RestartType.TEMPORARY


class Echo(corral.Actor):
    async def handle(self, message: object) -> object:
        if message == "crash":
            raise Boom(message)
        return message


async def returns(ctx: corral.Context) -> None:
    """Starts, then returns at once (a normal exit)."""
    ctx.started()


# -- count_children and terminate_child of a dynamic supervisor -------------------------------


async def test_count_children_of_a_dynamic_supervisor_has_one_spec() -> None:
    """As simple_one_for_one: specs is 1 (the template), empty or not."""
    pool = corral.DynamicSupervisorSpec(corral.ChildSpec("t", Echo))
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(corral.SupervisorSpec([corral.ChildSpec("pool", pool)])) as t:
            sup = t.supervisor("/pool")
            assert sup.count_children() == corral.Counts(1, 0, 0, 0)
            for child_id in ("a", "b", "c"):
                await sup.start_child(id=child_id)
            assert sup.count_children() == corral.Counts(
                specs=1, active=3, supervisors=0, workers=3
            )
            root = t.supervisor()
            assert root.count_children() == corral.Counts(1, 1, 1, 0)  # a regular one: its specs


async def test_terminating_a_dynamic_child_that_has_exited_is_ok() -> None:
    """As OTP's terminate_child of a dead pid under simple_one_for_one: ok, nothing to stop."""
    pool = corral.DynamicSupervisorSpec(corral.ChildSpec("t", returns, restart=TRANSIENT))
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(corral.SupervisorSpec([corral.ChildSpec("pool", pool)])) as t:
            t.events.subscribe(events)
            sup = t.supervisor("/pool")
            await sup.start_child(id="x")
            await events.wait_for(corral.ChildExited, "/pool/x")
            assert sup.which_children() == ()
            await sup.terminate_child("x")  # ok: no NotFoundError
            with pytest.raises(corral.NotFoundError):  # a regular supervisor still says so
                await t.supervisor().terminate_child("nope")


# -- restarting ----------------------------------------------------------------------------------


class SlowThenFails(corral.Actor):
    """Starts the first time; every later start blocks until *gate* is set, then raises."""

    def __init__(self, gate: anyio.Event, entered: anyio.Event, starts: list[int]) -> None:
        self.gate = gate
        self.entered = entered
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append(len(self.starts))
        if len(self.starts) > 1:
            self.entered.set()
            await self.gate.wait()
            msg = "no start"
            raise Boom(msg)

    async def handle(self, message: object) -> object:
        raise Boom(message)


async def test_a_child_in_a_restart_attempt_is_restarting_and_not_active() -> None:
    """Read in the middle of a restart attempt (a start that blocks, then raises),
    which_children says RESTARTING and count_children does not count it active."""
    gate, entered = anyio.Event(), anyio.Event()
    starts: list[int] = []
    args: dict[str, Any] = {"gate": gate, "entered": entered, "starts": starts}
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("a", SlowThenFails, args=args), corral.ChildSpec("b", Echo)],
        intensity=10,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            tree.lookup("/a").cast_nowait("crash")
            await entered.wait()  # the restart attempt's start is blocked
            assert sup.which_children() == (
                corral.ChildInfo("a", corral.ChildStatus.RESTARTING, corral.ChildType.WORKER),
                corral.ChildInfo("b", corral.ChildStatus.RUNNING, corral.ChildType.WORKER),
            )
            assert sup.count_children() == corral.Counts(
                specs=2, active=1, supervisors=0, workers=2
            )
            assert tree.statistics().children[0].state is corral.ChildStatus.RESTARTING
            assert starts == [0, 1]
        # leaving the block stopped the tree: a stop reaches a child in an attempt too
    assert not gate.is_set()


# -- declining to start (OTP's ignore) -------------------------------------------------------


class Declines(corral.Actor):
    """Declines to start while *allowed* is empty; counts its starts."""

    def __init__(self, allowed: list[bool], starts: list[str]) -> None:
        self.allowed = allowed
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append("start")
        if not self.allowed:
            msg = "feature off"
            raise corral.Ignore(msg)

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise Boom(message)
        return message


async def declines_before_started(ctx: corral.Context) -> None:
    raise corral.Ignore


def declining(child_id: str, allowed: list[bool], starts: list[str], **kw: Any) -> corral.ChildSpec:
    return corral.ChildSpec(child_id, Declines, args={"allowed": allowed, "starts": starts}, **kw)


async def test_a_static_child_that_declines_at_boot_keeps_its_spec_and_is_not_restarted() -> None:
    """The tree boots; the child is stopped, not failed, not restarted, and its spec is kept
    for an operator's start; a temporary one that declines is dropped."""
    allowed: list[bool] = []
    starts: list[str] = []
    spec = corral.SupervisorSpec(
        [
            declining("a", allowed, starts),
            corral.ChildSpec("f", declines_before_started),
            declining("t", allowed, starts, restart=TEMPORARY),
            corral.ChildSpec("b", Echo),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            assert [(c.id, c.status) for c in sup.which_children()] == [
                ("a", corral.ChildStatus.STOPPED),
                ("f", corral.ChildStatus.STOPPED),
                ("b", corral.ChildStatus.RUNNING),
            ]
            assert tree.failed() == []
            with pytest.raises(corral.ActorNotRunningError):
                await tree.lookup("/a").call("hi")
            assert await sup.restart_child("a") is None  # declines again: OTP's {ok, undefined}
            allowed.append(True)
            assert await sup.restart_child("a") == "/a"
            assert await tree.lookup("/a").call("hi") == "hi"
            assert starts == ["start", "start", "start", "start"]  # a, t, a, a


async def test_start_child_that_declines_answers_none() -> None:
    """start_child of a declining child answers None: a regular supervisor keeps the spec,
    a dynamic one does not (nor of a temporary child)."""
    allowed: list[bool] = []
    starts: list[str] = []
    pool = corral.DynamicSupervisorSpec(declining("t", allowed, starts))
    spec = corral.SupervisorSpec([corral.ChildSpec("pool", pool)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            root = tree.supervisor()
            assert await root.start_child(declining("kept", allowed, starts)) is None
            temporary = declining("gone", allowed, starts, restart=TEMPORARY)
            assert await root.start_child(temporary) is None
            assert [c.id for c in root.which_children()] == ["pool", "kept"]
            assert await tree.supervisor("/pool").start_child(id="x") is None
            assert tree.supervisor("/pool").which_children() == ()


async def test_a_restart_attempt_that_declines_leaves_the_child_stopped() -> None:
    """A crashed child whose restart declines is stopped, and not attempted again; its
    siblings go on."""
    allowed = [True]
    starts: list[str] = []
    events = EventLog()
    spec = corral.SupervisorSpec(
        [declining("a", allowed, starts), corral.ChildSpec("b", Echo)], intensity=5
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            allowed.clear()
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildExited, "/a")
            await anyio.wait_all_tasks_blocked()  # the restart attempt has run, and declined
            statuses = [(c.id, c.status) for c in tree.supervisor().which_children()]
            assert statuses == [
                ("a", corral.ChildStatus.STOPPED),
                ("b", corral.ChildStatus.RUNNING),
            ]
            assert starts == ["start", "start"]  # the boot, and the one attempt
            assert events.find(corral.ChildStarted, "/a") == []  # the attempt started nothing
            assert await tree.lookup("/b").call("hi") == "hi"
            assert tree.failed() == []
