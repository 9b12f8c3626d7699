"""The daemon's log sink: records and lifecycle events queue in order and are written in
batches by the loop, at once from other threads (after what is queued), and all at the end;
a record made in an actor's code carries the actor's path."""

from __future__ import annotations

import io
import json
import logging
import warnings
from typing import Any

import anyio
import pytest

import corral
from corral.daemon.logging import setup
from corral.supervisors.events import ChildStarted, MessageDeadLettered
from tests.integration.support import HANG_GUARD
from tests.integration.test_daemon import corral_logger

__all__ = ("corral_logger",)  # the fixture, used here too

pytestmark = pytest.mark.anyio


@pytest.fixture
def stream(corral_logger: logging.Logger) -> io.StringIO:
    """Where the log goes (the loggers are restored afterwards: corral_logger)."""
    return io.StringIO()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_the_loop_writes_in_order_in_batches(stream: io.StringIO) -> None:
    """On the loop, records and events wait in the queue (nothing written yet), and come out
    in the order they were made; another thread's record is written at once, after them."""
    sink = setup("json", "info", stream)
    log = logging.getLogger("app")
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            await anyio.wait_all_tasks_blocked()
            log.info("first")
            sink.observe(ChildStarted("/a", "/", 0, anyio.current_time()))
            log.info("second")
            assert stream.getvalue() == ""  # queued: the code that logged did not wait
            await anyio.to_thread.run_sync(log.info, "from a thread")
            assert [line["message"] for line in lines(stream)] == [
                "first",
                "started /a (restarts: 0)",
                "second",
                "from a thread",
            ]
            log.info("last")
            tg.cancel_scope.cancel()  # the end writes what is left
    assert lines(stream)[-1]["message"] == "last"


async def test_without_the_loop_task_records_are_written_at_once(stream: io.StringIO) -> None:
    """Before the loop task runs (and after), a record or an event is written as it comes."""
    sink = setup("json", "info", stream)
    logging.getLogger("app").warning("now")
    sink.observe(ChildStarted("/a", "/", 0, anyio.current_time()))
    assert [line["message"] for line in lines(stream)] == ["now", "started /a (restarts: 0)"]
    sink.observe(ChildStarted("/b", "/", 0, anyio.current_time()))
    setup("json", "warning", stream)  # the same sink, a new level: info events are left out
    sink.observe(ChildStarted("/c", "/", 0, anyio.current_time()))
    assert len(lines(stream)) == 3


async def _talker(ctx: corral.Context) -> None:
    logging.getLogger("jobsvc").info("in the task")
    ctx.logger.info("through the actor's logger, from a thread")
    await anyio.to_thread.run_sync(ctx.logger.info, "from a thread")
    await anyio.to_thread.run_sync(logging.getLogger("jobsvc").info, "plain, from a thread")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    ctx.started()
    await anyio.sleep_forever()


class _Talker(corral.Actor):
    async def on_start(self) -> None:
        self.logger.info("a class actor")


async def test_records_made_in_an_actor_carry_its_path(stream: io.StringIO) -> None:
    """A record from any logger in an actor's task, from its logger anywhere, from a thread
    it started, and a warning, carry its path; the actor's logger is named after its module."""
    setup("json", "info", stream)
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("talker", _talker),
            corral.ChildSpec("group", corral.SupervisorSpec([corral.ChildSpec("c", _Talker)])),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec):
            pass
    logging.getLogger("app").info("outside")
    found = {line["message"]: line for line in lines(stream)}
    for message in ("in the task", "through the actor's logger, from a thread", "from a thread"):
        assert found[message]["path"] == "/talker", message
    assert found["plain, from a thread"]["path"] == "/talker"  # anyio copies the context
    (warned,) = [line for line in found.values() if line["logger"] == "py.warnings"]
    assert warned["path"] == "/talker"
    assert found["a class actor"]["path"] == "/group/c"
    assert found["a class actor"]["logger"] == __name__
    assert found["through the actor's logger, from a thread"]["logger"] == __name__
    assert "path" not in found["outside"]


def letter(path: str, reason: str, n: int) -> MessageDeadLettered:
    return MessageDeadLettered(path, reason, None, 0.0, {"order": n, "password": "hunter2"})


async def test_dead_letters_make_one_line_per_path_and_reason_a_second(
    stream: io.StringIO,
) -> None:
    """A storm of 500 drops at one path and 3 crashes at another: the first of each is
    logged at once, the rest counted; their lines come when the second is over (here: the
    end), naming the last message, redacted. Nothing counted is lost."""
    sink = setup("json", "info", stream)
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            for n in range(500):
                sink.observe(letter("/cache", "dropped", n))
            for n in range(3):
                sink.observe(letter("/db", "crashed", n))
            await anyio.wait_all_tasks_blocked()
            assert [line["message"] for line in lines(stream)] == [
                "dead letter at /cache (dropped): {'order': 0, 'password': '<redacted>'}",
                "dead letter at /db (crashed): {'order': 0, 'password': '<redacted>'}",
            ]
            tg.cancel_scope.cancel()
    summaries = lines(stream)[2:]
    assert [(s["message"], s["count"], s["event"]) for s in summaries] == [
        (
            "dead letters at /cache (dropped): 499 more within 1 s, the last: {'order': 499,"
            " 'password': '<redacted>'}",
            499,
            "dead-letter",
        ),
        (
            "dead letters at /db (crashed): 2 more within 1 s, the last: {'order': 2,"
            " 'password': '<redacted>'}",
            2,
            "dead-letter",
        ),
    ]
    assert "hunter2" not in stream.getvalue()


class Written(logging.Handler):
    def __init__(self, wanted: str, seen: anyio.Event) -> None:
        super().__init__()
        self.wanted, self.seen = wanted, seen

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.wanted):
            self.seen.set()


async def test_a_storms_line_comes_once_its_second_is_over(stream: io.StringIO) -> None:
    """While the sink runs, a counted storm's line is written when its second ends, with no
    later letter needed to push it out; a letter after that starts a new second."""
    sink = setup("json", "info", stream)
    seen = anyio.Event()
    waiting = Written("dead letters at /cache", seen)
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            for n in range(3):
                sink.observe(letter("/cache", "dropped", n))
            original = sink.handler.handle

            def handle(record: logging.LogRecord) -> bool:
                waiting.emit(record)
                return original(record)

            sink.handler.handle = handle  # type: ignore[method-assign]  # watch what it writes
            await seen.wait()
            sink.observe(letter("/cache", "dropped", 3))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert [line["message"].split(":")[0] for line in lines(stream)] == [
        "dead letter at /cache (dropped)",
        "dead letters at /cache (dropped)",
        "dead letter at /cache (dropped)",
    ]
