"""What the daemon keeps across restarts: the children an operator stopped.

One small JSON file, ``held.json``, in the state directory. The directory is opened once and
checked (``directory.open_directory``: no other user can change it or a directory on the way),
then locked (``flock``) for as long as the daemon runs, so that two daemons never share one
and overwrite each other's holds. Everything happens relative to that descriptor: the file is
read without following symlinks, and replaced atomically through a temporary file created
with ``O_EXCL | O_NOFOLLOW`` under a random name, fsynced and renamed over it, so a crash
mid-write leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from typing import TYPE_CHECKING, Final, Self

import msgspec

from corral.daemon.directory import open_directory
from corral.errors import CorralError

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

__all__ = ("StateError", "StateFile")

NAME: Final = "held.json"
MAX_SIZE: Final = 16 * 1024 * 1024  # bytes: far beyond any real list of held paths


class StateError(CorralError, OSError):
    """The state directory or file cannot be used; the message says which and why."""


class _State(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    held: list[str] = msgspec.field(default_factory=list)  # paths stopped by an operator


class StateFile:
    """``held.json`` in *directory* (created, mode 0750, when missing)."""

    __slots__ = ("_fd", "directory", "path")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / NAME
        self._fd: int | None = None

    def open(self) -> None:
        """Open, check and lock the directory (done by ``load`` and ``save`` when needed).

        Raises:
            StateError: unsafe (another user could change it), not a directory, or in use by
                another daemon.
        """
        if self._fd is not None:
            return
        try:
            fd = open_directory(self.directory, create=True)
        except OSError as exc:
            msg = f"state directory {self.directory}: {exc.strerror or exc}"
            raise StateError(msg) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                msg = (
                    f"state directory {self.directory} is in use by another corral daemon:"
                    " each daemon needs its own state-directory (or stop the other one)"
                )
            else:  # pragma: no cover  # flock on a directory fails only as above
                msg = f"state directory {self.directory}: cannot lock it: {exc.strerror}"
            raise StateError(msg) from None
        self._fd = fd

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Unlock and close the directory (another daemon may use it from now on)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def load(self) -> frozenset[str]:
        """The held paths; none when the file does not exist yet.

        Raises:
            StateError: the directory is unusable or the file unreadable or corrupt (the
                daemon refuses to start rather than start children an operator stopped).
        """
        self.open()
        try:
            data = self._read()
        except FileNotFoundError:
            return frozenset()
        except OSError as exc:
            msg = f"state {self.path}: {exc.strerror or exc}; check the state-directory setting"
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

    def _read(self) -> bytes:
        assert self._fd is not None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        fd = os.open(NAME, flags, dir_fd=self._fd)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            data = f.read(MAX_SIZE + 1)
        if len(data) > MAX_SIZE:
            raise OSError(errno.EFBIG, f"larger than {MAX_SIZE} bytes")
        return data

    def save(self, held: Collection[str]) -> None:
        """Replace the file with *held*.

        Raises:
            StateError: it could not be written (the old file is left as it was).
        """
        self.open()
        directory = self._fd
        assert directory is not None
        data = msgspec.json.encode(_State(held=sorted(held)))
        tmp = f".{NAME}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o640, dir_fd=directory)
            replaced = False
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, NAME, src_dir_fd=directory, dst_dir_fd=directory)
                replaced = True
            finally:
                if not replaced:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=directory)
            os.fsync(directory)  # the rename itself survives a crash
        except OSError as exc:
            msg = f"state {self.path} was not saved: {exc.strerror or exc}"
            raise StateError(msg) from None
