"""Reload (`corral reload`, SIGHUP): the config's difference applied to the running tree."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.support import Daemon, write_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def recorder(workdir: Path, name: str, note: str = "") -> str:
    log = workdir / "record.log"
    return (
        f'start = "tests.e2e.actors:Recorder"\n'
        f'args = {{ log = "{log}", name = "{name}", note = "{note}" }}\n'
    )


def inline(workdir: Path, name: str, note: str = "") -> str:
    log = workdir / "record.log"
    return (
        f'{{ id = "{name}", start = "tests.e2e.actors:Recorder",'
        f' args = {{ log = "{log}", name = "{name}", note = "{note}" }} }}'
    )


def old_tree(workdir: Path) -> str:
    return f"""
[supervisor]
[[supervisor.children]]
id = "keep"
{recorder(workdir, "keep")}
[[supervisor.children]]
id = "change"
{recorder(workdir, "change", "v1")}
[[supervisor.children]]
id = "drop"
{recorder(workdir, "drop")}
[[supervisor.children]]
id = "g"
type = "supervisor"
strategy = "rest-for-one"
children = [
  {inline(workdir, "x")},
  {inline(workdir, "y", "v1")},
  {inline(workdir, "z")},
]
"""


def new_tree(workdir: Path) -> str:
    """keep: same; change: new args; drop: gone; add: new; g/y: new args (g/z goes with it)."""
    return f"""
[supervisor]
[[supervisor.children]]
id = "keep"
{recorder(workdir, "keep")}
[[supervisor.children]]
id = "change"
{recorder(workdir, "change", "v2")}
[[supervisor.children]]
id = "add"
{recorder(workdir, "add")}
[[supervisor.children]]
id = "g"
type = "supervisor"
strategy = "rest-for-one"
children = [
  {inline(workdir, "x")},
  {inline(workdir, "y", "v2")},
  {inline(workdir, "z")},
]
"""


BOOT = ["start keep", "start change v1", "start drop", "start x", "start y v1", "start z"]
PLAN = [
    "stop and remove /drop",
    "restart /change (spec changed, one-for-one)",
    "start /add (new)",
    "restart /g/y (spec changed, rest-for-one)",
    "restart /g/z (restarted with a changed sibling, rest-for-one)",
]


def said(message: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["message"] == message


def recorded(workdir: Path) -> list[str]:
    return (workdir / "record.log").read_text().splitlines()


def restarts(d: Daemon) -> dict[str, int]:
    def walk(node: dict[str, Any]) -> dict[str, int]:
        found = {node["path"]: node.get("restarts", 0)}
        for child in node.get("children") or ():
            found |= walk(child)
        return found

    return walk(d.cli("status", "--json").json())


@pytest.mark.parametrize("how", ["corral reload", "SIGHUP"])
def test_reload_applies_the_difference(
    workdir: Path, backend: str, daemons: list[Daemon], how: str
) -> None:
    """Removed children stop, changed ones restart with their new args, new ones start;
    the others are not touched."""
    config = write_config(workdir, old_tree(workdir))
    daemons.append(d := Daemon.start(config, backend))
    assert recorded(workdir) == BOOT
    booted = len(d.seen)  # the log records read so far: the boot's
    write_config(workdir, new_tree(workdir))
    if how == "SIGHUP":
        assert d.cli("status").rc == 0  # served: its signal handlers are in place
        d.signal(signal.SIGHUP)
        for line in PLAN:
            d.wait_for(said(f"reload: {line}"))
    else:
        result = d.cli("reload")
        assert (result.rc, result.err) == (0, "")
        assert result.out.splitlines() == [
            f"reload of {config}: did apply 5 change(s)",
            *(f"  {line}" for line in PLAN),
        ]
        audit = d.wait_for(lambda r: r.get("event") == "audit")  # logged after the changes
        assert (audit["command"], audit["result"]) == ("reload", "ok")
    assert recorded(workdir) == [  # every stop, the last child first; then the file's order
        *BOOT,
        "stop z",
        "stop y",
        "stop drop",
        "stop change",
        "start change v2",
        "start add",
        "start y v2",
        "start z",
    ]
    assert restarts(d) == {
        "/": 0,
        "/keep": 0,
        "/change": 1,
        "/add": 0,
        "/g": 0,
        "/g/x": 0,
        "/g/y": 1,
        "/g/z": 1,
    }
    assert d.cli("status", "/drop").rc == 1
    touched = {
        r["path"] for r in d.seen[booted:] if r.get("event") in ("child-started", "child-stopped")
    }
    assert touched == {"/drop", "/change", "/add", "/g/y", "/g/z"}
    assert d.stop() == 0  # the final stop follows the new order
    assert [r["path"] for r in d.records("child-stopped")][-7:] == [
        "/g/z",
        "/g/y",
        "/g/x",
        "/g",
        "/add",
        "/change",
        "/keep",
    ]


def test_dry_run_prints_the_plan_and_changes_nothing(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """`reload --dry-run` prints what a reload would do, [daemon] notes too, and does nothing."""
    config = write_config(workdir, old_tree(workdir))
    daemons.append(d := Daemon.start(config, backend))
    before = restarts(d)
    write_config(workdir, new_tree(workdir), daemon="idle-timeout = 9.0")
    result = d.cli("reload", "--dry-run")
    assert (result.rc, result.err) == (0, "")
    assert result.out.splitlines() == [
        f"reload of {config}: would apply 5 change(s)",
        *(f"  {line}" for line in PLAN),
        "  note: [daemon] idle-timeout changed: applied when the daemon restarts",
    ]
    assert restarts(d) == before
    assert recorded(workdir) == BOOT
    assert d.cli("stop", "/keep").rc == 0
    audit = d.wait_for(lambda r: r.get("event") == "audit")
    assert audit["command"] == "stop"  # the dry run was not audited: it changed nothing
    unchanged = write_config(workdir, old_tree(workdir))
    assert d.cli("reload").out == f"reload of {unchanged}: did apply 0 change(s)\n"


def test_reload_keeps_a_held_child_stopped(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A child stopped by an operator keeps its hold through a reload and starts with its new
    spec when started."""
    daemons.append(d := Daemon.start(write_config(workdir, old_tree(workdir)), backend))
    assert d.cli("stop", "/change").rc == 0
    write_config(workdir, new_tree(workdir))
    assert "  restart /change (spec changed, one-for-one)" in d.cli("reload").out.splitlines()
    held = d.cli("status", "/change", "--json")
    assert held.rc == 3
    assert held.json()["held"] is True
    assert "start change v2" not in recorded(workdir)
    assert d.cli("start", "/change").out == "/change: started\n"
    assert recorded(workdir)[-1] == "start change v2"


def test_invalid_file_is_rejected(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """An invalid file is rejected with its error (`invalid_config`, exit 1; SIGHUP: the log);
    the running tree is left as it was and a fixed file reloads."""
    config = write_config(workdir, old_tree(workdir))
    daemons.append(d := Daemon.start(config, backend))
    before = restarts(d)
    write_config(workdir, new_tree(workdir).replace('id = "add"', 'id = "add"\nrestart = "often"'))
    result = d.cli("reload")
    assert (result.rc, result.out) == (1, "")
    assert result.err == (
        f'corral: reload: ERROR (invalid_config) {config}: expected "permanent", "transient"'
        " or \"temporary\", got 'often' at $.supervisor.children[2].restart\n"
    )
    logged = d.wait_for(lambda r: r["message"].startswith("reload rejected"))
    assert logged["message"].endswith("got 'often' at $.supervisor.children[2].restart")
    audit = d.wait_for(lambda r: r.get("event") == "audit")
    assert (audit["command"], audit["result"]) == ("reload", "error invalid_config")
    dry = d.cli("reload", "--dry-run")
    assert (dry.rc, dry.err) == (1, result.err)

    write_config(workdir, new_tree(workdir).replace("tests.e2e.actors:Recorder", "nope.mod:X", 1))
    d.signal(signal.SIGHUP)
    rejected = d.wait_for(lambda r: r["message"].startswith("reload rejected"))
    assert (rejected["level"], rejected["message"]) == (
        "error",
        f"reload rejected, the running tree is unchanged: {config}: cannot import"
        " 'nope.mod:X': ModuleNotFoundError: No module named 'nope'"
        " at $.supervisor.children[0].start",
    )
    assert restarts(d) == before
    assert recorded(workdir) == BOOT

    write_config(workdir, new_tree(workdir))
    assert d.cli("reload").rc == 0
    assert "/add" in restarts(d)


def nested(dep: str, *extra: str) -> str:
    """The issue's tree: /p is rest-for-one over ws (a supervisor) and user, which looks up
    *dep* as it starts; *extra* are more children of ws."""
    ws = ",\n    ".join(
        f'{{ id = "{name}", start = "corral.demo:Echo" }}' for name in ("a", *extra)
    )
    return f"""
[supervisor]
[[supervisor.children]]
id = "p"
type = "supervisor"
strategy = "rest-for-one"
children = [
  {{ id = "ws", type = "supervisor", children = [
    {ws},
  ] }},
  {{ id = "user", start = "tests.e2e.actors:Dependent", args = {{ dep = "{dep}" }} }},
]
"""


def states(d: Daemon) -> dict[str, str]:
    def walk(node: dict[str, Any]) -> dict[str, str]:
        found = {node["path"]: node["state"]}
        for child in node.get("children") or ():
            found |= walk(child)
        return found

    return walk(d.cli("status", "--json").json())


def test_a_reload_starts_children_in_one_file_order_across_levels(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """/p/user, restarted to look up the new /p/ws/b, starts after /p/ws/b: the file's order
    holds across levels, not supervisor by supervisor."""
    config = write_config(workdir, nested("/p/ws/a"))
    daemons.append(d := Daemon.start(config, backend))
    write_config(workdir, nested("/p/ws/b", "b"))
    result = d.cli("reload")
    assert (result.rc, result.err) == (0, "")
    assert result.out.splitlines() == [
        f"reload of {config}: did apply 2 change(s)",
        "  restart /p/user (spec changed, rest-for-one)",
        "  start /p/ws/b (new)",
    ]
    assert states(d) == {
        "/": "running",
        "/p": "running",
        "/p/ws": "running",
        "/p/ws/a": "running",
        "/p/ws/b": "running",
        "/p/user": "running",
    }
    assert "failed" not in d.cli("status").out


def test_a_partial_reload_says_what_took_effect_and_what_failed(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A child that fails to start in a reload: the CLI lists what was applied and what was
    not, with why, and exits 1; status, the log, the metric and /readyz all say it failed."""
    config = write_config(workdir, nested("/p/ws/a"))
    text = config.read_text().replace('metrics-listen = ""', 'metrics-listen = "127.0.0.1:0"')
    config.write_text(text)
    daemons.append(d := Daemon.start(config, backend, wait_ready=False))
    url = d.wait_for(lambda r: r.get("event") == "metrics-listening")["url"]
    d.wait_for(lambda r: "ready" in r.get("message", ""))
    config.write_text(text.replace(nested("/p/ws/a"), nested("/p/ws/gone", "b")))
    result = d.cli("reload")
    why = "failed to start: UnknownPathError(\"no actor at '/p/ws/gone'\")"
    assert result.rc == 1
    assert result.out.splitlines() == [
        f"reload of {config}: applied 1 of 2 change(s)",
        "  start /p/ws/b (new)",
    ]
    assert result.err == (
        f"corral: not applied: restart /p/user (spec changed, rest-for-one): {why}\n"
    )
    logged = d.wait_for(lambda r: r["message"].startswith("reload: not applied"))
    assert (logged["level"], logged["event"]) == ("error", "reload")
    assert states(d)["/p/user"] == "failed"
    status = d.cli("status").out.splitlines()
    assert "1 failed" in status[0]
    assert status[-1] == (
        "1 failed, not running until started again: /p/user"
        " (see corral why /p/user; corral start PATH)"
    )
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:  # noqa: S310
        metrics = answer.read().decode()
    assert 'corral_children{supervisor="/p",state="failed"} 1' in metrics
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/readyz", timeout=10)  # noqa: S310  # loopback http
    assert refused.value.code == 503
    assert refused.value.read().decode() == (
        "not ready: service minimal: essential down: /p/user failed (ready-when = 'degraded');"
        " see corral status\n"
    )
    config.write_text(text.replace(nested("/p/ws/a"), nested("/p/ws/b", "b")))
    assert d.cli("reload").rc == 0  # fixed: user's spec changed again, so it is restarted
    assert states(d)["/p/user"] == "running"
    with urllib.request.urlopen(f"{url}/readyz", timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
