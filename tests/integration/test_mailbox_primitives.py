"""The mailbox itself: capacity, overflow, waking receivers and blocked senders."""

from __future__ import annotations

import anyio
import pytest

from corral.actors.mailbox import DROPPED, EMPTY, FULL, QUEUED, Mailbox, MailboxFull
from corral.supervisors.spec import Overflow

pytestmark = pytest.mark.anyio

HANG_GUARD = 5.0


async def test_a_sender_blocked_on_a_full_mailbox_is_released_when_it_drains_to_empty() -> None:
    """Taking the only message of a full capacity-1 mailbox lets the blocked sender in."""
    mailbox = Mailbox(1)
    mailbox.put_nowait("first")
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(mailbox.put, "second")
            await anyio.wait_all_tasks_blocked()
            assert len(mailbox) == 1  # the sender waits
            assert mailbox.get_nowait() == "first"
        assert mailbox.get_nowait() == "second"


async def test_offer_reports_what_happened_by_policy() -> None:
    """offer queues while there is room; when full it drops or refuses by the policy."""
    block, drop = Mailbox(1, Overflow.BLOCK), Mailbox(1, Overflow.DROP_NEWEST)
    assert (block.offer(1), block.offer(2)) == (QUEUED, FULL)
    assert (drop.offer(1), drop.offer(2)) == (QUEUED, DROPPED)
    reject = Mailbox(1, Overflow.REJECT)
    reject.put_nowait(1)
    with pytest.raises(MailboxFull):
        reject.put_nowait(2)
    assert [block.get_nowait(), drop.get_nowait(), reject.get_nowait()] == [1, 1, 1]


async def test_poll_is_empty_then_a_parked_receiver_is_woken_by_a_put() -> None:
    """poll says EMPTY on an empty mailbox; a put wakes the receiver parked on it."""
    mailbox = Mailbox(4)
    assert mailbox.poll() is EMPTY
    got: list[object] = []

    async def receive() -> None:
        await mailbox.park()
        got.append(mailbox.poll())

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            assert mailbox.receiver_parked
            mailbox.put_nowait("hello")
    assert got == ["hello"]


async def test_take_removes_matching_messages_and_keeps_the_order_of_the_rest() -> None:
    """take() pulls out what the predicate accepts; the others stay, in order."""
    mailbox = Mailbox(8)
    for m in [1, "a", 2, "b", 3]:
        mailbox.put_nowait(m)
    assert mailbox.take(lambda m: isinstance(m, str)) == ["a", "b"]
    assert mailbox.drain() == [1, 2, 3]
    assert len(mailbox) == 0


async def test_a_cancelled_blocked_sender_never_strands_another() -> None:
    """A blocked sender cancelled around its wake-up never leaves another one stuck."""
    mailbox = Mailbox(1)
    mailbox.put_nowait(0)
    received: list[object] = []
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def first_sender() -> None:
                with first:
                    await mailbox.put(1)

            tg.start_soon(first_sender)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(mailbox.put, 2)
            await anyio.wait_all_tasks_blocked()
            received.append(mailbox.get_nowait())  # room: the first sender is woken...
            first.cancel()  # ...and cancelled around its wake-up
            while 2 not in received:  # the second sender must get in (fail_after guards)
                await anyio.wait_all_tasks_blocked()
                received.extend(mailbox.drain())
    assert received[0] == 0
    assert set(received[1:]) <= {1, 2}
