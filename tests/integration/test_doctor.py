"""``corral doctor`` against real files, a real socket and a real daemon (both backends)."""

from __future__ import annotations

import math
import os
import socket
import threading
from typing import TYPE_CHECKING

import anyio
import psutil
import pytest

from corral.daemon import cli
from corral.daemon.doctor import Check, Level, diagnose, parse_timespan, verdict
from tests.integration.test_daemon import config_text, make_daemon, serving

if TYPE_CHECKING:
    from pathlib import Path

TREE = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "corral.demo:Echo"
shutdown = 20
[[supervisor.children]]
id = "g"
type = "supervisor"
children = [{ id = "b", start = "corral.demo:Echo", shutdown = 30 }]
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1min 30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("infinity", math.inf),
        ("0", 0.0),
        ("1min30s", 90.0),
        ("5 min", 300.0),
        ("1.5s", 1.5),
        ("1d", 86400.0),
        ("2w", 1209600.0),
        ("1M", 2629800.0),
    ],
)
def test_timespans(text: str, seconds: float) -> None:
    """systemd time spans, as unit files and `systemctl show` write them, in seconds."""
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "1min later", "", "5 MIN"])
def test_bad_timespans(text: str) -> None:
    """Anything else is a ValueError naming it."""
    with pytest.raises(ValueError, match="not a systemd time span"):
        parse_timespan(text)


def test_verdict_is_the_worst_check() -> None:
    """Any failure makes the verdict NOT READY; warnings alone are OK to look at."""
    ok, warn, fail = (Check(level, "x", "y") for level in Level)
    assert verdict([ok]) == "verdict: OK"
    assert verdict([ok, warn]) == "verdict: OK, with 1 to look at"
    assert verdict([warn, fail]) == "verdict: NOT READY: 1 failed, 1 to look at"
    assert fail.line() == "[FAIL] x: y"


def write(workdir: Path, unit: str, daemon: str = "") -> tuple[Path, Path]:
    config = workdir / "corral.toml"
    config.write_text(config_text(workdir, TREE, f'state-directory = "{workdir}/state"\n{daemon}'))
    unit_file = workdir / "corral.service"
    unit_file.write_text(f"[Service]\nType=notify\n{unit}\n")
    return config, unit_file


def test_a_short_stop_timeout_fails(workdir: Path) -> None:
    """TimeoutStopSec under the ordered shutdown's worst case (20 + 30 s) fails, with the fix."""
    config, unit = write(workdir, "TimeoutStopSec=30s\nWatchdogSec=1")
    checks = {c.name: c for c in diagnose(str(config), unit=str(unit), socket_path=None)}
    assert checks["config"].level is Level.OK
    assert checks["control socket"].level is Level.WARN  # no daemon: fine before a start
    assert checks["stop timeout"] == Check(
        Level.FAIL,
        "stop timeout",
        "TimeoutStopSec=30s is below the worst-case ordered shutdown, 50 s (+5 s margin):"
        " raise it to 55s or lower the children's shutdown timeouts",
    )
    assert checks["watchdog"].level is Level.FAIL  # 1 s < twice the 1 s stall timeout
    assert checks["metrics"].level is Level.WARN  # metrics-listen = "" in these configs


def test_a_good_unit_passes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A unit that covers the stop and a watchdog of 10 s: the CLI exits 0."""
    config, unit = write(workdir, "TimeoutStopSec=1min 30s\nWatchdogSec=10s")
    assert cli.main(["doctor", str(config), "--unit", str(unit)]) == 0
    out = capsys.readouterr().out
    assert "[ok  ] stop timeout: TimeoutStopSec=90s covers the worst-case ordered shutdown" in out
    assert out.splitlines()[-1].startswith("verdict: OK")  # warnings depend on the machine


def test_an_invalid_config_fails_and_stops_there(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config error is the one check, and the exit status is 1."""
    (workdir / "bad.toml").write_text("[supervisor]\nstrategy = 'x'\n")
    assert cli.main(["doctor", str(workdir / "bad.toml")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[FAIL] config: ")
    assert lines[1] == "verdict: NOT READY: 1 failed, 0 to look at"


def test_a_taken_metrics_port_fails(workdir: Path) -> None:
    """With no daemon running, a metrics address in use is a failure."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, unit = write(workdir, "", f'metrics-listen = "127.0.0.1:{port}"')
        checks = {c.name: c for c in diagnose(str(config), unit=str(unit), socket_path=None)}
    assert checks["metrics"] == Check(
        Level.FAIL,
        "metrics",
        f"cannot listen on 127.0.0.1:{port}: Address already in use: pid {os.getpid()}"
        f" ({psutil.Process().name()}) has it",
    )


def test_an_empty_assignment_is_the_default_and_a_bad_span_a_warning(workdir: Path) -> None:
    """`TimeoutStopSec=` resets to systemd's 90 s; an unreadable span is reported, no crash."""
    config, unit = write(workdir, "TimeoutStopSec=10\nTimeoutStopSec=\nWatchdogSec=10")
    checks = {c.name: c for c in diagnose(str(config), unit=str(unit), socket_path=None)}
    assert checks["stop timeout"].text.startswith("TimeoutStopSec=90s covers")
    unit.write_text("[Service]\nTimeoutStopSec=soon\n")
    checks = {c.name: c for c in diagnose(str(config), unit=str(unit), socket_path=None)}
    assert checks["unit"] == Check(
        Level.WARN,
        "unit",
        f"{unit}: not a systemd time span: 'soon': TimeoutStopSec and WatchdogSec not checked",
    )


def test_a_missing_unit_is_a_warning(workdir: Path) -> None:
    """An unknown unit name is reported, not guessed at."""
    config, _ = write(workdir, "")
    checks = {
        c.name: c for c in diagnose(str(config), unit="nonesuch-xyz.service", socket_path=None)
    }
    assert checks["unit"].level is Level.WARN
    assert "stop timeout" not in checks


@pytest.mark.anyio
async def test_a_running_daemon_is_checked_over_its_socket_and_http(
    workdir: Path, anyio_backend: str
) -> None:
    """With the daemon up, the socket answers ping and /healthz answers 200: the port it
    holds is no failure."""
    daemon = make_daemon(
        workdir, anyio_backend, daemon='metrics-listen = "127.0.0.1:0"', from_file=True
    )
    async with serving(daemon) as running:
        assert daemon.endpoint is not None
        config, unit = write(
            workdir, "TimeoutStopSec=90", f'metrics-listen = "127.0.0.1:{daemon.endpoint.port}"'
        )

        def run() -> dict[str, Check]:
            found = diagnose(str(config), unit=str(unit), socket_path=running.socket)
            return {c.name: c for c in found}

        checks = await anyio.to_thread.run_sync(run)
    assert checks["control socket"] == Check(
        Level.OK,
        "control socket",
        f"a daemon answers at {running.socket} (pid {os.getpid()}, running {config})",
    )
    assert checks["metrics"].level is Level.OK
    assert checks["metrics"].text.endswith("/healthz answers 200")


@pytest.mark.anyio
async def test_the_unit_says_which_config_socket_and_state(
    workdir: Path, anyio_backend: str
) -> None:
    """Without CONFIG, doctor checks what the unit runs: the config in ExecStart=, the socket
    its .socket unit listens on, the state in StateDirectory=; it asks that daemon."""
    daemon = make_daemon(
        workdir, anyio_backend, daemon='metrics-listen = "127.0.0.1:0"', from_file=True
    )
    async with serving(daemon) as running:
        assert daemon.endpoint is not None
        config = workdir / "corral.toml"
        text = (
            config.read_text()
            .replace(f'control-socket = "{running.socket}"\n', "")
            .replace('"127.0.0.1:0"', f'"127.0.0.1:{daemon.endpoint.port}"')
        )
        config.write_text(text)
        unit = workdir / "corral.service"
        unit.write_text(
            "[Service]\n"
            f"ExecStart=/usr/local/bin/corral run --backend trio {config}\n"
            "StateDirectory=corral-doctor-test\nUser=root\nTimeoutStopSec=90\n"
        )
        (workdir / "corral.socket").write_text(f"[Socket]\nListenStream={running.socket}\n")

        def run() -> dict[str, Check]:
            return {c.name: c for c in diagnose(None, unit=str(unit), socket_path=None)}

        checks = await anyio.to_thread.run_sync(run)
    assert checks["config"] == Check(Level.OK, "config", f"{config}: valid, 4 children under /")
    assert checks["control socket"].level is Level.OK
    assert f"a daemon answers at {running.socket}" in checks["control socket"].text
    assert checks["state directory"] == Check(
        Level.OK,
        "state directory",
        "/var/lib/corral-doctor-test: made by systemd at start (StateDirectory=), owned by root",
    )
    assert checks["metrics"].level is Level.OK


def test_no_config_and_no_unit_is_a_failure_that_says_what_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bare `corral doctor` where no unit is loaded checks nothing it would have to guess
    (it used to check the demo tree)."""
    assert cli.main(["doctor", "--unit", "nonesuch-xyz.service"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "[FAIL] config: no CONFIG given, and nonesuch-xyz.service is not loaded (or its"
        " ExecStart= names none): corral doctor /etc/corral/corral.toml (or --unit with the"
        " unit's name or file)"
    )


def test_a_daemon_that_is_not_configured_fails(workdir: Path) -> None:
    """A daemon that answers but runs no tree (not configured) is a failure, with its reason."""
    config, unit = write(workdir, "TimeoutStopSec=90")
    path = workdir / "fake.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader:
                reader.readline()
                conn.sendall(b'{"ok":true,"result":{"pid":7,"config":"x (not configured)"}}\n')
                reader.readline()
                conn.sendall(
                    b'{"ok":false,"error":{"code":"invalid_config","message":"bad file"}}\n'
                )

        thread = threading.Thread(target=answer)
        thread.start()
        checks = {c.name: c for c in diagnose(str(config), unit=str(unit), socket_path=path)}
        thread.join()
    assert checks["control socket"] == Check(
        Level.FAIL, "control socket", f"the daemon at {path} (pid 7) runs no tree: bad file"
    )
