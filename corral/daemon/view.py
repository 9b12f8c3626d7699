"""Snapshots and events of a running tree, as the protocol's messages.

Monotonic times become what a person can use: ages (``uptime``, ``next_restart_in``) and
Unix times (``at``), converted with one clock pair read per call.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import TYPE_CHECKING, Any, Final

import anyio

from corral.actors.actor import Ignore
from corral.actors.breaker import BreakerState
from corral.actors.registry import join_path
from corral.daemon import protocol
from corral.errors import UnknownPathError
from corral.supervisors.events import (
    BreakerChanged,
    ChildAbandoned,
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    Event,
    MessageDeadLettered,
    RestartScheduled,
    StartFailed,
    SupervisorAutoShutdown,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.spec import ExitKind

if TYPE_CHECKING:
    from collections.abc import Collection

    from corral.actors.breaker import BreakerStatistics
    from corral.actors.deadletter import DeadLetter
    from corral.supervisors.statistics import ChildStatistics, SupervisorStatistics
    from corral.supervisors.tree import Tree

__all__ = (
    "Clock",
    "breaker",
    "breakers",
    "dead_letter",
    "event",
    "find",
    "parent_path",
    "status",
    "why",
)

_MAX_REPR = 500
_MESSAGE = 200  # a dead letter's message, in an event or a log line


class Clock:
    """Monotonic seconds to Unix time and ages, from one reading of both clocks."""

    __slots__ = ("now", "offset")

    def __init__(self, now: float | None = None, wall: float | None = None) -> None:
        """Read both clocks now (on the event loop), or take a reading made earlier: *now*
        in the loop's monotonic time, *wall* in Unix time, at the same moment."""
        self.now = anyio.current_time() if now is None else now
        self.offset = (time.time() if wall is None else wall) - self.now

    def wall(self, monotonic: float) -> float:
        return round(monotonic + self.offset, 6)

    def age(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else round(self.now - monotonic, 3)

    def until(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else round(max(0.0, monotonic - self.now), 3)


def short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def parent_path(path: str) -> str:
    parent = path.rsplit("/", 1)[0]
    return parent or "/"


def normalize(path: str) -> str:
    """``group/leader/`` and ``/group//leader`` are ``/group/leader``."""
    return "/" + "/".join(p for p in path.split("/") if p)


def find(tree: Tree, path: str) -> tuple[SupervisorStatistics, ChildStatistics | None]:
    """The supervisor's snapshot and the child at *path* (None for the root).

    Raises:
        UnknownPathError: nothing at *path*; the message says which part is missing.
    """
    path = normalize(path)
    if path == "/":
        return tree.statistics(), None
    parent = parent_path(path)
    try:
        stats = tree.supervisor(parent).statistics()
    except UnknownPathError:  # not running, not a supervisor, or stopping: walk down to see
        stats = _walk(tree, parent)
    for child in stats.children:
        if child.path == path:
            return stats, child
    msg = f"supervisor {parent!r} has no child {path.rsplit('/', 1)[1]!r}"
    raise UnknownPathError(msg, path=path)


def _walk(tree: Tree, path: str) -> SupervisorStatistics:
    """The snapshot of the supervisor at *path*, found from the root's."""
    stats = tree.statistics()
    for child_id in [p for p in path.split("/") if p]:
        found = next((c for c in stats.children if c.id == child_id), None)
        if found is None:
            msg = f"supervisor {stats.path!r} has no child {child_id!r}"
            raise UnknownPathError(msg, path=path)
        if found.type.value == "worker":
            msg = f"{found.path} is a worker: it has no children"
            raise UnknownPathError(msg, path=path)
        if found.supervisor is None:
            msg = (
                f"supervisor {found.path} is {found.state.value}, so its children are not"
                f" running (`corral start {found.path}`)"
            )
            raise UnknownPathError(msg, path=path)
        stats = found.supervisor
    return stats


def status(
    tree: Tree,
    path: str = "/",
    *,
    stopping: bool = False,
    snapshot: SupervisorStatistics | None = None,
) -> protocol.StatusNode:
    """The node at *path* and everything below it (the root is ``stopping`` if so); for the
    root, from *snapshot* when the caller has taken the tree's already."""
    clock = Clock()
    held = tree.held
    stats, child = (snapshot, None) if snapshot is not None else find(tree, path)
    if child is None:
        return protocol.StatusNode(
            path="/",
            type="supervisor",
            state="stopping" if stopping else "running",
            restarts=0,
            held=False,
            **_supervisor_fields(stats, clock, held),
        )
    return _child_node(child, clock, held)


def _supervisor_fields(
    stats: SupervisorStatistics, clock: Clock, held: Collection[str]
) -> dict[str, Any]:
    return {
        "strategy": "one-for-one (dynamic)" if stats.dynamic else stats.strategy.value,
        "intensity": stats.intensity,
        "period": stats.period,
        "restarts_remaining": stats.restarts_remaining,
        "dynamic": stats.dynamic,
        "children": [_child_node(c, clock, held) for c in stats.children],
    }


def _child_node(child: ChildStatistics, clock: Clock, held: Collection[str]) -> protocol.StatusNode:
    extra = {} if child.supervisor is None else _supervisor_fields(child.supervisor, clock, held)
    exit_error, start_error = _errors(child)
    if child.supervisor is None and child.type.value == "supervisor":
        extra = {"children": []}
    return protocol.StatusNode(
        path=child.path,
        type=child.type.value,
        state=child.state.value,
        restarts=child.restarts,
        uptime=clock.age(child.started_at),
        last_exit=None if child.last_exit is None else child.last_exit.value,
        last_error=None if exit_error is None else short_repr(exit_error),
        start_error=None if start_error is None else short_repr(start_error),
        next_restart_in=clock.until(child.next_restart_at),
        held=child.path in held,
        mailbox_depth=child.mailbox_depth,
        mailbox_capacity=child.mailbox_capacity,
        handled=child.handled,
        dead_letters=child.dead_letters,
        breakers=[breaker(child.path, b, clock) for b in child.breakers] or None,
        **extra,
    )


def breaker(path: str, stats: BreakerStatistics, clock: Clock) -> protocol.BreakerInfo:
    open_ = stats.state is BreakerState.OPEN
    return protocol.BreakerInfo(
        path=path,
        name=stats.name,
        state=stats.state.value,
        held=stats.held,
        since=clock.age(stats.changed_at) or 0.0,
        retry_in=clock.until(stats.reopen_at) if open_ and not stats.held else None,
        failures_in_a_row=stats.consecutive,
        window_calls=stats.window_calls,
        window_failures=stats.window_failures,
        succeeded=stats.succeeded,
        failed=stats.failed,
        rejected=stats.rejected,
        ignored=stats.ignored,
        last_failure=None if stats.last_failure is None else short_repr(stats.last_failure),
    )


def breakers(tree: Tree, path: str) -> list[protocol.BreakerInfo]:
    """The breakers of the actors at or below *path*, in tree order."""
    clock = Clock()
    stats, child = find(tree, path)
    found: list[protocol.BreakerInfo] = []
    pending = [child] if child is not None else list(stats.children)
    while pending:
        node = pending.pop(0)
        found.extend(breaker(node.path, b, clock) for b in node.breakers)
        if node.supervisor is not None:
            pending[:0] = node.supervisor.children
    return found


def _errors(child: ChildStatistics) -> tuple[BaseException | None, BaseException | None]:
    """The last exit's exception, and a failure to start that came after it (or None)."""
    exit_error = child.exits[-1].exception if child.exits else None
    last = child.last_exception
    return exit_error, (last if last is not None and last is not exit_error else None)


def why(tree: Tree, path: str) -> protocol.WhyResult:
    """Everything known about why the child at *path* is in its state."""
    clock = Clock()
    stats, child = find(tree, path)
    if child is None:
        msg = "the root supervisor has no exits to explain: ask about a child, e.g. /name"
        raise UnknownPathError(msg, path="/")
    _, start_error = _errors(child)
    declined = None
    if isinstance(start_error, Ignore):  # it declined: no failure
        declined, start_error = str(start_error) or "(no reason given)", None
    return protocol.WhyResult(
        path=child.path,
        state=child.state.value,
        restarts=child.restarts,
        held=child.path in tree.held,
        exits=[_exit(e, clock) for e in child.exits],
        next_restart_in=clock.until(child.next_restart_at),
        supervisor=stats.path,
        strategy=stats.strategy.value,
        intensity=stats.intensity,
        period=stats.period,
        restarts_remaining=stats.restarts_remaining,
        dead_letters=child.dead_letters,
        start_error=None if start_error is None else short_repr(start_error),
        start_traceback=None
        if start_error is None
        else "".join(traceback.format_exception(start_error)),
        declined=declined,
        health=None
        if child.probe_failure is None
        else f"failed probes in a row: {child.probe_failure[0]}, last: {child.probe_failure[1]}",
        breakers=[breaker(child.path, b, clock) for b in child.breakers],
    )


def _exit(exited: ChildExited, clock: Clock) -> protocol.ExitInfo:
    exc = exited.exception
    return protocol.ExitInfo(
        at=clock.wall(exited.at),
        kind=exited.kind.value,
        exception=None if exc is None else short_repr(exc),
        traceback=None if exc is None else "".join(traceback.format_exception(exc)),
        reason=str(exc) if exc is not None and exited.kind is ExitKind.SHUTDOWN else None,
    )


def dead_letter(letter: DeadLetter) -> protocol.DeadLetterInfo:
    return protocol.DeadLetterInfo(
        path=letter.path,
        reason=letter.reason,
        message=short_repr(letter.message),
        at=letter.wall_time,
        exception=None if letter.exception is None else short_repr(letter.exception),
    )


_NAMES: Final[dict[type[Event], str]] = {
    ChildStarted: "child-started",
    ChildExited: "child-exited",
    ChildStopped: "child-stopped",
    ChildAbandoned: "child-abandoned",
    StartFailed: "start-failed",
    RestartScheduled: "restart-scheduled",
    SupervisorGaveUp: "supervisor-gave-up",
    SupervisorAutoShutdown: "supervisor-auto-shutdown",
    SupervisorEscalated: "supervisor-escalated",
    MessageDeadLettered: "dead-letter",
    BreakerChanged: "breaker-changed",
    ChildGivenUp: "child-given-up",
}


def event(ev: Event, clock: Clock | None = None) -> protocol.Event:
    """The event as a protocol message (and a log record's fields)."""
    clock = clock or Clock()
    fields: dict[str, Any] = {}
    match ev:
        case ChildExited(kind=kind):
            fields["exit"] = kind.value
        case ChildAbandoned(timeout=timeout):
            fields["delay"] = timeout
        case RestartScheduled(delay=delay):
            fields["delay"] = round(delay, 6)
        case SupervisorGaveUp():
            fields["reason"] = (
                f"{ev.restarts} restarts within {ev.period} s (limit {ev.intensity}),"
                f" last of {join_path(ev.path, ev.child)}"
            )
        case SupervisorAutoShutdown(child=child):
            fields["reason"] = f"significant child {join_path(ev.path, child)} exited"
        case SupervisorEscalated(parent=parent):
            fields["supervisor"] = parent
        case MessageDeadLettered(message=message):
            text = repr(message)
            fields["message"] = text if len(text) <= _MESSAGE else text[: _MESSAGE - 3] + "..."
        case ChildGivenUp():
            fields["reason"] = (
                f"{ev.restarts} exits within {ev.period} s (its max_restarts {ev.limit});"
                f" {ev.supervisor} goes on"
            )
        case BreakerChanged():
            fields["breaker"] = ev.breaker
            fields["state"] = ev.state
            if ev.state == "open" and math.isfinite(ev.retry_in):
                fields["delay"] = round(ev.retry_in, 6)
    supervisor = getattr(ev, "supervisor", None)
    exception = getattr(ev, "exception", None)
    return protocol.Event(
        event=_NAMES[type(ev)],
        path=ev.path,
        at=clock.wall(ev.at),
        supervisor=fields.pop("supervisor", supervisor),
        restarts=getattr(ev, "restarts", None),
        exception=None if exception is None else short_repr(exception),
        reason=fields.pop("reason", getattr(ev, "reason", None)),
        **fields,
    )
