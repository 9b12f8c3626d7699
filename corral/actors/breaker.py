"""Circuit breakers that belong to a child's slot, not to one run of its code.

A breaker guards the calls an actor makes to one dependency (``async with
ctx.breaker("pricing"):``). Its state lives in the child's ``ActorCell``, beside the
mailbox, so it survives the actor's restarts: a crash does not close a breaker that its
dependency's failures opened, and a crash loop caused by the dependency is cut by the
breaker rather than by the supervisor giving up.

The state machine (``Breaker``) is a pure object: every method takes the time ``now`` and
nothing here sleeps or reads a clock, so the property tests drive it against a reference
model. The rules, which the README states for users:

* CLOSED lets every call through. It opens after ``failures`` failures in a row, or when
  the window of the last ``window`` calls holds at least ``min_calls`` calls and its share
  of failures reaches ``failure_rate`` (either rule that is set trips it).
* OPEN rejects every call at once (``BreakerOpenError``, with the time until the next
  trial). The k-th opening in a row (k = 1 after a close) lasts
  ``min(wait_cap, wait * wait_multiplier ** (k - 1))``, less a random fraction of up to
  ``jitter`` of it. The first call after that moves it to HALF_OPEN (as resilience4j does
  by default: nothing happens while nobody calls).
* HALF_OPEN lets ``trials`` calls through at once and rejects the others. ``trials``
  successes close it (the window and the run of failures start empty, the next opening is
  k = 1); one failure opens it again, for longer.
* A call's outcome counts toward the state it was let through in: one let through before a
  transition and ending after it is counted in the totals, but moves nothing.
* What counts: an exception that is an instance of ``failure_on`` (default: any
  ``Exception``) and not of ``ignore`` is a failure; one of ``ignore`` counts neither way
  (its trial place is freed); any other exception, and a return, is a success (the
  dependency answered; the error is the caller's). A call cancelled from outside counts
  neither way. A call longer than ``timeout`` is cancelled and raises
  ``BreakerTimeoutError`` (a ``TimeoutError``), which the same rule classifies.
* An operator may hold it open (``hold_open``: no trials until ``reset``) or ``reset`` it
  (CLOSED, window and run emptied). The totals are kept: they are counters.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import TYPE_CHECKING, Final, TypeVar, final

import anyio
import attrs

from corral.actors.checks import check_count, check_number
from corral.errors import BreakerOpenError, BreakerTimeoutError, SpecError, UnknownBreakerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

__all__ = (
    "FAILURE",
    "IGNORED",
    "SUCCESS",
    "Breaker",
    "BreakerSpec",
    "BreakerState",
    "BreakerStatistics",
    "Guard",
    "build_breakers",
    "find_breaker",
    "grown_delay",
)

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


def grown_delay(
    initial: float, cap: float, multiplier: float, jitter: float, attempt: int, sample: float
) -> float:
    """``min(cap, initial * multiplier ** (attempt - 1))`` less ``jitter * sample`` of it
    (*attempt* >= 1, *sample* uniform in [0, 1)): restart backoff and a breaker's wait."""
    try:
        grown = initial * multiplier ** (attempt - 1)
    except OverflowError:  # failing for hours: far past the cap anyway
        grown = math.inf
    base = min(cap, grown) if initial > 0 else 0.0
    return base * (1.0 - jitter * sample)


def _exception_types(value: object) -> tuple[object, ...]:
    """One exception class or several (checked in ``BreakerSpec.__attrs_post_init__``)."""
    if isinstance(value, tuple | list | frozenset | set):
        return tuple(value)
    return (value,)


@attrs.frozen
class BreakerSpec:
    """One breaker's thresholds (see the module's rules). At least one of ``failures`` and
    ``failure_rate`` must be set; the defaults open after 5 failures in a row, wait 5 s
    (growing to 60 s while it keeps failing), and close after one successful trial."""

    failures: int | None = 5
    failure_rate: float | None = None
    window: int = 20
    min_calls: int = 10
    wait: float = 5.0
    wait_cap: float = 60.0
    wait_multiplier: float = 2.0
    jitter: float = 0.1
    trials: int = 1
    timeout: float | None = None
    failure_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_exception_types
    )
    ignore: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)

    def __attrs_post_init__(self) -> None:
        if self.failures is None and self.failure_rate is None:
            msg = "a breaker needs failures or failure_rate (or both): what opens it"
            raise SpecError(msg)
        if self.failures is not None:
            check_count("breaker failures", self.failures)
        if self.failure_rate is not None:
            check_number("breaker failure_rate", self.failure_rate, low=0.0, high=1.0)
            if self.failure_rate == 0:
                msg = "breaker failure_rate must be > 0 (0 would open it on any call)"
                raise SpecError(msg)
        check_count("breaker window", self.window)
        check_count("breaker min_calls", self.min_calls)
        if self.min_calls > self.window:
            msg = f"breaker min_calls ({self.min_calls}) cannot exceed its window ({self.window})"
            raise SpecError(msg)
        check_number("breaker wait", self.wait, low=0.0)
        check_number("breaker wait_cap", self.wait_cap, low=0.0)
        if self.wait > self.wait_cap:
            msg = (
                f"breaker wait ({self.wait}) cannot exceed its wait_cap ({self.wait_cap}):"
                " raise wait_cap too"
            )
            raise SpecError(msg)
        check_number("breaker wait_multiplier", self.wait_multiplier, low=1.0)
        check_number("breaker jitter", self.jitter, low=0.0, high=1.0)
        check_count("breaker trials", self.trials)
        if self.timeout is not None:
            check_number("breaker timeout", self.timeout, low=0.0)
            if self.timeout == 0:
                msg = "breaker timeout must be > 0 seconds, or None for no timeout"
                raise SpecError(msg)
        for name in ("failure_on", "ignore"):
            for kind in getattr(self, name):
                if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                    msg = f"breaker {name} must hold exception classes, got {kind!r}"
                    raise SpecError(msg)

    def open_for(self, attempt: int, sample: float) -> float:
        """How long the *attempt*-th opening in a row lasts (*sample* uniform in [0, 1))."""
        return grown_delay(
            self.wait, self.wait_cap, self.wait_multiplier, self.jitter, attempt, sample
        )


@attrs.frozen
class BreakerStatistics:
    """A snapshot of one breaker, for ``status``, ``why``, ``corral breakers`` and metrics."""

    name: str
    state: BreakerState
    held: bool  # held open by an operator until reset
    consecutive: int  # failures in a row (closed)
    window_calls: int  # calls in the window (closed)
    window_failures: int
    succeeded: int  # totals over the breaker's life
    failed: int
    ignored: int
    rejected: int
    entered: tuple[tuple[BreakerState, int], ...]  # transitions, by the state entered
    changed_at: float  # monotonic: when it entered its state
    reopen_at: float  # monotonic: open, when its next trial may go through (inf: none)
    last_failure: BaseException | None


FAILURE: Final = "failure"
SUCCESS: Final = "success"
IGNORED: Final = "ignored"


@final
class Breaker:
    """One breaker's state, kept by a child's cell across its incarnations (pure: each
    method takes ``now``). ``admit`` lets a call through or raises; ``record`` takes its
    outcome, with the ticket ``admit`` gave."""

    __slots__ = (
        "_window",
        "attempt",
        "changed_at",
        "consecutive",
        "entered",
        "failed",
        "held",
        "ignored",
        "in_trial",
        "last_failure",
        "listener",
        "name",
        "path",
        "random",
        "rejected",
        "reopen_at",
        "spec",
        "state",
        "succeeded",
        "ticket",
        "trial_successes",
        "window_failures",
    )

    def __init__(
        self, path: str, name: str, spec: BreakerSpec, random: Callable[[], float], now: float
    ) -> None:
        self.path = path
        self.name = name
        self.spec = spec
        self.random = random  # the jitter's sample, uniform in [0, 1)
        self.state = BreakerState.CLOSED
        self.ticket = 0  # one per state entered: an outcome moves the state it was let in by
        self.changed_at = now
        self.consecutive = 0  # failures in a row (closed)
        self._window: deque[bool] = deque(maxlen=spec.window)  # True: a failure (closed)
        self.window_failures = 0
        self.attempt = 0  # openings in a row since the last close
        self.reopen_at = math.inf  # open: when the first trial may go through
        self.held = False  # held open by an operator until reset
        self.in_trial = 0  # half-open: trial calls under way
        self.trial_successes = 0
        self.succeeded = 0  # totals, kept for the breaker's life
        self.failed = 0
        self.ignored = 0
        self.rejected = 0
        self.entered = dict.fromkeys(BreakerState, 0)  # transitions, by the state entered
        self.last_failure: BaseException | None = None
        # Told of each transition: (breaker, old state, why).
        self.listener: Callable[[Breaker, BreakerState, str], None] | None = None

    # -- calls -------------------------------------------------------------------------------

    def admit(self, now: float | None = None) -> int:
        """Let a call through (its ticket) or raise ``BreakerOpenError``. *now*: the time,
        read from the loop's clock when not given (only when needed: never while closed)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return self.ticket
        if now is None:
            now = anyio.current_time()
        if state is BreakerState.OPEN:
            if self.held or now < self.reopen_at:
                self.rejected += 1
                raise self._open_error(now)
            self._enter(BreakerState.HALF_OPEN, now, "its wait is over: trial calls go through")
        if self.in_trial >= self.spec.trials:
            self.rejected += 1
            raise self._open_error(now)
        self.in_trial += 1
        return self.ticket

    def record(
        self, ticket: int, outcome: str, error: BaseException | None, now: float | None = None
    ) -> None:
        """The outcome of a call let through with *ticket*: ``SUCCESS``, ``FAILURE`` or
        ``IGNORED`` (see ``classify``); *error* is a failure's exception. *now*: as for
        ``admit`` (read only for a change of state)."""
        if outcome is SUCCESS and ticket == self.ticket and self.state is BreakerState.CLOSED:
            self.succeeded += 1  # the common case, first and short
            self.consecutive = 0
            window = self._window
            if window and len(window) == window.maxlen and window[0]:
                self.window_failures -= 1
            window.append(False)
            return
        if outcome == SUCCESS:
            self.succeeded += 1
        elif outcome == FAILURE:
            self.failed += 1
            self.last_failure = error
        else:
            self.ignored += 1
        if ticket != self.ticket:
            return  # let through in a state since left: counted, moves nothing
        if self.state is BreakerState.HALF_OPEN:
            self.in_trial -= 1
            if outcome == FAILURE:
                self._open(now, f"a trial call failed: {_describe(error)}")
            elif outcome == SUCCESS:
                self.trial_successes += 1
                if self.trial_successes >= self.spec.trials:
                    self._close(now, f"{_count(self.trial_successes, 'trial call')} succeeded")
            return
        if self.state is not BreakerState.CLOSED or outcome == IGNORED:
            return
        failed = outcome == FAILURE
        self.consecutive = self.consecutive + 1 if failed else 0
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self.window_failures -= 1
        window.append(failed)
        self.window_failures += failed
        if not failed:
            return
        spec = self.spec
        if spec.failures is not None and self.consecutive >= spec.failures:
            self._open(
                now, f"{_count(self.consecutive, 'failure')} in a row, last: {_describe(error)}"
            )
        elif (
            spec.failure_rate is not None
            and len(window) >= spec.min_calls
            and self.window_failures / len(window) >= spec.failure_rate
        ):
            self._open(
                now,
                f"{self.window_failures} of the last {len(window)} calls failed"
                f" (limit {spec.failure_rate:.0%}), last: {_describe(error)}",
            )

    def classify(self, error: BaseException | None) -> str:
        """``SUCCESS``, ``FAILURE`` or ``IGNORED`` for a call that ended with *error*."""
        if error is None:
            return SUCCESS
        if not isinstance(error, Exception):
            return IGNORED  # cancelled (or the process ending): neither way
        spec = self.spec
        if isinstance(error, spec.ignore):
            return IGNORED
        if isinstance(error, spec.failure_on):
            return FAILURE
        return SUCCESS

    def retry_in(self, now: float) -> float:
        """Seconds until a call may go through (0 when one may now; inf when held open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        if self.held:
            return math.inf
        return max(0.0, self.reopen_at - now)

    def snapshot(self) -> BreakerStatistics:
        return BreakerStatistics(
            name=self.name,
            state=self.state,
            held=self.held,
            consecutive=self.consecutive,
            window_calls=len(self._window),
            window_failures=self.window_failures,
            succeeded=self.succeeded,
            failed=self.failed,
            ignored=self.ignored,
            rejected=self.rejected,
            entered=tuple(self.entered.items()),
            changed_at=self.changed_at,
            reopen_at=self.reopen_at,
            last_failure=self.last_failure,
        )

    # -- operators and reloads -----------------------------------------------------------

    def hold_open(self, now: float, why: str) -> None:
        """Open it and keep it open (no trials) until ``reset``."""
        self.held = True
        self.reopen_at = math.inf
        if self.state is not BreakerState.OPEN:
            self._enter(BreakerState.OPEN, now, why)

    def reset(self, now: float, why: str) -> None:
        """Close it with an empty window and run (an operator's reset)."""
        self.held = False
        if self.state is BreakerState.CLOSED:
            self._clear()
            return
        self._close(now, why)

    def retune(self, spec: BreakerSpec) -> None:
        """New thresholds from a reload: the state, run and totals are kept; the window keeps
        its most recent calls, as many as the new one holds. They apply from the next call
        (an opening's wait already drawn is kept)."""
        if spec.window != self.spec.window:
            recent = list(self._window)[-spec.window :]
            self._window = deque(recent, maxlen=spec.window)
            self.window_failures = sum(recent)
        self.spec = spec

    # -- transitions ---------------------------------------------------------------------

    def _open(self, now: float | None, why: str) -> None:
        if now is None:
            now = anyio.current_time()
        self.attempt += 1
        self._enter(
            BreakerState.OPEN, now, why, now + self.spec.open_for(self.attempt, self.random())
        )

    def _close(self, now: float | None, why: str) -> None:
        self.attempt = 0
        self._clear()
        self._enter(BreakerState.CLOSED, now, why)

    def _clear(self) -> None:
        self.consecutive = 0
        self._window.clear()
        self.window_failures = 0

    def _enter(
        self, state: BreakerState, now: float | None, why: str, reopen_at: float = math.inf
    ) -> None:
        if now is None:
            now = anyio.current_time()
        old = self.state
        self.state = state
        self.ticket += 1
        self.changed_at = now
        self.entered[state] += 1
        self.in_trial = 0
        self.trial_successes = 0
        self.reopen_at = reopen_at
        listener = self.listener
        if listener is not None:
            listener(self, old, why)

    def _open_error(self, now: float) -> BreakerOpenError:
        retry_in = self.retry_in(now)
        if self.held:
            when = "held open by an operator (`corral breaker reset` closes it)"
        elif self.state is BreakerState.HALF_OPEN:
            when = f"half-open: its {_count(self.spec.trials, 'trial call')} under way"
        else:
            when = f"open: next trial in {retry_in:.3f} s"
        msg = f"breaker {self.name!r} of {self.path} is {when}"
        return BreakerOpenError(
            msg, path=self.path, breaker=self.name, state=self.state.value, retry_in=retry_in
        )


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _describe(error: BaseException | None) -> str:
    if error is None:  # pragma: no cover  # a failure always has its exception
        return "?"
    text = str(error)
    name = type(error).__qualname__
    return f"{name}: {text[:200]}" if text else name


def find_breaker(
    breakers: dict[str, Breaker] | None, path: str, name: str, *, who: str, hint: str = ""
) -> Breaker:
    """The breaker *name* of the child at *path* (its *breakers*), or ``UnknownBreakerError``
    saying which it has: "*who* has no breaker ... (declared: ...)*hint*"."""
    found = breakers.get(name) if breakers else None
    if found is None:
        declared = ", ".join(sorted(breakers)) if breakers else "none"
        msg = f"{who} has no breaker {name!r} (declared: {declared}){hint}"
        raise UnknownBreakerError(msg, path=path, breaker=name)
    return found


def build_breakers(
    path: str,
    specs: Mapping[str, BreakerSpec],
    random: Callable[[], float],
    now: float,
    previous: dict[str, Breaker] | None = None,
) -> dict[str, Breaker] | None:
    """A child's breakers for *specs*: those *previous* already has keep their state and take
    the new thresholds; new ones start closed. None when it has none."""
    if not specs:
        return None
    breakers: dict[str, Breaker] = {}
    for name, spec in specs.items():
        breaker = previous.get(name) if previous else None
        if breaker is None:
            breaker = Breaker(path, name, spec, random, now)
        else:
            breaker.retune(spec)
        breakers[name] = breaker
    return breakers


@final
class Guard:
    """One call through a breaker: ``async with ctx.breaker("pricing"): ...``.

    Entering raises ``BreakerOpenError`` at once if the breaker does not let the call
    through; leaving records how the block ended. With the breaker's ``timeout``, a block
    running longer is cancelled and raises ``BreakerTimeoutError``.
    """

    __slots__ = ("_breaker", "_scope", "_ticket")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._ticket = -1
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> Guard:
        if self._ticket != -1:
            msg = "a Guard serves one call at a time: take ctx.breaker(name) for each call"
            raise RuntimeError(msg)
        breaker = self._breaker
        self._ticket = breaker.admit()
        timeout = breaker.spec.timeout
        if timeout is not None:
            scope = self._scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
            scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        ticket, self._ticket = self._ticket, -1
        scope = self._scope
        if scope is not None:
            self._scope = None
            try:
                scope.__exit__(exc_type, exc, tb)
            except BaseException as left:  # what the scope did not absorb (trio: a group)
                breaker.record(ticket, breaker.classify(left), left)
                raise
            if scope.cancelled_caught:
                timeout = breaker.spec.timeout
                error = BreakerTimeoutError(
                    f"a call through breaker {breaker.name!r} of {breaker.path} took longer"
                    f" than its timeout ({timeout} s)",
                    path=breaker.path,
                    breaker=breaker.name,
                )
                breaker.record(ticket, breaker.classify(error), error)
                raise error from None
        breaker.record(ticket, SUCCESS if exc is None else breaker.classify(exc), exc)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """``await fn(*args)`` through the breaker."""
        async with self:
            return await fn(*args)
