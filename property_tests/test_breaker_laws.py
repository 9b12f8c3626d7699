"""The breaker's state machine against a reference model, over random scripts of calls,
outcomes, time passing, operators' resets and holds, and reloads' new thresholds.

The model is written from the rules in the README (lists recomputed at each step, nothing
incremental); ``Breaker`` keeps running counts and tickets. After every step both must agree
on the state, whether a call was let through, every count and the time of the next trial.
Besides the model: at most ``trials`` calls are under way in half-open, and an open breaker
lets nothing through before its wait is over.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import corral
from corral.actors.breaker import FAILURE, IGNORED, SUCCESS, Breaker, BreakerSpec, BreakerState

Outcome = Literal["success", "failure", "ignored"]


@attrs.define
class Model:
    spec: BreakerSpec
    samples: list[float]
    state: str = "closed"
    era: int = 0  # bumped on every change of state: a call counts in the era it entered
    outcomes: list[bool] = attrs.field(factory=list)  # closed: True for a failure, oldest first
    run: int = 0  # closed: failures since the last success (not bounded by the window)
    openings: int = 0  # in a row, since the last close
    reopen_at: float = math.inf
    held: bool = False
    trials_running: int = 0
    trials_passed: int = 0
    succeeded: int = 0
    failed: int = 0
    ignored: int = 0
    rejected: int = 0

    def admit(self, now: float) -> int | None:
        if self.state == "open":
            if self.held or now < self.reopen_at:
                self.rejected += 1
                return None
            self.enter("half-open")
        if self.state == "half-open":
            if self.trials_running == self.spec.trials:
                self.rejected += 1
                return None
            self.trials_running += 1
        return self.era

    def finish(self, era: int, outcome: Outcome, now: float) -> None:
        self.succeeded += outcome == SUCCESS
        self.failed += outcome == FAILURE
        self.ignored += outcome == IGNORED
        if era != self.era:
            return
        if self.state == "half-open":
            self.trials_running -= 1
            if outcome == FAILURE:
                self.open(now)
            elif outcome == SUCCESS:
                self.trials_passed += 1
                if self.trials_passed == self.spec.trials:
                    self.close()
        elif self.state == "closed" and outcome != IGNORED:
            self.run = self.run + 1 if outcome == FAILURE else 0
            self.outcomes = [*self.outcomes, outcome == FAILURE][-self.spec.window :]
            if outcome == FAILURE and self.trips():
                self.open(now)

    def trips(self) -> bool:
        spec, window = self.spec, self.outcomes
        if spec.failures is not None and self.run >= spec.failures:
            return True
        return (
            spec.failure_rate is not None
            and len(window) >= spec.min_calls
            and sum(window) / len(window) >= spec.failure_rate
        )

    def enter(self, state: str) -> None:
        self.state = state
        self.era += 1
        self.trials_running = self.trials_passed = 0
        self.reopen_at = math.inf

    def open(self, now: float) -> None:
        self.openings += 1
        self.enter("open")
        spec = self.spec
        wait = min(spec.wait_cap, spec.wait * spec.wait_multiplier ** (self.openings - 1))
        self.reopen_at = now + wait * (1 - spec.jitter * self.samples.pop(0))

    def close(self) -> None:
        self.openings = 0
        self.outcomes = []
        self.run = 0
        self.enter("closed")

    def reset(self) -> None:
        self.held = False
        if self.state == "closed":
            self.outcomes = []
            self.run = 0
        else:
            self.close()

    def hold(self) -> None:
        self.held = True
        if self.state != "open":
            self.enter("open")
        self.reopen_at = math.inf

    def retune(self, spec: BreakerSpec) -> None:
        self.outcomes = self.outcomes[-spec.window :]
        self.spec = spec


@st.composite
def specs(draw: st.DrawFn) -> BreakerSpec:
    window = draw(st.integers(1, 12))
    failures = draw(st.none() | st.integers(1, 4))
    # 3 of 10 and 7 of 10 are exactly 0.3 and 0.7 (a product would be off by an ulp)
    rate = draw(st.sampled_from([0.25, 0.3, 0.5, 0.7, 1.0]) | st.none())
    if failures is None and rate is None:
        failures = 1
    return BreakerSpec(
        failures=failures,
        failure_rate=rate,
        window=window,
        min_calls=draw(st.integers(1, window)),
        wait=(wait := draw(st.sampled_from([0.0, 1.0, 2.5]))),
        wait_cap=draw(st.sampled_from([1.0, 4.0, 100.0]).filter(lambda cap: cap >= wait)),
        wait_multiplier=draw(st.sampled_from([1.0, 2.0, 3.0])),
        jitter=draw(st.sampled_from([0.0, 0.5, 1.0])),
        trials=draw(st.integers(1, 3)),
    )


admit = st.tuples(st.just("admit"))
finish = st.tuples(
    st.just("finish"), st.integers(0, 11), st.sampled_from([SUCCESS, FAILURE, IGNORED])
)
wait = st.tuples(st.just("wait"), st.sampled_from([0.1, 0.5, 1.0, 3.0, 10.0]))
rare = st.one_of(
    st.tuples(st.just("reset")), st.tuples(st.just("hold")), st.tuples(st.just("retune"), specs())
)
# Calls and their ends most of the time; an operator's hold lasts until a reset, so holds and
# resets are rare enough for half-open to be reached often.
step = st.one_of(admit, admit, admit, finish, finish, finish, wait, wait, rare)


def check(breaker: Breaker, model: Model, now: float) -> None:
    assert breaker.state.value == model.state
    assert breaker.held == model.held
    assert (breaker.succeeded, breaker.failed, breaker.ignored, breaker.rejected) == (
        model.succeeded,
        model.failed,
        model.ignored,
        model.rejected,
    )
    snapshot = breaker.snapshot()
    assert snapshot.window_calls == len(model.outcomes)
    assert snapshot.window_failures == sum(model.outcomes)
    assert snapshot.consecutive == model.run
    assert breaker.reopen_at == model.reopen_at
    assert (breaker.in_trial, breaker.trial_successes) == (
        model.trials_running,
        model.trials_passed,
    )
    assert 0 <= breaker.in_trial <= breaker.spec.trials
    if breaker.state is BreakerState.OPEN and not breaker.held:
        assert breaker.retry_in(now) == max(0.0, model.reopen_at - now)


@given(
    spec=specs(),
    script=st.lists(step, max_size=80),
    samples=st.lists(st.floats(0, 0.999), min_size=80, max_size=80),
)
def test_breaker_follows_the_reference_model(
    spec: BreakerSpec, script: list[tuple[object, ...]], samples: list[float]
) -> None:
    now = 100.0
    draws = iter(samples)
    breaker = Breaker("/api", "dep", spec, lambda: next(draws), now)
    model = Model(spec, list(samples))
    under_way: list[tuple[int, int]] = []  # (breaker's ticket, model's era) of calls let through
    for op in script:
        match op:
            case ("admit",):
                era = model.admit(now)
                if era is None:
                    with pytest.raises(corral.BreakerOpenError):
                        breaker.admit(now)
                else:
                    under_way.append((breaker.admit(now), era))
            case ("finish", int(index), str(outcome)) if under_way:
                ticket, era = under_way.pop(index % len(under_way))
                error = ConnectionError("down") if outcome == FAILURE else None
                model.finish(era, outcome, now)  # type: ignore[arg-type]  # drawn from the three
                breaker.record(ticket, outcome, error, now)
            case ("wait", float(seconds)):
                now += seconds
            case ("reset",):
                model.reset()
                breaker.reset(now, "reset")
            case ("hold",):
                model.hold()
                breaker.hold_open(now, "held")
            case ("retune", BreakerSpec() as new):
                model.retune(new)
                breaker.retune(new)
        check(breaker, model, now)
