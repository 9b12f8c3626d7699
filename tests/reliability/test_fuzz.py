"""Protocol fuzzing of a real daemon, both backends: requests shaped like the schema with
every field's wrong types and odd values, and raw bytes (invalid UTF-8, deep nesting, huge
numbers). Every frame gets exactly one answer, a well-formed one with a known error code
(never ``internal``); the connection and the daemon go on; afterwards the tree is as it was,
the daemon holds no more descriptors than before, and nothing was logged as a crash. The
status latency is measured meanwhile."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.daemon import protocol
from tests.e2e.support import Daemon, Raw, shared_daemon
from tests.reliability.conftest import SOAK, Footprint, Poller

if TYPE_CHECKING:
    from collections.abc import Iterator

TREE = """
[supervisor]
[[supervisor.children]]
id = "a"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "pool"
type = "supervisor"
max-children = 3
child = { id = "w", start = "tests.e2e.actors:Echo", restart = "temporary" }
"""
EXAMPLES = 300 * SOAK
CODES = {code.value for code in protocol.Code} - {"internal"}
COMMANDS = sorted(t.__struct_config__.tag for t in protocol.Request.__args__)
FIELDS = ("path", "reason", "supervisor", "id", "args", "dry_run", "limit", "recent", "follow")
# The fuzzer may not change the tree: commands that would are sent for paths that do not
# exist, and `shutdown` never.
HARMLESS = ("ping", "status", "why", "dead-letters", "events", "metrics", "reload")


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    with shared_daemon(TREE, str(request.param), daemon="idle-timeout = 5.0") as d:
        yield d


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**400),  # far past 64 bits
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=31), max_size=10),  # control characters
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
paths = st.one_of(
    st.just("/fuzz"),
    st.text(max_size=20).map(lambda text: "/fuzz/" + text),
    values,  # the wrong type, or no path at all
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request: a command (known or not) and some of the fields, any values."""
    command = draw(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=12), values))
    request: dict[str, Any] = {"command": command}
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        harmless = command in HARMLESS or not isinstance(command, str)
        is_path = field in ("path", "supervisor")
        request[field] = draw(values if harmless or not is_path else paths)
    if command == "shutdown" or (command not in HARMLESS and "path" not in request):
        request["path"] = "/fuzz"  # refused (not_found), or an unknown field: bad_request
    if command == "start-child":
        request["supervisor"] = draw(paths)
    return request


def nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + b"1" + closer * depth


raw_frames = st.one_of(
    st.binary(max_size=2048),  # invalid UTF-8, NULs, anything
    st.integers(min_value=1, max_value=20_000).map(lambda n: nested(n, b"[", b"]")),
    st.integers(min_value=1, max_value=20_000).map(lambda n: nested(n, b'{"a":', b"}")),
    st.integers(min_value=1, max_value=20_000).map(
        lambda n: (
            b'{"command": "start-child", "supervisor": "/fuzz", "args": {"a": '
            + nested(n, b"[", b"]")
            + b"}}"
        )
    ),
    st.sampled_from([b"1e999999", b"9" * 10_000, b"-" + b"9" * 5000, b'{"command": 1e309}']),
)


def assert_answered(client: Raw, frame: bytes) -> None:
    """*frame* (one line) gets one well-formed answer, and the connection still works."""
    client.send(frame.replace(b"\n", b" ") + b"\n")
    if not frame.replace(b"\n", b" ").strip():
        return  # a blank line is ignored, as a person pressing Enter in socat
    answer = client.receive()
    assert isinstance(answer, dict), (frame[:200], answer)
    if answer.get("ok") is not True:
        assert answer["ok"] is False
        assert answer["error"]["code"] in CODES, (frame[:200], answer)
        assert isinstance(answer["error"]["message"], str)
    pong = client.ask({"command": "ping"})
    assert pong["ok"] is True


def encode(request: dict[str, Any]) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity included."""
    return json.dumps(request, allow_nan=True).encode()


def tree_of(d: Daemon) -> list[tuple[str, str, int]]:
    with Raw(d.socket) as client:
        root = client.ask({"command": "status"})["result"]
    return [(c["path"], c["state"], c["restarts"]) for c in root["children"]]


def test_fuzzed_requests_are_all_answered(fuzzed: Daemon, measured: dict[str, object]) -> None:
    """Schema-shaped requests with any values, and raw bytes: one well-formed answer each,
    the tree untouched, no descriptor kept, no crash logged."""
    before_tree = tree_of(fuzzed)
    before = Footprint.of(fuzzed)
    with Poller(fuzzed.socket, "/a") as poller, Raw(fuzzed.socket) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=requests())
        def structured(request: dict[str, Any]) -> None:
            if request.get("command") == "events" and request.get("follow", True) is True:
                request["follow"] = False  # a follower (the default) gets no answer per frame
            assert_answered(client, encode(request))

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(frame=raw_frames)
        def raw(frame: bytes) -> None:
            assert_answered(client, frame)

        structured()
        raw()
    assert poller.failure is None, poller.failure
    measured.update(poller.figures())
    assert tree_of(fuzzed) == before_tree
    assert Footprint.of(fuzzed).fds <= before.fds + 1  # the poller's connection may linger
    fuzzed.drain()
    crashed = [r for r in fuzzed.seen if "traceback" in r or r.get("level") == "critical"]
    assert not crashed, crashed[:3]
