"""The supervisor's decisions: a pure, synchronous state machine over its children.

This is OTP's ``supervisor.erl`` without processes. The runtime (``supervisor.py`` and the
layers below it) reads the clock once per step, passes ``now`` in, and carries out what comes
back; nothing here awaits, sleeps, logs or reads time, so every rule is testable as a plain
function call.

Mapping to ``supervisor.erl``:

* ``exited``      is ``restart_child/3`` + ``do_restart/3``: restart type x exit kind
  (``plan.should_restart``); children not restarted are forgotten (``del_child``: a temporary
  child's spec is removed, others stay as stopped) and may trigger ``do_auto_shutdown``.
* ``attempt``     is ``restart/2``: the restart is recorded in the intensity first
  (``add_restart``); over budget the supervisor gives up, otherwise the strategy decides which
  running siblings stop (reverse start order) and which children start (start order). As in
  OTP a multi-child restart also starts siblings that were stopped, and drops temporary ones;
  beyond OTP, a sibling an operator stopped and *held* (``held``) stays stopped.
* ``start_failed`` is the ``{try_again, Id}`` path: the child waits in BACKOFF and is attempted
  again (and counted again) after the runtime has read its inbox, so a shutdown gets in first.
* ``terminate`` / ``restart`` / ``delete`` / ``check_new`` are the dynamic child API with its
  error cases (``not_found``, ``running``, ``restarting``, ``already_present``,
  ``already_started``).

Beyond OTP, a restart may be delayed by the child's ``Backoff``. The rule: backoff delays the
whole restart, nothing else. The child waits in BACKOFF with a due time; its siblings are left
as they are; at the due time the restart happens exactly as OTP's would, and only then is it
recorded in the intensity. So intensity counts restart *attempts* within ``period``, and a
backoff whose delays spread attempts wider than ``period / intensity`` lets a child keep
failing without escalating: that is the point of backoff, so size ``cap`` with it in mind. A
child waiting in BACKOFF that becomes part of another restart (one-for-all, rest-for-one) is
started with it and its wait ends. ``terminate`` ends the wait at once.
"""

from __future__ import annotations

import enum
import heapq
from typing import TYPE_CHECKING

import attrs

from corral.errors import (
    AlreadyPresentError,
    AlreadyStartedError,
    NotFoundError,
    RestartingError,
    RunningError,
)
from corral.supervisors.intensity import RestartIntensity
from corral.supervisors.plan import affected, should_restart
from corral.supervisors.spec import (
    AutoShutdown,
    ChildSpec,
    ChildType,
    ExitKind,
    RestartType,
    Strategy,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = (
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


class ChildStatus(enum.Enum):
    """Where a child is in its life, as the supervisor sees it."""

    STARTING = "starting"  # being started; the supervisor waits for it to signal readiness
    RESTARTING = "restarting"  # being started by a restart (OTP: restarting): not active
    RUNNING = "running"
    BACKOFF = "backoff"  # a restart is due at ``due`` (OTP: restarting)
    STOPPING = "stopping"  # being stopped by the supervisor
    STOPPED = "stopped"  # not running, nothing pending (OTP: pid undefined)
    FAILED = "failed"  # not running, nothing pending, and its last exit or start failed


_ALIVE = frozenset(
    {ChildStatus.STARTING, ChildStatus.RESTARTING, ChildStatus.RUNNING, ChildStatus.STOPPING}
)
_RUNS = frozenset({ChildStatus.RUNNING, ChildStatus.STARTING, ChildStatus.RESTARTING})
# OTP's count_children: active is a live pid; a child being restarted has none (restarting).
_ACTIVE = frozenset({ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING})


@attrs.define(slots=True)
class ChildRecord:
    """What the core knows of one child."""

    spec: ChildSpec
    status: ChildStatus = ChildStatus.STOPPED
    starts: int = 0  # successful starts
    restarts: int = 0  # the starts that were restarts (not the first, nor an operator's start)
    plain_start: bool = False  # the next start is an operator's start of a stopped child
    consecutive: int = 0  # restarts since the child last ran for backoff.reset_after
    started_at: float | None = None
    due: float | None = None  # with status BACKOFF: when the restart is attempted
    last_exit: ExitKind | None = None
    held: bool = False  # stopped by an operator: no multi-child restart starts it
    # its exits that its restart type restarts, within spec.max_restarts_period (newest last)
    exits: tuple[float, ...] = ()

    @property
    def alive(self) -> bool:
        """Starting, restarting, running or stopping: it has a task."""
        return self.status in _ALIVE


# -- decisions ----------------------------------------------------------------------------


@attrs.frozen
class Ignore:
    """Nothing to do (an exit of a child the supervisor no longer has)."""


@attrs.frozen
class Forget:
    """The child is not restarted; ``removed`` if its spec is gone (temporary).

    ``shutdown`` is true when this exit makes the supervisor shut itself down
    (auto_shutdown), which it then does with exit kind SHUTDOWN.
    """

    child_id: str
    removed: bool
    shutdown: bool = False
    # beyond OTP: past the child's own max_restarts (restarts, period); its supervisor goes on
    given_up: tuple[int, float] | None = None


@attrs.frozen
class Delay:
    """The child waits in BACKOFF; its restart is attempted at ``due`` (= now + delay)."""

    child_id: str
    delay: float
    due: float


@attrs.frozen
class Restart:
    """Carry out a restart: stop ``stop`` in that order, then start ``start`` in that order.

    ``removed`` are temporary children dropped by a multi-child restart; those that were
    running are also in ``stop``.
    """

    child_id: str
    stop: tuple[str, ...]
    start: tuple[str, ...]
    removed: tuple[str, ...] = ()


@attrs.frozen
class GiveUp:
    """Restart intensity exceeded: stop every child in reverse start order and exit SHUTDOWN."""

    child_id: str
    restarts: int  # recorded within the period, the one that exceeded included
    intensity: int
    period: float


Decision = Ignore | Forget | Delay | Restart | GiveUp
Attempted = Restart | GiveUp | Ignore


@attrs.frozen
class ChildInfo:
    """One row of ``which_children``."""

    id: str
    status: ChildStatus
    type: ChildType


@attrs.frozen
class Counts:
    """``count_children``: OTP's specs, active, supervisors, workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


def _no_jitter() -> float:
    return 0.0


@attrs.define(slots=True)
class SupervisorCore:
    """A supervisor's children and restart budget, and the rules that change them.

    ``name`` is only used in error messages. ``random`` returns a float in [0, 1) for backoff
    jitter; inject a seeded one for reproducible tests.
    """

    name: str
    strategy: Strategy
    intensity: RestartIntensity
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER
    random: Callable[[], float] = _no_jitter
    dynamic: bool = False  # simple_one_for_one: children not restarted are erased
    children: dict[str, ChildRecord] = attrs.field(factory=dict)  # insertion = start order
    _dues: list[tuple[float, str]] = attrs.field(factory=list)  # heap; entries may be stale

    @classmethod
    def create(
        cls,
        name: str,
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        auto_shutdown: AutoShutdown = AutoShutdown.NEVER,
        children: tuple[ChildSpec, ...] = (),
        random: Callable[[], float] = _no_jitter,
        dynamic: bool = False,
    ) -> SupervisorCore:
        core = cls(
            name=name,
            dynamic=dynamic,
            strategy=strategy,
            intensity=RestartIntensity(intensity, period),
            auto_shutdown=auto_shutdown,
            random=random,
        )
        for spec in children:
            core.add(spec)
        return core

    # -- queries ------------------------------------------------------------------------

    def __contains__(self, child_id: str) -> bool:
        return child_id in self.children

    def get(self, child_id: str) -> ChildRecord:
        """The child's record; ``NotFoundError`` if there is none."""
        try:
            return self.children[child_id]
        except KeyError:
            msg = f"supervisor {self.name!r} has no child {child_id!r}"
            raise NotFoundError(msg, supervisor=self.name, child_id=child_id) from None

    def which_children(self) -> tuple[ChildInfo, ...]:
        """Every child in start order (OTP lists newest first; the content is the same)."""
        return tuple(ChildInfo(i, r.status, r.spec.type) for i, r in self.children.items())

    def count_children(self) -> Counts:
        """OTP's count_children: a dynamic supervisor has one spec, its template (as
        simple_one_for_one); a child being restarted is not active (OTP: restarting)."""
        sups = sum(1 for r in self.children.values() if r.spec.type is ChildType.SUPERVISOR)
        # OTP: is_pid(Pid) andalso is_process_alive(Pid): starting and stopping count too.
        active = sum(1 for r in self.children.values() if r.status in _ACTIVE)
        n = len(self.children)
        return Counts(
            specs=1 if self.dynamic else n, active=active, supervisors=sups, workers=n - sups
        )

    def alive_in_stop_order(self) -> tuple[str, ...]:
        """Children that are starting, running or stopping, in reverse start order."""
        return tuple(i for i in reversed(self.children) if self.children[i].status in _ALIVE)

    def next_due(self) -> float | None:
        """The earliest time a BACKOFF restart is due, or None."""
        dues = self._dues
        while dues:
            due, child_id = dues[0]
            rec = self.children.get(child_id)
            if rec is not None and rec.status is ChildStatus.BACKOFF and rec.due == due:
                return due
            heapq.heappop(dues)  # stale: the child started, stopped or was removed since
        return None

    def due_children(self, now: float) -> Iterator[str]:
        """Children whose restart is due at *now*, earliest first; each taken off the timer."""
        while (due := self.next_due()) is not None and due <= now:
            yield heapq.heappop(self._dues)[1]

    # -- lifecycle edges the runtime reports ---------------------------------------------

    def add(self, spec: ChildSpec) -> None:
        """Append a stopped child (after ``check_new``)."""
        self.check_new(spec)
        self.children[spec.id] = ChildRecord(spec)

    def check_new(self, spec: ChildSpec) -> None:
        """Raise OTP's start_child errors if *spec*'s id is taken."""
        rec = self.children.get(spec.id)
        if rec is None:
            return
        if rec.status in _ALIVE:
            msg = f"supervisor {self.name!r}: child {spec.id!r} is already started"
            raise AlreadyStartedError(msg, supervisor=self.name, child_id=spec.id)
        msg = f"supervisor {self.name!r}: child {spec.id!r} is already present (not running)"
        raise AlreadyPresentError(msg, supervisor=self.name, child_id=spec.id)

    def starting(self, child_id: str, *, restarting: bool = False) -> None:
        """The child is being started; *restarting*: by a restart of its supervisor's."""
        rec = self.children[child_id]
        # STOPPED | FAILED | BACKOFF -> STARTING | RESTARTING
        rec.status = ChildStatus.RESTARTING if restarting else ChildStatus.STARTING
        rec.due = None

    def started(self, child_id: str, now: float) -> bool:
        """The child is running; returns whether this start was a restart."""
        rec = self.children[child_id]
        rec.status = ChildStatus.RUNNING  # STARTING | RESTARTING -> RUNNING
        restart = rec.starts > 0 and not rec.plain_start
        rec.restarts += restart
        rec.plain_start = False
        rec.starts += 1
        rec.started_at = now
        return restart

    def stopping(self, child_id: str) -> None:
        rec = self.children[child_id]
        if rec.status in _ALIVE:
            rec.status = ChildStatus.STOPPING  # STARTING | RUNNING -> STOPPING

    def stopped(self, child_id: str) -> None:
        """The runtime stopped the child (collateral, terminate or shutdown)."""
        rec = self.children.get(child_id)
        if rec is not None:
            failed = rec.status is ChildStatus.FAILED or (
                rec.status is ChildStatus.BACKOFF and rec.last_exit is ExitKind.ERROR
            )
            rec.status = ChildStatus.FAILED if failed else ChildStatus.STOPPED  # * -> STOPPED
            rec.due = None
            rec.started_at = None

    def boot_failed(self, child_id: str) -> None:
        """The child failed to start while the supervisor itself was starting."""
        self.children[child_id].status = ChildStatus.FAILED  # STARTING -> FAILED

    def remove(self, child_id: str) -> None:
        self.children.pop(child_id, None)

    def reconfigure(
        self, strategy: Strategy, intensity: int, period: float, auto_shutdown: AutoShutdown
    ) -> None:
        """New flags in place, as OTP's ``code_change``; the restart history is kept."""
        self.strategy = strategy
        self.intensity.intensity = intensity
        self.intensity.period = period
        self.auto_shutdown = auto_shutdown

    def reorder(self, order: Sequence[str]) -> None:
        """Start order becomes *order* (unknown ids skipped); children not in it follow."""
        children = self.children
        first = {i: children[i] for i in order if i in children}
        self.children = first | {i: r for i, r in children.items() if i not in first}

    # -- decisions ------------------------------------------------------------------------

    def exited(self, child_id: str, kind: ExitKind, now: float) -> Decision:
        """A child exited by itself (not stopped by the supervisor): what now?"""
        rec = self.children.get(child_id)
        if rec is None or rec.status not in _RUNS:
            return Ignore()
        rec.last_exit = kind
        if not should_restart(rec.spec.restart, kind):
            return self._forget(rec, kind)
        limit = rec.spec.max_restarts
        if limit is not None:
            period = rec.spec.max_restarts_period
            rec.exits = (*(t for t in rec.exits if t > now - period), now)
            if len(rec.exits) > limit:  # beyond OTP: this child alone is given up
                return self._forget(rec, kind, given_up=(len(rec.exits), period))
        backoff = rec.spec.backoff
        started = rec.started_at
        if backoff is not None and started is not None and now - started >= backoff.reset_after:
            rec.consecutive = 0  # it ran stably: the backoff starts over
        rec.consecutive += 1
        return self._schedule(rec, now)

    def start_failed(self, child_id: str, now: float) -> Delay:
        """A restart's start of this child failed: it waits and is attempted (and counted) again.

        The runtime reads its inbox before the next attempt, even with no delay.
        """
        rec = self.children[child_id]
        rec.last_exit = ExitKind.ERROR
        rec.consecutive += 1
        rec.status = ChildStatus.STARTING  # so that _schedule sees it as just exited
        decision = self._schedule(rec, now, defer=True)
        assert isinstance(decision, Delay)  # defer=True never attempts at once
        return decision

    def attempt(self, child_id: str, now: float) -> Attempted:
        """Attempt the due restart of *child_id*: record it, then plan it or give up."""
        rec = self.children.get(child_id)
        if rec is None or rec.status is not ChildStatus.BACKOFF:
            return Ignore()  # started by another restart, terminated or removed meanwhile
        if self.intensity.record(now):
            rec.status = (
                ChildStatus.FAILED if rec.last_exit is ExitKind.ERROR else (ChildStatus.STOPPED)
            )
            rec.due = None
            return GiveUp(
                child_id,
                len(self.intensity.history),
                self.intensity.intensity,
                self.intensity.period,
            )
        # As OTP's del_child before the restart: the child has no pending wait any more, so a
        # plan cut short by a start failure leaves it stopped (a later attempt, or the
        # operator, starts it), never waiting for a timer that is not set.
        rec.status = ChildStatus.FAILED if rec.last_exit is ExitKind.ERROR else ChildStatus.STOPPED
        rec.due = None
        order = tuple(self.children)
        group = affected(self.strategy, order, child_id)
        stop = tuple(
            c for c in reversed(group) if c != child_id and self.children[c].status in _ALIVE
        )
        removed = tuple(
            c
            for c in group
            if c != child_id and self.children[c].spec.restart is RestartType.TEMPORARY
        )
        for c in stop:
            self.children[c].status = ChildStatus.STOPPING  # RUNNING -> STOPPING
        # Removed children stay known until the runtime has stopped them and calls remove().
        # Beyond OTP: a child an operator stopped (held) stays stopped; OTP would start it.
        start = tuple(c for c in group if c not in removed and not self.children[c].held)
        return Restart(child_id, stop, start, removed)

    def terminate(self, child_id: str) -> bool:
        """``terminate_child``: returns whether the child is alive and must be stopped.

        A pending restart is cancelled. The runtime then calls ``stopped``, and ``remove``
        for a temporary child (OTP deletes a temporary child's spec when it is terminated).
        Never triggers auto_shutdown.
        """
        rec = self.get(child_id)
        if rec.status in _ALIVE:
            rec.status = ChildStatus.STOPPING  # RUNNING -> STOPPING
            return True
        if rec.status is ChildStatus.BACKOFF:
            self.stopped(child_id)  # BACKOFF -> STOPPED | FAILED: the wait ends at once
        return False

    def check_restart(self, child_id: str) -> None:
        """``restart_child`` preconditions: the child exists and is neither alive nor pending.

        An operator's restart is not counted in the intensity (as in OTP).
        """
        self._check_idle(child_id)

    def delete(self, child_id: str) -> None:
        """``delete_child``: forget a stopped child's spec."""
        self._check_idle(child_id)
        del self.children[child_id]

    def give_up_all(self) -> tuple[str, ...]:
        """The supervisor is shutting down: cancel pending restarts; return who to stop."""
        for rec in self.children.values():
            if rec.status is ChildStatus.BACKOFF:
                rec.status = (
                    ChildStatus.FAILED if rec.last_exit is ExitKind.ERROR else (ChildStatus.STOPPED)
                )
                rec.due = None
        alive = self.alive_in_stop_order()
        for c in alive:
            self.children[c].status = ChildStatus.STOPPING
        return alive

    # -- internals --------------------------------------------------------------------------

    def _check_idle(self, child_id: str) -> None:
        rec = self.get(child_id)
        if rec.status is ChildStatus.STOPPING:
            msg = (
                f"supervisor {self.name!r}: child {child_id!r} is running (stopping);"
                " try again once it has stopped"
            )
            raise RunningError(msg, supervisor=self.name, child_id=child_id)
        if rec.status in _ALIVE:
            msg = f"supervisor {self.name!r}: child {child_id!r} is running"
            raise RunningError(msg, supervisor=self.name, child_id=child_id)
        if rec.status is ChildStatus.BACKOFF:
            msg = f"supervisor {self.name!r}: child {child_id!r} is waiting to restart"
            raise RestartingError(msg, supervisor=self.name, child_id=child_id)

    def _schedule(self, rec: ChildRecord, now: float, *, defer: bool = False) -> Decision:
        backoff = rec.spec.backoff
        delay = 0.0 if backoff is None else backoff.delay(rec.consecutive, self.random())
        rec.status = ChildStatus.BACKOFF  # RUNNING | STARTING -> BACKOFF
        rec.started_at = None
        rec.due = now + delay
        if delay == 0 and not defer:
            return self.attempt(rec.spec.id, now)
        heapq.heappush(self._dues, (rec.due, rec.spec.id))
        return Delay(rec.spec.id, delay, rec.due)

    def _forget(
        self, rec: ChildRecord, kind: ExitKind, given_up: tuple[int, float] | None = None
    ) -> Forget:
        child_id = rec.spec.id
        removed = self.dynamic or rec.spec.restart is RestartType.TEMPORARY
        if removed:
            del self.children[child_id]
        else:
            failed = kind is ExitKind.ERROR or given_up is not None
            rec.status = (
                ChildStatus.FAILED if failed else ChildStatus.STOPPED
            )  # -> FAILED | STOPPED
            rec.started_at = None
            rec.exits = ()
        return Forget(child_id, removed, self._auto_shutdown_due(rec.spec), given_up)

    def _auto_shutdown_due(self, spec: ChildSpec) -> bool:
        """OTP's do_auto_shutdown, after the child was forgotten."""
        if self.auto_shutdown is AutoShutdown.NEVER or not spec.significant:
            return False
        if self.auto_shutdown is AutoShutdown.ANY_SIGNIFICANT:
            return True
        return not any(
            r.spec.significant and (r.status in _ALIVE or r.status is ChildStatus.BACKOFF)
            for r in self.children.values()
        )
