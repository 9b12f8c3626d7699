"""What ``corral`` prints for people: durations, the status tree, ``why`` and event lines."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from corral.daemon import cli

if TYPE_CHECKING:
    from collections.abc import Iterator

GREEN, YELLOW, RED, GREY, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[90m", "\x1b[0m"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC while the test runs (times are printed in local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_all_is_pinned() -> None:
    """The cli module exports exactly its public names, as a tuple."""
    assert cli.__all__ == ("Client", "Exit", "Unreachable", "main", "render_status")


def test_exit_codes_follow_lsb() -> None:
    """The CLI's exit codes are systemctl's."""
    assert [(e.name, e.value) for e in cli.Exit] == [
        ("OK", 0),
        ("ERROR", 1),
        ("USAGE", 2),
        ("NOT_RUNNING", 3),
        ("UNREACHABLE", 4),
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        pytest.param(0, "0.0s", id="zero"),
        pytest.param(4.24, "4.2s", id="seconds"),
        pytest.param(59.9, "59.9s", id="under-a-minute"),
        pytest.param(60, "1m 0s", id="a-minute"),
        pytest.param(61.7, "1m 1s", id="minutes-truncate"),
        pytest.param(3599, "59m 59s", id="under-an-hour"),
        pytest.param(3600, "1h 0m", id="an-hour"),
        pytest.param(3661, "1h 1m", id="hours-drop-seconds"),
        pytest.param(86399, "23h 59m", id="under-a-day"),
        pytest.param(86400, "1d 0h", id="a-day"),
        pytest.param(90061, "1d 1h", id="days-drop-minutes"),
        pytest.param(200_000, "2d 7h", id="days"),
    ],
)
def test_duration(seconds: float, shown: str) -> None:
    """Durations use two units at most, tenths of a second under a minute."""
    assert cli.duration(seconds) == shown


def tree() -> dict[str, Any]:
    """A status result as the daemon sends it, with a node in every notable state."""
    return {
        "path": "/",
        "type": "supervisor",
        "state": "running",
        "strategy": "one-for-one",
        "intensity": 10,
        "period": 60.0,
        "restarts_remaining": 9,
        "dynamic": False,
        "children": [
            {
                "path": "/ticker",
                "type": "worker",
                "state": "running",
                "uptime": 3725.0,
                "mailbox_depth": 2,
                "mailbox_capacity": 1024,
                "last_exit": "error",  # not shown while running
            },
            {
                "path": "/flaky",
                "type": "worker",
                "state": "backoff",
                "next_restart_in": 0.5,
                "restarts": 3,
                "last_exit": "error",
                "last_error": "RuntimeError('boom')",
            },
            {
                "path": "/echo",
                "type": "worker",
                "state": "stopped",
                "held": True,
                "last_exit": "shutdown",
                "dead_letters": 4,
            },
            {
                "path": "/group",
                "type": "supervisor",
                "state": "running",
                "uptime": 90061.0,
                "strategy": "rest-for-one",
                "intensity": 5,
                "period": 30.0,
                "restarts_remaining": 5,
                "children": [
                    {"path": "/group/leader", "type": "worker", "state": "running", "uptime": 59.9},
                    {
                        "path": "/group/follower",
                        "type": "worker",
                        "state": "failed",
                        "last_exit": "error",
                        "last_error": "ValueError()",
                    },
                ],
            },
        ],
    }


def test_render_status_tree() -> None:
    """One line per node, names aligned per level, a summary of the states below the top."""
    assert cli.render_status(tree(), colour=False) == [
        "● /  running   one-for-one, budget 9/10 per 60s"
        "  (6 below: 1 backoff, 1 failed, 3 running, 1 stopped)",
        "├─ ● ticker  running   up 1h 2m  mailbox 2/1024",
        "├─ ● flaky   backoff   restart in 0.5s  restarts 3  last exit: error RuntimeError('boom')",
        "├─ ● echo    stopped   stopped by operator  dead letters 4  last exit: shutdown",
        "└─ ● group   running   up 1d 1h  rest-for-one, budget 5/5 per 30s",
        "   ├─ ● leader    running   up 59.9s",
        "   └─ ● follower  failed    last exit: error ValueError()",
        "1 failed, not running until started again: /group/follower"
        " (see corral why /group/follower; corral start PATH)",
    ]


def test_render_status_names_no_failed_child_when_there_is_none() -> None:
    """The line naming the failed children is there only when some child is failed."""
    node = tree()
    node["children"][3]["children"][1]["state"] = "running"
    lines = cli.render_status(node, colour=False)
    assert len(lines) == 7
    assert not any("failed" in line for line in lines)


def test_render_status_of_a_worker_has_no_summary() -> None:
    """A worker's status is one line, without a count of nodes below it."""
    node = {"path": "/ticker", "type": "worker", "state": "running", "uptime": 1.5}
    assert cli.render_status(node, colour=False) == ["● /ticker  running   up 1.5s"]


def test_render_status_of_an_empty_supervisor() -> None:
    """A supervisor without children says there is nothing below it."""
    node = {
        "path": "/pool",
        "type": "supervisor",
        "state": "running",
        "strategy": "one-for-one (dynamic)",
        "intensity": 1,
        "period": 5.0,
        "restarts_remaining": 1,
        "children": [],
    }
    assert cli.render_status(node, colour=False) == [
        "● /pool  running   one-for-one (dynamic), budget 1/1 per 5s  (0 below: none)"
    ]


def test_render_status_colours_the_dot_by_state() -> None:
    """With colour, each dot carries its state's ANSI colour; the text is unchanged."""
    *lines, failed = cli.render_status(tree(), colour=True)
    dots = [GREEN, GREEN, YELLOW, GREY, GREEN, GREEN, RED]
    assert [line.split("●")[0][-5:] for line in lines] == dots
    assert all(f"●{RESET}" in line for line in lines)
    plain = [
        line.replace(colour, "").replace(RESET, "")
        for line, colour in zip(lines, dots, strict=True)
    ]
    assert [*plain, failed] == cli.render_status(tree(), colour=False)


def why_result() -> dict[str, Any]:
    return {
        "path": "/flaky",
        "state": "backoff",
        "restarts": 2,
        "held": False,
        "next_restart_in": 1.5,
        "supervisor": "/",
        "strategy": "one-for-one",
        "intensity": 10,
        "period": 60.0,
        "restarts_remaining": 8,
        "dead_letters": 1,
        "exits": [
            {
                "at": 0.25,
                "kind": "error",
                "exception": "RuntimeError('a')",
                "traceback": 'Traceback (most recent call last):\n  File "x", line 1\n'
                "RuntimeError: a\n",
            },
            {"at": 60.5, "kind": "normal"},
        ],
    }


@pytest.mark.usefixtures("utc")
def test_render_why_lists_exits_newest_first_with_tracebacks() -> None:
    """why shows the state, the budget, dead letters, and each exit (newest first)."""
    assert cli.render_why(why_result()) == [
        "/flaky: backoff",
        "  restarts: 2",
        "  next restart in: 1.5s",
        "  supervisor / (one-for-one): 8 of 10 restarts left within 60s before it gives up",
        "  dead letters: 1 (corral dead-letters /flaky)",
        "  last exit: 1970-01-01 00:01:00.500 normal",
        "  earlier: 1970-01-01 00:00:00.250 error",
        "    Traceback (most recent call last):",
        '      File "x", line 1',
        "    RuntimeError: a",
    ]


def test_render_why_of_a_held_child_without_exits() -> None:
    """A held child says how to start it; no exits says so."""
    why = {
        "path": "/a",
        "state": "stopped",
        "restarts": 0,
        "held": True,
        "supervisor": "/",
        "strategy": "one-for-one",
        "intensity": 1,
        "period": 5.0,
        "restarts_remaining": 1,
        "exits": [],
    }
    assert cli.render_why(why) == [
        "/a: stopped (stopped by an operator; `corral start` to run it)",
        "  restarts: 0",
        "  supervisor / (one-for-one): 1 of 1 restarts left within 5s before it gives up",
        "  no exits recorded",
    ]


@pytest.mark.usefixtures("utc")
@pytest.mark.parametrize(
    ("event", "line"),
    [
        pytest.param(
            {
                "event": "child-exited",
                "path": "/a",
                "at": 1.5,
                "supervisor": "/",
                "exit": "error",
                "exception": "Killed('x')",
            },
            "1970-01-01 00:00:01.500 child-exited             /a  exit=error exception=Killed('x')",
            id="exited",
        ),
        pytest.param(
            {"event": "child-started", "path": "/a", "at": 0.0, "supervisor": "/", "restarts": 0},
            "1970-01-01 00:00:00.000 child-started            /a  restarts=0",
            id="started-zero-restarts",
        ),
        pytest.param(
            {"event": "restart-scheduled", "path": "/b", "at": 2.0, "delay": 0.25},
            "1970-01-01 00:00:02.000 restart-scheduled        /b  delay=0.25",
            id="scheduled",
        ),
        pytest.param(
            {
                "event": "supervisor-gave-up",
                "path": "/",
                "at": 3.0,
                "restarts": 2,
                "reason": "2 restarts within 5.0 s (limit 1), last of /a",
            },
            "1970-01-01 00:00:03.000 supervisor-gave-up       /  restarts=2"
            " reason=2 restarts within 5.0 s (limit 1), last of /a",
            id="gave-up",
        ),
        pytest.param(
            {"event": "child-stopped", "path": "/a", "at": 86400.0, "supervisor": "/"},
            "1970-01-02 00:00:00.000 child-stopped            /a",
            id="no-details",
        ),
    ],
)
def test_render_event(event: dict[str, Any], line: str) -> None:
    """An event is one line: local time with milliseconds, name, path, then its details."""
    assert cli.render_event(event) == line
