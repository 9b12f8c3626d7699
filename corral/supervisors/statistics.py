"""Snapshots of a running supervisor and its children, for status, metrics and ``why``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from corral.actors.breaker import BreakerStatistics
    from corral.supervisors.core import ChildStatus
    from corral.supervisors.events import ChildExited
    from corral.supervisors.spec import ChildType, ExitKind, Strategy

__all__ = ("ChildStatistics", "SupervisorStatistics")


@attrs.frozen
class ChildStatistics:
    """A snapshot of one child, for status displays, metrics and ``why``."""

    path: str
    id: str
    type: ChildType
    state: ChildStatus
    restarts: int
    started_at: float | None  # monotonic
    next_restart_at: float | None  # monotonic, while in backoff
    last_exit: ExitKind | None
    last_exception: BaseException | None
    exits: tuple[ChildExited, ...]  # the most recent, oldest first
    mailbox_depth: int
    mailbox_capacity: int
    handled: int
    dead_letters: int
    supervisor: SupervisorStatistics | None  # for a supervisor child that is running
    breakers: tuple[BreakerStatistics, ...] = ()  # a worker's, in declaration order
    essential: bool = True  # as its spec says (its supervisors' may not be)
    fallbacks: tuple[tuple[str, int], ...] = ()  # callers' fallbacks used on it, by reason
    probe_failure: tuple[int, str] | None = None  # health probes failed in a row, the last


@attrs.frozen
class SupervisorStatistics:
    """A snapshot of a supervisor and, recursively, its children."""

    path: str
    strategy: Strategy
    intensity: int
    period: float
    restarts_remaining: int  # the intensity budget left now
    dynamic: bool
    children: tuple[ChildStatistics, ...]
