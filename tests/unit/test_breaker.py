"""A breaker's spec and state machine, step by step (the laws over random scripts are in
property_tests/test_breaker_laws.py)."""

from __future__ import annotations

import math
import re

import pytest

import corral
from corral.actors.breaker import FAILURE, IGNORED, SUCCESS, Breaker, BreakerSpec, BreakerState


def breaker(spec: BreakerSpec, sample: float = 0.0) -> Breaker:
    return Breaker("/api", "pricing", spec, lambda: sample, 0.0)


def state(b: Breaker) -> BreakerState:
    """Its state now (read through a call, so that the type checker does not keep the state
    it saw before the calls that change it)."""
    return b.state


def fail(b: Breaker, now: float = 0.0) -> None:
    b.record(b.admit(now), FAILURE, ConnectionError("refused"), now)


def succeed(b: Breaker, now: float = 0.0) -> None:
    b.record(b.admit(now), SUCCESS, None, now)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failures": None}, "a breaker needs failures or failure_rate (or both)"),
        ({"failures": 0}, "breaker failures must be an integer >= 1, got 0"),
        ({"failure_rate": 0.0}, "breaker failure_rate must be > 0"),
        ({"failure_rate": 1.5}, "breaker failure_rate must be a finite number within [0.0, 1.0]"),
        ({"window": 5, "min_calls": 6}, "breaker min_calls (6) cannot exceed its window (5)"),
        ({"wait": math.inf}, "breaker wait must be a finite number >= 0.0, got inf"),
        ({"wait": 90.0}, "breaker wait (90.0) cannot exceed its wait_cap (60.0): raise wait_cap"),
        ({"wait_multiplier": 0.5}, "breaker wait_multiplier must be a finite number >= 1.0"),
        ({"jitter": -0.1}, "breaker jitter must be a finite number within [0.0, 1.0]"),
        ({"trials": 0}, "breaker trials must be an integer >= 1, got 0"),
        ({"timeout": 0}, "breaker timeout must be > 0 seconds, or None for no timeout"),
        ({"failure_on": "ConnectionError"}, "breaker failure_on must hold exception classes"),
        ({"ignore": [int]}, "breaker ignore must hold exception classes"),
    ],
)
def test_spec_errors_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(corral.SpecError, match=re.escape(message)):
        BreakerSpec(**options)  # type: ignore[arg-type]  # wrong on purpose


def test_one_exception_class_is_taken_as_a_tuple_of_one() -> None:
    assert BreakerSpec(failure_on=ConnectionError).failure_on == (ConnectionError,)


def test_a_child_checks_its_breakers() -> None:
    async def work(ctx: corral.Context) -> None:
        pass

    with pytest.raises(corral.SpecError, match="breaker name 'a b' must be 1-64 letters"):
        corral.ChildSpec("w", work, breakers={"a b": BreakerSpec()})
    with pytest.raises(corral.SpecError, match="breaker 'x' must be a BreakerSpec, got 5"):
        corral.ChildSpec("w", work, breakers={"x": 5})  # type: ignore[dict-item]  # on purpose
    with pytest.raises(corral.SpecError, match="a supervisor has no breakers"):
        corral.ChildSpec("s", corral.SupervisorSpec(), breakers={"x": BreakerSpec()})


def test_failures_in_a_row_open_it_and_a_success_breaks_the_run() -> None:
    b = breaker(BreakerSpec(failures=3))
    fail(b)
    fail(b)
    succeed(b)
    fail(b)
    fail(b)
    assert state(b) is BreakerState.CLOSED
    fail(b)
    assert state(b) is BreakerState.OPEN
    assert isinstance(b.last_failure, ConnectionError)


def test_a_failure_rate_opens_it_once_the_window_holds_min_calls() -> None:
    """3 failures of 10 reach a rate of 0.3 exactly (a product 0.3 * 10 would not)."""
    b = breaker(BreakerSpec(failures=None, failure_rate=0.3, window=10, min_calls=10))
    for _ in range(7):
        succeed(b)
    fail(b)
    fail(b)
    assert state(b) is BreakerState.CLOSED  # 2 of 9: below min_calls anyway
    fail(b)
    assert state(b) is BreakerState.OPEN


def test_the_window_slides() -> None:
    """Old failures leave the window: 2 failures, then 4 successes, in a window of 4."""
    b = breaker(BreakerSpec(failures=None, failure_rate=0.5, window=4, min_calls=4))
    fail(b)
    fail(b)
    for _ in range(4):
        succeed(b)
    fail(b)
    assert state(b) is BreakerState.CLOSED  # 1 of the last 4
    assert b.snapshot().window_failures == 1


def test_open_rejects_until_its_wait_then_half_open_lets_trials_through() -> None:
    b = breaker(BreakerSpec(failures=1, wait=2.0, jitter=0.5, trials=2), sample=0.5)
    fail(b, now=10.0)
    assert b.reopen_at == 10.0 + 2.0 * (1 - 0.25)  # less a quarter: jitter 0.5 at sample 0.5
    with pytest.raises(corral.BreakerOpenError) as caught:
        b.admit(11.0)
    assert caught.value.retry_in == pytest.approx(0.5)
    assert caught.value.state == "open"
    assert str(caught.value) == "breaker 'pricing' of /api is open: next trial in 0.500 s"
    first, second = b.admit(11.5), b.admit(11.5)
    assert state(b) is BreakerState.HALF_OPEN
    with pytest.raises(corral.BreakerOpenError, match="half-open: its 2 trial calls under way"):
        b.admit(11.5)
    b.record(first, SUCCESS, None, 12.0)
    assert state(b) is BreakerState.HALF_OPEN  # one of two trials
    b.record(second, SUCCESS, None, 12.0)
    assert state(b) is BreakerState.CLOSED
    assert b.rejected == 2


def test_a_failed_trial_opens_it_for_longer_up_to_the_cap() -> None:
    b = breaker(BreakerSpec(failures=1, wait=1.0, wait_cap=3.0, wait_multiplier=2.0, jitter=0))
    fail(b, now=0.0)
    waits = [b.reopen_at]
    for _ in range(3):
        now = b.reopen_at
        fail(b, now)  # the trial
        waits.append(b.reopen_at - now)
    assert waits == [1.0, 2.0, 3.0, 3.0]
    now = b.reopen_at
    succeed(b, now)
    fail(b, now)
    assert b.reopen_at - now == 1.0  # closed in between: the first opening again


def test_an_ignored_trial_frees_its_place_and_counts_neither_way() -> None:
    b = breaker(BreakerSpec(failures=1, wait=0.0, trials=1))
    fail(b)
    ticket = b.admit(0.0)
    b.record(ticket, IGNORED, None, 0.0)
    assert (b.state, b.in_trial, b.trial_successes, b.ignored) == (BreakerState.HALF_OPEN, 0, 0, 1)
    succeed(b)
    assert state(b) is BreakerState.CLOSED


def test_a_call_let_through_before_a_change_moves_nothing_after_it() -> None:
    b = breaker(BreakerSpec(failures=1, wait=0.0))
    slow = b.admit(0.0)
    fail(b)
    trial = b.admit(0.0)  # half-open now
    b.record(slow, FAILURE, ConnectionError(), 0.0)  # from the closed state: counted only
    assert state(b) is BreakerState.HALF_OPEN
    assert b.failed == 2
    b.record(trial, SUCCESS, None, 0.0)
    assert state(b) is BreakerState.CLOSED


def test_classify_follows_failure_on_and_ignore() -> None:
    b = breaker(BreakerSpec(failure_on=(OSError,), ignore=(FileNotFoundError,)))
    assert b.classify(None) == SUCCESS
    assert b.classify(ConnectionError()) == FAILURE  # an OSError
    assert b.classify(FileNotFoundError()) == IGNORED  # an OSError, but ignored
    assert b.classify(ValueError()) == SUCCESS  # the caller's error, not the dependency's
    assert b.classify(KeyboardInterrupt()) == IGNORED  # not an Exception: neither
    anything = breaker(BreakerSpec(failure_on=(BaseException,)))
    assert anything.classify(KeyboardInterrupt()) == IGNORED  # cancelled: never a failure


def test_an_operator_holds_it_open_until_reset() -> None:
    b = breaker(BreakerSpec(failures=1, wait=0.0))
    b.hold_open(0.0, "maintenance")
    with pytest.raises(corral.BreakerOpenError, match="held open by an operator") as caught:
        b.admit(1e9)
    assert caught.value.retry_in == math.inf
    b.reset(5.0, "done")
    assert (b.state, b.held) == (BreakerState.CLOSED, False)
    succeed(b)


def test_reset_of_a_closed_breaker_empties_its_window() -> None:
    b = breaker(BreakerSpec(failures=2))
    fail(b)
    b.reset(0.0, "reset")
    fail(b)
    assert state(b) is BreakerState.CLOSED
    assert b.entered[BreakerState.CLOSED] == 0  # no transition


def test_retune_keeps_state_counts_and_the_recent_window() -> None:
    b = breaker(BreakerSpec(failures=None, failure_rate=0.5, window=6, min_calls=6))
    for outcome in (FAILURE, FAILURE, SUCCESS, SUCCESS, FAILURE):
        b.record(b.admit(0.0), outcome, ConnectionError(), 0.0)
    b.retune(BreakerSpec(failures=None, failure_rate=0.5, window=3, min_calls=3))
    snapshot = b.snapshot()
    assert (snapshot.window_calls, snapshot.window_failures) == (3, 1)  # S, S, F kept
    assert (b.succeeded, b.failed) == (2, 3)
    fail(b)
    assert state(b) is BreakerState.OPEN  # S, F, F: 2 of 3


def test_transitions_reach_the_listener() -> None:
    seen: list[tuple[str, str, str]] = []
    b = breaker(BreakerSpec(failures=1, wait=0.0))
    b.listener = lambda br, old, why: seen.append((old.value, br.state.value, why))
    fail(b)
    succeed(b)
    assert seen == [
        ("closed", "open", "1 failure in a row, last: ConnectionError: refused"),
        ("open", "half-open", "its wait is over: trial calls go through"),
        ("half-open", "closed", "1 trial call succeeded"),
    ]
