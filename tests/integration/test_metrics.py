"""The metrics endpoint in-process: real HTTP on loopback, real Unix socket, both backends."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.actors.timing import SAMPLE_EVERY
from corral.daemon.endpoint import MAX_CLIENTS
from corral.daemon.main import DaemonError
from corral.daemon.systemd import summary
from corral.supervisors.core import ChildStatus
from corral.supervisors.events import ChildExited, ChildStarted
from tests.integration.test_daemon import make_daemon, serving

if TYPE_CHECKING:
    from pathlib import Path

    from corral.daemon.main import Daemon

pytestmark = pytest.mark.anyio

METRICS = 'metrics-listen = "127.0.0.1:0"'  # a free port: the endpoint says which


def port_of(daemon: Daemon) -> int:
    endpoint = daemon.endpoint
    assert endpoint is not None
    return endpoint.port


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send *request* as is; the status, headers and body of the answer."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        data = b""
        try:
            await stream.send(request)
            while chunk := await stream.receive():
                data += chunk
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
    if not data:
        return 0, {}, b""  # closed unanswered
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), headers, body


async def get(port: int, path: str) -> tuple[int, str]:
    status, _, body = await http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return status, body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def test_a_kill_is_counted_as_a_restart_after_an_error(
    workdir: Path, anyio_backend: str
) -> None:
    """After `kill`, the child's error restarts and exits count 1 and the command is counted."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        port = port_of(running.daemon)
        status, before = await get(port, "/metrics")
        assert status == 200
        assert value(before, "corral_child_up", path="/echo") == 1
        assert value(before, "corral_child_restarts_total", path="/echo", reason="error") == 0
        conn = await running.connect()
        await conn.ok("kill", path="/echo")
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        _, after = await get(port, "/metrics")
        assert value(after, "corral_child_restarts_total", path="/echo", reason="error") == 1
        assert value(after, "corral_child_exits_total", path="/echo", kind="error") == 1
        assert value(after, "corral_control_commands_total", command="kill", result="ok") == 1
        assert value(after, "corral_supervisor_restarts_remaining", supervisor="/") == 9
        assert value(after, "corral_supervisor_intensity", supervisor="/") == 10
        assert value(after, "corral_children", supervisor="/group", state="running") == 2
        assert value(after, "corral_build_info", version=running.daemon.ping().version,
                     backend=anyio_backend) == 1  # fmt: skip


async def test_a_sibling_restart_is_counted_as_stopped(workdir: Path, anyio_backend: str) -> None:
    """Under rest-for-one, the follower restarted with its leader counts reason="stopped"."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/group/leader")
        await running.log.wait_for(ChildStarted, "/group/follower", restarts=1)
        _, text = await get(port_of(running.daemon), "/metrics")
        got = samples(text)
        restarts = "corral_child_restarts_total"
        assert got[restarts, frozenset({("path", "/group/leader"), ("reason", "error")})] == 1
        assert got[restarts, frozenset({("path", "/group/follower"), ("reason", "stopped")})] == 1
        assert got[restarts, frozenset({("path", "/group/follower"), ("reason", "error")})] == 0


async def test_probes_and_bad_requests(workdir: Path, anyio_backend: str) -> None:
    """/healthz and /readyz answer 200; unknown pages, methods and garbage get a 4xx."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        port = port_of(running.daemon)
        assert await get(port, "/healthz") == (200, "ok: the event loop answers\n")
        assert await get(port, "/readyz") == (200, "ready\n")
        assert await get(port, "/readyz?verbose=1") == (200, "ready\n")
        assert await get(port, "/nope") == (
            404,
            "no page '/nope': try /healthz, /metrics, /readyz\n",
        )
        status, _, body = await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert (status, body) == (405, b"POST is not served: use GET\n")
        status, _, body = await http(port, b"hello\r\n\r\n")
        assert (status, body) == (400, b"not an HTTP/1.x request line: 'hello'\n")
        status, _, raw = await http(port, b"GET /metrics HTTP/1.1\r\n" + b"x" * 9000)
        assert (status, raw) == (400, b"incomplete request head (at most 8 KiB, within 10 s)\n")
        status, headers, body = await http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert (status, body) == (200, b"")
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert int(headers["Content-Length"]) > 1000  # the length of what GET would send
        _, text = await get(port, "/metrics")
        assert value(text, "corral_ready") == 1


async def test_readyz_is_503_while_stopping(workdir: Path, anyio_backend: str) -> None:
    """Once the stop begins /readyz says 503 (stopping) while /healthz still says 200, and
    the service level is unavailable: a stopping supervisor marks all its children stopping at
    once (though /ok, stopped last, still runs)."""
    tree = """
        [[supervisor.children]]
        id = "ok"
        start = "corral.demo:Echo"

        [[supervisor.children]]
        id = "slow"
        start = "tests.integration.test_daemon:SlowToStop"
        args = { name = "metrics-slow" }
        shutdown = "infinity"
    """
    from tests.integration import test_daemon

    test_daemon.STOPPING["metrics-slow"] = stopping = anyio.Event()
    daemon = make_daemon(workdir, anyio_backend, f"[supervisor]\n{tree}", daemon=METRICS)
    async with serving(daemon) as running:
        port = port_of(daemon)
        daemon.request_stop()
        await stopping.wait()
        assert await get(port, "/readyz") == (503, "not ready: stopping\n")
        assert await get(port, "/healthz") == (200, "ok: the event loop answers\n")
        _, text = await get(port, "/metrics")
        assert value(text, "corral_ready") == 0
        assert 'corral_service_level{level="unavailable"} 1' in text.splitlines()
        assert running.daemon.tree is not None
        running.daemon.tree.stop(anyio.current_time())  # force the endless cleanup to end


async def test_metrics_command_is_the_exposition(workdir: Path, anyio_backend: str) -> None:
    """`metrics` over the control socket returns the exposition, which promtool accepts."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        conn = await running.connect()
        text = await conn.ok("metrics")
        assert value(text, "corral_child_up", path="/ticker") == 1
        assert value(text, "corral_control_commands_total", command="metrics", result="ok") is None
        promtool = shutil.which("promtool")
        assert promtool is not None, "promtool is missing: run scripts/bootstrap"
        checked = await anyio.run_process(
            [promtool, "check", "metrics"], input=text.encode(), check=False
        )
        assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")
        again = await conn.ok("metrics")
        assert value(again, "corral_control_commands_total", command="metrics", result="ok") == 1


async def test_a_dynamic_pool_is_one_series(workdir: Path, anyio_backend: str) -> None:
    """The children of a dynamic supervisor are summed under path="/pool/*"."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        conn = await running.connect()
        await conn.ok("start-child", supervisor="/pool", args={})
        await conn.ok("start-child", supervisor="/pool", args={})
        _, text = await get(port_of(running.daemon), "/metrics")
        assert value(text, "corral_child_up", path="/pool/*") == 2
        assert value(text, "corral_mailbox_capacity", path="/pool/*") == 2 * 1024
        assert value(text, "corral_children", supervisor="/pool", state="running") == 2
        paths = {dict(labels).get("path") for _, labels in samples(text)}
        assert not {p for p in paths if p and p.startswith("/pool/") and p != "/pool/*"}
        await conn.ok("kill", path="/pool/1")  # temporary: not restarted, gone
        await running.log.wait_for(ChildExited, "/pool/1")
        _, text = await get(port_of(running.daemon), "/metrics")
        assert value(text, "corral_child_exits_total", path="/pool/*", kind="error") == 1


async def test_removed_children_leave_no_series(workdir: Path, anyio_backend: str) -> None:
    """A deleted child's series, counters included, are gone from the next scrape."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/echo")
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        await conn.ok("terminate-child", path="/echo")
        await conn.ok("delete-child", path="/echo")
        _, text = await get(port_of(running.daemon), "/metrics")
        assert not [key for key in samples(text) if ("path", "/echo") in key[1]]
        assert value(text, "corral_child_up", path="/ticker") == 1


async def test_calls_and_handling_are_timed(workdir: Path, anyio_backend: str) -> None:
    """Every answered call is timed; one message in SAMPLE_EVERY per actor has its handling
    timed."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        echo = running.tree.lookup("/echo")
        for n in range(2 * SAMPLE_EVERY):
            assert await echo.call(n) == n
        _, text = await get(port_of(running.daemon), "/metrics")
        calls = value(text, "corral_call_duration_seconds_count", supervisor="/")
        handled = value(text, "corral_message_handling_seconds_count", supervisor="/")
        assert (calls, handled) == (2 * SAMPLE_EVERY, 2)
        assert value(text, "corral_messages_handled_total", path="/echo") == 2 * SAMPLE_EVERY
        inf = value(text, "corral_call_duration_seconds_bucket", supervisor="/", le="+Inf")
        assert inf == 2 * SAMPLE_EVERY


async def test_slow_clients_never_keep_a_probe_out(workdir: Path, anyio_backend: str) -> None:
    """However many connections others hold open without finishing a request, a probe is
    answered: past MAX_CLIENTS each new connection closes the oldest."""
    async with serving(make_daemon(workdir, anyio_backend, daemon=METRICS)) as running:
        port = port_of(running.daemon)
        slow = []
        for _ in range(3 * MAX_CLIENTS):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            slow.append(stream)
        try:
            assert await get(port, "/healthz") == (200, "ok: the event loop answers\n")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await slow[0].receive()  # the oldest was closed, unanswered
        finally:
            for stream in slow:
                await stream.aclose()
        await anyio.wait_all_tasks_blocked()
        assert await get(port, "/healthz") == (200, "ok: the event loop answers\n")


async def test_a_port_in_use_stops_the_start(workdir: Path, anyio_backend: str) -> None:
    """A metrics address already taken is a DaemonError that says what to change."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as taken:
        port = taken.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  # anyio
        daemon = make_daemon(workdir, anyio_backend, daemon=f'metrics-listen = "127.0.0.1:{port}"')
        with pytest.raises(DaemonError, match=rf"cannot listen for metrics on 127\.0\.0\.1:{port}"):
            await daemon.serve()
        assert not (workdir / "control.sock").exists()


async def test_census_counts_every_running_supervisors_children(
    workdir: Path, anyio_backend: str
) -> None:
    """Tree.census() counts the children of every running supervisor by state, as STATUS=."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/ticker")
        census = running.tree.census()
        assert census == {ChildStatus.RUNNING: 5, ChildStatus.STOPPED: 1}
        assert summary(census) == "5/6 running, 0 in backoff"


def test_status_line_counts_failed_children_only_when_there_are_some() -> None:
    """STATUS= says how many children are failed, and says nothing of it when none is."""
    census = {ChildStatus.RUNNING: 5, ChildStatus.FAILED: 2, ChildStatus.BACKOFF: 1}
    assert summary(census) == "5/8 running, 1 in backoff, 2 failed"
    assert summary({ChildStatus.RUNNING: 3}) == "3/3 running, 0 in backoff"
