"""Spec validation (OTP's check_childspec), defaults, and the backoff delay formula."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import pytest

from corral.errors import SpecError
from corral.supervisors import spec as spec_module
from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    MailboxSpec,
    Overflow,
    RestartType,
    Shutdown,
    Strategy,
    SupervisorSpec,
    stop_bound,
)

if TYPE_CHECKING:
    from collections.abc import Callable


async def work(ctx: object) -> None:
    """A child body; never run here, only referenced by specs."""


def child(child_id: str = "x", **kwargs: Any) -> ChildSpec:
    return ChildSpec(child_id, work, **kwargs)


def test_all_is_pinned() -> None:
    """The spec module exports exactly its public names, as a tuple."""
    assert spec_module.__all__ == (
        "BRUTAL",
        "INFINITY",
        "AutoShutdown",
        "Backoff",
        "BreakerSpec",
        "ChildSpec",
        "ChildStart",
        "ChildType",
        "DynamicSupervisorSpec",
        "ExitKind",
        "HealthSpec",
        "MailboxSpec",
        "Overflow",
        "RestartType",
        "Shutdown",
        "Strategy",
        "SupervisorSpec",
        "stop_bound",
    )


def test_spec_error_is_a_value_error() -> None:
    """SpecError refines ValueError, so callers may catch either."""
    with pytest.raises(ValueError, match="child id"):
        child("")


# -- child ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child_id", "shown"),
    [
        ("", "''"),
        ("a/b", "'a/b'"),
        ("/", "'/'"),
        (3, "3"),
        (None, "None"),
    ],
    ids=["empty", "slash", "only-slash", "int", "none"],
)
def test_bad_child_id_is_rejected(child_id: object, shown: str) -> None:
    """A child id must be a non-empty string without '/'."""
    msg = f"child id must be a non-empty string without '/', got {shown}"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        ChildSpec(child_id, work)  # type: ignore[arg-type]  # invalid on purpose


@pytest.mark.parametrize(
    "child_id", ["db", "a-b.c_d", "ü"], ids=["plain", "punctuation", "unicode"]
)
def test_good_child_id_is_accepted(child_id: str) -> None:
    """Any non-empty string without '/' is a valid child id."""
    assert child(child_id).id == child_id


def test_duplicate_child_id_names_both_positions() -> None:
    """A duplicate id is reported with the positions of both definitions."""
    msg = "child id 'x' is defined twice (children[0], children[2])"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec(children=(child("x"), child("y"), child("x")))


def test_non_child_spec_in_children_is_rejected() -> None:
    """Every entry of children must be a ChildSpec."""
    msg = "children[1] must be a ChildSpec, got str"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec(children=(child("x"), "y"))  # type: ignore[arg-type]  # invalid on purpose


def test_children_are_converted_to_a_tuple() -> None:
    """A list of children is stored as a tuple, in the given (start) order."""
    a, b = child("a"), child("b")
    sup = SupervisorSpec(children=[a, b])
    assert sup.children == (a, b)


# -- restart type, significant, auto_shutdown ----------------------------------------------


def test_restart_must_be_a_restart_type() -> None:
    """A restart given as a plain string is rejected, not silently accepted."""
    msg = "child 'x': restart must be RestartType.<member>, got 'permanent'"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        child(restart="permanent")


def test_significant_permanent_child_is_rejected() -> None:
    """OTP's bad_combination: a significant child cannot be permanent (checked where it
    joins a supervisor, as OTP's validSignificant)."""
    msg = "child 'x': a significant child cannot be permanent"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec([child(significant=True)], auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)


def test_a_significant_permanent_child_under_never_names_the_never_rule_first() -> None:
    """OTP checks auto_shutdown = never before the restart type: that is the error."""
    msg = "child 'x': significant children need auto_shutdown other than never"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec([child(significant=True)])


@pytest.mark.parametrize("value", ["maybe", 1, None])
def test_significant_must_be_a_bool(value: object) -> None:
    """significant takes True or False only: "maybe" is an error, not a truthy yes."""
    msg = f"child 'x': significant must be True or False, got {value!r}"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        child(significant=value, restart=RestartType.TRANSIENT)


@pytest.mark.parametrize("template", [None, "x", ()], ids=["none", "str", "tuple"])
def test_a_dynamic_supervisors_template_must_be_a_child_spec(template: object) -> None:
    """DynamicSupervisorSpec(None), or a list of templates, is a SpecError saying what it
    needs, not an AttributeError."""
    msg = f"a dynamic supervisor's child must be a ChildSpec (its template), got {template!r}"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        DynamicSupervisorSpec(template)  # type: ignore[arg-type]  # what the test passes


@pytest.mark.parametrize(
    "restart", [RestartType.TRANSIENT, RestartType.TEMPORARY], ids=["transient", "temporary"]
)
def test_significant_child_with_auto_shutdown_never_is_rejected(restart: RestartType) -> None:
    """A significant child needs a supervisor whose auto_shutdown is not never."""
    msg = "child 'x': significant children need auto_shutdown other than never"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec(children=(child(restart=restart, significant=True),))


@pytest.mark.parametrize(
    "auto_shutdown",
    [AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.ALL_SIGNIFICANT],
    ids=["any-significant", "all-significant"],
)
def test_significant_child_with_auto_shutdown_is_accepted(auto_shutdown: AutoShutdown) -> None:
    """A transient significant child may join a supervisor with auto_shutdown."""
    sig = child(restart=RestartType.TRANSIENT, significant=True)
    sup = SupervisorSpec(children=(sig,), auto_shutdown=auto_shutdown)
    assert sup.children == (sig,)


def test_check_child_rejects_significant_child_added_later() -> None:
    """check_child applies the auto_shutdown rule to a child added at run time."""
    sup = SupervisorSpec()
    msg = "child 'x': significant children need auto_shutdown other than never"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        sup.check_child(child(restart=RestartType.TEMPORARY, significant=True))


# -- supervisor flags -----------------------------------------------------------------------


def static_supervisor(**flags: Any) -> SupervisorSpec:
    return SupervisorSpec(**flags)


def dynamic_supervisor(**flags: Any) -> DynamicSupervisorSpec:
    return DynamicSupervisorSpec(child(), **flags)


SUPERVISOR_KINDS = pytest.mark.parametrize(
    "build", [static_supervisor, dynamic_supervisor], ids=["static", "dynamic"]
)


@pytest.mark.parametrize(
    ("intensity", "shown"),
    [(-1, "-1"), (1.5, "1.5"), (True, "True"), ("1", "'1'")],
    ids=["negative", "float", "bool", "str"],
)
@SUPERVISOR_KINDS
def test_bad_intensity_is_rejected(
    intensity: object, shown: str, build: Callable[..., object]
) -> None:
    """intensity must be an integer >= 0, for static and dynamic supervisors alike."""
    msg = f"intensity must be an integer >= 0, got {shown}"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        build(intensity=intensity)


@pytest.mark.parametrize(
    ("period", "msg"),
    [
        (0, "period must be > 0, got 0"),
        (0.0, "period must be > 0, got 0.0"),
        (-1, "period must be > 0, got -1"),
        (float("inf"), "period must be a finite number of seconds, got inf"),
        (float("nan"), "period must be a finite number of seconds, got nan"),
        (True, "period must be a finite number of seconds, got True"),
        ("5", "period must be a finite number of seconds, got '5'"),
    ],
    ids=["zero", "zero-float", "negative", "inf", "nan", "bool", "str"],
)
@SUPERVISOR_KINDS
def test_bad_period_is_rejected(period: object, msg: str, build: Callable[..., object]) -> None:
    """period must be a finite number of seconds > 0, for static and dynamic supervisors alike."""
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        build(period=period)


def test_supervisor_defaults_are_otps() -> None:
    """A supervisor defaults to one-for-one, 1 restart in 5 s, auto_shutdown never."""
    sup = SupervisorSpec()
    assert (sup.children, sup.strategy, sup.intensity, sup.period, sup.auto_shutdown) == (
        (),
        Strategy.ONE_FOR_ONE,
        1,
        5.0,
        AutoShutdown.NEVER,
    )


def test_intensity_zero_is_accepted() -> None:
    """intensity 0 is valid: the supervisor gives up at the first restart."""
    assert SupervisorSpec(intensity=0).intensity == 0


# -- shutdown -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shutdown", "msg"),
    [
        ("soon", "child 'x': shutdown must be seconds, 'brutal' or 'infinity', got 'soon'"),
        ("", "child 'x': shutdown must be seconds, 'brutal' or 'infinity', got ''"),
        (-1, "child 'x': shutdown must be >= 0, got -1"),
        (-0.5, "child 'x': shutdown must be >= 0, got -0.5"),
        (float("inf"), "child 'x': shutdown must be a finite number of seconds, got inf"),
        (float("nan"), "child 'x': shutdown must be a finite number of seconds, got nan"),
        (True, "child 'x': shutdown must be a finite number of seconds, got True"),
        (None, "child 'x': shutdown must be a finite number of seconds, got None"),
    ],
    ids=["unknown-word", "empty", "negative", "negative-float", "inf", "nan", "bool", "none"],
)
def test_bad_shutdown_is_rejected(shutdown: object, msg: str) -> None:
    """shutdown is seconds >= 0, 'brutal' or 'infinity'."""
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        child(shutdown=shutdown)


@pytest.mark.parametrize(
    "shutdown",
    [0, 0.0, 2.5, 3600, BRUTAL, INFINITY],
    ids=["0", "0.0", "2.5", "3600", "brutal", "infinity"],
)
def test_good_shutdown_is_kept(shutdown: Shutdown) -> None:
    """Seconds >= 0, 'brutal' and 'infinity' are valid shutdowns and kept as given."""
    assert child(shutdown=shutdown).shutdown == shutdown


# -- type and defaults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "child_type", "shutdown"),
    [
        (work, ChildType.WORKER, 5.0),
        (SupervisorSpec(), ChildType.SUPERVISOR, INFINITY),
        (DynamicSupervisorSpec(child("t")), ChildType.SUPERVISOR, INFINITY),
    ],
    ids=["function-worker", "supervisor-spec", "dynamic-supervisor-spec"],
)
def test_type_and_shutdown_default_from_start(
    start: spec_module.ChildStart, child_type: ChildType, shutdown: Shutdown
) -> None:
    """type follows start; shutdown defaults to 5 s for workers, infinity for supervisors."""
    c = ChildSpec("x", start)
    assert (c.type, c.shutdown) == (child_type, shutdown)


def test_worker_defaults() -> None:
    """A worker defaults to permanent, not significant, no backoff and a default mailbox."""
    c = child()
    assert (c.restart, c.significant, c.backoff, c.mailbox, dict(c.args)) == (
        RestartType.PERMANENT,
        False,
        None,
        MailboxSpec(1024, Overflow.BLOCK),
        {},
    )


def test_supervisor_child_keeps_an_explicit_shutdown() -> None:
    """An explicit shutdown overrides the supervisor default of infinity."""
    c = ChildSpec("x", SupervisorSpec(), shutdown=10.0)
    assert (c.type, c.shutdown) == (ChildType.SUPERVISOR, 10.0)


@pytest.mark.parametrize(
    ("start", "child_type", "shown"),
    [
        (work, ChildType.SUPERVISOR, "supervisor"),
        (SupervisorSpec(), ChildType.WORKER, "worker"),
    ],
    ids=["supervisor-type-function-start", "worker-type-supervisor-start"],
)
def test_type_must_match_start(
    start: spec_module.ChildStart, child_type: ChildType, shown: str
) -> None:
    """An explicit type that contradicts what start runs is rejected."""
    msg = f"child 'x': type {shown} does not match what it starts"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        ChildSpec("x", start, type=child_type)


@pytest.mark.parametrize("start", [42, "mod:fn", None], ids=["int", "str", "none"])
def test_start_must_be_callable_or_spec(start: object) -> None:
    """start must be an Actor class, an async function or a supervisor spec."""
    msg = "child 'x': start must be an Actor class, an async function or a spec"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        ChildSpec("x", start)  # type: ignore[arg-type]  # invalid on purpose


def test_type_must_be_a_child_type() -> None:
    """A type given as a plain string is rejected with SpecError, like restart."""
    msg = "child 'x': type must be ChildType.<member>, got 'supervisor'"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        ChildSpec("x", SupervisorSpec(), type="supervisor")  # type: ignore[arg-type]  # invalid on purpose


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"strategy": "one-for-all"}, "strategy must be Strategy.<member>, got 'one-for-all'"),
        ({"auto_shutdown": "never"}, "auto_shutdown must be AutoShutdown.<member>, got 'never'"),
    ],
    ids=["strategy-str", "auto-shutdown-str"],
)
def test_supervisor_flags_must_be_enums(kwargs: dict[str, object], msg: str) -> None:
    """A strategy or auto_shutdown given as a plain string is rejected, not misread."""
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        SupervisorSpec(**kwargs)  # type: ignore[arg-type]  # invalid on purpose


# -- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"initial": -1}, "backoff initial must be >= 0, got -1"),
        ({"initial": float("inf")}, "backoff initial must be a finite number of seconds, got inf"),
        ({"cap": -0.5}, "backoff cap must be >= 0, got -0.5"),
        ({"cap": float("nan")}, "backoff cap must be a finite number of seconds, got nan"),
        ({"reset_after": -1}, "backoff reset_after must be >= 0, got -1"),
        ({"reset_after": "60"}, "backoff reset_after must be a finite number of seconds, got '60'"),
        ({"multiplier": 0.5}, "backoff multiplier must be a finite number >= 1, got 0.5"),
        ({"multiplier": float("nan")}, "backoff multiplier must be a finite number >= 1, got nan"),
        ({"multiplier": "2"}, "backoff multiplier must be a finite number >= 1, got '2'"),
        ({"jitter": 1.5}, "backoff jitter must be within [0, 1], got 1.5"),
        ({"jitter": -0.1}, "backoff jitter must be within [0, 1], got -0.1"),
        ({"jitter": "0.1"}, "backoff jitter must be within [0, 1], got '0.1'"),
    ],
    ids=[
        "initial-negative",
        "initial-inf",
        "cap-negative",
        "cap-nan",
        "reset-after-negative",
        "reset-after-str",
        "multiplier-below-1",
        "multiplier-nan",
        "multiplier-str",
        "jitter-above-1",
        "jitter-negative",
        "jitter-str",
    ],
)
def test_bad_backoff_is_rejected(kwargs: dict[str, object], msg: str) -> None:
    """Backoff durations are seconds >= 0, multiplier >= 1, jitter within [0, 1]."""
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        Backoff(**kwargs)  # type: ignore[arg-type]  # invalid on purpose


def test_backoff_edges_are_accepted() -> None:
    """Zero durations, multiplier 1 and jitter 0 or 1 are all valid."""
    for b in (Backoff(initial=0, cap=0, reset_after=0), Backoff(multiplier=1, jitter=0)):
        assert b.delay(1, 0.0) == b.initial
    assert Backoff(jitter=1).jitter == 1


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (6, 1.0), (100, 1.0)],
    ids=["1st", "2nd", "3rd", "4th", "5th-capped", "6th-capped", "100th-capped"],
)
def test_backoff_delay_grows_exponentially_up_to_cap(attempt: int, expected: float) -> None:
    """Without jitter, restart n waits min(cap, initial * multiplier ** (n - 1))."""
    b = Backoff(initial=0.1, cap=1.0, multiplier=2.0, jitter=0.0)
    assert b.delay(attempt, 0.99) == pytest.approx(expected)


def test_backoff_multiplier_one_is_constant() -> None:
    """With multiplier 1 every restart waits initial seconds."""
    b = Backoff(initial=0.5, multiplier=1, jitter=0)
    assert [b.delay(n, 0.0) for n in (1, 2, 10)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("attempt", "sample", "expected"),
    [
        (1, 0.0, 1.0),
        (1, 0.5, 0.875),
        (1, 0.999, 0.75025),
        (3, 0.5, 3.5),
        (10, 0.0, 8.0),
        (10, 0.5, 7.0),
    ],
    ids=["no-reduction", "half", "near-max", "3rd-half", "capped-no-reduction", "capped-half"],
)
def test_backoff_jitter_reduces_by_at_most_jitter_fraction(
    attempt: int, sample: float, expected: float
) -> None:
    """Jitter reduces the delay by sample * jitter of it, never raising it above the cap."""
    b = Backoff(initial=1.0, cap=8.0, multiplier=2.0, jitter=0.25)
    got = b.delay(attempt, sample)
    assert got == pytest.approx(expected)
    assert 0.75 * min(8.0, 2.0 ** (attempt - 1)) <= got <= 8.0


def test_backoff_delay_for_huge_attempt_is_capped() -> None:
    """The exponent is capped, so a very large attempt count still yields cap."""
    assert Backoff(initial=0.1, cap=30.0, multiplier=1.5, jitter=0).delay(10**9, 0.0) == 30.0


@pytest.mark.parametrize(
    ("multiplier", "attempt"), [(2.0, 1025), (10.0, 310)], ids=["default-x2", "x10"]
)
def test_backoff_delay_never_overflows(multiplier: float, attempt: int) -> None:
    """A child that has failed very many times in a row waits cap, it does not crash the core."""
    assert Backoff(cap=30.0, multiplier=multiplier, jitter=0).delay(attempt, 0.0) == 30.0


# -- mailbox ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "msg"),
    [
        (0, "mailbox capacity must be >= 1, got 0"),
        (-3, "mailbox capacity must be >= 1, got -3"),
        (1.5, "mailbox capacity must be an integer, got 1.5"),
        (True, "mailbox capacity must be an integer, got True"),
        ("10", "mailbox capacity must be an integer, got '10'"),
    ],
    ids=["zero", "negative", "float", "bool", "str"],
)
def test_bad_mailbox_capacity_is_rejected(capacity: object, msg: str) -> None:
    """A mailbox capacity is an integer >= 1."""
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        MailboxSpec(capacity)  # type: ignore[arg-type]  # invalid on purpose


def test_mailbox_of_one_is_accepted() -> None:
    """The smallest mailbox holds one message."""
    assert MailboxSpec(1, Overflow.REJECT) == MailboxSpec(capacity=1, overflow=Overflow.REJECT)


# -- dynamic supervisors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_children", "shown"),
    [(-1, "-1"), (True, "True"), (1.5, "1.5"), ("3", "'3'")],
    ids=["negative", "bool", "float", "str"],
)
def test_bad_max_children_is_rejected(max_children: object, shown: str) -> None:
    """max_children is an integer >= 0 or None."""
    msg = f"max_children must be an integer >= 0 or None, got {shown}"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        DynamicSupervisorSpec(child(), max_children=max_children)  # type: ignore[arg-type]  # invalid on purpose


@pytest.mark.parametrize("max_children", [None, 0, 1, 1000], ids=["none", "zero", "one", "many"])
def test_good_max_children_is_accepted(max_children: int | None) -> None:
    """None (no limit) and any integer >= 0 are valid max_children."""
    assert DynamicSupervisorSpec(child(), max_children=max_children).max_children == max_children


def test_dynamic_supervisor_child_cannot_be_significant() -> None:
    """A dynamic supervisor has no auto_shutdown, so its template cannot be significant."""
    msg = "a dynamic supervisor's children cannot be significant"
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        DynamicSupervisorSpec(child(restart=RestartType.TEMPORARY, significant=True))


def test_dynamic_supervisor_defaults() -> None:
    """A dynamic supervisor defaults to no child limit and OTP's 1 restart in 5 s."""
    d = DynamicSupervisorSpec(child())
    assert (d.max_children, d.intensity, d.period) == (None, 1, 5.0)


@pytest.mark.parametrize(
    ("spec", "bound"),
    [
        pytest.param(child(shutdown=2.5), 2.5, id="worker"),
        pytest.param(child(shutdown="brutal"), 0.0, id="brutal"),
        pytest.param(child(shutdown="infinity"), math.inf, id="infinity"),
        pytest.param(
            SupervisorSpec(children=[child("a", shutdown=1.0), child("b", shutdown=2.0)]),
            3.0,
            id="children-stop-one-after-another",
        ),
        pytest.param(
            ChildSpec("s", SupervisorSpec(children=[child("a", shutdown=4.0)]), shutdown=1.5),
            1.5,
            id="a-supervisor-child's-shutdown-caps-its-tree",
        ),
        pytest.param(
            ChildSpec("s", SupervisorSpec(children=[child("a", shutdown=4.0)])),
            4.0,
            id="infinity-supervisor-is-its-tree",
        ),
        pytest.param(
            DynamicSupervisorSpec(child=child("t", shutdown=3.0)), 3.0, id="dynamic-in-parallel"
        ),
    ],
)
def test_stop_bound(spec: ChildSpec | SupervisorSpec | DynamicSupervisorSpec, bound: float) -> None:
    """The worst-case stop sums children in order, caps by shutdown, and runs pools at once."""
    assert stop_bound(spec) == bound
