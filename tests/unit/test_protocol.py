"""The control socket's language: requests and responses survive a round trip, bad frames
fail to decode with msgspec's message, and error codes are stable strings."""

from __future__ import annotations

import re

import msgspec
import pytest

from corral.daemon import protocol
from corral.daemon.protocol import Code


def test_all_is_pinned() -> None:
    """The protocol module exports exactly its public names, as a tuple."""
    assert protocol.__all__ == (
        "CHANGES",
        "MAX_DEPTH",
        "MAX_FRAME",
        "Answer",
        "BreakerAction",
        "BreakerInfo",
        "Breakers",
        "CallActor",
        "CastActor",
        "Code",
        "DeadLetterInfo",
        "DeadLetters",
        "DeleteChild",
        "Done",
        "ErrorInfo",
        "Event",
        "Events",
        "ExitInfo",
        "Kill",
        "Metrics",
        "Ping",
        "Pong",
        "Reload",
        "ReloadResult",
        "Request",
        "Response",
        "Restart",
        "Shutdown",
        "Start",
        "StartChild",
        "Status",
        "StatusNode",
        "Stop",
        "TerminateChild",
        "Why",
        "WhyResult",
        "decode_request",
        "decode_response",
        "encode",
        "encode_value",
    )
    assert protocol.MAX_FRAME == 1024 * 1024


@pytest.mark.parametrize(
    ("request_", "frame"),
    [
        pytest.param(protocol.Ping(), b'{"command":"ping"}', id="ping"),
        pytest.param(protocol.Status(), b'{"command":"status","path":"/"}', id="status"),
        pytest.param(
            protocol.Status(path="/group"), b'{"command":"status","path":"/group"}', id="status-at"
        ),
        pytest.param(protocol.Start(path="/a"), b'{"command":"start","path":"/a"}', id="start"),
        pytest.param(protocol.Stop(path="/a"), b'{"command":"stop","path":"/a"}', id="stop"),
        pytest.param(
            protocol.Restart(path="/a"), b'{"command":"restart","path":"/a"}', id="restart"
        ),
        pytest.param(
            protocol.Kill(path="/a"),
            b'{"command":"kill","path":"/a","reason":"killed by an operator"}',
            id="kill",
        ),
        pytest.param(
            protocol.Kill(path="/a", reason="drill"),
            b'{"command":"kill","path":"/a","reason":"drill"}',
            id="kill-reason",
        ),
        pytest.param(
            protocol.StartChild(supervisor="/pool"),
            b'{"command":"start-child","supervisor":"/pool","id":null,"args":{},"wait":0.0}',
            id="start-child",
        ),
        pytest.param(
            protocol.StartChild(supervisor="/pool", id="w1", args={"port": 8080}, wait=2.5),
            b'{"command":"start-child","supervisor":"/pool","id":"w1","args":{"port":8080},'
            b'"wait":2.5}',
            id="start-child-id-args-wait",
        ),
        pytest.param(
            protocol.TerminateChild(path="/p/1"),
            b'{"command":"terminate-child","path":"/p/1"}',
            id="terminate-child",
        ),
        pytest.param(
            protocol.DeleteChild(path="/a"),
            b'{"command":"delete-child","path":"/a"}',
            id="delete-child",
        ),
        pytest.param(protocol.Reload(), b'{"command":"reload","dry_run":false}', id="reload"),
        pytest.param(
            protocol.Reload(dry_run=True), b'{"command":"reload","dry_run":true}', id="reload-dry"
        ),
        pytest.param(protocol.Why(path="/a"), b'{"command":"why","path":"/a"}', id="why"),
        pytest.param(
            protocol.DeadLetters(),
            b'{"command":"dead-letters","path":null,"limit":100}',
            id="dead-letters",
        ),
        pytest.param(
            protocol.DeadLetters(path="/a", limit=5),
            b'{"command":"dead-letters","path":"/a","limit":5}',
            id="dead-letters-path",
        ),
        pytest.param(
            protocol.Events(), b'{"command":"events","recent":0,"follow":true}', id="events"
        ),
        pytest.param(
            protocol.Events(recent=20, follow=False),
            b'{"command":"events","recent":20,"follow":false}',
            id="events-recent",
        ),
        pytest.param(protocol.Shutdown(), b'{"command":"shutdown"}', id="shutdown"),
        pytest.param(protocol.Metrics(), b'{"command":"metrics"}', id="metrics"),
        pytest.param(
            protocol.CallActor(path="/kv", message={"get": "a"}, timeout=2.0),
            b'{"command":"call","path":"/kv","message":{"get":"a"},"timeout":2.0}',
            id="call",
        ),
        pytest.param(
            protocol.Breakers(path="/api"),
            b'{"command":"breakers","path":"/api"}',
            id="breakers",
        ),
        pytest.param(
            protocol.BreakerAction(path="/api", name="pricing", action="open"),
            b'{"command":"breaker","path":"/api","name":"pricing","action":"open"}',
            id="breaker",
        ),
        pytest.param(
            protocol.CastActor(path="/kv", message=["put", "a", 1]),
            b'{"command":"cast","path":"/kv","message":["put","a",1]}',
            id="cast",
        ),
    ],
)
def test_request_round_trip(request_: protocol.Request, frame: bytes) -> None:
    """Every request encodes to one tagged JSON line and decodes back to itself."""
    encoded = protocol.encode(request_)
    assert encoded == frame + b"\n"
    assert protocol.decode_request(encoded) == request_
    assert protocol.decode_request(frame) == request_


def test_every_request_kind_is_covered() -> None:
    """The round-trip table names every command of the Request union."""
    tags = sorted(t.__struct_config__.tag for t in protocol.Request.__args__)
    assert tags == [
        "breaker",
        "breakers",
        "call",
        "cast",
        "dead-letters",
        "delete-child",
        "events",
        "kill",
        "metrics",
        "ping",
        "reload",
        "restart",
        "shutdown",
        "start",
        "start-child",
        "status",
        "stop",
        "terminate-child",
        "why",
    ]


@pytest.mark.parametrize(
    ("frame", "request_"),
    [
        pytest.param(b'{"command":"status"}', protocol.Status(path="/"), id="status-default"),
        pytest.param(
            b'{"command":"events"}', protocol.Events(recent=0, follow=True), id="events-default"
        ),
        pytest.param(
            b'{"command":"start-child","supervisor":"/p"}',
            protocol.StartChild(supervisor="/p", id=None, args={}),
            id="start-child-default",
        ),
        pytest.param(
            b'  {"path": "/a", "command": "stop"}  \n', protocol.Stop(path="/a"), id="any-order"
        ),
        pytest.param(
            b'{"command":"call","path":"/kv","message":null}',
            protocol.CallActor(path="/kv", message=None, timeout=5.0),
            id="call-default",
        ),
    ],
)
def test_request_defaults(frame: bytes, request_: protocol.Request) -> None:
    """Optional fields take their defaults; key order and whitespace do not matter."""
    assert protocol.decode_request(frame) == request_


def test_reload_takes_the_documented_dry_run_key() -> None:
    """The README documents ``reload`` (``dry_run``): that key is accepted on the wire."""
    assert protocol.decode_request(b'{"command":"reload","dry_run":true}') == protocol.Reload(
        dry_run=True
    )


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        pytest.param(
            b'{"command":"nope"}',
            msgspec.ValidationError,
            "Invalid value 'nope' - at `$.command`",
            id="unknown-command",
        ),
        pytest.param(
            b'{"path":"/"}',
            msgspec.ValidationError,
            "Object missing required field `command`",
            id="missing-command",
        ),
        pytest.param(
            b'{"command":3}',
            msgspec.ValidationError,
            "Expected `str` - at `$.command`",
            id="command-not-a-string",
        ),
        pytest.param(
            b'{"command":"start"}',
            msgspec.ValidationError,
            "Object missing required field `path`",
            id="missing-path",
        ),
        pytest.param(
            b'{"command":"start","path":3}',
            msgspec.ValidationError,
            "Expected `str`, got `int` - at `$.path`",
            id="path-not-a-string",
        ),
        pytest.param(
            b'{"command":"start","path":""}',
            msgspec.ValidationError,
            "Expected `str` of length >= 1 - at `$.path`",
            id="empty-path",
        ),
        pytest.param(
            b'{"command":"kill","path":"/a","reason":7}',
            msgspec.ValidationError,
            "Expected `str`, got `int` - at `$.reason`",
            id="reason-not-a-string",
        ),
        pytest.param(
            b'{"command":"start-child","supervisor":"/p","id":"a/b"}',
            msgspec.ValidationError,
            "Expected `str` matching regex '^[^/]+$' - at `$.id`",
            id="child-id-with-slash",
        ),
        pytest.param(
            b'{"command":"start-child","supervisor":"/p","args":[]}',
            msgspec.ValidationError,
            "Expected `object`, got `array` - at `$.args`",
            id="args-not-an-object",
        ),
        pytest.param(
            b'{"command":"dead-letters","limit":0}',
            msgspec.ValidationError,
            "Expected `int` >= 1 - at `$.limit`",
            id="limit-zero",
        ),
        pytest.param(
            b'{"command":"events","recent":1001}',
            msgspec.ValidationError,
            "Expected `int` <= 1000 - at `$.recent`",
            id="too-many-recent",
        ),
        pytest.param(
            b'{"command":"reload","dry_run":"yes"}',
            msgspec.ValidationError,
            "Expected `bool`, got `str` - at `$.dry_run`",
            id="dry-run-not-a-bool",
        ),
        pytest.param(
            b'{"command":"status","bogus":1}',
            msgspec.ValidationError,
            "Object contains unknown field `bogus`",
            id="unknown-key",
        ),
        pytest.param(
            b"[]", msgspec.ValidationError, "Expected `object`, got `array`", id="not-an-object"
        ),
        pytest.param(
            b"not json",
            msgspec.DecodeError,
            "JSON is malformed: invalid character (byte 4)",
            id="not-json",
        ),
        pytest.param(b"", msgspec.DecodeError, "Input data was truncated", id="empty"),
        pytest.param(
            b'{"command":"call","path":"/kv","message":1,"timeout":0}',
            msgspec.ValidationError,
            "Expected `float` > 0.0 - at `$.timeout`",
            id="call-timeout-zero",
        ),
        pytest.param(
            b'{"command":"cast","path":"/kv","message":' + b"[" * 40 + b"]" * 40 + b"}",
            msgspec.ValidationError,
            "message nested more than 32 levels deep - at `$.message`",
            id="cast-too-deep",
        ),
        pytest.param(
            b'{"command":"cast","path":"/kv"}',
            msgspec.ValidationError,
            "Object missing required field `message`",
            id="cast-no-message",
        ),
        pytest.param(
            b'{"command":"breaker","path":"/api","name":"pricing","action":"close"}',
            msgspec.ValidationError,
            "Invalid enum value 'close' - at `$.action`",
            id="breaker-unknown-action",
        ),
        pytest.param(
            b'{"command":"breaker","path":"/api","name":"a b","action":"open"}',
            msgspec.ValidationError,
            "Expected `str` matching regex '^[A-Za-z0-9_.-]{1,64}$' - at `$.name`",
            id="breaker-bad-name",
        ),
    ],
)
def test_bad_request_frames_fail_to_decode(
    frame: bytes, error: type[msgspec.DecodeError], message: str
) -> None:
    """A frame of the wrong shape raises msgspec's error (ValidationError for shapes)."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        protocol.decode_request(frame)


@pytest.mark.parametrize(
    ("response", "frame"),
    [
        pytest.param(protocol.Response(ok=True), b'{"ok":true}', id="ok-empty"),
        pytest.param(
            protocol.Response(ok=True, result={"path": "/a", "done": "started"}),
            b'{"ok":true,"result":{"path":"/a","done":"started"}}',
            id="ok-result",
        ),
        pytest.param(
            protocol.Response(ok=True, result=[1, "two"]),
            b'{"ok":true,"result":[1,"two"]}',
            id="ok-list",
        ),
        pytest.param(
            protocol.Response(
                ok=False, error=protocol.ErrorInfo(Code.NOT_FOUND, "supervisor '/' has no child")
            ),
            b'{"ok":false,"error":{"code":"not_found","message":"supervisor \'/\' has no child"}}',
            id="error",
        ),
    ],
)
def test_response_round_trip(response: protocol.Response, frame: bytes) -> None:
    """Responses encode to one line (defaults omitted) and decode back to themselves."""
    assert protocol.encode(response) == frame + b"\n"
    assert protocol.decode_response(frame) == response


def test_response_result_structs_encode_without_defaults() -> None:
    """A result Struct inside a response is sent as an object without its default fields."""
    done = protocol.Done(path="/a", done="started")
    frame = protocol.encode(protocol.Response(ok=True, result=done))
    assert frame == b'{"ok":true,"result":{"path":"/a","done":"started"}}\n'
    decoded = protocol.decode_response(frame)
    assert msgspec.convert(decoded.result, protocol.Done) == done


def test_status_node_round_trips_with_children() -> None:
    """A StatusNode tree survives JSON and conversion back."""
    node = protocol.StatusNode(
        path="/",
        type="supervisor",
        state="running",
        restarts=0,
        held=False,
        strategy="one-for-one",
        intensity=1,
        period=5.0,
        restarts_remaining=1,
        children=[
            protocol.StatusNode(
                path="/a", type="worker", state="running", restarts=0, held=False, uptime=1.5
            )
        ],
    )
    decoded = protocol.decode_response(protocol.encode(protocol.Response(ok=True, result=node)))
    assert msgspec.convert(decoded.result, protocol.StatusNode) == node
    assert decoded.result["children"][0] == {
        "path": "/a",
        "type": "worker",
        "state": "running",
        "restarts": 0,
        "held": False,
        "uptime": 1.5,
    }


def test_unknown_error_code_does_not_decode() -> None:
    """A response with a code outside Code is rejected, not passed on as text."""
    with pytest.raises(
        msgspec.ValidationError, match=re.escape("Invalid enum value 'nope' - at `$.error.code`")
    ):
        protocol.decode_response(b'{"ok":false,"error":{"code":"nope","message":"m"}}')


def test_codes_are_stable_strings() -> None:
    """The error codes scripts match on never change."""
    assert {c.name: c.value for c in Code} == {
        "BAD_REQUEST": "bad_request",
        "FORBIDDEN": "forbidden",
        "BUSY": "busy",
        "NOT_FOUND": "not_found",
        "RUNNING": "running",
        "NOT_RUNNING": "not_running",
        "RESTARTING": "restarting",
        "ALREADY_PRESENT": "already_present",
        "ALREADY_STARTED": "already_started",
        "MAX_CHILDREN": "max_children",
        "UNSUPPORTED": "unsupported",
        "START_FAILED": "start_failed",
        "INVALID_CONFIG": "invalid_config",
        "STOPPING": "stopping",
        "TIMEOUT": "timeout",
        "CRASHED": "crashed",
        "NO_REPLY": "no_reply",
        "MAILBOX_FULL": "mailbox_full",
        "INTERNAL": "internal",
    }
    assert isinstance(Code.NOT_FOUND, str)  # a StrEnum: formats and encodes as its value
    assert f"{Code.BUSY}" == "busy"
    assert protocol.encode(protocol.ErrorInfo(Code.BUSY, "m")) == b'{"code":"busy","message":"m"}\n'
