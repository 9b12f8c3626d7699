"""Timers: messages an actor sends itself later (``ctx.send_after``, ``ctx.send_interval``).

One task per tree (``TimerWheel.run``, started with the first timer) sleeps until the earliest
deadline of a heap and queues what is due into the actors' own mailboxes, so a timer costs a
heap entry, not a task, and a dormant actor is woken by its tick like by any message.

The rules:

* A timer belongs to the incarnation that armed it. When that incarnation ends (a crash, a
  stop, a return), its timers are cancelled, and a tick of theirs still queued in the mailbox
  (which survives the restart) is skipped when it comes up: no stale tick after a restart.
* A tick is queued wrapped (``Tick``), so the receive path knows it: an interval's next tick
  is not queued while its last one is still waiting (at most one pending: a slow handler
  does not pile them up), and ticks that fell due while the loop was busy are not caught up
  in a burst (the next one is a period after the late one).
* A tick that does not fit (a full mailbox, or a stopped actor) is dropped: a timer never
  blocks the wheel. Its message is kept as a dead letter (``dropped``).
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, final

import anyio

from corral.actors.mailbox import MailboxFull

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from corral.actors.cell import ActorCell

    Spawn = Callable[[Callable[[], Coroutine[object, object, None]]], object]

__all__ = ("Tick", "Timer", "TimerWheel", "check_delay")


def check_delay(name: str, seconds: object, *, positive: bool = False) -> float:
    """*seconds* as a float, or ``ValueError``/``TypeError`` saying what was expected."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        msg = f"{name} must be a number of seconds, got {seconds!r}"
        raise TypeError(msg)
    value = float(seconds)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        msg = f"{name} must be finite seconds {bound}, got {seconds!r}"
        raise ValueError(msg)
    return value


@final
class Timer:
    """A timer an actor armed: ``cancel()`` stops it (a tick already queued is skipped)."""

    __slots__ = ("_wheel", "cancelled", "cell", "message", "pending", "period")

    def __init__(
        self, wheel: TimerWheel, cell: ActorCell, message: object, period: float | None
    ) -> None:
        self._wheel = wheel
        self.cell = cell
        self.message = message
        self.period = period  # None: once
        self.cancelled = False
        self.pending = False  # a tick of it waits in the mailbox

    def __repr__(self) -> str:
        kind = "once" if self.period is None else f"every {self.period:g} s"
        state = " cancelled" if self.cancelled else ""
        return f"<Timer {self.cell.path} {self.message!r} {kind}{state}>"

    def cancel(self) -> None:
        """Stop it: no tick from now on, and a tick of it still queued is skipped."""
        if not self.cancelled:
            self.cancelled = True
            timers = self.cell.timers
            if timers is not None:
                timers.discard(self)

    def taken(self) -> bool:
        """Its tick came up in the mailbox: whether to deliver it (False: cancelled since)."""
        self.pending = False
        if self.cancelled:
            return False
        if self.period is None:  # fired once: done
            self.cancel()
        return True


@final
class Tick:
    """A timer's message in the mailbox (unwrapped when it is taken)."""

    __slots__ = ("timer",)

    def __init__(self, timer: Timer) -> None:
        self.timer = timer


class TimerWheel:
    """The tree's timers: one heap, one task (spawned with *spawn* at the first timer)."""

    def __init__(self, spawn: Spawn | None = None) -> None:
        self.spawn = spawn  # the tree's task group's start_soon, once the tree runs
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._running = False
        self._closed = False

    def arm(self, cell: ActorCell, delay: float, message: object, period: float | None) -> Timer:
        """A timer for *cell*'s running incarnation: *message* in *delay* seconds, then
        every *period* seconds if not None."""
        if self._closed:
            msg = f"actor {cell.path}: the tree is stopping, no timer can be armed"
            raise RuntimeError(msg)
        timer = Timer(self, cell, message, period)
        timers = cell.timers
        if timers is None:
            timers = cell.timers = set()
        timers.add(timer)
        self._push(anyio.current_time() + delay, timer)
        if not self._running:
            spawn = self.spawn
            assert spawn is not None  # the tree runs: its actors do
            self._running = True
            spawn(self.run)
        return timer

    def _push(self, deadline: float, timer: Timer) -> None:
        heap = self._heap
        self._seq += 1
        heapq.heappush(heap, (deadline, self._seq, timer))
        wake = self._wake
        if wake is not None and heap[0][2] is timer:
            wake.set()  # a new earliest deadline

    async def run(self) -> None:
        """Queue what is due, then sleep until the next deadline or an earlier new one."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            heap = self._heap
            while True:
                now = anyio.current_time()
                while heap and heap[0][0] <= now:
                    _, _, timer = heapq.heappop(heap)
                    if not timer.cancelled:
                        self._fire(timer, now)
                wake = self._wake = anyio.Event()
                if heap:
                    with anyio.move_on_after(heap[0][0] - now):
                        await wake.wait()
                else:
                    await wake.wait()

    def _fire(self, timer: Timer, now: float) -> None:
        if timer.period is not None:  # the next one first: a period after this (late) one
            self._push(now + timer.period, timer)
            if timer.pending:
                return  # the last tick still waits: at most one pending
        cell = timer.cell
        try:
            queued = cell.accepting and cell.mailbox.put_nowait(Tick(timer))
        except MailboxFull:
            queued = False
        if queued:
            timer.pending = True
            return
        cell.dead_letter(timer.message, "dropped", None)
        if timer.period is None:
            timer.cancel()

    def close(self) -> None:
        """The tree has stopped: no timer fires any more."""
        self._closed = True
        self._heap.clear()
        if self._scope is not None:
            self._scope.cancel()
