"""Directories the daemon writes in, opened so that no other user can redirect its writes.

The daemon often runs as root. A directory that another user can change (or one on the way to
it) lets that user swap a name for a symlink between a check and its use, and make the daemon
write, chmod or chown a file of their choosing. So the state directory and the control
socket's directory are opened once, component by component from ``/`` (``openat`` with
``O_NOFOLLOW``, symlinks resolved by hand), and every directory on the way is checked:

- each is owned by root or by the daemon's own user;
- an ancestor that others may write must be sticky (as ``/tmp`` is): nobody can then rename
  or remove what is not theirs in it;
- the directory itself is writable by its owner only.

Everything after that is done relative to the open descriptor (``dir_fd``), so the checked
directory is the one written to, whatever happens to its path afterwards.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path
from typing import Final

__all__ = ("UnsafeDirectoryError", "open_directory")

_MAX_SYMLINKS: Final = 40  # as the kernel's own path walk


class UnsafeDirectoryError(OSError):
    """The directory, or one on the way to it, could be changed by another user (or it is
    not a directory); the message says which and what to do."""


def open_directory(
    path: Path, *, create: bool = False, mode: int = 0o750, uid: int | None = None
) -> int:
    """An ``O_DIRECTORY`` descriptor of *path*, checked as the module says.

    Missing directories are created with *mode* when *create* is true. *uid* is the daemon's
    user (default: this process's effective one; ``corral doctor`` checks for the unit's).

    Raises:
        UnsafeDirectoryError: a directory on the way may be changed by another user.
        OSError: it cannot be opened or created (``FileNotFoundError``, permissions...).
    """
    # Not os.path.abspath: it would fold "x/.." before "x" is resolved, the kernel after.
    start = path if path.is_absolute() else Path(os.getcwd()) / path
    parts: deque[str] = deque(start.parts[1:])
    here = Path("/")  # the physical path of fd, for messages
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    links = 0
    me = os.geteuid() if uid is None else uid
    try:
        _check(os.fstat(fd), here, me, last=not parts)
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            child = _open_or_make(name, fd, here / name, create=create, mode=mode)
            target: Path | None = None
            keep = False  # child becomes fd: a checked directory
            try:
                info = os.fstat(child)
                if stat.S_ISLNK(info.st_mode):
                    links += 1
                    target = _link(child, info, here / name, me, too_many=links > _MAX_SYMLINKS)
                elif not stat.S_ISDIR(info.st_mode):
                    msg = f"{here / name} is not a directory"
                    raise UnsafeDirectoryError(msg)
                else:
                    _check(info, here.parent if name == ".." else here / name, me, last=not parts)
                    keep = True
            finally:
                if not keep:
                    os.close(child)
            if target is not None:
                parts.extendleft(
                    reversed(target.parts[1:] if target.is_absolute() else target.parts)
                )
                if target.is_absolute():
                    os.close(fd)
                    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    here = Path("/")
                continue
            here = here.parent if name == ".." else here / name
            os.close(fd)
            fd = child
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _link(fd: int, info: os.stat_result, shown: Path, me: int, *, too_many: bool) -> Path:
    """Where the symlink open at *fd* points (read from that very inode, not its name). It
    must be root's or the daemon's user's: in a sticky directory (/tmp) anyone may plant one."""
    if too_many:
        msg = f"{shown}: too many levels of symbolic links"
        raise UnsafeDirectoryError(msg)
    if info.st_uid not in (0, me):
        msg = (
            f"{shown} is a symlink of uid {info.st_uid}, neither root nor the daemon's user"
            f" (uid {me}): that user could point it anywhere; name the directory itself"
        )
        raise UnsafeDirectoryError(msg)
    return Path(os.readlink("", dir_fd=fd))


def _open_or_make(name: str, parent: int, shown: Path, *, create: bool, mode: int) -> int:
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:  # made meanwhile: it is checked like any other
        pass
    except OSError as exc:
        msg = f"cannot create {shown}: {exc.strerror}"
        raise OSError(exc.errno, msg) from None
    return os.open(name, flags, dir_fd=parent)


def _check(info: os.stat_result, path: Path, me: int, *, last: bool) -> None:
    if info.st_uid not in (0, me):
        msg = (
            f"{path} belongs to uid {info.st_uid}, neither root nor the daemon's user"
            f" (uid {me}): that user could redirect what the daemon writes; use a directory"
            " owned by root or by the daemon's user"
        )
        raise UnsafeDirectoryError(msg)
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (last or not info.st_mode & stat.S_ISVTX):
        fix = (  # a shared directory such as /tmp must stay shared: never chmod it
            "it is shared (sticky, as /tmp): choose a directory of your own, such as ./run"
            if info.st_mode & stat.S_ISVTX
            else f"chmod go-w {path}, or choose another directory"
        )
        msg = (
            f"{path} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
            f" (mode {stat.S_IMODE(info.st_mode):04o}): they could redirect what the daemon"
            f" writes; {fix}"
        )
        raise UnsafeDirectoryError(msg)
