"""What outlives an actor's incarnations, and how others reach it.

Each child slot has one ``ActorCell`` for its whole life in the supervisor: the mailbox, the
statistics and the ``ActorRef`` live there, so messages queued when an incarnation crashes
reach the next one, and a reference stays valid across restarts. A ``Call`` is a request in a
mailbox with its one-shot answer; a ``Reply`` answers one later (``ctx.defer()``).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Final, Generic, final, overload

import anyio
import anyio.lowlevel
from typing_extensions import TypeVar

from corral.actors.deadletter import DeadLetter, DeadLetterBox
from corral.actors.mailbox import DROPPED, QUEUED, YIELD, Mailbox, MailboxFull, Overflow
from corral.actors.monitors import Down, Monitor
from corral.actors.timers import Tick
from corral.errors import (
    ActorCrashedError,
    ActorNotRunningError,
    ActorRestartingError,
    BreakerOpenError,
    CallTimeoutError,
    CorralError,
    MailboxFullError,
    NoReplyError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from corral.actors.breaker import Breaker
    from corral.actors.health import HealthSpec
    from corral.actors.registry import Registry
    from corral.actors.timers import Timer, TimerWheel
    from corral.actors.timing import Timings
    from corral.actors.waiter import Waiter

    Task = tuple[Callable[..., Awaitable[object]], tuple[object, ...]]
    Spawn = Callable[["ActorCell", Callable[..., Awaitable[object]], tuple[object, ...]], None]

__all__ = ("DEFAULT_CALL_TIMEOUT", "ActorCell", "ActorRef", "Call", "Rep", "Reply", "Req")

DEFAULT_CALL_TIMEOUT = 5.0

Req = TypeVar("Req", contravariant=True, default=Any)
"""What an actor takes (``Actor[Req, Rep]``, ``ActorRef[Req, Rep]``); unsaid: anything."""
Rep = TypeVar("Rep", covariant=True, default=object)
"""What its ``call`` answers; unsaid: ``object`` (narrow it where you use it)."""
F = TypeVar("F")  # a call's fallback

_NO_FALLBACK: Final = object()


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
        "breakers",
        "cleanup_deadline",
        "cleanup_scope",
        "current",
        "draining",
        "fallbacks",
        "handle_timeout",
        "handled",
        "health",
        "letters",
        "mailbox",
        "monitors",
        "path",
        "probe_failure",
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
        self.draining = False  # with stop_requested: it returns once its queue is empty
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
        self.breakers: dict[str, Breaker] | None = None  # its child's, by name (none: None)
        self.fallbacks: dict[str, int] | None = None  # callers' fallbacks used, by reason
        self.health: HealthSpec | None = None  # its child's probes, read by each incarnation
        self.handle_timeout: float | None = None  # its child's, read by each incarnation
        self.probe_failure: tuple[int, str] | None = None  # failed probes in a row, the last

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
            if reason in ("crashed", "timeout"):
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

    def cast_nowait(self, message: Req, *, fail_fast: bool = False) -> bool:
        """Like ``cast`` without waiting: a full blocking mailbox raises ``MailboxFullError``.
        Returns whether it was queued: False when a full drop-newest mailbox dropped it (it
        is a dead letter, ``dropped``)."""
        cell = self._check()
        if fail_fast:
            self._restarting(cell)
        try:
            queued = cell.mailbox.put_nowait(message)
        except MailboxFull:
            raise self._full(cell) from None
        if not queued:
            cell.dead_letter(message, "dropped", None)
        return queued

    @overload
    async def call(
        self,
        message: Req,
        *,
        timeout: float = ...,  # noqa: ASYNC109
        fail_fast: bool = ...,
    ) -> Rep: ...

    @overload
    async def call(
        self,
        message: Req,
        *,
        timeout: float = ...,  # noqa: ASYNC109
        fail_fast: bool = ...,
        fallback: Callable[[CorralError], F],
    ) -> Rep | F: ...

    @overload
    async def call(
        self,
        message: Req,
        *,
        timeout: float = ...,  # noqa: ASYNC109
        fail_fast: bool = ...,
        fallback: F,
    ) -> Rep | F: ...

    async def call(
        self,
        message: Req,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,  # noqa: ASYNC109  # a call's contract (gen_server:call)
        fail_fast: bool = False,
        fallback: object = _NO_FALLBACK,
    ) -> object:
        """Send *message* and wait for the reply, for at most *timeout* seconds in all.

        With *fallback*, the callee's failure to serve gives the fallback instead of an
        error: when it is not running (``ActorNotRunningError``, ``ActorRestartingError``),
        does not answer in time (``CallTimeoutError``), its mailbox is full
        (``MailboxFullError``), or it crashed on a ``BreakerOpenError`` (one of its breakers
        is open). A callable fallback is called with that error and its result answered;
        anything else is answered as it is. Each use is counted by reason (metrics:
        ``corral_call_fallbacks_total``). Other errors (the callee crashed on a bug of its
        own) are raised as without a fallback.

        Raises:
            CallTimeoutError: no reply in time (if the message is still queued then, it is
                not handled: it becomes a dead letter, `expired`).
            ActorNotRunningError: the actor is stopped, or stopped before replying.
            ActorCrashedError: the actor crashed handling this message (cause chained).
            ActorRestartingError: *fail_fast*, and the actor waits in backoff (rather than
                waiting for its next incarnation to answer).
            MailboxFullError: the mailbox is full and rejects or drops.
        """
        if fallback is not _NO_FALLBACK:
            return await self._call_or_fallback(message, timeout, fail_fast, fallback)
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
        return reply

    async def _call_or_fallback(
        self, message: Req, seconds: float, fail_fast: bool, fallback: object
    ) -> object:
        try:
            return await self.call(message, timeout=seconds, fail_fast=fail_fast)
        except ActorRestartingError as exc:
            error: CorralError = exc
            reason = "restarting"
        except ActorNotRunningError as exc:
            error, reason = exc, "not_running"
        except CallTimeoutError as exc:
            error, reason = exc, "timeout"
        except MailboxFullError as exc:
            error, reason = exc, "mailbox_full"
        except ActorCrashedError as exc:
            if not isinstance(exc.__cause__, BreakerOpenError):
                raise
            error, reason = exc, "breaker_open"
        cell = self._cell
        counts = cell.fallbacks
        if counts is None:
            counts = cell.fallbacks = {}
        counts[reason] = counts.get(reason, 0) + 1
        return fallback(error) if callable(fallback) else fallback

    def _timeout(self, cell: ActorCell, timeout: float) -> CallTimeoutError:
        msg = f"call to {cell.path} timed out after {timeout} s"
        return CallTimeoutError(msg, path=cell.path)


@final
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
