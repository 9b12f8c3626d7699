"""Prometheus scrapes of the daemon: time per ``/metrics`` and exposition size, ``n`` actors.

corral: a real ``corral run`` subprocess on the control benchmark's tree (100 supervisors of
``n / 100`` workers, every one with its own series), scraped over HTTP on loopback the way
Prometheus does, one scrape at a time. The collection runs at scrape time: the tree's
snapshot, the families, the text format.

Baseline (``python -m bench.scrape --raw BACKEND N SIZE PORT``): an HTTP server written
directly on asyncio (``asyncio.start_server``) or trio (``trio.serve_tcp``) that holds ``n``
idle tasks and answers every request with a pre-built body of the same size: the cost of
moving the same bytes over the same kind of connection, with nothing to collect.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import attrs
import trio

from bench.control import write_config

__all__ = ("Scraped", "measure_corral", "measure_raw")

HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"


@attrs.frozen
class Scraped:
    latencies: list[float]  # seconds per scrape, request to last byte
    size: int  # bytes of exposition


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> bytes:
    """One GET /metrics; the body."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        chunks = []
        while chunk := conn.recv(1 << 20):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"the server exited with {proc.returncode}"
            raise RuntimeError(msg)
        try:
            body = _scrape(port)
        except (OSError, AssertionError):
            body = b""
        if b"corral_ready 0" not in body and body:  # the tree has started (or raw)
            return
        time.sleep(0.05)  # startup only: not part of any measurement
    msg = "the server did not answer within 600 s"
    raise RuntimeError(msg)


def _measure(port: int, scrapes: int) -> Scraped:
    size = len(_scrape(port))  # also a warm-up
    latencies = []
    for _ in range(scrapes):
        began = time.perf_counter()
        _scrape(port)
        latencies.append(time.perf_counter() - began)
    return Scraped(latencies, size)


def measure_corral(backend: str, n: int, scrapes: int) -> Scraped:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        port = _free_port()
        config = write_config(Path(tmp), n, backend, f"127.0.0.1:{port}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(port, proc)
            return _measure(port, scrapes)
        finally:
            proc.terminate()
            proc.wait(timeout=600)


def measure_raw(backend: str, n: int, size: int, scrapes: int) -> Scraped:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.scrape", "--raw", backend, str(n), str(size), str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait(port, proc)
        return _measure(port, scrapes)
    finally:
        proc.terminate()
        proc.wait(timeout=600)


# -- the raw servers (run in their own process) ---------------------------------------------


def _response(size: int) -> bytes:
    body = b"x" * size
    return HEAD + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode() + body


async def _asyncio_server(n: int, size: int, port: int) -> None:
    response = _response(size)
    queues = [asyncio.Queue[object](1024) for _ in range(n)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    async with asyncio.TaskGroup() as tg:
        for q in queues:
            tg.create_task(q.get())
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        async with server:
            await server.serve_forever()


async def _trio_server(n: int, size: int, port: int) -> None:
    response = _response(size)

    async def actor(receive: trio.MemoryReceiveChannel[object]) -> None:
        await receive.receive()

    async def serve(stream: trio.SocketStream) -> None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive_some(65536)
        await stream.send_all(response)
        await stream.aclose()

    channels = [trio.open_memory_channel[object](1024) for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for _, receive in channels:
            nursery.start_soon(actor, receive)
        await trio.serve_tcp(serve, port, host="127.0.0.1")


if __name__ == "__main__":
    _, flag, backend, count, size, port = sys.argv
    assert flag == "--raw"
    if backend == "asyncio":
        asyncio.run(_asyncio_server(int(count), int(size), int(port)))
    else:
        trio.run(_trio_server, int(count), int(size), int(port))
