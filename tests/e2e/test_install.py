"""The README's install blocks, run as written inside a real systemd (``with-systemd``), then
what an operator does next: doctor, status, reload, stop; a bad config and its recovery; a
second tree as a template instance.

The blocks are read from the README at test time (the ``sh`` block under "### Install" and
under "### Several trees on one host"), so a change to the README is what gets tested. The
container is this host's OS, so two things stand in for a host's own: ``/usr`` gets a
writable overlay (a real host's is writable by root), and pip installs from a wheelhouse
built here first (the container has no network): ``PIP_NO_INDEX`` and ``PIP_FIND_LINKS`` in
the environment, the block's text unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import ROOT
from tests.e2e.test_systemd import Container

if TYPE_CHECKING:
    from collections.abc import Iterator

TOOLS = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools"))
DEADLINE = 120.0
CLEAN_ENV = (
    "env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
)
COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", ".hypothesis", ".*_cache", ".coverage*"
)


def readme_block(heading: str) -> str:
    """The first ``sh`` code block under *heading* in the README that runs ``systemctl`` (the
    packages block before the install block does not: the container has the host's)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start)
    for match in re.finditer(r"```sh\n(.*?)```", text[start:end], re.DOTALL):
        if "systemctl " in match.group(1):
            return match.group(1)
    msg = f"no sh block with systemctl under {heading!r} in README.md"
    raise AssertionError(msg)


INSTALL = "### Install"
TEMPLATE = "### Several trees on one host"


def test_the_install_blocks_are_found() -> None:
    """Both blocks are in the README, and the install block is the one with the units (the
    packages block before it is not run: the container has the host's)."""
    install = readme_block(INSTALL)
    assert "apt-get" not in install
    assert "systemctl daemon-reload && systemctl enable --now corral.socket corral.service" in (
        install
    )
    assert "corral@web.service" in readme_block(TEMPLATE)


class Box(Container):
    """A booted systemd container holding a copy of the checkout at /src; commands run with
    a clean environment (what a root shell there has)."""

    prefix = CLEAN_ENV

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.installed: subprocess.CompletedProcess[str] | None = None  # the block's run

    def block(self, text: str) -> subprocess.CompletedProcess[str]:
        """A README block, as a root shell in the checkout runs it (stopping at a failure)."""
        return self.run(
            "env",
            "-C",
            "/src",
            "PIP_NO_INDEX=1",
            "PIP_FIND_LINKS=/wheels",
            "sh",
            "-eux",
            stdin=text,
        )


@pytest.fixture(scope="module")
def wheels() -> Iterator[Path]:
    """corral's dependencies as wheels (corral itself is built from the checkout inside)."""
    scratch = Path(tempfile.mkdtemp(prefix="corral-wheels-"))
    try:
        source = scratch / "src"
        shutil.copytree(ROOT, source, ignore=COPIED)
        wheelhouse = scratch / "wheels"
        subprocess.run(  # our own interpreter's pip
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(wheelhouse),
                f"{source}[systemd]",
                "setuptools>=68",
                "wheel",
            ],
            check=True,
            timeout=DEADLINE * 3,
        )
        for built in wheelhouse.glob("corral-*.whl"):
            built.unlink()  # the block builds corral from the checkout, as on a real host
        yield wheelhouse
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def box(wheels: Path) -> Iterator[Box]:
    """A fresh container with the checkout at /src, the wheelhouse at /wheels, a writable
    /usr, and the README's install block already run in it."""
    tool = TOOLS / "with-systemd"
    if not tool.exists():
        pytest.fail(f"{tool} is missing (set CORRAL_SHARED_TOOLS to the tools' directory)")
    scratch = Path(tempfile.mkdtemp(prefix="corral-install-"))
    source = scratch / "src"
    shutil.copytree(ROOT, source, ignore=COPIED)
    env_file = scratch / "env"
    process = subprocess.Popen(  # a fixed tool
        [
            str(tool),
            "--bind",
            f"{source}:/src",
            "--bind-ro",
            f"{wheels}:/wheels",
            "--",
            "sh",
            "-c",
            f'env -0 > "{env_file}.tmp" && mv "{env_file}.tmp" "{env_file}" && sleep 3600',
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while not env_file.exists():
            assert process.poll() is None, f"with-systemd exited with {process.returncode}"
            assert time.monotonic() < deadline, "the container did not boot"
            time.sleep(0.1)
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        found = Box(dict(pairs))
        found.run(  # a host's /usr is writable by root; the container's is the host's, read-only
            "sh",
            "-ec",
            "mkdir -p /run/usr/upper /run/usr/work && mount -t overlay overlay"
            " -o lowerdir=/usr,upperdir=/run/usr/upper,workdir=/run/usr/work /usr",
        )
        found.installed = found.block(readme_block(INSTALL))
        yield found
    finally:
        process.send_signal(signal.SIGTERM)  # the tool powers the container off and cleans up
        process.wait(timeout=DEADLINE)
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_install_block_runs_as_written(box: Box) -> None:
    """The block ends with `corral doctor` passing and `corral status` showing the tree, and
    both units active, the socket 0660 group corral (systemd's, passed to the daemon), the
    config 0640 root:corral."""
    done = box.installed
    assert done is not None
    assert "verdict: OK" in done.stdout
    assert "[FAIL]" not in done.stdout
    assert "● /  running" in done.stdout
    for unit in ("corral.socket", "corral.service"):
        assert box.show(unit, "ActiveState") == "active"
    assert box.run("stat", "-c", "%a %G", "/run/corral/control.sock").stdout.split() == [
        "660",
        "corral",
    ]
    (passed,) = box.journal("-u", "corral", "LOGGER=corral.control")
    assert "passed by systemd (socket activation)" in passed["MESSAGE"]
    config = box.run("stat", "-c", "%a %U %G", "/etc/corral", "/etc/corral/corral.toml").stdout
    assert config.split("\n")[:2] == ["750 root corral", "640 root corral"]
    assert box.show("corral.service", "User") == "corral"


def test_doctor_checks_the_deployment_from_anywhere(box: Box) -> None:
    """Bare `corral doctor`, run elsewhere than the config, checks what the unit runs: its
    config, its socket, its state directory; the metrics port the daemon holds is fine."""
    doctor = box.run("env", "-C", "/var", "corral", "doctor")
    lines = doctor.stdout.splitlines()
    assert lines[0] == "[ok  ] config: /etc/corral/corral.toml: valid, 3 children under /"
    assert lines[1].startswith("[ok  ] control socket: a daemon answers at /run/corral/control")
    assert lines[2].startswith("[ok  ] state directory: /var/lib/corral")
    assert "[ok  ] metrics: http://127.0.0.1:9810/healthz answers 200" in lines
    assert lines[-1].startswith("verdict: OK")


def test_reload_then_stop_in_reverse_order(box: Box) -> None:
    """`systemctl reload` applies a new child; `systemctl stop` stops them in reverse order;
    the catalog explains the entries, with commands for this unit and socket."""
    config = box.root / "etc/corral/corral.toml"
    original = config.read_text()
    try:
        config.write_text(
            original + '\n[[supervisor.children]]\nid = "extra"\nstart = "corral.demo:Echo"\n'
        )
        box.run("systemctl", "reload", "corral")
        assert box.run("corral", "status", "/extra").returncode == 0
        box.run("systemctl", "stop", "corral.service")
        stopped = [
            e["CHILD_PATH"] for e in box.journal("-u", "corral", "CORRAL_EVENT=child-stopped")
        ]
        assert stopped[-6:] == [
            "/extra",
            "/group/follower",
            "/group/leader",
            "/group",
            "/echo",
            "/ticker",
        ]
        assert box.show("corral.service", "Result") == "success"
        explained = box.run(
            "journalctl", "-u", "corral", "-x", "--no-pager", "CORRAL_EVENT=daemon-ready"
        ).stdout
        assert "corral --socket /run/corral/control.sock status" in explained
    finally:
        config.write_text(original)
        box.run("systemctl", "start", "corral.service")


def test_a_bad_config_never_locks_the_operator_out(box: Box) -> None:
    """With corral.socket on and an invalid config, `corral status` starts the daemon, which
    answers with what is wrong, never exits, never restarts; fixing the file and the one
    documented command (`systemctl reload corral`) bring the tree back, and the socket keeps
    its permissions."""
    box.run("systemctl", "stop", "corral.service")
    config = box.root / "etc/corral/corral.toml"
    original = config.read_text()
    config.write_text(original.replace('strategy = "one-for-one"', 'strategy = "one_for_one"', 1))
    try:
        for _ in range(4):
            shown = box.run("corral", "status", check=False)
            assert shown.returncode == 1, shown
            assert (
                "ERROR (invalid_config) the daemon is not configured: /etc/corral/corral.toml:"
                in shown.stderr
            )
            assert "got 'one_for_one' at $.supervisor.strategy" in shown.stderr
        assert box.show("corral.service", "ActiveState") == "active"
        assert box.show("corral.service", "NRestarts") == "0"
        assert box.show("corral.socket", "ActiveState") == "active"
        assert box.show("corral.service", "StatusText").startswith(
            "not configured: /etc/corral/corral.toml"
        )
        (entry,) = box.journal("-u", "corral", "MESSAGE_ID=8930da68de6048bdb7b3ae67030c5886")
        assert entry["PRIORITY"] == "3"
        rejected = box.run("systemctl", "reload", "corral", check=False)
        assert rejected.returncode != 0  # still invalid: the reload fails, and says why
    finally:
        config.write_text(original)
    box.run("systemctl", "reload", "corral")
    assert box.run("corral", "status").returncode == 0
    assert box.show("corral.service", "NRestarts") == "0"
    socket_mode = box.run("stat", "-c", "%a %G", "/run/corral/control.sock").stdout.split()
    assert socket_mode == ["660", "corral"]


def test_a_second_tree_as_a_template_instance(box: Box) -> None:
    """The README's block for several trees runs as written: corral@web is up on its own
    socket and port, and doctor checks it by its unit's name."""
    done = box.block(readme_block(TEMPLATE))
    assert "verdict: OK" in done.stdout
    assert "[ok  ] config: /etc/corral/web.toml: valid" in done.stdout
    assert "[ok  ] control socket: a daemon answers at /run/corral/web/control.sock" in done.stdout
    assert "[ok  ] state directory: /var/lib/corral/web" in done.stdout
    assert "http://127.0.0.1:9811/healthz answers 200" in done.stdout
    assert "● /  running" in done.stdout
    entries = box.journal("-u", "corral@web", "CORRAL_EVENT=daemon-ready")
    assert entries[-1]["CORRAL_UNIT"] == "corral@web.service"
    assert entries[-1]["CORRAL_SOCKET"] == "/run/corral/web/control.sock"
