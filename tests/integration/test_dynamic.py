"""The dynamic child API through SupervisorRef, on regular and dynamic supervisors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog, Worker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


class FailsToStart(corral.Actor):
    async def on_start(self) -> None:
        msg = "no db"
        raise ValueError(msg)

    async def handle(self, message: object) -> object:
        return message


class Flaky(corral.Actor):
    """on_start fails when the next entry of *fail* is true."""

    def __init__(self, fail: list[bool]) -> None:
        self.fail = fail

    async def on_start(self) -> None:
        if self.fail.pop(0):
            msg = "flaky"
            raise ValueError(msg)

    async def handle(self, message: object) -> object:
        return message


async def returns_on_request(ctx: corral.Context) -> None:
    """A function actor that returns normally on ``"return"``."""
    async for message in ctx:
        if message == "return":
            return


def worker(
    name: str, restart: corral.RestartType = corral.RestartType.PERMANENT
) -> corral.ChildSpec:
    return corral.ChildSpec(name, Worker, args={"name": name}, restart=restart)


def plain_tree() -> corral.SupervisorSpec:
    """A root with worker ``a`` and a sub-supervisor ``sub`` with worker ``b``."""
    return corral.SupervisorSpec(
        [worker("a"), corral.ChildSpec("sub", corral.SupervisorSpec([worker("b")]))]
    )


def ids(sup: corral.SupervisorRef) -> list[str]:
    return [info.id for info in sup.which_children()]


def status(sup: corral.SupervisorRef, child_id: str) -> corral.ChildStatus:
    return {info.id: info.status for info in sup.which_children()}[child_id]


# -- a regular supervisor --------------------------------------------------------------------


async def test_start_child_starts_a_new_child_and_returns_its_path() -> None:
    """``start_child`` with a new ChildSpec starts it last and returns a path lookup resolves."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            assert await sup.start_child(worker("x")) == "/x"
            assert ids(sup) == ["a", "sub", "x"]
            assert status(sup, "x") is corral.ChildStatus.RUNNING
            assert await tree.lookup("/x").call("hi") == "hi"


async def test_start_child_on_a_nested_supervisor() -> None:
    """``start_child`` on a sub-supervisor adds the child under the sub-supervisor's path."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            assert await tree.supervisor("/sub").start_child(worker("x")) == "/sub/x"
            assert await tree.lookup("/sub/x").call("hi") == "hi"


async def test_start_child_with_a_running_id_raises_already_started() -> None:
    """``start_child`` with the id of a running child raises AlreadyStartedError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            with pytest.raises(
                corral.AlreadyStartedError, match=r"^supervisor '/': child 'a' is already started$"
            ) as caught:
                await tree.supervisor().start_child(worker("a"))
    assert (caught.value.supervisor, caught.value.child_id) == ("/", "a")


async def test_start_child_with_a_stopped_id_raises_already_present() -> None:
    """``start_child`` with the id of a terminated child raises AlreadyPresentError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("a")
            with pytest.raises(
                corral.AlreadyPresentError,
                match=r"^supervisor '/': child 'a' is already present \(not running\)$",
            ):
                await sup.start_child(worker("a"))


async def test_start_child_that_fails_to_start_raises_start_error_and_is_not_kept() -> None:
    """A child that fails to start raises StartError from ``start_child`` and is not kept."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            with pytest.raises(
                corral.StartError,
                match=r"^supervisor '/': child 'bad' failed to start: ValueError\('no db'\)$",
            ) as caught:
                await sup.start_child(corral.ChildSpec("bad", FailsToStart))
            assert isinstance(caught.value.__cause__, ValueError)
            assert ids(sup) == ["a", "sub"]


async def test_start_child_without_a_spec_raises_spec_error() -> None:
    """``start_child`` on a regular supervisor without a ChildSpec, or with something else,
    raises SpecError saying what it needs (not an AttributeError from inside)."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            with pytest.raises(corral.SpecError, match=r"^start_child needs a ChildSpec$"):
                await tree.supervisor().start_child()
            with pytest.raises(
                corral.SpecError, match=r"^start_child needs a ChildSpec, got str: 'x'$"
            ):
                await tree.supervisor().start_child("x")  # type: ignore[arg-type]  # the test


async def test_start_child_with_a_significant_child_needs_auto_shutdown() -> None:
    """A significant child cannot join a supervisor whose auto_shutdown is never (SpecError)."""
    spec = corral.ChildSpec("s", Worker, restart=corral.RestartType.TRANSIENT, significant=True)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            with pytest.raises(
                corral.SpecError,
                match=r"^child 's': significant children need auto_shutdown other than never$",
            ):
                await tree.supervisor().start_child(spec)


async def test_terminate_child_stops_it_and_keeps_its_spec() -> None:
    """``terminate_child`` stops the child, keeps it as STOPPED and its actor refuses calls."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("a")
            assert status(sup, "a") is corral.ChildStatus.STOPPED
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /a is not running$"):
                await tree.lookup("/a").call("hi")


async def test_terminate_child_deletes_a_temporary_childs_spec() -> None:
    """Terminating a temporary child forgets it, as OTP does."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.start_child(worker("t", restart=corral.RestartType.TEMPORARY))
            await sup.terminate_child("t")
            assert ids(sup) == ["a", "sub"]


async def test_terminate_child_stops_a_sub_supervisor_and_its_children() -> None:
    """Terminating a sub-supervisor stops its children in reverse order before it."""
    events = EventLog()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("sub", corral.SupervisorSpec([worker("b"), worker("c")]))]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.supervisor().terminate_child("sub")
            assert events.summary(corral.ChildStopped) == [
                ("ChildStopped", "/sub/c"),
                ("ChildStopped", "/sub/b"),
                ("ChildStopped", "/sub"),
            ]


async def test_restart_child_starts_a_terminated_child_again() -> None:
    """``restart_child`` starts a terminated child; references taken before work again."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            ref = tree.lookup("/a")
            await sup.terminate_child("a")
            assert await sup.restart_child("a") == "/a"
            assert status(sup, "a") is corral.ChildStatus.RUNNING
            assert await ref.call("back") == "back"


async def test_restart_child_is_not_counted_against_intensity() -> None:
    """An operator's ``restart_child`` leaves the restart intensity budget untouched."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("a")
            await sup.restart_child("a")
            assert sup.statistics().restarts_remaining == 1


async def test_restart_child_that_fails_to_start_raises_start_error() -> None:
    """``restart_child`` of a child whose on_start now fails raises StartError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.start_child(corral.ChildSpec("x", Flaky, args={"fail": [False, True]}))
            await sup.terminate_child("x")
            with pytest.raises(
                corral.StartError,
                match=r"^supervisor '/': child 'x' failed to start: ValueError\('flaky'\)$",
            ):
                await sup.restart_child("x")
            assert status(sup, "x") is corral.ChildStatus.STOPPED


async def test_restart_child_starts_a_transient_child_that_returned() -> None:
    """``restart_child`` starts again a transient child that returned normally."""
    events = EventLog()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("fn", returns_on_request, restart=corral.RestartType.TRANSIENT)]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            sup = tree.supervisor()
            await tree.lookup("/fn").cast("return")
            await events.wait_for(corral.ChildExited, "/fn")
            assert await sup.restart_child("fn") == "/fn"
            assert status(sup, "fn") is corral.ChildStatus.RUNNING
            await tree.lookup("/fn").cast("return")
            await anyio.wait_all_tasks_blocked()
            assert len(events.find(corral.ChildExited, "/fn")) == 2


@pytest.mark.parametrize("operation", ["restart_child", "delete_child"])
async def test_restart_or_delete_of_a_running_child_raises_running(operation: str) -> None:
    """``restart_child`` and ``delete_child`` of a running child raise RunningError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            call: Callable[[str], Awaitable[object]] = getattr(tree.supervisor(), operation)
            with pytest.raises(
                corral.RunningError, match=r"^supervisor '/': child 'a' is running$"
            ):
                await call("a")


async def test_delete_child_forgets_a_terminated_child() -> None:
    """``delete_child`` of a terminated child removes it from which_children and lookup."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            sup = tree.supervisor()
            await sup.terminate_child("a")
            await sup.delete_child("a")
            assert ids(sup) == ["sub"]
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/a'$"):
                tree.lookup("/a")


@pytest.mark.parametrize("operation", ["terminate_child", "restart_child", "delete_child"])
async def test_unknown_child_raises_not_found(operation: str) -> None:
    """The child operations on an id the supervisor does not have raise NotFoundError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            call: Callable[[str], Awaitable[object]] = getattr(tree.supervisor("/sub"), operation)
            with pytest.raises(
                corral.NotFoundError, match=r"^supervisor '/sub' has no child 'nope'$"
            ) as caught:
                await call("nope")
    assert (caught.value.supervisor, caught.value.child_id) == ("/sub", "nope")


async def test_unknown_supervisor_and_actor_paths_raise_unknown_path() -> None:
    """``Tree.supervisor`` and ``Tree.lookup`` raise UnknownPathError for paths not in the tree."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(plain_tree()) as tree:
            with pytest.raises(corral.UnknownPathError, match=r"^no running supervisor at '/a'$"):
                tree.supervisor("/a")
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/sub'$"):
                tree.lookup("/sub")


# -- a dynamic supervisor --------------------------------------------------------------------


def pool_tree(log: list[str], max_children: int | None = 2) -> corral.SupervisorSpec:
    """A root with a dynamic supervisor ``pool`` of Workers (template name ``template``)."""
    template = corral.ChildSpec("w", Worker, args={"name": "template", "log": log})
    pool = corral.DynamicSupervisorSpec(template, max_children=max_children, intensity=3)
    return corral.SupervisorSpec([corral.ChildSpec("pool", pool)])


async def test_dynamic_start_child_merges_args_into_the_template() -> None:
    """A dynamic supervisor starts children from its template with args merged, numbered ids."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree(log)) as tree:
            pool = tree.supervisor("/pool")
            assert await pool.start_child(args={"name": "one"}) == "/pool/1"
            assert await pool.start_child() == "/pool/2"
            assert await tree.lookup("/pool/1").call("hi") == "hi"
            assert log[:3] == ["start one", "start template", "one got 'hi'"]


async def test_dynamic_start_child_takes_an_id() -> None:
    """A dynamic supervisor's ``start_child`` uses the id given."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([])) as tree:
            assert await tree.supervisor("/pool").start_child(id="named") == "/pool/named"
            assert await tree.lookup("/pool/named").call("hi") == "hi"


async def test_dynamic_start_child_with_a_spec_raises_type_error() -> None:
    """A dynamic supervisor refuses a ChildSpec in ``start_child`` (TypeError)."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([])) as tree:
            with pytest.raises(
                TypeError,
                match=r"^a dynamic supervisor starts children from its template:"
                r" pass args=, not a spec$",
            ):
                await tree.supervisor("/pool").start_child(worker("x"))


async def test_dynamic_supervisor_refuses_more_than_max_children() -> None:
    """A dynamic supervisor with max_children children raises MaxChildrenError on one more."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([])) as tree:
            pool = tree.supervisor("/pool")
            await pool.start_child()
            await pool.start_child()
            with pytest.raises(
                corral.MaxChildrenError,
                match=r"^supervisor '/pool' already has max_children=2$",
            ) as caught:
                await pool.start_child()
            assert ids(pool) == ["1", "2"]
    assert (caught.value.supervisor, caught.value.max_children) == ("/pool", 2)


@pytest.mark.parametrize("operation", ["restart_child", "delete_child"])
async def test_dynamic_supervisor_refuses_restart_and_delete(operation: str) -> None:
    """A dynamic supervisor raises UnsupportedError for ``restart_child`` and ``delete_child``."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([])) as tree:
            pool = tree.supervisor("/pool")
            await pool.start_child()
            call: Callable[[str], Awaitable[object]] = getattr(pool, operation)
            with pytest.raises(
                corral.UnsupportedError,
                match=rf"^supervisor '/pool' is dynamic: {operation} does not apply"
                r" \(terminate instead\)$",
            ):
                await call("1")


async def test_dynamic_terminate_child_removes_it() -> None:
    """Terminating a dynamic supervisor's child removes it, making room under max_children."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([], max_children=1)) as tree:
            pool = tree.supervisor("/pool")
            await pool.start_child()
            await pool.terminate_child("1")
            assert ids(pool) == []
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/pool/1'$"):
                tree.lookup("/pool/1")
            assert await pool.start_child() == "/pool/2"


async def test_dynamic_child_that_crashes_is_restarted_under_its_id() -> None:
    """A crashed child of a dynamic supervisor is restarted under the same path."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree([])) as tree:
            tree.events.subscribe(events)
            pool = tree.supervisor("/pool")
            await pool.start_child()
            tree.lookup("/pool/1").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/pool/1", restarts=1)
            assert await tree.lookup("/pool/1").call("again") == "again"


async def test_dynamic_child_that_is_not_restarted_is_forgotten() -> None:
    """A dynamic supervisor's transient child that returns normally is removed."""
    events = EventLog()
    template = corral.ChildSpec("w", returns_on_request, restart=corral.RestartType.TRANSIENT)
    spec = corral.SupervisorSpec([corral.ChildSpec("pool", corral.DynamicSupervisorSpec(template))])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            pool = tree.supervisor("/pool")
            await pool.start_child()
            await tree.lookup("/pool/1").cast("return")
            await events.wait_for(corral.ChildExited, "/pool/1")
            await anyio.wait_all_tasks_blocked()
            assert ids(pool) == []
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/pool/1'$"):
                tree.lookup("/pool/1")


async def test_dynamic_children_are_stopped_at_tree_exit() -> None:
    """Every child of a dynamic supervisor is stopped (on_stop called) when the tree exits."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(pool_tree(log, max_children=None)) as tree:
            pool = tree.supervisor("/pool")
            for name in ("one", "two", "three"):
                await pool.start_child(args={"name": name})
            log.clear()
    assert sorted(log) == ["stop one", "stop three", "stop two"]
