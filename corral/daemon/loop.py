"""The loop monitor: how late the event loop runs, and who blocks it when it stalls.

Two halves. In the loop, a task sleeps ``INTERVAL`` at a time and records how late each wake-up
was (``corral_event_loop_lag_seconds``) and when it last ran (the heartbeat). Outside the
loop, a thread reads the heartbeat: once it is older than ``loop-stall-timeout`` the loop is
stalled, almost always by an actor calling something blocking. The thread then logs the
actor that was running (the innermost frame that holds an ``ActorCell``) and the loop thread's
stack, counts the stall, and logs again when the loop runs on. ``healthy()`` is what the
systemd watchdog asks before each ``WATCHDOG=1``: a stall that lasts stops the petting, and
systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Final

import anyio

from corral.actors.cell import ActorCell

if TYPE_CHECKING:
    from types import FrameType

    from corral.daemon.metrics import Counters

__all__ = ("INTERVAL", "LoopMonitor", "running_actor")

log = logging.getLogger("corral.loop")
INTERVAL: Final = 0.1  # seconds between heartbeats; also the resolution of a stall's length


def running_actor(frame: FrameType | None) -> str | None:
    """The path of the actor whose code runs in *frame* (innermost first), if any."""
    while frame is not None:
        cell = frame.f_locals.get("cell")
        if isinstance(cell, ActorCell):
            return cell.path
        frame = frame.f_back
    return None


class LoopMonitor:
    """Heartbeat in the loop (``run``), stall watcher in a thread (started by ``run``)."""

    def __init__(self, counters: Counters, stall_timeout: float) -> None:
        self.counters = counters
        self.stall_timeout = stall_timeout
        self.heartbeat = time.monotonic()
        self.stalled_since: float | None = None
        self._loop_thread = threading.get_ident()
        self._done = threading.Event()

    def healthy(self) -> bool:
        """Whether the loop ran within ``stall_timeout`` (thread-safe)."""
        return time.monotonic() - self.heartbeat < self.stall_timeout

    async def run(self) -> None:
        """The heartbeat; runs until cancelled, with the watcher thread beside it."""
        self._loop_thread = threading.get_ident()
        self.heartbeat = time.monotonic()
        watcher = threading.Thread(target=self._watch, name="corral-loop-monitor", daemon=True)
        watcher.start()
        lag = self.counters.lag
        try:
            while True:
                before = time.monotonic()
                await anyio.sleep(INTERVAL)
                now = self.heartbeat = time.monotonic()
                lag.observe(max(0.0, now - before - INTERVAL))
        finally:
            self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(INTERVAL):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Compare the heartbeat with *now*: log a stall once when it begins and when it ends."""
        age = now - self.heartbeat
        if self.stalled_since is None:
            if age >= self.stall_timeout:
                self.stalled_since = self.heartbeat
                self.counters.stalls += 1
                self._report(age)
        elif age < self.stall_timeout:
            length = self.heartbeat - self.stalled_since
            self.stalled_since = None
            log.warning(
                "the event loop runs again after a stall of %.1f s",
                length,
                extra={"fields": {"event": "loop-recovered", "delay": round(length, 3)}},
            )

    def _report(self, age: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)  # the one way to see it
        path = running_actor(frame)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        who = f"actor {path}" if path else "code outside any actor"
        log.error(
            "event loop stalled for %.1f s (loop-stall-timeout %g s), blocked by %s; everything"
            " else waits. Its stack, innermost last:\n%s",
            age,
            self.stall_timeout,
            who,
            stack.rstrip(),
            extra={
                "fields": {
                    "event": "loop-stall",
                    "path": path,
                    "delay": round(age, 3),
                    "stack": stack,
                }
            },
        )
