"""SupervisorCore against a small, separate reference model of OTP's rules, plus @given laws.

The state machine drives the core the way the runtime does (see ``Driver``) and checks every
decision and, after every step, every child's state against ``Model``: OTP's supervisor rules
restated independently (restart table, strategies, intensity with an inclusive boundary,
temporary removal, auto_shutdown), with corral's backoff as its docstring describes it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from corral.errors import (
    AlreadyPresentError,
    AlreadyStartedError,
    ChildError,
    NotFoundError,
    RestartingError,
    RunningError,
)
from corral.supervisors.core import (
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
from corral.supervisors.intensity import RestartIntensity
from corral.supervisors.spec import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    ExitKind,
    RestartType,
    Strategy,
    SupervisorSpec,
)
from property_tests.strategies import (
    CHILD_IDS,
    SAMPLE,
    STEPS,
    Flags,
    child_specs,
    children_of,
    exit_kinds,
    idle,
    supervisor_flags,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# -- the reference model --------------------------------------------------------------------

RUNNING, WAITING, STOPPED, FAILED = "running", "waiting", "stopped", "failed"


@attrs.define
class Kid:
    spec: ChildSpec
    state: str = RUNNING
    due: float | None = None  # when WAITING: when the restart is attempted
    since: float | None = 0.0  # when it last started, while RUNNING
    streak: int = 0  # consecutive restarts (backoff's n)
    crashed: bool = False  # its last exit, or last start, was an error


@attrs.define
class Model:
    """OTP's supervisor, restated plainly; every child is running, waiting or stopped/failed."""

    flags: Flags
    kids: list[Kid]
    restarts: list[float] = attrs.Factory(list)
    done: bool = False  # gave up or shut down: nothing more to check

    def kid(self, child_id: str) -> Kid | None:
        return next((k for k in self.kids if k.spec.id == child_id), None)

    def ids(self, *states: str) -> list[str]:
        return [k.spec.id for k in self.kids if k.state in states]

    def remaining(self, now: float) -> int:
        recent = [t for t in self.restarts if t >= now - self.flags.period]
        return max(0, self.flags.intensity - len(recent))

    def next_due(self) -> tuple[float, str] | None:
        return min(((k.due, k.spec.id) for k in self.kids if k.due is not None), default=None)

    def exit(self, child_id: str, kind: ExitKind, now: float) -> Decision:
        kid = self.kid(child_id)
        assert kid is not None
        kid.crashed = kind is ExitKind.ERROR
        restart = kid.spec.restart
        if restart is RestartType.PERMANENT or (restart is RestartType.TRANSIENT and kid.crashed):
            backoff = kid.spec.backoff
            if backoff and kid.since is not None and now - kid.since >= backoff.reset_after:
                kid.streak = 0
            kid.streak += 1
            return self.wait(kid, now, at_once=True)
        if restart is RestartType.TEMPORARY:
            self.kids.remove(kid)
        else:
            kid.state, kid.since = (FAILED if kid.crashed else STOPPED), None
        rule = self.flags.auto_shutdown
        self.done = kid.spec.significant and (
            rule is AutoShutdown.ANY_SIGNIFICANT
            or (
                rule is AutoShutdown.ALL_SIGNIFICANT
                and not any(k.spec.significant and k.state in (RUNNING, WAITING) for k in self.kids)
            )
        )
        return Forget(child_id, removed=restart is RestartType.TEMPORARY, shutdown=self.done)

    def wait(self, kid: Kid, now: float, *, at_once: bool) -> Decision:
        b = kid.spec.backoff
        delay = 0.0
        if b is not None:
            delay = min(b.cap, b.initial * b.multiplier ** (kid.streak - 1)) * (
                1 - b.jitter * SAMPLE
            )
        kid.state, kid.due, kid.since = WAITING, now + delay, None
        if at_once and delay == 0:
            return self.attempt(kid.spec.id, now)
        return Delay(kid.spec.id, delay, now + delay)

    def attempt(self, child_id: str, now: float) -> Restart | GiveUp:
        kid = self.kid(child_id)
        assert kid is not None
        self.restarts = [t for t in self.restarts if t >= now - self.flags.period] + [now]
        if len(self.restarts) > self.flags.intensity:
            kid.state, kid.due, self.done = (FAILED if kid.crashed else STOPPED), None, True
            return GiveUp(child_id, len(self.restarts), self.flags.intensity, self.flags.period)
        ids = [k.spec.id for k in self.kids]
        i = ids.index(child_id)
        group = {
            Strategy.ONE_FOR_ONE: [child_id],
            Strategy.ONE_FOR_ALL: ids,
            Strategy.REST_FOR_ONE: ids[i:],
        }[self.flags.strategy]
        others = [k for k in self.kids if k.spec.id in group and k is not kid]
        stop = tuple(k.spec.id for k in reversed(others) if k.state == RUNNING)
        removed = tuple(k.spec.id for k in others if k.spec.restart is RestartType.TEMPORARY)
        return Restart(child_id, stop, tuple(c for c in group if c not in removed), removed)

    def carry_out(self, plan: Restart, now: float, fails: str | None) -> Decision | None:
        self.kids = [k for k in self.kids if k.spec.id not in plan.removed]
        for kid in self.kids:
            if kid.spec.id in plan.stop:
                kid.state, kid.since = STOPPED, None
        for n, child_id in enumerate(plan.start):
            started = self.kid(child_id)
            assert started is not None
            if child_id == fails:
                started.crashed, started.streak = True, started.streak + 1
                delay = self.wait(started, now, at_once=False)
                for later in plan.start[n + 1 :]:
                    self.stop(later)
                return delay
            started.state, started.due, started.since = RUNNING, None, now
        return None

    def stop(self, child_id: str) -> None:
        """The runtime reports the child stopped: a pending restart is dropped."""
        kid = self.kid(child_id)
        assert kid is not None
        failed = kid.state == FAILED or (kid.state == WAITING and kid.crashed)
        kid.state, kid.due, kid.since = (FAILED if failed else STOPPED), None, None


STATUS = {
    RUNNING: ChildStatus.RUNNING,
    WAITING: ChildStatus.BACKOFF,
    STOPPED: ChildStatus.STOPPED,
    FAILED: ChildStatus.FAILED,
}


# -- the state machine ----------------------------------------------------------------------


def half() -> float:
    return SAMPLE


live = precondition(lambda self: not self.model.done)
some_running = precondition(lambda self: not self.model.done and self.model.ids(RUNNING))


class CoreMachine(RuleBasedStateMachine):
    """Drives a SupervisorCore like the runtime does; the model predicts every answer."""

    core: SupervisorCore
    model: Model
    now: float

    @initialize(flags=supervisor_flags(max_intensity=5), data=st.data())
    def boot(self, flags: Flags, data: st.DataObject) -> None:
        sup = SupervisorSpec(
            children=data.draw(children_of(flags), label="children"),
            strategy=flags.strategy,
            intensity=flags.intensity,
            period=flags.period,
            auto_shutdown=flags.auto_shutdown,
        )
        self.now = 0.0
        self.core = SupervisorCore.create(
            "sup",
            strategy=sup.strategy,
            intensity=sup.intensity,
            period=sup.period,
            auto_shutdown=sup.auto_shutdown,
            children=sup.children,
            random=half,
        )
        for s in sup.children:
            self.core.starting(s.id)
            self.core.started(s.id, self.now)
        self.model = Model(flags, [Kid(s) for s in sup.children])

    # -- how the runtime carries out decisions --

    def follow(self, decision: Decision, expected: Decision, fail_at: int | None) -> None:
        assert decision == expected
        if isinstance(decision, Restart):
            self.carry_out(decision, fail_at)
        elif isinstance(decision, GiveUp) or (isinstance(decision, Forget) and decision.shutdown):
            assert self.model.done
            assert self.core.give_up_all() == tuple(reversed(self.model.ids(RUNNING)))

    def carry_out(self, plan: Restart, fail_at: int | None) -> None:
        fails = None if fail_at is None else plan.start[fail_at % len(plan.start)]
        for c in plan.stop:
            self.core.stopped(c)
        for c in plan.removed:
            self.core.remove(c)
        got: Decision | None = None
        for n, c in enumerate(plan.start):
            self.core.starting(c)
            if c == fails:
                got = self.core.start_failed(c, self.now)
                # As OTP's start_children, the plan stops at the first failure, and the
                # runtime reports the children it did not reach as stopped (OTP: undefined).
                for later in plan.start[n + 1 :]:
                    self.core.stopped(later)
                break
            self.core.started(c, self.now)
        assert got == self.model.carry_out(plan, self.now, fails)

    def exit_child(self, data: st.DataObject, kind: ExitKind, fail_at: int | None) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(RUNNING)), label="child")
        expected = self.model.exit(child_id, kind, self.now)
        self.follow(self.core.exited(child_id, kind, self.now), expected, fail_at)

    # -- rules --

    @some_running
    @rule(data=st.data(), kind=exit_kinds)
    def child_exits(self, data: st.DataObject, kind: ExitKind) -> None:
        self.exit_child(data, kind, None)

    @some_running
    @rule(data=st.data(), fail_at=st.integers(0, 4))
    def start_fails(self, data: st.DataObject, fail_at: int) -> None:
        """A child crashes and one start in the restart plan that follows fails."""
        self.exit_child(data, ExitKind.ERROR, fail_at)

    @live
    @rule(dt=st.sampled_from(STEPS), fail_at=st.none() | st.integers(0, 4))
    def time_passes(self, dt: float, fail_at: int | None) -> None:
        """Time moves on and due restarts are attempted; the first plan may fail a start."""
        self.now += dt
        for child_id in self.core.due_children(self.now):
            due = self.model.next_due()
            assert due is not None
            assert (due[1], due[0] <= self.now) == (child_id, True)
            expected = self.model.attempt(child_id, self.now)
            self.follow(self.core.attempt(child_id, self.now), expected, fail_at)
            fail_at = None
            if self.model.done:
                return
        due = self.model.next_due()
        assert due is None or due[0] > self.now

    @live
    @rule(child_id=st.sampled_from(CHILD_IDS), data=st.data())
    def add_child(self, child_id: str, data: st.DataObject) -> None:
        significant = self.model.flags.auto_shutdown is not AutoShutdown.NEVER
        spec = data.draw(child_specs(child_id, significant=significant), label="spec")
        kid = self.model.kid(child_id)
        if kid is not None:
            error = AlreadyStartedError if kid.state == RUNNING else AlreadyPresentError
            with pytest.raises(error):
                self.core.check_new(spec)
            return
        self.core.check_new(spec)
        self.core.add(spec)
        self.core.starting(child_id)
        self.core.started(child_id, self.now)
        self.model.kids.append(Kid(spec, since=self.now))

    @live
    @rule(child_id=st.sampled_from(CHILD_IDS))
    def terminate_child(self, child_id: str) -> None:
        kid = self.model.kid(child_id)
        if kid is None:
            with pytest.raises(NotFoundError):
                self.core.terminate(child_id)
            return
        alive = self.core.terminate(child_id)
        assert alive is (kid.state == RUNNING)
        if alive:
            self.core.stopped(child_id)
        self.model.stop(child_id)
        if kid.spec.restart is RestartType.TEMPORARY:
            self.core.remove(child_id)
            self.model.kids.remove(kid)

    def idle_kid(self, child_id: str, call: str) -> Kid | None:
        """Check restart_child/delete_child's errors; return the kid if the call may proceed."""
        kid = self.model.kid(child_id)
        error: type[ChildError] | None = NotFoundError
        if kid is not None:
            error = {RUNNING: RunningError, WAITING: RestartingError}.get(kid.state)
        if error is not None:
            with pytest.raises(error):
                getattr(self.core, call)(child_id)
            return None
        return kid

    @live
    @rule(child_id=st.sampled_from(CHILD_IDS))
    def restart_child(self, child_id: str) -> None:
        kid = self.idle_kid(child_id, "check_restart")
        if kid is not None:
            self.core.check_restart(child_id)
            self.core.starting(child_id)
            self.core.started(child_id, self.now)
            kid.state, kid.since = RUNNING, self.now

    @live
    @rule(child_id=st.sampled_from(CHILD_IDS))
    def delete_child(self, child_id: str) -> None:
        kid = self.idle_kid(child_id, "delete")
        if kid is not None:
            self.core.delete(child_id)
            self.model.kids.remove(kid)

    @precondition(lambda self: self.model.done)
    @rule()
    def supervisor_is_down(self) -> None:
        """Once it gave up or shut down, nothing is pending and every live child is stopping."""
        assert self.core.next_due() is None
        assert {self.core.get(c).status for c in self.core.alive_in_stop_order()} <= {
            ChildStatus.STOPPING
        }

    # -- invariants --

    @invariant()
    def agrees_with_model(self) -> None:
        if self.model.done:
            return
        kids = self.model.kids
        core = self.core
        assert [(i.id, i.status) for i in core.which_children()] == [
            (k.spec.id, STATUS[k.state]) for k in kids
        ]
        assert [(core.get(k.spec.id).due, core.get(k.spec.id).consecutive) for k in kids] == [
            (k.due, k.streak) for k in kids
        ]
        due = self.model.next_due()
        assert core.next_due() == (None if due is None else due[0])
        assert core.intensity.remaining(self.now) == self.model.remaining(self.now)
        running = len(self.model.ids(RUNNING))
        assert core.count_children() == Counts(len(kids), running, 0, len(kids))


# Twice the profile's examples: the machine is cheap per step (about 5 s with the ci profile)
# and rare paths (exact reset_after, all_significant with a waiting child) need the volume.
CoreMachine.TestCase.settings = settings(
    max_examples=2 * settings().max_examples, stateful_step_count=50
)
TestCoreModel = CoreMachine.TestCase


# -- laws -----------------------------------------------------------------------------------


def started_core(flags: Flags, specs: Sequence[ChildSpec], intensity: int) -> SupervisorCore:
    core = SupervisorCore.create(
        "sup",
        strategy=flags.strategy,
        intensity=intensity,
        period=flags.period,
        children=tuple(specs),
        random=half,
    )
    for s in specs:
        core.starting(s.id)
        core.started(s.id, 0.0)
    return core


@given(flags=supervisor_flags(max_intensity=5), data=st.data())
def test_more_than_intensity_restarts_within_period_always_escalates(
    flags: Flags, data: st.DataObject
) -> None:
    """intensity + 1 restarts within period give up at the last one, whichever children fail."""
    ticks = data.draw(
        st.lists(st.integers(0, 16), min_size=flags.intensity + 1, max_size=flags.intensity + 1)
    )
    start = data.draw(st.sampled_from([0.0, 100.0]))
    times = [start + t * flags.period / 16 for t in sorted(ticks)]  # within one period, inclusive
    specs = [attrs.evolve(s, backoff=None) for s in data.draw(children_of(flags))]
    assume(any(s.restart is not RestartType.TEMPORARY for s in specs))
    core = started_core(flags, specs, flags.intensity)
    budget = RestartIntensity(flags.intensity, flags.period)
    for n, now in enumerate(times):
        assert budget.record(now) is (n == flags.intensity)
        restartable = [
            i.id
            for i in core.which_children()
            if core.get(i.id).spec.restart is not RestartType.TEMPORARY
        ]
        child_id = data.draw(st.sampled_from(restartable))
        decision = core.exited(child_id, ExitKind.ERROR, now)
        if n < flags.intensity:
            assert isinstance(decision, Restart)
            for c in decision.stop:
                core.stopped(c)
            for c in decision.removed:
                core.remove(c)
            for c in decision.start:
                core.starting(c)
                core.started(c, now)
        else:
            assert decision == GiveUp(child_id, n + 1, flags.intensity, flags.period)


@given(flags=supervisor_flags(), data=st.data())
def test_restart_plans_keep_start_order_and_stop_only_what_they_restart(
    flags: Flags, data: st.DataObject
) -> None:
    """A plan starts in start order, stops in reverse, and stops only what it restarts or drops."""
    specs = list(data.draw(children_of(flags, min_size=2)))
    states = data.draw(
        st.lists(
            st.sampled_from([RUNNING, STOPPED, WAITING]), min_size=len(specs), max_size=len(specs)
        )
    )
    for n, s in enumerate(specs):
        if states[n] == WAITING:
            if s.restart is RestartType.TEMPORARY:
                states[n] = RUNNING
            else:
                specs[n] = attrs.evolve(s, backoff=Backoff(initial=1.0))
    core = started_core(flags, specs, intensity=100)
    for s, state in zip(specs, states, strict=True):
        if state == STOPPED:
            assert core.terminate(s.id)
            core.stopped(s.id)
        elif state == WAITING:
            assert isinstance(core.exited(s.id, ExitKind.ERROR, 0.5), Delay)
    order = tuple(core.children)
    alive = set(core.alive_in_stop_order())
    failing = [s.id for s in specs if s.id in alive and s.restart is not RestartType.TEMPORARY]
    assume(failing)
    child_id = data.draw(st.sampled_from(failing))
    decision = core.exited(child_id, ExitKind.ERROR, 1.0)
    if isinstance(decision, Delay):
        decision = core.attempt(child_id, decision.due)
    assert isinstance(decision, Restart)
    assert child_id in decision.start
    assert child_id not in decision.stop
    assert list(decision.start) == [c for c in order if c in decision.start]
    assert list(decision.stop) == [c for c in reversed(order) if c in decision.stop]
    assert set(decision.stop) <= alive
    temporary = {s.id for s in specs if s.restart is RestartType.TEMPORARY}
    assert set(decision.stop) - set(decision.start) <= temporary
    assert set(decision.removed) <= temporary
    assert not set(decision.removed) & set(decision.start)


@given(
    initial=st.floats(0, 100),
    cap=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 100_000),  # far past where a float power would overflow
    sample=st.floats(0, 1, exclude_max=True),
)
def test_backoff_delay_stays_within_jitter_of_base_and_below_cap(
    initial: float, cap: float, multiplier: float, jitter: float, attempt: int, sample: float
) -> None:
    """A backoff delay is never above cap and never below (1 - jitter) of the unjittered delay."""
    b = Backoff(initial=initial, cap=cap, multiplier=multiplier, jitter=jitter)
    base = b.delay(attempt, 0.0)
    # The unjittered delay, in logs so that the oracle itself cannot overflow.
    if initial == 0:
        expected = 0.0
    elif math.log(initial) + (attempt - 1) * math.log(multiplier) >= math.log(cap or 1e-300):
        expected = cap
    else:
        expected = initial * multiplier ** (attempt - 1)
    assert base == pytest.approx(min(cap, expected), rel=1e-9)
    assert (1 - jitter) * base * (1 - 1e-12) <= b.delay(attempt, sample) <= base <= cap


@given(kind=exit_kinds, restart=st.sampled_from(RestartType))
def test_an_exit_of_an_unknown_child_is_ignored(kind: ExitKind, restart: RestartType) -> None:
    """Exits the core cannot place are ignored and change nothing."""
    core = SupervisorCore.create(
        "sup", children=(ChildSpec("a", idle, restart=restart),), intensity=0
    )
    assert core.exited("zz", kind, 1.0) == Ignore()
    assert core.exited("a", kind, 1.0) == Ignore()  # never started
    assert len(core.intensity.history) == 0
