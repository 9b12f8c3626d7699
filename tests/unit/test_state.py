"""The state file (``held.json``): the operator's stops, kept across daemon restarts."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from corral.daemon import state
from corral.daemon.state import StateError, StateFile
from corral.errors import CorralError

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
        f"state {directory / 'held.json'}: Not a directory; check the state-directory setting"
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
    assert str(info.value) == f"state {directory / 'held.json'} was not saved: Not a directory"


def test_failed_save_leaves_the_old_file(tmp_path: Path) -> None:
    """A save that fails midway (the disk is full) leaves the old file and no temporary one."""
    file = StateFile(tmp_path)
    file.save({"/a"})
    old = (tmp_path / "held.json").read_bytes()
    # The temporary file is where the write goes: make it a disk that is always full.
    (tmp_path / f".held.json.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(StateError) as info:
        file.save({"/a", "/b"})
    assert (
        str(info.value) == f"state {tmp_path / 'held.json'} was not saved: No space left on device"
    )
    assert (tmp_path / "held.json").read_bytes() == old
    assert os.listdir(tmp_path) == ["held.json"]
    assert file.load() == frozenset({"/a"})
