"""A real daemon in a subprocess, driven by the real CLI over its real Unix socket.

Readiness and events are read from the daemon's JSON log on stderr (no sleeping): a reader
thread queues each line and ``wait_for`` blocks on the queue until a line matches.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from corral.daemon import cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0  # generous: CI machines are slow; a passing test never waits this long


def shared_tool(name: str) -> str:
    """The path of a test tool in ``$CORRAL_SHARED_TOOLS`` (``/work/shared/tools``); a missing
    one fails the test (CI must have it), never skips it."""
    path = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools")) / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing or not executable: set CORRAL_SHARED_TOOLS to the tools")
    return str(path)


@attrs.frozen
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def write_config(
    directory: Path,
    body: str,
    *,
    name: str = "corral.toml",
    daemon: str = "",
    log_format: str = "json",
) -> Path:
    """A config whose [daemon] section points into *directory*; *body* is the rest.

    *daemon* holds more ``[daemon]`` keys, e.g. ``"max-connections = 2"``; *log_format* is
    the ``log-format`` (``"journal"``: the log goes to journald, not to stderr).
    """
    path = directory / name
    section = textwrap.dedent(f"""
        [daemon]
        control-socket = "{directory / "control.sock"}"
        state-directory = "{directory / "state"}"
        metrics-listen = ""
        log-format = "{log_format}"
        log-level = "debug"
    """)
    path.write_text(section + textwrap.dedent(daemon) + "\n" + textwrap.dedent(body))
    return path


@attrs.define
class Daemon:
    """One ``corral run`` subprocess."""

    proc: subprocess.Popen[str]
    socket: Path
    lines: queue.Queue[dict[str, Any] | None]
    seen: list[dict[str, Any]] = attrs.field(factory=list)
    muted: threading.Event = attrs.field(factory=threading.Event)

    @classmethod
    def start(
        cls,
        config: Path,
        backend: str,
        *,
        wait_ready: bool = True,
        cwd: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> Daemon:
        """*prefix* runs the daemon under another command (``with-journald --``): its argv
        comes first, and ``proc`` is that command (signals reach the daemon through it)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "corral", "run", str(config), "--backend", backend],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd or config.parent,
        )
        lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        muted = threading.Event()
        threading.Thread(target=_read, args=(proc, lines, muted), daemon=True).start()
        daemon = cls(proc, config.parent / "control.sock", lines, muted=muted)
        if wait_ready:
            daemon.wait_for(lambda r: "ready" in r.get("message", ""))
        return daemon

    def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first log record from now on for which *match* is true."""
        while True:
            try:
                record = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                msg = f"no matching log line within {TIMEOUT} s; seen: {self.seen[-20:]}"
                raise AssertionError(msg) from None
            if record is None:
                msg = f"the daemon exited ({self.proc.wait()}); seen: {self.seen[-20:]}"
                raise AssertionError(msg)
            self.seen.append(record)
            if match(record):
                return record

    def event(self, name: str, path: str) -> dict[str, Any]:
        return self.wait_for(lambda r: r.get("event") == name and r.get("path") == path)

    def cli(self, *args: str) -> Result:
        """The CLI in this process (its real code, over the real socket)."""
        return run_cli("--socket", str(self.socket), *args)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        """The exit code, once the daemon has exited (its log is drained first)."""
        while (record := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(record)
        rc = self.proc.wait(timeout=TIMEOUT)
        assert self.proc.stderr is not None
        self.proc.stderr.close()  # the reader thread has seen its end
        return rc

    def drain(self) -> None:
        """Move the log records read so far into ``seen``, without waiting for more."""
        while True:
            try:
                record = self.lines.get_nowait()
            except queue.Empty:
                return
            if record is None:
                self.lines.put(None)  # the end stays the end, for wait()
                return
            self.seen.append(record)

    def mute(self) -> None:
        """From now on the log is read and dropped (a crash storm logs thousands of lines a
        second); ``wait`` still sees the daemon exit."""
        self.muted.set()

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if r.get("event") == event]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()


def _read(
    proc: subprocess.Popen[str], lines: queue.Queue[dict[str, Any] | None], muted: threading.Event
) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if muted.is_set():
            continue  # read and dropped: a storm's log must neither block the daemon nor pile up
        try:
            lines.put(json.loads(line))
        except json.JSONDecodeError:
            lines.put({"message": line.rstrip(), "raw": True})  # e.g. a traceback
    lines.put(None)


def run_cli(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            rc = int(exc.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


class Raw:
    """A control connection by hand (no CLI): bytes out, JSON lines in."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(os.fspath(path))
        self._file = self.sock.makefile("rb")

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send *data*; a daemon that has closed this connection already is not an error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """The next line, decoded; None once the daemon has closed the connection."""
        try:
            line = self._file.readline()
        except ConnectionResetError:  # closed with our unread request still queued
            return None
        return json.loads(line) if line else None

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(json.dumps(request).encode() + b"\n")
        response = self.receive()
        assert response is not None, f"the daemon closed the connection after {request}"
        return response

    def closed(self) -> bool:
        """True once the daemon has closed the connection, after any lines still unread."""
        while self.receive() is not None:
            pass
        return True


@contextlib.contextmanager
def shared_daemon(body: str, backend: str, *, daemon: str = "") -> Iterator[Daemon]:
    """A daemon in its own directory for a module-scoped fixture: tests that leave its tree as
    they found it share it (one start instead of one per test)."""
    directory = Path(tempfile.mkdtemp(prefix="corral-"))
    try:
        d = Daemon.start(write_config(directory, body, daemon=daemon), backend)
        try:
            assert d.cli("status").rc == 0  # served: its signal handlers are in place
            yield d
        finally:
            d.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
