"""What every supervisor and actor of one tree shares, and ``SupervisorRef``, the handle
by which code outside a supervisor's task (an actor, the daemon, the embedding program)
asks it for something: each request is an ``Op`` message, carried out in its inbox."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio
import attrs

from corral.actors.breaker import build_breakers
from corral.actors.deadletter import DeadLetter, DeadLetterBox
from corral.actors.registry import Registry, within
from corral.actors.timers import TimerWheel
from corral.actors.timing import Timings
from corral.actors.waiter import waiter_factory
from corral.errors import SpecError, StartError, UnknownPathError
from corral.supervisors.events import (
    BreakerChanged,
    ChildExited,
    EventBus,
    MessageDeadLettered,
)
from corral.supervisors.spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    from corral.actors.breaker import Breaker, BreakerSpec, BreakerState
    from corral.actors.cell import ActorCell
    from corral.supervisors.core import ChildInfo, Counts, SupervisorCore
    from corral.supervisors.reconfigure import Reconfiguration
    from corral.supervisors.statistics import SupervisorStatistics

__all__ = ("EXIT_HISTORY", "Op", "RunningSupervisor", "SupervisorRef", "TreeServices")

EXIT_HISTORY: Final = 10  # exits kept per child path, for `why`


@attrs.frozen
class Op:
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


class RunningSupervisor(Protocol):
    """What a ``SupervisorRef`` needs of the running supervisor it reaches (``Supervisor``)."""

    @property
    def spec(self) -> SupervisorSpec | DynamicSupervisorSpec: ...

    @property
    def core(self) -> SupervisorCore: ...

    async def request(self, op: Op) -> object: ...

    def dynamic_spec(
        self, args: Mapping[str, object] | None, child_id: str | None
    ) -> ChildSpec: ...

    def count_children(self) -> Counts: ...

    def statistics(self) -> SupervisorStatistics: ...


@final
class TreeServices:
    """What every supervisor and actor of one tree shares."""

    __slots__ = (
        "breakers",
        "bus",
        "cells",
        "exits",
        "find_supervisor",
        "held",
        "letters",
        "new_waiter",
        "on_held",
        "random",
        "registry",
        "supervisors",
        "timers",
        "timings",
    )

    def __init__(
        self,
        *,
        random: Callable[[], float],
        dead_letters: int,
        held: Iterable[str] = (),
        on_held: Callable[[frozenset[str]], None] | None = None,
        timings: bool = False,
    ) -> None:
        self.bus = EventBus()
        # by supervisor path, when kept (for metrics); a supervisor's actors share one
        self.timings: dict[str, Timings] | None = {} if timings else None
        self.held = set(held)  # paths stopped by an operator: not started until asked
        self.on_held = on_held  # told of every change to `held`, when it happens
        self.letters = DeadLetterBox(dead_letters)
        self.letters.listener = self._dead_lettered
        self.registry = Registry()
        self.cells: dict[str, ActorCell] = {}  # by path, across supervisor restarts
        self.breakers: dict[str, dict[str, Breaker]] = {}  # the cells' that have any, by path
        # The last exits of each child, by path: across its supervisor's restarts (`why` of a
        # child whose supervisor was restarted tells what led there), until it is removed.
        self.exits: dict[str, deque[ChildExited]] = {}
        self.supervisors: dict[str, RunningSupervisor] = {}
        self.random = random
        self.new_waiter = waiter_factory()  # the backend is fixed for the tree's life
        self.timers = TimerWheel()  # the actors' timers: its task starts with the first
        # one bound method for every actor's Context (not one per incarnation)
        self.find_supervisor: Callable[[str], SupervisorRef] = self.supervisor_ref

    def _dead_lettered(self, letter: DeadLetter) -> None:
        bus = self.bus
        if bus.active:
            bus.publish(
                MessageDeadLettered(
                    letter.path, letter.reason, letter.exception, letter.at, letter.message
                )
            )

    def configure_cell(self, cell: ActorCell, spec: ChildSpec) -> None:
        """What *cell* takes from its child's *spec*, when the slot is made and when a reload
        gives it a new spec: the mailbox's limits, breakers, probes, handling timeout."""
        cell.mailbox.capacity = spec.mailbox.capacity
        cell.mailbox.overflow = spec.mailbox.overflow
        self._set_breakers(cell, spec.breakers)
        cell.health = spec.health
        cell.handle_timeout = spec.handle_timeout

    def _set_breakers(self, cell: ActorCell, specs: Mapping[str, BreakerSpec]) -> None:
        """Give *cell* the breakers *specs* declare: those it has keep their state and take
        the new thresholds (a reload), new ones start closed, undeclared ones go."""
        if not specs and cell.breakers is None:
            return
        breakers = build_breakers(
            cell.path, specs, self.random, anyio.current_time(), cell.breakers
        )
        cell.breakers = breakers
        if breakers is None:
            del self.breakers[cell.path]
            return
        for breaker in breakers.values():
            breaker.listener = self._breaker_changed
        self.breakers[cell.path] = breakers

    def _breaker_changed(self, breaker: Breaker, previous: BreakerState, why: str) -> None:
        bus = self.bus
        if bus.active:
            now = breaker.changed_at
            bus.publish(
                BreakerChanged(
                    breaker.path,
                    breaker.name,
                    breaker.state.value,
                    previous.value,
                    why,
                    breaker.retry_in(now),
                    now,
                )
            )

    def timings_of(self, supervisor: str) -> Timings | None:
        """The timings that the actors of *supervisor* record into (None: not kept)."""
        timings = self.timings
        if timings is None:
            return None
        found = timings.get(supervisor)
        if found is None:
            found = timings[supervisor] = Timings()
        return found

    def record_exit(self, event: ChildExited) -> None:
        exits = self.exits.get(event.path)
        if exits is None:
            exits = self.exits[event.path] = deque(maxlen=EXIT_HISTORY)
        exits.append(event)

    def supervisor_ref(self, path: str) -> SupervisorRef:
        """The running supervisor at *path* (``UnknownPathError`` if none): what an actor's
        ``ctx.supervisor(path)`` answers."""
        if path not in self.supervisors:
            msg = f"no running supervisor at {path!r}"
            raise UnknownPathError(msg, path=path)
        return SupervisorRef(self, path)

    def forget_exits(self, path: str, *, below: bool, keep: Collection[str] = ()) -> None:
        """The exits of *path* (and, with *below*, of every path below it) but *keep*'s:
        those children are gone for good."""
        exits = self.exits
        if path not in keep:
            exits.pop(path, None)
        if below and exits:
            for gone in [p for p in exits if within(p, path) and p not in keep]:
                del exits[gone]

    def discard_all(self) -> None:
        """The tree has stopped: messages still queued become "undelivered" dead letters."""
        for cell in self.cells.values():
            cell.discard("undelivered")

    def _under(self, path: str) -> list[ActorCell]:
        """The actor at *path*, or every actor below the supervisor at *path*."""
        cell = self.cells.get(path)
        if cell is not None:
            return [cell]
        return [c for p, c in self.cells.items() if within(p, path)]

    def hold(self, path: str) -> None:
        if path not in self.held:
            self.held.add(path)
            self._held_changed()

    def unhold(self, path: str) -> None:
        if path in self.held:
            self.held.discard(path)
            self._held_changed()

    def forget_held(self, path: str, keep: Collection[str] = ()) -> None:
        """The child at *path* is gone for good: so are the holds on it and below it (but
        those on *keep*)."""
        kept = {p for p in self.held if not within(p, path) or p in keep}
        if kept != self.held:
            self.held = kept
            self._held_changed()

    def _held_changed(self) -> None:
        if self.on_held is not None:
            self.on_held(frozenset(self.held))

    def close_cells(self, path: str, reason: str) -> None:
        """Stopped for good, until restarted: see ``ActorCell.close``."""
        for cell in self._under(path):
            cell.close(reason)

    def discard_cells(self, path: str, keep: Collection[str] = ()) -> None:
        """Removed (all at or below *path* but *keep*): queued messages become "undelivered"
        dead letters, paths are freed, and so are the timings of supervisors at or below it
        (a pool of supervisors would otherwise leave one per child ever started)."""
        worker = path in self.cells
        for cell in self._under(path):
            if cell.path in keep:
                continue
            cell.discard("undelivered")
            self.registry.unregister(cell.path)
            del self.cells[cell.path]
            self.breakers.pop(cell.path, None)
        if self.timings and not worker:
            for supervisor in [p for p in self.timings if within(p, path) and p not in keep]:
                del self.timings[supervisor]


@final
class SupervisorRef:
    """A running supervisor, by path: the dynamic child API (OTP's names and errors).

    Valid across restarts of the supervisor; each call goes to its current incarnation.
    """

    __slots__ = ("_services", "path")

    def __init__(self, services: TreeServices, path: str) -> None:
        self._services = services
        self.path = path

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.path}>"

    def _current(self) -> RunningSupervisor:
        try:
            return self._services.supervisors[self.path]
        except KeyError:
            msg = f"no running supervisor at {self.path!r}"
            raise UnknownPathError(msg, path=self.path) from None

    async def start_child(
        self,
        spec: ChildSpec | None = None,
        *,
        args: Mapping[str, object] | None = None,
        id: str | None = None,  # OTP's and the spec's word
        wait: float = 0.0,
    ) -> str | None:
        """Add a child and start it; returns its path, or None if it declined to start (it
        raised ``corral.Ignore``: OTP's ``ignore``, ``{ok, undefined}``; the spec of a
        regular supervisor's child that is not temporary is kept, not running).

        A regular supervisor takes a ``ChildSpec``. A dynamic supervisor builds one from its
        template, with *args* merged into the template's and *id* (default: a sequence number).
        A dynamic supervisor at ``max_children`` raises ``MaxChildrenError`` at once, or with
        *wait* seconds waits for a free slot, first come first served (a request that does
        not wait gets no slot while others wait for one).

        Raises:
            AlreadyStartedError / AlreadyPresentError: the id is taken.
            MaxChildrenError: a dynamic supervisor is full.
            StartError: the child failed to start (its spec is not kept).
            SpecError: the spec is not a ChildSpec, or does not fit this supervisor.
        """
        sup = self._current()
        if isinstance(sup.spec, DynamicSupervisorSpec):
            if spec is not None:
                msg = (
                    "a dynamic supervisor starts children from its template: pass args=, not a spec"
                )
                raise TypeError(msg)
            spec = sup.dynamic_spec(args, id)
        elif spec is None:
            msg = "start_child needs a ChildSpec"
            raise SpecError(msg)
        given: object = spec
        if not isinstance(given, ChildSpec):
            msg = f"start_child needs a ChildSpec, got {type(given).__name__}: {given!r}"
            raise SpecError(msg)
        given_wait: object = wait
        if isinstance(given_wait, bool) or not isinstance(given_wait, int | float):
            msg = f"wait must be seconds >= 0, got {wait!r}"
            raise TypeError(msg)
        if not wait >= 0:  # NaN too
            msg = f"wait must be seconds >= 0, got {wait!r}"
            raise ValueError(msg)
        result = await sup.request(Op("start_child", spec.id, spec, wait=float(wait)))
        assert result is None or isinstance(result, str)
        return result

    async def terminate_child(self, child_id: str, *, hold: bool = False) -> None:
        """Stop a child by its shutdown policy and keep its spec (a temporary child's, and a
        dynamic supervisor's child's, is deleted). Ends a backoff wait at once.

        With *hold* (an operator's stop, beyond OTP) the child also stays stopped through
        restarts of its siblings and of its supervisor, until ``restart_child``; the tree's
        ``held`` paths record it.

        Raises:
            NotFoundError: no such child.
        """
        await self._current().request(Op("terminate_child", child_id, hold=hold))

    async def kill_child(self, child_id: str, error: Exception) -> str:
        """Crash a running child with *error* as if it had raised it; returns its path.

        For drills: its supervisor sees an abnormal exit and restarts it by its rules. A
        supervisor child stops its subtree at once (brutally) and exits with *error*.

        Raises:
            NotFoundError: no such child.
            ActorNotRunningError: it is not running.
        """
        result = await self._current().request(Op("kill_child", child_id, error=error))
        assert isinstance(result, str)
        return result

    async def reconfigure(self, plan: Reconfiguration) -> tuple[StartError, ...]:
        """Apply one supervisor's part of a new spec (``reconfigure.plan_tree``).

        Returns the children that failed to start (they are left FAILED); the rest of the
        plan is applied regardless.
        """
        result = await self._current().request(Op("reconfigure", plan=plan))
        assert isinstance(result, tuple)
        return result

    async def _reload_stop(self, child_id: str, *, remove: bool) -> bool:
        result = await self._current().request(Op("reload_stop", child_id, hold=remove))
        assert isinstance(result, bool)
        return result

    async def _reload_update(self, plan: Reconfiguration) -> tuple[list[StartError], list[str]]:
        result = await self._current().request(Op("reload_update", plan=plan))
        assert isinstance(result, tuple)
        return result

    async def _reload_start(self, child_id: str) -> StartError | None:
        result = await self._current().request(Op("reload_start", child_id))
        assert result is None or isinstance(result, StartError)
        return result

    async def restart_child(self, child_id: str, *, counted: bool = False) -> str | None:
        """Start a stopped child again (not counted in the restart intensity); returns its
        path, or None if it declined to start (``corral.Ignore``). The start is not a restart
        in the child's ``restarts`` either, unless *counted* (the second half of an
        operator's restart: ``corral restart``).

        Raises:
            NotFoundError, RunningError, RestartingError: as OTP.
            StartError: it failed to start.
        """
        result = await self._current().request(Op("restart_child", child_id, hold=counted))
        assert result is None or isinstance(result, str)
        return result

    async def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec.

        Raises:
            NotFoundError, RunningError, RestartingError: as OTP.
        """
        await self._current().request(Op("delete_child", child_id))

    def __contains__(self, child_id: object) -> bool:
        """Whether it has a child *child_id* now (running or not)."""
        return child_id in self._current().core.children

    @property
    def dynamic(self) -> bool:
        """Whether it starts its children from a template (``DynamicSupervisorSpec``)."""
        return isinstance(self._current().spec, DynamicSupervisorSpec)

    def get_childspec(self, child_id: str) -> ChildSpec:
        """The spec of its child *child_id* (OTP's ``get_childspec/2``).

        Raises:
            NotFoundError: no such child.
        """
        return self._current().core.get(child_id).spec

    def which_children(self) -> tuple[ChildInfo, ...]:
        return self._current().core.which_children()

    def count_children(self) -> Counts:
        return self._current().count_children()

    def statistics(self) -> SupervisorStatistics:
        return self._current().statistics()
