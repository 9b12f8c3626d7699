"""The CLI never shows a traceback: a daemon that dies mid-answer, a socket behind a directory
the user may not enter, a journal that is missing or not theirs to read. Each gets a message
that says what to do, and an exit status (4: unreachable; 1: error)."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import ROOT, TIMEOUT, run_cli

if TYPE_CHECKING:
    from pathlib import Path

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="running the CLI as another user needs root (CI runs as root)"
)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """``corral *argv`` run by uid 65534 with no groups: a user outside every group."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None  # util-linux: on every Debian
    return subprocess.run(  # a fixed tool and our own interpreter
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "corral",
            *argv,
        ],
        capture_output=True,
        text=True,
        # not measured: uid 65534 may not write the coverage data where the others go
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")},
            "PYTHONPATH": str(ROOT),
        },
        timeout=TIMEOUT,
        check=False,
    )


def test_a_daemon_that_dies_before_answering_is_exit_4(workdir: Path) -> None:
    """A daemon that closes the connection with the request unread (it exited at start, as a
    socket-activated one can) is reported, exit 4, not as a ConnectionResetError."""
    path = workdir / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()

        def die_at_once() -> None:
            conn, _ = server.accept()
            conn.recv(1)  # the request has arrived, and most of it stays unread...
            conn.close()  # ...which resets the connection

        dying = threading.Thread(target=die_at_once)
        dying.start()
        result = run_cli("--socket", str(path), "status")
        dying.join(TIMEOUT)
    assert (result.rc, result.out) == (4, "")
    assert result.err.startswith(f"corral: the daemon at {path} closed the connection")
    assert result.err.endswith(
        "before it answered: it is stopping, or it exited (see `journalctl -u corral` or its log)\n"
    )
    assert "Traceback" not in result.err


@ROOT_ONLY
def test_a_socket_behind_a_group_directory_names_the_group(workdir: Path) -> None:
    """A user who may not enter the socket's directory (0750, as RuntimeDirectory= makes
    it) is told which group may, exit 4."""
    group = grp.getgrgid(1)  # "daemon" on Debian: any group the user is not in
    run = workdir / "run"
    run.mkdir(mode=0o750)
    os.chown(run, 0, group.gr_gid)
    workdir.chmod(0o755)
    path = run / "control.sock"
    result = as_nobody("--socket", str(path), "status")
    assert (result.returncode, result.stdout) == (4, "")
    assert result.stderr == (
        f"corral: permission denied on {path}: its directory {run} is open to group"
        f" '{group.gr_name}' (sudo usermod -aG {group.gr_name} $USER, then log in again), or"
        " run as root\n"
    )


def test_logs_without_a_journal_is_an_error(workdir: Path) -> None:
    """`corral logs` where there is no journal says so and exits 1 (it printed nothing and
    exited 0)."""
    result = run_cli("logs", "--directory", str(workdir))
    assert (result.rc, result.out) == (1, "")
    assert result.err == (
        f"corral: no systemd journal in {workdir}: journald does not run here or keeps no"
        " files; the daemon then logs to its stderr (`corral run` in a terminal, or where its"
        " service manager keeps it)\n"
    )


@ROOT_ONLY
def test_logs_the_user_may_not_read_name_the_group_that_may(workdir: Path) -> None:
    """A user who may not read the journal's files is told which group may, exit 1."""
    workdir.chmod(0o755)
    journal = workdir / "system.journal"
    journal.write_bytes(b"")
    journal.chmod(0o640)
    group = grp.getgrgid(1)
    os.chown(journal, 0, group.gr_gid)
    result = as_nobody("logs", "--directory", str(workdir))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"corral: you may not read the system journal ({workdir}): members of group"
        f" '{group.gr_name}' may (sudo usermod -aG {group.gr_name} $USER, then log in again),"
        " or run as root\n"
    )
