"""Lifecycle events: frozen values published to observers, the base of logs, metrics and the
control socket. Publishing costs nothing when nobody observes: emitters check ``bus.active``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias, final

import anyio
import attrs

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from corral.supervisors.spec import ExitKind

__all__ = (
    "BreakerChanged",
    "ChildAbandoned",
    "ChildExited",
    "ChildGivenUp",
    "ChildStarted",
    "ChildStopped",
    "Event",
    "EventBus",
    "MessageDeadLettered",
    "RestartScheduled",
    "StartFailed",
    "SupervisorAutoShutdown",
    "SupervisorEscalated",
    "SupervisorGaveUp",
)

logger = logging.getLogger("corral.events")


@attrs.frozen
class ChildStarted:
    """A child signalled readiness. ``restart``: this start is a restart (by its supervisor,
    a reload or ``corral restart``; not a first start, nor an operator's start of a stopped
    child); ``restarts`` counts them, this one included."""

    path: str
    supervisor: str
    restarts: int
    at: float
    restart: bool = False


@attrs.frozen
class ChildExited:
    """A child ended by itself: returned (NORMAL), raised (ERROR) or gave up (SHUTDOWN)."""

    path: str
    supervisor: str
    kind: ExitKind
    exception: BaseException | None
    at: float


@attrs.frozen
class ChildGivenUp:
    """Beyond OTP: the child exited more than its own ``max_restarts`` times within
    ``max_restarts_period``; it is not restarted (left failed; a dynamic supervisor's child
    is removed) and its supervisor goes on, its restart intensity untouched."""

    path: str
    supervisor: str
    restarts: int  # its exits within the period, this one included
    limit: int
    period: float
    at: float


@attrs.frozen
class ChildStopped:
    """The supervisor stopped a child (restart of a sibling, terminate_child, shutdown)."""

    path: str
    supervisor: str
    at: float


@attrs.frozen
class ChildAbandoned:
    """A child did not finish within its shutdown timeout; the supervisor went on without it.

    OTP kills such a child; Python cannot kill a task that shields itself or blocks, so it is
    left cancelled and this is reported (OTP's ``shutdown_error``).
    """

    path: str
    supervisor: str
    timeout: float
    at: float


@attrs.frozen
class StartFailed:
    """A child raised before signalling readiness (OTP's ``start_error``)."""

    path: str
    supervisor: str
    exception: BaseException
    at: float


@attrs.frozen
class RestartScheduled:
    """A restart will be attempted after ``delay`` seconds (0 without backoff)."""

    path: str
    supervisor: str
    delay: float
    at: float


@attrs.frozen
class SupervisorGaveUp:
    """More than ``intensity`` restarts within ``period``: the supervisor stops its children
    and exits with SHUTDOWN (OTP: ``reached_max_restart_intensity``)."""

    path: str
    child: str
    restarts: int
    intensity: int
    period: float
    at: float


@attrs.frozen
class SupervisorAutoShutdown:
    """A significant child's exit shut the supervisor down (auto_shutdown)."""

    path: str
    child: str
    at: float


@attrs.frozen
class SupervisorEscalated:
    """A supervisor's SHUTDOWN exit reached its parent (or, for the root, the tree's owner)."""

    path: str
    parent: str | None
    at: float


@attrs.frozen
class MessageDeadLettered:
    """A message was kept as a dead letter instead of being handled (*message*: it)."""

    path: str
    reason: str
    exception: BaseException | None
    at: float
    message: object = None


@attrs.frozen
class BreakerChanged:
    """One of an actor's circuit breakers changed state (``closed``, ``open``,
    ``half-open``): ``reason`` says why; ``retry_in`` is an opening's wait (seconds; ``inf``
    while held open by an operator), else 0."""

    path: str
    breaker: str
    state: str
    previous: str
    reason: str
    retry_in: float
    at: float


Event: TypeAlias = (
    ChildStarted
    | ChildExited
    | ChildStopped
    | ChildAbandoned
    | StartFailed
    | RestartScheduled
    | SupervisorGaveUp
    | SupervisorAutoShutdown
    | SupervisorEscalated
    | MessageDeadLettered
    | BreakerChanged
    | ChildGivenUp
)
Observer: TypeAlias = Callable[[Event], None]


@final
class EventBus:
    """Synchronous fan-out of events to observers; an observer's error is logged, not raised."""

    __slots__ = ("_observers", "active")

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()
        self.active = False  # any observer? emitters skip building events when not

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call *observer* with every event from now on; returns a function that unsubscribes."""
        self._observers = (*self._observers, observer)
        self.active = True

        def unsubscribe() -> None:
            self._observers = tuple(o for o in self._observers if o is not observer)
            self.active = bool(self._observers)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                logger.exception("event observer %r failed on %r", observer, event)

    @asynccontextmanager
    async def stream(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        """Events as an async stream while the context is open.

        A reader slower than the events loses the newest ones past *max_buffer*, never
        blocking the supervisors; that is logged once per stream (a reader that never reads
        would otherwise add a line to the log for every event).
        """
        send, receive = anyio.create_memory_object_stream[Event](max_buffer or math.inf)
        behind = False

        def forward(event: Event) -> None:
            nonlocal behind
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                if not behind:
                    behind = True
                    logger.warning(
                        "event stream reader is behind (%d events unread): dropping new"
                        " events for it, from %r on",
                        max_buffer,
                        event,
                    )

        unsubscribe = self.subscribe(forward)
        try:
            with receive:
                yield receive
        finally:
            unsubscribe()
            send.close()
