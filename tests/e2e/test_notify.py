"""sd_notify: what the daemon tells systemd, read from ``sd-notify-listen``'s log.

The daemon runs under ``sd-notify-listen --log FILE`` (systemd's side of sd_notify(3), and its
watchdog when asked); its JSON log on stderr still works. A notification is a line of FILE
once the listener has received it, so a test reads FILE until the line it expects appears,
within ``TIMEOUT``: there is no event to wait on across the two processes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from corral.daemon.systemd import STATUS_EVERY
from tests.e2e.support import ROOT, TIMEOUT, Daemon, Raw, shared_tool, write_config

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path


class Notifications:
    """The lines of sd-notify-listen's log: ``{"t": s, "pid": n, "fields": {...}}``, or a
    verdict (``{"t": s, "verdict": "watchdog", "why": ...}``) when it killed the command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]  # whole lines

    def wait_for(
        self, match: Callable[[dict[str, str]], bool], *, after: int = 0
    ) -> tuple[int, dict[str, str]]:
        """The index (in ``read()``) and fields of the first notification from *after* on that
        matches."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            lines = self.read()
            for index, line in enumerate(lines[after:], after):
                if "fields" in line and match(line["fields"]):
                    return index, line["fields"]
            if time.monotonic() > deadline:
                msg = f"no matching notification within {TIMEOUT} s; got {lines[after:][-20:]}"
                raise AssertionError(msg)
            time.sleep(0.02)

    def fields(self) -> list[dict[str, str]]:
        return [line["fields"] for line in self.read() if "fields" in line]


def is_ready(fields: dict[str, str]) -> bool:
    return fields.get("READY") == "1"


def start(
    workdir: Path,
    body: str,
    backend: str,
    daemons: list[Daemon],
    *,
    daemon: str = "",
    listener: Sequence[str] = (),
    wait_ready: bool = True,
) -> tuple[Daemon, Notifications]:
    """A daemon under sd-notify-listen (with *listener*'s options) and its notifications."""
    log = workdir / "notify.log"
    prefix = (shared_tool("sd-notify-listen"), "--log", str(log), *listener, "--")
    config = write_config(workdir, body, daemon=daemon)
    daemons.append(d := Daemon.start(config, backend, wait_ready=wait_ready, prefix=prefix))
    return d, Notifications(log)


def stopped(records: list[dict[str, Any]]) -> list[str]:
    return [r["path"] for r in records if r.get("event") == "child-stopped"]


TREE = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "g"
type = "supervisor"
children = [
  { id = "x", start = "tests.e2e.actors:Echo" },
  { id = "y", start = "tests.e2e.actors:Steady" },
]
"""


def test_ready_comes_once_every_child_has_started(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """READY=1 comes after every child started, after STATUS "starting ..." and their EXTENDs."""
    gate = workdir / "open"
    body = (
        TREE
        + f"""
    [[supervisor.children]]
    id = "gate"
    start = "tests.e2e.actors:Gate"
    args = {{ path = "{gate}" }}
    """
    )
    d, notes = start(workdir, body, backend, daemons, wait_ready=False)
    d.wait_for(lambda r: r["message"] == f"gate: waiting for {gate}")
    # The boot is held by /gate: everything before it has started, and no READY was sent.
    assert [r["path"] for r in d.records("child-started")] == ["/a", "/g/x", "/g/y", "/g"]
    notes.wait_for(lambda f: "EXTEND_TIMEOUT_USEC" in f)  # the boot is making progress
    assert not [f for f in notes.fields() if is_ready(f)]

    gate.touch()
    index, ready = notes.wait_for(is_ready)
    assert ready == {"READY": "1", "STATUS": "5/5 running, 0 in backoff; service full"}
    before = notes.fields()[:index]
    assert before[0] == {"STATUS": "starting 3 children under /"}
    assert [f for f in before if "STATUS" in f] == [before[0]]
    extends = [f for f in before if "EXTEND_TIMEOUT_USEC" in f]
    # The daemon's log agrees: all five child-started records come before its "ready" line.
    d.wait_for(lambda r: r.get("event") == "daemon-ready")
    started = [r["path"] for r in d.records("child-started")]
    assert started == ["/a", "/g/x", "/g/y", "/g", "/gate"]
    assert 1 <= len(extends) <= len(started)  # one per child started, at most one a second


def test_status_follows_the_tree(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """After `corral stop` of a child, STATUS says one fewer is running and the service level
    (an essential child stopped: minimal); at most once a second."""
    body = (
        TREE
        + """
    [[supervisor.children]]
    id = "b"
    start = "tests.e2e.actors:Echo"
    """
    )
    d, notes = start(workdir, body, backend, daemons)
    ready, fields = notes.wait_for(is_ready)
    assert fields["STATUS"] == "5/5 running, 0 in backoff; service full"
    assert d.cli("stop", "/a").rc == 0
    first, _ = notes.wait_for(lambda f: "STATUS" in f, after=ready + 1)
    assert notes.fields()[first] == {"STATUS": "4/5 running, 0 in backoff; service minimal"}
    assert d.cli("stop", "/g/x").rc == 0  # within the second: its STATUS waits for its end
    second, _ = notes.wait_for(lambda f: "STATUS" in f, after=first + 1)
    assert notes.fields()[second] == {"STATUS": "3/5 running, 0 in backoff; service minimal"}
    lines = notes.read()
    # A second apart, as received (the listener's own delays are allowed for).
    assert lines[second]["t"] - lines[first]["t"] >= STATUS_EVERY / 2


def test_reload_sends_reloading_then_ready(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """`corral reload` sends RELOADING=1 with the current MONOTONIC_USEC, then READY=1."""
    d, notes = start(workdir, TREE, backend, daemons)
    ready, _ = notes.wait_for(is_ready)
    write_config(
        workdir, TREE + '\n[[supervisor.children]]\nid = "b"\nstart = "tests.e2e.actors:Echo"\n'
    )
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    result = d.cli("reload")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert result.rc == 0, result
    reloading, fields = notes.wait_for(lambda f: "RELOADING" in f, after=ready + 1)
    assert fields.keys() == {"RELOADING", "MONOTONIC_USEC", "STATUS"}
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    _, fields = notes.wait_for(is_ready, after=reloading + 1)
    assert fields == {"READY": "1", "STATUS": "5/5 running, 0 in backoff; service full"}


SLOW = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "s1"
start = "tests.e2e.actors:SlowStop"
args = { seconds = 0.3 }
shutdown = 2.0

[[supervisor.children]]
id = "s2"
start = "tests.e2e.actors:SlowStop"
args = { seconds = 0.3 }
shutdown = 2.0

[[supervisor.children]]
id = "b"
start = "tests.e2e.actors:Echo"
"""
PROGRESS = 9.0  # progress-timeout: more than the longest shutdown (2 s) + 5 s


@pytest.mark.parametrize("how", ["SIGTERM", "corral shutdown"])
def test_stopping_extends_the_timeout_per_child(
    workdir: Path, backend: str, daemons: list[Daemon], how: str
) -> None:
    """A stop sends STOPPING=1, then EXTEND_TIMEOUT_USEC >= progress-timeout as children stop,
    at most once a second."""
    d, notes = start(workdir, SLOW, backend, daemons, daemon=f"progress-timeout = {PROGRESS}")
    ready, _ = notes.wait_for(is_ready)
    if how == "SIGTERM":
        assert d.cli("status").rc == 0  # served: its signal handlers are in place
        d.signal(signal.SIGTERM)
    else:
        assert d.cli("shutdown").rc == 0
    assert d.wait() == 0
    assert stopped(d.seen) == ["/b", "/s2", "/s1", "/a"]
    lines = notes.fields()[ready + 1 :]
    [stopping] = [i for i, f in enumerate(lines) if "STOPPING" in f]
    assert lines[stopping] == {
        "STOPPING": "1",
        "STATUS": "stopping: children stop in reverse start order",
    }
    extends = [f["EXTEND_TIMEOUT_USEC"] for f in lines[stopping:] if "EXTEND_TIMEOUT_USEC" in f]
    assert 1 <= len(extends) <= 4  # at most one per child stopped
    assert min(int(usec) for usec in extends) >= PROGRESS * 1e6
    read = notes.read()
    since = next(i for i, line in enumerate(read) if "STOPPING" in line.get("fields", {}))
    times = [line["t"] for line in read[since:] if "EXTEND_TIMEOUT_USEC" in line["fields"]]
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))


STALLERS = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "stallers"
type = "supervisor"
child = { id = "b", start = "tests.e2e.actors:Blocker", restart = "temporary" }
"""


def test_a_healthy_daemon_pets_the_watchdog(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A healthy daemon sends WATCHDOG=1 from its own pid and the enforced watchdog spares it."""
    listener = ("--watchdog-usec", "1000000", "--enforce-watchdog")
    d, notes = start(workdir, STALLERS, backend, daemons, listener=listener)
    ready, _ = notes.wait_for(is_ready)
    third = ready
    for _ in range(3):
        third, _ = notes.wait_for(lambda f: f.get("WATCHDOG") == "1", after=third + 1)
    with Raw(d.socket) as client:
        pid = client.ask({"command": "ping"})["result"]["pid"]
    lines = notes.read()[: third + 1]
    assert not [line for line in lines if "verdict" in line]
    pings = [line for line in lines if line["fields"].get("WATCHDOG") == "1"]
    assert {line["pid"] for line in pings} == {pid}
    assert d.proc.poll() is None
    assert d.stop() == 0


def trigger(d: Daemon, *args: str) -> subprocess.Popen[bytes]:
    """The CLI in a process of its own, for a command whose answer the test does not wait for."""
    return subprocess.Popen(
        [sys.executable, "-m", "corral", "--socket", str(d.socket), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_blocked_loop_stops_the_pings_and_the_watchdog_aborts_it(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A loop blocked by an actor is logged as its stall, then the watchdog aborts it (exit 4)."""
    listener = ("--watchdog-usec", "1000000", "--enforce-watchdog")
    d, notes = start(
        workdir, STALLERS, backend, daemons, daemon="loop-stall-timeout = 0.2", listener=listener
    )
    ready, _ = notes.wait_for(is_ready)
    notes.wait_for(lambda f: f.get("WATCHDOG") == "1", after=ready + 1)
    cli = trigger(d, "start-child", "/stallers", "--id", "b1", "--args", '{"seconds": 10}')
    try:
        stall = d.event("loop-stall", "/stallers/b1")
        assert stall["level"] == "error"
        assert stall["message"].startswith("event loop stalled for ")
        assert "blocked by actor /stallers/b1" in stall["message"]
        assert d.wait() == 4
    finally:
        cli.wait(timeout=TIMEOUT)  # its connection ended with the daemon
    lines = notes.read()
    [verdict] = [line for line in lines if "verdict" in line]
    assert verdict["verdict"] == "watchdog"
    pings = [line["t"] for line in lines if line.get("fields", {}).get("WATCHDOG") == "1"]
    assert verdict["t"] - pings[-1] >= 0.999  # no ping for the watchdog's second (t: in ms)
    assert not [r for r in d.seen if r.get("message") == "stopped"]


def stalls(d: Daemon) -> float:
    """corral_event_loop_stalls_total, as `corral metrics` gives it."""
    result = d.cli("metrics")
    assert result.rc == 0, result
    [value] = [
        line.split()[1]
        for line in result.out.splitlines()
        if line.startswith("corral_event_loop_stalls_total ")
    ]
    return float(value)


def test_a_short_stall_is_counted_and_survived(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A 1 s stall (watchdog 5 s) adds one to corral_event_loop_stalls_total; the daemon lives."""
    listener = ("--watchdog-usec", "5000000", "--enforce-watchdog")
    d, notes = start(
        workdir, STALLERS, backend, daemons, daemon="loop-stall-timeout = 0.3", listener=listener
    )
    notes.wait_for(is_ready)
    before = stalls(d)
    result = d.cli("start-child", "/stallers", "--id", "b1", "--args", '{"seconds": 1.0}')
    assert result.rc == 0, result
    assert d.event("loop-stall", "/stallers/b1")["level"] == "error"
    recovered = d.wait_for(lambda r: r.get("event") == "loop-recovered")
    assert 0.8 <= recovered["delay"] < TIMEOUT
    assert stalls(d) == before + 1
    assert d.stop() == 0
    assert not [line for line in notes.read() if "verdict" in line]
