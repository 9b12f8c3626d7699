"""The pieces that read a deployment and guard what the daemon writes: unit files and
`systemctl show` values (doctor), checked directories, the journal's whereabouts, accepting
when resources run out."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import anyio
import pytest

from corral.daemon import directory, doctor, journal, listener
from corral.daemon.directory import UnsafeDirectoryError, open_directory

# -- doctor: what a unit says ------------------------------------------------------------------


def test_a_unit_file_says_config_socket_state_user_and_timeouts(tmp_path: Path) -> None:
    """ExecStart's config (prefixes and options skipped), the .socket sibling's ListenStream,
    StateDirectory under /var/lib, User, and the timeouts (TimeoutSec= is the stop's)."""
    unit = tmp_path / "corral.service"
    unit.write_text(
        "[Service]\n"
        "# ExecStart=/commented/out run nope.toml\n"
        "ExecStart=-/usr/local/bin/corral run --backend trio /etc/corral/app.toml\n"
        "RuntimeDirectory=corral\n"
        "StateDirectory=corral/app extra\n"
        "User=corral\n"
        "TimeoutSec=2min\n"
        "WatchdogSec=10\n"
    )
    (tmp_path / "corral.socket").write_text("[Socket]\nListenStream=/run/corral/app.sock\n")
    found = doctor.deployment_of(str(unit))
    assert found == doctor.Deployment(
        str(unit),
        config="/etc/corral/app.toml",
        socket=Path("/run/corral/app.sock"),
        state=Path("/var/lib/corral/app"),
        user="corral",
        timeouts={"TimeoutStopSec": 120.0, "WatchdogSec": 10.0},
    )


def test_without_a_socket_unit_the_runtime_directory_names_the_socket(tmp_path: Path) -> None:
    """No .socket sibling: the daemon binds RuntimeDirectory's control.sock; a bare
    `corral run` (the demo) names no config."""
    unit = tmp_path / "corral@.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/corral run\nRuntimeDirectory=corral/web\n")
    found = doctor.deployment_of(str(unit))
    assert found is not None
    assert (found.config, found.socket, found.state) == (
        None,
        Path("/run/corral/web/control.sock"),
        None,
    )


@pytest.mark.parametrize(
    ("exec_start", "config"),
    [
        ("corral run a.toml", "a.toml"),
        ("@corral --socket /s run --backend trio b.toml", "b.toml"),
        ("corral run --backend trio", None),
        ("corral status", None),
    ],
)
def test_the_config_is_what_run_is_given(
    tmp_path: Path, exec_start: str, config: str | None
) -> None:
    """CONFIG is the first argument of `run` that is not an option (None: the demo)."""
    unit = tmp_path / "corral.service"
    unit.write_text(f"[Service]\nExecStart={exec_start}\n")
    found = doctor.deployment_of(str(unit))
    assert found is not None
    assert found.config == config


# -- checked directories -----------------------------------------------------------------------


def test_a_loop_of_symlinks_is_refused(tmp_path: Path) -> None:
    """Symlinks that point at each other end the walk with a clear error, as the kernel's."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(UnsafeDirectoryError, match="too many levels of symbolic links"):
        open_directory(tmp_path / "a")


def test_an_absolute_symlink_is_walked_from_the_root(tmp_path: Path) -> None:
    """A symlink to an absolute path is resolved from / and checked all the way."""
    real = tmp_path / "real"
    real.mkdir(mode=0o750)
    (tmp_path / "link").symlink_to(real)
    fd = open_directory(tmp_path / "link")
    try:
        assert os.path.samestat(os.fstat(fd), real.stat())
    finally:
        os.close(fd)


def test_a_file_on_the_way_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UnsafeDirectoryError, match=f"{tmp_path / 'file'} is not a directory"):
        open_directory(tmp_path / "file" / "below", create=True)


def test_missing_directories_are_made_only_when_asked(tmp_path: Path) -> None:
    """Without create a missing directory is FileNotFoundError; with it, made with its mode."""
    with pytest.raises(FileNotFoundError):
        open_directory(tmp_path / "new")
    os.close(open_directory(tmp_path / "new" / "deeper", create=True, mode=0o700))
    assert stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory root may not create in needs root")
def test_a_directory_that_cannot_be_made_says_where(tmp_path: Path) -> None:
    """mkdir failing (here: on /proc) is an OSError naming the directory."""
    with pytest.raises(OSError, match="cannot create /proc/corral-nope"):
        open_directory(Path("/proc/corral-nope/x"), create=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_the_checks_are_for_the_daemons_uid(tmp_path: Path) -> None:
    """A directory of uid 4321 is safe for a daemon running as 4321 (doctor checks for the
    unit's user), not for this one."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o750)
    os.chown(theirs, 4321, 4321)
    os.close(open_directory(theirs, uid=4321))
    with pytest.raises(UnsafeDirectoryError, match="neither root nor the daemon's user"):
        open_directory(theirs)
    assert directory.__all__ == ("UnsafeDirectoryError", "open_directory")


# -- the journal -------------------------------------------------------------------------------


def test_own_unit_is_the_service_in_the_cgroup(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/corral@web.service\n")
    assert journal.own_unit(cgroup) == "corral@web.service"
    cgroup.write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert journal.own_unit(cgroup) is None


def test_a_readable_journal_is_no_problem(tmp_path: Path) -> None:
    machine = tmp_path / "0123"
    machine.mkdir()
    (machine / "system.journal").write_bytes(b"")
    assert journal.unreadable(None, journals=(tmp_path,)) is None
    assert journal.unreadable(str(tmp_path)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    problem = journal.unreadable(None, journals=(empty,))
    assert problem is not None
    assert problem.startswith(f"no systemd journal in {empty}")


# -- accepting ---------------------------------------------------------------------------------


class _Failing:
    """A listener whose accepts fail with *errors* in turn, then succeed."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)

    async def accept(self) -> str:
        if self.errors:
            raise self.errors.pop(0)
        return "stream"


@pytest.mark.anyio
async def test_accept_waits_out_a_shortage_and_says_so_once(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE (also as anyio's BrokenResourceError caused by it) is retried, logged once,
    and its end logged; another failure is raised."""
    log = logging.getLogger("corral.tests")
    shortage = OSError(errno.EMFILE, "Too many open files")
    broken = anyio.BrokenResourceError()
    broken.__cause__ = OSError(errno.ENFILE, "Too many open files in system")
    failing = _Failing(shortage, broken)
    with caplog.at_level(logging.INFO, logger="corral.tests"), anyio.fail_after(10):
        accepted: object = await listener.accept(failing, "test", log)  # type: ignore[arg-type]  # a stand-in
    assert accepted == "stream"
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"test: accept failed: Too many open files; retrying every {listener.RETRY:g} s",
        "test: accepting connections again",
    ]
    closed = _Failing(anyio.ClosedResourceError())
    with pytest.raises(anyio.ClosedResourceError):
        await listener.accept(closed, "test", log)  # type: ignore[arg-type]  # a stand-in
    gone = _Failing(OSError(errno.EBADF, "Bad file descriptor"))
    with pytest.raises(OSError, match="Bad file descriptor"):
        await listener.accept(gone, "test", log)  # type: ignore[arg-type]  # a stand-in


@pytest.mark.skipif(os.geteuid() != 0, reason="a symlink of another user needs root to make")
def test_another_users_symlink_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    """In a sticky, world-writable directory (as /tmp) anyone may plant a symlink where the
    state directory is expected: one that is not root's or the daemon's is refused, wherever
    it points."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o750)
    planted = shared / "corral-state"
    planted.symlink_to(victim)
    os.lchown(planted, 4321, 4321)
    with pytest.raises(UnsafeDirectoryError, match="is a symlink of uid 4321"):
        open_directory(planted, create=True)
    os.lchown(planted, 0, 0)  # root's own link is followed
    os.close(open_directory(planted))


def test_dot_dot_is_resolved_after_the_symlink_before_it(tmp_path: Path) -> None:
    """`link/..` is the parent of where link points (as the kernel resolves it), not the
    directory holding the link (as a textual normalization would have it)."""
    (tmp_path / "real" / "sub").mkdir(parents=True, mode=0o750)
    (tmp_path / "other").mkdir(mode=0o750)
    (tmp_path / "other" / "link").symlink_to(tmp_path / "real" / "sub")
    fd = open_directory(tmp_path / "other" / "link" / "..")
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "real").stat())
    finally:
        os.close(fd)


def test_a_refused_directory_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """Refusals close what they opened: a daemon retrying a reload never runs out."""
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(UnsafeDirectoryError):
            open_directory(unsafe)
    assert len(os.listdir("/proc/self/fd")) == before
