"""Paths to actors: every actor in a tree has one (``/workers/db``) and can be found by it."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from corral.errors import UnknownPathError

if TYPE_CHECKING:
    from corral.actors.cell import ActorCell, ActorRef

__all__ = ("Registry", "join_path", "within")


def join_path(parent: str, child_id: str) -> str:
    """The path of *child_id* under the supervisor at *parent* (the root is ``/``)."""
    return f"{parent.rstrip('/')}/{child_id}"


def within(path: str, top: str) -> bool:
    """Whether *path* is *top* or below it (``/a/b`` is within ``/a``, ``/ab`` is not)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


@final
class Registry:
    """A tree's actors by path. Entries are added and removed by their supervisors."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: dict[str, ActorCell] = {}

    def __contains__(self, path: str) -> bool:
        return path in self._cells

    def __len__(self) -> int:
        return len(self._cells)

    def register(self, cell: ActorCell) -> None:
        self._cells[cell.path] = cell

    def unregister(self, path: str) -> None:
        self._cells.pop(path, None)

    def lookup(self, path: str) -> ActorRef:
        """The actor at *path*.

        Raises:
            UnknownPathError: no actor has that path (a supervisor is not an actor).
        """
        try:
            return self._cells[path].ref
        except KeyError:
            msg = f"no actor at {path!r}"
            raise UnknownPathError(msg, path=path) from None

    def paths(self) -> list[str]:
        return sorted(self._cells)
