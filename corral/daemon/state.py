"""What the daemon keeps across restarts: the children an operator stopped.

One small JSON file in the state directory, replaced atomically (write, fsync, rename), so a
crash mid-write leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import msgspec

from corral.errors import CorralError

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

__all__ = ("StateError", "StateFile")


class StateError(CorralError, OSError):
    """The state file cannot be read or written; the message says which and why."""


class _State(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    held: list[str] = msgspec.field(default_factory=list)  # paths stopped by an operator


class StateFile:
    """``held.json`` in *directory* (created, mode 0750, when missing)."""

    __slots__ = ("path",)

    def __init__(self, directory: Path) -> None:
        self.path = directory / "held.json"

    def load(self) -> frozenset[str]:
        """The held paths; none when the file does not exist yet.

        Raises:
            StateError: the directory cannot be created or the file is unreadable or corrupt
                (the daemon refuses to start rather than start children an operator stopped).
        """
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            data = self.path.read_bytes()
        except FileNotFoundError:
            return frozenset()
        except OSError as exc:
            msg = f"state {self.path}: {exc.strerror}; check the state-directory setting"
            raise StateError(msg) from None
        try:
            state = msgspec.json.decode(data, type=_State)
        except msgspec.DecodeError as exc:
            msg = (
                f"state {self.path} is corrupt ({exc}): it lists the children an operator"
                " stopped; fix it, or remove it to start every child"
            )
            raise StateError(msg) from None
        return frozenset(state.held)

    def save(self, held: Collection[str]) -> None:
        """Replace the file with *held*.

        Raises:
            StateError: it could not be written (the old file is left as it was).
        """
        data = msgspec.json.encode(_State(held=sorted(held)))
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # it may not exist, or its directory may not
                tmp.unlink()
            msg = f"state {self.path} was not saved: {exc.strerror}"
            raise StateError(msg) from None
