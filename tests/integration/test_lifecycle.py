"""Boot and shutdown order: children start in order and stop in reverse, depth first."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog, Lifecycle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


class FailsToStart(corral.Actor):
    """Raises ``ValueError('no db')`` in on_start."""

    async def on_start(self) -> None:
        msg = "no db"
        raise ValueError(msg)

    async def handle(self, message: object) -> object:
        return message


async def lifecycle_fn(ctx: corral.Context, *, name: str, log: list[str]) -> None:
    """A function actor that logs ``start <name>`` before ``ctx.started()`` and its stop."""
    await anyio.lowlevel.checkpoint()
    log.append(f"start {name}")
    ctx.started()
    try:
        async for _ in ctx:
            pass
    finally:
        log.append(f"stop {name}")


async def raises_before_started(ctx: corral.Context) -> None:
    """A function actor that fails during its set-up."""
    msg = "no config"
    raise KeyError(msg)


async def boot_error(spec: corral.SupervisorSpec, message: str = "") -> corral.StartError:
    """Open a tree that must fail to boot with StartError (*message* exactly, if given)."""
    with pytest.raises(
        corral.StartError, match=f"^{re.escape(message)}$" if message else None
    ) as caught:
        async with corral.open_tree(spec):
            pass
    return caught.value


def ordered_tree(log: list[str]) -> corral.SupervisorSpec:
    """``a, b, sub(c, d), e``: class and function actors and a nested supervisor."""

    def child(name: str) -> corral.ChildSpec:
        return corral.ChildSpec(name, Lifecycle, args={"name": name, "log": log})

    sub = corral.SupervisorSpec(
        [
            corral.ChildSpec("c", lifecycle_fn, args={"name": "c", "log": log}),
            child("d"),
        ]
    )
    return corral.SupervisorSpec(
        [
            child("a"),
            corral.ChildSpec("b", lifecycle_fn, args={"name": "b", "log": log}),
            corral.ChildSpec("sub", sub),
            child("e"),
        ]
    )


async def test_children_start_in_order() -> None:
    """Children start in spec order, depth first, each ready before the next starts."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(ordered_tree(log)):
            assert log == ["start a", "start b", "start c", "start d", "start e"]


async def test_children_stop_in_reverse_order_depth_first() -> None:
    """On tree exit children stop in reverse order; a sub-supervisor's before earlier siblings."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(ordered_tree(log)):
            log.clear()
    assert log == ["stop e", "stop d", "stop c", "stop b", "stop a"]


async def test_tree_exit_publishes_child_stopped_in_reverse_order() -> None:
    """On tree exit a ChildStopped event is published per child, sub-supervisor after its own."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(ordered_tree([])) as tree:
            tree.events.subscribe(events)
    assert events.summary(corral.ChildStopped) == [
        ("ChildStopped", "/e"),
        ("ChildStopped", "/sub/d"),
        ("ChildStopped", "/sub/c"),
        ("ChildStopped", "/sub"),
        ("ChildStopped", "/b"),
        ("ChildStopped", "/a"),
    ]


async def test_children_stop_in_reverse_order_when_the_block_is_cancelled() -> None:
    """When an enclosing scope cancels the block, children still stop in reverse order."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD), anyio.CancelScope() as scope:
        async with corral.open_tree(ordered_tree(log)):
            log.clear()
            scope.cancel()
            await anyio.sleep_forever()
    assert log == ["stop e", "stop d", "stop c", "stop b", "stop a"]


class StartsThenStalls(corral.Actor):
    """First start at once; later starts wait for *release*. ``"crash"`` raises."""

    def __init__(self, log: list[str], restarting: anyio.Event, release: anyio.Event) -> None:
        self.log = log
        self.restarting = restarting
        self.release = release

    async def on_start(self) -> None:
        self.log.append("start")
        if len(self.log) == 1:
            return
        self.restarting.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.log.append("start cancelled")
            raise

    async def handle(self, message: object) -> object:
        msg = "crash"
        raise ValueError(msg)


async def stalls_in_start(
    ctx: corral.Context, *, log: list[str], starting: anyio.Event, release: anyio.Event
) -> None:
    """A function actor whose set-up waits for *release* before it signals readiness."""
    log.append("start stalled")
    starting.set()
    try:
        await release.wait()
    except anyio.get_cancelled_exc_class():
        log.append("stalled start cancelled")
        raise
    ctx.started()
    async for _ in ctx:
        pass


async def cancel_while_starting(
    spec: corral.SupervisorSpec,
    starting: anyio.Event,
    release: anyio.Event,
    act: Callable[[corral.Tree], Awaitable[None]] | None = None,
) -> bool:
    """Open *spec*'s tree in a scope, cancel the scope once *starting* is set, and return
    whether open_tree was done once every task blocked. *release* is set in any case, so a
    start that the cancellation failed to reach cannot hang the test."""
    done = anyio.Event()
    scope = anyio.CancelScope()

    async def open_in_scope() -> None:
        with scope:
            async with corral.open_tree(spec) as tree:
                if act is not None:
                    await act(tree)
                await anyio.sleep_forever()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_in_scope)
        await starting.wait()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        finished = done.is_set()
        release.set()
    return finished


async def test_cancelling_the_block_during_boot_ends_a_stalled_start() -> None:
    """Cancelling open_tree while a child starts cancels that start, stops the rest in reverse."""
    log: list[str] = []
    starting, release = anyio.Event(), anyio.Event()
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("a", Lifecycle, args={"name": "a", "log": log}),
            corral.ChildSpec("b", Lifecycle, args={"name": "b", "log": log}),
            corral.ChildSpec(
                "c",
                stalls_in_start,
                args={"log": log, "starting": starting, "release": release},
            ),
            corral.ChildSpec("d", Lifecycle, args={"name": "d", "log": log}),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        finished = await cancel_while_starting(spec, starting, release)
    assert finished
    assert log == [
        "start a",
        "start b",
        "start stalled",
        "stalled start cancelled",
        "stop b",
        "stop a",
    ]


async def test_cancelling_the_block_during_a_restart_ends_a_stalled_start() -> None:
    """Cancelling open_tree while a crashed child restarts cancels that start and ends the tree."""
    log: list[str] = []
    restarting, release = anyio.Event(), anyio.Event()
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "a",
                StartsThenStalls,
                args={"log": log, "restarting": restarting, "release": release},
            )
        ]
    )

    async def crash(tree: corral.Tree) -> None:
        tree.lookup("/a").cast_nowait("crash")

    with anyio.fail_after(HANG_GUARD):
        finished = await cancel_while_starting(spec, restarting, release, crash)
    assert finished
    assert log == ["start", "start", "start cancelled"]


def failing_boot_tree(log: list[str]) -> corral.SupervisorSpec:
    """``a, b, c, d`` where ``c`` fails in on_start."""
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("a", Lifecycle, args={"name": "a", "log": log}),
            corral.ChildSpec("b", lifecycle_fn, args={"name": "b", "log": log}),
            corral.ChildSpec("c", FailsToStart),
            corral.ChildSpec("d", Lifecycle, args={"name": "d", "log": log}),
        ]
    )


async def test_boot_failure_raises_start_error_naming_the_child() -> None:
    """A boot failure makes open_tree raise StartError naming the child, caused by its error."""
    with anyio.fail_after(HANG_GUARD):
        error = await boot_error(
            failing_boot_tree([]), "supervisor '/': child 'c' failed to start: ValueError('no db')"
        )
    assert (error.supervisor, error.child_id) == ("/", "c")
    assert isinstance(error.__cause__, ValueError)


async def test_boot_failure_stops_started_children_in_reverse_order() -> None:
    """After a boot failure the children already started stop in reverse; later ones never start."""
    log: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        await boot_error(failing_boot_tree(log))
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_function_actor_raising_before_started_fails_the_boot() -> None:
    """A function actor that raises before signalling readiness fails the boot with StartError."""
    spec = corral.SupervisorSpec([corral.ChildSpec("fn", raises_before_started)])
    with anyio.fail_after(HANG_GUARD):
        await boot_error(spec, "supervisor '/': child 'fn' failed to start: KeyError('no config')")


async def test_nested_boot_failure_chains_the_sub_supervisors_start_error() -> None:
    """A sub-supervisor's boot failure fails the parent's boot, caused by its StartError."""
    sub = corral.SupervisorSpec([corral.ChildSpec("bad", FailsToStart)])
    spec = corral.SupervisorSpec([corral.ChildSpec("sub", sub)])
    inner = "supervisor '/sub': child 'bad' failed to start: ValueError('no db')"
    with anyio.fail_after(HANG_GUARD):
        error = await boot_error(
            spec, f"supervisor '/': child 'sub' failed to start: StartError({inner!r})"
        )
    assert isinstance(error.__cause__, corral.StartError)


class Fatal(BaseException):
    """Not an Exception: what no supervisor handles (as KeyboardInterrupt)."""


class RaisesFatal(corral.Actor):
    """Raises ``Fatal`` on ``"boom"``; records its stop."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def handle(self, message: object) -> object:
        if message == "boom":
            raise Fatal(message)
        return message

    async def on_stop(self) -> None:
        self.log.append("stopped")


async def test_a_base_exception_from_an_actor_escapes_open_tree() -> None:
    """A BaseException that is no Exception is no crash to restart: it ends the tree and
    leaves open_tree as it came, as from any task of a task group."""
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec(name, RaisesFatal, args={"log": log}) for name in ("a", "b")]
    )

    async def crash_a() -> None:
        async with corral.open_tree(spec) as tree:
            await tree.lookup("/b").call("ping")  # b awake: it has a task to stop
            tree.lookup("/a").cast_nowait("boom")
            await anyio.sleep_forever()

    with anyio.fail_after(HANG_GUARD), pytest.raises(Fatal, match=r"^boom$"):
        await crash_a()
    # a's on_stop runs as the exception leaves it (as a finally would); b is stopped by the
    # tree on the way out
    assert log == ["stopped", "stopped"]
