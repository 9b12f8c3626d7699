"""A bounded mailbox owned by a child's slot, so it outlives any one incarnation.

Built for speed on both backends: a ``deque`` and at most one parked receiver, no channel
objects. A message that is already waiting is taken without a checkpoint; instead the receiver
yields to the scheduler every ``FAIR_EVERY`` messages, and a sender every ``FAIR_EVERY`` sends,
so an actor draining a long mailbox still lets every other task run regularly.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.lowlevel

from corral.actors.waiter import Waiter, scheduler_yield, waiter_factory

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = (
    "DROPPED",
    "EMPTY",
    "FAIR_EVERY",
    "FULL",
    "QUEUED",
    "SEND_FAIR_EVERY",
    "YIELD",
    "Mailbox",
    "MailboxFull",
    "Overflow",
)


class Overflow(enum.Enum):
    """What a full mailbox does with one more message."""

    BLOCK = "block"  # the sender waits for room (``cast_nowait`` raises MailboxFullError)
    DROP_NEWEST = "drop-newest"  # the new message is dropped and kept as a dead letter
    REJECT = "reject"  # the sender gets MailboxFullError


_EMPTY: Final[deque[object]] = deque(maxlen=0)  # shared by every mailbox never written to

FAIR_EVERY: Final = 64
"""Messages a receiver takes without a checkpoint before it yields once."""

SEND_FAIR_EVERY: Final = 1024
"""Sends into a mailbox with room before the sender yields once. A sender also yields when
the mailbox is full (block), so this only bounds a producer into drop/reject mailboxes."""


@final
class _Empty:
    __slots__ = ()


EMPTY: Final = _Empty()
"""What ``poll`` returns when the caller must ``await get()`` instead."""

# What ``offer`` did with a message.
QUEUED: Final = 0
YIELD: Final = 1  # queued, and the sender should yield once now (SEND_FAIR_EVERY)
DROPPED: Final = 2  # full, drop-newest: not queued
FULL: Final = 3  # full, block or reject: not queued


class MailboxFull(Exception):  # internal signal, turned into MailboxFullError by callers
    """Raised by ``put_nowait`` when there is no room and the policy does not drop."""


@final
class Mailbox:
    """A FIFO of messages with a capacity and an overflow policy; one receiver at a time."""

    __slots__ = (
        "_gets",
        "_getter",
        "_items",
        "_puts",
        "_putters",
        "_yield",
        "capacity",
        "new_waiter",
        "on_arrival",
        "overflow",
    )

    def __init__(
        self,
        capacity: int,
        overflow: Overflow = Overflow.BLOCK,
        new_waiter: Callable[[], Waiter] | None = None,
    ) -> None:
        self.capacity = capacity
        self.new_waiter = new_waiter or waiter_factory()
        # Called once, then cleared, when a message arrives and no receiver is parked: how a
        # dormant actor (no task until its first message) is woken.
        self.on_arrival: Callable[[], None] | None = None
        self._yield = scheduler_yield()
        self.overflow = overflow
        self._items: deque[object] = _EMPTY  # a deque costs 624 bytes: made on first use
        self._getter: Waiter | None = None
        self._putters: deque[Waiter] | None = None
        self._gets = 0
        self._puts = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: object) -> bool:
        """Append *item*; False if the mailbox is full and drops it (``DROP_NEWEST``).

        Raises:
            MailboxFull: it is full and the policy is ``BLOCK`` or ``REJECT``.
        """
        outcome = self.offer(item)
        if outcome is FULL:
            raise MailboxFull
        return outcome is not DROPPED

    def _arrived(self) -> None:
        on_arrival = self.on_arrival
        assert on_arrival is not None
        self.on_arrival = None
        on_arrival()

    def offer(self, item: object) -> int:
        """Queue *item* if there is room, without waiting: ``QUEUED``, ``YIELD`` (queued, and
        the sender should yield once now), ``DROPPED`` or ``FULL``. The senders' fast path."""
        items = self._items
        if len(items) >= self.capacity:
            return DROPPED if self.overflow is Overflow.DROP_NEWEST else FULL
        if items is _EMPTY:
            items = self._items = deque()
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.wake()
        elif self.on_arrival is not None:
            self._arrived()
        self._puts += 1
        if self._puts >= SEND_FAIR_EVERY:
            self._puts = 0
            return YIELD
        return QUEUED

    def checkpoint(self) -> Awaitable[None]:
        """Yield to the scheduler once (the backend's own checkpoint)."""
        return self._yield()

    async def put(self, item: object) -> bool:
        """Append *item*, waiting for room under ``BLOCK``; see ``put_nowait``."""
        await self.wait_for_room()
        return self.put_nowait(item)

    async def wait_for_room(self) -> None:
        """Return once a message can be appended without waiting (at once unless full and
        blocking). Nothing else runs between its return and the caller's next step."""
        self._puts += 1
        if self._puts >= SEND_FAIR_EVERY:  # the fairness yield comes first, so that the
            self._puts = 0  # room found below cannot be taken before the caller appends
            await self._yield()
        if len(self._items) >= self.capacity and self.overflow is Overflow.BLOCK:
            await self._wait_for_room()

    def reset_receiver(self) -> None:
        """Forget a receiver that was cancelled while parked (a new incarnation receives)."""
        self._getter = None

    async def _wait_for_room(self) -> None:
        if self._putters is None:
            self._putters = deque()
        putters = self._putters
        while len(self._items) >= self.capacity:
            waiter = self.new_waiter()
            putters.append(waiter)
            try:
                await waiter.wait()
            except BaseException:
                if waiter.woken:  # woken and cancelled at once: pass the turn on
                    self._wake_putter()
                else:
                    putters.remove(waiter)
                raise

    def _wake_putter(self) -> None:
        putters = self._putters
        if putters:
            putters.popleft().wake()

    def get_nowait(self) -> object:
        """Take the oldest message. Raises ``anyio.WouldBlock`` when empty."""
        items = self._items
        if not items:
            raise anyio.WouldBlock
        item = items.popleft()
        if not items:
            self._items = _EMPTY  # an idle mailbox holds no deque
        if self._putters:
            self._wake_putter()
        return item

    def poll(self) -> object:
        """The oldest message if one can be taken now without a checkpoint, else ``EMPTY``.

        The receiver's fast path: ``item = mailbox.poll()``, and ``await mailbox.get()``
        only when that is ``EMPTY`` (empty, or a fairness yield is due).
        """
        items = self._items
        if not items or self._gets >= FAIR_EVERY - 1:
            return EMPTY
        self._gets += 1
        item = items.popleft()
        if not items:
            self._items = _EMPTY  # an idle mailbox holds no deque
        if self._putters:
            self._wake_putter()
        return item

    @property
    def receiver_parked(self) -> bool:
        """Whether a receiver is waiting for a message right now."""
        return self._getter is not None

    def wake_receiver(self) -> None:
        """Wake a parked receiver without a message (it rechecks why it was woken)."""
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.wake()

    def park(self) -> Awaitable[object]:
        """Wait for a message to arrive (when empty): await this, then ``poll`` again.

        An idle actor sits here with no coroutine frame of the mailbox's own (on asyncio it
        awaits the future itself). A receiver cancelled while parked leaves a stale waiter
        that the next put wakes harmlessly.
        """
        waiter = self._getter = self.new_waiter()
        return waiter.wait()

    async def get(self) -> object:
        """Take the oldest message, waiting for one."""
        while not self._items:
            waiter = self._getter = self.new_waiter()
            try:
                await waiter.wait()
            finally:
                if self._getter is waiter:
                    self._getter = None
        items = self._items  # read after waiting: the first put replaces the shared empty deque
        self._gets += 1
        if self._gets >= FAIR_EVERY:
            self._gets = 0
            await self._yield()  # before taking it, so a cancel loses nothing
            if not items:  # pragma: no cover  # only one receiver, but stay safe
                return await self.get()
        item = items.popleft()
        if not items:
            self._items = _EMPTY  # an idle mailbox holds no deque
        if self._putters:
            self._wake_putter()
        return item

    def take(self, predicate: Callable[[object], bool]) -> list[object]:
        """Remove and return the queued messages *predicate* accepts; the rest keep their order."""
        items = self._items
        taken = [m for m in items if predicate(m)]
        if taken:
            kept = [m for m in items if not predicate(m)]
            items.clear()
            items.extend(kept)
            for _ in taken:
                self._wake_putter()
        return taken

    def drain(self) -> list[object]:
        """Take every message at once (when the slot is deleted or the tree stops)."""
        items = list(self._items)
        if self._items is not _EMPTY:
            self._items.clear()
        while self._putters:
            self._wake_putter()
        return items
