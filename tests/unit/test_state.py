"""The state file (``held.json``): the operator's stops, kept across daemon restarts."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from corral.daemon import state
from corral.daemon.state import StateError, StateFile
from corral.errors import CorralError
from tests.limits import disk_full_after

if TYPE_CHECKING:
    from pathlib import Path


def test_all_is_pinned() -> None:
    """The state module exports exactly its public names, as a tuple."""
    assert state.__all__ == ("StateError", "StateFile")


def test_state_error_is_an_os_error() -> None:
    """StateError refines OSError (and is a CorralError)."""
    assert issubclass(StateError, OSError)
    assert issubclass(StateError, CorralError)


def test_missing_file_holds_nothing_and_creates_the_directory(tmp_path: Path) -> None:
    """Without a file nothing is held; the directory is created, mode 0750."""
    directory = tmp_path / "state" / "corral"
    assert StateFile(directory).load() == frozenset()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert StateFile(directory).path == directory / "held.json"


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    """Saved paths load back; the file is small, sorted JSON and replaced whole."""
    file = StateFile(tmp_path)
    file.save({"/group/leader", "/a"})
    assert (tmp_path / "held.json").read_bytes() == b'{"version":1,"held":["/a","/group/leader"]}'
    assert file.load() == frozenset({"/a", "/group/leader"})
    file.save(())
    assert file.load() == frozenset()
    assert os.listdir(tmp_path) == ["held.json"]  # no temporary file left behind


def test_a_file_without_version_loads(tmp_path: Path) -> None:
    """``version`` has a default, so a hand-written file may leave it out."""
    (tmp_path / "held.json").write_text('{"held": ["/a"]}')
    assert StateFile(tmp_path).load() == frozenset({"/a"})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("{nope", "JSON is malformed: object keys must be strings (byte 1)", id="json"),
        pytest.param('{"held": "/a"}', "Expected `array`, got `str` - at `$.held`", id="shape"),
        pytest.param(
            '{"held": [], "extra": 1}', "Object contains unknown field `extra`", id="unknown-key"
        ),
    ],
)
def test_corrupt_file_is_a_state_error(tmp_path: Path, content: str, problem: str) -> None:
    """A corrupt file refuses to load, saying what is wrong and what to do."""
    path = tmp_path / "held.json"
    path.write_text(content)
    with pytest.raises(StateError) as info:
        StateFile(tmp_path).load()
    assert str(info.value) == (
        f"state {path} is corrupt ({problem}): it lists the children an operator stopped;"
        " fix it, or remove it to start every child"
    )


def test_directory_under_a_file_cannot_be_loaded(tmp_path: Path) -> None:
    """A state directory that cannot exist (its parent is a file) is a StateError."""
    (tmp_path / "file").write_text("")
    directory = tmp_path / "file" / "state"
    with pytest.raises(StateError) as info:
        StateFile(directory).load()
    assert str(info.value) == (
        f"state directory {directory}: {tmp_path / 'file'} is not a directory"
    )


def test_unreadable_file_is_a_state_error(tmp_path: Path) -> None:
    """A held.json that cannot be read (here a directory) is a StateError."""
    (tmp_path / "held.json").mkdir()
    with pytest.raises(StateError) as info:
        StateFile(tmp_path).load()
    assert str(info.value) == (
        f"state {tmp_path / 'held.json'}: Is a directory; check the state-directory setting"
    )


def test_save_into_an_impossible_directory_is_a_state_error(tmp_path: Path) -> None:
    """A save that cannot write (the directory's parent is a file) raises StateError."""
    (tmp_path / "file").write_text("")
    directory = tmp_path / "file" / "state"
    with pytest.raises(StateError) as info:
        StateFile(directory).save({"/a"})
    assert str(info.value) == (
        f"state directory {directory}: {tmp_path / 'file'} is not a directory"
    )


def test_failed_save_leaves_the_old_file(tmp_path: Path) -> None:
    """A save that fails midway (the disk is full) leaves the old file and no temporary one."""
    file = StateFile(tmp_path)
    file.save({"/a"})
    old = (tmp_path / "held.json").read_bytes()
    with disk_full_after(10), pytest.raises(StateError) as info:
        file.save({"/a", "/b"})
    assert str(info.value) == f"state {tmp_path / 'held.json'} was not saved: File too large"
    assert (tmp_path / "held.json").read_bytes() == old
    assert os.listdir(tmp_path) == ["held.json"]
    assert file.load() == frozenset({"/a"})


def test_a_symlinked_file_is_neither_read_nor_written_through(tmp_path: Path) -> None:
    """held.json as a symlink is refused on load, and a save replaces the link itself: the
    file it pointed to is never written (another user's trap for a root daemon)."""
    target = tmp_path / "target"
    target.write_text("precious")
    directory = tmp_path / "state"
    directory.mkdir(mode=0o750)
    (directory / "held.json").symlink_to(target)
    file = StateFile(directory)
    with pytest.raises(StateError, match="Too many levels of symbolic links"):
        file.load()
    file.save({"/a"})
    assert target.read_text() == "precious"
    assert not (directory / "held.json").is_symlink()
    assert file.load() == frozenset({"/a"})


def test_temporary_names_cannot_be_guessed(tmp_path: Path) -> None:
    """A link planted at every name a pid-based scheme would use is never followed."""
    target = tmp_path / "target"
    target.write_text("precious")
    directory = tmp_path / "state"
    directory.mkdir(mode=0o750)
    for name in (f".held.json.{os.getpid()}.tmp", ".held.json.tmp", "held.json.tmp"):
        (directory / name).symlink_to(target)
    StateFile(directory).save({"/a"})
    assert target.read_text() == "precious"


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o770, "its group"), (0o757, "others"), (0o1777, "others")],
    ids=["group", "others", "sticky"],
)
def test_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    """A state directory writable by its group or by others is refused, sticky or not."""
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StateError) as info:
        StateFile(directory).load()
    fix = (
        "it is shared (sticky, as /tmp): choose a directory of your own, such as ./run"
        if mode & 0o1000
        else f"chmod go-w {directory}, or choose another directory"
    )
    assert str(info.value) == (
        f"state directory {directory}: {directory} is writable by {who} (mode {mode:04o}):"
        f" they could redirect what the daemon writes; {fix}"
    )


def test_an_ancestor_others_may_write_must_be_sticky(tmp_path: Path) -> None:
    """A directory on the way that others may write is refused unless sticky (as /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(StateError, match=f"{shared} is writable by others"):
        StateFile(shared / "state").load()
    shared.chmod(0o1777)
    assert StateFile(shared / "state").load() == frozenset()


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a directory to another user needs root (CI runs as root)"
)


@ROOT_ONLY
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """A state directory owned by another user (not root, not the daemon's) is refused."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chown(directory, 4321, 4321)
    with pytest.raises(StateError) as info:
        StateFile(directory).load()
    assert str(info.value) == (
        f"state directory {directory}: {directory} belongs to uid 4321, neither root nor the"
        f" daemon's user (uid {os.geteuid()}): that user could redirect what the daemon writes;"
        " use a directory owned by root or by the daemon's user"
    )


@ROOT_ONLY
def test_a_symlink_in_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """A path through a symlink that another user's directory holds is refused: that user
    could point it anywhere between the check and the write."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o750)
    (theirs / "link").symlink_to(safe)
    os.chown(theirs, 4321, 4321)
    with pytest.raises(StateError, match=f"{theirs} belongs to uid 4321"):
        StateFile(theirs / "link").load()


def test_a_symlink_in_a_safe_directory_is_followed(tmp_path: Path) -> None:
    """A symlink that only root or the daemon's user can change is resolved as usual."""
    real = tmp_path / "real"
    real.mkdir(mode=0o750)
    (tmp_path / "link").symlink_to("real")
    StateFile(tmp_path / "link").save({"/a"})
    assert (real / "held.json").exists()


def test_one_daemon_at_a_time_per_directory(tmp_path: Path) -> None:
    """A second state file on a directory in use is refused until the first is closed."""
    first = StateFile(tmp_path)
    first.save({"/a"})
    with pytest.raises(StateError) as info:
        StateFile(tmp_path).load()
    assert str(info.value) == (
        f"state directory {tmp_path} is in use by another corral daemon: each daemon needs"
        " its own state-directory (or stop the other one)"
    )
    first.close()
    second = StateFile(tmp_path)
    assert second.load() == frozenset({"/a"})
    second.close()
