"""The operator's commands on a running tree: what the control socket's requests do.

The daemon serves them for its tree; an embedded tree (``corral.open_tree(...,
control_socket=...)``) serves the same, so ``corral status``, ``why``, ``events`` and the rest
work against a library program as against ``corral run``. Nothing here reads the config or
the daemon's state: what differs is passed in (the tree, its declared spec, whether it is
stopping, a warning to add to each answer).
"""

from __future__ import annotations

import functools
from collections import deque
from importlib.metadata import version
from typing import TYPE_CHECKING, Final

import anyio
import attrs
import msgspec

from corral.actors.breaker import find_breaker
from corral.actors.registry import within
from corral.daemon import protocol, view
from corral.daemon.config import args_problem, id_problem
from corral.errors import (
    ActorCrashedError,
    ActorNotRunningError,
    CorralError,
    MailboxFullError,
    RunningError,
    SpecError,
    UnknownPathError,
    UnsupportedError,
)
from corral.supervisors.levels import ServiceLevel, ServiceStatus, service_status
from corral.supervisors.spec import DynamicSupervisorSpec, RestartType, SupervisorSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.actors.cell import ActorRef
    from corral.supervisors.events import Event
    from corral.supervisors.services import SupervisorRef
    from corral.supervisors.spec import ChildSpec
    from corral.supervisors.tree import Tree

__all__ = ("RECENT_EVENTS", "Killed", "TreeCommands", "version_string")

RECENT_EVENTS: Final = 1000  # kept for `corral events`
_json: Final = msgspec.json.Encoder()
_DECLINED: Final = "declined to start (corral.Ignore): not running; `corral why` says why"


class Killed(Exception):  # reads as what happened to the child: Killed('...')
    """Raised into a child by ``corral kill`` (a drill): an abnormal exit like any other."""


@functools.cache
def version_string() -> str:
    try:
        return version("corral")
    except Exception:  # pragma: no cover  # running from a source tree without metadata
        return "unknown"


def _no_warning() -> str | None:
    return None


@attrs.define(eq=False)
class TreeCommands:
    """The commands on one running tree (``tree()``; asked only while it runs)."""

    tree_of: Callable[[], Tree | None]
    spec: Callable[[], SupervisorSpec]  # as declared (the config's, or open_tree's)
    stopping: Callable[[], bool]
    warning: Callable[[], str | None] = _no_warning  # added to every answer when not None
    ready_when: ServiceLevel = (
        ServiceLevel.DEGRADED
    )  # /readyz: ready at this service level or better
    recent: deque[Event] = attrs.field(factory=lambda: deque(maxlen=RECENT_EVENTS))
    applying: anyio.Lock = attrs.field(factory=anyio.Lock)  # a reload's changes; starts wait

    def is_dynamic(self, path: str) -> bool:
        tree = self.tree_of()
        try:
            return tree is not None and tree.supervisor(path).dynamic
        except CorralError:
            return False

    def is_gone(self, path: str) -> bool:
        """Whether the child at *path* has left the tree for good: the nearest running
        supervisor above it has no child on the way to it (a pool's terminated child; all
        the children of a pool supervisor that was itself removed). Below a supervisor that
        exists but is not running now (in backoff, held), nothing is gone."""
        tree = self.tree_of()
        if tree is None:
            return False
        child = path
        while child != "/":
            parent, _, child_id = child.rpartition("/")
            try:
                return child_id not in tree.supervisor(parent or "/")
            except CorralError:
                child = parent or "/"  # not running: ask the one above
        return False

    def unready(self) -> str | None:
        """Why the running tree is not ready (/readyz answers 503), or None: the root at
        the end of its restart budget, or a service level below ``ready_when`` (its reasons
        name the children and breakers, the first ``MAX_NAMED`` of each kind)."""
        tree = self.tree_of()
        if tree is None:
            return "starting"
        budget = tree.root.core.intensity
        if budget.intensity and not budget.remaining(anyio.current_time()):
            return "root at its restart limit"
        level = self.service_status()
        if level.level.rank > self.ready_when.rank:
            return (
                f"service {level.describe()} (ready-when = {self.ready_when.value!r});"
                f" see corral status"
            )
        return None

    def service_status(self) -> ServiceStatus:
        """The tree's service level now (``unavailable`` before it runs and while stopping)."""
        tree = self.tree_of()
        if tree is None:
            return service_status(None)
        return service_status(tree.statistics(), tree.held, stopping=self.stopping())

    def _tree(self) -> Tree:
        tree = self.tree_of()
        assert tree is not None  # commands are served only while the tree runs
        return tree

    def recent_events(self, count: int) -> list[protocol.Event]:
        clock = view.Clock()
        recent = list(self.recent)[-count:] if count else []
        return [view.event(e, clock) for e in recent]

    def status(self, path: str) -> protocol.StatusNode:
        tree = self._tree()
        stopping = self.stopping()
        if view.normalize(path) != "/":
            return view.status(tree, path, stopping=stopping)
        snapshot = tree.statistics()  # one walk of the tree serves the nodes and the level
        node = view.status(tree, "/", stopping=stopping, snapshot=snapshot)
        level = service_status(snapshot, tree.held, stopping=stopping)
        return msgspec.structs.replace(
            node, service=level.level.value, service_reasons=list(level.reasons)
        )

    def why(self, path: str) -> protocol.WhyResult:
        return view.why(self._tree(), path)

    def dead_letters(self, path: str | None, limit: int) -> list[protocol.DeadLetterInfo]:
        letters = self._tree().dead_letters()
        if path is not None:
            top = view.normalize(path)
            letters = tuple(d for d in letters if within(d.path, top))
        return [view.dead_letter(d) for d in letters[-limit:]]

    def breakers(self, path: str) -> list[protocol.BreakerInfo]:
        return view.breakers(self._tree(), path)

    def breaker(self, path: str, name: str, action: str) -> protocol.Done:
        """``corral breaker reset|open PATH NAME``: close it (window emptied) or hold it
        open until reset. Published as a ``breaker-changed`` event like any transition."""
        path = self._child(path)[2]  # checked: an error names what is missing
        found = find_breaker(self._tree().services.breakers.get(path), path, name, who=path)
        now = anyio.current_time()
        if action == "open":
            found.hold_open(now, "held open by an operator (`corral breaker open`)")
            what = f"breaker {name!r} held open: no call goes through until `corral breaker reset`"
        else:
            found.reset(now, "reset by an operator (`corral breaker reset`)")
            what = f"breaker {name!r} closed, its window and run of failures emptied"
        return self._done(path, what)

    def _child(self, path: str) -> tuple[SupervisorRef, str, str]:
        """The parent supervisor, the child id and the normalized path."""
        path = view.normalize(path)
        if path == "/":
            msg = "the root supervisor is not a child: use `corral shutdown` to stop the daemon"
            raise UnsupportedError(msg, supervisor="/", child_id="")
        parent, child_id = view.parent_path(path), path.rsplit("/", 1)[1]
        try:
            sup = self._tree().supervisor(parent)
            found = child_id in sup
        except UnknownPathError:
            found = False
        if not found:  # only now a snapshot: its error names the part that is missing
            view.find(self._tree(), path)
        return self._tree().supervisor(parent), child_id, path

    async def start(self, path: str) -> protocol.Done:
        async with self.applying:  # not between a reload's stop of it and its start
            sup, child_id, path = self._child(path)
            return await self._start(sup, child_id, path)

    async def _start(self, sup: SupervisorRef, child_id: str, path: str) -> protocol.Done:
        try:
            started = await sup.restart_child(child_id)
        except RunningError as exc:
            msg = f"{exc} (`corral restart {path}` stops and starts it)"
            raise RunningError(msg, supervisor=exc.supervisor, child_id=exc.child_id) from None
        return self._done(path, "started" if started else _DECLINED)

    async def stop(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.terminate_child(child_id, hold=True)
        if path not in self._tree().held:  # OTP keeps no spec of these once stopped
            why = "a dynamic supervisor's child" if sup.dynamic else "a temporary child"
            return self._done(path, f"stopped and removed ({why}: its spec is not kept)")
        return self._done(path, "stopped; it stays stopped until `corral start`")

    async def restart(self, path: str) -> protocol.Done:
        async with self.applying:  # not between a reload's stop of it and its start
            return await self._restart(path)

    async def _restart(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        if sup.dynamic:
            msg = (
                f"{path} belongs to a dynamic supervisor, whose children cannot be restarted"
                " by hand (OTP's rule): `corral kill` crashes it, and its supervisor restarts"
                " it unless it is temporary; or terminate-child, then start-child"
            )
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id)
        # A temporary child's spec is dropped when it stops (OTP), unless held: hold it for
        # the moment between the stop and the start, which ends the hold.
        await sup.terminate_child(child_id, hold=self._temporary(path))
        started = await sup.restart_child(child_id, counted=True)
        return self._done(path, "restarted" if started else _DECLINED)

    async def kill(self, path: str, reason: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        try:
            await sup.kill_child(child_id, Killed(reason))
        except ActorNotRunningError as exc:
            msg = f"{exc} (`corral start {path}` starts it)"
            raise ActorNotRunningError(msg, path=path) from None
        return self._done(path, "killed; its supervisor decides what comes next")

    async def start_child(
        self, supervisor: str, child_id: str | None, args: dict[str, object], wait: float = 0.0
    ) -> protocol.Done:
        tree = self._tree()
        sup = tree.supervisor(view.normalize(supervisor))
        if not sup.dynamic:
            msg = (
                f"supervisor {sup.path!r} is not dynamic: its children come from the config"
                " (edit it and `corral reload`)"
            )
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id or "")
        if child_id is not None and (problem := id_problem(child_id)) is not None:
            raise SpecError(problem)
        template = self._declared(sup.path)
        if isinstance(template, DynamicSupervisorSpec):  # else added since: trust the spec
            child = template.child
            target = child.start
            if isinstance(target, SupervisorSpec | DynamicSupervisorSpec):
                if args:  # a supervisor is built from its spec: there is nothing to pass
                    msg = f"supervisor {sup.path!r} starts supervisors, which take no args"
                    raise SpecError(msg)
            else:
                module = getattr(target, "__module__", "?")
                name = f"{module}:{getattr(target, '__qualname__', '?')}"
                problem = args_problem(target, {**child.args, **args}, name)
                if problem is not None:
                    raise SpecError(problem)
        started = await sup.start_child(args=args, id=child_id, wait=wait)
        if started is None:  # declined (corral.Ignore): a dynamic child is not kept
            declined = sup.path.rstrip("/") + "/" + (child_id or "?")
            return self._done(declined, "declined to start (corral.Ignore): not kept")
        return self._done(started, "started")

    async def terminate_child(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.terminate_child(child_id)
        return self._done(path, "terminated")

    async def delete_child(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.delete_child(child_id)
        return self._done(path, "deleted")

    def _declared_child(self, path: str) -> ChildSpec | None:
        """The config's spec of the child at *path*, if the config declares one."""
        spec: SupervisorSpec | None = self.spec()
        child = None
        for child_id in [p for p in path.split("/") if p]:
            child = next((c for c in spec.children if c.id == child_id), None) if spec else None
            spec = child.start if child and isinstance(child.start, SupervisorSpec) else None
        return child

    def _declared(self, path: str) -> object:
        """What the config says the supervisor at *path* runs (None if it does not say)."""
        child = self._declared_child(path)
        return child.start if child is not None else None

    def _temporary(self, path: str) -> bool:
        """Whether the config declares the child at *path* temporary."""
        child = self._declared_child(path)
        return child is not None and child.restart is RestartType.TEMPORARY

    def _done(self, path: str, what: str) -> protocol.Done:
        """The command was carried out (and the operator's stops saved as they changed)."""
        warning = self.warning()
        if warning is not None:
            return protocol.Done(path=path, done=what, warning=warning)
        return protocol.Done(path=path, done=what)

    def _accepting(self, path: str) -> tuple[ActorRef, str]:
        """The actor at *path*, if its code accepts messages from the socket."""
        sup, child_id, path = self._child(path)
        start = sup.get_childspec(child_id).start
        if isinstance(start, SupervisorSpec | DynamicSupervisorSpec):
            msg = f"{path} is a supervisor: only an actor takes messages"
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id)
        if getattr(start, "socket_messages", False) is not True:
            name = f"{getattr(start, '__module__', '?')}:{getattr(start, '__qualname__', '?')}"
            msg = (
                f"{path} ({name}) does not take messages from the socket: its code must say"
                " so (`socket_messages = True` on an Actor class, `@corral.socket_messages`"
                " on a function actor)"
            )
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id)
        return self._tree().lookup(path), path

    async def call(self, path: str, message: object, seconds: float) -> protocol.Answer:
        """``corral call``: the actor's answer, which must be JSON (it was handled anyway)."""
        ref, path = self._accepting(path)
        try:
            answer = await ref.call(message, timeout=seconds)
        except CorralError:
            raise
        except Exception as exc:  # a deferred reply failed with the actor's own error
            msg = f"{path} answered with an error: {exc!r}"
            raise ActorCrashedError(msg, path=path) from exc
        try:
            _json.encode(answer)
        except (TypeError, ValueError, OverflowError) as exc:
            msg = (
                f"{path} answered {type(answer).__name__}, which cannot be sent as JSON ({exc});"
                " the message was handled"
            )
            raise UnsupportedError(msg, supervisor=view.parent_path(path), child_id="") from None
        return protocol.Answer(path=path, answer=answer)

    async def cast(self, path: str, message: object) -> protocol.Answer:
        """``corral cast``: queued in the actor's mailbox (a full one refuses it at once)."""
        ref, path = self._accepting(path)
        if not ref.cast_nowait(message):  # its mailbox drops the newest when full
            msg = f"mailbox of {path} is full (drop-newest): the message was dropped"
            raise MailboxFullError(msg, path=path)
        return protocol.Answer(path=path, queued=True)
