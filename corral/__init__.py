"""corral: supervision trees for Python actors, OTP's semantics on anyio (asyncio and trio).

The embedding API::

    import corral

    class Echo(corral.Actor):
        async def handle(self, message: object) -> object:
            return message

    tree = corral.SupervisorSpec([corral.ChildSpec("echo", Echo)])

    async with corral.open_tree(tree) as running:
        assert await running.lookup("/echo").call("hi") == "hi"
"""

from __future__ import annotations

from corral.actors.actor import (
    DEFAULT_CALL_TIMEOUT,
    Actor,
    ActorRef,
    Context,
    Ignore,
    Reply,
    guarded,
    socket_messages,
)
from corral.actors.breaker import BreakerSpec, BreakerState, Guard
from corral.actors.deadletter import DeadLetter
from corral.actors.health import HealthSpec
from corral.actors.monitors import Down, Monitor
from corral.actors.timers import Timer
from corral.daemon.embedded import open_tree
from corral.errors import (
    ActorCrashedError,
    ActorNotRunningError,
    ActorRestartingError,
    AlreadyPresentError,
    AlreadyStartedError,
    BreakerError,
    BreakerOpenError,
    BreakerTimeoutError,
    CallTimeoutError,
    CorralError,
    HandleTimeoutError,
    MailboxFullError,
    MaxChildrenError,
    NoReplyError,
    NotFoundError,
    RestartingError,
    RunningError,
    SpecError,
    StartError,
    SupervisorGaveUpError,
    UnhealthyError,
    UnknownBreakerError,
    UnknownPathError,
    UnsupportedError,
)
from corral.supervisors.core import ChildInfo, ChildStatus, Counts
from corral.supervisors.events import (
    BreakerChanged,
    ChildAbandoned,
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    Event,
    EventBus,
    MessageDeadLettered,
    RestartScheduled,
    StartFailed,
    SupervisorAutoShutdown,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.levels import ServiceLevel, ServiceStatus
from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    ExitKind,
    MailboxSpec,
    Overflow,
    RestartType,
    Strategy,
    SupervisorSpec,
)
from corral.supervisors.statistics import ChildStatistics, SupervisorStatistics
from corral.supervisors.tree import SupervisorRef, Tree, run

__all__ = (
    "BRUTAL",
    "DEFAULT_CALL_TIMEOUT",
    "INFINITY",
    "Actor",
    "ActorCrashedError",
    "ActorNotRunningError",
    "ActorRef",
    "ActorRestartingError",
    "AlreadyPresentError",
    "AlreadyStartedError",
    "AutoShutdown",
    "Backoff",
    "BreakerChanged",
    "BreakerError",
    "BreakerOpenError",
    "BreakerSpec",
    "BreakerState",
    "BreakerTimeoutError",
    "CallTimeoutError",
    "ChildAbandoned",
    "ChildExited",
    "ChildGivenUp",
    "ChildInfo",
    "ChildSpec",
    "ChildStarted",
    "ChildStatistics",
    "ChildStatus",
    "ChildStopped",
    "ChildType",
    "Context",
    "CorralError",
    "Counts",
    "DeadLetter",
    "Down",
    "DynamicSupervisorSpec",
    "Event",
    "EventBus",
    "ExitKind",
    "Guard",
    "HandleTimeoutError",
    "HealthSpec",
    "Ignore",
    "MailboxFullError",
    "MailboxSpec",
    "MaxChildrenError",
    "MessageDeadLettered",
    "Monitor",
    "NoReplyError",
    "NotFoundError",
    "Overflow",
    "Reply",
    "RestartScheduled",
    "RestartType",
    "RestartingError",
    "RunningError",
    "ServiceLevel",
    "ServiceStatus",
    "SpecError",
    "StartError",
    "StartFailed",
    "Strategy",
    "SupervisorAutoShutdown",
    "SupervisorEscalated",
    "SupervisorGaveUp",
    "SupervisorGaveUpError",
    "SupervisorRef",
    "SupervisorSpec",
    "SupervisorStatistics",
    "Timer",
    "Tree",
    "UnhealthyError",
    "UnknownBreakerError",
    "UnknownPathError",
    "UnsupportedError",
    "guarded",
    "open_tree",
    "run",
    "socket_messages",
)
