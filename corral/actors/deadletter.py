"""Dead letters: messages kept instead of handled, so nothing disappears without a trace."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Final, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("PATHS_PER_REASON", "DeadLetter", "DeadLetterBox")


@attrs.frozen
class DeadLetter:
    """One message that was not handled.

    ``reason`` is ``"crashed"`` (the actor raised while handling it; it is never redelivered),
    ``"dropped"`` (mailbox full under drop-newest), ``"stopped"`` (handling was cut short by a
    stop) or ``"undelivered"`` (still queued when its actor was removed or the tree stopped).
    ``at`` is monotonic (anyio's clock); ``wall_time`` is for people reading it.
    """

    path: str
    message: object
    reason: str
    exception: BaseException | None
    at: float
    wall_time: float = attrs.field(factory=time.time)


PATHS_PER_REASON: Final = 20
"""A reason keeps the letters of this many paths at most (those that had one last), each its
newest ``maxlen // PATHS_PER_REASON``: one path's flood cannot push out the others'."""


@final
class DeadLetterBox:
    """A tree's dead letters, kept per reason and per path within it, with counts that never
    drop.

    Each reason (``crashed``, ``dropped``, ...) keeps at most ``maxlen`` letters: the newest
    ``maxlen // 20`` (at least 1) of each of the 20 paths that had one of that reason most
    recently. So deliberate drops (``dropped``, a drop-newest mailbox doing its job) never push
    out the letters of crashes, and one actor's flood never pushes out another's.
    """

    __slots__ = ("_per_path", "_shelves", "by_path", "listener", "maxlen", "total")

    def __init__(self, maxlen: int = 1000) -> None:
        self.maxlen = maxlen
        self._per_path = max(1, maxlen // PATHS_PER_REASON)
        # reason -> path -> its newest letters; paths in order of their last letter
        self._shelves: dict[str, OrderedDict[str, deque[tuple[int, DeadLetter]]]] = {}
        self.total = 0
        self.by_path: Counter[str] = Counter()
        # told of each letter as it is added (the tree publishes MessageDeadLettered)
        self.listener: Callable[[DeadLetter], None] | None = None

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        self.by_path[letter.path] += 1
        if self.maxlen:
            shelf = self._shelves.get(letter.reason)
            if shelf is None:
                shelf = self._shelves[letter.reason] = OrderedDict()
            kept = shelf.get(letter.path)
            if kept is None:
                kept = shelf[letter.path] = deque(maxlen=self._per_path)
                if len(shelf) * self._per_path > max(self.maxlen, self._per_path):
                    shelf.popitem(last=False)  # the path whose last letter is the oldest
            else:
                shelf.move_to_end(letter.path)
            kept.append((self.total, letter))  # numbered: listed in the order they came
        listener = self.listener
        if listener is not None:
            listener(letter)

    def list(self, path: str | None = None) -> tuple[DeadLetter, ...]:
        """The kept letters, oldest first; only *path*'s when given."""
        shelves = self._shelves.values()
        if path is None:
            found = [entry for shelf in shelves for kept in shelf.values() for entry in kept]
        else:
            found = [entry for shelf in shelves for entry in shelf.get(path, ())]
        found.sort(key=_first)
        return tuple(letter for _, letter in found)

    def __len__(self) -> int:
        return sum(len(kept) for shelf in self._shelves.values() for kept in shelf.values())


def _first(entry: tuple[int, DeadLetter]) -> int:
    return entry[0]
