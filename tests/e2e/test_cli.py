"""The `corral` command against a real daemon: every command, its output and its exit code."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.support import ROOT, TIMEOUT, Daemon, run_cli, shared_daemon, write_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TREE = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "b"
start = "tests.e2e.actors:Echo"

[[supervisor.children]]
id = "lazy"
start = "tests.e2e.actors:Echo"
backoff = { initial = 30.0, cap = 30.0 }

[[supervisor.children]]
id = "drop"
start = "tests.e2e.actors:Dropper"
mailbox = { capacity = 1, overflow = "drop-newest" }

[[supervisor.children]]
id = "g"
type = "supervisor"
children = [ { id = "x", start = "tests.e2e.actors:Echo" } ]

[[supervisor.children]]
id = "pool"
type = "supervisor"
max-children = 2
child = { id = "w", start = "tests.e2e.actors:Echo" }

[[supervisor.children]]
id = "once"
start = "tests.e2e.actors:Echo"
restart = "temporary"
"""

NOT_RUNNING = (
    "corral: the daemon is not running at {} (start it with `corral run` or"
    " `systemctl start corral`, or pick another with --socket)\n"
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """As conftest's, once per module: the `served` daemon is shared by this module's tests."""
    return str(request.param)


@pytest.fixture(scope="module")
def served(backend: str) -> Iterator[Daemon]:
    """One daemon for the tests that only read its state (they leave it as they found it)."""
    with shared_daemon(TREE, backend) as d:
        yield d


def start(workdir: Path, backend: str, daemons: list[Daemon]) -> Daemon:
    """A daemon of this test's own, for tests that change its tree."""
    daemons.append(d := Daemon.start(write_config(workdir, TREE), backend))
    return d


def ok(d: Daemon, *args: str) -> str:
    """The output of a command that must succeed."""
    result = d.cli(*args)
    assert (result.rc, result.err) == (0, ""), result
    return result.out


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("children") or () for n in nodes(child))]


def test_status_prints_the_tree(served: Daemon) -> None:
    """`corral status` draws one line per child with its state, budget and counters."""
    out = re.sub(r"up (\d+m )?\d+(\.\d)?s", "up Ns", ok(served, "status"))
    assert out.splitlines() == [
        "● /  running   one-for-one, budget 10/10 per 60s  (8 below: 8 running)  service full",
        "├─ ● a     running   up Ns",
        "├─ ● b     running   up Ns",
        "├─ ● lazy  running   up Ns",
        "├─ ● drop  running   up Ns  dead letters 1",
        "├─ ● g     running   up Ns  one-for-one, budget 1/1 per 5s",
        "│  └─ ● x  running   up Ns",
        "├─ ● pool  running   up Ns  one-for-one (dynamic), budget 1/1 per 5s",
        "└─ ● once  running   up Ns",
    ]
    assert "\x1b[" not in out  # no colour when stdout is not a terminal


def test_status_json_is_the_tree(served: Daemon) -> None:
    """`corral status --json` gives each node's path, type and state, supervisors' children."""
    tree = served.cli("status", "--json").json()
    assert [(n["path"], n["type"], n["state"]) for n in nodes(tree)] == [
        ("/", "supervisor", "running"),
        ("/a", "worker", "running"),
        ("/b", "worker", "running"),
        ("/lazy", "worker", "running"),
        ("/drop", "worker", "running"),
        ("/g", "supervisor", "running"),
        ("/g/x", "worker", "running"),
        ("/pool", "supervisor", "running"),
        ("/once", "worker", "running"),
    ]
    assert tree["strategy"] == "one-for-one"
    assert (tree["intensity"], tree["period"], tree["restarts_remaining"]) == (10, 60.0, 10)
    assert [c["path"] for c in tree["children"][4]["children"]] == ["/g/x"]
    assert tree["children"][5]["children"] == []
    assert tree["children"][5]["dynamic"] is True
    subtree = served.cli("status", "/g", "--json").json()
    assert [n["path"] for n in nodes(subtree)] == ["/g", "/g/x"]


def test_status_json_gives_every_node_its_restarts(served: Daemon) -> None:
    """Every node of `status --json` has path, type, state and restarts (README), even at 0."""
    tree = served.cli("status", "--json").json()
    keys = {"path", "type", "state", "restarts"}
    assert [n["path"] for n in nodes(tree) if not keys <= n.keys()] == []


def test_status_path_exits_3_unless_running(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """`status PATH` exits 0 for a running child and 3 for a stopped or restarting one."""
    d = start(workdir, backend, daemons)
    assert ok(d, "status", "/g/x").startswith("● /g/x  running   up ")
    assert d.cli("status", "/g").rc == 0
    ok(d, "stop", "/b")
    stopped = d.cli("status", "/b")
    assert (stopped.rc, stopped.out, stopped.err) == (
        3,
        "● /b  stopped   stopped by operator\n",
        "",
    )
    as_json = d.cli("status", "/b", "--json")
    assert as_json.rc == 3
    assert (as_json.json()["state"], as_json.json()["held"]) == ("stopped", True)
    ok(d, "kill", "/lazy")  # its backoff is 30 s: it waits to restart
    waiting = d.cli("status", "/lazy")
    assert waiting.rc == 3
    assert re.fullmatch(
        r"● /lazy  backoff   restart in \d+\.\ds  last exit: error"
        r" Killed\('killed by an operator'\)\n",
        waiting.out,
    ), waiting.out
    assert d.cli("status").rc == 0  # the whole tree: 0 whatever its children do


def test_stop_start_restart(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """stop holds a child, start runs it again (a start, not a restart), restart is a restart
    but not a crash."""
    d = start(workdir, backend, daemons)
    assert ok(d, "stop", "/b") == "/b: stopped; it stays stopped until `corral start`\n"
    assert d.cli("status", "/b", "--json").json()["state"] == "stopped"
    why = ok(d, "why", "/b").splitlines()
    assert why[0] == "/b: stopped (stopped by an operator; `corral start` to run it)"
    assert ok(d, "start", "/b") == "/b: started\n"
    assert d.cli("status", "/b", "--json").json()["state"] == "running"
    assert d.event("child-started", "/b")["restarts"] == 0  # `corral start` is no restart

    assert ok(d, "restart", "/a") == "/a: restarted\n"
    assert d.event("child-stopped", "/a")["supervisor"] == "/"
    assert d.event("child-started", "/a")["restarts"] == 1
    status = d.cli("status", "/a", "--json").json()
    assert (status["state"], status["restarts"]) == ("running", 1)
    why_json = d.cli("why", "/a", "--json").json()
    assert [e for e in why_json["exits"] if e["kind"] == "error"] == []
    assert why_json["restarts_remaining"] == why_json["intensity"] == 10
    assert ok(d, "why", "/a").splitlines()[1:] == [
        "  restarts: 1",
        "  supervisor / (one-for-one): 10 of 10 restarts left within 60s before it gives up",
        "  no exits recorded",
    ]


def test_restarts_by_hand_never_exhaust_the_budget(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """Restarts by an operator do not count: more of them than `intensity` is no crash loop."""
    config = write_config(workdir, TREE.replace("intensity = 10", "intensity = 1"))
    daemons.append(d := Daemon.start(config, backend))
    for _ in range(3):
        ok(d, "restart", "/a")
    why = d.cli("why", "/a", "--json").json()
    assert (why["restarts"], why["restarts_remaining"], why["intensity"]) == (3, 1, 1)
    assert d.proc.poll() is None


def test_kill_is_a_crash_and_restart(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """kill crashes a child with its reason; `why` and `events` show the exit and restart."""
    d = start(workdir, backend, daemons)
    assert ok(d, "kill", "/b", "--reason", "drill") == (
        "/b: killed; its supervisor decides what comes next\n"
    )
    exited = d.event("child-exited", "/b")
    assert (exited["exit"], exited["exception"]) == ("error", "Killed('drill')")
    assert d.event("child-started", "/b")["restarts"] == 1

    why = d.cli("why", "/b", "--json").json()
    assert (why["state"], why["restarts"], why["restarts_remaining"]) == ("running", 1, 9)
    assert [(e["kind"], e["exception"]) for e in why["exits"]] == [("error", "Killed('drill')")]
    assert why["exits"][0]["traceback"].endswith("corral.daemon.commands.Killed: drill\n")
    text = ok(d, "why", "/b").splitlines()
    assert text[:3] == [
        "/b: running",
        "  restarts: 1",
        "  supervisor / (one-for-one): 9 of 10 restarts left within 60s before it gives up",
    ]
    assert re.fullmatch(r"  last exit: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} error", text[3])
    assert text[-1] == "    corral.daemon.commands.Killed: drill"


def test_events_lists_recent_events(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """`corral events` (no --follow) prints the recent events and exits."""
    d = start(workdir, backend, daemons)
    ok(d, "kill", "/b", "--reason", "drill")
    d.event("child-started", "/b")
    recent = [json.loads(line) for line in ok(d, "events", "--json").splitlines()]
    assert [(e["event"], e["path"]) for e in recent[-3:]] == [
        ("child-exited", "/b"),
        ("restart-scheduled", "/b"),
        ("child-started", "/b"),
    ]
    assert recent[-3]["exception"] == "Killed('drill')"
    assert recent[-1]["restarts"] == 1
    last_two = ok(d, "events", "--json", "--recent", "2").splitlines()
    assert len(last_two) == 2
    text = ok(d, "events").splitlines()
    exited = next(line for line in text if "child-exited" in line)
    assert re.fullmatch(
        r"\S+ \S+ child-exited {13}/b  exit=error exception=Killed\('drill'\)", exited
    ), exited
    assert ok(d, "events", "--recent", "0") == ""


def test_dead_letters(served: Daemon) -> None:
    """`corral dead-letters` lists dropped messages, all or those of one path."""
    d = served
    letters = d.cli("dead-letters", "--json").json()
    assert [(x["path"], x["reason"], x["message"]) for x in letters] == [
        ("/drop", "dropped", "'second'")
    ]
    assert re.fullmatch(r"\S+ \S+ /drop dropped: 'second'\n", ok(d, "dead-letters", "/drop"))
    assert ok(d, "dead-letters", "/a") == "no dead letters\n"
    assert d.cli("status", "/drop", "--json").json()["dead_letters"] == 1


def test_dynamic_supervisor_children(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """start-child adds children from the template; terminate-child removes them."""
    d = start(workdir, backend, daemons)
    assert ok(d, "start-child", "/pool") == "/pool/1: started\n"
    assert ok(d, "start-child", "/pool", "--id", "x", "--args", '{"greeting": "yo"}') == (
        "/pool/x: started\n"
    )
    full = d.cli("start-child", "/pool")
    assert (full.rc, full.err) == (
        1,
        "corral: /pool: ERROR (max_children) supervisor '/pool' already has max_children=2\n",
    )
    waited = d.cli("start-child", "/pool", "--wait", "0.2")
    assert (waited.rc, waited.err) == (
        1,
        "corral: /pool: ERROR (max_children) supervisor '/pool' already has max_children=2"
        " (waited 0.2 s for a free slot)\n",
    )
    pool = d.cli("status", "/pool", "--json").json()
    assert [(c["path"], c["state"]) for c in pool["children"]] == [
        ("/pool/1", "running"),
        ("/pool/x", "running"),
    ]
    assert ok(d, "terminate-child", "/pool/x") == "/pool/x: terminated\n"
    assert [c["path"] for c in d.cli("status", "/pool", "--json").json()["children"]] == ["/pool/1"]
    assert ok(d, "start-child", "/pool", "--id", "x") == "/pool/x: started\n"

    # A static supervisor's child: terminated it stays (not held), deleted it is gone.
    assert ok(d, "terminate-child", "/b") == "/b: terminated\n"
    terminated = d.cli("status", "/b", "--json")
    assert terminated.rc == 3
    assert terminated.json()["state"] == "stopped"
    assert not terminated.json().get("held")
    assert ok(d, "delete-child", "/b") == "/b: deleted\n"
    assert d.cli("status", "/b").rc == 1
    assert "/b" not in [c["path"] for c in d.cli("status", "--json").json()["children"]]


ERRORS = [
    (("status", "/nope"), "/nope: ERROR (not_found) supervisor '/' has no child 'nope'"),
    (
        ("stop", "/nope/deeper"),
        "/nope/deeper: ERROR (not_found) supervisor '/' has no child 'nope'",
    ),
    (
        ("start", "/a"),
        "/a: ERROR (running) supervisor '/': child 'a' is running (`corral restart /a` stops"
        " and starts it)",
    ),
    (("delete-child", "/a"), "/a: ERROR (running) supervisor '/': child 'a' is running"),
    (
        ("stop", "/"),
        "/: ERROR (unsupported) the root supervisor is not a child: use `corral shutdown` to"
        " stop the daemon",
    ),
    (
        ("why", "/"),
        "/: ERROR (not_found) the root supervisor has no exits to explain: ask about a child,"
        " e.g. /name",
    ),
    (
        ("start-child", "/g"),
        "/g: ERROR (unsupported) supervisor '/g' is not dynamic: its children come from the"
        " config (edit it and `corral reload`)",
    ),
    (("start-child", "/nope"), "/nope: ERROR (not_found) no running supervisor at '/nope'"),
    (
        ("start-child", "/pool", "--args", '{"nope": 1}'),
        "/pool: ERROR (bad_request) args do not fit tests.e2e.actors:Echo(greeting='hello'):"
        " got an unexpected keyword argument 'nope'",
    ),
    (
        ("restart", "/pool/k"),
        "/pool/k: ERROR (unsupported) /pool/k belongs to a dynamic supervisor, whose children"
        " cannot be restarted by hand (OTP's rule): `corral kill` crashes it, and its supervisor"
        " restarts it unless it is temporary; or terminate-child, then start-child",
    ),
    (
        ("delete-child", "/pool/k"),
        "/pool/k: ERROR (unsupported) supervisor '/pool' is dynamic: delete_child does not"
        " apply (terminate instead)",
    ),
]


def test_errors_exit_1_with_code_and_message(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A refused command exits 1 and prints `corral: TARGET: ERROR (code) message` on stderr."""
    d = start(workdir, backend, daemons)
    ok(d, "start-child", "/pool", "--id", "k")
    for args, message in ERRORS:
        result = d.cli(*args)
        assert (result.rc, result.out, result.err) == (1, "", f"corral: {message}\n"), args
    ok(d, "stop", "/b")
    killed = d.cli("kill", "/b")
    assert killed.err == (
        "corral: /b: ERROR (not_running) /b is not running (stopped): nothing to kill"
        " (`corral start /b` starts it)\n"
    )
    assert ok(d, "status", "/a").startswith("● /a  running")  # the daemon carries on


def test_stop_says_what_became_of_the_child(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """`corral stop` holds a child (a temporary one too) until `corral start`; a dynamic
    supervisor's child is removed (there is no spec to keep), and the message says so."""
    d = start(workdir, backend, daemons)
    for path in ("/a", "/once"):
        assert ok(d, "stop", path) == f"{path}: stopped; it stays stopped until `corral start`\n"
        assert ok(d, "start", path) == f"{path}: started\n"
    assert ok(d, "restart", "/once") == "/once: restarted\n"  # temporary: kept for the start
    ok(d, "start-child", "/pool", "--id", "k")
    assert ok(d, "stop", "/pool/k") == (
        "/pool/k: stopped and removed (a dynamic supervisor's child: its spec is not kept)\n"
    )
    result = d.cli("start", "/pool/k")
    assert result.rc == 1
    assert "ERROR (not_found)" in result.err


def test_version(served: Daemon, backend: str) -> None:
    """`corral version` prints the CLI's version and the daemon's pid, backend and config."""
    d = served
    cli_line, daemon_line = ok(d, "version").splitlines()
    assert re.fullmatch(r"corral \S+", cli_line)
    version = cli_line.split()[1]
    assert re.fullmatch(
        rf"daemon {re.escape(version)} \(pid {d.proc.pid}, {backend}, up \d+\.\ds,"
        rf" config {re.escape(str(d.socket.parent / 'corral.toml'))}\)",
        daemon_line,
    ), daemon_line


def test_shutdown(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """`corral shutdown` stops the daemon (exit 0, socket removed); then it is unreachable."""
    d = start(workdir, backend, daemons)
    assert ok(d, "shutdown") == "stopping: children stop in reverse start order\n"
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == [
        "/once",
        "/pool",
        "/g/x",
        "/g",
        "/drop",
        "/lazy",
        "/b",
        "/a",
    ]
    assert not d.socket.exists()
    gone = d.cli("status")
    assert (gone.rc, gone.out, gone.err) == (4, "", NOT_RUNNING.format(d.socket))


def test_unreachable_daemon_exits_4(workdir: Path, backend: str) -> None:
    """No daemon at the socket (no file, or a file nobody listens on): exit 4, what to do."""
    path = workdir / "control.sock"
    missing = run_cli("--socket", str(path), "status")
    assert (missing.rc, missing.out, missing.err) == (4, "", NOT_RUNNING.format(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(path))  # bound, never listening: what a killed daemon leaves
        stale = run_cli("--socket", str(path), "stop", "/a")
    assert (stale.rc, stale.err) == (4, NOT_RUNNING.format(path))
    version = run_cli("--socket", str(workdir / "nope.sock"), "version")
    assert version.rc == 4
    assert version.out.startswith("corral ")  # the CLI's own version comes first


def test_check(workdir: Path, backend: str) -> None:
    """`corral check` says a valid file is valid (exit 0) and why an invalid one is not (1)."""
    valid = write_config(workdir, TREE + f"\n# backend: {backend}\n")
    result = run_cli("check", str(valid))
    assert (result.rc, result.out, result.err) == (
        0,
        f"{valid}: valid (7 children under the root)\n",
        "",
    )
    body = TREE.replace("intensity = 10", 'strategy = "one_for_one"')
    invalid = write_config(workdir, body, name="bad.toml")
    result = run_cli("check", str(invalid))
    assert (result.rc, result.out, result.err) == (
        1,
        "",
        f'corral: {invalid}: expected "one-for-one", "one-for-all" or "rest-for-one", got'
        " 'one_for_one' at $.supervisor.strategy\n",
    )
    typo = write_config(workdir, TREE.replace("max-children", "max_children"), name="typo.toml")
    result = run_cli("check", str(typo))
    assert (result.rc, result.err) == (
        1,
        f"corral: {typo}: unknown key 'max_children' (keys are kebab-case; see the README for"
        " the list) at $.supervisor.children[5]\n",
    )
    duplicate = write_config(workdir, TREE.replace('id = "g"', 'id = "a"'), name="dup.toml")
    result = run_cli("check", str(duplicate))
    assert (result.rc, result.err) == (
        1,
        f"corral: {duplicate}: child id 'a' is defined twice ([0] and [4])"
        " at $.supervisor.children[4].id\n",
    )
    missing = run_cli("check", str(workdir / "nope.toml"))
    assert (missing.rc, missing.err) == (
        1,
        f"corral: {workdir / 'nope.toml'}: cannot read the config: No such file or directory\n",
    )


def test_check_names_an_unknown_top_level_key(workdir: Path, backend: str) -> None:
    """An unknown top-level table is reported in the config's words, like any unknown key."""
    config = write_config(workdir, TREE + f"\n[bogus]  # {backend}\n")
    result = run_cli("check", str(config))
    assert result.rc == 1
    assert result.err.startswith(f"corral: {config}: unknown key 'bogus' (keys are kebab-case"), (
        result.err
    )


def test_usage_errors_exit_2(workdir: Path, backend: str) -> None:
    """A bad command line exits 2 before any daemon is asked."""
    sock = str(workdir / f"{backend}.sock")  # nothing there: usage is checked first
    assert run_cli().rc == 2
    assert run_cli("--socket", sock, "frobnicate").rc == 2
    assert run_cli("--socket", sock, "status", "--bogus").rc == 2
    assert run_cli("--socket", sock, "stop").rc == 2
    not_object = run_cli("--socket", sock, "start-child", "/pool", "--args", "[1]")
    assert (not_object.rc, not_object.err) == (
        2,
        "corral: --args must be a JSON object, e.g. '{\"port\": 8080}'\n",
    )
    not_json = run_cli("--socket", sock, "start-child", "/pool", "--args", "nope")
    assert (not_json.rc, not_json.err) == (
        2,
        "corral: --args must be a JSON object: Expecting value: line 1 column 1 (char 0)\n",
    )
    for argv, complaint in (
        (("dead-letters", "--limit", "0"), "expected a whole number from 1 to 10000, got '0'"),
        (("events", "--recent", "5000"), "expected a whole number from 0 to 1000, got '5000'"),
        (("start-child", "/pool", "--id", "x/y"), "child id 'x/y' is not usable in a path"),
        (("start-child", "/pool", "--id", ".."), "child id '..' is not usable in a path"),
        (("kill", "/a", "--reason", "x" * 1025), "at most 1024 characters, got 1025"),
        (("start-child", "/pool", "--wait", "-1"), "expected seconds from 0, at most 3600"),
        (("call", "/a", '"x"', "--timeout", "nan"), "expected seconds above 0, at most 3600"),
    ):
        result = run_cli("--socket", sock, *argv)
        assert result.rc == 2, argv
        assert complaint in result.err, result.err


def test_the_command_runs_as_a_process(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """`python -m corral` is the `corral` command: output and exit codes as in-process."""
    d = start(workdir, backend, daemons)
    ok(d, "stop", "/b")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # our own interpreter and arguments
            [sys.executable, "-m", "corral", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
            check=False,
        )

    status = corral("--socket", str(d.socket), "status")
    assert (status.returncode, status.stderr) == (0, "")
    assert status.stdout.splitlines()[0].startswith("● /  running   one-for-one")
    assert "├─ ● b     stopped   stopped by operator" in status.stdout.splitlines()
    stopped = corral("--socket", str(d.socket), "status", "/b")
    assert (stopped.returncode, stopped.stdout) == (3, "● /b  stopped   stopped by operator\n")
    absent = workdir / "absent.sock"
    gone = corral("--socket", str(absent), "status")
    assert (gone.returncode, gone.stderr) == (4, NOT_RUNNING.format(absent))
    env["CORRAL_SOCKET"] = str(d.socket)
    assert corral("status", "/a").returncode == 0
