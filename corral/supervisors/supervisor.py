"""The async shell: carries out the core's decisions on anyio (asyncio or trio).

A supervisor is one task that owns its state and reads its inbox: child exits, requests from
``SupervisorRef`` and stop requests arrive there as messages, so no locks guard anything.
Each child runs in a runner task of its own (``runners.py``), inside a cancel scope that is
how it is stopped. This module is the top layer: boot, the loop, restarts by strategy; below
it are the requests (``requests.py``), one child's start and stop (``children.py``) and the
state (``slots.py``).

Starting: a child's runner is spawned and the supervisor waits for its readiness (a
class actor without ``on_start`` is ready at once, so it costs no wait). Stopping follows the
child's shutdown policy: a number of seconds cancels it and lets ``on_stop`` / ``finally`` run,
shielded, for that long; past it (plus ``ABANDON_GRACE``) the child is abandoned and reported
(OTP would kill it; Python cannot kill a task that shields itself or blocks). ``"brutal"``
cancels without cleanup; ``"infinity"`` waits as long as it takes. A supervisor child is asked
to stop through its inbox and stops its own children in reverse order first.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from corral.actors.cell import Call
from corral.actors.registry import join_path
from corral.errors import (
    StartError,
    SupervisorGaveUpError,
)
from corral.supervisors.core import (
    Counts,
    Decision,
    Delay,
    Forget,
    GiveUp,
    Ignore,
    Restart,
)
from corral.supervisors.events import (
    ChildExited,
    ChildGivenUp,
    RestartScheduled,
    SupervisorAutoShutdown,
    SupervisorGaveUp,
)
from corral.supervisors.requests import SupervisorRequests
from corral.supervisors.runners import open_runners
from corral.supervisors.services import Op
from corral.supervisors.slots import (
    LATER,
    SLOT_FREE,
    STOP,
    Exited,
    Outcome,
    StartFailure,
    StopDuringStart,
)
from corral.supervisors.spec import (
    ChildSpec,
    DynamicSupervisorSpec,
    SupervisorSpec,
)
from corral.supervisors.statistics import ChildStatistics, SupervisorStatistics

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.supervisors.services import TreeServices


__all__ = ("Supervisor",)


@final
class Supervisor(SupervisorRequests):
    """One running supervisor (one incarnation). Users hold a ``SupervisorRef`` instead."""

    __slots__ = ()

    def __init__(
        self,
        spec: SupervisorSpec | DynamicSupervisorSpec,
        path: str,
        services: TreeServices,
        parent: str | None,
    ) -> None:
        super().__init__(spec, path, services, parent)
        self._spawn_task = self._start_actor_task
        if isinstance(spec, SupervisorSpec):
            for child in spec.children:
                self._add_slot(child)

    def _new_supervisor(
        self, spec: SupervisorSpec | DynamicSupervisorSpec, path: str
    ) -> Supervisor:
        return Supervisor(spec, path, self._services, self.path)

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
                        except StopDuringStart:
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
            self._runners = None  # nothing is spawned for this supervisor any more
            self._deregister()  # also when the task groups themselves failed
        if boot_error is not None:
            raise boot_error
        return outcome

    def request_stop(self, deadline: float = math.inf) -> None:
        """Ask the supervisor to stop its children in reverse order and return; past
        *deadline* the remaining ones are cancelled at once."""
        self.limit(deadline)
        self._interrupt_start()
        self.inbox.put_nowait(STOP)

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
            if isinstance(message, Call) and isinstance(message.payload, Op):
                message.fail(self._stopping_error(message.payload))
        waiters = self._slot_waiters
        while waiters:
            call = waiters.popleft()
            assert isinstance(call.payload, Op)
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
            starting.fail(StopDuringStart())

    async def _stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:  # cancelled from outside (or at the end, when the stop request is moot)
            if not self._done:
                self._interrupt_start()
                self.inbox.put_nowait(STOP)

    async def _boot(self) -> None:
        children = self.core.children
        for child_id in list(children):  # ids only: 100k tuples would cost GC passes
            if children[child_id].held:
                self._close(child_id, "stopped by an operator")
                continue
            tries = 0
            while True:
                try:
                    await self._start(child_id)
                    break
                except StartFailure as failure:
                    spec = children[child_id].spec
                    if tries < spec.start_retries:  # beyond OTP: supervisord's startretries
                        tries += 1
                        await self._pause_before_retry(spec, tries)
                        continue
                    self.core.boot_failed(child_id)
                    msg = (
                        f"supervisor {self.path!r}: child {child_id!r} failed to start:"
                        f" {failure.cause!r}" + (f" (after {tries} retries)" if tries else "")
                    )
                    raise StartError(
                        msg, supervisor=self.path, child_id=child_id
                    ) from failure.cause

    async def _pause_before_retry(self, spec: ChildSpec, attempt: int) -> None:
        """Wait out a boot retry's delay (its backoff's, else none); a stop ends the wait,
        and the next ``_start`` then gives way to it."""
        backoff = spec.backoff
        delay = 0.0 if backoff is None else backoff.delay(attempt, self._services.random())
        if self._bus.active:
            path = self.slots[spec.id].path
            self._bus.publish(RestartScheduled(path, self.path, delay, anyio.current_time()))
        if self._stop_requested:
            return  # asked before this wait: the next _start gives way at once
        pause = Call(None, self._new_waiter)
        self._starting = pause  # what a stop request interrupts
        try:
            with contextlib.suppress(StopDuringStart):
                await pause.wait_for(delay)
        finally:
            self._starting = None

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
        if isinstance(message, Exited):
            return await self._on_exit(message)
        if isinstance(message, Call):
            op = message.payload
            assert isinstance(op, Op)
            result: object = None
            try:
                result = await self._operate(op, message)
                if result is not LATER:
                    message.resolve(result)
            except StopDuringStart:
                message.fail(self._stopping_error(op))
                raise
            except Exception as exc:
                message.fail(exc)
            finally:  # cut short by the stop deadline: the caller still gets an answer
                if result is not LATER:
                    message.fail(self._stopping_error(op))  # (no effect once answered)
            return None
        if message is SLOT_FREE:
            await self._serve_slot_waiters()
            return None
        assert message is STOP
        return Outcome.STOPPED

    async def _on_exit(self, exit_: Exited) -> Outcome | None:
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
                if decision.given_up is not None and bus.active:
                    exits, period = decision.given_up
                    limit = self.slots[child_id].spec.max_restarts
                    assert limit is not None
                    path = self.slots[child_id].path
                    bus.publish(ChildGivenUp(path, self.path, exits, limit, period, now))
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
            except StartFailure:
                now = anyio.current_time()
                for later in plan.start[n + 1 :]:
                    self.core.stopped(later)  # as OTP: not reached, left undefined
                await self._carry_out(self.core.start_failed(child_id, now), now)
                return  # OTP's try_again: the next attempt restarts the rest

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
                    breakers=()
                    if cell is None or cell.breakers is None
                    else tuple(b.snapshot() for b in cell.breakers.values()),
                    essential=rec.spec.essential,
                    probe_failure=None if cell is None else cell.probe_failure,
                    fallbacks=()
                    if cell is None or cell.fallbacks is None
                    else tuple(sorted(cell.fallbacks.items())),
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
