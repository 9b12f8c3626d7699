"""Dead letters: messages kept instead of handled, so nothing disappears without a trace."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("DeadLetter", "DeadLetterBox")


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


@final
class DeadLetterBox:
    """The newest ``maxlen`` dead letters of a tree, with counts that never drop."""

    __slots__ = ("_letters", "by_path", "listener", "total")

    def __init__(self, maxlen: int = 1000) -> None:
        self._letters: deque[DeadLetter] = deque(maxlen=maxlen)
        self.total = 0
        self.by_path: Counter[str] = Counter()
        # told of each letter as it is added (the tree publishes MessageDeadLettered)
        self.listener: Callable[[DeadLetter], None] | None = None

    def add(self, letter: DeadLetter) -> None:
        self._letters.append(letter)
        self.total += 1
        self.by_path[letter.path] += 1
        listener = self.listener
        if listener is not None:
            listener(letter)

    def list(self, path: str | None = None) -> tuple[DeadLetter, ...]:
        """The kept letters, oldest first; only *path*'s when given."""
        return tuple(d for d in self._letters if path is None or d.path == path)
