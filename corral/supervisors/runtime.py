"""The async shell: carries out the core's decisions on anyio (asyncio or trio).

A supervisor is one task that owns its state and reads its inbox: child exits, requests from
``SupervisorRef`` and stop requests arrive there as messages, so no locks guard anything.
Children run in the supervisor's task group; each task's handle is how it is cancelled.

Starting: a child is spawned with ``start_soon`` and the supervisor waits for its readiness (a
class actor without ``on_start`` is ready at once, so it costs no wait). Stopping follows the
child's shutdown policy: a number of seconds cancels it and lets ``on_stop`` / ``finally`` run,
shielded, for that long; past it (plus ``ABANDON_GRACE``) the child is abandoned and reported
(OTP would kill it; Python cannot kill a task that shields itself or blocks). ``"brutal"``
cancels without cleanup; ``"infinity"`` waits as long as it takes. A supervisor child is asked
to stop through its inbox and stops its own children in reverse order first.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
from collections import deque
from typing import TYPE_CHECKING, Final, final

import anyio
import attrs

from corral.actors.actor import Actor, ActorCell, Call, Context, current_path, run_actor
from corral.actors.actor import Ignore as IgnoreStart
from corral.actors.mailbox import Mailbox
from corral.actors.registry import join_path, within
from corral.errors import (
    ActorNotRunningError,
    AlreadyPresentError,
    AlreadyStartedError,
    MaxChildrenError,
    StartError,
    SupervisorGaveUpError,
    UnknownPathError,
    UnsupportedError,
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
from corral.supervisors.events import (
    ChildAbandoned,
    ChildExited,
    ChildStarted,
    ChildStopped,
    RestartScheduled,
    StartFailed,
    SupervisorAutoShutdown,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.reconfigure import declared_paths
from corral.supervisors.runners import open_runners
from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    ExitKind,
    Overflow,
    RestartType,
    Strategy,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping

    from corral.actors.waiter import Waiter
    from corral.supervisors.reconfigure import Reconfiguration
    from corral.supervisors.runners import Runners
    from corral.supervisors.tree import TreeServices

__all__ = (
    "ABANDON_GRACE",
    "ChildStatistics",
    "Outcome",
    "Supervisor",
    "SupervisorStatistics",
)

ABANDON_GRACE: Final = 0.05
"""Seconds past a child's shutdown timeout for its cut-off cleanup to unwind before it is
declared abandoned."""


class Outcome(enum.Enum):
    """How a supervisor's run ended."""

    STOPPED = "stopped"  # asked to stop by its parent or the tree
    GAVE_UP = "gave-up"  # restart intensity exceeded: exits SHUTDOWN to its parent
    AUTO_SHUTDOWN = "auto-shutdown"  # a significant child's exit: exits SHUTDOWN


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


# -- inbox messages ----------------------------------------------------------------------


@final
class _Exited:
    __slots__ = ("child_id", "exception", "incarnation", "kind")

    def __init__(
        self, child_id: str, incarnation: int, kind: ExitKind, exception: BaseException | None
    ) -> None:
        self.child_id = child_id
        self.incarnation = incarnation
        self.kind = kind
        self.exception = exception


@final
class _Stop:
    __slots__ = ()


_STOP: Final = _Stop()
_STARTABLE: Final = frozenset({ChildStatus.STOPPED, ChildStatus.FAILED})
_RELOAD_AGAIN: Final = frozenset({ChildStatus.BACKOFF, ChildStatus.FAILED})
_LATER: Final = object()  # an op's answer comes later, from the task carrying it out
_SLOT_FREE: Final = object()  # a dynamic child was removed: serve who waits for a slot


@attrs.frozen
class _Op:
    """A request from a SupervisorRef, answered through the Call that carries it."""

    name: str
    child_id: str = ""
    spec: ChildSpec | None = None
    # terminate_child: keep it stopped (an operator's stop); reload_stop: remove it;
    # restart_child: count the start as a restart
    hold: bool = False
    error: Exception | None = None  # kill_child: the crash to inject
    plan: Reconfiguration | None = None  # reconfigure
    wait: float = 0.0  # start_child: seconds to wait for a free slot (max_children)


class _StopDuringStart(Exception):  # internal signal, never escapes run()
    """A stop request arrived while the supervisor waited for a child's readiness."""


class _StartFailure(Exception):  # internal signal between _start and its callers
    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


@final
class _Slot:
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
        self.task: anyio.CancelScope | None = None  # the runner's: cancel() stops it
        self.sub: Supervisor | None = None
        self.incarnation = 0
        self.run_id = 0  # which runner task is the slot's; older ones leave it alone
        self.alive = False  # a runner task is the slot's (running an incarnation or parked)
        self.parked: Waiter | None = None  # the runner waits here between incarnations
        self.go: tuple[Actor | Callable[..., object], Call | None] | None = None
        self.stopping = 0  # the incarnation being stopped by the supervisor, or 0
        self.done: Waiter | _Countdown | None = None
        self.quiet = False  # a class actor without on_stop: stopping it runs no user code
        self.dormant: Actor | None = None  # started, but its task waits for a first message
        self.last_exception: BaseException | None = None


@final
class _Countdown:
    """Wakes one waiter once ``count`` runners have finished (a batch of quiet stops)."""

    __slots__ = ("count", "waiter")

    def __init__(self, count: int, waiter: Waiter) -> None:
        self.count = count
        self.waiter = waiter

    def wake(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.waiter.wake()


def _cleanup_timeout(spec: ChildSpec) -> float | None:
    """How long ``on_stop`` may take: the shutdown timeout; None (not run) when brutal."""
    if spec.shutdown == BRUTAL:
        return None
    if spec.shutdown == INFINITY:
        return math.inf
    assert isinstance(spec.shutdown, float | int)
    return float(spec.shutdown)


@final
class Supervisor:
    """One running supervisor (one incarnation). Users hold a ``SupervisorRef`` instead."""

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
        self._spawn_task = self._start_actor_task  # one bound method for all its actors
        self._stop_requested = False
        self._done = False  # the loop has ended: requests get an error, not an answer
        self.inbox = Mailbox(2**62, Overflow.REJECT, services.new_waiter)
        self.slots: dict[str, _Slot] = {}
        self.gave_up: SupervisorGaveUpError | None = None  # why it gave up, once it has
        self.stop_deadline = math.inf
        self._dynamic_seq = 0
        # Rare, so kept here rather than on every slot: a kill's crash for its runner to
        # report, and terminate_child stops under way (set when each ends).
        self._killed: dict[_Slot, Exception] = {}
        self._in_flight: dict[_Slot, anyio.Event] = {}
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
            for child in spec.children:
                self._add_slot(child)

    # -- life ---------------------------------------------------------------------------------

    async def run(
        self, on_ready: Callable[[], None], on_stopped: Callable[[], None] = lambda: None
    ) -> Outcome:
        """Start the children in order, signal readiness, supervise until stopped or failed.

        Children are stopped in reverse start order however this ends, cancellation included.
        *on_stopped* is called once every child has stopped or been abandoned: from then on
        only abandoned tasks (that shield themselves from cancellation) keep this from
        returning, and nobody should wait for them.

        Raises:
            StartError: a child failed to start at boot (those started are stopped first).
        """
        outcome = Outcome.STOPPED
        boot_error: StartError | None = None
        self._services.supervisors[self.path] = self
        try:
            # The supervisor and its children run shielded: a cancellation from outside (the
            # tree's owner cancelled, a parent's task group failing) must not reach every
            # child at once. The watcher turns it into a stop request, so children still
            # stop one by one in reverse start order. Only the stop deadline cuts that short.
            async with anyio.create_task_group() as watch:
                watch.start_soon(self._stop_when_cancelled)
                with anyio.CancelScope(shield=True, deadline=self.stop_deadline) as shield:
                    self._shield = shield
                    async with anyio.create_task_group() as tg, open_runners(tg) as runners:
                        self._tg = tg
                        self._runners = runners
                        try:
                            try:
                                await self._boot()
                            except StartError as exc:
                                boot_error = exc  # raised below, outside the task groups
                            else:
                                on_ready()
                                outcome = await self._loop()
                        except _StopDuringStart:
                            pass  # asked to stop while a child was starting: stop the rest
                        finally:
                            self._leave()
                            with anyio.CancelScope(shield=True) as stopping:
                                stopping.deadline = self.stop_deadline
                                await self._stop_all()
                            runners.cancel_all()  # anything abandoned goes now
                            tg.cancel_scope.cancel()
                            self._fail_requests()
                            self._forget_added_children()
                            on_stopped()
                watch.cancel_scope.cancel()
        finally:
            self._deregister()  # also when the task groups themselves failed
        if boot_error is not None:
            raise boot_error
        return outcome

    def request_stop(self, deadline: float = math.inf) -> None:
        """Ask the supervisor to stop its children in reverse order and return; past
        *deadline* the remaining ones are cancelled at once."""
        self.limit(deadline)
        self._interrupt_start()
        self.inbox.put_nowait(_STOP)

    def limit(self, deadline: float) -> None:
        """Everything below this supervisor ends by *deadline*: its own stop, its children's
        cleanup, and its sub-supervisors', recursively (as OTP kills a whole subtree)."""
        if deadline >= self.stop_deadline:
            return
        self.stop_deadline = deadline
        if self._shield is not None:
            self._shield.deadline = deadline
        for slot in self.slots.values():
            if slot.task is not None:
                slot.task.deadline = min(slot.task.deadline, deadline)
            if slot.cell is not None:
                slot.cell.limit_cleanup(deadline)
            if slot.sub is not None:
                slot.sub.limit(deadline)

    def _leave(self) -> None:
        """The loop has ended: no new requests reach this supervisor, queued ones fail."""
        self._done = True
        self._deregister()
        self._fail_requests()

    def _deregister(self) -> None:
        if self._services.supervisors.get(self.path) is self:
            del self._services.supervisors[self.path]

    def _fail_requests(self) -> None:
        for message in self.inbox.drain():
            if isinstance(message, Call) and isinstance(message.payload, _Op):
                message.fail(self._stopping_error(message.payload))
        waiters = self._slot_waiters
        while waiters:
            call = waiters.popleft()
            assert isinstance(call.payload, _Op)
            call.fail(self._stopping_error(call.payload))

    def _forget_added_children(self) -> None:
        """A restarted supervisor starts from its spec: children added at run time (all of a
        dynamic supervisor's) will not come back, so their queued messages become dead
        letters and their paths are freed. The spec's children keep their mailboxes."""
        declared = set() if self.core.dynamic else {c.id for c in self._static_children()}
        for child_id, slot in self.slots.items():
            if child_id not in declared:
                self._services.discard_cells(slot.path)

    def _static_children(self) -> tuple[ChildSpec, ...]:
        spec = self.spec
        return spec.children if isinstance(spec, SupervisorSpec) else ()

    def _interrupt_start(self) -> None:
        """A stop does not wait for a child that is still starting (it reads no inbox then)."""
        self._stop_requested = True
        starting = self._starting
        if starting is not None:
            starting.fail(_StopDuringStart())

    def _stopping_error(self, op: _Op) -> UnknownPathError:
        msg = f"supervisor {self.path!r} is stopping: {op.name} {op.child_id!r} was not done"
        return UnknownPathError(msg, path=self.path)

    async def _stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:  # cancelled from outside (or at the end, when the stop request is moot)
            if not self._done:
                self._interrupt_start()
                self.inbox.put_nowait(_STOP)

    async def _boot(self) -> None:
        children = self.core.children
        for child_id in list(children):  # ids only: 100k tuples would cost GC passes
            if children[child_id].held:
                self._close(child_id, "stopped by an operator")
                continue
            try:
                await self._start(child_id)
            except _StartFailure as failure:
                self.core.boot_failed(child_id)
                msg = (
                    f"supervisor {self.path!r}: child {child_id!r} failed to start:"
                    f" {failure.cause!r}"
                )
                raise StartError(msg, supervisor=self.path, child_id=child_id) from failure.cause

    async def _loop(self) -> Outcome:
        inbox = self.inbox
        core = self.core
        while True:
            try:
                message = inbox.get_nowait()
            except anyio.WouldBlock:
                due = core.next_due()
                if due is None:
                    message = await inbox.get()
                else:
                    now = anyio.current_time()
                    if due <= now:
                        outcome = await self._run_due(now)
                        if outcome is not None:
                            return outcome
                        continue
                    message = None
                    with anyio.CancelScope(deadline=due):
                        message = await inbox.get()
                    if message is None:
                        continue  # the restart is due
            outcome = await self._handle(message)
            if outcome is not None:
                return outcome

    async def _handle(self, message: object) -> Outcome | None:
        if isinstance(message, _Exited):
            return await self._on_exit(message)
        if isinstance(message, Call):
            op = message.payload
            assert isinstance(op, _Op)
            result: object = None
            try:
                result = await self._operate(op, message)
                if result is not _LATER:
                    message.resolve(result)
            except _StopDuringStart:
                message.fail(self._stopping_error(op))
                raise
            except Exception as exc:
                message.fail(exc)
            finally:  # cut short by the stop deadline: the caller still gets an answer
                if result is not _LATER:
                    message.fail(self._stopping_error(op))  # (no effect once answered)
            return None
        if message is _SLOT_FREE:
            await self._serve_slot_waiters()
            return None
        assert message is _STOP
        return Outcome.STOPPED

    async def _on_exit(self, exit_: _Exited) -> Outcome | None:
        slot = self.slots.get(exit_.child_id)
        if slot is None or slot.incarnation != exit_.incarnation or slot.stopping:
            return None  # from an incarnation already stopped or replaced
        now = anyio.current_time()
        event = ChildExited(slot.path, self.path, exit_.kind, exit_.exception, now)
        slot.last_exception = exit_.exception
        self._services.record_exit(event)
        if self._bus.active:
            self._bus.publish(event)
        return await self._carry_out(self.core.exited(exit_.child_id, exit_.kind, now), now)

    async def _run_due(self, now: float) -> Outcome | None:
        for child_id in list(self.core.due_children(now)):
            outcome = await self._carry_out(self.core.attempt(child_id, now), now, due=True)
            if outcome is not None:
                return outcome
        return None

    async def _carry_out(
        self, decision: Decision, now: float, *, due: bool = False
    ) -> Outcome | None:
        """Do what the core decided; *due*: a delayed restart whose RestartScheduled is out."""
        bus = self._bus
        match decision:
            case Restart():
                if bus.active and not due:
                    path = self.slots[decision.child_id].path
                    bus.publish(RestartScheduled(path, self.path, 0.0, now))
                await self._restart(decision)
            case Delay(child_id=child_id, delay=delay, due=restart_at):
                cell = self.slots[child_id].cell
                if cell is not None:
                    cell.restart_at = restart_at  # what a fail-fast sender is told
                if bus.active:
                    bus.publish(RestartScheduled(self.slots[child_id].path, self.path, delay, now))
            case Forget(child_id=child_id, removed=removed, shutdown=shutdown):
                if removed:
                    self._drop_slot(child_id)
                else:
                    self._close(child_id, "exited")
                if shutdown:
                    if bus.active:
                        bus.publish(SupervisorAutoShutdown(self.path, child_id, now))
                    return Outcome.AUTO_SHUTDOWN
            case GiveUp():
                self.gave_up = self._gave_up(decision)
                if bus.active:
                    bus.publish(
                        SupervisorGaveUp(
                            self.path,
                            decision.child_id,
                            decision.restarts,
                            decision.intensity,
                            decision.period,
                            now,
                        )
                    )
                return Outcome.GAVE_UP
            case Ignore():
                pass
        return None

    def _start_actor_task(
        self, cell: ActorCell, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        """``ctx.start_soon``: a task of the actor's running incarnation (see Context)."""
        slot = self.slots.get(cell.path.rsplit("/", 1)[1])
        tg = self._tg
        if slot is None or slot.cell is not cell or not slot.alive or tg is None:
            msg = f"actor {cell.path} is not running: it cannot start tasks"
            raise ActorNotRunningError(msg, path=cell.path)
        scope = anyio.CancelScope()  # made now: an end before the task runs cancels it too
        tasks = cell.tasks
        if tasks is None:
            tasks = cell.tasks = set()
        tasks.add(scope)
        tg.start_soon(self._run_actor_task, slot, slot.incarnation, scope, fn, args)

    async def _run_actor_task(
        self,
        slot: _Slot,
        incarnation: int,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
    ) -> None:
        current_path.set(slot.path)  # its records are the actor's
        try:
            with scope:
                await fn(*args)
        except Exception as exc:  # the actor crashes with it, as with a handler's
            if slot.incarnation == incarnation and not slot.stopping:
                with contextlib.suppress(ActorNotRunningError):  # it ended meanwhile
                    self._kill(slot.spec.id, exc)
        finally:
            tasks = slot.cell.tasks if slot.cell is not None else None
            if tasks is not None:
                tasks.discard(scope)

    def _gave_up(self, decision: GiveUp) -> SupervisorGaveUpError:
        """What this supervisor's exit says to its parent (its exit's exception) and to the
        tree's owner: the limit, and the child whose exit exceeded it (its exception as the
        cause, so that its traceback comes with it)."""
        child = join_path(self.path, decision.child_id)
        msg = (
            f"supervisor {self.path!r} gave up: {decision.restarts} restarts within"
            f" {decision.period} s (limit {decision.intensity}), last of {child}"
        )
        error = SupervisorGaveUpError(
            msg,
            supervisor=self.path,
            restarts=decision.restarts,
            period=decision.period,
            intensity=decision.intensity,
            child=child,
        )
        slot = self.slots.get(decision.child_id)
        error.__cause__ = slot.last_exception if slot is not None else None
        return error

    async def _restart(self, plan: Restart) -> None:
        await self._stop_in_order(plan.stop)
        for child_id in plan.removed:
            self._drop_slot(child_id)
        for n, child_id in enumerate(plan.start):
            try:
                await self._start(child_id, restarting=True)  # declined: as OTP, go on
            except _StartFailure:
                now = anyio.current_time()
                for later in plan.start[n + 1 :]:
                    self.core.stopped(later)  # as OTP: not reached, left undefined
                await self._carry_out(self.core.start_failed(child_id, now), now)
                return  # OTP's try_again: the next attempt restarts the rest

    # -- one child ----------------------------------------------------------------------------

    def _add_slot(self, spec: ChildSpec) -> _Slot:
        path = join_path(self.path, spec.id)
        cell = None
        if spec.type is ChildType.WORKER:
            # The cell outlives this supervisor's incarnation: a restarted parent finds the
            # same mailbox and the same ActorRef, so references held elsewhere stay valid.
            services = self._services
            cell = services.cells.get(path)
            if cell is None:
                cell = services.cells[path] = ActorCell(
                    path,
                    Mailbox(spec.mailbox.capacity, spec.mailbox.overflow, services.new_waiter),
                    bus=services.bus,
                    letters=services.letters,
                    registry=services.registry,
                    timings=services.timings_of(self.path),
                    wheel=services.timers,
                )
                services.registry.register(cell)
            else:
                cell.mailbox.capacity = spec.mailbox.capacity
                cell.mailbox.overflow = spec.mailbox.overflow
        slot = self.slots[spec.id] = _Slot(spec, path, cell)
        self.core.add(spec)
        if path in self._services.held:
            self.core.children[spec.id].held = True
        return slot

    def _drop_slot(self, child_id: str) -> None:
        """Forget a child for good: its actors' queued messages become dead letters."""
        slot = self.slots.pop(child_id, None)
        self.core.remove(child_id)
        if slot is not None:
            self._release(slot)
            self._killed.pop(slot, None)
            self._services.discard_cells(slot.path)
            self._services.forget_held(slot.path)
            below = slot.spec.type is ChildType.SUPERVISOR
            self._services.forget_exits(slot.path, below=below)
            self._slot_freed()

    def _close(self, child_id: str, reason: str) -> None:
        """The child stays stopped (until restarted by hand): its actors refuse new messages
        and fail waiting calls; queued casts are kept for a restart."""
        slot = self.slots[child_id]
        self._release(slot)
        if slot.cell is not None:
            slot.cell.restart_at = None  # not waiting to restart: stopped
        self._services.close_cells(slot.path, reason)

    async def _start(self, child_id: str, *, restarting: bool = False) -> bool:
        """Start one child (*restarting*: in a restart) and wait for its readiness; False if
        it declined to start (``corral.Ignore``, OTP's ``ignore``: see ``_declined``).

        Raises:
            _StartFailure: it raised before signalling readiness (published as StartFailed).
        """
        if self._stop_requested:
            raise _StopDuringStart  # the rest of a restart plan waits for no one now
        slot = self.slots[child_id]
        spec = slot.spec
        self.core.starting(child_id, restarting=restarting)  # * -> STARTING | RESTARTING
        slot.incarnation += 1
        slot.stopping = 0
        ready: Call | None = None
        start = spec.start
        try:
            if isinstance(start, SupervisorSpec | DynamicSupervisorSpec):
                ready = Call(None, self._new_waiter)
                sub = slot.sub = Supervisor(start, slot.path, self._services, self.path)
                self._spawn(slot, self._run_supervisor, sub, ready)
            else:
                target: Actor | Callable[..., object] = start
                if isinstance(start, type) and issubclass(start, Actor):
                    target = start(**spec.args)
                    slot.quiet = type(target).on_stop is Actor.on_stop
                    if type(target).on_start is not Actor.on_start:
                        ready = Call(None, self._new_waiter)  # else ready once running
                else:
                    ready = Call(None, self._new_waiter)
                    slot.quiet = False
                assert slot.cell is not None
                slot.cell.running = True  # an incarnation begins (if dormant: when woken)
                slot.cell.restart_at = None
                slot.cell.stop_requested = False
                slot.cell.cleanup_deadline = self.stop_deadline
                slot.cell.mailbox.reset_receiver()
                parked = slot.parked
                if parked is not None:  # the runner of the last incarnation runs this one
                    slot.go = (target, ready)
                    slot.parked = None
                    parked.wake()
                elif (
                    ready is None
                    and isinstance(target, Actor)
                    and slot.quiet
                    and not len(slot.cell.mailbox)
                ):
                    # Nothing of it runs before its first message, and stopping it runs
                    # nothing: it gets its task when a message arrives (a dormant actor).
                    slot.dormant = target
                    slot.cell.mailbox.on_arrival = functools.partial(self._wake_dormant, slot)
                else:
                    self._spawn(slot, self._run_worker, target, ready)
            if ready is not None:
                self._starting = ready
                self._waiting_on = slot.path
                try:
                    await ready.wait()
                finally:
                    self._starting = None
                    self._waiting_on = None
        except _StopDuringStart:
            await self._stop_child(child_id)  # cut its start short, by its shutdown policy
            raise
        except IgnoreStart as declined:
            self._declined(child_id, declined)
            return False
        except Exception as exc:
            self._start_failed(slot, exc)
            raise _StartFailure(exc) from exc
        if slot.cell is not None:
            slot.cell.accepting = True
        now = anyio.current_time()
        restart = self.core.started(child_id, now)  # STARTING -> RUNNING
        if self._bus.active:
            rec = self.core.children[child_id]
            self._bus.publish(ChildStarted(slot.path, self.path, rec.restarts, now, restart))
        return True

    def _declined(self, child_id: str, declined: IgnoreStart) -> None:
        """The child declined to start (OTP's ``ignore``, ``{ok, undefined}``): it is not
        running and not restarted; a dynamic supervisor's or a temporary child is dropped,
        another keeps its spec (OTP's ``pid = undefined``), its actors closed meanwhile."""
        slot = self.slots[child_id]
        slot.last_exception = declined  # `why` and status say so
        self.core.stopped(child_id)  # STARTING -> STOPPED
        rec = self.core.children[child_id]
        rec.status = ChildStatus.STOPPED  # declined is no failure, even after one
        if self.core.dynamic or rec.spec.restart is RestartType.TEMPORARY:
            self._drop_slot(child_id)
        else:
            self._close(child_id, "declined to start")

    def _start_failed(self, slot: _Slot, exc: BaseException) -> None:
        slot.last_exception = exc
        if self._bus.active:
            self._bus.publish(StartFailed(slot.path, self.path, exc, anyio.current_time()))

    async def _run_worker(
        self,
        slot: _Slot,
        run_id: int,
        scope: anyio.CancelScope,
        target: Actor | Callable[..., object],
        ready: Call | None,
    ) -> None:
        """A worker's runner: its incarnations, one after another, while the slot is its.
        It keeps few references while an actor idles (the readiness call goes to the
        context, which drops it once answered): a large tree is mostly idle runners."""
        cell = slot.cell
        assert cell is not None
        spec = slot.spec
        inbox = self.inbox
        running = False  # inside an incarnation, as opposed to parked between two
        current_path.set(slot.path)  # this task's: its log records say whose they are
        with scope:  # the supervisor's handle on this task: cancelled to stop it
            try:
                while True:
                    incarnation = slot.incarnation
                    module = (type(target) if isinstance(target, Actor) else target).__module__
                    ctx = Context(
                        cell, ready, module, self._services.find_supervisor, self._spawn_task
                    )
                    ready = None
                    error: Exception | None = None
                    running = True
                    try:
                        if isinstance(target, Actor):
                            await run_actor(target, cell, ctx, _cleanup_timeout(spec))
                        else:
                            await target(ctx, **spec.args)  # type: ignore[misc]  # checked
                    except Exception as exc:
                        error = exc
                    running = False
                    cell.end_incarnation(error, stopped=False)
                    if slot.stopping == incarnation:
                        break  # a quiet stop: the idle actor returned when asked
                    if ctx.ready or error is None:
                        ctx.started()  # one that returned at once started and exited normally
                        kind = ExitKind.NORMAL if error is None else ExitKind.ERROR
                        inbox.put_nowait(_Exited(spec.id, incarnation, kind, error))
                    else:
                        assert error is not None
                        ctx.start_failed(error)  # the supervisor decides what next
                    parked = slot.parked = self._new_waiter()
                    await parked.wait()
                    go = slot.go
                    slot.go = None
                    if go is None:
                        break
                    target, ready = go
            finally:  # cancellation (a stop) passes through; the scope absorbs it
                killed = self._killed.pop(slot, None) if slot.run_id == run_id else None
                if running:
                    cell.end_incarnation(killed, stopped=killed is None)
                if killed is not None and not slot.stopping:  # a stop after the kill wins
                    inbox.put_nowait(_Exited(spec.id, slot.incarnation, ExitKind.ERROR, killed))
                self._finished(slot, run_id)

    async def _run_supervisor(
        self,
        slot: _Slot,
        run_id: int,
        scope: anyio.CancelScope,
        sub: Supervisor,
        ready: Call | None,
    ) -> None:
        with scope:
            await self._supervise_child(slot, run_id, sub, ready)

    async def _supervise_child(
        self, slot: _Slot, run_id: int, sub: Supervisor, ready: Call | None
    ) -> None:
        assert ready is not None  # a supervisor child always signals readiness
        incarnation = slot.incarnation
        outcome: Outcome | None = None
        error: Exception | None = None
        killed: Exception | None = None
        try:
            # Stopped once its children are: a grandchild it abandoned must not hold up this
            # supervisor's stop (as an abandoned child of its own does not).
            stopped = functools.partial(self._finished, slot, run_id)
            outcome = await sub.run(ready.wake_with_none, stopped)
        except Exception as exc:
            error = exc
        finally:  # cancelled too: a kill's mark never outlives the run it was for
            killed = self._killed.pop(slot, None)
            self._finished(slot, run_id)
        if slot.stopping == incarnation or (outcome is None and error is None):
            return
        if killed is not None:
            error = killed  # it stopped because it was killed: a crash
        if not ready.done:
            ready.fail(error if error is not None else RuntimeError("supervisor ended at boot"))
            return
        if error is None and self._bus.active:
            self._bus.publish(SupervisorEscalated(sub.path, self.path, anyio.current_time()))
        if error is not None:
            self.inbox.put_nowait(_Exited(slot.spec.id, incarnation, ExitKind.ERROR, error))
        else:  # it shut down: gave up (saying why), or a significant child's exit
            reason = sub.gave_up if outcome is Outcome.GAVE_UP else None
            self.inbox.put_nowait(_Exited(slot.spec.id, incarnation, ExitKind.SHUTDOWN, reason))

    def _finished(self, slot: _Slot, run_id: int) -> None:
        if slot.run_id == run_id:
            slot.alive = False
            slot.task = None
            done = slot.done
            if done is not None:
                slot.done = None
                done.wake()

    def _wake_dormant(self, slot: _Slot) -> None:
        """The first message reached a dormant actor: give it its task now."""
        target = slot.dormant
        if target is None or self._runners is None:  # pragma: no cover  # cleared before
            return
        slot.dormant = None
        self._spawn(slot, self._run_worker, target, None)

    def _spawn(
        self,
        slot: _Slot,
        runner: Callable[..., Coroutine[object, object, None]],
        *args: object,
    ) -> None:
        """Spawn a runner task for *slot*; from now on it is the slot's (``run_id``: older
        runners' exits and endings no longer speak for it), stopped through ``slot.task``."""
        runners = self._runners
        assert runners is not None
        slot.run_id += 1
        slot.alive = True
        # Its deadline is the supervisor's: past it the runner is cancelled with the rest
        # of the subtree (as the shielded scope around the supervisor and its task group).
        scope = slot.task = anyio.CancelScope(deadline=self.stop_deadline)
        runners.spawn(scope, runner, slot, slot.run_id, scope, *args)

    def _undormant(self, slot: _Slot, error: Exception | None = None) -> None:
        """A dormant actor is stopped (or crashed with *error*): it never ran, so its
        incarnation ends here (its monitors are told)."""
        if slot.dormant is not None:
            slot.dormant = None
            cell = slot.cell
            assert cell is not None
            cell.mailbox.on_arrival = None
            cell.end_incarnation(error, stopped=error is None)

    def _release(self, slot: _Slot) -> None:
        """Let a parked runner end: the slot has no task any more."""
        self._undormant(slot)
        parked = slot.parked
        if parked is not None:
            slot.parked = None
            slot.go = None
            slot.run_id += 1  # the released runner no longer speaks for the slot
            slot.alive = False
            slot.task = None
            parked.wake()

    def _is_quiet(self, child_id: str) -> bool:
        slot = self.slots[child_id]
        cell = slot.cell
        return (
            slot.quiet
            and slot not in self._in_flight
            and slot.alive
            and slot.parked is None
            and cell is not None
            and cell.current is None
            and cell.mailbox.receiver_parked
        )

    async def _stop_quietly(self, batch: list[str]) -> None:
        """Stop idle class actors without on_stop together: wake each to return, wait once."""
        if not batch:
            return
        waiter = self._new_waiter()
        countdown = _Countdown(len(batch), waiter)
        slots = [self.slots[child_id] for child_id in batch]
        for slot in slots:
            cell = slot.cell
            assert cell is not None
            self.core.stopping(slot.spec.id)  # RUNNING -> STOPPING
            slot.stopping = slot.incarnation
            slot.done = countdown
            cell.stop_requested = True
            cell.mailbox.wake_receiver()
        await waiter.wait_for(ABANDON_GRACE + max(_cleanup_timeout(s.spec) or 0.0 for s in slots))
        now = anyio.current_time()
        for slot in slots:
            if slot.alive:  # woken yet still running: should not happen, but never hang
                slot.done = None
                task = slot.task
                if task is not None:
                    task.cancel()
                if self._bus.active:
                    self._bus.publish(ChildAbandoned(slot.path, self.path, 0.0, now))
            self.core.stopped(slot.spec.id)  # STOPPING -> STOPPED
            if self._bus.active:
                self._bus.publish(ChildStopped(slot.path, self.path, now))

    async def _stop_child(self, child_id: str) -> None:
        """Stop one child by its shutdown policy; the core hears of it (``stopped``).

        If a ``terminate_child`` is stopping it already, wait for that stop to end instead.
        """
        slot = self.slots[child_id]
        in_flight = self._in_flight.get(slot)
        self._waiting_on = slot.path  # the loop waits for it: its requests would never run
        try:
            if in_flight is not None:
                await in_flight.wait()
            else:
                await self._stop_child_now(child_id)
        finally:
            self._waiting_on = None

    async def _stop_child_now(self, child_id: str) -> None:
        slot = self.slots[child_id]
        self.core.stopping(child_id)  # RUNNING -> STOPPING
        self._undormant(slot)
        if slot.parked is not None:
            self._release(slot)  # it had exited already; nothing runs
        elif slot.alive:
            done = slot.done = self._new_waiter()
            slot.stopping = slot.incarnation
            policy = slot.spec.shutdown
            timeout = 0.0 if policy == BRUTAL else math.inf if policy == INFINITY else float(policy)
            task = slot.task
            assert task is not None
            if slot.sub is not None:  # brutal: a deadline now cancels its whole subtree at once
                slot.sub.request_stop(anyio.current_time() + timeout)
            if slot.sub is None or policy == BRUTAL:
                task.cancel()
            if timeout == math.inf:
                await done.wait()
            else:
                await done.wait_for(timeout + ABANDON_GRACE)
            if timeout != math.inf and not done.woken:  # past its shutdown: abandoned
                task.cancel()
                if self._bus.active:
                    self._bus.publish(
                        ChildAbandoned(slot.path, self.path, timeout, anyio.current_time())
                    )
        self.core.stopped(child_id)  # STOPPING -> STOPPED
        if self._bus.active:
            self._bus.publish(ChildStopped(slot.path, self.path, anyio.current_time()))

    async def _stop_in_order(self, child_ids: Iterable[str]) -> None:
        """Stop children one after another, in this order (a restart's siblings, or all of
        them at the end). A run of consecutive children whose stop runs no user code (idle
        class actors without ``on_stop``) is stopped as one batch: nothing can observe their
        order, and a large group stops without a wait and a timer per child. Events are still
        published in this order."""
        batch: list[str] = []
        for child_id in child_ids:
            if self._is_quiet(child_id):
                batch.append(child_id)
                continue
            await self._stop_quietly(batch)
            batch.clear()
            await self._stop_child(child_id)
        await self._stop_quietly(batch)

    async def _stop_all(self) -> None:
        """Stop every child: reverse start order, or all at once for a dynamic supervisor.

        Idle class actors without ``on_stop`` are stopped in batches (``_stop_in_order``).
        """
        alive = self.core.give_up_all()
        if self.core.dynamic:
            batch: list[str] = []
            async with anyio.create_task_group() as tg:
                for child_id in alive:
                    if self._is_quiet(child_id):
                        batch.append(child_id)
                    else:
                        tg.start_soon(self._stop_child, child_id)
                await self._stop_quietly(batch)
        else:
            await self._stop_in_order(alive)
        for slot in self.slots.values():
            self._release(slot)
        # Cells stay open: whoever decides this supervisor is gone for good (its parent
        # forgetting, terminating or deleting it, or the tree stopping) closes them, and a
        # supervisor restarted by its parent finds its children's mailboxes as they were.

    # -- the dynamic child API, serialized through the inbox ----------------------------------

    async def request(self, op: _Op) -> object:
        call = Call(op, self._new_waiter)
        if self._done:
            raise self._stopping_error(op)
        waiting_on = self._waiting_on
        if waiting_on is not None:
            caller = current_path.get()
            if caller is not None and within(caller, waiting_on):
                raise self._would_deadlock(op, caller, waiting_on)
        self.inbox.put_nowait(call)
        return await call.wait()

    def _would_deadlock(self, op: _Op, caller: str, waiting_on: str) -> UnsupportedError:
        """The caller is (below) the child this supervisor waits for: it would never answer."""
        doing = "stop (its on_stop)" if self._is_stopping(waiting_on) else "start (its on_start)"
        msg = (
            f"{caller} cannot wait for supervisor {self.path!r} to {op.name.replace('_', ' ')}:"
            f" the supervisor is waiting for {waiting_on} to {doing}, so it would never"
            " answer; do it once started (in handle), not while starting or stopping"
        )
        return UnsupportedError(msg, supervisor=self.path, child_id=op.child_id)

    def _is_stopping(self, path: str) -> bool:
        child_id = path.rsplit("/", 1)[1]
        slot = self.slots.get(child_id)
        return slot is not None and bool(slot.stopping)

    async def _operate(self, op: _Op, call: Call) -> object:
        core = self.core
        match op.name:
            case "start_child":
                assert op.spec is not None
                if op.wait > 0 and self._full():
                    self._wait_for_slot(call, op.wait)
                    return _LATER
                return await self._start_new(op.spec)
            case "terminate_child":
                if core.dynamic and op.child_id not in core:
                    # OTP (simple_one_for_one): terminating a child that has exited is ok;
                    # there is nothing left to stop.
                    return None
                rec = core.get(op.child_id)
                slot = self.slots[op.child_id]
                if op.hold and not core.dynamic:
                    # Held from now, so that no restart planned while it stops starts it again
                    # (and the owner can save it before the stop, which may be cut short).
                    rec.held = True
                    self._services.hold(slot.path)
                if core.terminate(op.child_id):
                    tg = self._tg
                    assert tg is not None
                    in_flight = self._in_flight.get(slot)
                    if in_flight is None:
                        # Marked now, before any other message is read: whatever stops it
                        # next waits for this stop rather than starting a second one.
                        self._in_flight[slot] = anyio.Event()
                        tg.start_soon(self._terminate_later, op, call)
                    else:  # terminated twice: the second caller waits for the same stop
                        tg.start_soon(self._answer_when_set, in_flight, op, call)
                    return _LATER
                core.stopped(op.child_id)
                self._terminated(op)
                return None
            case "restart_child":
                self._refuse_dynamic(op)
                core.check_restart(op.child_id)
                rec = core.get(op.child_id)
                rec.held = False  # the operator wants it running again
                rec.plain_start = not op.hold  # a start, unless the operator's restart
                self._services.unhold(self.slots[op.child_id].path)
                try:
                    started = await self._start(op.child_id)
                except _StartFailure as failure:
                    rec.plain_start = False
                    core.stopped(op.child_id)
                    msg = (
                        f"supervisor {self.path!r}: child {op.child_id!r} failed to start:"
                        f" {failure.cause!r}"
                    )
                    raise StartError(
                        msg, supervisor=self.path, child_id=op.child_id
                    ) from failure.cause
                rec.plain_start = False
                return self.slots[op.child_id].path if started else None
            case "kill_child":
                return self._kill(op.child_id, op.error)
            case "reconfigure":
                assert op.plan is not None
                return await self._reconfigure(op.plan)
            case "reload_stop":
                return await self._reload_stop(op.child_id, remove=op.hold)
            case "reload_update":
                assert op.plan is not None
                return self._reload_update(op.plan)
            case "reload_start":
                return await self._reload_start(op.child_id)
            case _:
                assert op.name == "delete_child"
                self._refuse_dynamic(op)
                core.delete(op.child_id)
                self._drop_slot(op.child_id)
                return None

    async def _terminate_later(self, op: _Op, call: Call) -> None:
        """Carry out ``terminate_child``'s stop beside the supervisor's loop, then answer.

        Beyond OTP (whose supervisor waits for the stop): a child slow to stop does not hold
        up its siblings' exits and restarts or other requests. Meanwhile the child is
        STOPPING, which the rest respects: a restart, a reconfiguration or the supervisor's
        own stop that includes it waits for this stop instead of starting another.
        """
        slot = self.slots[op.child_id]
        done = self._in_flight.get(slot)
        assert done is not None  # set by _operate
        try:
            await self._stop_child_now(op.child_id)
            self._terminated(op)  # before anyone waiting on `done` runs
        except BaseException:  # cancelled: the supervisor is ending
            call.fail(self._stopping_error(op))
            raise
        finally:
            del self._in_flight[slot]
            done.set()
        call.resolve(None)

    async def _answer_when_set(self, done: anyio.Event, op: _Op, call: Call) -> None:
        try:
            await done.wait()
        except BaseException:  # cancelled: the supervisor is ending
            call.fail(self._stopping_error(op))
            raise
        call.resolve(None)

    def _terminated(self, op: _Op) -> None:
        """``terminate_child``'s end: the child's spec is kept (closed) or dropped.

        OTP drops a temporary child's spec; beyond OTP, a held one is kept, so that an
        operator's stop can be undone like any other.
        """
        core = self.core
        rec = core.get(op.child_id)
        if core.dynamic or (rec.spec.restart is RestartType.TEMPORARY and not rec.held):
            self._drop_slot(op.child_id)
        else:
            self._close(op.child_id, "stopped by an operator" if op.hold else "terminated")

    def _kill(self, child_id: str, error: Exception | None) -> str:
        """Crash a running child with *error*, as if it had raised it (a drill)."""
        assert error is not None
        rec = self.core.get(child_id)
        slot = self.slots[child_id]
        if rec.status is not ChildStatus.RUNNING:
            msg = f"{slot.path} is not running ({rec.status.value}): nothing to kill"
            raise ActorNotRunningError(msg, path=slot.path)
        if slot.dormant is None and (
            slot.parked is not None or slot.task is None or slot in self._killed
        ):
            # It has ended already (killed, or exited by itself) and the supervisor has not
            # read that exit yet: the exit decides what happens, not a second cause of death.
            msg = f"{slot.path} has just exited; its supervisor is handling that"
            raise ActorNotRunningError(msg, path=slot.path)
        if slot.dormant is not None:  # it never ran: it crashes before its first message
            self._undormant(slot, error)
            self.inbox.put_nowait(_Exited(child_id, slot.incarnation, ExitKind.ERROR, error))
            return slot.path
        self._killed[slot] = error
        if slot.sub is not None:
            slot.sub.request_stop(anyio.current_time())  # its whole subtree, at once
        else:
            task = slot.task
            assert task is not None  # running, not dormant: it has a runner task
            task.cancel()
        return slot.path

    async def _reconfigure(self, plan: Reconfiguration) -> tuple[StartError, ...]:
        """Apply *plan* at once (see ``reconfigure.py``); returns the children that failed to
        start. ``Tree.reconfigure`` applies the same steps across the whole tree instead."""
        core = self.core
        restarted = set(plan.restarted)
        removed = set(plan.removed)
        again: set[str] = set()
        for child_id in [c for c in reversed(core.children) if c in removed or c in restarted]:
            if await self._reload_stop(child_id, remove=child_id in removed):
                again.add(child_id)
        failures, added = self._reload_update(plan)
        starting = {*again, *added}
        for child_id in [c for c in core.children if c in starting]:
            error = await self._reload_start(child_id)
            if error is not None:
                failures.append(error)
        return tuple(failures)

    async def _reload_stop(self, child_id: str, *, remove: bool) -> bool:
        """A reload's stop of one child (removed, or restarted with a new spec): whether it
        must be started again once the new specs are in: it was running, due to restart, or
        failed (the new spec may be its fix), and no operator holds it."""
        core = self.core
        if child_id not in core:
            return False  # gone meanwhile (a temporary child's terminate ended)
        rec = core.children[child_id]
        again = not remove and not rec.held and (rec.alive or rec.status in _RELOAD_AGAIN)
        if core.terminate(child_id):
            await self._stop_child(child_id)
        if remove:
            self._drop_slot(child_id)
        return again

    def _reload_update(self, plan: Reconfiguration) -> tuple[list[StartError], list[str]]:
        """A reload's new specs, flags, children and order, once its stops are done; returns
        the children that could not be added, and the ones added (to be started)."""
        if self.core.dynamic:  # pragma: no cover  # plan_tree never plans a dynamic one
            msg = f"supervisor {self.path!r} is dynamic: it cannot be reconfigured"
            raise UnsupportedError(msg, supervisor=self.path, child_id="")
        core = self.core
        new = plan.spec
        new_by_id = {c.id: c for c in new.children}
        restarted = set(plan.restarted)
        for child_id in (*plan.changed, *plan.adopted):
            if child_id not in core:
                continue  # deleted by an operator since: nothing to update
            slot, spec = self.slots[child_id], new_by_id[child_id]
            if spec.type is not slot.spec.type:
                held = core.children[child_id].held
                self._drop_slot(child_id)  # a worker and a supervisor share no runtime state
                self._add_slot(spec)
                if held:  # the holds below it went with it; its own stays
                    core.children[child_id].held = True
                    self._services.hold(slot.path)
                continue
            if child_id in restarted and slot.spec.type is ChildType.SUPERVISOR:
                # Restarted whole: the actors its new spec no longer declares are gone.
                actors = frozenset(declared_paths(spec.start, slot.path, workers=True))
                self._services.discard_cells(slot.path, keep=actors)
                declared = {slot.path, *declared_paths(spec.start, slot.path)}
                self._services.forget_held(slot.path, keep=declared)
                self._services.forget_exits(slot.path, below=True, keep=declared)
            slot.spec = core.children[child_id].spec = spec
            if slot.cell is not None:
                slot.cell.mailbox.capacity = spec.mailbox.capacity
                slot.cell.mailbox.overflow = spec.mailbox.overflow
            if child_id in plan.changed:
                self._release(slot)  # its parked runner knows the old spec
        core.reconfigure(new.strategy, new.intensity, new.period, new.auto_shutdown)
        self.spec = new
        failures: list[StartError] = []
        added: list[str] = []
        for child_id in plan.added:
            try:
                self._add_slot(new_by_id[child_id])
            except (AlreadyPresentError, AlreadyStartedError) as exc:
                failures.append(StartError(str(exc), supervisor=self.path, child_id=child_id))
            else:
                added.append(child_id)
        core.reorder([c.id for c in new.children])
        return failures, added

    async def _reload_start(self, child_id: str) -> StartError | None:
        """A reload's start of one child, new or restarted: the error if it failed to start
        (it is left FAILED; an operator starts it again). A child held by an operator stays
        stopped; one started meanwhile (by an operator, a sibling's restart) or gone is left
        alone."""
        core = self.core
        rec = core.children.get(child_id)
        if rec is None or rec.status not in _STARTABLE:
            return None
        if rec.held:
            self._close(child_id, "stopped by an operator")
            return None
        try:
            await self._start(child_id)  # declined: not running, and no failure
        except _StartFailure as failure:
            core.boot_failed(child_id)  # STARTING -> FAILED; an operator starts it again
            msg = f"supervisor {self.path!r}: child {child_id!r} failed to start: {failure.cause!r}"
            error = StartError(msg, supervisor=self.path, child_id=child_id)
            error.__cause__ = failure.cause
            return error
        return None

    def _refuse_dynamic(self, op: _Op) -> None:
        if self.core.dynamic:
            msg = (
                f"supervisor {self.path!r} is dynamic: {op.name} does not apply (terminate instead)"
            )
            raise UnsupportedError(msg, supervisor=self.path, child_id=op.child_id)

    def _full(self, *, queued: bool = False) -> bool:
        """No slot for a new child: max_children reached, or (for a request that is not
        queued itself) others wait for a slot first."""
        limit = self.max_children
        if limit is None:
            return False
        return len(self.core.children) >= limit or (not queued and bool(self._slot_waiters))

    def _wait_for_slot(self, call: Call, wait: float) -> None:
        """Queue a start_child for a free slot; it fails with MaxChildrenError after *wait*."""
        self._slot_waiters.append(call)
        tg = self._tg
        assert tg is not None
        tg.start_soon(self._give_up_waiting, call, wait)

    async def _give_up_waiting(self, call: Call, wait: float) -> None:
        await anyio.sleep(wait)
        if call in self._slot_waiters:  # not served meanwhile
            self._slot_waiters.remove(call)
            call.fail(self._no_slot(f" (waited {wait:g} s for a free slot)"))

    def _no_slot(self, more: str = "") -> MaxChildrenError:
        limit = self.max_children
        assert limit is not None
        waiting = len(self._slot_waiters)
        if waiting and not more:
            more = f" ({waiting} waiting for a slot first)"
        msg = f"supervisor {self.path!r} already has max_children={limit}{more}"
        return MaxChildrenError(msg, supervisor=self.path, max_children=limit)

    def _slot_freed(self) -> None:
        if self._slot_waiters and not self._done:
            self.inbox.put_nowait(_SLOT_FREE)

    async def _serve_slot_waiters(self) -> None:
        """Start the waiting requests, first come first served, while there are slots."""
        waiters = self._slot_waiters
        while waiters and not self._full(queued=True):
            call = waiters.popleft()
            op = call.payload
            assert isinstance(op, _Op)
            assert op.spec is not None
            try:
                call.resolve(await self._start_new(op.spec, queued=True))
            except _StopDuringStart:
                call.fail(self._stopping_error(op))
                raise
            except Exception as exc:
                call.fail(exc)

    async def _start_new(self, spec: ChildSpec, *, queued: bool = False) -> str | None:
        core = self.core
        core.check_new(spec)
        if isinstance(self.spec, SupervisorSpec):
            self.spec.check_child(spec)
        if self._full(queued=queued):
            raise self._no_slot()
        slot = self._add_slot(spec)
        try:
            started = await self._start(spec.id)
        except _StartFailure as failure:
            self._drop_slot(spec.id)  # OTP does not keep the spec of a child that failed to start
            msg = f"supervisor {self.path!r}: child {spec.id!r} failed to start: {failure.cause!r}"
            raise StartError(msg, supervisor=self.path, child_id=spec.id) from failure.cause
        return slot.path if started else None  # declined: OTP's {ok, undefined}

    def dynamic_spec(self, args: Mapping[str, object] | None, child_id: str | None) -> ChildSpec:
        """The template of a dynamic supervisor with *args* merged in and an id."""
        assert isinstance(self.spec, DynamicSupervisorSpec)
        template = self.spec.child
        if child_id is None:
            self._dynamic_seq += 1
            child_id = str(self._dynamic_seq)
            while child_id in self.core:
                self._dynamic_seq += 1
                child_id = str(self._dynamic_seq)
        merged = {**template.args, **(args or {})}
        return attrs.evolve(template, id=child_id, args=merged)

    # -- snapshots ----------------------------------------------------------------------------

    def count_children(self) -> Counts:
        return self.core.count_children()

    def statistics(self) -> SupervisorStatistics:
        core = self.core
        now = anyio.current_time()
        children = []
        letters = self._services.letters.by_path
        exits = self._services.exits
        for child_id, rec in core.children.items():
            slot = self.slots[child_id]
            cell = slot.cell
            sub = slot.sub if slot.alive else None
            children.append(
                ChildStatistics(
                    path=slot.path,
                    id=child_id,
                    type=rec.spec.type,
                    state=rec.status,
                    restarts=rec.restarts,
                    started_at=rec.started_at,
                    next_restart_at=rec.due,
                    last_exit=rec.last_exit,
                    last_exception=slot.last_exception,
                    exits=tuple(exits.get(slot.path, ())),
                    mailbox_depth=len(cell.mailbox) if cell is not None else 0,
                    mailbox_capacity=cell.mailbox.capacity if cell is not None else 0,
                    handled=cell.handled if cell is not None else 0,
                    dead_letters=letters.get(slot.path, 0),
                    supervisor=sub.statistics() if sub is not None else None,
                )
            )
        return SupervisorStatistics(
            path=self.path,
            strategy=core.strategy,
            intensity=core.intensity.intensity,
            period=core.intensity.period,
            restarts_remaining=core.intensity.remaining(now),
            dynamic=core.dynamic,
            children=tuple(children),
        )
