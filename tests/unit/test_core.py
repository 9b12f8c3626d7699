"""The supervisor core, driven the way the runtime drives it: OTP's matrix of
strategy x outcome, escalation, auto_shutdown, the dynamic child API and backoff.

The runtime makes a child RUNNING with ``starting(id); started(id, now)``; for a ``Restart``
it calls ``stopped(c)`` for each child in ``stop``, then ``starting(c); started(c, now)`` for
each in ``start``. ``carry_out`` below does exactly that.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from corral.errors import (
    AlreadyPresentError,
    AlreadyStartedError,
    ChildError,
    NotFoundError,
    RestartingError,
    RunningError,
)
from corral.supervisors import core as core_module
from corral.supervisors.core import (
    ChildInfo,
    ChildStatus,
    Counts,
    Decision,
    Delay,
    Forget,
    GiveUp,
    Ignore,
    Restart,
    SupervisorCore,
)
from corral.supervisors.spec import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    ExitKind,
    RestartType,
    Strategy,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

P, T, X = RestartType.PERMANENT, RestartType.TRANSIENT, RestartType.TEMPORARY
NORMAL, SHUTDOWN, ERROR = ExitKind.NORMAL, ExitKind.SHUTDOWN, ExitKind.ERROR
ONE, ALL, REST = Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE
RUNNING, BACKOFF, STOPPED = ChildStatus.RUNNING, ChildStatus.BACKOFF, ChildStatus.STOPPED
FAILED, STARTING, STOPPING = ChildStatus.FAILED, ChildStatus.STARTING, ChildStatus.STOPPING
ORDER = ("a", "b", "c", "d")
STRATEGY_IDS = [s.value for s in Strategy]


def half() -> float:
    """A fixed jitter sample, so delays are exact."""
    return 0.5


async def work(ctx: object) -> None:
    """A child body; never run here, the core only sees its spec."""


def spec(
    child_id: str,
    restart: RestartType = P,
    *,
    backoff: Backoff | None = None,
    significant: bool = False,
) -> ChildSpec:
    return ChildSpec(child_id, work, restart=restart, backoff=backoff, significant=significant)


def make_core(
    *children: ChildSpec | str,
    strategy: Strategy = ONE,
    intensity: int = 10,
    period: float = 5.0,
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER,
    random: Callable[[], float] = half,
    not_started: Collection[str] = (),
    dynamic: bool = False,
) -> SupervisorCore:
    """A core whose children (except *not_started*) were started at time 0."""
    specs = tuple(c if isinstance(c, ChildSpec) else spec(c) for c in children)
    core = SupervisorCore.create(
        "sup",
        dynamic=dynamic,
        strategy=strategy,
        intensity=intensity,
        period=period,
        auto_shutdown=auto_shutdown,
        children=specs,
        random=random,
    )
    for s in specs:
        if s.id not in not_started:
            core.starting(s.id)
            core.started(s.id, 0.0)
    return core


def carry_out(core: SupervisorCore, decision: Decision, now: float) -> Restart:
    """Carry out a Restart as the runtime does: stop in order, then start in order."""
    assert isinstance(decision, Restart), decision
    for c in decision.stop:
        core.stopped(c)
    for c in decision.removed:
        core.remove(c)
    for c in decision.start:
        core.starting(c)
        core.started(c, now)
    return decision


def terminate(core: SupervisorCore, child_id: str) -> None:
    """The runtime's terminate_child: ask the core, stop the child if it is alive."""
    if core.terminate(child_id):
        core.stopped(child_id)


def run_due(core: SupervisorCore, now: float) -> list[Decision]:
    """The runtime's timer: attempt every due restart and carry out each Restart."""
    decisions: list[Decision] = []
    for child_id in core.due_children(now):
        decision = core.attempt(child_id, now)
        decisions.append(decision)
        if isinstance(decision, Restart):
            carry_out(core, decision, now)
    return decisions


def recorded(core: SupervisorCore) -> list[float]:
    """The restart times the intensity still counts, oldest first."""
    return sorted(core.intensity.history)


def statuses(core: SupervisorCore) -> dict[str, ChildStatus]:
    return {info.id: info.status for info in core.which_children()}


def exact(msg: str) -> str:
    return f"^{re.escape(msg)}$"


def test_all_is_pinned() -> None:
    """The core module exports exactly its public names, as a tuple."""
    assert core_module.__all__ == (
        "Attempted",
        "ChildInfo",
        "ChildRecord",
        "ChildStatus",
        "Counts",
        "Decision",
        "Delay",
        "Forget",
        "GiveUp",
        "Ignore",
        "Restart",
        "SupervisorCore",
    )


# -- restart type x exit kind ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "kind", "expected", "status"),
    [
        (P, NORMAL, Restart("x", (), ("x",)), RUNNING),
        (P, SHUTDOWN, Restart("x", (), ("x",)), RUNNING),
        (P, ERROR, Restart("x", (), ("x",)), RUNNING),
        (T, NORMAL, Forget("x", removed=False), STOPPED),
        (T, SHUTDOWN, Forget("x", removed=False), STOPPED),
        (T, ERROR, Restart("x", (), ("x",)), RUNNING),
        (X, NORMAL, Forget("x", removed=True), None),
        (X, SHUTDOWN, Forget("x", removed=True), None),
        (X, ERROR, Forget("x", removed=True), None),
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
def test_exit_matrix(
    restart: RestartType, kind: ExitKind, expected: Decision, status: ChildStatus | None
) -> None:
    """Permanent always restarts, transient only after an error, temporary never (and goes)."""
    core = make_core(spec("x", restart), "y")
    decision = core.exited("x", kind, 1.0)
    assert decision == expected
    if isinstance(decision, Restart):
        carry_out(core, decision, 1.0)
    assert statuses(core) == ({"y": RUNNING} if status is None else {"x": status, "y": RUNNING})


@pytest.mark.parametrize(
    ("restart", "kind", "expected"),
    [
        (P, NORMAL, Restart("x", (), ("x",))),
        (T, NORMAL, Forget("x", removed=True)),
        (T, SHUTDOWN, Forget("x", removed=True)),
        (T, ERROR, Restart("x", (), ("x",))),
        (X, ERROR, Forget("x", removed=True)),
    ],
    ids=[
        "permanent-normal",
        "transient-normal",
        "transient-shutdown",
        "transient-error",
        "temporary",
    ],
)
def test_dynamic_supervisor_erases_children_it_does_not_restart(
    restart: RestartType, kind: ExitKind, expected: Decision
) -> None:
    """A dynamic supervisor (simple_one_for_one) erases every child it does not restart."""
    core = make_core(spec("x", restart), "y", dynamic=True)
    decision = core.exited("x", kind, 1.0)
    assert decision == expected
    assert ("x" in core) is isinstance(decision, Restart)


# -- strategy x restart ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "failed", "stop", "start"),
    [
        (ONE, "a", (), ("a",)),
        (ONE, "c", (), ("c",)),
        (ALL, "a", ("d", "c", "b"), ORDER),
        (ALL, "c", ("d", "b", "a"), ORDER),
        (ALL, "d", ("c", "b", "a"), ORDER),
        (REST, "a", ("d", "c", "b"), ORDER),
        (REST, "c", ("d",), ("c", "d")),
        (REST, "d", (), ("d",)),
    ],
    ids=[
        "one-for-one-first",
        "one-for-one-middle",
        "one-for-all-first",
        "one-for-all-middle",
        "one-for-all-last",
        "rest-for-one-first",
        "rest-for-one-middle",
        "rest-for-one-last",
    ],
)
def test_restart_plan(
    strategy: Strategy, failed: str, stop: tuple[str, ...], start: tuple[str, ...]
) -> None:
    """Siblings stop in reverse start order, then the group starts in start order."""
    core = make_core(*ORDER, strategy=strategy)
    plan = carry_out(core, core.exited(failed, ERROR, 1.0), 1.0)
    assert plan == Restart(failed, stop, start)
    assert {c: core.get(c).restarts for c in ORDER} == {c: int(c in start) for c in ORDER}
    assert set(statuses(core).values()) == {RUNNING}


@pytest.mark.parametrize(
    ("strategy", "stopped", "failed", "stop", "start"),
    [
        (ALL, {"b"}, "c", ("d", "a"), ORDER),
        (ALL, {"a", "d"}, "c", ("b",), ORDER),
        (ALL, {"a", "b", "d"}, "c", (), ORDER),
        (REST, {"d"}, "c", (), ("c", "d")),
        (REST, {"a"}, "c", ("d",), ("c", "d")),
        (ONE, {"a", "b"}, "c", (), ("c",)),
    ],
    ids=[
        "one-for-all-one-stopped",
        "one-for-all-two-stopped",
        "one-for-all-only-failed-alive",
        "rest-for-one-later-stopped",
        "rest-for-one-earlier-stopped-left-alone",
        "one-for-one-stopped-left-alone",
    ],
)
def test_restart_plan_stops_only_alive_siblings_but_starts_the_whole_group(
    strategy: Strategy,
    stopped: set[str],
    failed: str,
    stop: tuple[str, ...],
    start: tuple[str, ...],
) -> None:
    """Only alive siblings are stopped; stopped siblings in the group are started too (OTP)."""
    core = make_core(*ORDER, strategy=strategy)
    for c in sorted(stopped):
        terminate(core, c)
    plan = carry_out(core, core.exited(failed, ERROR, 1.0), 1.0)
    assert plan == Restart(failed, stop, start)
    assert statuses(core) == {
        c: RUNNING if c in start or c not in stopped else STOPPED for c in ORDER
    }


@pytest.mark.parametrize(
    ("strategy", "temporary", "not_started", "failed", "expected"),
    [
        (ALL, {"b"}, set(), "c", Restart("c", ("d", "b", "a"), ("a", "c", "d"), ("b",))),
        (ALL, {"a", "d"}, set(), "b", Restart("b", ("d", "c", "a"), ("b", "c"), ("a", "d"))),
        (ALL, {"b"}, {"b"}, "c", Restart("c", ("d", "a"), ("a", "c", "d"), ("b",))),
        (REST, {"d"}, set(), "c", Restart("c", ("d",), ("c",), ("d",))),
        (REST, {"a"}, set(), "c", Restart("c", ("d",), ("c", "d"))),
        (ONE, {"a", "d"}, set(), "c", Restart("c", (), ("c",))),
    ],
    ids=[
        "one-for-all-drops-temporary",
        "one-for-all-drops-two",
        "one-for-all-drops-unstarted-temporary-without-stopping-it",
        "rest-for-one-drops-later-temporary",
        "rest-for-one-keeps-earlier-temporary",
        "one-for-one-keeps-temporaries",
    ],
)
def test_multi_child_restart_removes_temporary_siblings(
    strategy: Strategy,
    temporary: set[str],
    not_started: set[str],
    failed: str,
    expected: Restart,
) -> None:
    """A multi-child restart stops temporary siblings and forgets them, never restarting them."""
    core = make_core(
        *(spec(c, X if c in temporary else P) for c in ORDER),
        strategy=strategy,
        not_started=not_started,
    )
    plan = carry_out(core, core.exited(failed, ERROR, 1.0), 1.0)
    assert plan == expected
    assert tuple(core.children) == tuple(c for c in ORDER if c not in plan.removed)


def test_rest_for_one_leaves_earlier_children_alone() -> None:
    """rest-for-one neither stops nor restarts children started before the failed one."""
    core = make_core(*ORDER, strategy=REST)
    carry_out(core, core.exited("c", ERROR, 1.0), 1.0)
    assert [(core.get(c).restarts, core.get(c).started_at) for c in ORDER] == [
        (0, 0.0),
        (0, 0.0),
        (1, 1.0),
        (1, 1.0),
    ]


# -- escalation -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy), ids=STRATEGY_IDS)
@pytest.mark.parametrize(
    ("failing", "kind", "status"),
    [
        (("b", "b", "b"), ERROR, FAILED),
        (("a", "b", "c"), ERROR, FAILED),
        (("c",) * 3, NORMAL, STOPPED),
    ],
    ids=["same-child", "different-children", "permanent-normal-exits"],
)
def test_gives_up_when_more_than_intensity_restarts_within_period(
    strategy: Strategy, failing: tuple[str, ...], kind: ExitKind, status: ChildStatus
) -> None:
    """The restart that makes more than intensity within period escalates (GiveUp)."""
    core = make_core("a", "b", "c", strategy=strategy, intensity=2, period=5.0)
    for now, c in zip((1.0, 2.0), failing, strict=False):
        carry_out(core, core.exited(c, kind, now), now)
    last = failing[2]
    assert core.exited(last, kind, 3.0) == GiveUp(last, restarts=3, intensity=2, period=5.0)
    assert core.get(last).status is status


@pytest.mark.parametrize(
    ("intensity", "times", "gives_up_at"),
    [
        (1, [1.0, 6.0], 6.0),
        (1, [1.0, 6.5], None),
        (1, [0.0, 5.5, 11.0, 16.5], None),
        (0, [1.0], 1.0),
        (3, [1.0, 2.0, 3.0, 4.0], 4.0),
        (3, [1.0, 2.0, 3.0, 6.5, 7.0], 7.0),
        (3, [1.0, 2.0, 3.0, 8.5, 9.0], None),
    ],
    ids=[
        "boundary-exactly-period-counts",
        "just-outside-period",
        "spaced-wider-than-period",
        "intensity-0-first-restart",
        "fourth-within-period",
        "window-slides-then-exceeds",
        "window-slides",
    ],
)
def test_escalation_timing(intensity: int, times: list[float], gives_up_at: float | None) -> None:
    """Restarts count within a sliding period whose far edge is inclusive (OTP's add_restart)."""
    core = make_core("a", intensity=intensity, period=5.0)
    for now in times:
        decision = core.exited("a", ERROR, now)
        if now == gives_up_at:
            assert isinstance(decision, GiveUp)
            return
        carry_out(core, decision, now)
    assert gives_up_at is None


def test_one_for_all_restart_counts_once() -> None:
    """A one-for-all restart of every child is one restart in the intensity."""
    core = make_core("a", "b", "c", strategy=ALL, intensity=1)
    carry_out(core, core.exited("a", ERROR, 1.0), 1.0)
    assert (recorded(core), core.intensity.remaining(1.0)) == ([1.0], 0)
    assert core.exited("b", ERROR, 2.0) == GiveUp("b", restarts=2, intensity=1, period=5.0)


@pytest.mark.parametrize(
    ("restart", "kind"),
    [(T, NORMAL), (T, SHUTDOWN), (X, NORMAL), (X, SHUTDOWN), (X, ERROR)],
    ids=[
        "transient-normal",
        "transient-shutdown",
        "temporary-normal",
        "temporary-shutdown",
        "temporary-error",
    ],
)
def test_exits_that_are_not_restarted_never_count(restart: RestartType, kind: ExitKind) -> None:
    """An exit that is not restarted does not use the restart budget, even with intensity 0."""
    core = make_core(spec("x", restart), "p", intensity=0)
    assert isinstance(core.exited("x", kind, 1.0), Forget)
    assert recorded(core) == []
    assert core.exited("p", ERROR, 2.0) == GiveUp("p", restarts=1, intensity=0, period=5.0)


def test_give_up_all_stops_alive_children_in_reverse_start_order() -> None:
    """On shutdown, pending restarts are cancelled and alive children stop newest first."""
    core = make_core("a", spec("b", backoff=Backoff(initial=1.0)), "c", "d", "e", not_started={"d"})
    assert isinstance(core.exited("b", ERROR, 1.0), Delay)
    terminate(core, "c")
    core.stopping("e")
    assert core.give_up_all() == ("e", "a")
    assert statuses(core) == {"a": STOPPING, "b": FAILED, "c": STOPPED, "d": STOPPED, "e": STOPPING}
    assert core.next_due() is None


# -- a start in a restart fails (OTP's try_again) -------------------------------------------


def test_start_failed_waits_and_the_retry_counts_again() -> None:
    """A failed start returns Delay; the retry at its due time is counted as another restart."""
    core = make_core("x", "y")
    plan = core.exited("x", ERROR, 1.0)
    assert plan == Restart("x", (), ("x",))
    core.starting("x")
    assert core.start_failed("x", 1.0) == Delay("x", delay=0.0, due=1.0)
    assert (core.get("x").status, core.next_due()) == (BACKOFF, 1.0)
    assert run_due(core, 1.0) == [Restart("x", (), ("x",))]
    assert (statuses(core), recorded(core)) == ({"x": RUNNING, "y": RUNNING}, [1.0, 1.0])


@pytest.mark.parametrize("intensity", [0, 1, 2, 5], ids=["0", "1", "2", "5"])
def test_repeated_start_failures_give_up(intensity: int) -> None:
    """A child that never starts is attempted intensity + 1 times, then the supervisor gives up."""
    core = make_core("x", intensity=intensity)
    decision: Decision = core.exited("x", ERROR, 1.0)
    attempts = 1
    while isinstance(decision, Restart):
        core.starting("x")
        core.start_failed("x", 1.0)
        (decision,) = (core.attempt(c, 1.0) for c in core.due_children(1.0))
        attempts += 1
    assert decision == GiveUp("x", restarts=intensity + 1, intensity=intensity, period=5.0)
    assert (attempts, core.get("x").status, core.next_due()) == (intensity + 1, FAILED, None)


def test_sibling_failing_to_start_is_retried_with_the_whole_group() -> None:
    """In one-for-all, a sibling that fails to start is retried by restarting the group again."""
    core = make_core("a", "b", "c", strategy=ALL)
    plan = core.exited("c", ERROR, 1.0)
    assert plan == Restart("c", ("b", "a"), ("a", "b", "c"))
    assert isinstance(plan, Restart)
    for c in plan.stop:
        core.stopped(c)
    core.starting("a")
    core.started("a", 1.0)
    core.starting("b")
    assert core.start_failed("b", 1.0) == Delay("b", 0.0, 1.0)
    assert run_due(core, 1.5) == [Restart("b", ("a",), ("a", "b", "c"))]
    assert (statuses(core), recorded(core)) == (
        {"a": RUNNING, "b": RUNNING, "c": RUNNING},
        [1.0, 1.5],
    )


def test_start_failed_grows_the_backoff() -> None:
    """Each failed start is one more consecutive restart, so its backoff delay grows."""
    core = make_core(spec("x", backoff=Backoff(initial=1.0, cap=10.0, jitter=0.0)))
    assert core.exited("x", ERROR, 0.5) == Delay("x", 1.0, 1.5)
    assert core.attempt("x", 1.5) == Restart("x", (), ("x",))
    core.starting("x")
    assert core.start_failed("x", 1.5) == Delay("x", 2.0, 3.5)
    assert run_due(core, 3.5) == [Restart("x", (), ("x",))]
    assert core.exited("x", ERROR, 4.0) == Delay("x", 4.0, 8.0)


def test_child_of_an_aborted_restart_plan_is_not_left_waiting() -> None:
    """A child not reached by an aborted restart plan is stopped, as in OTP, not stuck waiting."""
    core = make_core("c", "x", strategy=ALL)
    plan = core.exited("x", ERROR, 1.0)
    assert plan == Restart("x", ("c",), ("c", "x"))
    core.stopped("c")
    core.starting("c")
    core.start_failed("c", 1.0)  # OTP's start_children stops at the first failure: x not started
    terminate(core, "c")  # the operator gives up on c; its retry is cancelled
    core.check_restart("x")  # OTP: x has pid undefined, so restart_child(x) is allowed
    assert core.get("x").status is not BACKOFF or core.next_due() is not None


# -- auto_shutdown --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "kind", "expected"),
    [
        (T, NORMAL, Forget("s", removed=False, shutdown=True)),
        (T, SHUTDOWN, Forget("s", removed=False, shutdown=True)),
        (T, ERROR, Restart("s", (), ("s",))),
        (X, NORMAL, Forget("s", removed=True, shutdown=True)),
        (X, ERROR, Forget("s", removed=True, shutdown=True)),
    ],
    ids=[
        "transient-normal",
        "transient-shutdown",
        "transient-error",
        "temporary-normal",
        "temporary-error",
    ],
)
def test_any_significant_shuts_down_when_a_significant_child_is_not_restarted(
    restart: RestartType, kind: ExitKind, expected: Decision
) -> None:
    """With any_significant, the first significant child that ends for good shuts down."""
    core = make_core(
        spec("s", restart, significant=True),
        spec("s2", T, significant=True),
        "w",
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )
    assert core.exited("s", kind, 1.0) == expected


@pytest.mark.parametrize(
    "auto_shutdown",
    [AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.ALL_SIGNIFICANT],
    ids=["any-significant", "all-significant"],
)
@pytest.mark.parametrize("restart", [T, X], ids=["transient", "temporary"])
def test_non_significant_child_never_shuts_down(
    auto_shutdown: AutoShutdown, restart: RestartType
) -> None:
    """A child that is not significant never triggers auto_shutdown."""
    core = make_core(
        spec("s", T, significant=True), spec("n", restart), auto_shutdown=auto_shutdown
    )
    decision = core.exited("n", NORMAL, 1.0)
    assert decision == Forget("n", removed=restart is X, shutdown=False)


def test_all_significant_waits_for_the_last_significant_child() -> None:
    """With all_significant, only the exit of the last significant child shuts down."""
    core = make_core(
        spec("s1", T, significant=True),
        spec("s2", X, significant=True),
        "w",
        auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
    )
    assert core.exited("s1", NORMAL, 1.0) == Forget("s1", removed=False, shutdown=False)
    assert core.exited("s2", ERROR, 2.0) == Forget("s2", removed=True, shutdown=True)


def test_all_significant_counts_a_waiting_child_as_alive() -> None:
    """A significant child waiting in backoff keeps an all_significant supervisor up."""
    core = make_core(
        spec("s1", T, significant=True, backoff=Backoff(initial=1.0)),
        spec("s2", T, significant=True),
        auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
    )
    assert isinstance(core.exited("s1", ERROR, 1.0), Delay)
    assert core.exited("s2", NORMAL, 1.5) == Forget("s2", removed=False, shutdown=False)


@pytest.mark.parametrize(
    "auto_shutdown",
    [AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.ALL_SIGNIFICANT],
    ids=["any-significant", "all-significant"],
)
def test_terminate_never_triggers_auto_shutdown(auto_shutdown: AutoShutdown) -> None:
    """Terminating significant children is not an exit: the supervisor keeps supervising."""
    core = make_core(
        spec("s1", T, significant=True),
        spec("s2", T, significant=True),
        "w",
        auto_shutdown=auto_shutdown,
    )
    assert core.terminate("s1") is True
    core.stopped("s1")
    terminate(core, "s2")
    assert core.exited("w", ERROR, 1.0) == Restart("w", (), ("w",))


def test_all_significant_ignores_terminated_significant_children() -> None:
    """A terminated significant child no longer counts as running for all_significant."""
    core = make_core(
        spec("s1", T, significant=True),
        spec("s2", T, significant=True),
        auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
    )
    terminate(core, "s1")
    assert core.exited("s2", NORMAL, 1.0) == Forget("s2", removed=False, shutdown=True)


# -- dynamic child API ----------------------------------------------------------------------


def core_with_a(state: str) -> SupervisorCore:
    """Children a (with backoff) and b, running at 0; then a is put in *state*."""
    core = make_core(spec("a", backoff=Backoff(initial=1.0, jitter=0.0)), "b")
    if state == "running":
        return core
    if state == "backoff":
        assert core.exited("a", ERROR, 1.0) == Delay("a", 1.0, 2.0)
    elif state == "backoff-after-normal-exit":
        assert core.exited("a", NORMAL, 1.0) == Delay("a", 1.0, 2.0)
    elif state == "stopping":
        assert core.terminate("a") is True
    else:
        terminate(core, "a")
        if state == "starting":
            core.starting("a")
        elif state == "failed":
            core.starting("a")
            core.boot_failed("a")
        else:
            assert state == "stopped"
    return core


ALIVE_STATES = ["running", "starting", "stopping"]
IDLE_STATES = ["stopped", "failed"]


@pytest.mark.parametrize(
    ("state", "error", "msg"),
    [
        ("running", AlreadyStartedError, "supervisor 'sup': child 'a' is already started"),
        ("starting", AlreadyStartedError, "supervisor 'sup': child 'a' is already started"),
        ("stopping", AlreadyStartedError, "supervisor 'sup': child 'a' is already started"),
        (
            "stopped",
            AlreadyPresentError,
            "supervisor 'sup': child 'a' is already present (not running)",
        ),
        (
            "failed",
            AlreadyPresentError,
            "supervisor 'sup': child 'a' is already present (not running)",
        ),
        (
            "backoff",
            AlreadyPresentError,
            "supervisor 'sup': child 'a' is already present (not running)",
        ),
    ],
    ids=["running", "starting", "stopping", "stopped", "failed", "backoff"],
)
def test_check_new_refuses_a_taken_id(state: str, error: type[ChildError], msg: str) -> None:
    """start_child with a taken id: already_started if alive, already_present otherwise."""
    core = core_with_a(state)
    with pytest.raises(error, match=exact(msg)) as info:
        core.check_new(spec("a"))
    assert (info.value.supervisor, info.value.child_id) == ("sup", "a")
    with pytest.raises(error, match=exact(msg)):
        core.add(spec("a"))


def test_add_appends_a_stopped_child() -> None:
    """A new child joins last in start order, stopped until the runtime starts it."""
    core = make_core("a", "b")
    core.check_new(spec("c"))
    core.add(spec("c"))
    assert core.which_children() == (
        ChildInfo("a", RUNNING, ChildType.WORKER),
        ChildInfo("b", RUNNING, ChildType.WORKER),
        ChildInfo("c", STOPPED, ChildType.WORKER),
    )


@pytest.mark.parametrize(
    "call",
    [
        SupervisorCore.get,
        SupervisorCore.terminate,
        SupervisorCore.check_restart,
        SupervisorCore.delete,
    ],
    ids=["get", "terminate", "check_restart", "delete"],
)
def test_unknown_child_is_not_found(call: Callable[[SupervisorCore, str], object]) -> None:
    """Every child API call names the supervisor and the missing child (OTP: not_found)."""
    core = make_core("a")
    with pytest.raises(NotFoundError, match=exact("supervisor 'sup' has no child 'zz'")) as info:
        call(core, "zz")
    assert isinstance(info.value, LookupError)
    assert (info.value.supervisor, info.value.child_id) == ("sup", "zz")


@pytest.mark.parametrize(
    ("state", "alive", "after"),
    [
        ("running", True, STOPPED),
        ("starting", True, STOPPED),
        ("stopping", True, STOPPED),
        ("stopped", False, STOPPED),
        ("failed", False, FAILED),
        ("backoff", False, FAILED),
        ("backoff-after-normal-exit", False, STOPPED),
    ],
    ids=[
        "running",
        "starting",
        "stopping",
        "stopped",
        "failed",
        "backoff",
        "backoff-after-normal-exit",
    ],
)
def test_terminate(state: str, alive: bool, after: ChildStatus) -> None:
    """terminate says whether the child must be stopped; a pending restart is cancelled at once."""
    core = core_with_a(state)
    assert core.terminate("a") is alive
    if alive:
        assert core.get("a").status is STOPPING
        core.stopped("a")
    assert statuses(core) == {"a": after, "b": RUNNING}
    assert (core.next_due(), list(core.due_children(100.0)), core.attempt("a", 100.0)) == (
        None,
        [],
        Ignore(),
    )


@pytest.mark.parametrize(
    ("state", "error", "msg"),
    [
        *(
            (
                s,
                RunningError,
                "supervisor 'sup': child 'a' is running"
                + (" (stopping); try again once it has stopped" if s == "stopping" else ""),
            )
            for s in ALIVE_STATES
        ),
        ("backoff", RestartingError, "supervisor 'sup': child 'a' is waiting to restart"),
    ],
    ids=[*ALIVE_STATES, "backoff"],
)
@pytest.mark.parametrize("call", ["check_restart", "delete"], ids=["check_restart", "delete"])
def test_restart_and_delete_refuse_a_busy_child(
    state: str, error: type[ChildError], msg: str, call: str
) -> None:
    """restart_child and delete_child refuse a child that is alive or waiting to restart."""
    core = core_with_a(state)
    with pytest.raises(error, match=exact(msg)) as info:
        getattr(core, call)("a")
    assert (info.value.supervisor, info.value.child_id) == ("sup", "a")
    assert "a" in core


@pytest.mark.parametrize("state", IDLE_STATES, ids=IDLE_STATES)
def test_restart_of_an_idle_child_is_allowed_and_not_counted(state: str) -> None:
    """An operator's restart of a stopped child is allowed and not counted in the intensity."""
    core = core_with_a(state)
    core.check_restart("a")
    core.starting("a")
    core.started("a", 3.0)
    assert (core.get("a").status, recorded(core)) == (RUNNING, [])


@pytest.mark.parametrize("state", IDLE_STATES, ids=IDLE_STATES)
def test_delete_forgets_an_idle_child(state: str) -> None:
    """delete_child forgets a stopped child's spec, after which its id is free again."""
    core = core_with_a(state)
    core.delete("a")
    assert "a" not in core
    core.check_new(spec("a"))


def test_stopped_and_remove_of_an_unknown_child_do_nothing() -> None:
    """Reports about a child the core no longer has are ignored."""
    core = make_core("a")
    core.stopped("zz")
    core.remove("zz")
    assert statuses(core) == {"a": RUNNING}


@pytest.mark.parametrize(
    ("state", "child_id"),
    [("stopped", "a"), ("failed", "a"), ("stopping", "a"), ("backoff", "a"), ("running", "zz")],
    ids=["stopped", "failed", "stopping", "backoff", "unknown"],
)
def test_exit_of_a_child_that_is_not_running_is_ignored(state: str, child_id: str) -> None:
    """An exit from a child that is not running (or not known) changes nothing."""
    core = core_with_a(state)
    before = statuses(core)
    assert core.exited(child_id, ERROR, 5.0) == Ignore()
    assert (statuses(core), recorded(core)) == (before, [])


@pytest.mark.parametrize(
    "state", ["running", "stopped", "stopping"], ids=["running", "stopped", "stopping"]
)
def test_attempt_of_a_child_not_waiting_is_ignored(state: str) -> None:
    """attempt only acts on a child waiting in backoff."""
    core = core_with_a(state)
    assert core.attempt("a", 5.0) == Ignore()
    assert core.attempt("zz", 5.0) == Ignore()
    assert recorded(core) == []


# -- which_children / count_children --------------------------------------------------------


def test_which_and_count_children() -> None:
    """which_children lists every child in start order; count_children counts like OTP."""
    core = make_core(
        "a",
        ChildSpec("sup1", SupervisorSpec()),
        spec("c", backoff=Backoff(initial=1.0)),
        "d",
        ChildSpec("sup2", SupervisorSpec()),
        "f",
        not_started={"f"},
    )
    core.exited("c", ERROR, 1.0)
    terminate(core, "d")
    core.starting("f")
    assert core.which_children() == (
        ChildInfo("a", RUNNING, ChildType.WORKER),
        ChildInfo("sup1", RUNNING, ChildType.SUPERVISOR),
        ChildInfo("c", BACKOFF, ChildType.WORKER),
        ChildInfo("d", STOPPED, ChildType.WORKER),
        ChildInfo("sup2", RUNNING, ChildType.SUPERVISOR),
        ChildInfo("f", STARTING, ChildType.WORKER),
    )
    # active counts every live child, as OTP: a, sup1, sup2 running and f starting
    assert core.count_children() == Counts(specs=6, active=4, supervisors=2, workers=4)
    assert core.alive_in_stop_order() == ("f", "sup2", "sup1", "a")


def test_count_children_of_an_empty_supervisor() -> None:
    """A supervisor without children counts zero everywhere."""
    core = make_core()
    assert (core.which_children(), core.count_children()) == ((), Counts(0, 0, 0, 0))


# -- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "now", "expected"),
    [
        (Backoff(initial=1.0, jitter=0.0), 3.0, Delay("a", 1.0, 4.0)),
        (Backoff(initial=1.0, jitter=0.5), 3.0, Delay("a", 0.75, 3.75)),
        (Backoff(initial=0.25, jitter=0.5), 1.0, Delay("a", 0.1875, 1.1875)),
        (Backoff(initial=4.0, cap=2.0, jitter=0.0), 1.0, Delay("a", 2.0, 3.0)),
        (Backoff(initial=4.0, cap=2.0, jitter=1.0), 1.0, Delay("a", 1.0, 2.0)),
    ],
    ids=["no-jitter", "jitter", "small-initial", "capped", "capped-full-jitter"],
)
def test_exit_with_backoff_waits(backoff: Backoff, now: float, expected: Delay) -> None:
    """A child with a backoff waits delay = initial, reduced by jitter * sample, at most cap."""
    core = make_core(spec("a", backoff=backoff), "b")
    assert core.exited("a", ERROR, now) == expected
    assert (core.get("a").status, core.next_due()) == (BACKOFF, expected.due)


def test_backoff_is_not_jittered_without_an_injected_random() -> None:
    """A core created without a random source uses no jitter, so delays are exact."""
    core = SupervisorCore.create("sup", children=(spec("a", backoff=Backoff(jitter=1.0)),))
    core.starting("a")
    core.started("a", 0.0)
    assert core.exited("a", ERROR, 1.0) == Delay("a", 0.1, 1.1)


def test_backoff_with_zero_delay_restarts_at_once() -> None:
    """A backoff of zero seconds restarts immediately, like no backoff."""
    core = make_core(spec("a", backoff=Backoff(initial=0.0)))
    assert core.exited("a", ERROR, 1.0) == Restart("a", (), ("a",))
    assert core.next_due() is None


def test_waiting_child_is_counted_only_when_attempted() -> None:
    """The intensity counts a delayed restart when it is attempted, not when it is scheduled."""
    core = make_core(spec("a", backoff=Backoff(initial=1.0, jitter=0.0)), intensity=0)
    assert core.exited("a", ERROR, 1.0) == Delay("a", 1.0, 2.0)
    assert recorded(core) == []
    assert run_due(core, 1.999) == []
    assert run_due(core, 2.0) == [GiveUp("a", restarts=1, intensity=0, period=5.0)]


@pytest.mark.parametrize("strategy", list(Strategy), ids=STRATEGY_IDS)
def test_siblings_keep_running_while_a_child_waits(strategy: Strategy) -> None:
    """Backoff delays the whole restart: siblings are stopped only when it is attempted."""
    core = make_core(
        "a", spec("b", backoff=Backoff(initial=1.0, jitter=0.0)), "c", strategy=strategy
    )
    assert core.exited("b", ERROR, 1.0) == Delay("b", 1.0, 2.0)
    assert statuses(core) == {"a": RUNNING, "b": BACKOFF, "c": RUNNING}
    expected = {
        ONE: Restart("b", (), ("b",)),
        ALL: Restart("b", ("c", "a"), ("a", "b", "c")),
        REST: Restart("b", ("c",), ("b", "c")),
    }[strategy]
    assert run_due(core, 2.0) == [expected]
    assert set(statuses(core).values()) == {RUNNING}


def test_due_children_yields_earliest_first_and_once() -> None:
    """Due restarts come earliest first, only once due, and each only once."""
    jitterless = Backoff(initial=1.0, jitter=0.0)
    core = make_core(
        spec("a", backoff=jitterless),
        spec("b", backoff=Backoff(initial=2.0, jitter=0.0)),
        spec("c", backoff=jitterless),
    )
    core.exited("b", ERROR, 0.5)  # due 2.5
    core.exited("a", ERROR, 1.0)  # due 2.0
    assert core.next_due() == 2.0
    assert run_due(core, 1.99) == []
    core.exited("c", ERROR, 3.0)  # due 4.0
    assert [d.child_id for d in run_due(core, 3.0) if isinstance(d, Restart)] == ["a", "b"]
    assert (core.next_due(), run_due(core, 3.0)) == (4.0, [])
    assert run_due(core, 4.0) == [Restart("c", (), ("c",))]
    assert core.next_due() is None


@pytest.mark.parametrize(
    ("ran", "delay"),
    [(0.0, 2.0), (9.99, 2.0), (10.0, 1.0), (25.0, 1.0)],
    ids=["crashed-at-once", "just-short-of-reset", "exactly-reset-after", "long-run"],
)
def test_consecutive_restarts_reset_after_a_stable_run(ran: float, delay: float) -> None:
    """A child that ran reset_after seconds before exiting waits the initial delay again."""
    backoff = Backoff(initial=1.0, multiplier=2.0, jitter=0.0, reset_after=10.0)
    core = make_core(spec("a", backoff=backoff))
    assert core.exited("a", ERROR, 0.5) == Delay("a", 1.0, 1.5)
    run_due(core, 1.5)
    assert core.exited("a", ERROR, 1.5 + ran) == Delay("a", delay, 1.5 + ran + delay)


def test_consecutive_restarts_grow_the_delay() -> None:
    """Each consecutive restart doubles the wait, up to the cap."""
    core = make_core(spec("a", backoff=Backoff(initial=1.0, cap=5.0, jitter=0.0)), intensity=100)
    delays = []
    now = 0.0
    for _ in range(5):
        decision = core.exited("a", ERROR, now)
        assert isinstance(decision, Delay)
        delays.append(decision.delay)
        now = decision.due
        run_due(core, now)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("strategy", "waiting", "failed", "plan"),
    [
        (ALL, "a", "b", Restart("b", ("c",), ("a", "b", "c"))),
        (ALL, "c", "a", Restart("a", ("b",), ("a", "b", "c"))),
        (REST, "b", "a", Restart("a", ("c",), ("a", "b", "c"))),
    ],
    ids=["one-for-all-earlier", "one-for-all-later", "rest-for-one-later"],
)
def test_waiting_child_absorbed_by_another_restart_is_started_with_it(
    strategy: Strategy, waiting: str, failed: str, plan: Restart
) -> None:
    """A waiting child in another restart's group starts with it; its own attempt is ignored."""
    core = make_core(
        *(spec(c, backoff=Backoff(initial=5.0, jitter=0.0)) if c == waiting else c for c in "abc"),
        strategy=strategy,
    )
    assert core.exited(waiting, ERROR, 1.0) == Delay(waiting, 5.0, 6.0)
    assert carry_out(core, core.exited(failed, ERROR, 2.0), 2.0) == plan
    assert core.attempt(waiting, 6.0) == Ignore()
    assert (core.next_due(), run_due(core, 6.0), recorded(core)) == (None, [], [2.0])
    assert set(statuses(core).values()) == {RUNNING}


def test_rest_for_one_leaves_an_earlier_waiting_child_waiting() -> None:
    """rest-for-one does not absorb a waiting child started before the failed one."""
    core = make_core("a", spec("b", backoff=Backoff(initial=5.0, jitter=0.0)), "c", strategy=REST)
    core.exited("b", ERROR, 1.0)
    assert carry_out(core, core.exited("c", ERROR, 2.0), 2.0) == Restart("c", (), ("c",))
    assert (core.get("b").status, core.next_due()) == (BACKOFF, 6.0)
    assert run_due(core, 6.0) == [Restart("b", ("c",), ("b", "c"))]


def test_long_crash_loop_with_backoff_keeps_waiting() -> None:
    """A child that keeps crashing, spaced out by its backoff, keeps waiting cap seconds."""
    backoff = Backoff(initial=1.0, cap=30.0, multiplier=10.0, jitter=0.0)
    core = make_core(spec("a", backoff=backoff), intensity=1, period=5.0)
    now = 0.0
    for _ in range(400):
        decision = core.exited("a", ERROR, now + 1.0)
        assert isinstance(decision, Delay)
        now = decision.due
        assert len(run_due(core, now)) == 1
    assert core.get("a").status is RUNNING
