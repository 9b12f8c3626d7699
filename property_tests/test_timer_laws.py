"""Laws of timers, on both backends, over random scripts of arming, cancelling, crashing and
waiting: a tick is only ever delivered to the incarnation that armed its timer, and never
after its timer was cancelled; a one-shot timer delivers at most once."""

from __future__ import annotations

from collections import Counter

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])

HANG_GUARD = 20.0
PERIOD = 0.002


@attrs.define
class Journal:
    """Every message each incarnation handled, in order: (incarnation, message)."""

    handled: list[tuple[int, object]] = attrs.field(factory=list)
    incarnations: int = 0


class Armer(corral.Actor):
    """Arms and cancels timers on command; its ticks say which incarnation armed them."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.timers: dict[int, corral.Timer] = {}

    async def on_start(self) -> None:
        self.journal.incarnations += 1
        self.me = self.journal.incarnations

    async def handle(self, message: object) -> object:
        self.journal.handled.append((self.me, message))
        match message:
            case ("once", int(n), int(periods)):
                self.timers[n] = self.ctx.send_after(periods * PERIOD, ("tick", self.me, n))
            case ("every", int(n), int(periods)):
                self.timers[n] = self.ctx.send_interval(periods * PERIOD, ("tick", self.me, n))
            case ("cancel", int(n)):
                timer = self.timers.get(n)
                if timer is not None:
                    timer.cancel()
            case "crash":
                msg = "on purpose"
                raise RuntimeError(msg)
        return None


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("once"), st.integers(0, 3)),
        st.tuples(st.just("every"), st.integers(1, 2)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.just(("crash",)),
        st.tuples(st.just("wait"), st.integers(1, 4)),
    ),
    max_size=10,
)


@settings(deadline=None)
@given(steps=STEPS)
def test_ticks_reach_only_their_incarnation_and_never_after_a_cancel(
    backend: str, steps: list[tuple[object, ...]]
) -> None:
    journal = Journal()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("a", Armer, args={"journal": journal})], intensity=10**6
    )

    async def run() -> None:
        with anyio.fail_after(HANG_GUARD):
            async with corral.open_tree(spec) as tree:
                ref = tree.lookup("/a")
                for n, step in enumerate(steps):
                    match step:
                        case ("wait", int(periods)):
                            await anyio.sleep(periods * PERIOD)  # a load: ticks fall due
                        case ("crash",):
                            with pytest.raises(corral.ActorCrashedError):
                                await ref.call("crash")
                        case ("cancel", int(target)):
                            await ref.call(("cancel", target))
                        case (str(kind), int(periods)):
                            await ref.call((kind, n, periods))
                await anyio.sleep(5 * PERIOD)  # a load: what is due comes in

    anyio.run(run, backend=backend)
    armed: set[tuple[int, int]] = set()  # (incarnation, timer) armed so far
    cancelled: set[tuple[int, int]] = set()  # and cancelled after that
    delivered: Counter[tuple[int, int]] = Counter()
    once: set[tuple[int, int]] = set()
    for me, message in journal.handled:
        match message:
            case ("tick", int(armed_by), int(timer)):
                assert armed_by == me, f"a tick of incarnation {armed_by} reached {me}"
                assert (me, timer) not in cancelled, f"timer {timer} ticked after its cancel"
                delivered[me, timer] += 1
            case ("cancel", int(timer)) if (me, timer) in armed:
                cancelled.add((me, timer))
            case ("once" | "every", int(timer), _):
                armed.add((me, timer))
                if message[0] == "once":
                    once.add((me, timer))
    assert all(delivered[key] <= 1 for key in once)
