"""Connection abuse of a real daemon, both backends, on the control socket and the HTTP
listener: more clients than allowed, slow writers, clients that never read, half-closed
sockets. Those within the rules are served, the rest are refused or dropped; once they have
all gone, the daemon holds the descriptors it held before, its memory has not grown, and it
answers as before."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from typing import TYPE_CHECKING

from tests.e2e.support import TIMEOUT, Daemon, Raw, write_config
from tests.reliability.conftest import SOAK, Footprint, Poller

if TYPE_CHECKING:
    from pathlib import Path

MAX_CONNECTIONS = 8
ROUNDS = 3 * SOAK
RSS_SLACK = 4 * 1024 * 1024

# Enough children that `status` and `/metrics` are answers worth not reading (tens of KiB).
TREE = "[supervisor]\n" + "".join(
    f'[[supervisor.children]]\nid = "w{n}"\nstart = "tests.e2e.actors:Echo"\n' for n in range(300)
)


def start(workdir: Path, backend: str, daemons: list[Daemon]) -> tuple[Daemon, str]:
    """A daemon with a small connection limit and a short idle timeout; its metrics URL."""
    config = write_config(
        workdir,
        TREE,
        daemon=f"max-connections = {MAX_CONNECTIONS}\nidle-timeout = 0.5\n"
        'metrics-listen = "127.0.0.1:0"',
    )
    config.write_text(config.read_text().replace('metrics-listen = ""\n', "", 1))
    d = Daemon.start(config, backend, wait_ready=False)
    daemons.append(d)
    url = d.wait_for(lambda r: r.get("event") == "metrics-listening")["url"]
    d.wait_for(lambda r: r.get("event") == "daemon-ready")
    return d, url


def healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=TIMEOUT) as page:  # noqa: S310
        return int(page.status)


def http_client(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def closed_by_daemon(sock: socket.socket) -> bool:
    """Whether the daemon has closed *sock* (after any answer it sent)."""
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return True


def abuse_the_control_socket(d: Daemon) -> None:
    # More clients than allowed: the one past the limit is told so, at once. The others
    # follow the events (a follower is never idle), so none is dropped meanwhile.
    idle = [Raw(d.socket) for _ in range(MAX_CONNECTIONS - 1)]  # the poller holds one more
    try:
        for client in idle:
            assert client.ask({"command": "events", "follow": True})["ok"] is True
        with Raw(d.socket) as extra:
            refused = extra.receive()
            assert refused is not None
            assert refused["error"]["code"] == "busy"
    finally:
        for client in idle:
            client.close()
    # A slow writer (half a request, then silence) and a non-reader (asks for the big
    # status, over and over, and reads nothing) are dropped after idle-timeout.
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(d.socket))
    slow.sendall(b'{"command": "sta')
    deaf = socket.socket(socket.AF_UNIX)
    deaf.connect(str(d.socket))
    deaf.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # its buffers fill: it stops being able to ask
        for _ in range(10_000):
            deaf.send(b'{"command": "status"}\n')
    deaf.setblocking(True)
    with slow, deaf:
        assert closed_by_daemon(slow)
        assert closed_by_daemon(deaf)
    # Half-closed: the request, then the client's end shut; the answer still comes.
    with socket.socket(socket.AF_UNIX) as half:
        half.connect(str(d.socket))
        half.sendall(b'{"command": "ping"}\n')
        half.shutdown(socket.SHUT_WR)
        half.settimeout(TIMEOUT)
        assert half.makefile("rb").readline().startswith(b'{"ok":true')


def abuse_the_http_listener(url: str) -> None:
    # Many clients with half a request head: the probe is still answered.
    slow = [http_client(url) for _ in range(100)]
    for client in slow:
        client.sendall(b"GET /metrics HTTP/1.1\r\n")
    assert healthz(url) == 200
    # Non-readers of /metrics and half-closed clients.
    deaf = [http_client(url) for _ in range(20)]
    for client in deaf:
        client.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    with http_client(url) as half:
        half.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        half.shutdown(socket.SHUT_WR)
        assert half.makefile("rb").readline().startswith(b"HTTP/1.1 200")
    assert healthz(url) == 200
    for client in slow + deaf:
        client.close()


def test_abused_connections_leave_nothing_behind(
    workdir: Path, backend: str, daemons: list[Daemon], measured: dict[str, object]
) -> None:
    """Rounds of abuse on both listeners: the daemon answers throughout, and afterwards holds
    the descriptors it held before and no more memory than allocator slack."""
    d, url = start(workdir, backend, daemons)
    assert healthz(url) == 200
    with Poller(d.socket, "/w0") as poller:
        abuse_the_control_socket(d)  # a first round: the daemon's caches warm up
        abuse_the_http_listener(url)
        before = Footprint.of(d)
        for _ in range(ROUNDS):
            abuse_the_control_socket(d)
            abuse_the_http_listener(url)
        after = Footprint.settled(d, fds=before.fds)
    assert poller.failure is None, poller.failure
    measured.update(rss_growth_kib=(after.rss - before.rss) // 1024, **poller.figures())
    assert after.fds <= before.fds
    assert after.rss - before.rss < RSS_SLACK
    assert healthz(url) == 200
    with Raw(d.socket) as client:
        assert client.ask({"command": "status", "path": "/w299"})["result"]["state"] == "running"
    assert d.stop() == 0
