"""Actors: the user's code, its context, and the references others use to reach it.

An actor is either a subclass of ``Actor`` (``handle`` each message; optional ``on_start`` and
``on_stop``) or an async function ``fn(ctx, **args)`` that receives with ``await ctx.receive()``
or ``async for message in ctx``. Each child slot has one ``ActorCell`` for its whole life in the
supervisor: the mailbox, the statistics and the ``ActorRef`` live there, so messages queued when
an incarnation crashes reach the next one, and a reference stays valid across restarts.
"""

from __future__ import annotations

import logging
import math
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, final, overload

import anyio
import anyio.lowlevel
from typing_extensions import TypeVar

from corral.actors.deadletter import DeadLetter, DeadLetterBox
from corral.actors.mailbox import DROPPED, EMPTY, QUEUED, YIELD, Mailbox, MailboxFull, Overflow
from corral.actors.monitors import Down, Monitor
from corral.actors.timers import Tick, check_delay
from corral.actors.timing import SAMPLE_MASK
from corral.errors import (
    ActorCrashedError,
    ActorNotRunningError,
    ActorRestartingError,
    CallTimeoutError,
    MailboxFullError,
    NoReplyError,
    UnknownPathError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from corral.actors.registry import Registry
    from corral.actors.timers import Timer, TimerWheel
    from corral.actors.timing import Timings
    from corral.actors.waiter import Waiter
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
    "socket_messages",
)

DEFAULT_CALL_TIMEOUT = 5.0

F = TypeVar("F")

Req = TypeVar("Req", contravariant=True, default=Any)
"""What an actor takes (``Actor[Req, Rep]``, ``ActorRef[Req, Rep]``); unsaid: anything."""
Rep = TypeVar("Rep", covariant=True, default=object)
"""What its ``call`` answers; unsaid: ``object`` (narrow it where you use it)."""
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


@final
class Call:
    """A request in a mailbox and its one-shot reply."""

    __slots__ = ("_error", "_result", "_waiter", "deferred", "done", "payload")

    def __init__(self, payload: object, new_waiter: Callable[[], Waiter]) -> None:
        self.payload = payload
        self.done = False
        self.deferred = False  # answered later through a Reply (ctx.defer())
        self._waiter = new_waiter()
        self._result: object = None
        self._error: BaseException | None = None

    def resolve(self, value: object) -> None:
        if not self.done:
            self.done = True
            self._result = value
            self._waiter.wake()

    def wake_with_none(self) -> None:
        """``resolve(None)``: a readiness signal."""
        self.resolve(None)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self._error = error
            self._waiter.wake()

    def abandon(self) -> None:
        """Its caller gave up (timed out, or was cancelled): if the call is still queued, it
        is not handled but kept as a dead letter (``expired``) when it comes up."""
        self.done = True

    def _outcome(self) -> object:
        if self._error is not None:
            raise self._error
        return self._result

    async def wait(self) -> object:
        """The reply (or raise the error), waiting as long as it takes."""
        await self._waiter.wait()
        return self._outcome()

    async def wait_for(self, seconds: float) -> tuple[bool, object]:
        """``(True, reply)`` if it came within *seconds*, else ``(False, None)``."""
        await self._waiter.wait_for(seconds)
        if not self.done:
            return False, None
        return True, self._outcome()


def _is_call(message: object) -> bool:
    return isinstance(message, Call)


@final
class ActorCell:
    """A child slot's lasting state: mailbox, statistics, reference. One per slot, not per run."""

    __slots__ = (
        "_ref",
        "accepting",
        "cleanup_deadline",
        "cleanup_scope",
        "current",
        "handled",
        "letters",
        "mailbox",
        "monitors",
        "path",
        "registry",
        "replies",
        "restart_at",
        "running",
        "since",
        "stop_requested",
        "tasks",
        "timers",
        "timings",
        "watching",
        "wheel",
    )

    def __init__(
        self,
        path: str,
        mailbox: Mailbox,
        *,
        letters: DeadLetterBox,
        registry: Registry,
        timings: Timings | None = None,
        wheel: TimerWheel | None = None,
    ) -> None:
        self.path = path
        self.mailbox = mailbox
        self.letters = letters
        self.registry = registry
        self.accepting = True  # false once stopped for good: senders get ActorNotRunningError
        self.current: object = None  # the message being handled (a Call or a cast payload)
        self.handled = 0
        self.stop_requested = False  # a quiet stop: the idle class actor returns when woken
        self.cleanup_deadline = math.inf  # on_stop ends by then (a stopping parent's deadline)
        self.cleanup_scope: anyio.CancelScope | None = None  # on_stop's, while it runs
        self._ref: ActorRef | None = None
        self.timings = timings  # its supervisor's, when the tree keeps timings
        self.since = 0.0  # when a function actor's sampled message was received
        self.wheel = wheel  # the tree's timers
        self.timers: set[Timer] | None = None  # armed by the running incarnation
        self.replies: set[Reply] | None = None  # its deferred replies not answered yet
        self.tasks: set[anyio.CancelScope] | None = None  # its start_soon tasks' scopes
        self.running = False  # an incarnation runs (or waits, dormant, for its first message)
        self.restart_at: float | None = None  # in backoff: when its restart is attempted
        self.monitors: list[Monitor] | None = None  # watching its running incarnation
        self.watching: set[Monitor] | None = None  # the running incarnation's own monitors

    @property
    def ref(self) -> ActorRef:
        """The reference to this actor (made on first use: most idle actors never need one)."""
        ref = self._ref
        if ref is None:
            ref = self._ref = ActorRef(self)
        return ref

    def dead_letter(self, message: object, reason: str, exception: BaseException | None) -> None:
        """Keep *message* (a cast payload or a ``Call``) as a dead letter; fail a call's caller.
        A timer's tick is nobody's message: it is dropped."""
        if type(message) is Tick:
            return
        if isinstance(message, Call):
            if reason == "crashed":
                error: ActorNotRunningError | ActorCrashedError = ActorCrashedError(
                    f"actor {self.path} crashed while handling this call", path=self.path
                )
                error.__cause__ = exception
            else:
                error = ActorNotRunningError(
                    f"actor {self.path} stopped before replying ({reason})", path=self.path
                )
            message.fail(error)
            message = message.payload
        now = anyio.current_time()
        self.letters.add(DeadLetter(self.path, message, reason, exception, now))

    def limit_cleanup(self, deadline: float) -> None:
        """Cleanup (``on_stop``) must end by *deadline*, also if it is running now."""
        if deadline < self.cleanup_deadline:
            self.cleanup_deadline = deadline
            scope = self.cleanup_scope
            if scope is not None and deadline < scope.deadline:
                scope.deadline = deadline

    def end_incarnation(self, exception: BaseException | None, *, stopped: bool) -> None:
        """The running incarnation ended: the message it was handling is settled.

        After a crash or a stop it becomes a dead letter (a call's caller gets the error).
        After a normal return it counts as handled; an unanswered call gets NoReplyError.
        Its timers are cancelled (a tick of theirs still queued is skipped).
        """
        timers = self.timers
        if timers:
            for timer in list(timers):
                timer.cancel()
        watching = self.watching
        if watching:
            for monitor in list(watching):
                monitor.cancel()
        self.running = False
        monitors = self.monitors
        if monitors:
            self.monitors = None
            stopped_now = stopped or self.stop_requested
            kind = "error" if exception is not None else "stopped" if stopped_now else "normal"
            down = Down(self.path, kind, exception)
            for monitor in monitors:
                monitor.fire(down)
        tasks = self.tasks
        if tasks:
            for scope in tasks:
                scope.cancel()
            tasks.clear()
        replies = self.replies
        if replies:
            how = "crashed" if exception is not None else "stopped" if stopped else "returned"
            for reply in list(replies):
                reply.expire(how)
        current = self.current
        self.current = None
        if current is None:
            return
        if exception is None and not stopped:
            self.handled += 1
            if isinstance(current, Call) and not current.done:
                current.fail(NoReplyError(f"actor {self.path} did not reply", path=self.path))
            return
        if isinstance(current, Call) and (current.done or current.deferred):
            return  # a function actor that already replied, or a deferred reply (failed above)
        self.dead_letter(current, "stopped" if stopped else "crashed", exception)

    def close(self, reason: str) -> None:
        """Stopped for good: refuse new messages, fail waiting calls, keep casts for a restart."""
        self.accepting = False
        for call in self.mailbox.take(_is_call):
            assert isinstance(call, Call)
            error = ActorNotRunningError(
                f"actor {self.path} is not running ({reason})", path=self.path
            )
            call.fail(error)

    def discard(self, reason: str) -> None:
        """The slot is going away: every queued message becomes a dead letter."""
        self.accepting = False
        for message in self.mailbox.drain():
            self.dead_letter(message, reason, None)


@final
class _Done:
    """An awaitable that is already complete (``await`` returns None at once)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return _FINISHED  # an exhausted generator: awaiting it returns at once, allocating nothing


def _finished() -> Generator[None, None, None]:
    return
    yield  # pragma: no cover  # makes this a generator


_FINISHED: Final = _finished()
next(_FINISHED, None)
_DONE: Final = _Done()


@final
class ActorRef(Generic[Req, Rep]):
    """How to reach an actor: ``cast`` and ``call``. Valid across restarts of the actor.

    ``ActorRef[Req, Rep]`` takes ``Req`` messages and answers ``Rep`` to a ``call``, for the
    type checker only (nothing is checked at run time); ``lookup(path, ActorClass)`` or
    ``lookup(path, ActorRef[Req, Rep])`` gives one."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.path}>"

    @property
    def path(self) -> str:
        return self._cell.path

    def _check(self) -> ActorCell:
        cell = self._cell
        if not cell.accepting:
            raise self._not_running(cell)
        return cell

    def _restarting(self, cell: ActorCell) -> None:
        """For a sender that fails fast: raise if the actor waits in backoff."""
        at = cell.restart_at
        if at is not None:
            retry_in = max(0.0, at - anyio.current_time())
            msg = f"actor {cell.path} is waiting to restart (its next attempt in {retry_in:.3f} s)"
            raise ActorRestartingError(msg, path=cell.path, retry_in=retry_in)

    def _not_running(self, cell: ActorCell) -> ActorNotRunningError:
        msg = f"actor {cell.path} is not running"
        return ActorNotRunningError(msg, path=cell.path)

    def _full(self, cell: ActorCell) -> MailboxFullError:
        msg = (
            f"mailbox of {cell.path} is full ({cell.mailbox.capacity} messages,"
            f" overflow {cell.mailbox.overflow.value})"
        )
        return MailboxFullError(msg, path=cell.path)

    def cast(self, message: Req, *, fail_fast: bool = False) -> Awaitable[None]:
        """Queue *message*; ``await`` the result, which waits only for room in a full mailbox
        that blocks (and, every ``SEND_FAIR_EVERY`` sends, for one scheduler pass).

        The message is queued by the call itself when there is room, so the common case
        costs no coroutine.

        With *fail_fast*, an actor waiting in backoff raises ``ActorRestartingError`` at once
        instead of queueing the message for its next incarnation.

        Raises:
            ActorNotRunningError: the actor is stopped for good (not merely restarting).
            ActorRestartingError: *fail_fast*, and the actor waits in backoff.
            MailboxFullError: the mailbox is full and rejects.
        """
        cell = self._cell
        if not cell.accepting:
            raise self._not_running(cell)
        if fail_fast:
            self._restarting(cell)
        mailbox = cell.mailbox
        outcome = mailbox.offer(message)
        if outcome is QUEUED:
            return _DONE
        if outcome is YIELD:
            return mailbox.checkpoint()
        if outcome is DROPPED:
            cell.dead_letter(message, "dropped", None)
            return _DONE
        if mailbox.overflow is Overflow.BLOCK:
            return self._cast_when_room(cell, message)
        raise self._full(cell)

    async def _cast_when_room(self, cell: ActorCell, message: object) -> None:
        await cell.mailbox.wait_for_room()
        self._check()  # stopped for good while this sender waited: the message is not taken
        cell.mailbox.put_nowait(message)

    def cast_nowait(self, message: Req, *, fail_fast: bool = False) -> None:
        """Like ``cast`` without waiting: a full blocking mailbox raises ``MailboxFullError``."""
        cell = self._check()
        if fail_fast:
            self._restarting(cell)
        try:
            queued = cell.mailbox.put_nowait(message)
        except MailboxFull:
            raise self._full(cell) from None
        if not queued:
            cell.dead_letter(message, "dropped", None)

    async def call(
        self,
        message: Req,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,  # noqa: ASYNC109  # a call's contract (gen_server:call)
        fail_fast: bool = False,
    ) -> Rep:
        """Send *message* and wait for the reply, for at most *timeout* seconds in all.

        Raises:
            CallTimeoutError: no reply in time (if the message is still queued then, it is
                not handled: it becomes a dead letter, `expired`).
            ActorNotRunningError: the actor is stopped, or stopped before replying.
            ActorCrashedError: the actor crashed handling this message (cause chained).
            ActorRestartingError: *fail_fast*, and the actor waits in backoff (rather than
                waiting for its next incarnation to answer).
            MailboxFullError: the mailbox is full and rejects or drops.
        """
        cell = self._check()
        if fail_fast:
            self._restarting(cell)
        timings = cell.timings
        sent = time.perf_counter() if timings is not None else 0.0
        mailbox = cell.mailbox
        request = Call(message, mailbox.new_waiter)
        remaining = timeout
        try:
            if len(mailbox) < mailbox.capacity or mailbox.overflow is not Overflow.BLOCK:
                queued = mailbox.put_nowait(request)  # the fast path: no wait, no clock
            else:
                queued = False
                started = time.monotonic()
                with anyio.move_on_after(timeout):
                    await mailbox.wait_for_room()
                    self._check()  # stopped for good while waiting for room
                    queued = mailbox.put_nowait(request)
                if not queued:
                    raise self._timeout(cell, timeout)
                remaining = max(0.0, timeout - (time.monotonic() - started))
        except MailboxFull:
            raise self._full(cell) from None
        if not queued:
            raise self._full(cell)
        try:
            replied, reply = await request.wait_for(remaining)
        finally:  # cancelled too: nobody waits for the answer any more
            if not request.done:
                request.abandon()
        if not replied:
            raise self._timeout(cell, timeout)
        if timings is not None:  # answered calls only: a timeout is its own error
            timings.calls.observe(time.perf_counter() - sent)
        return reply  # type: ignore[return-value]  # what its handle returns: Rep, by its type

    def _timeout(self, cell: ActorCell, timeout: float) -> CallTimeoutError:
        msg = f"call to {cell.path} timed out after {timeout} s"
        return CallTimeoutError(msg, path=cell.path)


@final
class Ignore(Exception):  # OTP's word: a start function returns `ignore`
    """Raise it to decline to start, as OTP's ``ignore``: from ``on_start``, or from a
    function actor before ``ctx.started()``. The child is then not running and is not
    restarted; a regular supervisor's child that is not temporary keeps its spec (``corral
    start`` tries again), a dynamic or temporary one is dropped. ``start_child`` and
    ``restart_child`` answer None. Raised after the start, it is a crash like any other.
    """


@final
class Reply:
    """A deferred answer to one call (``ctx.defer()``): complete it exactly once."""

    __slots__ = ("_call", "_cell", "_ended")

    def __init__(self, call: Call, cell: ActorCell) -> None:
        self._call = call
        self._cell = cell
        self._ended: str | None = None  # why it can no longer be completed

    @property
    def done(self) -> bool:
        return self._ended is not None

    def send(self, value: object) -> None:
        """Answer the call with *value* (the caller's ``call`` returns it)."""
        self._complete()
        self._call.resolve(value)

    def fail(self, error: BaseException) -> None:
        """Answer the call with *error* (the caller's ``call`` raises it)."""
        self._complete()
        self._call.fail(error)

    def _complete(self) -> None:
        if self._ended is not None:
            msg = f"actor {self._cell.path}: this deferred reply {self._ended}"
            raise RuntimeError(msg)
        self._ended = "was completed already"
        replies = self._cell.replies
        if replies is not None:
            replies.discard(self)

    def expire(self, how: str) -> None:
        """The incarnation ended (*how*) before answering: the caller gets ``NoReplyError``."""
        if self._ended is None:
            self._ended = f"can no longer be completed: its incarnation {how}"
            path = self._cell.path
            error = NoReplyError(f"actor {path} {how} before answering a deferred call", path=path)
            self._call.fail(error)
            replies = self._cell.replies
            if replies is not None:
                replies.discard(self)


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
    mailbox = cell.mailbox
    handle = actor.handle
    timings = cell.timings
    try:
        while True:
            item = mailbox.poll()
            if item is EMPTY:
                if not len(mailbox):
                    if not cell.stop_requested:
                        await mailbox.park()
                    if cell.stop_requested:
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
            if kind is Call:
                result = await handle(call.payload)
                if not call.deferred:
                    call.resolve(result)
            else:
                await handle(item)
            if sampled:
                timings.handling.observe(time.perf_counter() - started)  # type: ignore[union-attr]  # sampled: not None
            cell.current = None
            cell.handled += 1
    finally:
        await _stop(actor, cell, cleanup_timeout)


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
