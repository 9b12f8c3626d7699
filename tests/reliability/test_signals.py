"""Signals at every phase of a real daemon, both backends: SIGTERM, SIGINT and SIGHUP while it
boots (a child's start held open), while a reload applies (a new child's start held open) and
while it stops (a child's stop held open). The daemon always ends well: exit 0, children
stopped in reverse order, its socket file gone, its state directory free for the next daemon,
and no internal error logged. (A start that never returns and a child that shields itself
are in tests/e2e/test_breaks.py.)"""

from __future__ import annotations

import signal
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import Daemon, write_config

if TYPE_CHECKING:
    from pathlib import Path

SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP}
STEADY = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"
"""


def child(child_id: str, start: str, gate: Path) -> str:
    return textwrap.dedent(f"""
        [[supervisor.children]]
        id = "{child_id}"
        start = "tests.e2e.actors:{start}"
        args = {{ path = "{gate}" }}
    """)


def waiting(d: Daemon, what: str) -> None:
    d.wait_for(lambda r: r.get("message", "").startswith(what))


def ends_well(
    d: Daemon, workdir: Path, backend: str, stopped: list[str], daemons: list[Daemon]
) -> None:
    """Exit 0, *stopped* in this order, no socket file, no internal error, and the state
    directory free: a new daemon on the same config gets ready."""
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == stopped
    assert not d.socket.exists()
    assert not [r for r in d.seen if "traceback" in r or r.get("level") == "critical"]
    (workdir / "go").touch()  # no gate holds the next one up
    again = Daemon.start(workdir / "corral.toml", backend, wait_ready=False)
    daemons.append(again)  # stopped by the fixture if this test fails on the way
    again.wait_for(lambda r: r.get("event") == "daemon-ready")
    assert again.stop() == 0


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_a_signal_while_booting(
    workdir: Path, backend: str, daemons: list[Daemon], name: str
) -> None:
    """TERM or INT during the boot stops it (the child starting, then those before it); HUP
    reloads once the tree has started."""
    gate = workdir / "go"
    write_config(workdir, STEADY + child("b", "Gate", gate))
    d = Daemon.start(workdir / "corral.toml", backend, wait_ready=False)
    daemons.append(d)
    waiting(d, "gate: waiting for")
    d.signal(SIGNALS[name])
    if name == "HUP":
        d.wait_for(lambda r: r.get("message", "").startswith("SIGHUP during the boot"))
        gate.touch()
        d.wait_for(lambda r: r.get("event") == "reload")  # once up: "reload: no changes"
        d.signal(signal.SIGTERM)
    ends_well(d, workdir, backend, ["/b", "/a"], daemons)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_a_signal_while_a_reload_applies(
    workdir: Path, backend: str, daemons: list[Daemon], name: str
) -> None:
    """TERM or INT while a reload starts a new child stops everything; HUP waits for the
    reload under way, then applies (nothing more)."""
    gate = workdir / "go"
    config = write_config(workdir, STEADY)
    d = Daemon.start(config, backend)
    daemons.append(d)
    write_config(workdir, STEADY + child("b", "Gate", gate))
    d.signal(signal.SIGHUP)
    waiting(d, "gate: waiting for")
    d.signal(SIGNALS[name])
    if name == "HUP":
        gate.touch()
        d.wait_for(lambda r: r.get("message") == "reload: no changes")  # the second one
        d.signal(signal.SIGTERM)
    ends_well(d, workdir, backend, ["/b", "/a"], daemons)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_a_signal_while_stopping(
    workdir: Path, backend: str, daemons: list[Daemon], name: str
) -> None:
    """During a stop, TERM or INT forces it (the slow stop is cut short); HUP is refused (the
    daemon is stopping) and the stop goes on."""
    gate = workdir / "go"
    write_config(workdir, STEADY + child("b", "GatedStop", gate))
    d = Daemon.start(workdir / "corral.toml", backend)
    daemons.append(d)
    d.signal(signal.SIGTERM)
    waiting(d, "gated stop: waiting for")
    d.signal(SIGNALS[name])
    if name == "HUP":
        d.wait_for(lambda r: r.get("message", "").startswith("reload not applied: the daemon"))
        gate.touch()
    ends_well(d, workdir, backend, ["/b", "/a"], daemons)
