"""Regression tests for the ways a careless child, a careless operator or a hostile local user
once broke the daemon: each runs a real daemon and does what broke it.

Stopping: a child that shields itself from cancellation, or an ``on_start`` that never
returns, cannot keep the process alive past the documented bounds. Reload: a new module that
exits, interrupts or never finishes importing leaves the running tree (and the daemon's exit)
alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import textwrap
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import ROOT, TIMEOUT, Daemon, Raw, write_config

if TYPE_CHECKING:
    from pathlib import Path

STEADY = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"
"""


def with_child(child: str) -> str:
    return STEADY + textwrap.dedent(child)


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGINT)])
def test_a_shielded_child_is_abandoned_and_the_daemon_exits(
    workdir: Path, backend: str, daemons: list[Daemon], signals: tuple[int, ...]
) -> None:
    """A child that shields itself is abandoned after its shutdown timeout; the daemon then
    exits (0: stopped as asked), naming the child it abandoned, with or without a second
    signal."""
    config = write_config(
        workdir,
        with_child("""
            [[supervisor.children]]
            id = "stubborn"
            start = "tests.e2e.actors:shielded"
            shutdown = 0.2
        """),
    )
    d = Daemon.start(config, backend)
    daemons.append(d)
    for signum in signals:
        d.signal(signum)
    assert d.wait() == 0
    (stopped,) = d.records("daemon-stopped")
    if len(signals) == 1:
        (abandoned,) = d.records("child-abandoned")
        assert abandoned["path"] == "/stubborn"
        assert stopped["message"] == (
            "stopped; exiting without waiting for what did not end: /stubborn (abandoned: it"
            " ignores cancellation)"
        )
    else:  # forced before or after its shutdown timeout ran out
        assert stopped["message"].startswith(
            "stopped; exiting without waiting for what did not end: "
        )


@pytest.mark.parametrize(
    ("flag", "child"),
    [
        ("intensity = 1", "tests.e2e.actors:FailsToStart"),  # the boot fails
        ("intensity = 0", "tests.e2e.actors:crash_on_start"),  # the root gives up
    ],
    ids=["boot-fails", "root-gives-up"],
)
def test_a_failed_tree_with_a_shielded_child_exits_69(
    workdir: Path, backend: str, daemons: list[Daemon], flag: str, child: str
) -> None:
    """When the tree fails by itself (a child fails to start, the root gives up) and a
    child ignores cancellation, the daemon still exits, 69 (the tree failed), so systemd's
    Restart= acts: nobody has to send a signal."""
    config = write_config(
        workdir,
        STEADY.replace("[supervisor]", f"[supervisor]\n{flag}")
        + textwrap.dedent(f"""
            [[supervisor.children]]
            id = "stubborn"
            start = "tests.e2e.actors:shielded"
            shutdown = 0.2

            [[supervisor.children]]
            id = "bad"
            start = "{child}"
        """),
    )
    d = Daemon.start(config, backend, wait_ready=False)
    daemons.append(d)
    assert d.wait() == 69
    assert [r["path"] for r in d.records("child-abandoned")] == ["/stubborn"]
    (stopped,) = d.records("daemon-stopped")
    assert "/stubborn (abandoned" in stopped["message"]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_stuck_start_stops_the_boot(
    workdir: Path, backend: str, daemons: list[Daemon], second: int
) -> None:
    """SIGTERM while a child's on_start never returns begins the stop: the stuck start is
    cancelled and the children started before it stop in reverse order; the daemon exits 0."""
    config = write_config(
        workdir,
        with_child("""
            [[supervisor.children]]
            id = "stuck"
            start = "tests.e2e.actors:StuckStart"
            shutdown = 0.2
        """),
    )
    d = Daemon.start(config, backend, wait_ready=False)
    daemons.append(d)
    d.wait_for(lambda r: "stuck: on_start waits forever" in r.get("message", ""))
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == ["/stuck", "/a"]
    assert not d.records("daemon-ready")


def test_a_second_signal_forces_a_stuck_start_that_shields(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A start that ignores the first stop is forced by the second signal: the daemon exits."""
    config = write_config(
        workdir,
        with_child("""
            [[supervisor.children]]
            id = "stuck"
            start = "tests.e2e.actors:ShieldedStart"
            shutdown = "infinity"
        """),
    )
    d = Daemon.start(config, backend, wait_ready=False)
    daemons.append(d)
    d.wait_for(lambda r: "stuck: on_start waits forever" in r.get("message", ""))
    d.signal(signal.SIGTERM)
    d.wait_for(lambda r: r.get("event") == "daemon-stopping")
    d.signal(signal.SIGINT)
    assert d.wait() == 0


# -- reload and imports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "found"),
    [
        ("tests.e2e.importers.exits", "SystemExit: 3"),
        ("tests.e2e.importers.interrupts", "KeyboardInterrupt"),
    ],
)
def test_a_reload_whose_module_exits_at_import_is_rejected(
    workdir: Path, backend: str, daemons: list[Daemon], module: str, found: str
) -> None:
    """A new child whose module calls sys.exit() (or raises KeyboardInterrupt) at import makes
    the reload fail with invalid_config; the daemon and its tree carry on."""
    config = write_config(workdir, STEADY)
    d = Daemon.start(config, backend)
    daemons.append(d)
    write_config(
        workdir, with_child(f'[[supervisor.children]]\nid = "new"\nstart = "{module}:X"\n')
    )
    reloaded = d.cli("reload")
    assert reloaded.rc == 1
    assert "(invalid_config)" in reloaded.err
    assert f"cannot import '{module}:X': {found}" in reloaded.err
    assert d.proc.poll() is None
    assert d.cli("status", "/a").rc == 0
    assert d.stop() == 0


def test_sigterm_during_a_reload_whose_import_never_returns(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """The daemon stops on SIGTERM while a reload is stuck importing a module: the stuck
    import is left behind, and the process exits."""
    config = write_config(workdir, STEADY)
    d = Daemon.start(config, backend)
    daemons.append(d)
    write_config(
        workdir,
        with_child('[[supervisor.children]]\nid = "new"\nstart = "tests.e2e.importers.blocks:X"\n'),
    )
    d.signal(signal.SIGHUP)
    d.wait_for(lambda r: "blocks: importing forever" in r.get("message", ""))
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == ["/a"]


# -- descriptors, state and socket directories --------------------------------------------------


def test_running_out_of_descriptors_does_not_end_the_daemon(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """With every descriptor in use (the actors share the daemon's limit), a failed accept on
    the control socket or the metrics listener is retried: the daemon and its tree carry on,
    and both serve again once descriptors are free."""
    config = write_config(workdir, STEADY, daemon='metrics-listen = "127.0.0.1:0"')
    text = config.read_text().replace('metrics-listen = ""\n', "", 1)
    config.write_text(text)
    d = Daemon.start(config, backend, prefix=["prlimit", "--nofile=64", "--"], wait_ready=False)
    daemons.append(d)
    url = d.wait_for(lambda r: r.get("event") == "metrics-listening")["url"]
    d.wait_for(lambda r: r.get("event") == "daemon-ready")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    clients: list[Raw] = []
    probes: list[socket.socket] = []
    try:  # more than the daemon can accept: the rest wait in the backlog
        clients.extend(Raw(d.socket) for _ in range(80))
        d.wait_for(lambda r: "control socket: accept failed" in r.get("message", ""))
        probes.append(socket.create_connection((host, int(port))))
        d.wait_for(lambda r: "metrics listener: accept failed" in r.get("message", ""))
        assert d.proc.poll() is None
    finally:
        for client in clients:
            client.close()
        for probe in probes:
            probe.close()
    with Raw(d.socket) as client:
        assert client.ask({"command": "status", "path": "/a"})["result"]["state"] == "running"
    with urllib.request.urlopen(f"{url}/healthz", timeout=TIMEOUT) as page:  # noqa: S310
        assert page.status == 200
    assert d.stop() == 0
    for name in ("control socket", "metrics listener"):
        failed = [r for r in d.seen if f"{name}: accept failed" in r.get("message", "")]
        assert len(failed) == 1  # once per episode, not once per retry
        again = [r for r in d.seen if r.get("message") == f"{name}: accepting connections again"]
        assert len(again) == 1


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a directory to another user needs root (CI runs as root)"
)


@ROOT_ONLY
def test_a_state_directory_of_another_user_is_refused(workdir: Path, backend: str) -> None:
    """The daemon refuses a state directory another user owns (exit 6): that user could make
    it write anywhere."""
    state = workdir / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 4321, 4321)
    d = Daemon.start(write_config(workdir, STEADY), backend, wait_ready=False)
    assert d.wait() == 6
    assert any(
        f"{state} belongs to uid 4321, neither root nor the daemon's user" in r.get("message", "")
        for r in d.seen
    )
    assert not (state / "held.json").exists()


def test_two_daemons_never_share_a_state_directory(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A second daemon (its own socket, the same state directory) refuses to start (exit 6);
    the first one's holds are kept."""
    first = Daemon.start(write_config(workdir, STEADY), backend)
    daemons.append(first)
    other = workdir / "other"
    other.mkdir()
    config = write_config(other, STEADY, daemon=f'state-directory = "{workdir / "state"}"')
    text = config.read_text().replace(f'state-directory = "{other / "state"}"\n', "", 1)
    config.write_text(text)
    second = Daemon.start(config, backend, wait_ready=False)
    assert second.wait() == 6
    assert any("is in use by another corral daemon" in r.get("message", "") for r in second.seen)
    assert first.cli("stop", "/a").rc == 0
    assert json.loads((workdir / "state" / "held.json").read_text())["held"] == ["/a"]
    assert first.stop() == 0


@pytest.mark.parametrize(
    ("mode", "owner"), [(0o1777, 0), (0o770, 0), (0o700, 4321)], ids=["sticky", "group", "theirs"]
)
def test_a_socket_directory_others_may_change_is_refused(
    workdir: Path, backend: str, mode: int, owner: int
) -> None:
    """The daemon refuses to create its socket in a directory another user could change
    (exit 1): they could swap the socket's name for a symlink before its group is set."""
    if owner and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root (CI runs as root)")
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(mode)
    os.chown(shared, owner, owner)
    config = write_config(
        workdir,
        STEADY,
        daemon=f'control-socket = "{shared / "c.sock"}"\n'
        + 'socket-group = "root"\nsocket-mode = 0o660',
    )
    text = config.read_text().replace(f'control-socket = "{workdir / "control.sock"}"\n', "", 1)
    config.write_text(text)
    d = Daemon.start(config, backend, wait_ready=False)
    assert d.wait() == 1
    (refused,) = [r for r in d.seen if "cannot serve the control socket" in r.get("message", "")]
    assert f"{shared} " in refused["message"]
    assert not (shared / "c.sock").exists()


def test_the_socket_gets_its_mode_and_group_at_bind(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """With socket-group, the socket is created 0660 and given the group through its checked
    directory: nothing is chmod-ed by path."""
    config = write_config(workdir, STEADY, daemon='socket-group = "root"\nsocket-mode = 0o660')
    d = Daemon.start(config, backend)
    daemons.append(d)
    info = d.socket.lstat()
    assert (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_gid) == (
        stat.S_IFSOCK,
        0o660,
        0,
    )
    assert d.stop() == 0


# -- a bad config under socket activation --------------------------------------------------------


def activated(config: Path, backend: str) -> Daemon:
    """A daemon started as systemd's socket activation starts it: systemd-socket-activate
    listens on the control socket and starts the daemon at the first connection, passing it
    the listening socket ($LISTEN_FDS, named "control")."""
    socket_path = config.parent / "control.sock"
    d = Daemon.start(
        config,
        backend,
        wait_ready=False,
        prefix=[
            "systemd-socket-activate",
            f"--listen={socket_path}",
            "--fdname=control",
            f"--setenv=PYTHONPATH={ROOT}",
            # it passes only what it is told: the coverage of the daemon too
            *(f"--setenv={name}" for name in os.environ if name.startswith("COVERAGE_")),
        ],
    )
    d.wait_for(lambda r: r.get("message", "").startswith(f"Listening on {socket_path}"))
    return d


BAD_STRATEGY = STEADY.replace("[supervisor]", '[supervisor]\nstrategy = "one_for_one"')


def test_a_bad_config_under_socket_activation_is_served_not_configured(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """Socket-activated with an invalid config, the daemon stays up and answers every command
    with invalid_config and the reason (no exit, so no restart loop that locks the socket unit
    out); a reload of the fixed file starts the tree."""
    config = write_config(workdir, BAD_STRATEGY)
    d = activated(config, backend)
    daemons.append(d)
    problem = (
        f'{config}: expected "one-for-one", "one-for-all" or "rest-for-one", got'
        " 'one_for_one' at $.supervisor.strategy"
    )
    for _ in range(3):  # the first starts it; none makes it exit
        shown = d.cli("status")
        assert (shown.rc, shown.out) == (1, "")
        assert shown.err == (
            f"corral: /: ERROR (invalid_config) the daemon is not configured: {problem}; fix it,"
            " then `corral reload` (or `systemctl reload corral`)\n"
        )
    logged = d.wait_for(lambda r: r.get("event") == "not-configured")
    assert logged["level"] == "error"
    assert problem in logged["message"]
    still = d.cli("reload")
    assert still.rc == 1
    assert f"(invalid_config) {problem} (the daemon is still not configured)" in still.err
    write_config(workdir, STEADY)
    planned = d.cli("reload", "--dry-run")
    assert (planned.rc, planned.out.splitlines()[1]) == (
        0,
        "  would start the tree: 1 children under /",
    )
    reloaded = d.cli("reload")
    assert reloaded.rc == 0
    assert "started the tree: 1 children under /" in reloaded.out
    assert d.cli("status", "/a").rc == 0
    assert d.cli("shutdown").rc == 0
    assert d.wait() == 0


def test_an_unusable_state_directory_under_socket_activation_is_not_configured(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A corrupt state file is a reason not to start the tree, served like a bad config until
    it is fixed and the daemon reloaded."""
    state = workdir / "state"
    state.mkdir(mode=0o750)
    (state / "held.json").write_text("{nope")
    d = activated(write_config(workdir, STEADY), backend)
    daemons.append(d)
    shown = d.cli("status")
    assert shown.rc == 1
    assert (
        f"(invalid_config) the daemon is not configured: state {state / 'held.json'} is corrupt"
        in shown.err
    )
    (state / "held.json").unlink()
    assert d.cli("reload").rc == 0
    assert d.cli("status", "/a").rc == 0
    assert d.stop() == 0


def test_a_stop_during_a_boot_that_a_reload_began_is_a_clean_stop(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """Not configured, the file fixed, SIGHUP starts the boot; a SIGTERM while a child is
    still starting stops the boot and the daemon exits 0 (it once crashed, exit 1)."""
    config = write_config(workdir, BAD_STRATEGY)
    d = activated(config, backend)
    daemons.append(d)
    assert d.cli("status").rc == 1  # starts it: not configured
    gate = workdir / "go"
    write_config(
        workdir,
        STEADY + f'[[supervisor.children]]\nid = "b"\nstart = "tests.e2e.actors:Gate"\n'
        f'args = {{ path = "{gate}" }}\n',
    )
    d.signal(signal.SIGHUP)
    d.wait_for(lambda r: r.get("message", "").startswith("gate: waiting for"))
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [r["path"] for r in d.records("child-stopped")] == ["/b", "/a"]
    assert not [r for r in d.seen if "traceback" in r]
