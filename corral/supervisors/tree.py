"""A running supervision tree: the root supervisor, and what its actors share.

``open_tree`` is the embedding API, shaped like a trio nursery: the tree runs while the
``async with`` block does and is stopped, in reverse start order, when the block exits. If the
root supervisor gives up, the block is cancelled and ``SupervisorGaveUpError`` raised.
"""

from __future__ import annotations

import math
import random as _random
from collections import Counter, deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import anyio

from corral.actors.actor import ActorCell, ActorRef, Call
from corral.actors.deadletter import DeadLetter, DeadLetterBox
from corral.actors.registry import Registry, join_path, within
from corral.actors.timers import TimerWheel
from corral.actors.timing import Timings
from corral.actors.waiter import waiter_factory
from corral.errors import CorralError, SpecError, StartError, UnknownPathError
from corral.supervisors.core import ChildStatus
from corral.supervisors.events import ChildExited, EventBus, Observer, SupervisorEscalated
from corral.supervisors.reconfigure import Reconfigured, file_order, plan_tree
from corral.supervisors.runtime import Outcome, Supervisor, SupervisorStatistics, _Op
from corral.supervisors.spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping

    from corral.supervisors.core import ChildInfo, Counts
    from corral.supervisors.reconfigure import Reconfiguration

__all__ = ("SupervisorRef", "Tree", "TreeServices", "open_tree", "run")

_FAILED: Final = ChildStatus.FAILED
EXIT_HISTORY: Final = 10  # exits kept per child path, for `why`


@final
class TreeServices:
    """What every supervisor and actor of one tree shares."""

    __slots__ = (
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
        self.registry = Registry()
        self.cells: dict[str, ActorCell] = {}  # by path, across supervisor restarts
        # The last exits of each child, by path: across its supervisor's restarts (`why` of a
        # child whose supervisor was restarted tells what led there), until it is removed.
        self.exits: dict[str, deque[ChildExited]] = {}
        self.supervisors: dict[str, Supervisor] = {}
        self.random = random
        self.new_waiter = waiter_factory()  # the backend is fixed for the tree's life
        self.timers = TimerWheel()  # the actors' timers: its task starts with the first
        # one bound method for every actor's Context (not one per incarnation)
        self.find_supervisor: Callable[[str], SupervisorRef] = self.supervisor_ref

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

    def _current(self) -> Supervisor:
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
        result = await sup.request(_Op("start_child", spec.id, spec, wait=float(wait)))
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
        await self._current().request(_Op("terminate_child", child_id, hold=hold))

    async def kill_child(self, child_id: str, error: Exception) -> str:
        """Crash a running child with *error* as if it had raised it; returns its path.

        For drills: its supervisor sees an abnormal exit and restarts it by its rules. A
        supervisor child stops its subtree at once (brutally) and exits with *error*.

        Raises:
            NotFoundError: no such child.
            ActorNotRunningError: it is not running.
        """
        result = await self._current().request(_Op("kill_child", child_id, error=error))
        assert isinstance(result, str)
        return result

    async def reconfigure(self, plan: Reconfiguration) -> tuple[StartError, ...]:
        """Apply one supervisor's part of a new spec (``reconfigure.plan_tree``).

        Returns the children that failed to start (they are left FAILED); the rest of the
        plan is applied regardless.
        """
        result = await self._current().request(_Op("reconfigure", plan=plan))
        assert isinstance(result, tuple)
        return result

    async def _reload_stop(self, child_id: str, *, remove: bool) -> bool:
        result = await self._current().request(_Op("reload_stop", child_id, hold=remove))
        assert isinstance(result, bool)
        return result

    async def _reload_update(self, plan: Reconfiguration) -> tuple[list[StartError], list[str]]:
        result = await self._current().request(_Op("reload_update", plan=plan))
        assert isinstance(result, tuple)
        return result

    async def _reload_start(self, child_id: str) -> StartError | None:
        result = await self._current().request(_Op("reload_start", child_id))
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
        result = await self._current().request(_Op("restart_child", child_id, hold=counted))
        assert result is None or isinstance(result, str)
        return result

    async def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec.

        Raises:
            NotFoundError, RunningError, RestartingError: as OTP.
        """
        await self._current().request(_Op("delete_child", child_id))

    def __contains__(self, child_id: object) -> bool:
        """Whether it has a child *child_id* now (running or not)."""
        return child_id in self._current().core.children

    @property
    def dynamic(self) -> bool:
        """Whether it starts its children from a template (``DynamicSupervisorSpec``)."""
        return isinstance(self._current().spec, DynamicSupervisorSpec)

    def which_children(self) -> tuple[ChildInfo, ...]:
        return self._current().core.which_children()

    def count_children(self) -> Counts:
        return self._current().count_children()

    def statistics(self) -> SupervisorStatistics:
        return self._current().statistics()


@final
class Tree:
    """A running tree: lookups, statistics, dead letters and events of all its actors."""

    __slots__ = ("_closed", "_failure", "_stopped", "root", "services", "spec")

    def __init__(self, spec: SupervisorSpec, services: TreeServices) -> None:
        self.spec = spec
        self.services = services
        self.root = Supervisor(spec, "/", services, None)
        self._closed = anyio.Event()
        self._stopped = anyio.Event()  # every child stopped or abandoned
        self._failure: Exception | None = None

    @property
    def events(self) -> EventBus:
        return self.services.bus

    def lookup(self, path: str) -> ActorRef:
        """The actor at *path*, e.g. ``/workers/db`` (``UnknownPathError`` if none)."""
        return self.services.registry.lookup(path)

    def supervisor(self, path: str = "/") -> SupervisorRef:
        """The supervisor at *path* (``/`` is the root)."""
        if path not in self.services.supervisors:
            msg = f"no running supervisor at {path!r}"
            raise UnknownPathError(msg, path=path)
        return SupervisorRef(self.services, path)

    async def reconfigure(self, old: SupervisorSpec, new: SupervisorSpec) -> Reconfigured:
        """Turn the tree running *old* into *new* (``reconfigure.py``), in one file order
        across every level: every stop first, the last child first at any depth; then every
        supervisor's new specs, flags, children and order, parents first; then every start,
        new or restarted, in the new file's order, each once the ones before it have started.

        A child that fails to start is left FAILED and the rest goes on: the answer says
        which changes took effect and which did not, and why. A supervisor not running is
        left out (its new spec applies when it starts). A child started by another call
        between its stop and its turn to start is left as that call started it (the daemon
        makes operators' starts wait for a reload).
        """
        plans = plan_tree(old, new)
        refs: dict[str, SupervisorRef] = {}
        notes: list[str] = []
        for plan in plans:
            try:
                refs[plan.path] = self.supervisor(plan.path)
            except UnknownPathError:
                changes = "; ".join(plan.describe())
                notes.append(
                    f"{plan.path} is not running: its new spec applies when it starts ({changes})"
                )
        planned = [plan for plan in plans if plan.path in refs]
        failed: dict[str, str] = {}  # child path -> why its change did not take effect
        failures: list[StartError] = []

        def failing(path: str, error: CorralError) -> None:
            cause = error.__cause__
            why = f"failed to start: {cause!r}" if cause is not None else str(error)
            failed.setdefault(path, why)
            if isinstance(error, StartError):
                failures.append(error)

        before = file_order(old)
        stops = [
            (before.get(path, math.inf), plan.path, child_id, child_id in plan.removed)
            for plan in planned
            for child_id in (*plan.removed, *plan.restarted)
            for path in (join_path(plan.path, child_id),)
        ]
        starts: list[tuple[str, str]] = []  # (supervisor, child id)
        for _, at, child_id, remove in sorted(stops, reverse=True):
            try:
                if await refs[at]._reload_stop(child_id, remove=remove):
                    starts.append((at, child_id))
            except CorralError as exc:  # its supervisor ended meanwhile
                failing(join_path(at, child_id), exc)
        for plan in planned:
            try:
                errors, added = await refs[plan.path]._reload_update(plan)
            except CorralError as exc:
                for change in plan.changes():
                    failing(change.starts or plan.path, exc)
                continue
            for refused in errors:
                failing(join_path(plan.path, refused.child_id), refused)
            starts.extend((plan.path, child_id) for child_id in added)
        after = file_order(new)
        starts.sort(key=lambda start: after.get(join_path(start[0], start[1]), math.inf))
        for at, child_id in starts:
            error: CorralError | None
            try:
                error = await refs[at]._reload_start(child_id)
            except CorralError as exc:
                error = exc
            if error is not None:
                failing(join_path(at, child_id), error)
        applied: list[str] = []
        not_applied: list[str] = []
        for plan in planned:
            for change in plan.changes():
                why = failed.get(change.starts or plan.path)
                if why is None:
                    applied.append(change.line)
                else:
                    not_applied.append(f"{change.line}: {why}")
        return Reconfigured(tuple(applied), tuple(not_applied), tuple(failures), tuple(notes))

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of the whole tree."""
        return self.root.statistics()

    def census(self) -> Counter[ChildStatus]:
        """Every running supervisor's children, by state: a count without a snapshot (a tree
        of 100,000 actors is counted in milliseconds, for a status line kept current)."""
        counts: Counter[ChildStatus] = Counter()
        for sup in list(self.services.supervisors.values()):
            counts.update(record.status for record in sup.core.children.values())
        return counts

    def failed(self) -> list[str]:
        """The paths of the children that are failed (not running, nothing pending, and their
        last start or exit failed: an operator starts them again), in no particular order."""
        return [
            join_path(path, child_id)
            for path, sup in list(self.services.supervisors.items())
            for child_id, record in sup.core.children.items()
            if record.status is _FAILED
        ]

    def dead_letters(self, path: str | None = None) -> tuple[DeadLetter, ...]:
        return self.services.letters.list(path)

    @property
    def timings(self) -> Mapping[str, Timings]:
        """Per supervisor path, its actors' timings (empty unless opened with timings)."""
        return self.services.timings or {}

    @property
    def held(self) -> frozenset[str]:
        """Paths of children an operator stopped (``terminate_child(hold=True)``)."""
        return frozenset(self.services.held)

    def stop(self, deadline: float = math.inf) -> None:
        """Begin stopping the whole tree in reverse start order, by the shutdown policies;
        past *deadline* (``anyio.current_time()`` seconds) what is left is cancelled at once.
        Call again with an earlier deadline to force it; ``wait`` returns when it is done."""
        self.root.request_stop(deadline)

    async def wait(self) -> None:
        """Wait until the root supervisor exits (auto-shutdown, or stopped).

        Raises:
            SupervisorGaveUpError: the root exceeded its restart intensity.
        """
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    async def wait_stopped(self) -> None:
        """Wait until every child has stopped or been abandoned (``ChildAbandoned``).

        Unlike ``wait``, this does not wait for abandoned tasks, which may never end (Python
        cannot cancel a task that shields itself): a program that must exit anyway, as the
        daemon does, exits once this returns and ``wait`` has not.
        """
        await self._stopped.wait()

    async def _run_root(self, ready: Call, cancel_owner: Callable[[], None]) -> None:
        root = self.root
        try:
            outcome = await root.run(ready.wake_with_none, self._stopped.set)
        except Exception as exc:
            if not ready.done:
                ready.fail(exc)  # a boot failure: open_tree raises it
                return
            # A bug in the runtime, never expected: the tree must not go on without its root.
            self._failure = exc
            cancel_owner()
            return
        finally:
            self.services.timers.close()  # every actor has stopped: no tick is due any more
            self._stopped.set()
            self._closed.set()
        if outcome is Outcome.STOPPED:
            return
        now = anyio.current_time()
        if self.services.bus.active:
            self.services.bus.publish(SupervisorEscalated("/", None, now))
        if outcome is Outcome.GAVE_UP:
            assert root.gave_up is not None  # set as it gave up
            self._failure = root.gave_up
        cancel_owner()


@asynccontextmanager
async def open_tree(
    spec: SupervisorSpec,
    *,
    random: Callable[[], float] | None = None,
    dead_letters: int = 1000,
    held: Iterable[str] = (),
    on_held: Callable[[frozenset[str]], None] | None = None,
    observers: Iterable[Observer] = (),
    timings: bool = False,
    on_open: Callable[[Tree], None] | None = None,
) -> AsyncIterator[Tree]:
    """Start *spec*'s tree (children in order, each ready before the next) and yield it.

    Args:
        spec: the root supervisor.
        random: uniform [0, 1) source for backoff jitter (seed it for reproducible runs).
        dead_letters: how many dead letters the tree keeps (counts are kept for all).
        held: paths of children an operator stopped: they are not started (see
            ``SupervisorRef.terminate_child``); ``Tree.held`` is the current set.
        on_held: called with the new set whenever it changes, at once (to persist it).
        observers: subscribed to ``Tree.events`` before anything starts, so they see the
            boot too.
        timings: keep sampled handling times and call latencies per supervisor
            (``Tree.timings``), for metrics.
        on_open: called with the tree before its children start: an owner that must be able
            to stop (``Tree.stop``) or watch (``Tree.wait_stopped``) it during the boot too.

    Raises:
        StartError: a child failed to start; nothing is left running.
        SupervisorGaveUpError: the root gave up while the block ran (the block is cancelled).
    """
    services = TreeServices(
        random=random or _random.random,
        dead_letters=dead_letters,
        held=held,
        on_held=on_held,
        timings=timings,
    )
    for observer in observers:
        services.bus.subscribe(observer)
    tree = Tree(spec, services)
    if on_open is not None:
        on_open(tree)
    ready = Call(None, services.new_waiter)
    leaf: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            services.timers.spawn = tg.start_soon
            tg.start_soon(tree._run_root, ready, tg.cancel_scope.cancel)
            await ready.wait()
            try:
                yield tree
            finally:
                tree.root.request_stop()
    except BaseExceptionGroup as group:
        # One error (the body's, or the root's) comes out as itself, as from a plain call;
        # several stay grouped.
        leaf = _single(group)
        if leaf is None:
            raise
    finally:
        services.discard_all()
    if leaf is not None:
        raise leaf  # outside the except block, so its own cause and context are kept
    if tree._failure is not None:
        raise tree._failure


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, or None."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return None


async def run(spec: SupervisorSpec, *, random: Callable[[], float] | None = None) -> None:
    """Run *spec*'s tree until its root exits (see ``Tree.wait``)."""
    async with open_tree(spec, random=random) as tree:
        await tree.wait()
