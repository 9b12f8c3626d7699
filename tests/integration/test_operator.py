"""An operator's hand on a running tree: held children, kill drills, reconfiguration."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from corral.supervisors.reconfigure import plan_tree
from tests.e2e.actors import Dependent
from tests.integration.support import HANG_GUARD, Boom, EventLog, Gated, open_until_cancelled

if TYPE_CHECKING:
    from corral.supervisors.spec import ChildStart

pytestmark = pytest.mark.anyio

RUNNING = corral.ChildStatus.RUNNING
STOPPED = corral.ChildStatus.STOPPED
FAILED = corral.ChildStatus.FAILED
ONE_FOR_ONE = corral.Strategy.ONE_FOR_ONE
ONE_FOR_ALL = corral.Strategy.ONE_FOR_ALL
REST_FOR_ONE = corral.Strategy.REST_FOR_ONE


class Named(corral.Actor):
    """Answers every message with its name (``"crash"`` raises); logs its starts and stops."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}")

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = f"{self.name} crashed"
            raise Boom(msg)
        return self.name

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")


class Plain(corral.Actor):
    """No on_start, no on_stop: dormant until its first message."""

    async def handle(self, message: object) -> object:
        return message


class FailsToStart(corral.Actor):
    """Its on_start always raises."""

    async def on_start(self) -> None:
        msg = "no start"
        raise Boom(msg)

    async def handle(self, message: object) -> object:  # pragma: no cover  # never started
        return message


class StartsWhenLet(corral.Actor):
    """Its on_start waits for *gate*; meanwhile its supervisor reads no requests."""

    def __init__(self, gate: anyio.Event) -> None:
        self.gate = gate

    async def on_start(self) -> None:
        await self.gate.wait()

    async def handle(self, message: object) -> object:
        return message


class SlowToStop(corral.Actor):
    """Its on_stop waits for *release*; a *version* tells specs apart."""

    def __init__(self, release: anyio.Event, version: int = 0) -> None:
        self.release = release
        self.version = version

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await self.release.wait()


async def occupy(sup: corral.SupervisorRef, gate: anyio.Event) -> None:
    """Keep *sup* busy starting a child until *gate* is set: requests queue up meanwhile."""
    await sup.start_child(corral.ChildSpec("busy", StartsWhenLet, args={"gate": gate}))


async def returns_when_asked(ctx: corral.Context) -> None:
    """A function actor that returns normally on ``"return"``."""
    async for message in ctx:
        if message == "return":
            return


async def loops(ctx: corral.Context) -> None:
    """A function actor that takes messages until it is stopped."""
    async for _ in ctx:
        pass


def named(child_id: str, log: list[str], name: str | None = None) -> corral.ChildSpec:
    """A Named child; a *name* other than its id is a changed spec."""
    return corral.ChildSpec(child_id, Named, args={"name": name or child_id, "log": log})


def statuses(sup: corral.SupervisorRef) -> dict[str, corral.ChildStatus]:
    return {info.id: info.status for info in sup.which_children()}


def restarts(sup: corral.SupervisorRef) -> dict[str, int]:
    return {child.id: child.restarts for child in sup.statistics().children}


async def apply(
    tree: corral.Tree, old: corral.SupervisorSpec, new: corral.SupervisorSpec
) -> list[corral.StartError]:
    """Apply ``plan_tree(old, new)`` to the running tree as a reload does; the start failures."""
    return list((await tree.reconfigure(old, new)).failures)


# -- held children ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(ONE_FOR_ALL, id="one-for-all"),
        pytest.param(REST_FOR_ONE, id="rest-for-one"),
    ],
)
async def test_held_child_stays_stopped_through_a_siblings_restart(
    strategy: corral.Strategy,
) -> None:
    """A child terminated with hold is not started by a sibling's restart (OTP would)."""
    log: list[str] = []
    spec = corral.SupervisorSpec([named(i, log) for i in "abc"], strategy=strategy)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.supervisor().terminate_child("b", hold=True)
            assert tree.held == frozenset({"/b"})
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/c", restarts=1)
            await anyio.wait_all_tasks_blocked()
            assert statuses(tree.supervisor()) == {"a": RUNNING, "b": STOPPED, "c": RUNNING}
            assert events.find(corral.ChildStarted, "/b") == []
            assert tree.held == frozenset({"/b"})
    assert log.count("start b") == 1


async def test_restart_child_clears_the_hold() -> None:
    """restart_child starts a held child and forgets the hold: later group restarts take it in."""
    log: list[str] = []
    spec = corral.SupervisorSpec([named("a", log), named("b", log)], strategy=ONE_FOR_ALL)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            sup = tree.supervisor()
            await sup.terminate_child("b", hold=True)
            assert await sup.restart_child("b") == "/b"
            assert tree.held == frozenset()
            tree.lookup("/a").cast_nowait("crash")
            # the operator's start was a start; the group restart is b's first restart
            await events.wait_for(corral.ChildStarted, "/b", restarts=1, restart=True)
            assert statuses(sup) == {"a": RUNNING, "b": RUNNING}


async def test_delete_child_forgets_the_hold() -> None:
    """Deleting a held child drops its path from Tree.held; a new child there starts."""
    log: list[str] = []
    spec = corral.SupervisorSpec([named("a", log), named("b", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("b", hold=True)
            await sup.delete_child("b")
            assert tree.held == frozenset()
            assert await sup.start_child(named("b", log, "b2")) == "/b"
            assert await tree.lookup("/b").call("hi") == "b2"


async def test_open_tree_leaves_held_children_stopped() -> None:
    """open_tree(held=...) does not start those children; restart_child starts them."""
    log: list[str] = []
    spec = corral.SupervisorSpec([named("a", log), named("x", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec, held=["/x"]) as tree:
            assert log == ["start a"]
            assert [(c.id, c.state) for c in tree.statistics().children] == [
                ("a", RUNNING),
                ("x", STOPPED),
            ]
            assert tree.held == frozenset({"/x"})
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /x is not running$"):
                await tree.lookup("/x").cast("hi")
            assert await tree.supervisor().restart_child("x") == "/x"
            assert tree.held == frozenset()
            assert await tree.lookup("/x").call("hi") == "x"
    assert log == ["start a", "start x", "stop x", "stop a"]


async def test_hold_survives_a_restart_of_the_parent_supervisor() -> None:
    """A held grandchild stays stopped when its supervisor gives up and is restarted."""
    log: list[str] = []
    group = corral.SupervisorSpec([named("a", log), named("x", log)], intensity=0)
    spec = corral.SupervisorSpec([corral.ChildSpec("group", group)])
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.supervisor("/group").terminate_child("x", hold=True)
            tree.lookup("/group/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/group", restarts=1)
            assert statuses(tree.supervisor("/group")) == {"a": RUNNING, "x": STOPPED}
            assert tree.held == frozenset({"/group/x"})
            with pytest.raises(corral.ActorNotRunningError):
                await tree.lookup("/group/x").cast("hi")
    assert log.count("start x") == 1


@pytest.mark.parametrize("how", ["delete_child", "reconfigure"])
async def test_removing_a_supervisor_forgets_the_holds_below_it(how: str) -> None:
    """Removing a sub-supervisor forgets its children's holds: Tree.held names no gone path."""
    log: list[str] = []
    old = corral.SupervisorSpec(
        [named("a", log), corral.ChildSpec("group", corral.SupervisorSpec([named("x", log)]))]
    )
    new = corral.SupervisorSpec([named("a", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            await tree.supervisor("/group").terminate_child("x", hold=True)
            if how == "delete_child":
                await tree.supervisor().terminate_child("group")
                await tree.supervisor().delete_child("group")
            else:
                assert await apply(tree, old, new) == []
            assert tree.held == frozenset()


# -- kill drills -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(Named, id="class-actor"),
        pytest.param(loops, id="function-actor"),
        pytest.param(Plain, id="dormant-actor"),
        pytest.param(corral.SupervisorSpec([corral.ChildSpec("w", loops)]), id="supervisor"),
    ],
)
async def test_kill_child_is_a_crash_and_the_child_is_restarted(start: ChildStart) -> None:
    """A killed child exits ERROR with the injected exception and is restarted by its rules."""
    args: dict[str, object] = {"name": "k", "log": []} if start is Named else {}
    spec = corral.SupervisorSpec([corral.ChildSpec("k", start, args=args)])
    error = Boom("drill")
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            assert await tree.supervisor().kill_child("k", error) == "/k"
            exited = await events.wait_for(corral.ChildExited, "/k")
            await events.wait_for(corral.ChildStarted, "/k", restarts=1)
            assert statuses(tree.supervisor()) == {"k": RUNNING}
    assert (exited.kind, exited.exception) == (corral.ExitKind.ERROR, error)


async def test_killed_supervisor_restarts_its_subtree() -> None:
    """A killed sub-supervisor stops its children and starts them again with itself."""
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("group", corral.SupervisorSpec([named("w", log)]))]
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.supervisor().kill_child("group", Boom("drill"))
            await events.wait_for(corral.ChildStarted, "/group", restarts=1)
            assert await tree.lookup("/group/w").call("hi") == "w"
            assert log.count("start w") == 2


async def test_killed_busy_actor_keeps_its_queued_messages() -> None:
    """The message in hand at a kill is a crashed dead letter; queued ones wait for the restart."""
    gate = anyio.Event()
    log: list[object] = []
    spec = corral.SupervisorSpec([corral.ChildSpec("g", Gated, args={"gate": gate, "log": log})])
    error = Boom("drill")
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/g")
            ref.cast_nowait("hold")
            await anyio.wait_all_tasks_blocked()  # it is handling "hold"
            ref.cast_nowait("queued")
            await tree.supervisor().kill_child("g", error)
            await events.wait_for(corral.ChildStarted, "/g", restarts=1)
            assert await ref.call("after") == "after"
            assert log == ["queued", "after"]
            [letter] = tree.dead_letters("/g")
            assert (letter.message, letter.reason, letter.exception) == ("hold", "crashed", error)


async def test_kill_of_a_stopped_child_is_refused() -> None:
    """kill_child of a stopped child raises ActorNotRunningError."""
    spec = corral.SupervisorSpec([named("a", [])])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("a")
            with pytest.raises(
                corral.ActorNotRunningError,
                match=r"^/a is not running \(stopped\): nothing to kill$",
            ):
                await sup.kill_child("a", Boom("drill"))


async def test_kill_of_an_unknown_child_is_refused() -> None:
    """kill_child of an id the supervisor does not have raises NotFoundError."""
    spec = corral.SupervisorSpec([named("a", [])])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(corral.NotFoundError, match=r"^supervisor '/' has no child 'b'$"):
                await tree.supervisor().kill_child("b", Boom("drill"))


async def test_kill_counts_in_the_restart_intensity() -> None:
    """A kill is a restart like any crash: with intensity 0 the supervisor gives up."""
    spec = corral.SupervisorSpec([named("a", [])], intensity=0)

    async def kill(tree: corral.Tree) -> None:
        await tree.supervisor().kill_child("a", Boom("drill"))

    with (
        anyio.fail_after(HANG_GUARD),
        pytest.raises(
            corral.SupervisorGaveUpError,
            match=r"^supervisor '/' gave up: 1 restarts within 5\.0 s \(limit 0\), last of /a$",
        ),
    ):
        await open_until_cancelled(spec, kill)


@pytest.mark.parametrize(
    ("child", "message"),
    [
        pytest.param(corral.ChildSpec("f", returns_when_asked), "return", id="function-returns"),
        pytest.param(named("f", []), "crash", id="class-actor-crashes"),
    ],
)
async def test_kill_queued_before_the_childs_own_exit_leaves_it_running(
    child: corral.ChildSpec, message: str
) -> None:
    """A kill queued just before the child's own exit is refused (the exit is handled, the
    child ends up running), never wedging the supervisor."""
    gate = anyio.Event()
    spec = corral.SupervisorSpec([child], intensity=5)
    outcome: list[str] = []

    async def kill(sup: corral.SupervisorRef) -> None:
        try:
            outcome.append(await sup.kill_child("f", Boom("drill")))
        except corral.ActorNotRunningError as exc:
            outcome.append(str(exc))

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            async with anyio.create_task_group() as tg:
                tg.start_soon(occupy, sup, gate)
                await anyio.wait_all_tasks_blocked()  # the supervisor waits for busy's start
                tg.start_soon(kill, sup)
                await anyio.wait_all_tasks_blocked()  # the kill is queued
                tree.lookup("/f").cast_nowait(message)
                await anyio.wait_all_tasks_blocked()  # f exited: its exit is queued after the kill
                gate.set()
            await anyio.wait_all_tasks_blocked()
            assert statuses(sup) == {"f": RUNNING, "busy": RUNNING}
            assert outcome == ["/f has just exited; its supervisor is handling that"]


async def test_second_kill_while_the_first_victim_dies_is_applied_or_refused() -> None:
    """A kill queued while an earlier kill's victim finishes dying never fails inside corral."""
    gate, release = anyio.Event(), anyio.Event()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("s", SlowToStop, args={"release": release})], intensity=5
    )
    outcome: list[str] = []

    async def kill_again(sup: corral.SupervisorRef) -> None:
        try:
            outcome.append(await sup.kill_child("s", Boom("second")))
        except Exception as exc:  # the outcome is what the test checks
            outcome.append(type(exc).__name__)

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor()
            await sup.kill_child("s", Boom("first"))  # its on_stop now waits for release
            async with anyio.create_task_group() as tg:
                tg.start_soon(occupy, sup, gate)
                await anyio.wait_all_tasks_blocked()  # the supervisor waits for busy's start
                tg.start_soon(kill_again, sup)
                await anyio.wait_all_tasks_blocked()  # the second kill is queued
                release.set()
                await anyio.wait_all_tasks_blocked()  # s died: its exit is queued after the kill
                gate.set()
            assert outcome in (["/s"], ["ActorNotRunningError"])


# -- reconfiguration -------------------------------------------------------------------------


async def test_reconfigure_starts_an_added_child_in_file_order() -> None:
    """An added child is started and takes its file place, in statistics and in the final stop."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), named("c", log)])
    new = corral.SupervisorSpec([named("a", log), named("b", log), named("c", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert [(c.id, c.state) for c in tree.statistics().children] == [
                ("a", RUNNING),
                ("b", RUNNING),
                ("c", RUNNING),
            ]
            assert await tree.lookup("/b").call("hi") == "b"
    assert log == ["start a", "start c", "start b", "stop c", "stop b", "stop a"]


async def test_reconfigure_stops_and_removes_a_child() -> None:
    """A removed child is stopped and forgotten; its siblings run on."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), named("b", log), named("c", log)])
    new = corral.SupervisorSpec([named("a", log), named("c", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert statuses(tree.supervisor()) == {"a": RUNNING, "c": RUNNING}
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/b'$"):
                tree.lookup("/b")
            assert log == ["start a", "start b", "start c", "stop b"]


@pytest.mark.parametrize(
    ("strategy", "expected_restarts", "expected_log"),
    [
        pytest.param(
            ONE_FOR_ONE, {"a": 0, "b": 1, "c": 0}, ["stop b", "start b2"], id="one-for-one"
        ),
        pytest.param(
            REST_FOR_ONE,
            {"a": 0, "b": 1, "c": 1},
            ["stop c", "stop b", "start b2", "start c"],
            id="rest-for-one",
        ),
        pytest.param(
            ONE_FOR_ALL,
            {"a": 1, "b": 1, "c": 1},
            ["stop c", "stop b", "stop a", "start a", "start b2", "start c"],
            id="one-for-all",
        ),
    ],
)
async def test_reconfigure_restarts_a_changed_child_by_the_strategy(
    strategy: corral.Strategy, expected_restarts: dict[str, int], expected_log: list[str]
) -> None:
    """A changed child restarts with its new args, with the siblings its strategy names."""
    log: list[str] = []
    old = corral.SupervisorSpec([named(i, log) for i in "abc"], strategy=strategy)
    new = corral.SupervisorSpec(
        [named("a", log), named("b", log, "b2"), named("c", log)], strategy=strategy
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert await tree.lookup("/b").call("hi") == "b2"
            assert restarts(tree.supervisor()) == expected_restarts
            assert log == ["start a", "start b", "start c", *expected_log]


async def test_reconfigure_changes_flags_in_place() -> None:
    """New flags take effect without a restart: a raised intensity lets a crash be restarted."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log)], intensity=0)
    new = corral.SupervisorSpec([named("a", log)], intensity=1, period=2.0)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            tree.events.subscribe(events)
            assert await apply(tree, old, new) == []
            stats = tree.statistics()
            assert (stats.intensity, stats.period) == (1, 2.0)
            assert log == ["start a"]
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)


async def test_reconfigure_reorders_without_restarting() -> None:
    """A new order restarts nobody; the final stop follows it in reverse."""
    log: list[str] = []
    old = corral.SupervisorSpec([named(i, log) for i in "abc"])
    new = corral.SupervisorSpec([named(i, log) for i in "cab"])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert [c.id for c in tree.statistics().children] == ["c", "a", "b"]
    assert log == ["start a", "start b", "start c", "stop b", "stop a", "stop c"]


async def test_reconfigure_restarts_only_the_changed_grandchild() -> None:
    """A grandchild's change restarts it alone: its supervisor and siblings keep running."""
    log: list[str] = []

    def tree_spec(x_name: str) -> corral.SupervisorSpec:
        group = corral.SupervisorSpec([named("x", log, x_name), named("y", log)])
        return corral.SupervisorSpec([named("a", log), corral.ChildSpec("group", group)])

    old, new = tree_spec("x"), tree_spec("x2")
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert await tree.lookup("/group/x").call("hi") == "x2"
            assert restarts(tree.supervisor()) == {"a": 0, "group": 0}
            assert restarts(tree.supervisor("/group")) == {"x": 1, "y": 0}
            assert log == ["start a", "start x", "start y", "stop x", "start x2"]


async def test_reconfigure_keeps_a_held_changed_child_stopped() -> None:
    """A held child whose spec changed stays stopped; restart_child starts the new spec."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), named("b", log)])
    new = corral.SupervisorSpec([named("a", log), named("b", log, "b2")])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("b", hold=True)
            assert await apply(tree, old, new) == []
            assert statuses(sup) == {"a": RUNNING, "b": STOPPED}
            assert tree.held == frozenset({"/b"})
            await sup.restart_child("b")
            assert await tree.lookup("/b").call("hi") == "b2"
    assert log == ["start a", "start b", "stop b", "start b2", "stop b2", "stop a"]


async def test_reconfigure_adds_a_held_new_child_stopped() -> None:
    """A new child whose path an operator holds is added in its place but not started."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), named("c", log)])
    new = corral.SupervisorSpec([named("a", log), named("b", log), named("c", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old, held=["/b"]) as tree:
            assert await apply(tree, old, new) == []
            assert statuses(tree.supervisor()) == {"a": RUNNING, "b": STOPPED, "c": RUNNING}
            assert log == ["start a", "start c"]


async def test_reconfigure_reports_an_added_id_taken_meanwhile() -> None:
    """An added id an operator's start_child took since is reported; that child runs on."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log)])
    new = corral.SupervisorSpec([named("a", log), named("b", log, "b2")])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            await tree.supervisor().start_child(named("b", log))
            [failure] = await apply(tree, old, new)
            assert (failure.child_id, str(failure)) == (
                "b",
                "supervisor '/': child 'b' is already started",
            )
            assert await tree.lookup("/b").call("hi") == "b"


async def test_reconfigure_reports_a_child_that_fails_to_start_and_goes_on() -> None:
    """A child that fails to start is returned as StartError and left failed; the rest applies."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), named("c", log)])
    new = corral.SupervisorSpec(
        [named("a", log), corral.ChildSpec("bad", FailsToStart), named("c", log, "c2")]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            [failure] = await apply(tree, old, new)
            assert (failure.supervisor, failure.child_id) == ("/", "bad")
            assert str(failure) == "supervisor '/': child 'bad' failed to start: Boom('no start')"
            assert statuses(tree.supervisor()) == {"a": RUNNING, "bad": FAILED, "c": RUNNING}
            assert await tree.lookup("/c").call("hi") == "c2"


async def test_reconfigure_start_error_chains_its_cause() -> None:
    """A StartError from reconfigure chains the start's exception as __cause__, as documented."""
    old = corral.SupervisorSpec([named("a", [])])
    new = corral.SupervisorSpec([named("a", []), corral.ChildSpec("bad", FailsToStart)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            [failure] = await apply(tree, old, new)
            assert isinstance(failure.__cause__, Boom)
            assert str(failure.__cause__) == "no start"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("worker", "supervisor", id="worker-to-supervisor"),
        pytest.param("supervisor", "worker", id="supervisor-to-worker"),
    ],
)
async def test_reconfigure_replaces_a_child_of_another_type(before: str, after: str) -> None:
    """A child that turns from worker into supervisor (or back) runs as its new type."""
    log: list[str] = []

    def tree_spec(kind: str) -> corral.SupervisorSpec:
        x = (
            named("x", log)
            if kind == "worker"
            else corral.ChildSpec("x", corral.SupervisorSpec([named("i", log)]))
        )
        return corral.SupervisorSpec([x, named("z", log)])

    old, new = tree_spec(before), tree_spec(after)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await apply(tree, old, new) == []
            assert statuses(tree.supervisor()) == {"x": RUNNING, "z": RUNNING}
            if after == "worker":
                assert await tree.lookup("/x").call("hi") == "x"
            else:
                assert await tree.lookup("/x/i").call("hi") == "i"
                assert statuses(tree.supervisor("/x")) == {"i": RUNNING}


async def test_reconfigure_restarts_a_dynamic_supervisor_without_its_children() -> None:
    """A dynamic supervisor whose template changed restarts; its run-time children are gone."""
    log: list[str] = []

    def tree_spec(prefix: str) -> corral.SupervisorSpec:
        template = corral.ChildSpec("t", Named, args={"name": prefix, "log": log})
        return corral.SupervisorSpec(
            [corral.ChildSpec("pool", corral.DynamicSupervisorSpec(template))]
        )

    old, new = tree_spec("old"), tree_spec("new")
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await tree.supervisor("/pool").start_child(id="one") == "/pool/one"
            assert await apply(tree, old, new) == []
            pool = tree.supervisor("/pool")
            assert pool.which_children() == ()
            assert await pool.start_child(id="two") == "/pool/two"
            assert await tree.lookup("/pool/two").call("hi") == "new"


def group(child_id: str, *children: corral.ChildSpec, **flags: object) -> corral.ChildSpec:
    return corral.ChildSpec(child_id, corral.SupervisorSpec(list(children), **flags))  # type: ignore[arg-type]  # flags are SupervisorSpec's


async def test_reconfigure_follows_one_file_order_across_levels() -> None:
    """Every stop first, the last child first at any depth; then every start in the new
    file's order, whichever supervisor it is under."""
    log: list[str] = []
    old = corral.SupervisorSpec(
        [
            group("g", named("x", log), named("y", log), named("z", log)),
            named("m", log),
            group("h", named("u", log)),
            named("n", log),
        ]
    )
    new = corral.SupervisorSpec(
        [
            group("g", named("x", log, "x2"), named("y", log), named("w", log)),
            named("m", log, "m2"),
            group("h", named("v", log), named("u", log, "u2")),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            del log[:]
            done = await tree.reconfigure(old, new)
            assert (done.not_applied, done.failures) == ((), ())
            assert log == [
                "stop n",  # the file's last child first
                "stop u",
                "stop m",
                "stop z",
                "stop x",
                "start x2",  # then the new file's order, level after level
                "start w",
                "start m2",
                "start v",
                "start u2",
            ]
            assert done.applied == (  # the plan's lines, supervisor by supervisor
                "stop and remove /n",
                "restart /m (spec changed, one-for-one)",
                "stop and remove /g/z",
                "restart /g/x (spec changed, one-for-one)",
                "start /g/w (new)",
                "restart /h/u (spec changed, one-for-one)",
                "start /h/v (new)",
            )


async def test_reconfigure_starts_a_dependent_after_what_it_needs_at_any_depth() -> None:
    """A child restarted to use an actor added deeper in an earlier sibling starts after it;
    a child that still fails to start is reported with what did take effect."""

    def spec(dep: str, *extra: str) -> corral.SupervisorSpec:
        ws = group("ws", *(corral.ChildSpec(i, Plain) for i in ("a", *extra)))
        user = corral.ChildSpec("user", Dependent, args={"dep": dep})
        return corral.SupervisorSpec([group("p", ws, user, strategy=REST_FOR_ONE)])

    old = spec("/p/ws/a")
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            done = await tree.reconfigure(old, spec("/p/ws/b", "b"))
            assert (done.not_applied, done.failures) == ((), ())
            assert statuses(tree.supervisor("/p")) == {"ws": RUNNING, "user": RUNNING}
            done = await tree.reconfigure(spec("/p/ws/b", "b"), spec("/p/ws/gone", "b", "c"))
            assert done.applied == ("start /p/ws/c (new)",)
            assert done.not_applied == (
                "restart /p/user (spec changed, rest-for-one):"
                " failed to start: UnknownPathError(\"no actor at '/p/ws/gone'\")",
            )
            [failure] = done.failures
            assert (failure.supervisor, failure.child_id) == ("/p", "user")
            assert tree.failed() == ["/p/user"]
            done = await tree.reconfigure(spec("/p/ws/gone", "b", "c"), spec("/p/ws/c", "b", "c"))
            assert done.not_applied == ()
            assert statuses(tree.supervisor("/p"))["user"] is RUNNING
            assert tree.failed() == []


async def test_reconfigure_leaves_alone_a_child_started_meanwhile() -> None:
    """A reload's start skips a child that is no longer stopped when its turn comes (the
    daemon makes an operator's start wait for a reload instead)."""
    log: list[str] = []
    old = corral.SupervisorSpec([named("a", log), group("g", named("x", log))])
    new = corral.SupervisorSpec([named("a", log, "a2"), group("g", named("x", log, "x2"))])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            sup = tree.supervisor()
            del log[:]
            plans = plan_tree(old, new)
            assert await sup._reload_stop("a", remove=False) is True
            await sup.restart_child("a")  # an operator, before the reload's start
            errors, added = await sup._reload_update(plans[0])
            assert (errors, added) == ([], [])
            assert await sup._reload_start("a") is None
            assert log == ["stop a", "start a"]  # once: the operator's, with the spec it found
            assert await sup._reload_start("gone") is None


async def test_reconfigure_notes_a_supervisor_that_is_not_running() -> None:
    """A changed supervisor held by an operator is left out, with a note naming its changes."""
    log: list[str] = []
    old = corral.SupervisorSpec([group("g", named("x", log))])
    new = corral.SupervisorSpec([group("g", named("x", log), named("y", log))])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            await tree.supervisor().terminate_child("g", hold=True)
            done = await tree.reconfigure(old, new)
            assert done.notes == (
                "/g is not running: its new spec applies when it starts (start /g/y (new))",
            )
            assert done.applied == ()
            await tree.supervisor().restart_child("g")
            assert statuses(tree.supervisor("/g")) == {"x": RUNNING, "y": RUNNING}


# -- terminate_child beside the supervisor's loop ---------------------------------------------


def slow(child_id: str, release: anyio.Event) -> corral.ChildSpec:
    return corral.ChildSpec(child_id, SlowToStop, args={"release": release}, shutdown=30)


async def test_a_slow_terminate_does_not_hold_up_its_siblings() -> None:
    """While one child takes its time to stop, a sibling's crash is restarted and a
    terminate of another sibling is answered; the slow one's terminate ends when it stops."""
    release, log = anyio.Event(), list[str]()
    spec = corral.SupervisorSpec([slow("slow", release), named("a", log), named("b", log)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.terminate_child, "slow")
                await anyio.wait_all_tasks_blocked()  # slow's on_stop waits
                assert statuses(sup)["slow"] is corral.ChildStatus.STOPPING
                await tree.lookup("/a").cast("crash")
                await events.wait_for(corral.ChildStarted, "/a", restarts=1)
                await sup.terminate_child("b")
                assert statuses(sup) == {
                    "slow": corral.ChildStatus.STOPPING,
                    "a": RUNNING,
                    "b": STOPPED,
                }
                release.set()
            assert statuses(sup)["slow"] is STOPPED


async def test_a_held_child_stopping_is_not_started_by_a_restart_meanwhile() -> None:
    """A one-for-all restart while a held child is still stopping waits for that stop and
    leaves the child stopped."""
    release, log = anyio.Event(), list[str]()
    spec = corral.SupervisorSpec(
        [slow("slow", release), named("a", log)], strategy=ONE_FOR_ALL, intensity=5
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: sup.terminate_child("slow", hold=True))
                await anyio.wait_all_tasks_blocked()
                await tree.lookup("/a").cast("crash")
                await anyio.wait_all_tasks_blocked()  # the restart waits for slow's stop
                assert statuses(sup)["a"] is not RUNNING
                release.set()
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
            assert statuses(sup) == {"slow": STOPPED, "a": RUNNING}
            assert tree.held == {"/slow"}
            assert [e for e in events.summary() if e[1] == "/slow"] == [("ChildStopped", "/slow")]


async def test_an_unheld_child_stopping_is_started_again_by_a_restart_meanwhile() -> None:
    """Without a hold, OTP's rule stands: a one-for-all restart during the stop starts the
    terminated child again once it has stopped."""
    release, log = anyio.Event(), list[str]()
    spec = corral.SupervisorSpec(
        [slow("slow", release), named("a", log)], strategy=ONE_FOR_ALL, intensity=5
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.terminate_child, "slow")
                await anyio.wait_all_tasks_blocked()
                await tree.lookup("/a").cast("crash")
                await anyio.wait_all_tasks_blocked()
                release.set()
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
            assert statuses(sup) == {"slow": RUNNING, "a": RUNNING}


async def test_requests_about_a_child_still_stopping() -> None:
    """While its terminate runs, the child is STOPPING: a second terminate waits for the same
    stop, restart_child says it is running, kill says it is not running."""
    release = anyio.Event()
    spec = corral.SupervisorSpec([slow("slow", release)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.terminate_child, "slow")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(sup.terminate_child, "slow")
                with pytest.raises(corral.RunningError, match="is running"):
                    await sup.restart_child("slow")
                with pytest.raises(corral.ActorNotRunningError, match=r"\(stopping\)"):
                    await sup.kill_child("slow", Boom("drill"))
                release.set()
            assert events.summary() == [("ChildStopped", "/slow")]
            assert await sup.restart_child("slow") == "/slow"


async def test_the_tree_stops_while_a_terminate_is_under_way() -> None:
    """Stopping the tree during a slow terminate waits for that child once, then ends."""
    release = anyio.Event()
    spec = corral.SupervisorSpec([slow("slow", release), named("a", [])])
    outcome: list[str] = []

    async def terminate(sup: corral.SupervisorRef) -> None:
        await sup.terminate_child("slow")
        outcome.append("answered")

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree, anyio.create_task_group() as tg:
            events = EventLog()
            tree.events.subscribe(events)
            tg.start_soon(terminate, tree.supervisor())
            await anyio.wait_all_tasks_blocked()
            tree.stop()
            await anyio.wait_all_tasks_blocked()
            release.set()
            await tree.wait()
    assert outcome == ["answered"]
    assert events.summary(corral.ChildStopped) == [
        ("ChildStopped", "/a"),
        ("ChildStopped", "/slow"),
    ]


async def test_two_terminates_read_in_one_step_share_one_stop() -> None:
    """Two terminate_child requests queued together (read before either stop begins) both
    return once the one stop ends; nothing waits forever, nothing is abandoned."""
    release, gate = anyio.Event(), anyio.Event()
    spec = corral.SupervisorSpec([slow("slow", release)])
    answered: list[int] = []

    async def terminate(n: int, sup: corral.SupervisorRef) -> None:
        await sup.terminate_child("slow")
        answered.append(n)

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(occupy, sup, gate)
                await anyio.wait_all_tasks_blocked()  # the supervisor is busy: requests queue
                tg.start_soon(terminate, 1, sup)
                tg.start_soon(terminate, 2, sup)
                await anyio.wait_all_tasks_blocked()
                gate.set()  # both are read in one go
                await anyio.wait_all_tasks_blocked()
                release.set()
            assert sorted(answered) == [1, 2]
            assert [e for e in events.summary() if e[1] == "/slow"] == [("ChildStopped", "/slow")]
            assert not events.find(corral.ChildAbandoned, "/slow")


async def test_a_sibling_crash_read_with_a_terminate_waits_for_its_stop() -> None:
    """Under one-for-all, a sibling's crash read right after a terminate (before its stop
    began) waits for that stop; the supervisor goes on and the sibling is restarted."""
    release, gate, log = anyio.Event(), anyio.Event(), list[str]()
    spec = corral.SupervisorSpec(
        [slow("slow", release), named("a", log)], strategy=ONE_FOR_ALL, intensity=5
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(occupy, sup, gate)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(lambda: sup.terminate_child("slow", hold=True))
                await anyio.wait_all_tasks_blocked()
                await tree.lookup("/a").cast("crash")  # its exit queues behind the terminate
                await anyio.wait_all_tasks_blocked()
                gate.set()
                await anyio.wait_all_tasks_blocked()
                release.set()
            await events.wait_for(corral.ChildStarted, "/busy", restarts=1)  # started last
            assert statuses(sup) == {"slow": STOPPED, "a": RUNNING, "busy": RUNNING}
            assert await sup.restart_child("slow") == "/slow"


async def test_holds_are_reported_as_they_change() -> None:
    """open_tree(on_held=...) hears of each hold when it is placed (before the stop ends),
    when restart_child lifts it, and when the held child is deleted."""
    release = anyio.Event()
    spec = corral.SupervisorSpec([slow("slow", release), named("a", [])])
    seen: list[frozenset[str]] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec, on_held=seen.append) as tree:
            sup = tree.supervisor()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: sup.terminate_child("slow", hold=True))
                await anyio.wait_all_tasks_blocked()
                assert seen == [frozenset({"/slow"})]  # the stop is still under way
                release.set()
            await sup.restart_child("slow")
            await sup.terminate_child("a", hold=True)
            await sup.delete_child("a")
    assert seen == [frozenset({"/slow"}), frozenset(), frozenset({"/a"}), frozenset()]


async def test_a_reload_while_a_temporary_sibling_finishes_its_terminate() -> None:
    """A temporary child whose terminate ends (and drops it) while a reconfiguration waits
    on a sibling's stop is skipped; the rest of the plan is applied."""
    gate_a, gate_b = anyio.Event(), anyio.Event()

    def spec(version: int) -> corral.SupervisorSpec:
        return corral.SupervisorSpec(
            [
                corral.ChildSpec(
                    "a",
                    SlowToStop,
                    args={"release": gate_a, "version": version},
                    restart=corral.RestartType.TEMPORARY,
                ),
                corral.ChildSpec("b", SlowToStop, args={"release": gate_b, "version": version}),
            ]
        )

    old, new = spec(0), spec(1)
    failures: list[tuple[corral.StartError, ...]] = []

    async def reconfigure(sup: corral.SupervisorRef) -> None:
        [plan] = plan_tree(old, new)
        failures.append(await sup.reconfigure(plan))

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            sup = tree.supervisor()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.terminate_child, "a")
                await anyio.wait_all_tasks_blocked()  # a is stopping
                tg.start_soon(reconfigure, sup)
                await anyio.wait_all_tasks_blocked()  # the plan waits on a's stop, then b's
                gate_a.set()
                await anyio.wait_all_tasks_blocked()  # a's terminate ended: a is gone
                gate_b.set()
            assert failures == [()]
            assert statuses(sup) == {"b": RUNNING}


async def test_a_kill_and_a_brutal_terminate_in_one_step_leave_no_mark() -> None:
    """A sub-supervisor killed and terminated (brutally) before either is carried out can
    be started and killed again afterwards: the first kill left nothing behind."""
    gate = anyio.Event()
    sub = corral.ChildSpec("g", corral.SupervisorSpec([named("x", [])]), shutdown=corral.BRUTAL)
    spec = corral.SupervisorSpec([sub], intensity=5)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup, events = tree.supervisor(), EventLog()
            tree.events.subscribe(events)
            async with anyio.create_task_group() as tg:
                tg.start_soon(occupy, sup, gate)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(sup.kill_child, "g", Boom("drill"))
                await anyio.wait_all_tasks_blocked()
                gate.set()  # the kill is read; the terminate right after it
                await sup.terminate_child("g")
            assert statuses(sup)["g"] is STOPPED
            await sup.restart_child("g")
            assert await sup.kill_child("g", Boom("again")) == "/g"
            await events.wait_for(corral.ChildStarted, "/g", restarts=1)  # the start is none


async def test_a_reload_that_restarts_a_held_supervisor_keeps_its_hold() -> None:
    """A held sub-supervisor whose own spec changes stays held through the reload."""
    old = corral.SupervisorSpec([corral.ChildSpec("g", corral.SupervisorSpec([named("x", [])]))])
    new = corral.SupervisorSpec(
        [corral.ChildSpec("g", corral.SupervisorSpec([named("x", [])]), shutdown=1.0)]
    )
    seen: list[frozenset[str]] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old, on_held=seen.append) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("g", hold=True)
            for plan in plan_tree(old, new):
                assert await tree.supervisor(plan.path).reconfigure(plan) == ()
            assert tree.held == {"/g"}
            assert statuses(sup) == {"g": STOPPED}
    assert seen == [frozenset({"/g"})]


class LongOnStop(corral.Actor):
    """Its on_stop takes long: a kill's deadline cuts its supervisor's stop short."""

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await anyio.sleep(HANG_GUARD)


class Sleepy(corral.Actor):
    """Neither on_start nor on_stop: dormant until its first message."""

    async def handle(self, message: object) -> object:
        return message


async def test_a_dormant_actor_of_a_killed_supervisor_waits_for_its_restart() -> None:
    """A message to a dormant actor whose supervisor was killed (its stop cut short by the
    kill's deadline) waits in the mailbox for the restart: no runner is spawned for the
    supervisor that ended, and the sender gets no error."""
    sub = corral.SupervisorSpec(
        [corral.ChildSpec("sleepy", Sleepy), corral.ChildSpec("slow", LongOnStop)]
    )
    later = corral.Backoff(initial=HANG_GUARD * 3, cap=HANG_GUARD * 3, jitter=0.0)
    spec = corral.SupervisorSpec([corral.ChildSpec("sub", sub, backoff=later)])
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/sub/slow").call("awake")  # it has a task: its stop runs code
            await tree.supervisor().kill_child("sub", Boom("drill"))
            await events.wait_for(corral.RestartScheduled, "/sub")  # waiting in backoff
            tree.lookup("/sub/sleepy").cast_nowait("hello")
            await anyio.wait_all_tasks_blocked()
            (sub_stats,) = [c for c in tree.statistics().children if c.path == "/sub"]
            assert sub_stats.state is corral.ChildStatus.BACKOFF
            assert tree.services.cells["/sub/sleepy"].handled == 0  # nothing ran it
            assert len(tree.services.cells["/sub/sleepy"].mailbox) == 1  # kept for later
