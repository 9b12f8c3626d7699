"""The shipped units under a real systemd (``with-systemd``: PID 1 in a throwaway container).

The container runs ``systemd/corral.service`` and ``corral.socket`` as shipped, plus one
drop-in (``TEST_DROP_IN``) that only points them at this checkout: ExecStart= and
ExecReload= use its virtualenv, whose Python lives under /root (so /root/.pyenv and the
checkout are bound read-only into ProtectHome's empty /root), and a shorter WatchdogSec=.
The tests talk to the daemon from the host, through the container's /run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from corral.daemon.journal import MESSAGE_IDS
from tests.e2e.support import ROOT, run_cli

if TYPE_CHECKING:
    from collections.abc import Iterator

TOOLS = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools"))
DEADLINE = 60.0
VENV_BIN = Path(sys.executable).parent
PYTHON_PREFIX = Path(os.path.realpath(sys.executable)).parents[1]  # e.g. /root/.pyenv/versions/X
TEST_DROP_IN = f"""
[Service]
ExecStart=
ExecStart={VENV_BIN}/corral run /etc/corral/corral.toml
ExecReload=
ExecReload={VENV_BIN}/corral --socket /run/corral/control.sock reload
Environment=PYTHONPATH={ROOT}
ProtectHome=tmpfs
BindReadOnlyPaths={PYTHON_PREFIX} {ROOT}
WatchdogSec=3
"""
CONFIG = """
[daemon]
log-level = "debug"
backend = "{backend}"
[supervisor]
intensity = 10
period = 60
[[supervisor.children]]
id = "first"
start = "corral.demo:Echo"
[[supervisor.children]]
id = "second"
start = "corral.demo:Echo"
[[supervisor.children]]
id = "third"
start = "corral.demo:Echo"
"""


class Container:
    """A booted systemd container; commands run inside with ``in-systemd`` (after
    ``prefix``: a subclass may give them a clean environment)."""

    prefix: tuple[str, ...] = ()

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.root = Path(env["WITH_SYSTEMD_ROOT"])
        self.in_systemd = shutil.which("in-systemd", path=env["PATH"])
        assert self.in_systemd is not None, env["PATH"]

    def run(
        self, *argv: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert self.in_systemd is not None
        done = subprocess.run(  # the tool's own helper
            [self.in_systemd, *self.prefix, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=240,
            env=self.env,
        )
        if check and done.returncode != 0:
            msg = f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}"
            raise AssertionError(msg)
        return done

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", unit, "-p", prop, "--value").stdout.strip()

    def wait_show(self, unit: str, prop: str, value: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while (found := self.show(unit, prop)) != value:
            assert time.monotonic() < deadline, f"{unit} {prop}={found}, never {value}"
            time.sleep(0.1)

    def journal(self, *matches: str) -> list[dict[str, Any]]:
        out = self.run("journalctl", "-o", "json", "--no-pager", *matches).stdout
        return [json.loads(line) for line in out.splitlines()]

    def wait_journal(self, *matches: str, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + DEADLINE
        while len(found := self.journal(*matches)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} entries {matches}: {found}"
            time.sleep(0.1)
        return found

    @property
    def socket(self) -> Path:
        return self.root / "run/corral/control.sock"

    def configure(self, text: str) -> None:
        (self.root / "etc/corral").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/corral/corral.toml").write_text(textwrap.dedent(text))

    def reset(self, backend: str, extra: str = "") -> None:
        """Both units stopped, failures and the journal forgotten, a fresh config."""
        self.run("systemctl", "stop", "corral.socket", "corral.service", check=False)
        self.run("systemctl", "reset-failed", check=False)
        self.run("journalctl", "--rotate", check=False)
        self.run("journalctl", "--vacuum-files=1", check=False)
        self.configure(CONFIG.format(backend=backend) + textwrap.dedent(extra))
        run = self.root / "run/corral"  # kept across stops (RuntimeDirectoryPreserve=yes)
        for gate in run.glob("*") if run.exists() else ():
            if gate.name != "control.sock":
                gate.unlink()


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    """One container for the module, booted with the shipped units and the test drop-in."""
    tool = TOOLS / "with-systemd"
    if not tool.exists():
        pytest.fail(f"{tool} is missing (set CORRAL_SHARED_TOOLS to the tools' directory)")
    scratch = Path(tempfile.mkdtemp(prefix="corral-systemd-"))
    units = scratch / "units"
    (units / "corral.service.d").mkdir(parents=True)
    for name in ("corral.service", "corral.socket"):
        shutil.copy(ROOT / "systemd" / name, units / name)
    (units / "corral.service.d" / "test.conf").write_text(TEST_DROP_IN)
    env_file = scratch / "env"
    process = subprocess.Popen(  # a fixed tool
        [
            str(tool),
            "--units",
            str(units),
            "--host-python",
            "--bind-ro",
            str(ROOT),
            "--",
            "sh",
            "-c",
            f'env -0 > "{env_file}.tmp" && mv "{env_file}.tmp" "{env_file}" && sleep 3600',
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE * 2
        while not env_file.exists():
            assert process.poll() is None, f"with-systemd exited with {process.returncode}"
            assert time.monotonic() < deadline, "the container did not boot"
            time.sleep(0.1)
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        box = Container(dict(pairs))
        box.run("systemd-sysusers", str(ROOT / "systemd" / "corral.sysusers"))  # as shipped
        yield box
    finally:
        process.send_signal(signal.SIGTERM)  # the tool powers the container off and cleans up
        process.wait(timeout=DEADLINE)
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_unit_is_active_only_after_ready(container: Container, backend: str) -> None:
    """While a child is still starting the unit is "activating"; READY makes it "active"."""
    gate = "/run/corral/go"
    container.reset(
        backend,
        textwrap.dedent(f"""
            [[supervisor.children]]
            id = "slow"
            start = "tests.e2e.systemd_actors:gated"
            args = {{ gate = "{gate}" }}
        """),
    )
    container.run("systemctl", "start", "--no-block", "corral.service")
    container.wait_journal("CORRAL_EVENT=child-started", "CHILD_PATH=/third")
    assert container.show("corral.service", "ActiveState") == "activating"
    assert container.show("corral.service", "StatusText") == "starting 4 children under /"
    (container.root / gate.lstrip("/")).touch()
    container.wait_show("corral.service", "ActiveState", "active")
    assert (
        container.show("corral.service", "StatusText") == "4/4 running, 0 in backoff; service full"
    )
    (ready,) = container.journal("CORRAL_EVENT=daemon-ready")
    (slow,) = container.journal("CORRAL_EVENT=child-started", "CHILD_PATH=/slow")
    assert int(slow["__REALTIME_TIMESTAMP"]) <= int(ready["__REALTIME_TIMESTAMP"])


def test_status_reload_and_ordered_stop(container: Container, backend: str) -> None:
    """`systemctl status` shows STATUS=; `systemctl reload` applies a new child; `systemctl
    stop` stops the children in reverse start order, with a clean result."""
    container.reset(backend)
    container.run("systemctl", "start", "corral.service")
    status = container.run("systemctl", "status", "corral.service", check=False).stdout
    assert 'Status: "3/3 running, 0 in backoff; service full"' in status
    container.configure(
        CONFIG.format(backend=backend)
        + '[[supervisor.children]]\nid = "fourth"\nstart = "corral.demo:Echo"\n'
    )
    container.run("systemctl", "reload", "corral.service")
    shown = run_cli("--socket", str(container.socket), "status", "/fourth")
    assert (shown.rc, shown.err) == (0, ""), shown
    container.wait_show("corral.service", "StatusText", "4/4 running, 0 in backoff; service full")
    container.run("systemctl", "stop", "corral.service")
    stopped = [e["CHILD_PATH"] for e in container.journal("CORRAL_EVENT=child-stopped")]
    assert stopped == ["/fourth", "/third", "/second", "/first"]
    assert container.show("corral.service", "Result") == "success"
    audit = container.journal("CORRAL_EVENT=audit", "COMMAND=reload")
    assert [e["RESULT"] for e in audit] == ["ok"]
    (applied,) = container.journal(f"MESSAGE_ID={MESSAGE_IDS['reload']}")  # not only SIGHUP's
    assert applied["MESSAGE"] == "reload: start /fourth (new)"


def test_a_blocked_loop_is_killed_by_the_watchdog_and_restarted(
    container: Container, backend: str
) -> None:
    """An actor blocking the loop stops WATCHDOG=1; systemd aborts and restarts the daemon."""
    gate = "/run/corral/block"
    container.reset(
        backend,
        textwrap.dedent(f"""
            [[supervisor.children]]
            id = "blocker"
            start = "tests.e2e.systemd_actors:blocker"
            args = {{ gate = "{gate}" }}
        """),
    )
    container.run("systemctl", "start", "corral.service")
    first = container.show("corral.service", "MainPID")
    (container.root / gate.lstrip("/")).touch()
    (stall,) = container.wait_journal("CORRAL_EVENT=loop-stall")
    assert stall["CHILD_PATH"] == "/blocker"
    assert "time.sleep(60)" in stall["STACK"]
    container.wait_show("corral.service", "NRestarts", "1")
    container.wait_show("corral.service", "ActiveState", "active")
    assert container.show("corral.service", "MainPID") != first
    manager = container.journal("-u", "corral.service", "_PID=1")
    assert any("Watchdog timeout" in str(e.get("MESSAGE")) for e in manager), manager
    container.run("systemctl", "stop", "corral.service")


def test_a_socket_activated_daemon_answers_status(container: Container, backend: str) -> None:
    """With only corral.socket started, `corral status` starts the daemon, which answers."""
    container.reset(backend)
    container.run("systemctl", "start", "corral.socket")
    assert container.show("corral.service", "ActiveState") == "inactive"
    shown = run_cli("--socket", str(container.socket), "status")
    assert shown.rc == 0, shown
    assert "first" in shown.out
    container.wait_show("corral.service", "ActiveState", "active")
    (passed,) = container.journal("-u", "corral.service", "LOGGER=corral.control")
    assert "passed by systemd (socket activation)" in passed["MESSAGE"]
    container.run("systemctl", "stop", "corral.service", "corral.socket")


def test_an_invalid_config_at_start_is_an_error_entry(container: Container, backend: str) -> None:
    """Without its socket unit, a daemon whose config is invalid exits 6, and says why in a
    native entry of priority err with its MESSAGE_ID: `journalctl -u corral -p err` shows it."""
    container.reset(backend)
    container.configure(CONFIG.format(backend=backend).replace("intensity = 10", "intensity = -1"))
    started = container.run("systemctl", "start", "corral.service", check=False)
    assert started.returncode != 0
    container.wait_show("corral.service", "ExecMainStatus", "6")
    errors = container.journal("-u", "corral.service", "-p", "err", "SYSLOG_IDENTIFIER=corral")
    (entry,) = [e for e in errors if e.get("MESSAGE_ID") == MESSAGE_IDS["config-invalid"]]
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"].startswith("/etc/corral/corral.toml: ")
    assert "$.supervisor.intensity" in entry["MESSAGE"]
    container.run("systemctl", "reset-failed", check=False)
