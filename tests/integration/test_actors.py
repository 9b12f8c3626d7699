"""Actors as a tree runs them: class and function actors, cast and call, and call errors."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, Gated, Worker

pytestmark = pytest.mark.anyio


class Greeter(corral.Actor):
    """Answers ``"<greeting>, <message>"``; records its context's path when it starts."""

    def __init__(self, greeting: str, seen: list[str]) -> None:
        self.greeting = greeting
        self.seen = seen

    async def on_start(self) -> None:
        self.seen.append(self.ctx.path)
        self.seen.append(self.ctx.ref.path)

    async def handle(self, message: object) -> object:
        return f"{self.greeting}, {message}"


async def asker(ctx: corral.Context, *, prefix: str, log: list[object]) -> None:
    """A function actor: answers ``("ask", x)`` calls with *prefix* + x and logs casts."""
    log.append(f"ready at {ctx.path}")
    ctx.started()
    async for message in ctx:
        if isinstance(message, tuple) and message[0] == "ask":
            ctx.reply(f"{prefix}{message[1]}")
        else:
            log.append(message)


async def silent(ctx: corral.Context) -> None:
    """A function actor that never replies to anything."""
    async for _ in ctx:
        pass


async def answer_once(ctx: corral.Context, *, log: list[object]) -> None:
    """A function actor that takes one message and returns without replying to it."""
    log.append(await ctx.receive())


async def replier_to_casts(ctx: corral.Context, *, errors: list[str]) -> None:
    """A function actor that tries to reply to every message, keeping the refusals."""
    async for _ in ctx:
        try:
            ctx.reply("nobody asked")
        except RuntimeError as exc:
            errors.append(str(exc))


async def caller(ctx: corral.Context, *, target: str, results: list[object]) -> None:
    """A function actor that calls the actor at *target* for each message it gets."""
    async for message in ctx:
        results.append(await ctx.lookup(target).call(message))
        try:
            ctx.lookup("/nope")
        except corral.UnknownPathError as exc:
            results.append(str(exc))


async def test_class_actor_is_built_with_args_and_answers_calls() -> None:
    """A class actor gets its spec's args, has ``self.ctx`` in on_start and replies from handle."""
    seen: list[str] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("greeter", Greeter, args={"greeting": "hello", "seen": seen})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            assert await tree.lookup("/greeter").call("bob") == "hello, bob"
    assert seen == ["/greeter", "/greeter"]


async def test_casts_are_handled_in_order_before_a_later_call() -> None:
    """Casts are handled one at a time in the order sent, all before a call sent after them."""
    log: list[str] = []
    spec = corral.SupervisorSpec([corral.ChildSpec("w", Worker, args={"name": "w", "log": log})])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/w")
            await ref.cast(1)
            ref.cast_nowait(2)
            await ref.cast(3)
            assert await ref.call("sync") == "sync"
            assert log == ["start w", "w got 1", "w got 2", "w got 3", "w got 'sync'"]


async def test_function_actor_gets_args_receives_and_replies() -> None:
    """A function actor is called with its args, iterates its context and answers with reply."""
    log: list[object] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("fn", asker, args={"prefix": "re: ", "log": log})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/fn")
            await ref.cast("note")
            assert await ref.call(("ask", "x")) == "re: x"
            assert await ref.call(("ask", "y")) == "re: y"
            assert log == ["ready at /fn", "note"]


async def test_actor_reaches_a_sibling_through_its_context() -> None:
    """``ctx.lookup`` finds a sibling to call, and raises UnknownPathError for a missing path."""
    results: list[object] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("echo", Worker, args={"name": "echo"}),
            corral.ChildSpec("caller", caller, args={"target": "/echo", "results": results}),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            await tree.lookup("/caller").cast("ping")
            await tree.lookup("/caller").cast("pong")
            await anyio.wait_all_tasks_blocked()
    assert results == ["ping", "no actor at '/nope'", "pong", "no actor at '/nope'"]


async def test_reply_to_a_cast_is_refused() -> None:
    """``ctx.reply`` while handling a cast raises RuntimeError naming the actor."""
    errors: list[str] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("fn", replier_to_casts, args={"errors": errors})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/fn")
            await ref.cast("hi")
            assert await ref.call("sync") == "nobody asked"
    assert errors == ["actor /fn: the message being handled is not a call"]


async def test_call_times_out_when_no_reply_comes() -> None:
    """A call whose handler never finishes raises CallTimeoutError after its timeout."""
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("slow", Gated, args={"gate": anyio.Event()})]  # never set
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(
                corral.CallTimeoutError, match=r"^call to /slow timed out after 0\.05 s$"
            ) as caught:
                await tree.lookup("/slow").call("hold", timeout=0.05)
    assert caught.value.path == "/slow"


async def test_call_to_a_terminated_actor_raises_not_running() -> None:
    """Calls and casts to a terminated actor raise ActorNotRunningError."""
    spec = corral.SupervisorSpec([corral.ChildSpec("w", Worker, args={"name": "w"})])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/w")
            await tree.supervisor().terminate_child("w")
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /w is not running$"):
                await ref.call("hi")
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /w is not running$"):
                ref.cast_nowait("hi")


async def test_call_whose_handler_crashes_raises_actor_crashed() -> None:
    """A call whose handler raises fails with ActorCrashedError caused by that exception."""
    spec = corral.SupervisorSpec([corral.ChildSpec("w", Worker, args={"name": "w"})])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(
                corral.ActorCrashedError, match=r"^actor /w crashed while handling this call$"
            ) as caught:
                await tree.lookup("/w").call("crash")
    assert isinstance(caught.value.__cause__, Boom)
    assert str(caught.value.__cause__) == "w crashed"


async def test_actor_answers_again_after_a_crash() -> None:
    """After a handler crash the restarted actor answers calls through the same reference."""
    spec = corral.SupervisorSpec([corral.ChildSpec("w", Worker, args={"name": "w"})])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/w")
            with pytest.raises(corral.ActorCrashedError):
                await ref.call("crash")
            assert await ref.call("again") == "again"


async def test_function_actor_that_skips_reply_raises_no_reply() -> None:
    """A call a function actor moves past without replying fails with NoReplyError."""
    spec = corral.SupervisorSpec([corral.ChildSpec("fn", silent)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(corral.NoReplyError, match=r"^actor /fn did not reply$"):
                await tree.lookup("/fn").call("hello?")


async def test_function_actor_returning_without_reply_raises_no_reply() -> None:
    """A call a function actor returns from without replying fails with NoReplyError."""
    log: list[object] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "fn", answer_once, args={"log": log}, restart=corral.RestartType.TEMPORARY
            )
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(corral.NoReplyError, match=r"^actor /fn did not reply$"):
                await tree.lookup("/fn").call("hello?")


async def test_function_actor_returning_after_a_cast_leaves_no_dead_letter() -> None:
    """A function actor that handles a cast and then returns normally leaves no dead letter."""
    log: list[object] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "fn", answer_once, args={"log": log}, restart=corral.RestartType.TEMPORARY
            )
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            exited = anyio.Event()
            tree.events.subscribe(
                lambda e: exited.set() if isinstance(e, corral.ChildExited) else None
            )
            await tree.lookup("/fn").cast("only")
            await exited.wait()
            assert log == ["only"]
            assert tree.dead_letters() == ()
