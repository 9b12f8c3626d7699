"""An application's own log records in a real daemon (JSON lines): any logger's, the actor's
logger's and ``warnings``, each with the path of the actor that made it, in the daemon's
format, at its level, in order with the daemon's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.e2e.support import Daemon, write_config

if TYPE_CHECKING:
    from pathlib import Path

TREE = """
[supervisor]
[[supervisor.children]]
id = "app"
type = "supervisor"
children = [{ id = "chatty", start = "tests.e2e.actors:Chatty" }]
"""


def test_an_actors_records_carry_its_path(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A module logger's info, the actor's logger's warning and a warnings.warn all reach the
    daemon's log, as JSON lines with time, level, logger and the actor's path."""
    d = Daemon.start(write_config(workdir, TREE), backend, wait_ready=False)
    daemons.append(d)
    d.wait_for(lambda r: r.get("event") == "daemon-ready")
    started = [i for i, r in enumerate(d.seen) if r.get("event") == "child-started"]
    mine = {
        r["message"]: r
        for r in d.seen
        if r.get("logger", "").startswith(("jobsvc", "tests", "py."))
    }
    info = mine["jobsvc: pricing ready"]
    assert (info["level"], info["logger"], info["path"]) == ("info", "jobsvc", "/app/chatty")
    assert isinstance(info["time"], float)
    warning = mine["chatty: rate is 1.2"]
    assert (warning["level"], warning["logger"], warning["path"]) == (
        "warning",
        "tests.e2e.actors",
        "/app/chatty",
    )
    (warned,) = [r for m, r in mine.items() if "chatty: the rate is deprecated" in m]
    assert (warned["level"], warned["logger"], warned["path"]) == (
        "warning",
        "py.warnings",
        "/app/chatty",
    )
    # in order with the daemon's own: the actor's records come before its child-started
    chatty_started = next(i for i in started if d.seen[i]["path"] == "/app/chatty")
    assert d.seen.index(info) < chatty_started
