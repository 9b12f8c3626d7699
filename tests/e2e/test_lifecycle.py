"""The daemon's life: boot, signals, exit codes, operator stops across restarts, its socket."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

from tests.e2e.support import Daemon, Raw, write_config

if TYPE_CHECKING:
    from pathlib import Path


def recorded(workdir: Path) -> list[str]:
    """What the Recorder actors wrote, in order."""
    return (workdir / "record.log").read_text().splitlines()


def ordered_tree(workdir: Path) -> str:
    log = workdir / "record.log"
    return f"""
    [supervisor]
    [[supervisor.children]]
    id = "a"
    start = "tests.e2e.actors:Recorder"
    args = {{ log = "{log}", name = "a" }}

    [[supervisor.children]]
    id = "g"
    type = "supervisor"
    strategy = "rest-for-one"
    children = [
      {{ id = "x", start = "tests.e2e.actors:Recorder", args = {{ log = "{log}", name = "x" }} }},
      {{ id = "y", start = "tests.e2e.actors:Recorder", args = {{ log = "{log}", name = "y" }} }},
    ]

    [[supervisor.children]]
    id = "b"
    start = "tests.e2e.actors:Echo"

    [[supervisor.children]]
    id = "c"
    start = "tests.e2e.actors:Recorder"
    args = {{ log = "{log}", name = "c", seconds = 0.2 }}
    """


def test_sigterm_stops_children_in_reverse_start_order(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """SIGTERM stops each child after the ones started after it, then exits 0."""
    daemons.append(d := Daemon.start(write_config(workdir, ordered_tree(workdir)), backend))
    assert d.cli("status").rc == 0  # served: its signal handlers are in place
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == [
        "/c",
        "/b",
        "/g/y",
        "/g/x",
        "/g",
        "/a",
    ]
    # on_stop ran one after the other: /c took 0.2 s, and nothing else stopped meanwhile.
    assert recorded(workdir) == [
        "start a",
        "start x",
        "start y",
        "start c",
        "stop c",
        "stop y",
        "stop x",
        "stop a",
    ]
    messages = [r["message"] for r in d.seen]
    assert "SIGTERM: stopping gracefully (again to force)" in messages
    assert messages[-1] == "stopped"
    assert not d.socket.exists()


def test_boot_is_logged_in_start_order(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """The log and `corral events` have a child-started record for every child started at boot."""
    daemons.append(d := Daemon.start(write_config(workdir, ordered_tree(workdir)), backend))
    workers = ["/a", "/g/x", "/g/y", "/b", "/c"]
    events = [json.loads(line) for line in d.cli("events", "--json").out.splitlines()]
    started = [e["path"] for e in events if e["event"] == "child-started"]
    assert [p for p in started if p != "/g"] == workers
    logged = [r["path"] for r in d.records("child-started")]
    assert [p for p in logged if p != "/g"] == workers
    assert "/g" in logged


def test_sigterm_as_soon_as_ready_is_graceful(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A SIGTERM right after the daemon logged that it is ready stops it gracefully (exit 0)."""
    daemons.append(d := Daemon.start(write_config(workdir, ordered_tree(workdir)), backend))
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert recorded(workdir)[-1] == "stop a"
    assert not d.socket.exists()


SLOW = """
[supervisor]
[[supervisor.children]]
id = "slow"
start = "tests.e2e.actors:SlowStop"
args = { seconds = 3600.0 }
shutdown = "infinity"

[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"
"""


def test_second_sigint_forces_the_stop(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """A second SIGINT cancels a child still stopping (here: for an hour); the daemon exits 0."""
    daemons.append(d := Daemon.start(write_config(workdir, SLOW), backend))
    assert d.cli("status").rc == 0
    d.signal(signal.SIGINT)
    d.wait_for(lambda r: r["message"] == "SIGINT: stopping gracefully (again to force)")
    d.wait_for(lambda r: r["message"] == "stopping: children stop in reverse start order")
    d.signal(signal.SIGINT)
    forcing = d.wait_for(lambda r: "forcing" in r["message"])
    assert forcing["message"] == (
        "SIGINT again: forcing the stop; children still running are cancelled"
    )
    assert forcing["level"] == "warning"
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == ["/a", "/slow"]


def test_commands_while_stopping(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """While the tree stops, status still answers and a command gets the `stopping` error."""
    daemons.append(d := Daemon.start(write_config(workdir, SLOW), backend))
    with Raw(d.socket) as client:
        assert client.ask({"command": "ping"})["ok"]
        d.signal(signal.SIGTERM)
        d.event("child-stopped", "/a")  # stopped first: /slow is stopping now, for an hour
        status = client.ask({"command": "status"})
        assert status["result"]["state"] == "stopping"
        assert [c["state"] for c in status["result"]["children"]] == ["stopping", "stopped"]
        slow = client.ask({"command": "status", "path": "/slow"})
        assert slow["result"]["state"] == "stopping"  # reached although the root is stopping
        refused = client.ask({"command": "kill", "path": "/slow"})
        assert refused["error"]["code"] == "stopping"
        assert refused["error"]["message"].startswith("the daemon is stopping: ")
        d.signal(signal.SIGTERM)
        assert client.closed()
    assert d.wait() == 0


def test_operator_stop_is_kept_across_daemon_restarts(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A child stopped by `corral stop` stays stopped when the daemon restarts, until started."""
    config = write_config(workdir, ordered_tree(workdir))
    daemons.append(first := Daemon.start(config, backend))
    assert first.cli("stop", "/c").rc == 0
    assert first.cli("stop", "/g/y").rc == 0
    assert first.stop() == 0
    held = json.loads((workdir / "state" / "held.json").read_text())
    assert held == {"version": 1, "held": ["/c", "/g/y"]}

    daemons.append(second := Daemon.start(config, backend))
    assert "kept stopped by an operator: /c, /g/y" in [r["message"] for r in second.seen]
    for path in ("/c", "/g/y"):
        result = second.cli("status", path, "--json")
        assert result.rc == 3
        assert (result.json()["state"], result.json()["held"]) == ("stopped", True)
    assert second.cli("status", "/g/x").rc == 0
    assert second.cli("start", "/c").out == "/c: started\n"
    assert second.stop() == 0
    assert json.loads((workdir / "state" / "held.json").read_text())["held"] == ["/g/y"]

    daemons.append(third := Daemon.start(config, backend))
    assert third.cli("status", "/c").rc == 0
    assert third.cli("status", "/g/y").rc == 3
    starts = [line for line in recorded(workdir) if line.startswith("start")]
    assert starts == [
        *("start a", "start x", "start y", "start c"),  # the first daemon
        *("start a", "start x", "start c"),  # the second: /c started by hand
        *("start a", "start x", "start c"),  # the third
    ]


def test_holds_of_children_no_longer_configured_are_forgotten(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A hold on a child the config no longer has is dropped (and said so) at the next start."""
    config = write_config(workdir, ordered_tree(workdir))
    daemons.append(first := Daemon.start(config, backend))
    assert first.cli("stop", "/c").rc == 0
    assert first.cli("stop", "/a").rc == 0
    assert first.stop() == 0
    body = ordered_tree(workdir)
    write_config(workdir, body[: body.index('[[supervisor.children]]\n    id = "c"')])
    daemons.append(second := Daemon.start(config, backend))
    assert json.loads((workdir / "state" / "held.json").read_text())["held"] == ["/a"]
    assert second.cli("status", "/a").rc == 3
    messages = [r["message"] for r in second.seen]
    assert "kept stopped by an operator: /a" in messages
    assert "forgetting operator stops of children no longer configured: /c" in messages, messages


def test_child_failing_to_start_at_boot_exits_69(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A child that fails to start at boot: those started are stopped, the daemon exits 69."""
    log = workdir / "record.log"
    body = f"""
    [supervisor]
    [[supervisor.children]]
    id = "a"
    start = "tests.e2e.actors:Recorder"
    args = {{ log = "{log}", name = "a" }}

    [[supervisor.children]]
    id = "db"
    start = "tests.e2e.actors:FailsToStart"
    """
    daemons.append(d := Daemon.start(write_config(workdir, body), backend, wait_ready=False))
    assert d.wait() == 69
    error = d.seen[-1]
    assert (error["level"], error["message"]) == (
        "error",
        "the tree did not start: supervisor '/': child 'db' failed to start:"
        " RuntimeError('cannot start: the database is down')",
    )
    assert not any("ready" in r["message"] for r in d.seen)
    assert recorded(workdir) == ["start a", "stop a"]
    assert not d.socket.exists()


def test_root_giving_up_exits_69(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """A crash loop past the root's intensity ends the daemon with exit 69."""
    body = """
    [supervisor]
    [[supervisor.children]]
    id = "loop"
    start = "tests.e2e.actors:crash_on_start"
    backoff = { initial = 0.0 }
    """
    daemons.append(d := Daemon.start(write_config(workdir, body), backend, wait_ready=False))
    assert d.wait() == 69
    gave_up = d.records("supervisor-gave-up")
    assert [(r["path"], r["reason"]) for r in gave_up] == [
        ("/", "2 restarts within 5.0 s (limit 1), last of /loop")
    ]
    assert d.seen[-1]["message"] == (
        "supervisor '/' gave up: 2 restarts within 5.0 s (limit 1), last of /loop; the daemon exits"
    )
    assert not d.socket.exists()


def test_auto_shutdown_of_the_root_exits_0(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """The root shutting down on its own (a significant child ended) ends the daemon with 0."""
    body = """
    [supervisor]
    auto-shutdown = "any-significant"
    [[supervisor.children]]
    id = "a"
    start = "tests.e2e.actors:Steady"
    [[supervisor.children]]
    id = "job"
    start = "tests.e2e.actors:finishes"
    restart = "transient"
    significant = true
    """
    daemons.append(d := Daemon.start(write_config(workdir, body), backend, wait_ready=False))
    assert d.wait() == 0
    messages = [r["message"] for r in d.seen]
    assert "the root supervisor shut down (auto-shutdown): the daemon exits" in messages
    assert messages[-1] == "stopped"


def raw_lines(d: Daemon) -> list[str]:
    """The daemon's stderr when it is not JSON (a config error is logged as text)."""
    return [r["message"] for r in d.seen if r.get("raw")]


def test_invalid_config_exits_6(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """An invalid or unreadable config: exit 6, the error as text on stderr, nothing started."""
    config = write_config(workdir, '[supervisor]\nstrategy = "one_for_one"\n')
    daemons.append(d := Daemon.start(config, backend, wait_ready=False))
    assert d.wait() == 6
    [record] = d.seen
    message = (
        f'{config}: expected "one-for-one", "one-for-all" or "rest-for-one", got'
        " 'one_for_one' at $.supervisor.strategy"
    )
    assert (record["level"], record["logger"], record["message"], record["event"]) == (
        "error",
        "corral.daemon",
        message,
        "config-invalid",  # under systemd: a journal entry of priority err, with MESSAGE_ID
    )
    assert not d.socket.exists()

    missing = workdir / "missing.toml"
    daemons.append(d := Daemon.start(missing, backend, wait_ready=False))
    assert d.wait() == 6
    [record] = d.seen
    assert record["message"] == f"{missing}: cannot read the config: No such file or directory"


def test_corrupt_state_file_exits_6(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """An unreadable held.json stops the daemon from starting children an operator stopped."""
    (workdir / "state").mkdir()
    held = workdir / "state" / "held.json"
    held.write_text("{nope")
    config = write_config(workdir, ordered_tree(workdir))
    daemons.append(d := Daemon.start(config, backend, wait_ready=False))
    assert d.wait() == 6
    message = d.seen[-1]["message"]
    assert message.startswith(f"state {held} is corrupt (")
    assert message.endswith(
        "): it lists the children an operator stopped; fix it, or remove it to start every child"
    )
    assert not (workdir / "record.log").exists()
    assert held.read_text() == "{nope"


def test_second_daemon_on_the_same_socket_exits_1(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A second daemon on a socket already served exits 1 and touches nothing: the first
    one carries on, its operator stops saved as they were."""
    config = write_config(workdir, ordered_tree(workdir))
    daemons.append(first := Daemon.start(config, backend))
    assert first.cli("stop", "/c").rc == 0
    held = workdir / "state" / "held.json"
    saved = held.read_text()
    other = write_config(workdir, "[supervisor]\n", name="other.toml")  # no /c in it
    daemons.append(second := Daemon.start(other, backend, wait_ready=False))
    assert second.wait() == 1
    assert held.read_text() == saved
    assert second.seen[-1]["message"] == (
        f"another daemon already serves {first.socket}: stop it, or choose another control-socket"
    )
    assert first.cli("status", "/a").rc == 0
    assert first.socket.exists()


def test_stale_socket_is_replaced(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """The socket file of a killed daemon (SIGKILL) is replaced by the next daemon."""
    config = write_config(workdir, ordered_tree(workdir))
    daemons.append(killed := Daemon.start(config, backend))
    killed.signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert killed.socket.exists()
    assert killed.cli("status").rc == 4
    daemons.append(d := Daemon.start(config, backend))
    assert d.cli("status", "/a").rc == 0
    assert d.stop() == 0
    assert not d.socket.exists()


def test_socket_path_taken_by_a_file_exits_1(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A control-socket path that is a regular file is left alone: exit 1 with what to do."""
    taken = workdir / "control.sock"
    taken.write_text("not a socket")
    daemons.append(d := Daemon.start(write_config(workdir, SLOW), backend, wait_ready=False))
    assert d.wait() == 1
    assert d.seen[-1]["message"] == (
        f"{taken} exists and is not a socket: remove it or choose another control-socket"
    )
    assert taken.read_text() == "not a socket"
