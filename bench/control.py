"""The daemon over its control socket: status latency, commands per second, memory.

corral: a real ``corral run`` subprocess on a generated config of ``n`` actors (100
supervisors of ``n / 100`` ``corral.demo:Echo`` workers each), driven by a client in this
process over the real Unix socket, one request at a time, as ``corral`` sends them.

Baseline (``python -m bench.control --raw BACKEND N PAYLOAD PATH``): a server written
directly on asyncio (``asyncio.start_unix_server``) or trio (``trio.serve_listeners`` over a
``trio.socket`` Unix socket) that holds ``n`` idle tasks, each awaiting its own queue (the
actors' floor), and answers each request line with a pre-built reply of the same size as
corral's. It is the cost of moving the same bytes through
the same socket on the bare backend; what corral adds is decoding, dispatch, the snapshot of
the tree and its encoding.

Memory is each process's resident set (``psutil``) once it is ready and idle.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import psutil
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("Measured", "measure_corral", "measure_raw", "write_config")

GROUPS: Final = 100


@attrs.frozen
class Measured:
    status_latencies: list[float]  # seconds per full-tree status round trip
    status_bytes: int
    pings_per_second: float
    commands_per_second: float  # restart of an idle actor (stop + start), corral only
    rss: int  # bytes


def write_config(directory: Path, n: int, backend: str, metrics_listen: str = "") -> Path:
    """The benchmarks' daemon config: *n* Echo workers under 100 supervisors."""
    per_group = max(1, n // GROUPS)
    lines = [
        "[daemon]",
        f'control-socket = "{directory / "control.sock"}"',
        f'state-directory = "{directory / "state"}"',
        f'metrics-listen = "{metrics_listen}"',
        'log-format = "json"',
        'log-level = "warning"',
        f'backend = "{backend}"',
        "[supervisor]",
    ]
    for g in range(GROUPS):
        lines += [
            "[[supervisor.children]]",
            f'id = "g{g}"',
            'type = "supervisor"',
            "children = [",
            *(f'  {{ id = "w{w}", start = "corral.demo:Echo" }},' for w in range(per_group)),
            "]",
        ]
    path = directory / "corral.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class _Line:
    """A blocking line client (what the CLI does)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.fspath(path))
        self.file = self.sock.makefile("rb")

    def ask(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.file.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"the server exited with {proc.returncode}"
            raise RuntimeError(msg)
        try:
            _Line(path).close()
        except OSError:
            time.sleep(0.05)  # startup only: not part of any measurement
        else:
            return
    msg = "the server did not start within 600 s"
    raise RuntimeError(msg)


def _drive(path: Path, status: bytes, statuses: int, pings: int) -> Iterator[float | int]:
    client = _Line(path)
    try:
        size = len(client.ask(status))
        yield size
        latencies = []
        for _ in range(statuses):
            began = time.perf_counter()
            reply = client.ask(status)
            latencies.append(time.perf_counter() - began)
            assert len(reply) > 2
        yield from latencies
        began = time.perf_counter()
        for _ in range(pings):
            client.ask(b'{"command":"ping"}\n')
        yield pings / (time.perf_counter() - began)
    finally:
        client.close()


def measure_corral(backend: str, n: int, statuses: int, pings: int, commands: int) -> Measured:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        directory = Path(tmp)
        config = write_config(directory, n, backend)
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            sock = directory / "control.sock"
            _wait_for_socket(sock, proc)
            results = list(_drive(sock, b'{"command":"status"}\n', statuses, pings))
            size, latencies, rate = int(results[0]), results[1:-1], results[-1]
            client = _Line(sock)
            request = b'{"command":"restart","path":"/g0/w0"}\n'
            began = time.perf_counter()
            for _ in range(commands):
                reply = json.loads(client.ask(request))
                assert reply["ok"], reply
            command_rate = commands / (time.perf_counter() - began)
            client.close()
            rss = psutil.Process(proc.pid).memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=600)
    return Measured(latencies, size, rate, command_rate, rss)


def measure_raw(backend: str, n: int, payload: int, statuses: int, pings: int) -> Measured:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        sock = Path(tmp) / "raw.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.control", "--raw", backend, str(n), str(payload), sock],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_for_socket(sock, proc)
            results = list(_drive(sock, b"status\n", statuses, pings))
            latencies, rate = results[1:-1], results[-1]
            rss = psutil.Process(proc.pid).memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=600)
    return Measured(latencies, payload, rate, math.nan, rss)


# -- the raw servers (run in their own process) ---------------------------------------------


async def _asyncio_server(n: int, payload: int, path: str) -> None:
    reply = b"x" * (payload - 1) + b"\n"
    queues = [asyncio.Queue[object](1024) for _ in range(n)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(reply if line.startswith(b"status") else b'{"ok":true}\n')
            await writer.drain()
        writer.close()

    async with asyncio.TaskGroup() as tg:
        for q in queues:
            tg.create_task(q.get())
        server = await asyncio.start_unix_server(serve, path, limit=2**20)
        async with server:
            await server.serve_forever()


async def _trio_server(n: int, payload: int, path: str) -> None:
    reply = b"x" * (payload - 1) + b"\n"

    async def actor(receive: trio.MemoryReceiveChannel[object]) -> None:
        await receive.receive()

    async def serve(stream: trio.SocketStream) -> None:
        buffer = b""
        while data := await stream.receive_some(65536):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                await stream.send_all(reply if line.startswith(b"status") else b'{"ok":true}\n')

    channels = [trio.open_memory_channel[object](1024) for _ in range(n)]
    listener_sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener_sock.bind(path)
    listener_sock.listen(128)
    listener = trio.SocketListener(listener_sock)
    async with trio.open_nursery() as nursery:
        for _, receive in channels:
            nursery.start_soon(actor, receive)
        await trio.serve_listeners(serve, [listener])


if __name__ == "__main__":
    _, flag, backend, count, size, where = sys.argv
    assert flag == "--raw"
    if backend == "asyncio":
        asyncio.run(_asyncio_server(int(count), int(size), where))
    else:
        trio.run(_trio_server, int(count), int(size), where)
