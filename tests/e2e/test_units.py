"""The systemd units and the journal catalog in systemd/, checked offline.

The units are linted by the shared ``check-units`` tool (``systemd-analyze verify``, which
fails on any diagnostic, and ``systemd-analyze security``) against a private root that has
the host's system units and a stub ``/usr/local/bin/corral``, so that ``ExecStart=``
resolves. The catalog is compiled into a private root too: the host's catalog database is
never touched. Needs root (a private mount namespace), as in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.daemon import config, journal

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
UNITS = ("corral.service", "corral.socket", "corral@.service", "corral@.socket")
SERVICES = tuple(unit for unit in UNITS if unit.endswith(".service"))
CATALOG = UNIT_DIR / "corral.catalog"
SUPPORT = "https://github.com/corral-project/corral/blob/main/runbooks/README.md"
TIMEOUT = 120.0  # seconds for one systemd-analyze or journalctl run; they take about one
GOOD_LEVELS = ("PERFECT", "SAFE", "OK")  # systemd's scale: OK is an exposure below 5.0
MESSAGE_IDS = {
    "child-started": "f215683db39a4da19e938caf9502525d",
    "child-exited": "5450bc697d784dcd896db890555037f5",
    "child-stopped": "695e9bbe545d4b89bbf968762572497d",
    "child-abandoned": "34f525ad92114734868c94c1a1f94db8",
    "start-failed": "7dab4d88121c477b8394c9aecaeb966c",
    "restart-scheduled": "08176e8fcf76486db9da84fb6eae15e3",
    "supervisor-gave-up": "2949516a352f48f9a54b36fb32d852ae",
    "supervisor-auto-shutdown": "70174c73790846b780dfff71e61f57e1",
    "supervisor-escalated": "7f8c584671a34f388d610e120223d413",
    "dead-letter": "9adcf6569e4c49db9933d45c425e1d78",
    "breaker-changed": "bccccd81257e4ce892aed22b09edefbd",
    "service-level": "9be91542f9ea489f8c47a334ea187105",
    "child-given-up": "fc79944b28244e27b74486a508fd1f00",
    "audit": "14f8d5f30ab349c9b898bfda820768d5",
    "loop-stall": "40dcdafe5219416aa651db7a5f7eacf2",
    "loop-recovered": "8361ae00036742e4876f4281ed02fb7b",
    "daemon-ready": "ad8ffa85830d4ff59b9140eaff13ee2c",
    "daemon-stopping": "80ad436475c44eb9af364dc6216039d2",
    "reload": "481c921620f64823b215d45f710c2b58",
    "not-configured": "8930da68de6048bdb7b3ae67030c5886",
    "daemon-stopped": "2a08ffd979ea402bb6c5abfc232f17af",
    "config-invalid": "b9eca2eb7e5d41ef9b1cdef52ad35159",
    "daemon-failed": "8394049c13274cf683f1e7cc61fcd46d",
}
_EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d) (\w+)")


def _tool(name: str) -> str:
    """The shared tool *name*, from ``$CORRAL_SHARED_TOOLS`` (default /work/shared/tools)."""
    tools = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools"))
    path = tools / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} not found or not executable: set CORRAL_SHARED_TOOLS to the directory"
            f" that holds the shared tools (check-units, with-systemd)"
        )
    return str(path)


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: these tests need systemd's tools (apt-get install systemd)")
    return found


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root for systemd-analyze: the host's system units, a stub corral, ours in /etc."""
    root = tmp_path / "root"
    stub = root / "usr/local/bin/corral"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy2(UNIT_DIR / unit, units / unit)
    return root


def _exposure(root: Path, unit: str) -> tuple[str, float, str]:
    """(unit name, exposure, level) from ``systemd-analyze security --offline=true``.

    It runs in a private mount namespace with its own /run/systemd, as check-units does, so
    that nothing is left on the host.
    """
    script = 'mount -n -t tmpfs corral-test /run/systemd && exec "$@"'
    argv = [_program("unshare"), "--mount", "--propagation", "private", "--"]
    argv += [_program("sh"), "-c", script, "sh", _program("systemd-analyze"), "security"]
    argv += ["--offline=true", f"--root={root}", "--no-pager", f"etc/systemd/system/{unit}"]
    result = _run(argv, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    match = _EXPOSURE.search(result.stdout)
    assert match is not None, result.stdout + result.stderr
    return match[1], float(match[2]), match[3]


def test_units_pass_check_units(unit_root: Path) -> None:
    """check-units finds no diagnostic in any unit and every service's exposure is <= 4.9."""
    paths = [f"etc/systemd/system/{unit}" for unit in UNITS]
    argv = [_tool("check-units"), "--security-threshold", "49", "--root", str(unit_root)]
    result = _run([*argv, *paths], cwd=unit_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK ({len(UNITS)} file(s))" in result.stdout


@pytest.mark.parametrize("unit", SERVICES)
def test_service_exposure_is_ok(unit_root: Path, unit: str) -> None:
    """systemd-analyze security rates each service's exposure "OK" or better."""
    name, exposure, level = _exposure(unit_root, unit)
    assert name == unit.replace("@.", "@i.")  # a template is analysed as instance "i"
    assert level in GOOD_LEVELS, f"{name}: {exposure} {level}"
    assert exposure < 5.0


def _catalog_entries() -> dict[str, str]:
    """MESSAGE_ID -> the entry's text (headers and body), as in the file."""
    text = CATALOG.read_text()
    parts = re.split(r"^-- ([0-9a-f]{32})\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_catalog_compiles_and_lists_every_message_id(tmp_path: Path) -> None:
    """The catalog compiles in a private root and lists every MESSAGE_ID, defined by corral."""
    root = tmp_path / "catalog-root"
    (root / "usr/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy2(CATALOG, root / "usr/lib/systemd/catalog/corral.catalog")
    journalctl = _program("journalctl")
    update = _run([journalctl, f"--root={root}", "--update-catalog"])
    assert update.returncode == 0, update.stderr
    assert update.stderr == ""
    assert (root / "var/lib/systemd/catalog/database").is_file()
    listed = _run([journalctl, f"--root={root}", "--list-catalog"])
    assert listed.returncode == 0, listed.stderr
    ids = {line.split()[0] for line in listed.stdout.splitlines() if " corral: " in line}
    assert ids == set(MESSAGE_IDS.values())


def test_catalog_matches_the_daemon_message_ids() -> None:
    """The catalog explains exactly the MESSAGE_IDs the daemon sends (journal.MESSAGE_IDS)."""
    assert journal.MESSAGE_IDS == MESSAGE_IDS
    assert set(_catalog_entries()) == set(MESSAGE_IDS.values())


@pytest.mark.parametrize(("event", "message_id"), sorted(MESSAGE_IDS.items()))
def test_catalog_entry_points_to_its_runbook(event: str, message_id: str) -> None:
    """Each entry has a subject, Defined-By and Support, a body, and names a runbook page."""
    entry = _catalog_entries()[message_id]
    headers, _, body = entry.partition("\n\n")
    fields = dict(line.split(": ", 1) for line in headers.splitlines())
    assert fields["Subject"], event
    assert fields["Defined-By"] == "corral"
    assert fields["Support"] == SUPPORT
    assert body.strip(), event
    pages = re.findall(r"runbooks/([a-z-]+\.md)", body)
    assert pages, f"{event}: the body names no runbooks/ page"
    for page in pages:
        assert (ROOT / "runbooks" / page).is_file(), f"{event}: runbooks/{page} does not exist"


def _uncommented(text: str) -> list[str]:
    """Directive lines with no comment directly above them or above their block."""
    missing: list[str] = []
    covered = False  # the line above is a comment, or a directive in a commented block
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(("#", ";")):
            covered = True
        elif not line or line.startswith("["):
            covered = False
        elif not covered:
            missing.append(f"{number}: {line}")
    return missing


@pytest.mark.parametrize("unit", UNITS)
def test_every_directive_is_commented(unit: str) -> None:
    """Every setting in a unit file has a comment directly above it or above its block."""
    missing = _uncommented((UNIT_DIR / unit).read_text())
    assert not missing, f"{unit}: settings without a comment:\n" + "\n".join(missing)


def test_comment_check_catches_a_bare_directive() -> None:
    """The comment check flags a setting after a blank line and accepts a commented block."""
    text = "[Service]\n# why\nType=notify\nNotifyAccess=main\n\nUser=corral\n"
    assert _uncommented(text) == ["6: User=corral"]


def test_the_shipped_config_is_valid_and_leaves_socket_and_state_to_systemd() -> None:
    """systemd/corral.toml, which the install block puts in /etc/corral, is a valid config
    that sets no control-socket or state-directory (the units pass them) and keeps the
    socket unit's mode if the daemon ever binds its own."""
    loaded = config.load(ROOT / "systemd" / "corral.toml")
    settings = loaded.daemon
    assert (settings.control_socket, settings.state_directory) == (None, None)
    assert settings.socket_mode == 0o660
    assert settings.metrics_listen == "127.0.0.1:9810"
