"""An embedded tree served like the daemon: `open_tree(control_socket=, metrics_listen=)`
answers the control socket's commands and Prometheus' scrapes; `call` and `cast` reach only
actors whose code accepts socket messages, and are audited without their content."""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from corral.daemon.control import DaemonError
from tests.integration.support import HANG_GUARD, free_port
from tests.integration.test_daemon import Connection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


class Kv(corral.Actor):
    """A key-value store that takes messages from the shell: {"put": [k, v]}, {"get": k}."""

    socket_messages = True

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    async def handle(self, message: object) -> object:
        match message:
            case {"put": [str(key), value]}:
                self.data[key] = value
                return "ok"
            case {"get": str(key)}:
                return self.data.get(key)
            case "slow":
                await anyio.sleep_forever()
            case "crash":
                msg = "asked to"
                raise RuntimeError(msg)
            case "object":
                return object()  # no JSON for this
        return {"unknown": message}


class Deferring(corral.Actor):
    """Answers every call later, with an error of its own (a deferred reply that fails)."""

    socket_messages = True

    async def handle(self, message: object) -> object:
        reply = self.ctx.defer()
        reply.fail(ValueError("no such key"))
        return None


class Private(corral.Actor):
    """Does not say it takes socket messages."""

    async def handle(self, message: object) -> object:
        return message


@corral.socket_messages
async def collector(ctx: corral.Context, got: list[object], arrived: anyio.Event) -> None:
    """A function actor that takes socket messages: keeps what it receives."""
    async for message in ctx:
        got.append(message)  # one at a time, as they come
        arrived.set()


def tree(
    got: list[object] | None = None, arrived: anyio.Event | None = None
) -> corral.SupervisorSpec:
    collected = {"got": [] if got is None else got, "arrived": arrived or anyio.Event()}
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("kv", Kv),
            corral.ChildSpec("private", Private),
            corral.ChildSpec("collector", collector, args=collected),
            corral.ChildSpec("pool", corral.DynamicSupervisorSpec(corral.ChildSpec("w", Kv))),
            corral.ChildSpec("tiny", Kv, mailbox=corral.MailboxSpec(capacity=1)),
            corral.ChildSpec(
                "dropping",
                Kv,
                mailbox=corral.MailboxSpec(capacity=1, overflow=corral.Overflow.DROP_NEWEST),
            ),
            corral.ChildSpec("deferring", Deferring),
        ]
    )


CHILDREN = ["/kv", "/private", "/collector", "/pool", "/tiny", "/dropping", "/deferring"]
"""The paths of ``tree()``'s children, in start order."""


def handled(running: corral.Tree, path: str) -> int:
    return next(c.handled for c in running.statistics().children if c.path == path)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return run / "tree.sock"


async def connect(path: Path) -> AsyncIterator[Connection]:
    stream = await anyio.connect_unix(path)
    async with stream:
        yield Connection(stream)


async def test_the_socket_answers_as_the_daemons_does(sock: Path) -> None:
    """ping, status, why and events answer for a library program's tree (open_tree's own
    arguments, on_open here, still work)."""
    opened: list[corral.Tree] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock, on_open=opened.append) as running:
            assert opened == [running]
            assert os.stat(sock).st_mode & 0o777 == 0o600
            async for conn in connect(sock):
                pong = await conn.ok("ping")
                assert pong["pid"] == os.getpid()
                assert pong["config"].endswith("(open_tree)")
                status = await conn.ok("status")
                assert [c["path"] for c in status["children"]] == CHILDREN
                assert {c["state"] for c in status["children"]} == {"running"}
                why = await conn.ok("why", path="/kv")
                assert (why["state"], why["restarts"]) == ("running", 0)
                events = await conn.ok("events", recent=10, follow=False)
                assert [e["path"] for e in events if e["event"] == "child-started"] == CHILDREN
                started = await conn.ok("start-child", supervisor="/pool", id="one")
                assert started == {"path": "/pool/one", "done": "started"}
                assert "one" in running.supervisor("/pool")
    assert not await anyio.Path(sock).exists()  # removed when the block ends


async def test_call_and_cast_reach_an_actor_that_takes_socket_messages(sock: Path) -> None:
    """call answers with the actor's JSON answer; cast queues; a function actor says so
    with @corral.socket_messages."""
    got: list[object] = []
    arrived = anyio.Event()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(got, arrived), control_socket=sock):
            async for conn in connect(sock):
                answer = await conn.ok("call", path="/kv", message={"put": ["a", [1, 2]]})
                assert answer == {"path": "/kv", "answer": "ok"}
                answer = await conn.ok("call", path="/kv", message={"get": "a"})
                assert answer == {"path": "/kv", "answer": [1, 2]}
                queued = await conn.ok("cast", path="/collector", message={"x": None})
                assert queued == {"path": "/collector", "queued": True}
                await arrived.wait()
                assert got == [{"x": None}]


async def test_call_and_cast_are_refused_unless_the_actor_says_it_takes_them(
    sock: Path,
) -> None:
    """An actor whose code does not say so, and a supervisor, take no socket messages."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock) as running:
            async for conn in connect(sock):
                code, message = await conn.error("call", path="/private", message="hi")
                assert code == "unsupported"
                assert message.startswith(
                    "/private (tests.integration.test_embedded:Private) does not take messages"
                    " from the socket: its code must say so"
                )
                code, _ = await conn.error("cast", path="/private", message="hi")
                assert code == "unsupported"
                code, message = await conn.error("call", path="/pool", message="hi")
                assert (code, message) == (
                    "unsupported",
                    "/pool is a supervisor: only an actor takes messages",
                )
                code, _ = await conn.error("call", path="/nope", message="hi")
                assert code == "not_found"
            assert handled(running, "/private") == 0


async def test_call_errors_have_their_own_codes(sock: Path) -> None:
    """A call that times out, crashes the actor, or is answered with no JSON value says so."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock) as running:
            async for conn in connect(sock):
                code, _ = await conn.error("call", path="/kv", message="object")
                assert code == "unsupported"
                code, message = await conn.error("call", path="/kv", message="crash")
                assert code == "crashed"
                assert "/kv crashed while handling this call" in message
                code, _ = await conn.error("call", path="/kv", message="slow", timeout=0.05)
                assert code == "timeout"
                assert handled(running, "/kv") >= 1


async def test_a_full_mailbox_refuses_a_cast_at_once(sock: Path) -> None:
    """cast never waits for room: a full mailbox answers mailbox_full."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock):
            async for conn in connect(sock):
                code, _ = await conn.error("call", path="/tiny", message="slow", timeout=0.05)
                assert code == "timeout"  # /tiny is busy for good now
                assert await conn.ok("cast", path="/tiny", message=1) == {
                    "path": "/tiny",
                    "queued": True,
                }
                code, message = await conn.error("cast", path="/tiny", message=2)
                assert code == "mailbox_full"
                assert message.startswith("mailbox of /tiny is full (1 messages")


async def test_a_dropped_cast_and_a_failed_deferred_reply_say_so(
    sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A drop-newest mailbox that drops the cast answers mailbox_full, not queued; an actor
    that answers with its own error is `crashed`, and nothing of the message is logged."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock) as running:
            async for conn in connect(sock):
                code, _ = await conn.error("call", path="/dropping", message="slow", timeout=0.05)
                assert code == "timeout"  # busy for good: its one place fills next
                assert (await conn.ok("cast", path="/dropping", message=1))["queued"] is True
                code, message = await conn.error("cast", path="/dropping", message=2)
                assert (code, message) == (
                    "mailbox_full",
                    "mailbox of /dropping is full (drop-newest): the message was dropped",
                )
                assert [d.reason for d in running.dead_letters("/dropping")] == ["dropped"]
                code, message = await conn.error(
                    "call", path="/deferring", message={"password": "hunter2"}
                )
                assert (code, message) == (
                    "crashed",
                    "/deferring answered with an error: ValueError('no such key')",
                )
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


async def test_call_and_cast_are_audited_without_their_content(
    sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit log says who sent what kind of message where, and its size, not its text."""
    caplog.set_level(logging.INFO, logger="corral.audit")
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock):
            async for conn in connect(sock):
                await conn.ok("call", path="/kv", message={"put": ["token", "s3cret"]})
                await conn.error("cast", path="/private", message="s3cret")
    lines = [r.getMessage() for r in caplog.records if r.name == "corral.audit"]
    assert len(lines) == 2
    assert "call path='/kv' message=<JSON, 26 bytes>" in lines[0]
    assert lines[0].endswith(": ok")
    assert "cast path='/private'" in lines[1]
    assert lines[1].endswith(": error unsupported")
    assert not any("s3cret" in line for line in lines)


async def test_reload_and_shutdown_are_refused_for_an_embedded_tree(sock: Path) -> None:
    """The program owns its tree: no file to reload, no daemon to shut down."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock) as running:
            async for conn in connect(sock):
                code, message = await conn.error("reload")
                assert code == "unsupported"
                assert "no config file to reload" in message
                code, message = await conn.error("shutdown")
                assert code == "unsupported"
                assert f"stop that program (pid {os.getpid()})" in message
                assert (await conn.ok("status"))["state"] == "running"
            assert handled(running, "/kv") == 0


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_metrics_listen_serves_metrics_healthz_and_readyz() -> None:
    """The daemon's three pages, for the embedded tree's actors."""
    port = free_port()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), metrics_listen=f"127.0.0.1:{port}") as running:
            await running.lookup("/kv").call({"get": "a"})
            status, body = await http_get(port, "/metrics")
            assert status == 200
            assert 'corral_children{supervisor="/",state="running"} 7' in body
            assert 'corral_messages_handled_total{path="/kv"} 1' in body
            assert (await http_get(port, "/healthz"))[0] == 200
            assert await http_get(port, "/readyz") == (200, "ready\n")


async def test_the_socket_is_removed_when_open_tree_fails_before_the_tree(sock: Path) -> None:
    """An error after the socket is made (here: a bad argument of open_tree's own) removes
    it again, so that the next open_tree on that path works."""
    with pytest.raises(TypeError):
        async with corral.open_tree(tree(), control_socket=sock, observers=5):
            pytest.fail("started")  # pragma: no cover
    assert not await anyio.Path(sock).exists()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(), control_socket=sock):
            async for conn in connect(sock):
                assert (await conn.ok("status"))["state"] == "running"


async def test_bad_addresses_are_errors_before_anything_starts(sock: Path) -> None:
    """A metrics address that is not host:port, or taken, is refused before the tree starts."""
    with pytest.raises(ValueError, match=r'^metrics_listen: expected "host:port"'):
        async with corral.open_tree(tree(), metrics_listen="nowhere"):
            pytest.fail("started")  # pragma: no cover
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DaemonError, match=f"^cannot listen for metrics on 127.0.0.1:{port}"):
            async with corral.open_tree(
                tree(), control_socket=sock, metrics_listen=f"127.0.0.1:{port}"
            ):
                pytest.fail("started")  # pragma: no cover
    assert not await anyio.Path(sock).exists()  # the socket made first is removed again


async def test_an_error_in_the_body_comes_out_as_itself(sock: Path) -> None:
    """As with a plain open_tree: no exception group around the program's own error."""

    class Oops(Exception):
        pass

    with anyio.fail_after(HANG_GUARD), pytest.raises(Oops):
        async with corral.open_tree(tree(), control_socket=sock):
            raise Oops
    assert not await anyio.Path(sock).exists()
