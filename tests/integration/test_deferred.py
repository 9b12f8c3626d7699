"""Deferred replies (``ctx.defer()``) and the incarnation's tasks (``ctx.start_soon``): one
actor serving many slow calls at once, each answered exactly once, and tasks that live and
die with their incarnation."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog

pytestmark = pytest.mark.anyio


class Gateway(corral.Actor):
    """A slow dependency behind one actor: ("fetch", key) is deferred and answered by a task
    once the key's gate opens; "count" answers at once how many fetches are open."""

    def __init__(self, gates: dict[str, anyio.Event], log: list[str]) -> None:
        self.gates = gates
        self.log = log
        self.open = 0

    async def on_start(self) -> None:
        self.ctx.start_soon(self.note, "started")  # runs once the actor has started

    async def handle(self, message: object) -> object:
        match message:
            case ("fetch", str(key)):
                self.open += 1
                self.ctx.start_soon(self.fetch, key, self.ctx.defer())
                return "ignored: the reply is deferred"
            case ("done", str(key)):
                self.open -= 1
                self.log.append(f"done {key}")
                return None
            case "count":
                return self.open
            case "crash":
                raise Boom(message)
        raise AssertionError(message)

    async def note(self, text: str) -> None:
        self.log.append(text)

    async def fetch(self, key: str, reply: corral.Reply) -> None:
        await self.gates[key].wait()
        if key == "bad":
            reply.fail(LookupError(key))
        else:
            reply.send(f"value of {key}")
        await self.ctx.ref.cast(("done", key))  # state changes stay one message at a time


def gateway(gates: dict[str, anyio.Event], log: list[str]) -> corral.SupervisorSpec:
    args: dict[str, Any] = {"gates": gates, "log": log}
    return corral.SupervisorSpec([corral.ChildSpec("gw", Gateway, args=args)], intensity=5)


async def test_one_actor_serves_many_slow_calls_at_once() -> None:
    """Deferred calls wait on their own; the actor answers others meanwhile; each caller
    gets its own answer (or error), in whatever order the dependency answers."""
    gates = {key: anyio.Event() for key in ("a", "b", "bad")}
    log: list[str] = []
    answers: dict[str, object] = {}
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gateway(gates, log)) as tree:
            ref = tree.lookup("/gw")

            async def fetch(key: str) -> None:
                try:
                    answers[key] = await ref.call(("fetch", key), timeout=HANG_GUARD)
                except LookupError as exc:
                    answers[key] = exc

            async with anyio.create_task_group() as tg:
                for key in gates:
                    tg.start_soon(fetch, key)
                await anyio.wait_all_tasks_blocked()
                assert await ref.call("count") == 3  # three calls open, the actor answers
                gates["b"].set()
                await anyio.wait_all_tasks_blocked()
                assert answers == {"b": "value of b"}
                gates["bad"].set()
                gates["a"].set()
            await anyio.wait_all_tasks_blocked()
            assert await ref.call("count") == 0
    assert answers["a"] == "value of a"
    assert repr(answers["bad"]) == "LookupError('bad')"
    assert log[0] == "started"
    assert sorted(log[1:]) == ["done a", "done b", "done bad"]


async def test_an_unanswered_deferred_call_fails_when_its_incarnation_ends() -> None:
    """The caller of a deferred call is answered with NoReplyError when the actor crashes
    before answering; the incarnation's tasks are cancelled with it."""
    gates = {"slow": anyio.Event()}
    log: list[str] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gateway(gates, log)) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/gw")
            outcome: list[BaseException] = []

            async def fetch() -> None:
                with pytest.raises(corral.NoReplyError) as caught:
                    await ref.call(("fetch", "slow"), timeout=HANG_GUARD)
                outcome.append(caught.value)

            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch)
                await anyio.wait_all_tasks_blocked()
                ref.cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/gw", restarts=1)
            gates["slow"].set()  # the cancelled fetch task never answers, nor casts "done"
            await anyio.wait_all_tasks_blocked()
            assert await ref.call("count") == 0  # a new incarnation: nothing open
    assert str(outcome[0]) == "actor /gw crashed before answering a deferred call"
    assert "done slow" not in log


class Strict(corral.Actor):
    """Misuses of defer(), recorded."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def handle(self, message: object) -> object:
        if message == "cast":
            try:
                self.ctx.defer()
            except RuntimeError as exc:
                self.seen.append(str(exc))
            return None
        reply = self.ctx.defer()
        reply.send("first")
        try:
            reply.send("second")
        except RuntimeError as exc:
            self.seen.append(str(exc))
        try:
            self.ctx.defer()
        except RuntimeError as exc:
            self.seen.append(str(exc))
        return "not the answer"


async def test_a_deferred_reply_is_answered_exactly_once() -> None:
    """A second completion is an error; defer() of a cast, or twice, is an error."""
    seen: list[str] = []
    spec = corral.SupervisorSpec([corral.ChildSpec("s", Strict, args={"seen": seen})])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            assert await tree.lookup("/s").call("call") == "first"
            await tree.lookup("/s").cast("cast")
            await tree.lookup("/s").call("call")  # after the cast: handled in order
    assert seen == [
        "actor /s: this deferred reply was completed already",
        "actor /s: this call is deferred already",
        "actor /s: defer() answers a call, and the message being handled is not one",
        "actor /s: this deferred reply was completed already",
        "actor /s: this call is deferred already",
    ]


async def failing_task(ctx: corral.Context, gate: anyio.Event) -> None:
    async def fails() -> None:
        await gate.wait()
        msg = "background"
        raise Boom(msg)

    ctx.start_soon(fails)  # before started: runs once started
    ctx.started()
    async for message in ctx:
        reply = ctx.defer()
        ctx.start_soon(answer_later, reply, message)


async def answer_later(reply: corral.Reply, message: object) -> None:
    await anyio.lowlevel.checkpoint()
    reply.send(("later", message))


async def test_a_failing_task_crashes_its_actor_and_function_actors_defer_too() -> None:
    """An exception in a start_soon task crashes the actor like a handler's (its exit says
    which), and it is restarted; a function actor defers a call and receives the next one."""
    gate = anyio.Event()
    events = EventLog()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("f", failing_task, args={"gate": gate})], intensity=5
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/f")
            assert await ref.call("x") == ("later", "x")
            assert await ref.call("y") == ("later", "y")
            gate.set()
            exited = await events.wait_for(corral.ChildExited, "/f")
            await events.wait_for(corral.ChildStarted, "/f", restarts=1)
    assert exited.kind is corral.ExitKind.ERROR
    assert repr(exited.exception) == "Boom('background')"
