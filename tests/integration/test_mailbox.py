"""Mailboxes: they outlive an incarnation, keep dead letters, and apply overflow policies."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, Gated

pytestmark = pytest.mark.anyio


class Tracked(corral.Actor):
    """Logs ``(incarnation, message)``; ``"crash"`` raises ``Boom``."""

    def __init__(self, starts: list[str], log: list[tuple[int, object]]) -> None:
        self.starts = starts
        self.log = log
        self.incarnation = 0

    async def on_start(self) -> None:
        self.starts.append(self.ctx.path)
        self.incarnation = len(self.starts)

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = "bad message"
            raise Boom(msg)
        self.log.append((self.incarnation, message))
        return message


def tracked_tree(log: list[tuple[int, object]]) -> corral.SupervisorSpec:
    return corral.SupervisorSpec([corral.ChildSpec("a", Tracked, args={"starts": [], "log": log})])


def gated_tree(
    gate: anyio.Event, log: list[object], overflow: corral.Overflow
) -> corral.SupervisorSpec:
    """One Gated actor ``/a`` whose mailbox holds a single message."""
    return corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "a",
                Gated,
                args={"gate": gate, "log": log},
                mailbox=corral.MailboxSpec(capacity=1, overflow=overflow),
            )
        ]
    )


async def fill(ref: corral.ActorRef) -> None:
    """Park the actor in ``"hold"`` and fill its one-message mailbox with ``1``."""
    ref.cast_nowait("hold")
    await anyio.wait_all_tasks_blocked()  # the actor took "hold" and waits on its gate
    ref.cast_nowait(1)


async def test_messages_queued_behind_a_crash_reach_the_next_incarnation() -> None:
    """Messages queued behind one that crashes the actor are handled by its next incarnation."""
    log: list[tuple[int, object]] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tracked_tree(log)) as tree:
            ref = tree.lookup("/a")
            for message in ("first", "crash", 1, 2, 3):
                ref.cast_nowait(message)
            assert await ref.call("sync") == "sync"
    assert log == [(1, "first"), (2, 1), (2, 2), (2, 3), (2, "sync")]


async def test_message_that_crashed_the_actor_is_a_dead_letter() -> None:
    """The message being handled when the actor crashed is a dead letter with the exception."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tracked_tree([])) as tree:
            ref = tree.lookup("/a")
            ref.cast_nowait("crash")
            await ref.call("sync")
            letters = tree.dead_letters()
    assert [(d.path, d.message, d.reason) for d in letters] == [("/a", "crash", "crashed")]
    assert isinstance(letters[0].exception, Boom)
    assert str(letters[0].exception) == "bad message"


async def test_dead_letters_are_filtered_by_path() -> None:
    """``Tree.dead_letters(path)`` returns only that actor's dead letters."""
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("a", Tracked, args={"starts": [], "log": []}),
            corral.ChildSpec("b", Tracked, args={"starts": [], "log": []}),
        ],
        intensity=2,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            for path in ("/a", "/b"):
                tree.lookup(path).cast_nowait("crash")
                await tree.lookup(path).call("sync")
            assert [d.path for d in tree.dead_letters("/b")] == ["/b"]


async def test_tree_keeps_the_newest_dead_letters_and_counts_all() -> None:
    """A tree keeps a path's newest letters of a reason (``dead_letters // 20`` of them: 2
    here); statistics count every one."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            gated_tree(anyio.Event(), [], corral.Overflow.DROP_NEWEST), dead_letters=40
        ) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            for n in (2, 3, 4):
                ref.cast_nowait(n)
            kept = [d.message for d in tree.dead_letters()]
            [stats] = tree.statistics().children
    assert kept == [3, 4]
    assert stats.dead_letters == 3


async def test_block_overflow_cast_nowait_raises_when_full() -> None:
    """With overflow block, ``cast_nowait`` to a full mailbox raises MailboxFullError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gated_tree(anyio.Event(), [], corral.Overflow.BLOCK)) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            with pytest.raises(
                corral.MailboxFullError,
                match=r"^mailbox of /a is full \(1 messages, overflow block\)$",
            ):
                ref.cast_nowait(2)


async def test_block_overflow_cast_waits_for_room() -> None:
    """With overflow block, ``cast`` to a full mailbox waits until there is room, then queues."""
    gate = anyio.Event()
    log: list[object] = []
    sent: list[object] = []

    async def send(ref: corral.ActorRef, message: object) -> None:
        await ref.cast(message)
        sent.append(message)

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gated_tree(gate, log, corral.Overflow.BLOCK)) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            async with anyio.create_task_group() as tg:
                tg.start_soon(send, ref, 2)
                await anyio.wait_all_tasks_blocked()
                assert sent == []
                gate.set()
            assert sent == [2]
            await ref.call("sync")
    assert log == ["hold", 1, 2, "sync"]


async def test_block_overflow_call_times_out_waiting_for_room() -> None:
    """With overflow block, a call finding no room within its timeout raises CallTimeoutError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gated_tree(anyio.Event(), [], corral.Overflow.BLOCK)) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            with pytest.raises(
                corral.CallTimeoutError, match=r"^call to /a timed out after 0\.05 s$"
            ):
                await ref.call(2, timeout=0.05)


async def test_drop_newest_overflow_dead_letters_the_new_message() -> None:
    """With overflow drop-newest, a message sent to a full mailbox is a 'dropped' dead letter."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            gated_tree(anyio.Event(), [], corral.Overflow.DROP_NEWEST)
        ) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            ref.cast_nowait(2)
            await ref.cast(3)
            letters = tree.dead_letters()
    assert [(d.path, d.message, d.reason, d.exception) for d in letters[:2]] == [
        ("/a", 2, "dropped", None),
        ("/a", 3, "dropped", None),
    ]


async def test_drop_newest_overflow_call_raises_mailbox_full() -> None:
    """With overflow drop-newest, a call to a full mailbox raises MailboxFullError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            gated_tree(anyio.Event(), [], corral.Overflow.DROP_NEWEST)
        ) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            with pytest.raises(
                corral.MailboxFullError,
                match=r"^mailbox of /a is full \(1 messages, overflow drop-newest\)$",
            ):
                await ref.call(2)


async def test_reject_overflow_cast_raises_when_full() -> None:
    """With overflow reject, ``cast`` and ``call`` to a full mailbox raise MailboxFullError."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(gated_tree(anyio.Event(), [], corral.Overflow.REJECT)) as tree:
            ref = tree.lookup("/a")
            await fill(ref)
            full = r"^mailbox of /a is full \(1 messages, overflow reject\)$"
            with pytest.raises(corral.MailboxFullError, match=full):
                await ref.cast(2)
            with pytest.raises(corral.MailboxFullError, match=full):
                await ref.call(2)


async def terminate_while_holding(tree: corral.Tree, failures: list[str]) -> None:
    """Park ``/a`` in ``"hold"`` with a cast and a call queued, then terminate it."""

    async def call(ref: corral.ActorRef) -> None:
        try:
            await ref.call("queued call")
        except corral.ActorNotRunningError as exc:
            failures.append(str(exc))

    ref = tree.lookup("/a")
    ref.cast_nowait("hold")
    await anyio.wait_all_tasks_blocked()
    ref.cast_nowait("queued cast")
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, ref)
        await anyio.wait_all_tasks_blocked()
        await tree.supervisor().terminate_child("a")


def holding_tree(log: list[object]) -> corral.SupervisorSpec:
    return corral.SupervisorSpec(
        [corral.ChildSpec("a", Gated, args={"gate": anyio.Event(), "log": log})]
    )


async def test_terminate_fails_queued_calls() -> None:
    """Terminating an actor fails the calls queued in its mailbox with ActorNotRunningError."""
    failures: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(holding_tree([])) as tree:
            await terminate_while_holding(tree, failures)
    assert failures == ["actor /a is not running (terminated)"]


async def test_terminate_dead_letters_the_message_in_hand_as_stopped() -> None:
    """The message an actor was handling when terminated is a dead letter with reason 'stopped'."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(holding_tree([])) as tree:
            await terminate_while_holding(tree, [])
            letters = tree.dead_letters()
    assert [(d.path, d.message, d.reason, d.exception) for d in letters] == [
        ("/a", "hold", "stopped", None)
    ]


async def test_casts_queued_at_terminate_are_handled_after_restart_child() -> None:
    """Casts queued when an actor is terminated are handled once it is restarted."""
    log: list[object] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(holding_tree(log)) as tree:
            await terminate_while_holding(tree, [])
            await tree.supervisor().restart_child("a")
            await tree.lookup("/a").call("sync")
    assert log == ["queued cast", "sync"]


async def test_delete_child_dead_letters_queued_casts_as_undelivered() -> None:
    """Deleting a terminated actor turns its still queued casts into 'undelivered' letters."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(holding_tree([])) as tree:
            await terminate_while_holding(tree, [])
            await tree.supervisor().delete_child("a")
            letters = tree.dead_letters()
    assert [(d.message, d.reason) for d in letters] == [
        ("hold", "stopped"),
        ("queued cast", "undelivered"),
    ]


async def test_casts_queued_when_the_tree_stops_are_undelivered_dead_letters() -> None:
    """Casts still queued when the tree stops are kept as 'undelivered' dead letters."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(holding_tree([])) as tree:
            ref = tree.lookup("/a")
            ref.cast_nowait("hold")
            await anyio.wait_all_tasks_blocked()
            ref.cast_nowait("left behind")
    assert [(d.message, d.reason) for d in tree.dead_letters()] == [
        ("hold", "stopped"),
        ("left behind", "undelivered"),
    ]
