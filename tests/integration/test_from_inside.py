"""Actors drive the tree: ``ctx.supervisor(path)`` from inside, waiting for a free slot of a
full dynamic supervisor, and the deadlock rule (no waiting on a supervisor that waits for you)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog

pytestmark = pytest.mark.anyio


class Job(corral.Actor):
    """A job: answers its name ("crash" raises)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError(message)
        return self.name


class Dispatcher(corral.Actor):
    """One child per job: ``("start", name)`` starts a Job under /pool and answers its path;
    ``("stop", id)`` terminates it; ``"children"`` answers the pool's ids and counts."""

    async def handle(self, message: object) -> object:
        pool = self.supervisor("/pool")
        match message:
            case ("start", str(name)):
                return await pool.start_child(args={"name": name}, id=name)
            case ("stop", str(child_id)):
                await pool.terminate_child(child_id)
                return None
            case "children":
                return [c.id for c in pool.which_children()], pool.count_children()
            case "mine":
                return self.supervisor().path, self.ctx.supervisor().path
            case ("lookup", str(path)):
                try:
                    return self.supervisor(path)
                except corral.UnknownPathError as exc:
                    return str(exc)
        raise AssertionError(message)


def tree(max_children: int | None = None) -> corral.SupervisorSpec:
    pool = corral.DynamicSupervisorSpec(
        corral.ChildSpec("job", Job, args={"name": "?"}, restart=corral.RestartType.TEMPORARY),
        max_children=max_children,
    )
    return corral.SupervisorSpec(
        [corral.ChildSpec("pool", pool), corral.ChildSpec("dispatcher", Dispatcher)]
    )


async def test_an_actor_starts_and_stops_children_of_a_dynamic_supervisor() -> None:
    """One child per job, from inside: the actor reaches /pool as a SupervisorRef."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree()) as running:
            dispatcher = running.lookup("/dispatcher")
            assert await dispatcher.call(("start", "j1")) == "/pool/j1"
            assert await dispatcher.call(("start", "j2")) == "/pool/j2"
            assert await running.lookup("/pool/j2").call("who") == "j2"
            await dispatcher.call(("stop", "j1"))
            children = await dispatcher.call("children")
            assert isinstance(children, tuple)
            ids, counts = children
            assert ids == ["j2"]
            assert counts == corral.Counts(specs=1, active=1, supervisors=0, workers=1)
            assert await dispatcher.call("mine") == ("/", "/")
            assert await dispatcher.call(("lookup", "/x")) == "no running supervisor at '/x'"


async def test_a_full_pool_can_be_waited_on_first_come_first_served() -> None:
    """start_child(wait=...) on a full pool waits for a free slot; waiters are served in
    order, a request that does not wait gets no slot meanwhile, and a wait can run out."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(max_children=1)) as running:
            pool = running.supervisor("/pool")
            assert await pool.start_child(args={"name": "a"}, id="a") == "/pool/a"
            served: list[str | None] = []

            async def wait_for(child_id: str) -> None:
                served.append(await pool.start_child(id=child_id, wait=HANG_GUARD))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for, "b")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(wait_for, "c")
                await anyio.wait_all_tasks_blocked()  # b, then c, wait
                with pytest.raises(
                    corral.MaxChildrenError,
                    match=r"^supervisor '/pool' already has max_children=1"
                    r" \(2 waiting for a slot first\)$",
                ):
                    await pool.start_child(id="d")
                await pool.terminate_child("a")
                await anyio.wait_all_tasks_blocked()
                assert served == ["/pool/b"]
                await pool.terminate_child("b")
            assert served == ["/pool/b", "/pool/c"]
            with pytest.raises(
                corral.MaxChildrenError,
                match=r"^supervisor '/pool' already has max_children=1"
                r" \(waited 0\.01 s for a free slot\)$",
            ):
                await pool.start_child(id="e", wait=0.01)
            assert [c.id for c in pool.which_children()] == ["c"]
            with pytest.raises(ValueError, match=r"^wait must be seconds >= 0, got -1$"):
                await pool.start_child(id="f", wait=-1)


async def test_a_stopping_pool_fails_its_waiters() -> None:
    """Requests waiting for a slot get the stopping error when their supervisor stops."""
    failures: list[BaseException] = []

    async def wait(pool: corral.SupervisorRef) -> None:
        try:
            await pool.start_child(id="late", wait=HANG_GUARD)
        except corral.UnknownPathError as exc:
            failures.append(exc)

    with anyio.fail_after(HANG_GUARD):
        async with (
            corral.open_tree(tree(max_children=0)) as running,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(wait, running.supervisor("/pool"))
            await anyio.wait_all_tasks_blocked()
            running.stop()
            await running.wait()
    assert [str(f) for f in failures] == [
        "supervisor '/pool' is stopping: start_child 'late' was not done"
    ]


class StartsAChildWhileStarting(corral.Actor):
    """From on_start, asks its own supervisor to start a child: refused, not a hang."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_start(self) -> None:
        try:
            await self.supervisor().start_child(corral.ChildSpec("other", Job, args={"name": "o"}))
        except corral.UnsupportedError as exc:
            self.seen.append(str(exc))

    async def handle(self, message: object) -> object:
        return message


class TerminatesASiblingWhileStopping(corral.Actor):
    """From on_stop, asks its supervisor to terminate a sibling: refused, not a hang."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        try:
            await self.supervisor().terminate_child("calm")
        except corral.CorralError as exc:
            self.seen.append(str(exc))


async def test_an_actor_may_not_wait_on_a_supervisor_that_waits_for_it() -> None:
    """A request from a child that its supervisor is starting or stopping would never be
    answered: it raises UnsupportedError saying so."""
    seen: list[str] = []
    args: dict[str, Any] = {"seen": seen}
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("calm", Job, args={"name": "calm"}),
            corral.ChildSpec("starter", StartsAChildWhileStarting, args=args),
            corral.ChildSpec("stopper", TerminatesASiblingWhileStopping, args=args),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
        intensity=5,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as running:
            running.events.subscribe(events)
            assert await running.lookup("/stopper").call("hi") == "hi"  # it has a task
            running.lookup("/calm").cast_nowait("crash")  # the loop restarts them all
            await events.wait_for(corral.ChildStarted, "/stopper", restarts=1)
    starting = (
        "/starter cannot wait for supervisor '/' to start child: the supervisor is waiting"
        " for /starter to start (its on_start), so it would never answer; do it once started"
        " (in handle), not while starting or stopping"
    )
    stopping = (
        "/stopper cannot wait for supervisor '/' to terminate child: the supervisor is"
        " waiting for /stopper to stop (its on_stop), so it would never answer; do it once"
        " started (in handle), not while starting or stopping"
    )
    # the boot, the restart of all, and the final stop (the loop has ended by then)
    assert seen == [
        starting,
        stopping,
        starting,
        "no running supervisor at '/'",  # its loop has ended: it is not found any more
    ]
