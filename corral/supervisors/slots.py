"""A supervisor's state, and what it keeps per child: the base of ``Supervisor``.

``Supervisor`` is built in layers, each a module with one concern, each above the last:
this state (``slots``), one child's start and stop (``children``), the requests that reach
it through its inbox (``requests``), and its life: boot, loop, restarts (``supervisor``).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio

from corral.actors.mailbox import Mailbox, Overflow
from corral.supervisors.core import (
    ChildStatus,
    SupervisorCore,
)
from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    ChildSpec,
    DynamicSupervisorSpec,
    ExitKind,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio.abc

    from corral.actors.actor import Actor, ActorCell, Call, Spawn
    from corral.actors.waiter import Waiter
    from corral.errors import (
        SupervisorGaveUpError,
    )
    from corral.supervisors.runners import Runners, RunnerScope
    from corral.supervisors.services import TreeServices
    from corral.supervisors.statistics import SupervisorStatistics


__all__ = (
    "ABANDON_GRACE",
    "LATER",
    "RELOAD_AGAIN",
    "SLOT_FREE",
    "STARTABLE",
    "STOP",
    "ChildSupervisor",
    "Countdown",
    "Exited",
    "Outcome",
    "Slot",
    "StartFailure",
    "Stop",
    "StopDuringStart",
    "SupervisorState",
    "cleanup_timeout",
)

ABANDON_GRACE: Final = 0.05
"""Seconds past a child's shutdown timeout for its cut-off cleanup to unwind before it is
declared abandoned."""


class Outcome(enum.Enum):
    """How a supervisor's run ended."""

    STOPPED = "stopped"  # asked to stop by its parent or the tree
    GAVE_UP = "gave-up"  # restart intensity exceeded: exits SHUTDOWN to its parent
    AUTO_SHUTDOWN = "auto-shutdown"  # a significant child's exit: exits SHUTDOWN


# -- inbox messages ----------------------------------------------------------------------


@final
class Exited:
    __slots__ = ("child_id", "exception", "incarnation", "kind")

    def __init__(
        self, child_id: str, incarnation: int, kind: ExitKind, exception: BaseException | None
    ) -> None:
        self.child_id = child_id
        self.incarnation = incarnation
        self.kind = kind
        self.exception = exception


@final
class Stop:
    __slots__ = ()


STOP: Final = Stop()

STARTABLE: Final = frozenset({ChildStatus.STOPPED, ChildStatus.FAILED})

RELOAD_AGAIN: Final = frozenset({ChildStatus.BACKOFF, ChildStatus.FAILED})

LATER: Final = object()  # an op's answer comes later, from the task carrying it out

SLOT_FREE: Final = object()  # a dynamic child was removed: serve who waits for a slot


class StopDuringStart(Exception):  # internal signal, never escapes run()
    """A stop request arrived while the supervisor waited for a child's readiness."""


class StartFailure(Exception):  # internal signal between _start and its callers
    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


@final
class Slot:
    """The runtime side of one child: its current task and what lasts across incarnations.

    A worker's runner task outlives a crash: it reports the exit, parks, and runs the next
    incarnation in place when the supervisor restarts the child (``go``), so a one-for-one
    restart spawns nothing. A stop ends the runner; the next start spawns a new one.
    """

    __slots__ = (
        "alive",
        "cell",
        "done",
        "dormant",
        "go",
        "incarnation",
        "keep",
        "last_exception",
        "parked",
        "path",
        "quiet",
        "run_id",
        "spec",
        "stopping",
        "sub",
        "task",
    )

    def __init__(self, spec: ChildSpec, path: str, cell: ActorCell | None) -> None:
        self.spec = spec
        self.path = path
        self.cell = cell
        self.task: RunnerScope | None = None  # the runner's: cancel() stops it
        self.sub: ChildSupervisor | None = None
        self.incarnation = 0
        self.run_id = 0  # which runner task is the slot's; older ones leave it alone
        self.alive = False  # a runner task is the slot's (running an incarnation or parked)
        self.parked: Waiter | None = None  # the runner waits here between incarnations
        self.go: tuple[Actor | Callable[..., object], Call | None] | None = None
        self.stopping = 0  # the incarnation being stopped by the supervisor, or 0
        self.done: Waiter | Countdown | None = None
        self.quiet = False  # a class actor without on_stop: stopping it runs no user code
        self.keep = False  # its quiet stop is a restart's: the runner parks for the next one
        self.dormant: Actor | None = None  # started, but its task waits for a first message
        self.last_exception: BaseException | None = None


@final
class Countdown:
    """Wakes one waiter once ``count`` runners have finished (a batch of quiet stops)."""

    __slots__ = ("count", "waiter")

    def __init__(self, count: int, waiter: Waiter) -> None:
        self.count = count
        self.waiter = waiter

    def wake(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.waiter.wake()


def cleanup_timeout(spec: ChildSpec) -> float | None:
    """How long ``on_stop`` may take: the shutdown timeout; None (not run) when brutal."""
    if spec.shutdown == BRUTAL:
        return None
    if spec.shutdown == INFINITY:
        return math.inf
    assert isinstance(spec.shutdown, float | int)
    return float(spec.shutdown)


class ChildSupervisor(Protocol):
    """What a supervisor needs of a supervisor child (a ``Supervisor``, a layer above)."""

    path: str
    gave_up: SupervisorGaveUpError | None

    async def run(
        self, on_ready: Callable[[], None], on_stopped: Callable[[], None] = ...
    ) -> Outcome: ...

    def request_stop(self, deadline: float = math.inf) -> None: ...

    def limit(self, deadline: float) -> None: ...

    def statistics(self) -> SupervisorStatistics: ...


class SupervisorState:
    """One running supervisor's state (one incarnation); its behaviour is in the layers above."""

    __slots__ = (
        "_bus",
        "_done",
        "_dynamic_seq",
        "_in_flight",
        "_killed",
        "_new_waiter",
        "_runners",
        "_services",
        "_shield",
        "_slot_waiters",
        "_spawn_task",
        "_starting",
        "_stop_requested",
        "_tg",
        "_waiting_on",
        "core",
        "gave_up",
        "inbox",
        "max_children",
        "parent",
        "path",
        "slots",
        "spec",
        "stop_deadline",
    )

    # ctx.start_soon: one bound method for all its actors (set by the layer that has it)
    _spawn_task: Spawn

    def __init__(
        self,
        spec: SupervisorSpec | DynamicSupervisorSpec,
        path: str,
        services: TreeServices,
        parent: str | None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.parent = parent
        self._services = services
        self._bus = services.bus
        self._new_waiter = services.new_waiter
        self._tg: anyio.abc.TaskGroup | None = None
        self._runners: Runners | None = None
        self._shield: anyio.CancelScope | None = None
        self._starting: Call | None = None  # the readiness awaited right now, if any
        self._waiting_on: str | None = None  # the child whose start or stop it awaits now
        # start_child requests waiting for a free slot (max_children), first come first served
        self._slot_waiters: deque[Call] = deque()
        self._stop_requested = False
        self._done = False  # the loop has ended: requests get an error, not an answer
        self.inbox = Mailbox(2**62, Overflow.REJECT, services.new_waiter)
        self.slots: dict[str, Slot] = {}
        self.gave_up: SupervisorGaveUpError | None = None  # why it gave up, once it has
        self.stop_deadline = math.inf
        self._dynamic_seq = 0
        # Rare, so kept here rather than on every slot: a kill's crash for its runner to
        # report, and terminate_child stops under way (set when each ends).
        self._killed: dict[Slot, Exception] = {}
        self._in_flight: dict[Slot, anyio.Event] = {}
        if isinstance(spec, DynamicSupervisorSpec):
            self.max_children = spec.max_children
            self.core = SupervisorCore.create(
                path,
                intensity=spec.intensity,
                period=spec.period,
                random=services.random,
                dynamic=True,
            )
        else:
            self.max_children = None
            self.core = SupervisorCore.create(
                path,
                strategy=spec.strategy,
                intensity=spec.intensity,
                period=spec.period,
                auto_shutdown=spec.auto_shutdown,
                random=services.random,
            )
