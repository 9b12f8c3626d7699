"""Child and supervisor specs: frozen values, validated when built (OTP's ``check_childspec``).

Vocabulary follows OTP: ``permanent``/``transient``/``temporary`` restart types, worker and
supervisor child types, ``intensity``/``period``, ``significant`` children and
``auto_shutdown``. Defaults are OTP's: intensity 1 within 5 s, shutdown 5 s for workers and
``infinity`` for supervisors.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

from corral.actors.actor import Actor
from corral.actors.breaker import BreakerSpec, grown_delay
from corral.actors.checks import check_bool, check_count
from corral.actors.health import HealthSpec
from corral.actors.mailbox import Overflow
from corral.errors import SpecError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable


__all__ = (
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


class Strategy(enum.Enum):
    """Which siblings restart with a failed child."""

    ONE_FOR_ONE = "one-for-one"  # only the child that exited
    ONE_FOR_ALL = "one-for-all"  # every child
    REST_FOR_ONE = "rest-for-one"  # the child and those started after it


class RestartType(enum.Enum):
    """When a child that exited is restarted (OTP's table, see ``plan.should_restart``)."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never; its spec is forgotten when it exits


class ChildType(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class AutoShutdown(enum.Enum):
    """When a supervisor shuts itself down after significant children exit (OTP 24+)."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any-significant"
    ALL_SIGNIFICANT = "all-significant"


class ExitKind(enum.Enum):
    """How a child ended, as far as restart decisions go (OTP's exit reasons, classified)."""

    NORMAL = "normal"  # returned
    SHUTDOWN = "shutdown"  # a supervisor that gave up or auto-shut down (OTP: shutdown)
    ERROR = "error"  # raised an exception


BRUTAL: Literal["brutal"] = "brutal"
INFINITY: Literal["infinity"] = "infinity"
Shutdown: TypeAlias = float | Literal["brutal", "infinity"]
"""Seconds of graceful stop before the child is abandoned, ``"brutal"`` or ``"infinity"``."""

ChildStart: TypeAlias = (
    "type[Actor] | Callable[..., Awaitable[object]] | SupervisorSpec | DynamicSupervisorSpec"
)
"""What a child runs: an ``Actor`` subclass, an async function taking a ``Context``, or a
(dynamic) supervisor spec for a nested supervisor."""


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    """Specs are built from untyped input too (config files), so types are checked here."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        msg = f"{name} must be a finite number of seconds, got {value!r}"
        raise SpecError(msg)
    if value < 0 or (positive and value == 0):
        msg = f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}"
        raise SpecError(msg)


@attrs.frozen
class Backoff:
    """Restart delay policy for one child; corral's addition to OTP, off unless set.

    The n-th consecutive restart of a child (n = 1, 2, ...) waits
    ``min(cap, initial * multiplier ** (n - 1))`` seconds, reduced by a random fraction of
    up to ``jitter`` of it (so the cap is never exceeded and restarts of many children spread
    out). A child that ran for ``reset_after`` seconds before exiting starts again at n = 1.
    """

    initial: float = 0.1
    cap: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    reset_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        _check_seconds("backoff initial", self.initial)
        _check_seconds("backoff cap", self.cap)
        _check_seconds("backoff reset_after", self.reset_after)
        multiplier: object = self.multiplier
        if not (
            isinstance(multiplier, int | float)
            and not isinstance(multiplier, bool)
            and math.isfinite(multiplier)
            and multiplier >= 1
        ):
            msg = f"backoff multiplier must be a finite number >= 1, got {self.multiplier!r}"
            raise SpecError(msg)
        jitter: object = self.jitter
        if not (
            isinstance(jitter, int | float) and not isinstance(jitter, bool) and 0 <= jitter <= 1
        ):
            msg = f"backoff jitter must be within [0, 1], got {self.jitter!r}"
            raise SpecError(msg)

    def delay(self, attempt: int, sample: float) -> float:
        """Seconds to wait before restart number *attempt* (>= 1); *sample* is uniform in [0, 1)."""
        return grown_delay(self.initial, self.cap, self.multiplier, self.jitter, attempt, sample)


@attrs.frozen
class MailboxSpec:
    """A mailbox's capacity and what happens when it is full."""

    capacity: int = 1024
    overflow: Overflow = Overflow.BLOCK

    def __attrs_post_init__(self) -> None:
        capacity: object = self.capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            msg = f"mailbox capacity must be an integer, got {self.capacity!r}"
            raise SpecError(msg)
        if self.capacity < 1:
            msg = f"mailbox capacity must be >= 1, got {self.capacity}"
            raise SpecError(msg)


NO_BREAKERS: Final[Mapping[str, BreakerSpec]] = MappingProxyType({})


def _default_shutdown(spec: ChildSpec) -> Shutdown:
    return INFINITY if spec.type is ChildType.SUPERVISOR else 5.0


def _default_type(spec: ChildSpec) -> ChildType:
    is_sup = isinstance(spec.start, SupervisorSpec | DynamicSupervisorSpec)
    return ChildType.SUPERVISOR if is_sup else ChildType.WORKER


@attrs.frozen
class ChildSpec:
    """One child of a supervisor: what to run and how to restart and stop it.

    ``start`` is an ``Actor`` subclass (instantiated with ``args`` as keyword arguments), an
    async function called as ``fn(ctx, **args)``, or a ``SupervisorSpec`` or
    ``DynamicSupervisorSpec`` for a nested supervisor (``type`` then defaults to supervisor
    and ``shutdown`` to ``"infinity"``).
    """

    id: str
    start: ChildStart
    args: Mapping[str, object] = attrs.field(factory=dict)
    restart: RestartType = RestartType.PERMANENT
    type: ChildType = attrs.field(default=attrs.Factory(_default_type, takes_self=True))
    shutdown: Shutdown = attrs.field(default=attrs.Factory(_default_shutdown, takes_self=True))
    significant: bool = False
    backoff: Backoff | None = None
    mailbox: MailboxSpec = MailboxSpec()
    breakers: Mapping[str, BreakerSpec] = NO_BREAKERS  # one empty mapping for all specs
    essential: bool = True  # the tree's service level counts it (see supervisors/levels.py)
    health: HealthSpec | None = None  # probes of its Actor's health() (actors/health.py)
    handle_timeout: float | None = None  # seconds one message may take (Actor classes)
    # Beyond OTP (Akka's withMaxRestarts): more exits than this within max_restarts_period,
    # which its restart type would restart, and this child alone is given up (left failed).
    max_restarts: int | None = None
    max_restarts_period: float = 5.0
    # Beyond OTP (supervisord's startretries): a failed start at boot is tried this many more
    # times, after its backoff's delays, before the boot fails.
    start_retries: int = 0
    # Beyond OTP: stopped for good (not for a restart), an Actor class's child first handles
    # what is queued, as long as it has some and within its shutdown time.
    drain: bool = False

    def __attrs_post_init__(self) -> None:
        child_id: object = self.id
        if not isinstance(child_id, str) or not child_id or "/" in child_id:
            msg = f"child id must be a non-empty string without '/', got {self.id!r}"
            raise SpecError(msg)
        _check_enum(f"child {self.id!r}: restart", self.restart, RestartType)
        _check_enum(f"child {self.id!r}: type", self.type, ChildType)
        shutdown: object = self.shutdown
        if shutdown not in (BRUTAL, INFINITY):
            if isinstance(shutdown, str):
                msg = (
                    f"child {self.id!r}: shutdown must be seconds, 'brutal' or 'infinity',"
                    f" got {self.shutdown!r}"
                )
                raise SpecError(msg)
            _check_seconds(f"child {self.id!r}: shutdown", shutdown)
        check_bool(f"child {self.id!r}: significant", self.significant)
        is_sup = isinstance(self.start, SupervisorSpec | DynamicSupervisorSpec)
        if is_sup != (self.type is ChildType.SUPERVISOR):
            msg = f"child {self.id!r}: type {self.type.value} does not match what it starts"
            raise SpecError(msg)
        start: object = self.start
        if not is_sup and not callable(start):
            msg = f"child {self.id!r}: start must be an Actor class, an async function or a spec"
            raise SpecError(msg)
        self._check_breakers(is_sup)
        check_bool(f"child {self.id!r}: essential", self.essential)
        self._check_actor_options(start)
        if self.max_restarts is not None:
            check_count(f"child {self.id!r}: max_restarts", self.max_restarts, low=0)
        _check_seconds(
            f"child {self.id!r}: max_restarts_period", self.max_restarts_period, positive=True
        )
        check_bool(f"child {self.id!r}: drain", self.drain)
        if self.drain and not (isinstance(start, type) and issubclass(start, Actor)):
            msg = (
                f"child {self.id!r}: drain applies to an Actor class (a function actor"
                " receives its messages itself)"
            )
            raise SpecError(msg)
        check_count(f"child {self.id!r}: start_retries", self.start_retries, low=0)

    def _check_actor_options(self, start: object) -> None:
        """health and handle_timeout: for an Actor class (health: one that defines it)."""
        is_class = isinstance(start, type) and issubclass(start, Actor)
        health: object = self.health
        if health is not None:
            if not isinstance(health, HealthSpec):
                msg = f"child {self.id!r}: health must be a HealthSpec, got {health!r}"
                raise SpecError(msg)
            if not is_class or start.health is Actor.health:  # type: ignore[attr-defined]  # an Actor class
                msg = (
                    f"child {self.id!r}: health probes an Actor's health() method, and"
                    f" {getattr(start, '__qualname__', start)!r} defines none"
                )
                raise SpecError(msg)
        if self.handle_timeout is not None:
            _check_seconds(f"child {self.id!r}: handle_timeout", self.handle_timeout, positive=True)
            if not is_class:
                msg = (
                    f"child {self.id!r}: handle_timeout applies to an Actor class (a function"
                    " actor has no handler to time)"
                )
                raise SpecError(msg)

    def _check_breakers(self, is_sup: bool) -> None:
        breakers: object = self.breakers
        if not isinstance(breakers, Mapping):
            msg = f"child {self.id!r}: breakers must be a dict of name -> BreakerSpec"
            raise SpecError(msg)
        if breakers and is_sup:
            msg = f"child {self.id!r}: a supervisor has no breakers (its actors declare theirs)"
            raise SpecError(msg)
        for name, breaker in breakers.items():
            if not isinstance(name, str) or not BREAKER_NAME.fullmatch(name):
                msg = (
                    f"child {self.id!r}: breaker name {name!r} must be 1-64 letters, digits,"
                    " '_', '-' or '.'"
                )
                raise SpecError(msg)
            if not isinstance(breaker, BreakerSpec):
                msg = f"child {self.id!r}: breaker {name!r} must be a BreakerSpec, got {breaker!r}"
                raise SpecError(msg)


BREAKER_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _check_enum(name: str, value: object, kind: type[enum.Enum]) -> None:
    if not isinstance(value, kind):
        msg = f"{name} must be {kind.__name__}.<member>, got {value!r}"
        raise SpecError(msg)


def _to_tuple(children: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    return tuple(children)


def _check_flags(intensity: object, period: object) -> None:
    check_count("intensity", intensity, low=0)
    _check_seconds("period", period, positive=True)


@attrs.frozen
class SupervisorSpec:
    """A supervisor: its children in start order, strategy and restart intensity."""

    children: tuple[ChildSpec, ...] = attrs.field(default=(), converter=_to_tuple)
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER

    def __attrs_post_init__(self) -> None:
        _check_flags(self.intensity, self.period)
        _check_enum("strategy", self.strategy, Strategy)
        _check_enum("auto_shutdown", self.auto_shutdown, AutoShutdown)
        seen: dict[str, int] = {}
        children: tuple[object, ...] = self.children
        for index, child in enumerate(children):
            if not isinstance(child, ChildSpec):
                msg = f"children[{index}] must be a ChildSpec, got {type(child).__name__}"
                raise SpecError(msg)
            if child.id in seen:
                msg = (
                    f"child id {child.id!r} is defined twice"
                    f" (children[{seen[child.id]}], children[{index}])"
                )
                raise SpecError(msg)
            seen[child.id] = index
            self.check_child(child)

    def check_child(self, child: ChildSpec) -> None:
        """Raise ``SpecError`` if *child* may not join this supervisor (OTP's
        validSignificant, in its order: the never rule first, then permanent)."""
        if child.significant and self.auto_shutdown is AutoShutdown.NEVER:
            # OTP: {bad_combination, [{auto_shutdown, never}, {significant, true}]}
            msg = f"child {child.id!r}: significant children need auto_shutdown other than never"
            raise SpecError(msg)
        if child.significant and child.restart is RestartType.PERMANENT:
            # OTP: {bad_combination, [{restart, permanent}, {significant, true}]}
            msg = f"child {child.id!r}: a significant child cannot be permanent"
            raise SpecError(msg)


@attrs.frozen
class DynamicSupervisorSpec:
    """A supervisor of many children started at run time from one template (OTP's
    simple_one_for_one, Elixir's DynamicSupervisor): one-for-one, stopped in parallel."""

    child: ChildSpec
    max_children: int | None = None
    intensity: int = 1
    period: float = 5.0

    def __attrs_post_init__(self) -> None:
        child: object = self.child
        if not isinstance(child, ChildSpec):
            msg = f"a dynamic supervisor's child must be a ChildSpec (its template), got {child!r}"
            raise SpecError(msg)
        _check_flags(self.intensity, self.period)
        max_children: object = self.max_children
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 0
        ):
            msg = f"max_children must be an integer >= 0 or None, got {self.max_children!r}"
            raise SpecError(msg)
        if self.child.significant:
            msg = "a dynamic supervisor's children cannot be significant"
            raise SpecError(msg)


def stop_bound(spec: ChildSpec | SupervisorSpec | DynamicSupervisorSpec) -> float:
    """The longest a stop of *spec* can take by its shutdown policies (``math.inf``: no bound).

    A supervisor stops its children one after another in reverse start order, so its bound is
    the sum of theirs; a dynamic supervisor stops its children in parallel, so one template's
    bound covers them all. A child's own ``shutdown`` caps the stop of what it runs, and
    ``brutal`` is 0, and ``drain`` doubles it (the queue, then the cleanup). This is what
    ``TimeoutStopSec=`` must cover.
    """
    if isinstance(spec, SupervisorSpec):
        return sum((stop_bound(child) for child in spec.children), 0.0)
    if isinstance(spec, DynamicSupervisorSpec):
        return stop_bound(spec.child)
    shutdown = spec.shutdown
    own = 0.0 if shutdown == BRUTAL else math.inf if shutdown == INFINITY else float(shutdown)
    if spec.drain:
        own *= 2  # its queue, then its cleanup: each within its shutdown time
    if isinstance(spec.start, SupervisorSpec | DynamicSupervisorSpec):
        return min(own, stop_bound(spec.start))
    return own
