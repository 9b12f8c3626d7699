"""Laws of deferred replies, on both backends, over random scripts of deferred calls,
completions and crashes: every caller is answered exactly once: with the value or error the
actor completed its reply with while the incarnation ran, else ``NoReplyError`` when the
incarnation ended (a crash, or the tree's stop)."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])

HANG_GUARD = 20.0


class Deferring(corral.Actor):
    """("call", i) is deferred; ("send", i) / ("fail", i) complete it (if this incarnation
    holds it); "crash" raises."""

    def __init__(self) -> None:
        self.replies: dict[int, corral.Reply] = {}

    async def handle(self, message: object) -> object:
        match message:
            case ("call", int(i)):
                self.replies[i] = self.ctx.defer()
            case ("send", int(i)) if i in self.replies:
                self.replies.pop(i).send(i)
            case ("fail", int(i)) if i in self.replies:
                self.replies.pop(i).fail(KeyError(i))
            case "crash":
                msg = "on purpose"
                raise RuntimeError(msg)
        return None


STEPS = st.lists(
    st.one_of(
        st.just(("call",)),
        st.tuples(st.sampled_from(["send", "fail"]), st.integers(0, 7)),
        st.just(("crash",)),
    ),
    max_size=14,
)


@settings(deadline=None)
@given(steps=STEPS)
def test_every_deferred_call_is_answered_exactly_once(
    backend: str, steps: list[tuple[object, ...]]
) -> None:
    spec = corral.SupervisorSpec([corral.ChildSpec("d", Deferring)], intensity=10**6)
    outcomes: dict[int, list[object]] = {}
    expected: dict[int, object] = {}
    open_calls: set[int] = set()  # deferred in the running incarnation, not completed yet

    async def caller(
        ref: corral.ActorRef, i: int, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        task_status.started()  # the parent goes on once the call below is queued
        try:
            outcome: object = await ref.call(("call", i), timeout=HANG_GUARD)
        except (KeyError, corral.NoReplyError) as exc:
            outcome = type(exc).__name__
        outcomes.setdefault(i, []).append(outcome)

    async def run() -> None:
        calls = 0
        with anyio.fail_after(HANG_GUARD):
            async with corral.open_tree(spec) as tree, anyio.create_task_group() as tg:
                ref = tree.lookup("/d")
                for step in steps:
                    match step:
                        case ("call",):
                            await tg.start(caller, ref, calls)
                            open_calls.add(calls)
                            calls += 1
                        case (str(how), int(i)):
                            await ref.cast((how, i))
                            if i in open_calls:
                                open_calls.discard(i)
                                expected[i] = i if how == "send" else "KeyError"
                        case ("crash",):
                            await ref.cast("crash")
                            for i in open_calls:
                                expected[i] = "NoReplyError"
                            open_calls.clear()
                    await ref.call("barrier", timeout=HANG_GUARD)  # all before it is handled
                for i in open_calls:  # the tree's stop ends the incarnation
                    expected[i] = "NoReplyError"
                tree.stop()

    anyio.run(run, backend=backend)
    assert outcomes == {i: [outcome] for i, outcome in expected.items()}
