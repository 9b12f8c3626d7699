"""Calls under overload: a call whose caller gave up before it was handled is not handled,
but kept as an ``expired`` dead letter (class and function actors)."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog

pytestmark = pytest.mark.anyio


class Slow(corral.Actor):
    """ "hold" blocks until *gate* opens; every message handled is recorded."""

    def __init__(self, gate: anyio.Event, handled: list[object]) -> None:
        self.gate = gate
        self.handled = handled

    async def handle(self, message: object) -> object:
        self.handled.append(message)
        if message == "hold":
            await self.gate.wait()
        return message


async def slow_function(ctx: corral.Context, gate: anyio.Event, handled: list[object]) -> None:
    ctx.started()
    async for message in ctx:
        handled.append(message)
        if message == "hold":  # a cast: nothing to reply
            await gate.wait()
        else:
            ctx.reply(message)


@pytest.mark.parametrize("kind", ["class", "function"])
async def test_calls_whose_callers_gave_up_are_dead_letters_not_handled(kind: str) -> None:
    """Callers that time out or are cancelled while their call waits in the mailbox: their
    calls are kept as `expired` dead letters; the callers still waiting are answered."""
    gate = anyio.Event()
    handled: list[object] = []
    start = Slow if kind == "class" else slow_function
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("s", start, args={"gate": gate, "handled": handled})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/s")
            ref.cast_nowait("hold")
            with pytest.raises(corral.CallTimeoutError):
                await ref.call("timed out", timeout=0.01)
            async with anyio.create_task_group() as tg:
                tg.start_soon(ref.call, "cancelled")
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            answers: list[object] = []

            async def patient() -> None:
                answers.append(await ref.call("patient", timeout=HANG_GUARD))

            async with anyio.create_task_group() as tg:
                tg.start_soon(patient)
                await anyio.wait_all_tasks_blocked()
                gate.set()
            letters = [(d.message, d.reason) for d in tree.dead_letters("/s")]
    assert handled == ["hold", "patient"]
    assert answers == ["patient"]
    assert letters == [("timed out", "expired"), ("cancelled", "expired")]


class Flaky(corral.Actor):
    """Crashes on "crash"; echoes the rest."""

    async def on_start(self) -> None:  # not dormant
        pass

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError(message)
        return message


async def test_a_sender_may_fail_fast_while_the_actor_waits_in_backoff() -> None:
    """With fail_fast=True, a call or a cast to an actor in backoff raises
    ActorRestartingError with the time to its next attempt; without it, the message waits
    for the next incarnation and is handled."""
    backoff = corral.Backoff(initial=HANG_GUARD / 4, jitter=0.0)
    spec = corral.SupervisorSpec([corral.ChildSpec("f", Flaky, backoff=backoff)], intensity=5)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/f")
            assert await ref.call("up", fail_fast=True) == "up"  # running: as usual
            ref.cast_nowait("crash")
            await events.wait_for(corral.RestartScheduled, "/f")
            for send in (
                lambda: ref.call("now?", fail_fast=True),
                lambda: ref.cast("now?", fail_fast=True),
            ):
                with pytest.raises(corral.ActorRestartingError) as refused:
                    await send()
                assert 0 < refused.value.retry_in <= HANG_GUARD / 4
                assert str(refused.value).startswith(
                    "actor /f is waiting to restart (its next attempt in "
                )
            with pytest.raises(corral.ActorRestartingError):
                ref.cast_nowait("now?", fail_fast=True)
            assert isinstance(refused.value, corral.ActorNotRunningError)  # a kind of it
            await tree.supervisor().terminate_child("f")
            await tree.supervisor().restart_child("f")  # started by hand: no backoff now
            assert await ref.call("back", fail_fast=True) == "back"
