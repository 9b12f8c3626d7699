"""What reaches a supervisor through its inbox from a ``SupervisorRef``: the dynamic child
API (OTP's start/terminate/restart/delete_child), a drill's kill, a reload's steps, and
``start_child``'s wait for a free slot. Each is carried out by the supervisor's own task,
in turn, so nothing needs a lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

from corral.actors.actor import Call, current_path
from corral.actors.registry import within
from corral.errors import (
    AlreadyPresentError,
    AlreadyStartedError,
    MaxChildrenError,
    StartError,
    UnknownPathError,
    UnsupportedError,
)
from corral.supervisors.children import SupervisorChildren
from corral.supervisors.reconfigure import declared_paths
from corral.supervisors.services import Op
from corral.supervisors.slots import (
    LATER,
    RELOAD_AGAIN,
    STARTABLE,
    StartFailure,
    StopDuringStart,
)
from corral.supervisors.spec import (
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    RestartType,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from corral.supervisors.reconfigure import Reconfiguration


__all__ = ("SupervisorRequests",)


class SupervisorRequests(SupervisorChildren):
    """Carries out requests, one at a time (a layer of ``Supervisor``)."""

    __slots__ = ()

    async def request(self, op: Op) -> object:
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

    def _would_deadlock(self, op: Op, caller: str, waiting_on: str) -> UnsupportedError:
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

    def _stopping_error(self, op: Op) -> UnknownPathError:
        msg = f"supervisor {self.path!r} is stopping: {op.name} {op.child_id!r} was not done"
        return UnknownPathError(msg, path=self.path)

    async def _operate(self, op: Op, call: Call) -> object:
        core = self.core
        match op.name:
            case "start_child":
                assert op.spec is not None
                if op.wait > 0 and self._full():
                    self._wait_for_slot(call, op.wait)
                    return LATER
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
                    return LATER
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
                except StartFailure as failure:
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

    async def _terminate_later(self, op: Op, call: Call) -> None:
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
            await self._stop_child_now(op.child_id, for_good=True)
            self._terminated(op)  # before anyone waiting on `done` runs
        except BaseException:  # cancelled: the supervisor is ending
            call.fail(self._stopping_error(op))
            raise
        finally:
            del self._in_flight[slot]
            done.set()
        call.resolve(None)

    async def _answer_when_set(self, done: anyio.Event, op: Op, call: Call) -> None:
        try:
            await done.wait()
        except BaseException:  # cancelled: the supervisor is ending
            call.fail(self._stopping_error(op))
            raise
        call.resolve(None)

    def _terminated(self, op: Op) -> None:
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
        again = not remove and not rec.held and (rec.alive or rec.status in RELOAD_AGAIN)
        if core.terminate(child_id):
            await self._stop_child(child_id, for_good=remove)
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
        retuned = [child_id for child_id, _ in plan.retuned]
        for child_id in (*plan.changed, *plan.adopted, *retuned):
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
                self._services.configure_cell(slot.cell, spec)
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
        if rec is None or rec.status not in STARTABLE:
            return None
        if rec.held:
            self._close(child_id, "stopped by an operator")
            return None
        try:
            await self._start(child_id)  # declined: not running, and no failure
        except StartFailure as failure:
            core.boot_failed(child_id)  # STARTING -> FAILED; an operator starts it again
            msg = f"supervisor {self.path!r}: child {child_id!r} failed to start: {failure.cause!r}"
            error = StartError(msg, supervisor=self.path, child_id=child_id)
            error.__cause__ = failure.cause
            return error
        return None

    def _refuse_dynamic(self, op: Op) -> None:
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

    async def _serve_slot_waiters(self) -> None:
        """Start the waiting requests, first come first served, while there are slots."""
        waiters = self._slot_waiters
        while waiters and not self._full(queued=True):
            call = waiters.popleft()
            op = call.payload
            assert isinstance(op, Op)
            assert op.spec is not None
            try:
                call.resolve(await self._start_new(op.spec, queued=True))
            except StopDuringStart:
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
        except StartFailure as failure:
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
