"""A running supervision tree: the root supervisor, and what its actors share.

``open_tree`` is the embedding API, shaped like a trio nursery: the tree runs while the
``async with`` block does and is stopped, in reverse start order, when the block exits. If the
root supervisor gives up, the block is cancelled and ``SupervisorGaveUpError`` raised.
"""

from __future__ import annotations

import math
import random as _random
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, final, overload

import anyio

from corral.actors.actor import Actor, ActorRef, Call
from corral.actors.registry import join_path
from corral.errors import CorralError, StartError, UnknownPathError
from corral.supervisors.core import ChildStatus
from corral.supervisors.events import (
    EventBus,
    Observer,
    SupervisorEscalated,
)
from corral.supervisors.levels import ServiceStatus, service_status
from corral.supervisors.reconfigure import Reconfigured, file_order, plan_tree
from corral.supervisors.services import SupervisorRef, TreeServices
from corral.supervisors.slots import Outcome
from corral.supervisors.supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from corral.actors.deadletter import DeadLetter
    from corral.actors.timing import Timings
    from corral.supervisors.spec import SupervisorSpec
    from corral.supervisors.statistics import SupervisorStatistics


__all__ = ("SupervisorRef", "Tree", "open_tree", "run", "single_exception")

R = TypeVar("R")
P = TypeVar("P")

_FAILED: Final = ChildStatus.FAILED


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

    @overload
    def lookup(self, path: str) -> ActorRef: ...

    @overload
    def lookup(
        self, path: str, expected: type[Actor[R, P]] | type[ActorRef[R, P]]
    ) -> ActorRef[R, P]: ...

    def lookup(self, path: str, expected: object = None) -> ActorRef[Any, Any]:
        """The actor at *path*, e.g. ``/workers/db`` (``UnknownPathError`` if none).

        *expected* types the reference for the type checker, and only for it: the actor's
        ``Actor[Req, Rep]`` class gives an ``ActorRef[Req, Rep]`` (so does
        ``ActorRef[Req, Rep]`` itself, for a function actor).
        """
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

    def service_status(self) -> ServiceStatus:
        """The tree's service level now, and why it is not full (``supervisors/levels.py``)."""
        return service_status(self.statistics(), self.held)

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
        leaf = single_exception(group)
        if leaf is None:
            raise
    finally:
        services.discard_all()
    if leaf is not None:
        raise leaf  # outside the except block, so its own cause and context are kept
    if tree._failure is not None:
        raise tree._failure


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
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
