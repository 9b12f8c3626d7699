"""Monitors: an actor asks to be told when another actor's incarnation ends (``ctx.monitor``).

As OTP's ``monitor/2`` and Akka's ``watch``: the watcher gets one ``Down(path, kind, reason)``
message when the incarnation of the watched actor that was running ends, however it ends
(``kind``: ``normal``, ``error`` with the exception as ``reason``, ``stopped``), and then the
monitor is done (a restarted actor is a new incarnation: monitor it again). Monitoring an
actor that is not running, or a path where there is none, delivers ``Down(path, "noproc",
None)`` at once. A monitor belongs to the watcher's incarnation: when that ends, its monitors
are cancelled (``cancel()`` ends one sooner, as OTP's ``demonitor``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, final

import attrs

from corral.actors.mailbox import MailboxFull

if TYPE_CHECKING:
    from corral.actors.cell import ActorCell

__all__ = ("Down", "Monitor")


@attrs.frozen
class Down:
    """The watched actor's incarnation ended: ``kind`` is ``normal``, ``error`` (``reason``
    is the exception), ``stopped``, or ``noproc`` (it was not running when monitored)."""

    path: str
    kind: str
    reason: BaseException | None = None


@final
class Monitor:
    """A watcher's monitor of one actor; ``cancel()`` removes it (no ``Down`` then)."""

    __slots__ = ("active", "path", "target", "watcher")

    def __init__(self, watcher: ActorCell, path: str, target: ActorCell | None) -> None:
        self.watcher = watcher
        self.path = path
        self.target = target
        self.active = True

    def __repr__(self) -> str:
        state = "" if self.active else " (done)"
        return f"<Monitor {self.watcher.path} -> {self.path}{state}>"

    def cancel(self) -> None:
        """Stop watching: no ``Down`` will come from this monitor."""
        if self.active:
            self.active = False
            self._forget()

    def fire(self, down: Down) -> None:
        """Deliver *down* to the watcher (once), if still watching."""
        if not self.active:
            return
        self.active = False
        self._forget()
        watcher = self.watcher
        try:
            queued = watcher.accepting and watcher.mailbox.put_nowait(down)
        except MailboxFull:
            queued = False
        if not queued:
            watcher.dead_letter(down, "dropped", None)

    def _forget(self) -> None:
        watching = self.watcher.watching
        if watching is not None:
            watching.discard(self)
        target = self.target
        if target is not None and target.monitors is not None:
            with contextlib.suppress(ValueError):  # fired: the target let go of its list
                target.monitors.remove(self)
