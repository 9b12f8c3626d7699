"""All that corral knows of systemd: sd_notify(3), the watchdog and socket activation.

Notifications are datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@`` for an abstract address),
written directly: the protocol is one ``sendto`` and needs no library. What is sent, and when:

- ``STATUS=`` while booting, then a one-line summary of the tree kept current
  ("12/12 running, 0 in backoff"), at most once a second and only when something changed;
- ``READY=1`` once the whole tree has started (``open_tree`` has returned);
- ``EXTEND_TIMEOUT_USEC=`` on each child started while booting and each child stopped while
  stopping (at most once a second): a slow but moving start or stop is given
  ``progress-timeout`` more each time, and a stuck one is still ended by
  ``TimeoutStartSec=``/``TimeoutStopSec=``;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload begins, ``READY=1`` when it ends;
- ``STOPPING=1`` when the stop begins;
- ``WATCHDOG=1`` every half ``WatchdogSec`` from a task on the event loop, and only while the
  loop monitor finds the loop healthy: a loop blocked for longer than ``WatchdogSec`` stops the
  petting, and systemd kills and restarts the daemon (``Restart=on-watchdog`` or broader).

Socket activation (``corral.socket``): ``activated_socket`` takes the listening control socket
from ``LISTEN_FDS`` (the one named ``control``, else the first), and the daemon binds its own
only when none was passed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Final

import anyio

from corral.supervisors.core import ChildStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping

    from corral.supervisors.levels import ServiceLevel


__all__ = ("SD_LISTEN_FDS_START", "Notifier", "activated_socket", "summary")

log = logging.getLogger("corral.systemd")
SD_LISTEN_FDS_START: Final = 3
STATUS_EVERY: Final = 1.0  # seconds: the STATUS= line changes at most this often
EXTEND_EVERY: Final = 1.0  # seconds: EXTEND_TIMEOUT_USEC= is sent at most this often
MAX_EXTEND: Final = 10**15  # microseconds (about 31 years): what EXTEND_TIMEOUT_USEC can ask
WATCHDOG_FLOOR: Final = 0.05  # seconds: the shortest pet interval, whatever WATCHDOG_USEC says


class Notifier:
    """sd_notify(3) to the socket in ``$NOTIFY_SOCKET``; every method does nothing without it."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 if usec.isdigit() and mine else 0.0
        self._last_status = ""
        self._extended = -math.inf  # when EXTEND_TIMEOUT_USEC was last sent

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: object) -> None:
        """Send ``KEY=value`` lines; a lost datagram is logged, never raised."""
        sock = self._sock
        if sock is None:
            return
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            sock.sendto(text.encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s (%s)", self.address, exc, text)

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(STATUS=text)

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading the config")

    def stopping(self) -> None:
        self._extended = -math.inf  # the stop's first progress is reported at once
        self._last_status = "stopping: children stop in reverse start order"
        self.send(STOPPING=1, STATUS=self._last_status)

    def extend(self, seconds: float) -> None:
        """Ask for *seconds* more; sent at most once a second (a pool of 100,000 stopping
        would otherwise send as many datagrams), which is plenty for a window of seconds."""
        now = time.monotonic()
        if now - self._extended < EXTEND_EVERY:
            return
        self._extended = now
        # A window past MAX_EXTEND (an "infinity" shutdown, a huge timeout) is sent as
        # MAX_EXTEND: an integer systemd accepts, and more than any stop will take.
        usec = MAX_EXTEND if not seconds < MAX_EXTEND / 1e6 else int(seconds * 1e6)
        self.send(EXTEND_TIMEOUT_USEC=usec)

    async def pet(self, healthy: Callable[[], bool]) -> None:
        """``WATCHDOG=1`` every half interval while *healthy*; returns at once without one."""
        interval = self.watchdog_interval
        if not interval or self._sock is None:
            return
        while True:
            if healthy():
                self.send(WATCHDOG=1)
            await anyio.sleep(max(interval / 2, WATCHDOG_FLOOR))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def summary(census: Mapping[ChildStatus, int], level: ServiceLevel | None = None) -> str:
    """The STATUS= line from ``Tree.census()``: "12/12 running, 0 in backoff" over every
    actor and supervisor, ", 1 failed" while any child is failed, and "; service degraded"
    with the tree's service *level*."""
    total = sum(census.values())
    running = census.get(ChildStatus.RUNNING, 0)
    backoff = census.get(ChildStatus.BACKOFF, 0)
    failed = census.get(ChildStatus.FAILED, 0)
    line = f"{running}/{total} running, {backoff} in backoff"
    if failed:
        line += f", {failed} failed"
    return line if level is None else f"{line}; service {level.value}"


def activated_socket(environ: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The control socket passed by systemd (``LISTEN_FDS``), or None.

    The variables are removed once read, as sd_listen_fds(3) does with ``unset_environment``,
    so that processes the daemon starts do not take them for theirs.

    Raises:
        OSError: the passed descriptor is not a listening Unix stream socket.
    """
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    if pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        return None
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))
    index = names.index("control") if "control" in names[: len(fds)] else 0
    fd = fds[index]
    for other in fds:  # the others are not ours to keep open in children
        if other != fd:
            with contextlib.suppress(OSError):
                os.set_inheritable(other, False)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        msg = f"fd {fd} passed by systemd is not a socket ({exc.strerror or exc})"
        raise OSError(msg) from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        family, kind = sock.family.name, sock.type.name
        sock.detach()
        msg = (
            f"the socket passed by systemd (fd {fd}) is {family}/{kind}"
            f"{'' if listening else ', not listening (Accept=yes?)'}: corral needs a listening"
            " AF_UNIX stream socket (ListenStream=/path, Accept=no)"
        )
        raise OSError(msg)
    sock.setblocking(False)
    return sock
