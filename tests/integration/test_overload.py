"""Calls under overload: a call whose caller gave up before it was handled is not handled,
but kept as an ``expired`` dead letter (class and function actors)."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD

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
