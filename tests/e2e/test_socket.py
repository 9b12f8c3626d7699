"""The control socket by hand: hostile or broken input, limits, who may connect, the audit log.

Whatever a client sends, it gets a clear error or is disconnected, and the daemon and its other
clients carry on. The malformed requests share one daemon per backend (`served`).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest

from corral.daemon.protocol import MAX_FRAME
from tests.e2e.support import TIMEOUT, Daemon, Raw, shared_daemon, write_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TREE = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "b"
start = "tests.e2e.actors:Echo"
"""

COMMANDS = (
    "breaker, breakers, call, cast, dead-letters, delete-child, events, kill, metrics, ping,"
    " reload, restart, shutdown, start, start-child, status, stop, terminate-child, why"
)
PING = b'{"command": "ping"}'


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """As conftest's, once per module: the `served` daemon is shared by this module's tests."""
    return str(request.param)


@pytest.fixture(scope="module")
def served(backend: str) -> Iterator[Daemon]:
    """One daemon for the tests that leave its tree as they found it."""
    with shared_daemon(TREE, backend) as d:
        yield d


def assert_serving(d: Daemon) -> None:
    """Another client is answered, and the tree is as it was."""
    with Raw(d.socket) as other:
        assert other.ask({"command": "ping"})["ok"] is True
        status = other.ask({"command": "status"})["result"]
    assert [(c["path"], c["state"]) for c in status["children"]] == [
        ("/a", "running"),
        ("/b", "running"),
    ]


def line(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode() + b"\n"


def nested(depth: int) -> object:
    """A list inside a list, *depth* deep."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


UNKNOWN = "unknown or missing command ("
INVALID = "invalid request: "
MALFORMED = [
    pytest.param(
        b"not json\n", INVALID, "JSON is malformed: invalid character (byte 4)", id="not-json"
    ),
    pytest.param(b"\xff\xfe\n", INVALID, "JSON is malformed", id="not-utf8"),
    pytest.param(
        PING + PING + b"\n", INVALID, "JSON is malformed: trailing characters", id="two-objects"
    ),
    pytest.param(b"[1, 2]\n", INVALID, "Expected `object`, got `array`", id="not-an-object"),
    pytest.param(b'"status"\n', INVALID, "Expected `object`, got `str`", id="a-string"),
    pytest.param(
        line({"command": "nope"}), UNKNOWN, "'nope' - at `$.command`", id="unknown-command"
    ),
    pytest.param(
        line({"path": "/a"}), UNKNOWN, "missing required field `command`", id="no-command"
    ),
    pytest.param(
        line({"command": 5}), UNKNOWN, "Expected `str` - at `$.command`", id="command-not-str"
    ),
    pytest.param(
        line({"command": "status", "path": 5}),
        INVALID,
        "Expected `str`, got `int` - at `$.path`",
        id="path-not-str",
    ),
    pytest.param(
        line({"command": "status", "path": ""}),
        INVALID,
        "length >= 1 - at `$.path`",
        id="empty-path",
    ),
    pytest.param(
        line({"command": "status", "path": "/" + "x" * 5000}),
        INVALID,
        "length <= 4096 - at `$.path`",
        id="long-path",
    ),
    pytest.param(
        line({"command": "stop", "path": "/a", "now": True}),
        INVALID,
        "unknown field `now`",
        id="unknown-key",
    ),
    pytest.param(
        line({"command": "kill", "path": "/a", "reason": 3}),
        INVALID,
        "at `$.reason`",
        id="reason-not-str",
    ),
    pytest.param(
        line({"command": "dead-letters", "limit": 0}),
        INVALID,
        "Expected `int` >= 1 - at `$.limit`",
        id="limit-0",
    ),
    pytest.param(
        line({"command": "events", "recent": 10**6}),
        INVALID,
        "<= 1000 - at `$.recent`",
        id="recent-too-many",
    ),
    pytest.param(
        line({"command": "start-child", "supervisor": "/", "id": "a/b"}),
        INVALID,
        "at `$.id`",
        id="id-with-slash",
    ),
    pytest.param(
        line({"command": "start-child", "supervisor": "/", "args": [1]}),
        INVALID,
        "at `$.args`",
        id="args-not-object",
    ),
    pytest.param(
        b'{"command": "start-child", "supervisor": "/", "args": {"a": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}\n",
        INVALID,
        "nested too deeply to read (args may nest 32 levels of arrays and objects)",
        id="args-5000-deep",
    ),
    pytest.param(
        b'{"x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b', "command": "status"}\n',
        INVALID,
        "nested too deeply to read",
        id="unknown-field-5000-deep",
    ),
    pytest.param(
        line({"command": "start-child", "supervisor": "/", "args": {"a": nested(40)}}),
        INVALID,
        "args nested more than 32 levels deep - at `$.args`",
        id="args-40-deep",
    ),
    pytest.param(
        line({"command": "reload", "dry_run": "yes"}),
        INVALID,
        "Expected `bool`, got `str` - at `$.dry_run`",
        id="dry-run-not-bool",
    ),
]


@pytest.mark.parametrize(("frame", "prefix", "detail"), MALFORMED)
def test_malformed_request_gets_bad_request(
    served: Daemon, frame: bytes, prefix: str, detail: str
) -> None:
    """A malformed request gets `bad_request` saying what is wrong; the connection goes on."""
    with Raw(served.socket) as client:
        client.send(frame)
        response = client.receive()
        assert response is not None
        assert response["ok"] is False
        assert response["error"]["code"] == "bad_request"
        message = response["error"]["message"]
        assert message.startswith(prefix), message
        assert detail in message, message
        if prefix == UNKNOWN:
            assert message.endswith(f"); commands: {COMMANDS}")
        assert client.ask({"command": "ping"})["ok"] is True
    assert_serving(served)


def test_lines_that_are_requests(served: Daemon) -> None:
    """Blank lines are ignored, CRLF is accepted, and pipelined requests are answered in order."""
    with Raw(served.socket) as client:
        client.send(b"\n  \n\r\n" + PING + b"\r\n")
        first = client.receive()
        assert first is not None
        assert (first["ok"], first["result"]["pid"]) == (True, served.proc.pid)
        client.send(line({"command": "status", "path": "/b"}) + b"not json\n" + PING + b"\n")
        answers = [client.receive() for _ in range(3)]
    assert [a["ok"] for a in answers if a is not None] == [True, False, True]
    assert answers[0] is not None
    assert answers[0]["result"]["path"] == "/b"
    assert_serving(served)


def test_largest_frame_is_accepted(served: Daemon) -> None:
    """A request of exactly MAX_FRAME bytes, newline included, is answered."""
    with Raw(served.socket) as client:
        client.send(PING + b" " * (MAX_FRAME - len(PING) - 1) + b"\n")
        response = client.receive()
    assert response is not None
    assert response["ok"] is True


@pytest.mark.parametrize(
    "size", [MAX_FRAME + 1, MAX_FRAME + 1000, 2 * MAX_FRAME], ids=["1MiB+1", "1MiB+1000", "2MiB"]
)
def test_frame_over_the_limit_is_refused_and_closed(served: Daemon, size: int) -> None:
    """A frame over MAX_FRAME bytes (newline included) gets `bad_request`, then is closed."""
    with Raw(served.socket) as client:
        client.send(PING + b" " * (size - len(PING) - 1) + b"\n")
        response = client.receive()
        assert response is not None
        assert (response["ok"], response["error"]["code"]) == (False, "bad_request")
        assert response["error"]["message"].startswith(f"frame over {MAX_FRAME} bytes"), response
        assert ": closing (one " in response["error"]["message"]
        assert client.closed()
    assert_serving(served)


def test_events_follow_streams_new_events(served: Daemon) -> None:
    """`events` with follow answers with the recent events, then streams each new one."""
    with Raw(served.socket) as follower:
        first = follower.ask({"command": "events", "recent": 0, "follow": True})
        assert first == {"ok": True, "result": []}
        assert served.cli("restart", "/b").rc == 0
        stopped, started = follower.receive(), follower.receive()
    assert stopped is not None
    assert started is not None
    assert (stopped["event"], stopped["path"]) == ("child-stopped", "/b")
    assert (started["event"], started["path"]) == ("child-started", "/b")
    assert_serving(served)


BUSY = {
    "ok": False,
    "error": {
        "code": "busy",
        "message": "the daemon serves at most 2 connections (max-connections): try again",
    },
}


def test_too_many_connections_get_busy(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """Past max-connections a client gets `busy` and is closed; a freed slot is used again."""
    config = write_config(workdir, TREE, daemon="max-connections = 2")
    daemons.append(d := Daemon.start(config, backend))
    with Raw(d.socket) as one, Raw(d.socket) as two:
        assert one.ask({"command": "ping"})["ok"] is True  # both are counted now
        assert two.ask({"command": "ping"})["ok"] is True
        for _ in range(3):
            with Raw(d.socket) as extra:
                assert extra.receive() == BUSY
                assert extra.closed()
        assert one.ask({"command": "status"})["ok"] is True  # those served carry on
        one.sock.shutdown(socket.SHUT_WR)  # our end: the daemon ends this connection
        assert one.closed()
        with Raw(d.socket) as three:
            assert three.ask({"command": "ping"})["ok"] is True
        assert two.ask({"command": "ping"})["ok"] is True


def test_cli_reports_a_busy_daemon(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """The CLI turned away for max-connections exits 1 with the busy error, every time (the
    daemon may answer and close before the CLI has sent its request)."""
    config = write_config(workdir, TREE, daemon="max-connections = 2")
    daemons.append(d := Daemon.start(config, backend))
    expected = (
        1,
        "",
        "corral: /: ERROR (busy) the daemon serves at most 2 connections (max-connections):"
        " try again\n",
    )
    outcomes: dict[object, int] = {}
    done = threading.Event()

    def hog() -> None:  # holds the GIL: the CLI is slow between connect and send, as on a
        while not done.is_set():  # loaded machine, and the daemon answers first
            pass

    with Raw(d.socket) as one, Raw(d.socket) as two:
        assert one.ask({"command": "ping"})["ok"] is True
        assert two.ask({"command": "ping"})["ok"] is True
        spinner = threading.Thread(target=hog)
        spinner.start()
        try:
            for _ in range(50):
                try:
                    result = d.cli("status")
                    outcome: object = (result.rc, result.out, result.err)
                except OSError as exc:  # what the operator gets: a traceback
                    outcome = repr(exc)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            done.set()
            spinner.join()
    assert outcomes == {expected: 50}


def test_idle_and_slow_clients_are_closed(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A client silent, sending half a line, or not reading its answers for idle-timeout is
    disconnected; the others are served."""
    daemons.append(
        d := Daemon.start(write_config(workdir, TREE, daemon="idle-timeout = 0.2"), backend)
    )
    idle = {
        "ok": False,
        "error": {"code": "bad_request", "message": "idle for 0.2 s (idle-timeout): closing"},
    }
    with Raw(d.socket) as silent, Raw(d.socket) as half:
        half.send(b'{"command": "sta')
        assert silent.receive() == idle
        assert silent.closed()
        assert half.receive() == idle
        assert half.closed()
    with Raw(d.socket) as hog:
        requests = line({"command": "status"}) * 1000
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # noqa: PT012
            for _ in range(10_000):  # far more than the socket buffers hold
                hog.sock.sendall(requests)
    assert d.cli("status").rc == 0


def test_audit_records_state_changes(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """Each state-changing command is logged as an audit record: uid, pid, command, path,
    result; reading the state is not."""
    daemons.append(d := Daemon.start(write_config(workdir, TREE), backend))
    assert d.cli("status").rc == 0
    assert d.cli("why", "/a").rc == 0
    assert d.cli("stop", "/a").rc == 0
    assert d.cli("kill", "/nope", "--reason", "drill").rc == 1
    uid, pid = os.getuid(), os.getpid()  # the CLI ran in this process
    first = d.wait_for(lambda r: r.get("event") == "audit")
    assert {
        k: first[k] for k in ("level", "logger", "uid", "pid", "command", "path", "result")
    } == {
        "level": "info",
        "logger": "corral.audit",
        "uid": uid,
        "pid": pid,
        "command": "stop",
        "path": "/a",
        "result": "ok",
    }
    assert first["message"] == f"audit: uid {uid} (pid {pid}) stop path='/a': ok"
    second = d.wait_for(lambda r: r.get("event") == "audit")
    assert (second["command"], second["path"], second["result"]) == (
        "kill",
        "/nope",
        "error not_found",
    )
    assert second["message"] == (
        f"audit: uid {uid} (pid {pid}) kill path='/nope' reason='drill': error not_found"
    )


# -- who may connect ---------------------------------------------------------------------------

NOBODY = 65534
CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"pid": os.getpid(), "connect": type(exc).__name__}))
    raise SystemExit
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass  # answered and closed before the request was sent
f = s.makefile("rb")
first = json.loads(f.readline())
if sys.argv[3] == "done":
    s.shutdown(socket.SHUT_WR)  # no more requests: a daemon serving us closes now too
try:
    closed = f.readline() == b""
except ConnectionResetError:
    closed = True
print(json.dumps({"pid": os.getpid(), "first": first, "closed": closed}))
"""


def python_for_nobody() -> str:
    """An interpreter uid 65534 may run (ours may live in root's home)."""
    if os.geteuid() != 0:
        pytest.skip("connecting as another uid needs root (the tests run as root in CI)")
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run(  # fixed interpreters, no shell
                [candidate, "-c", "pass"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                check=False,
                timeout=TIMEOUT,
            )
        except OSError:  # not executable by that uid, or missing
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip("no Python interpreter that uid 65534 may run")


def as_nobody(socket_path: Path, request: dict[str, Any], *, then: str) -> dict[str, Any]:
    """Connect as uid/gid 65534, send *request*; the first answer, and whether the connection
    was then closed: after saying we are ``done``, or by the daemon alone (``wait``)."""
    done = subprocess.run(  # fixed interpreter and code
        [python_for_nobody(), "-c", CLIENT, str(socket_path), json.dumps(request), then],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_other_users_are_refused(workdir: Path, backend: str, daemons: list[Daemon]) -> None:
    """The socket is born 0600; with its mode opened up, another uid still gets `forbidden`,
    and the refusal is logged."""
    daemons.append(d := Daemon.start(write_config(workdir, TREE), backend))
    mode = d.socket.stat()
    assert stat.S_ISSOCK(mode.st_mode)
    assert stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == os.getuid()
    workdir.chmod(0o711)  # the directory is not what refuses: the socket's mode is
    assert as_nobody(d.socket, {"command": "ping"}, then="wait")["connect"] == "PermissionError"

    d.socket.chmod(0o666)  # a mistake by hand: the peer check still refuses
    refused = as_nobody(d.socket, {"command": "stop", "path": "/a"}, then="wait")
    assert refused["first"] == {
        "ok": False,
        "error": {
            "code": "forbidden",
            "message": f"uid {NOBODY} may not use this daemon: list it in allowed-uids in the"
            " daemon's config",
        },
    }
    assert refused["closed"] is True
    record = d.wait_for(lambda r: r.get("event") == "refused")
    assert (record["level"], record["uid"], record["pid"]) == ("warning", NOBODY, refused["pid"])
    assert record["message"] == (
        f"refused a control connection from uid {NOBODY} (pid {refused['pid']}, gid {NOBODY}):"
        " not root, the daemon's user, in allowed-uids, or in socket-group/allowed-gids"
    )
    assert d.cli("status", "/a").rc == 0  # not stopped


def test_allowed_uid_is_served_and_audited(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A uid in allowed-uids is served, and its commands are audited under its uid."""
    config = write_config(workdir, TREE, daemon=f"allowed-uids = [{NOBODY}]")
    daemons.append(d := Daemon.start(config, backend))
    workdir.chmod(0o711)
    d.socket.chmod(0o666)
    served = as_nobody(d.socket, {"command": "stop", "path": "/a"}, then="done")
    assert served["first"] == {
        "ok": True,
        "result": {"path": "/a", "done": "stopped; it stays stopped until `corral start`"},
    }
    audit = d.wait_for(lambda r: r.get("event") == "audit")
    assert (audit["uid"], audit["pid"], audit["command"], audit["result"]) == (
        NOBODY,
        served["pid"],
        "stop",
        "ok",
    )
    assert d.cli("status", "/a").rc == 3
