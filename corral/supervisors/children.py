"""One child's start and stop: its runner task, readiness, dormancy, shutdown policy."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from corral.actors.actor import Actor, ActorCell, Call, Context, current_path, run_actor
from corral.actors.actor import Ignore as IgnoreStart
from corral.actors.mailbox import Mailbox
from corral.actors.registry import join_path
from corral.errors import (
    ActorNotRunningError,
)
from corral.supervisors.core import (
    ChildStatus,
)
from corral.supervisors.events import (
    ChildAbandoned,
    ChildStarted,
    ChildStopped,
    StartFailed,
    SupervisorEscalated,
)
from corral.supervisors.slots import (
    ABANDON_GRACE,
    SLOT_FREE,
    ChildSupervisor,
    Countdown,
    Exited,
    Outcome,
    Slot,
    StartFailure,
    StopDuringStart,
    SupervisorState,
    cleanup_timeout,
)
from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    ExitKind,
    RestartType,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable

    from corral.supervisors.runners import RunnerScope


__all__ = ("SupervisorChildren",)


def _awake_from_start(spec: ChildSpec) -> bool:
    """Whether an incarnation of this child has a task from its start: a class actor with
    ``on_start``, or a probed child. A quiet class actor without either starts dormant
    when its mailbox is empty."""
    start = spec.start
    return spec.health is not None or (
        isinstance(start, type)
        and issubclass(start, Actor)
        and start.on_start is not Actor.on_start
    )


class SupervisorChildren(SupervisorState):
    """Starts and stops one child at a time, by its spec (a layer of ``Supervisor``)."""

    __slots__ = ()

    def _new_supervisor(
        self, spec: SupervisorSpec | DynamicSupervisorSpec, path: str
    ) -> ChildSupervisor:
        """A supervisor child's ``Supervisor`` (the class a layer above this one)."""
        raise NotImplementedError

    def _add_slot(self, spec: ChildSpec) -> Slot:
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
                    letters=services.letters,
                    registry=services.registry,
                    timings=services.timings_of(self.path),
                    wheel=services.timers,
                )
                services.registry.register(cell)
            services.configure_cell(cell, spec)
        slot = self.slots[spec.id] = Slot(spec, path, cell)
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
            StartFailure: it raised before signalling readiness (published as StartFailed).
        """
        if self._stop_requested:
            raise StopDuringStart  # the rest of a restart plan waits for no one now
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
                sub = slot.sub = self._new_supervisor(start, slot.path)
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
                slot.cell.stop_requested = slot.cell.draining = False
                slot.cell.probe_failure = None  # the last incarnation's probes are over
                slot.cell.cleanup_deadline = self.stop_deadline
                slot.cell.mailbox.reset_receiver()
                parked = slot.parked
                if parked is not None:  # the runner of the last incarnation runs this one
                    slot.go = (target, ready)
                    slot.parked = None
                    parked.wake()
                elif (
                    isinstance(target, Actor)
                    and slot.quiet
                    and not _awake_from_start(spec)
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
        except StopDuringStart:
            await self._stop_child(child_id)  # cut its start short, by its shutdown policy
            raise
        except IgnoreStart as declined:
            self._declined(child_id, declined)
            return False
        except Exception as exc:
            self._start_failed(slot, exc)
            raise StartFailure(exc) from exc
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

    def _start_failed(self, slot: Slot, exc: BaseException) -> None:
        slot.last_exception = exc
        if self._bus.active:
            self._bus.publish(StartFailed(slot.path, self.path, exc, anyio.current_time()))

    async def _run_worker(
        self,
        slot: Slot,
        run_id: int,
        scope: RunnerScope,
        target: Actor | Callable[..., object],
        ready: Call | None,
    ) -> None:
        """A worker's runner: its incarnations, one after another, while the slot is its.
        It keeps few references while an actor idles (the readiness call goes to the
        context, which drops it once answered): a large tree is mostly idle runners."""
        cell = slot.cell
        assert cell is not None
        spec = slot.spec
        cleanup = cleanup_timeout(spec)  # the slot's spec: the same for every incarnation
        inbox = self.inbox
        running = False  # inside an incarnation, as opposed to parked between two
        current_path.set(slot.path)  # this task's: its log records say whose they are
        # The supervisor's handle on this task, cancelled to stop it. Entered by hand rather
        # than by ``with``, which would keep its bound ``__exit__`` for as long as the actor
        # lives: one object more per idle actor for the collector to walk.
        scope.__enter__()
        try:
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
                            await run_actor(target, cell, ctx, cleanup)
                        else:
                            await target(ctx, **spec.args)  # type: ignore[misc]  # checked
                    except Exception as exc:
                        error = exc
                    running = False
                    cell.end_incarnation(error, stopped=False)
                    if slot.stopping == incarnation:  # a quiet stop: it returned when asked
                        if not slot.keep:
                            break
                        # ...in a restart, which starts it again at once: the runner parks
                        # for that incarnation instead of ending (no new task and scope)
                        parked = slot.parked = self._new_waiter()
                        done = slot.done
                        slot.done = None
                        if done is not None:
                            done.wake()
                    else:
                        if ctx.ready or error is None:
                            ctx.started()  # one that returned at once started and exited
                            kind = ExitKind.NORMAL if error is None else ExitKind.ERROR
                            inbox.put_nowait(Exited(spec.id, incarnation, kind, error))
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
                    inbox.put_nowait(Exited(spec.id, slot.incarnation, ExitKind.ERROR, killed))
                self._finished(slot, run_id)
        except BaseException as exc:  # what ``with scope`` does: it may absorb its own cancel
            if not scope.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            scope.__exit__(None, None, None)

    async def _run_supervisor(
        self,
        slot: Slot,
        run_id: int,
        scope: RunnerScope,
        sub: ChildSupervisor,
        ready: Call | None,
    ) -> None:
        with scope:
            await self._supervise_child(slot, run_id, sub, ready)

    async def _supervise_child(
        self, slot: Slot, run_id: int, sub: ChildSupervisor, ready: Call | None
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
            self.inbox.put_nowait(Exited(slot.spec.id, incarnation, ExitKind.ERROR, error))
        else:  # it shut down: gave up (saying why), or a significant child's exit
            reason = sub.gave_up if outcome is Outcome.GAVE_UP else None
            self.inbox.put_nowait(Exited(slot.spec.id, incarnation, ExitKind.SHUTDOWN, reason))

    def _finished(self, slot: Slot, run_id: int) -> None:
        if slot.run_id == run_id:
            slot.alive = False
            slot.task = None
            done = slot.done
            if done is not None:
                slot.done = None
                done.wake()

    def _wake_dormant(self, slot: Slot) -> None:
        """The first message reached a dormant actor: give it its task now."""
        target = slot.dormant
        if target is None or self._runners is None:  # pragma: no cover  # released first
            return
        slot.dormant = None
        self._spawn(slot, self._run_worker, target, None)

    def _spawn(
        self,
        slot: Slot,
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
        scope = slot.task = runners.scope(self.stop_deadline)
        runners.spawn(scope, runner, slot, slot.run_id, scope, *args)

    def _undormant(self, slot: Slot, error: Exception | None = None) -> None:
        """A dormant actor is stopped (or crashed with *error*): it never ran, so its
        incarnation ends here (its monitors are told)."""
        if slot.dormant is not None:
            slot.dormant = None
            cell = slot.cell
            assert cell is not None
            cell.mailbox.on_arrival = None
            cell.end_incarnation(error, stopped=error is None)

    def _release(self, slot: Slot) -> None:
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

    async def _stop_quietly(self, batch: list[str], *, again: bool = False) -> None:
        """Stop idle class actors without on_stop together: wake each to return, wait once.
        *again*: a restart's stop, which starts them again next: the runner of one that will
        need a task at once (it has ``on_start`` or a probe) parks for that start."""
        if not batch:
            return
        waiter = self._new_waiter()
        countdown = Countdown(len(batch), waiter)
        slots = [self.slots[child_id] for child_id in batch]
        for slot in slots:
            cell = slot.cell
            assert cell is not None
            self.core.stopping(slot.spec.id)  # RUNNING -> STOPPING
            slot.stopping = slot.incarnation
            slot.done = countdown
            slot.keep = again and _awake_from_start(slot.spec)
            cell.stop_requested = True
            cell.mailbox.wake_receiver()
        await waiter.wait_for(ABANDON_GRACE + max(cleanup_timeout(s.spec) or 0.0 for s in slots))
        now = anyio.current_time()
        for slot in slots:
            slot.keep = False
            if slot.alive and slot.parked is None:  # woken yet running: never hang on it
                slot.done = None
                task = slot.task
                if task is not None:
                    task.cancel()
                if self._bus.active:
                    self._bus.publish(ChildAbandoned(slot.path, self.path, 0.0, now))
            self.core.stopped(slot.spec.id)  # STOPPING -> STOPPED
            if self._bus.active:
                self._bus.publish(ChildStopped(slot.path, self.path, now))

    async def _stop_child(self, child_id: str, *, for_good: bool = False) -> None:
        """Stop one child by its shutdown policy; the core hears of it (``stopped``).
        *for_good*: not to be started again now (the supervisor stops, the child is
        terminated or removed): a child with ``drain`` handles its queue first.

        If a ``terminate_child`` is stopping it already, wait for that stop to end instead.
        """
        slot = self.slots[child_id]
        in_flight = self._in_flight.get(slot)
        self._waiting_on = slot.path  # the loop waits for it: its requests would never run
        try:
            if in_flight is not None:
                await in_flight.wait()
            else:
                await self._stop_child_now(child_id, for_good=for_good)
        finally:
            self._waiting_on = None

    async def _stop_child_now(self, child_id: str, *, for_good: bool = False) -> None:
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
            cell = slot.cell
            if for_good and slot.spec.drain and cell is not None and policy != BRUTAL:
                # Beyond OTP: it handles its queue (as long as it has one, within its
                # shutdown time), then returns as an idle actor asked to stop does.
                cell.stop_requested = cell.draining = True
                cell.mailbox.wake_receiver()
                left = min(timeout, self.stop_deadline - anyio.current_time())
                await done.wait_for(max(0.0, left))
                if done.woken or not slot.alive:  # (ended as the wait timed out: done too)
                    self.core.stopped(child_id)  # STOPPING -> STOPPED
                    if self._bus.active:
                        self._bus.publish(ChildStopped(slot.path, self.path, anyio.current_time()))
                    return
                done = slot.done = self._new_waiter()  # a waiter that timed out is spent
                task.cancel()  # its time is over: what is left stays queued
            elif slot.sub is None or policy == BRUTAL:
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

    async def _stop_in_order(self, child_ids: Iterable[str], *, for_good: bool = False) -> None:
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
            await self._stop_quietly(batch, again=not for_good)
            batch.clear()
            await self._stop_child(child_id, for_good=for_good)
        await self._stop_quietly(batch, again=not for_good)

    async def _stop_all(self) -> None:
        """Stop every child: reverse start order, or all at once for a dynamic supervisor.

        Idle class actors without ``on_stop`` are stopped in batches (``_stop_in_order``).
        """
        alive = self.core.give_up_all()
        try:
            if self.core.dynamic:
                batch: list[str] = []
                async with anyio.create_task_group() as tg:
                    for child_id in alive:
                        if self._is_quiet(child_id):
                            batch.append(child_id)
                        else:
                            tg.start_soon(
                                functools.partial(self._stop_child, for_good=True), child_id
                            )
                    await self._stop_quietly(batch)
            else:
                await self._stop_in_order(alive, for_good=True)
        finally:  # cut short by the stop deadline too: no dormant actor may wake up later
            for slot in self.slots.values():
                self._release(slot)
        # Cells stay open: whoever decides this supervisor is gone for good (its parent
        # forgetting, terminating or deleting it, or the tree stopping) closes them, and a
        # supervisor restarted by its parent finds its children's mailboxes as they were.

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
        slot: Slot,
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
            self.inbox.put_nowait(Exited(child_id, slot.incarnation, ExitKind.ERROR, error))
            return slot.path
        self._killed[slot] = error
        if slot.sub is not None:
            slot.sub.request_stop(anyio.current_time())  # its whole subtree, at once
        else:
            task = slot.task
            assert task is not None  # running, not dormant: it has a runner task
            task.cancel()
        return slot.path

    def _slot_freed(self) -> None:
        if self._slot_waiters and not self._done:
            self.inbox.put_nowait(SLOT_FREE)
