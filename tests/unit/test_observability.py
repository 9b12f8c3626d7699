"""Metrics counters, redaction, sd_notify, socket activation and the loop monitor, without a
running tree: real datagram sockets, real file descriptors, real frames."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.actors.timing import Histogram
from corral.daemon.loop import LoopMonitor, running_actor
from corral.daemon.metrics import Counters
from corral.daemon.redact import MASK, Redactor
from corral.daemon.systemd import MAX_EXTEND, Notifier, activated_socket
from corral.errors import SupervisorGaveUpError
from corral.supervisors.events import (
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    MessageDeadLettered,
    StartFailed,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.spec import ExitKind

if TYPE_CHECKING:
    from pathlib import Path

# -- counters ----------------------------------------------------------------------------------


def test_restarts_are_counted_by_the_reason_of_the_last_end() -> None:
    """error after a raise or a failed start, exit after a return, stopped after a stop."""
    c = Counters()
    c.observe(ChildStarted("/a", "/", 0, 0.0))  # a first start is not a restart
    c.observe(ChildExited("/a", "/", ExitKind.ERROR, RuntimeError(), 1.0))
    c.observe(ChildStarted("/a", "/", 1, 1.0, restart=True))
    c.observe(StartFailed("/a", "/", RuntimeError(), 1.5))
    c.observe(ChildStarted("/a", "/", 2, 2.0, restart=True))
    c.observe(ChildExited("/a", "/", ExitKind.NORMAL, None, 3.0))
    c.observe(ChildStarted("/a", "/", 3, 3.0, restart=True))
    c.observe(ChildStopped("/a", "/", 4.0))
    c.observe(ChildStarted("/a", "/", 4, 4.0, restart=True))
    c.observe(ChildExited("/a", "/", ExitKind.ERROR, RuntimeError(), 5.0))
    c.observe(ChildStopped("/a", "/", 5.0))  # the exit seen first is the reason
    c.observe(ChildStarted("/a", "/", 5, 5.0, restart=True))
    assert dict(c.restarts) == {("/a", "error"): 3, ("/a", "exit"): 1, ("/a", "stopped"): 1}
    assert dict(c.exits) == {("/a", "error"): 2, ("/a", "start_error"): 1, ("/a", "normal"): 1}


def test_an_operators_start_is_not_a_restart_and_a_give_up_is_its_own_reason() -> None:
    """`corral start` of a stopped child counts no restart; a sub-supervisor restarted after
    it gave up counts one with reason gave_up (not exit)."""
    c = Counters()
    c.observe(ChildStarted("/a", "/", 0, 0.0))
    c.observe(ChildStopped("/a", "/", 1.0))
    c.observe(ChildStarted("/a", "/", 0, 2.0))  # the operator's start: restart=False
    gave_up = SupervisorGaveUpError("gave up", supervisor="/g", restarts=2, period=5.0)
    c.observe(ChildExited("/g", "/", ExitKind.SHUTDOWN, gave_up, 3.0))
    c.observe(ChildStarted("/g", "/", 1, 4.0, restart=True))
    c.observe(ChildExited("/h", "/", ExitKind.SHUTDOWN, None, 5.0))  # auto-shutdown
    c.observe(ChildStarted("/h", "/", 1, 6.0, restart=True))
    assert dict(c.restarts) == {("/g", "gave_up"): 1, ("/h", "exit"): 1}


def test_supervisor_events_and_dead_letters_are_counted() -> None:
    """Escalations and give-ups by supervisor; dead letters by path and reason."""
    c = Counters()
    c.observe(SupervisorGaveUp("/g", "x", 2, 1, 5.0, 0.0))
    c.observe(SupervisorEscalated("/g", "/", 0.0))
    c.observe(MessageDeadLettered("/g/x", "crashed", RuntimeError(), 0.0))
    c.observe(MessageDeadLettered("/g/x", "crashed", RuntimeError(), 0.0))
    assert (dict(c.gave_up), dict(c.escalations)) == ({"/g": 1}, {"/g": 1})
    assert dict(c.dead_letters) == {("/g/x", "crashed"): 2}


def test_a_dynamic_pool_is_counted_as_one_key_and_pruned_when_gone() -> None:
    """Children of a dynamic supervisor count under SUP/*; prune drops what is absent."""
    c = Counters(is_dynamic=lambda path: path == "/pool")
    for n in ("1", "2"):
        c.observe(ChildExited(f"/pool/{n}", "/pool", ExitKind.ERROR, RuntimeError(), 0.0))
    c.observe(ChildExited("/w", "/", ExitKind.ERROR, RuntimeError(), 0.0))
    assert dict(c.exits) == {("/pool/*", "error"): 2, ("/w", "error"): 1}
    assert c.key("/") == "/"
    c.observe(ChildGivenUp("/pool/3", "/pool", 2, 1, 5.0, 0.0))
    c.observe(ChildGivenUp("/w", "/", 2, 1, 5.0, 0.0))
    assert dict(c.given_up) == {"/pool/*": 1, "/w": 1}
    c.prune({"/pool/*"}, ())
    assert dict(c.exits) == {("/pool/*", "error"): 2}
    assert dict(c.given_up) == {"/pool/*": 1}  # /w is gone


def test_pruning_keeps_the_counts_below_a_dormant_supervisor() -> None:
    """A sub-supervisor in backoff is not in the snapshot's walk: its children's counts stay."""
    c = Counters()
    c.observe(ChildExited("/g/a", "/g", ExitKind.ERROR, RuntimeError(), 0.0))
    c.observe(ChildExited("/gone", "/", ExitKind.ERROR, RuntimeError(), 0.0))
    c.prune({"/g"}, ["/g"])
    assert dict(c.exits) == {("/g/a", "error"): 1}
    c.observe(ChildStarted("/g/a", "/g", 1, 1.0, restart=True))
    assert dict(c.restarts) == {("/g/a", "error"): 1}


def test_ended_children_of_a_pool_are_forgotten() -> None:
    """A pool child's id used again after it ended is a first start, not a restart."""
    c = Counters(is_dynamic=lambda path: path == "/pool")
    for n in range(100):
        c.observe(ChildExited(f"/pool/{n}", "/pool", ExitKind.NORMAL, None, 0.0))
    c.prune({"/pool", "/pool/*"}, ())
    c.observe(ChildStarted("/pool/7", "/pool", 0, 1.0))  # the id used again: a first start
    assert not c.restarts
    assert dict(c.exits) == {("/pool/*", "normal"): 100}


def test_children_gone_for_good_leave_nothing_behind() -> None:
    """A pool's children that end for good (temporary, terminated) leave no memory behind,
    scrape or no scrape: what is kept per path is swept as it grows."""
    live = {"/pool/keep"}
    c = Counters(
        is_dynamic=lambda path: path == "/pool",
        is_gone=lambda path: path.startswith("/pool/") and path not in live,
    )
    c.observe(ChildExited("/pool/keep", "/pool", ExitKind.ERROR, None, 0.0))

    def churn(first: int, count: int) -> None:
        for n in range(first, first + count):
            c.observe(ChildStarted(f"/pool/{n}", "/pool", 0, 0.0))
            c.observe(ChildExited(f"/pool/{n}", "/pool", ExitKind.NORMAL, None, 0.0))

    churn(0, 5_000)  # past the first sweeps: the rest is steady state
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        churn(5_000, 50_000)
        grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024  # 90 bytes per child would be 4.5 MB
    assert dict(c.exits) == {("/pool/*", "normal"): 55_000, ("/pool/*", "error"): 1}
    c.observe(
        ChildStarted("/pool/keep", "/pool", 1, 1.0, restart=True)
    )  # a live child's end is kept
    assert dict(c.restarts) == {("/pool/*", "error"): 1}


def test_a_first_start_is_never_a_restart() -> None:
    """A child removed and added again (restarts 0) is not counted as restarted."""
    c = Counters()
    c.observe(ChildStopped("/db", "/", 0.0))
    c.observe(ChildStarted("/db", "/", 0, 1.0))
    assert not c.restarts


def test_histogram_buckets_are_upper_bounds() -> None:
    """A value equal to a bound falls in that bucket; beyond the last, in +Inf."""
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        h.observe(v)
    assert (h.counts, h.count) == ([2, 1, 1], 4)
    assert h.sum == pytest.approx(2.65)


# -- redaction ---------------------------------------------------------------------------------

REDACT = Redactor(["password", "api-key", "token"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("password=hunter2 user=bob", f"password={MASK} user=bob", id="key=value"),
        pytest.param("{'password': 'hunter2'}", f"{{'password': '{MASK}'}}", id="repr-dict"),
        pytest.param('{"api_key": "abc"}', f'{{"api_key": "{MASK}"}}', id="json-loose-name"),
        pytest.param("DB_PASSWORD: s3cr3t", f"DB_PASSWORD: {MASK}", id="name-inside-key"),
        pytest.param(
            "postgres://app:s3cret@db:5432/x", f"postgres://app:{MASK}@db:5432/x", id="url"
        ),
        pytest.param(
            "Authorization: Bearer eyJhbGciOi.x-y_z", f"Authorization: Bearer {MASK}", id="bearer"
        ),
        pytest.param("refresh_token=1&b=2", f"refresh_token={MASK}&b=2", id="query-string"),
        pytest.param("/token-refresher exited", "/token-refresher exited", id="a-path-stays"),
        pytest.param("nothing to see", "nothing to see", id="plain"),
        pytest.param(
            '{\\"password\\": \\"x\\"}', f'{{\\"password\\": \\"{MASK}\\"}}', id="escaped-json"
        ),
        pytest.param('password="hunter 2"', f'password="{MASK}"', id="quoted-with-a-blank"),
        pytest.param("{'password': b'hunter2'}", f"{{'password': b'{MASK}'}}", id="bytes-repr"),
        pytest.param(
            "RuntimeError('login with password=hunter2')",
            f"RuntimeError('login with password={MASK}')",
            id="at-the-end-of-a-repr",
        ),
        pytest.param("Authorization: Basic dXNlcjpw", f"Authorization: Basic {MASK}", id="basic"),
        pytest.param("if not token:\\n    raise", "if not token:\\n    raise", id="code-line"),
        pytest.param("tokens=['abc', 'def']", f"tokens=[{MASK}]", id="list-value"),
        pytest.param("{'tokens': ['abc', 'def']}", f"{{'tokens': [{MASK}]}}", id="list-in-repr"),
        pytest.param("password=(x) next", f"password=({MASK}) next", id="tuple-value"),
        pytest.param("tokens=[abc", f"tokens=[{MASK}", id="unclosed-list"),
        pytest.param("token=a,b", f"token={MASK}", id="value-with-a-comma"),
        pytest.param("token=a, user=b", f"token={MASK}, user=b", id="comma-then-blank"),
        pytest.param(
            "redis://:hunter2@cache:6379/0", f"redis://:{MASK}@cache:6379/0", id="url-no-user"
        ),
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    """Values of secret-named keys, URL passwords and bearer tokens become <redacted>."""
    assert REDACT(text) == expected
    assert REDACT(expected) == expected  # redacting twice changes nothing more


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "RuntimeError(\"password='pw1' refused\")",
            f"RuntimeError(\"password='{MASK}' refused\")",
        ),
        ('  File "x.py", line 3\n    if not token:\n        raise', None),
        (
            "{'token': {'a': 1}, 'max_tokens': 100}",
            f"{{'token': {{'a': 1}}, 'max_tokens': {MASK}}}",
        ),
        ('password="a \\" b"', f'password="{MASK}\\" b"'),
        ("{'tokens': [\"a\\\\\", 'b\\\\']}", f"{{'tokens': [{MASK}]}}"),
        ('{"tokens": ["a", "b"]} done', f'{{"tokens": [{MASK}]}} done'),
        ("ValueError: bad token=[abc\nnext line", f"ValueError: bad token=[{MASK}\nnext line"),
        ("tokens=[['a'], ['b']] after", f"tokens=[{MASK}] after"),
    ],
)
def test_redaction_of_a_frame_keeps_it_valid_json(value: str, expected: str | None) -> None:
    """A socket frame stays one valid JSON line with its secrets masked."""
    frame = json.dumps({"last_error": value}).encode() + b"\n"
    assert json.loads(REDACT.encoded(frame)) == {"last_error": expected or value}
    assert REDACT.encoded(b'{"a":1}\n') == b'{"a":1}\n'


def test_no_names_still_redacts_urls_and_tokens() -> None:
    """With `redact = []` only URL passwords and bearer tokens are masked."""
    none = Redactor([])
    assert none("password=x https://u:p@h") == f"password=x https://u:{MASK}@h"


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    return sock


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_notifier_sends_the_protocol_lines(notify_socket: socket.socket) -> None:
    """READY, STATUS (only when it changes), RELOADING with MONOTONIC_USEC, STOPPING, EXTEND."""
    with notify_socket:
        address = notify_socket.getsockname()
        n = Notifier({"NOTIFY_SOCKET": address})
        assert n.enabled
        n.status("starting 3 children under /")
        assert received(notify_socket) == {"STATUS": "starting 3 children under /"}
        n.ready("3/3 running, 0 in backoff")
        assert received(notify_socket) == {"READY": "1", "STATUS": "3/3 running, 0 in backoff"}
        n.status("3/3 running, 0 in backoff")  # unchanged: not sent again
        n.extend(2.5)
        assert received(notify_socket) == {"EXTEND_TIMEOUT_USEC": "2500000"}
        n.extend(2.5)  # within a second of the last: not sent
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        n.reloading()
        got = received(notify_socket)
        assert (got["RELOADING"], got["STATUS"]) == ("1", "reloading the config")
        assert int(got["MONOTONIC_USEC"]) >= before
        n.stopping()
        assert received(notify_socket)["STOPPING"] == "1"
        n.extend(3.0)  # the stop's first progress goes out at once
        assert received(notify_socket) == {"EXTEND_TIMEOUT_USEC": "3000000"}
        n.close()
        n.send(READY=1)  # closed: nothing sent, nothing raised


@pytest.mark.parametrize("seconds", [math.inf, 1e308, math.nan, 1e9], ids=str)
def test_an_endless_extension_is_sent_clamped(notify_socket: socket.socket, seconds: float) -> None:
    """A window too long for an integer (an "infinity" shutdown, 1e308 s) is sent as the
    largest extension, not lost to an OverflowError."""
    with notify_socket:
        n = Notifier({"NOTIFY_SOCKET": notify_socket.getsockname()})
        n.extend(seconds)
        assert received(notify_socket) == {"EXTEND_TIMEOUT_USEC": str(MAX_EXTEND)}
        n.close()


def test_notifier_without_a_socket_does_nothing() -> None:
    """Outside systemd every notification is a no-op and there is no watchdog."""
    n = Notifier({"WATCHDOG_USEC": "2000000"})
    assert (n.enabled, n.watchdog_interval) == (False, 2.0)
    n.ready("x")


def test_watchdog_is_for_this_process_only() -> None:
    """WATCHDOG_PID naming another process turns the watchdog off (sd_watchdog_enabled)."""
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval == 0
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 1.0


def test_a_lost_notification_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A NOTIFY_SOCKET nobody listens on is a warning, never an exception."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    notifier.send(READY=1)
    notifier.close()
    assert "sd_notify to" in caplog.text


# -- socket activation -------------------------------------------------------------------------

ACTIVATED = textwrap.dedent("""
    import os, socket, sys
    from corral.daemon.systemd import activated_socket
    os.environ["LISTEN_PID"] = str(os.getpid())
    sock = activated_socket()
    left = sorted(k for k in os.environ if k.startswith("LISTEN"))
    print(sock.getsockname() if sock else None, left)
""")


def test_activated_socket_is_taken_by_name(tmp_path: Path) -> None:
    """The fd named "control" among LISTEN_FDS is used; the variables are then unset."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with other, control:
        other.bind(str(tmp_path / "other"))
        control.bind(str(tmp_path / "control.sock"))
        control.listen()
        # the child gets them as fds 3 and 4, as systemd passes them
        script = "import os; os.dup2(int(os.environ['A']), 3); os.dup2(int(os.environ['B']), 4)\n"
        env = {
            **os.environ,
            "A": str(other.fileno()),
            "B": str(control.fileno()),
            "LISTEN_FDS": "2",
            "LISTEN_FDNAMES": "other:control",
        }
        out = subprocess.run(  # this interpreter
            [sys.executable, "-c", script + ACTIVATED],
            env=env,
            pass_fds=(other.fileno(), control.fileno()),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert out == f"{tmp_path / 'control.sock'} []\n"


def activate(sock: socket.socket, names: str = "") -> subprocess.CompletedProcess[str]:
    """activated_socket() in a child that got *sock* as fd 3, as systemd passes it."""
    script = "import os; os.dup2(int(os.environ['A']), 3)\n"
    env = {**os.environ, "A": str(sock.fileno()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": names}
    return subprocess.run(  # this interpreter
        [sys.executable, "-c", script + ACTIVATED],
        env=env,
        pass_fds=(sock.fileno(),),
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_socket_that_does_not_listen_is_refused(tmp_path: Path) -> None:
    """A passed socket that is not listening (Accept=yes) is an error saying what to set."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s"))
        done = activate(sock)
    assert done.returncode == 1
    assert "not listening (Accept=yes?): corral needs a listening AF_UNIX stream socket" in (
        done.stderr
    )


def test_more_names_than_sockets_takes_the_first(tmp_path: Path) -> None:
    """LISTEN_FDNAMES naming "control" beyond LISTEN_FDS falls back to the first socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s"))
        sock.listen()
        done = activate(sock, "metrics:control")
    assert (done.returncode, done.stdout) == (0, f"{tmp_path / 's'} []\n")


def test_no_activation_without_our_pid() -> None:
    """LISTEN_FDS meant for another process (LISTEN_PID) is ignored, and unset."""
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert activated_socket(env) is None
    assert env == {}


# -- the loop monitor --------------------------------------------------------------------------


def test_a_stall_is_reported_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """check() past the timeout logs the stall and counts it; the next heartbeat ends it."""
    counters = Counters()
    monitor = LoopMonitor(counters, stall_timeout=1.0)
    beat = monitor.heartbeat
    monitor.check(beat + 0.5)
    assert (counters.stalls, monitor.healthy()) == (0, True)
    monitor.check(beat + 1.5)
    monitor.check(beat + 2.5)
    assert counters.stalls == 1
    (stall,) = [r for r in caplog.records if r.getMessage().startswith("event loop stalled")]
    assert stall.levelname == "ERROR"
    assert stall.fields["event"] == "loop-stall"  # type: ignore[attr-defined]
    monitor.heartbeat = beat + 3.0
    monitor.check(beat + 3.1)
    (recovered,) = [r for r in caplog.records if "runs again" in r.getMessage()]
    assert recovered.getMessage() == "the event loop runs again after a stall of 3.0 s"
    assert monitor.stalled_since is None


@pytest.mark.anyio
async def test_running_actor_finds_the_cell_in_the_stack(anyio_backend: str) -> None:
    """The innermost frame holding an ActorCell names the actor that blocks."""
    from corral.actors.actor import ActorCell
    from corral.actors.deadletter import DeadLetterBox
    from corral.actors.mailbox import Mailbox
    from corral.actors.registry import Registry
    from corral.actors.waiter import waiter_factory
    from corral.supervisors.spec import Overflow

    seen: list[str | None] = []

    def blocking() -> None:
        seen.append(running_actor(sys._getframe()))

    def actor_body(cell: ActorCell) -> None:
        blocking()

    cell = ActorCell(
        "/db",
        Mailbox(1, Overflow.BLOCK, waiter_factory()),
        letters=DeadLetterBox(1),
        registry=Registry(),
    )
    actor_body(cell)
    thread = threading.Thread(target=lambda: seen.append(running_actor(sys._getframe())))
    thread.start()
    thread.join()
    assert seen == ["/db", None]


def test_a_frames_own_secret_value_stays_json() -> None:
    """A frame's own `"token": 5` (not text inside a string) is masked as a JSON string."""
    assert json.loads(REDACT.encoded(b'{"token":1,"tokens":["a","b"],"x":2}\n')) == {
        "token": MASK,
        "tokens": ["a", "b"],  # the frame's own list: its structure stays, never broken
        "x": 2,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["token", "tokens", "password", "x", "api_key", "why"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
secretish = st.text(alphabet="token=:[]()'\"\\\n ,ab", max_size=40)


@given(value=json_values, text=secretish)
def test_any_frame_stays_valid_json(value: object, text: str) -> None:
    """Whatever a frame holds, secret-looking text included, it is JSON after redaction."""
    frame = json.dumps({"value": value, "text": text}).encode() + b"\n"
    json.loads(REDACT.encoded(frame))
