"""The daemon starts, answers the CLI, and stops in order."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from tests.e2e.support import Daemon, write_config

if TYPE_CHECKING:
    from pathlib import Path

TREE = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"
[[supervisor.children]]
id = "b"
start = "tests.e2e.actors:Echo"
"""


def test_status_shows_the_tree(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """`corral status --json` lists every child with its path, type, state and restarts."""
    daemons.append(d := Daemon.start(write_config(workdir, TREE), backend))
    result = d.cli("status", "--json")
    assert result.rc == 0, result.err
    node = result.json()
    assert [c["path"] for c in node["children"]] == ["/a", "/b"]
    assert {c["state"] for c in node["children"]} == {"running"}
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    stopped = [r["path"] for r in d.records("child-stopped")]
    assert stopped == ["/b", "/a"]
