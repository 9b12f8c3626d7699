"""OTP's restart tables: restart type x exit kind, and strategy -> affected children."""

from __future__ import annotations

import pytest

from corral.supervisors import plan as plan_module
from corral.supervisors.plan import affected, should_restart
from corral.supervisors.spec import ExitKind, RestartType, Strategy

P, T, X = RestartType.PERMANENT, RestartType.TRANSIENT, RestartType.TEMPORARY
NORMAL, SHUTDOWN, ERROR = ExitKind.NORMAL, ExitKind.SHUTDOWN, ExitKind.ERROR


def test_all_is_pinned() -> None:
    """The plan module exports exactly its two tables, as a tuple."""
    assert plan_module.__all__ == ("affected", "should_restart")


@pytest.mark.parametrize(
    ("restart", "kind", "expected"),
    [
        (P, NORMAL, True),
        (P, SHUTDOWN, True),
        (P, ERROR, True),
        (T, NORMAL, False),
        (T, SHUTDOWN, False),
        (T, ERROR, True),
        (X, NORMAL, False),
        (X, SHUTDOWN, False),
        (X, ERROR, False),
    ],
    ids=[
        "permanent-normal",
        "permanent-shutdown",
        "permanent-error",
        "transient-normal",
        "transient-shutdown",
        "transient-error",
        "temporary-normal",
        "temporary-shutdown",
        "temporary-error",
    ],
)
def test_should_restart(restart: RestartType, kind: ExitKind, expected: bool) -> None:
    """Permanent always restarts, transient only after an error, temporary never."""
    assert should_restart(restart, kind) is expected


ORDER = ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        (Strategy.ONE_FOR_ONE, "a", ("a",)),
        (Strategy.ONE_FOR_ONE, "c", ("c",)),
        (Strategy.ONE_FOR_ALL, "a", ORDER),
        (Strategy.ONE_FOR_ALL, "c", ORDER),
        (Strategy.ONE_FOR_ALL, "d", ORDER),
        (Strategy.REST_FOR_ONE, "a", ORDER),
        (Strategy.REST_FOR_ONE, "c", ("c", "d")),
        (Strategy.REST_FOR_ONE, "d", ("d",)),
    ],
    ids=[
        "one-for-one-first",
        "one-for-one-middle",
        "one-for-all-first",
        "one-for-all-middle",
        "one-for-all-last",
        "rest-for-one-first-is-everyone",
        "rest-for-one-middle-and-later",
        "rest-for-one-last-alone",
    ],
)
def test_affected(strategy: Strategy, failed: str, expected: tuple[str, ...]) -> None:
    """The strategy picks which children take part in a restart, in start order."""
    assert tuple(affected(strategy, ORDER, failed)) == expected


@pytest.mark.parametrize("strategy", list(Strategy), ids=[s.value for s in Strategy])
def test_affected_of_only_child_is_that_child(strategy: Strategy) -> None:
    """With a single child every strategy restarts just that child."""
    assert tuple(affected(strategy, ["only"], "only")) == ("only",)
