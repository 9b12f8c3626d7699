"""Restart intensity: OTP's add_restart, with the inclusive period boundary."""

from __future__ import annotations

import pytest

from corral.supervisors import intensity as intensity_module
from corral.supervisors.intensity import RestartIntensity


def test_all_is_pinned() -> None:
    """The intensity module exports exactly RestartIntensity, as a tuple."""
    assert intensity_module.__all__ == ("RestartIntensity",)


def budget_after(intensity: int, period: float, times: list[float]) -> RestartIntensity:
    budget = RestartIntensity(intensity, period)
    for now in times:
        budget.record(now)
    return budget


@pytest.mark.parametrize(
    ("intensity", "period", "times", "expected"),
    [
        (1, 5.0, [0.0], [False]),
        (1, 5.0, [0.0, 5.0], [False, True]),
        (1, 5.0, [0.0, 5.001], [False, False]),
        (1, 5.0, [0.0, 4.999], [False, True]),
        (0, 5.0, [0.0], [True]),
        (0, 5.0, [100.0], [True]),
        (3, 5.0, [0.0, 1.0, 2.0, 3.0], [False, False, False, True]),
        (3, 5.0, [0.0, 1.0, 2.0, 10.0], [False, False, False, False]),
        (3, 5.0, [0.0, 0.0, 0.0, 0.0], [False, False, False, True]),
        (2, 5.0, [0.0, 4.0, 5.0], [False, False, True]),
        (2, 5.0, [0.0, 4.0, 5.5, 9.5], [False, False, False, False]),
        (2, 5.0, [0.0, 4.0, 5.5, 9.5, 10.0], [False, False, False, False, True]),
        (2, 1.0, [0.0, 2.0, 4.0, 6.0, 8.0], [False] * 5),
    ],
    ids=[
        "first-restart-within-limit",
        "boundary-exactly-period-ago-counts",
        "just-past-period-is-forgotten",
        "just-inside-period",
        "intensity-0-exceeds-at-once",
        "intensity-0-any-time",
        "fourth-of-3-within-period",
        "old-restarts-forgotten",
        "simultaneous-restarts",
        "third-of-2-at-boundary",
        "sliding-window-forgets-oldest",
        "sliding-window-then-exceeds",
        "spaced-wider-than-period",
    ],
)
def test_record_exceeds_only_with_more_than_intensity_within_period(
    intensity: int, period: float, times: list[float], expected: list[bool]
) -> None:
    """The budget is exceeded when more than intensity restarts fall within period (inclusive)."""
    budget = RestartIntensity(intensity, period)
    assert [budget.record(now) for now in times] == expected


@pytest.mark.parametrize(
    ("times", "kept"),
    [
        ([], []),
        ([1.0], [1.0]),
        ([0.0, 5.0], [0.0, 5.0]),
        ([0.0, 1.0, 10.0], [10.0]),
        ([0.0, 3.0, 6.0], [3.0, 6.0]),
        ([0.0, 3.0, 8.0], [3.0, 8.0]),
    ],
    ids=["empty", "one", "boundary-kept", "all-stale-dropped", "oldest-dropped", "boundary-3-kept"],
)
def test_record_forgets_restarts_older_than_period(times: list[float], kept: list[float]) -> None:
    """Recording a restart forgets those more than period ago; one exactly period ago stays."""
    assert sorted(budget_after(10, 5.0, times).history) == kept


@pytest.mark.parametrize(
    ("intensity", "times", "now", "expected"),
    [
        (3, [], 0.0, 3),
        (3, [0.0, 1.0], 1.0, 1),
        (3, [0.0, 1.0], 5.0, 1),
        (3, [0.0, 1.0], 5.5, 2),
        (3, [0.0, 1.0], 6.0, 2),
        (3, [0.0, 1.0], 6.5, 3),
        (0, [], 0.0, 0),
        (1, [0.0, 0.0, 0.0], 0.0, 0),
    ],
    ids=[
        "fresh",
        "two-used",
        "boundary-still-counts",
        "oldest-expired",
        "second-at-boundary",
        "all-expired",
        "intensity-0",
        "never-negative-after-exceeding",
    ],
)
def test_remaining(intensity: int, times: list[float], now: float, expected: int) -> None:
    """remaining is how many more restarts at now stay within the budget."""
    budget = budget_after(intensity, 5.0, times)
    assert budget.remaining(now) == expected


def test_remaining_does_not_record() -> None:
    """Asking what remains changes nothing."""
    budget = budget_after(2, 5.0, [0.0])
    assert [budget.remaining(1.0), budget.remaining(1.0), len(budget.history)] == [1, 1, 1]


@pytest.mark.parametrize(
    ("intensity", "times", "now"),
    [
        (2, [0.0], 1.0),
        (2, [0.0, 1.0], 5.0),
        (2, [0.0, 1.0], 5.5),
        (3, [0.0, 1.0, 2.0], 7.0),
        (1, [], 0.0),
    ],
    ids=["one-used", "boundary", "one-expired", "all-but-one-expired", "fresh"],
)
def test_remaining_predicts_record(intensity: int, times: list[float], now: float) -> None:
    """record at now exceeds the budget exactly when remaining(now) is 0."""
    budget = budget_after(intensity, 5.0, times)
    left = budget.remaining(now)
    assert budget.record(now) is (left == 0)
