"""The event bus of a running tree: observers, streams and the events messages produce."""

from __future__ import annotations

import logging

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog, Worker, summary

pytestmark = pytest.mark.anyio


def one_worker() -> corral.SupervisorSpec:
    return corral.SupervisorSpec([corral.ChildSpec("a", Worker, args={"name": "a"})], intensity=3)


async def test_event_stream_yields_a_restarts_events_in_order() -> None:
    """``events.stream()`` yields a crash's events in order: dead letter, exit, restart."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(one_worker()) as tree, tree.events.stream() as stream:
            tree.lookup("/a").cast_nowait("crash")
            received = [await stream.receive() for _ in range(4)]
    assert summary(received) == [
        ("MessageDeadLettered", "/a"),
        ("ChildExited", "/a"),
        ("RestartScheduled", "/a"),
        ("ChildStarted", "/a"),
    ]


async def test_crashing_message_publishes_message_dead_lettered() -> None:
    """The message that crashed an actor is published as MessageDeadLettered with its exception."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(one_worker()) as tree:
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            letter = await events.wait_for(corral.MessageDeadLettered, "/a")
    assert letter.reason == "crashed"
    assert isinstance(letter.exception, Boom)


async def test_unsubscribed_observer_gets_no_more_events() -> None:
    """An observer gets no events after calling the function ``subscribe`` returned."""
    events = EventLog()
    later = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(one_worker()) as tree:
            unsubscribe = tree.events.subscribe(events)
            tree.events.subscribe(later)
            unsubscribe()
            tree.lookup("/a").cast_nowait("crash")
            await later.wait_for(corral.ChildStarted, "/a", restarts=1)
    assert events.events == []


async def test_failing_observer_is_logged_and_does_not_disturb_the_tree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An observer that raises is logged at error level; the tree and other observers go on."""

    def broken(event: corral.Event) -> None:
        msg = "observer bug"
        raise RuntimeError(msg)

    events = EventLog()
    with anyio.fail_after(HANG_GUARD), caplog.at_level(logging.ERROR, logger="corral.events"):
        async with corral.open_tree(one_worker()) as tree:
            tree.events.subscribe(broken)
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/a", restarts=1)
            assert await tree.lookup("/a").call("fine") == "fine"
    assert caplog.records
    assert all(r.getMessage().startswith("event observer ") for r in caplog.records)
    assert all(isinstance(r.exc_info[1], RuntimeError) for r in caplog.records if r.exc_info)


async def test_a_reader_that_never_reads_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A stream whose reader falls behind keeps its first events, drops the newer ones and
    says so in one log line, however many it drops (one line per reader, not per event)."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD), caplog.at_level(logging.WARNING, logger="corral.events"):
        async with corral.open_tree(one_worker()) as tree:
            tree.events.subscribe(events)
            async with tree.events.stream(max_buffer=2) as stream:
                for restarts in range(1, 4):  # each crash publishes four events
                    tree.lookup("/a").cast_nowait("crash")
                    await events.wait_for(corral.ChildStarted, "/a", restarts=restarts)
                kept = [stream.receive_nowait() for _ in range(2)]
                with pytest.raises(anyio.WouldBlock):
                    stream.receive_nowait()
    assert summary(kept) == [("MessageDeadLettered", "/a"), ("ChildExited", "/a")]
    behind = [r for r in caplog.records if "event stream reader is behind" in r.getMessage()]
    assert len(behind) == 1
