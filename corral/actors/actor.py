"""Actors: the user's code and its context, and the loop that runs a class actor.

An actor is either a subclass of ``Actor`` (``handle`` each message; optional ``on_start`` and
``on_stop``) or an async function ``fn(ctx, **args)`` that receives with ``await ctx.receive()``
or ``async for message in ctx``. What lasts across its incarnations (the mailbox, the
statistics, the ``ActorRef`` others hold) is its ``ActorCell`` (``cell.py``).
"""

from __future__ import annotations

import logging
import math
import time
from contextvars import ContextVar
from functools import wraps
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Generic, ParamSpec, overload

import anyio
import anyio.lowlevel
from typing_extensions import TypeVar

from corral.actors.breaker import Guard, find_breaker
from corral.actors.cell import (
    DEFAULT_CALL_TIMEOUT,
    ActorCell,
    ActorRef,
    Call,
    Rep,
    Reply,
    Req,
)
from corral.actors.health import probe
from corral.actors.mailbox import EMPTY
from corral.actors.monitors import Down, Monitor
from corral.actors.timers import Tick, check_delay
from corral.actors.timing import SAMPLE_MASK
from corral.errors import (
    HandleTimeoutError,
    NoReplyError,
    UnknownPathError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from corral.actors.timers import Timer, TimerWheel
    from corral.supervisors.services import SupervisorRef  # only a type: see below

    Task = tuple[Callable[..., Awaitable[object]], tuple[object, ...]]
    Spawn = Callable[["ActorCell", Callable[..., Awaitable[object]], tuple[object, ...]], None]

__all__ = (
    "DEFAULT_CALL_TIMEOUT",
    "Actor",
    "ActorCell",
    "ActorLogger",
    "ActorRef",
    "Call",
    "Context",
    "Ignore",
    "Reply",
    "current_path",
    "guarded",
    "socket_messages",
)

F = TypeVar("F")
R = TypeVar("R")
P = TypeVar("P")


def socket_messages(actor: F) -> F:
    """Mark a function actor (or an ``Actor`` class) as taking messages from the control
    socket: ``corral call`` / ``corral cast`` (see ``Actor.socket_messages``)."""
    actor.socket_messages = True  # type: ignore[attr-defined]  # a marker on the function
    return actor


current_path: ContextVar[str | None] = ContextVar("corral_actor_path", default=None)
"""The path of the actor whose task is running (None outside actors): set as each actor's
task starts, inherited by the tasks and threads it starts, so that a log record made anywhere
in its code can say whose it is."""


A = TypeVar("A", bound="Actor[Any, Any]")
Ps = ParamSpec("Ps")


def guarded(
    name: str,
) -> Callable[
    [Callable[Concatenate[A, Ps], Awaitable[R]]], Callable[Concatenate[A, Ps], Awaitable[R]]
]:
    """Run each call of an ``Actor``'s async method through its breaker *name*, as
    ``async with self.ctx.breaker(name):`` around the method's body would."""

    def decorate(
        method: Callable[Concatenate[A, Ps], Awaitable[R]],
    ) -> Callable[Concatenate[A, Ps], Awaitable[R]]:
        @wraps(method)
        async def through_breaker(self: A, /, *args: Ps.args, **kwargs: Ps.kwargs) -> R:
            async with self.ctx.breaker(name):
                return await method(self, *args, **kwargs)

        return through_breaker

    return decorate


class ActorLogger(logging.LoggerAdapter):  # type: ignore[type-arg]  # stdlib generic in 3.11
    """A logger for one actor: every record carries its path (``fields["path"]``: the
    daemon logs it as ``CHILD_PATH`` in the journal, ``path`` in JSON lines), from wherever
    it is called."""

    def __init__(self, logger: logging.Logger, path: str) -> None:
        super().__init__(logger, {"path": path})
        self.path = path

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["fields"] = {**(extra.get("fields") or {}), "path": self.path}
        kwargs["extra"] = extra
        return msg, kwargs


class Actor(Generic[Req, Rep]):
    """Base class for actors that handle one message at a time.

    Override ``handle``; its return value is the reply to a ``call`` (ignored for a ``cast``).
    ``Actor[Req, Rep]`` says what it takes and answers, for the type checker: ``lookup(path,
    ThatActor)`` then gives an ``ActorRef[Req, Rep]``, whose ``call`` is typed.
    ``self.ctx`` is set before ``on_start`` runs. ``on_start`` runs before the actor counts as
    started (the supervisor starts the next child only after it returns); ``on_stop`` runs when
    the incarnation ends, except on a brutal stop, shielded from cancellation for at most the
    child's shutdown timeout.
    """

    ctx: Context
    socket_messages: ClassVar[bool] = False
    """True: an operator may send this actor messages from the shell (``corral call PATH
    JSON``, ``corral cast PATH JSON``), decoded from JSON (dicts, lists, strings, numbers,
    booleans, None), each one audited. Off by default: say so for an actor whose messages
    are safe to take from whoever may use the control socket. A function actor says so
    with ``@corral.socket_messages``."""

    @property
    def logger(self) -> ActorLogger:
        """A logger named after this actor's module, whose records carry its path."""
        return self.ctx.logger

    def supervisor(self, path: str | None = None) -> SupervisorRef:
        """``self.ctx.supervisor(path)``: a running supervisor (default: this actor's own)."""
        return self.ctx.supervisor(path)

    async def on_start(self) -> None:
        """Prepare before the first message; raising here is a start failure."""

    async def handle(self, message: Req) -> Rep:
        """Handle one message; raising crashes this incarnation and dead-letters the message."""
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Clean up when the incarnation ends."""

    async def health(self) -> bool | None:
        """Whether this actor is healthy, when its child declares ``health=HealthSpec(...)``:
        probed every ``interval`` seconds while it runs (alongside its messages), at most one
        probe at a time. Raising, returning False or not returning within ``timeout`` is a
        failed probe; ``failures`` of them in a row crash it with ``UnhealthyError``."""
        return True


class Ignore(Exception):  # OTP's word: a start function returns `ignore`
    """Raise it to decline to start, as OTP's ``ignore``: from ``on_start``, or from a
    function actor before ``ctx.started()``. The child is then not running and is not
    restarted; a regular supervisor's child that is not temporary keeps its spec (``corral
    start`` tries again), a dynamic or temporary one is dropped. ``start_child`` and
    ``restart_child`` answer None. Raised after the start, it is a crash like any other.
    """


class Context:
    """What an actor's code sees of the tree: its path and reference, lookups, and (for
    function actors) its mailbox."""

    __slots__ = (
        "_cell",
        "_logger",
        "_module",
        "_pending",
        "_ready",
        "_spawn",
        "_supervisors",
        "ready",
    )

    def __init__(
        self,
        cell: ActorCell,
        ready: Call | None,
        module: str = "corral.actors",
        supervisors: Callable[[str], SupervisorRef] | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self._cell = cell
        self._spawn = spawn  # its supervisor's: runs a task of this incarnation
        self._pending: list[tuple[Callable[..., Awaitable[object]], tuple[object, ...]]] | None = (
            None
        )
        self._ready = ready  # the supervisor awaits it (None: ready once running)
        self._module = module  # the actor's code: the logger's name
        self._supervisors = supervisors  # the tree's: a running supervisor by path
        self._logger: ActorLogger | None = None
        self.ready = ready is None

    @property
    def logger(self) -> ActorLogger:
        """A logger named after the actor's module (``logging.getLogger(__name__)`` in it),
        whose records carry the actor's path wherever they are made: the daemon writes them
        with its own, in its format, and `corral logs PATH` shows them."""
        logger = self._logger
        if logger is None:
            logger = self._logger = ActorLogger(logging.getLogger(self._module), self.path)
        return logger

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def ref(self) -> ActorRef:
        return self._cell.ref

    @overload
    def lookup(self, path: str) -> ActorRef: ...

    @overload
    def lookup(
        self, path: str, expected: type[Actor[R, P]] | type[ActorRef[R, P]]
    ) -> ActorRef[R, P]: ...

    def lookup(self, path: str, expected: object = None) -> ActorRef[Any, Any]:
        """The actor at *path* in this tree (``UnknownPathError`` if none). *expected* (its
        ``Actor[Req, Rep]`` class, or ``ActorRef[Req, Rep]``) types the reference."""
        return self._cell.registry.lookup(path)

    def supervisor(self, path: str | None = None) -> SupervisorRef:
        """The running supervisor at *path* (default: this actor's own), to start, terminate,
        restart or delete its children from inside the tree, as OTP's
        ``supervisor:start_child(SupName, Args)`` from any process.

        An actor may not wait on a supervisor that is waiting for it (from ``on_start`` or
        ``on_stop``): that request raises ``UnsupportedError`` instead of hanging.

        Raises:
            UnknownPathError: no supervisor runs at *path*.
        """
        supervisors = self._supervisors
        if supervisors is None:
            msg = f"actor {self.path} runs outside a tree: it has no supervisors"
            raise UnknownPathError(msg, path=path or "")
        if path is None:
            path = self.path.rsplit("/", 1)[0] or "/"
        return supervisors(path)

    def monitor(self, path: str) -> Monitor:
        """Be told when the running incarnation of the actor at *path* ends: this actor gets
        one ``corral.Down(path, kind, reason)`` message (see ``corral.actors.monitors``), or
        at once ``Down(path, "noproc")`` if it is not running. ``cancel()`` (OTP's
        ``demonitor``) removes it; it ends with this actor's incarnation too."""
        watcher = self._cell
        try:
            target: ActorCell | None = watcher.registry.lookup(path)._cell
        except UnknownPathError:
            target = None
        monitor = Monitor(watcher, path, target)
        watching = watcher.watching
        if watching is None:
            watching = watcher.watching = set()
        watching.add(monitor)
        if target is None or not target.running:
            monitor.fire(Down(path, "noproc"))
            return monitor
        if target.monitors is None:
            target.monitors = []
        target.monitors.append(monitor)
        return monitor

    def breaker(self, name: str) -> Guard:
        """One call through this actor's breaker *name* (declared on its child:
        ``breakers={name: BreakerSpec(...)}``): ``async with ctx.breaker("pricing"): ...``
        raises ``BreakerOpenError`` at once while it is open, and records how the block
        ended. Its state is the child's: it lasts across this actor's restarts."""
        hint = f"; declare it on its child: breakers = {{ {name} = {{ failures = 5 }} }}"
        found = find_breaker(
            self._cell.breakers, self.path, name, who=f"actor {self.path}", hint=hint
        )
        return Guard(found)

    def send_after(self, delay: float, message: object) -> Timer:
        """Cast *message* to this actor in *delay* seconds, once. The timer belongs to this
        incarnation: it is cancelled when the incarnation ends (``cancel()`` ends it
        sooner). A class actor may arm it in ``on_start`` or ``handle``."""
        return self._wheel().arm(self._cell, check_delay("delay", delay), message, None)

    def send_interval(self, period: float, message: object) -> Timer:
        """Cast *message* to this actor every *period* seconds, the first in one period, until
        cancelled or the incarnation ends. At most one tick waits in the mailbox at a time:
        a slow handler skips ticks rather than piling them up."""
        period = check_delay("period", period, positive=True)
        return self._wheel().arm(self._cell, period, message, period)

    def _wheel(self) -> TimerWheel:
        wheel = self._cell.wheel
        if wheel is None:
            msg = f"actor {self.path} runs outside a tree: it has no timers"
            raise RuntimeError(msg)
        return wheel

    def started(self) -> None:
        """Signal readiness: the supervisor goes on to start the next child.

        A function actor calls it once set up; its first ``receive`` calls it if it has not.
        """
        if not self.ready:
            self.ready = True
            ready, self._ready = self._ready, None  # not kept while the actor lives
            if ready is not None:
                ready.wake_with_none()
            pending, self._pending = self._pending, None
            for fn, args in pending or ():
                self.start_soon(fn, *args)

    def start_failed(self, error: Exception) -> None:
        """It raised before signalling readiness: its supervisor's wait fails with *error*."""
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.fail(error)

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in a task of this incarnation: it is cancelled when the
        incarnation ends, and an exception from it crashes the actor as a handler's would
        (counted in its supervisor's restart intensity). Started from ``on_start``, it runs
        once the actor has started. With ``defer``, one actor serves many slow calls at once
        while its own state still changes one message at a time."""
        if not self.ready:
            if self._pending is None:
                self._pending = []
            self._pending.append((fn, args))
            return
        spawn = self._spawn
        if spawn is None:
            msg = f"actor {self.path} runs outside a tree: it cannot start tasks"
            raise RuntimeError(msg)
        spawn(self._cell, fn, args)

    def defer(self) -> Reply:
        """Answer the call being handled later: returns a one-shot ``Reply`` to complete from
        any task of this incarnation (``reply.send(value)``, ``reply.fail(exc)``), as OTP's
        ``{noreply, State}`` and ``gen_server:reply/2``. The handler's return value is then
        not the answer. A reply never completed fails the caller when the incarnation ends.
        """
        cell = self._cell
        current = cell.current
        if type(current) is not Call:
            msg = (
                f"actor {self.path}: defer() answers a call, and the message being handled"
                " is not one"
            )
            raise RuntimeError(msg)  # a misuse of the API
        if current.deferred:
            msg = f"actor {self.path}: this call is deferred already"
            raise RuntimeError(msg)
        current.deferred = True
        reply = Reply(current, cell)
        replies = cell.replies
        if replies is None:
            replies = cell.replies = set()
        replies.add(reply)
        return reply

    async def receive(self, timeout: float | None = None) -> object:  # noqa: ASYNC109  # as queue.get
        """The next message, waiting for one (at most *timeout* seconds: then ``TimeoutError``).
        For a call, answer with ``reply`` before the next ``receive``; otherwise the caller
        gets ``NoReplyError``.

        Cancel-safe: a receive that is cancelled (or times out) takes nothing, so no message
        is ever lost; the next receive gets it.
        """
        cell = self._cell
        self._finish()
        if not self.ready:
            self.started()
        mailbox = cell.mailbox
        while True:
            if timeout is None:
                item = await mailbox.get()
            else:
                with anyio.fail_after(check_delay("timeout", timeout)):
                    item = await mailbox.get()
            if type(item) is Tick:
                if item.timer.taken():
                    item = item.timer.message
                    break
            elif type(item) is Call and item.done:  # its caller gave up before it came up
                cell.dead_letter(item, "expired", None)
            else:
                break
        cell.current = item
        if cell.timings is not None and not cell.handled & SAMPLE_MASK:
            cell.since = time.perf_counter()
        return item.payload if isinstance(item, Call) else item

    def reply(self, value: object) -> None:
        """Answer the call being handled."""
        current = self._cell.current
        if not isinstance(current, Call):
            msg = f"actor {self.path}: the message being handled is not a call"
            raise RuntimeError(msg)  # noqa: TRY004  # a misuse of the API, not a bad argument
        current.resolve(value)

    def _finish(self) -> None:
        cell = self._cell
        current = cell.current
        if current is None:
            return
        cell.current = None
        if cell.since:  # a sampled message: handled between two receives
            assert cell.timings is not None
            cell.timings.handling.observe(time.perf_counter() - cell.since)
            cell.since = 0.0
        cell.handled += 1
        if isinstance(current, Call) and not current.done and not current.deferred:
            current.fail(NoReplyError(f"actor {cell.path} did not reply", path=cell.path))

    def __aiter__(self) -> Context:
        return self

    async def __anext__(self) -> object:
        return await self.receive()


async def run_actor(
    actor: Actor, cell: ActorCell, ctx: Context, cleanup_timeout: float | None
) -> None:
    """Run a class actor: ``on_start``, signal readiness, handle messages until cancelled.

    *cleanup_timeout* bounds ``on_stop`` (None: it is not called, a brutal stop). The message
    loop is inlined here so that an idle actor costs as few frames as possible.
    """
    actor.ctx = ctx
    if type(actor).on_start is not Actor.on_start:
        await actor.on_start()
    ctx.started()
    if cell.health is not None:
        ctx.start_soon(probe, actor, cell, cell.health)
    mailbox = cell.mailbox
    # The handler is looked up per message, not kept bound: an idle actor holds one object
    # fewer for the collector to walk (a call through the instance binds nothing).
    limited = None
    if cell.handle_timeout is not None:
        limited = _limited(actor.handle, cell, cell.handle_timeout)
    timings = cell.timings
    try:
        while True:
            item = mailbox.poll()
            if item is EMPTY:
                if not len(mailbox):
                    if not cell.stop_requested:
                        await mailbox.park()
                    if cell.stop_requested and not (cell.draining and len(mailbox)):
                        return  # stopped while idle: nothing to cut short, no exception
                    continue
                item = await mailbox.get()  # a fairness yield is due
            # One look at what it is (a cast, a call or a timer's tick): the loop's hot path.
            kind = type(item)
            if kind is Call:
                call: Call = item  # type: ignore[assignment]  # its type was just read
                if call.done:  # its caller gave up before it came up
                    cell.dead_letter(call, "expired", None)
                    continue
            elif kind is Tick:
                tick: Tick = item  # type: ignore[assignment]  # its type was just read
                if not tick.timer.taken():
                    continue  # its timer was cancelled since: skipped
                item = tick.timer.message
            cell.current = item
            sampled = timings is not None and not cell.handled & SAMPLE_MASK
            if sampled:
                started = time.perf_counter()
            payload = call.payload if kind is Call else item
            result = await (actor.handle(payload) if limited is None else limited(payload))
            if kind is Call and not call.deferred:
                call.resolve(result)
            if sampled:
                timings.handling.observe(time.perf_counter() - started)  # type: ignore[union-attr]  # sampled: not None
            cell.current = None
            cell.handled += 1
    finally:
        await _stop(actor, cell, cleanup_timeout)


def _limited(
    handle: Callable[[Any], Awaitable[Any]], cell: ActorCell, seconds: float
) -> Callable[[Any], Awaitable[Any]]:
    """*handle*, cut short after *seconds*: the message is kept as a dead letter (reason
    ``timeout``; a call's caller gets ``ActorCrashedError``) and ``HandleTimeoutError`` raised,
    which crashes the incarnation. Only an actor whose child says ``handle_timeout`` pays
    for the cancel scope."""

    async def within(message: object) -> object:
        with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
            return await handle(message)
        assert scope.cancelled_caught  # the scope swallowed its own cancellation only
        error = HandleTimeoutError(
            f"actor {cell.path} took longer than its handle_timeout ({seconds} s) to handle"
            " a message",
            path=cell.path,
        )
        current, cell.current = cell.current, None
        if not (isinstance(current, Call) and (current.done or current.deferred)):
            cell.dead_letter(current, "timeout", error)  # (a deferred call ends with it)
        raise error

    return within


async def _stop(actor: Actor, cell: ActorCell, cleanup_timeout: float | None) -> None:
    if cleanup_timeout is None or type(actor).on_stop is Actor.on_stop:
        return
    with anyio.CancelScope(shield=True) as scope:
        deadline = cell.cleanup_deadline  # a stopping supervisor's deadline bounds it too
        if cleanup_timeout != math.inf:
            deadline = min(deadline, anyio.current_time() + cleanup_timeout)
        scope.deadline = deadline
        cell.cleanup_scope = scope
        try:
            await actor.on_stop()
        finally:
            cell.cleanup_scope = None
