"""The HTTP listener for Prometheus and probes: ``/metrics``, ``/healthz``, ``/readyz``.

A minimal HTTP/1.x server on the daemon's own event loop (GET and HEAD, one request per
connection): the snapshot behind ``/metrics`` is taken on the loop that owns the tree, with no
thread touching it, and ``/healthz`` is answered by that same loop, so a loop that is blocked
does not answer at all, which is what a liveness probe must see. Requests are bounded (8 KiB
of head, ``REQUEST_TIMEOUT`` to send it), anything else gets a plain 4xx, and a failed accept
(out of file descriptors) is retried, never fatal.

Any local user can connect, so slow clients must not starve the probes: at most
``MAX_CLIENTS`` connections are kept, and a new one past that closes the oldest client still
sending its request head, else the oldest whose answer has been written for more than
``ANSWER_GRACE`` (it does not read it); an answer being written to a client that reads it is
never cut. A probe, which sends its request at once and reads its answer, is served whatever
number of idle connections others hold open.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
import anyio.streams.stapled
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from corral.daemon.listener import accept

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("Endpoint", "Page", "text_page")

log = logging.getLogger("corral.metrics")

MAX_HEAD: Final = 8192
MAX_CLIENTS: Final = 64  # kept at once; a new one past that closes the oldest
REQUEST_TIMEOUT: Final = 10.0
_GONE: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS_5XX: Final = {500: "Internal Server Error", 503: "Service Unavailable"}

ANSWER_GRACE: Final = 1.0  # seconds an answer may take to be read before its client counts as slow


@attrs.define
class _Client:
    """One connection: its scope (cancelled to evict it) and when its answer began."""

    scope: anyio.CancelScope
    answering: float | None = None  # still sending its request head while None


# A page: (status, content type, body), made when asked.
Page = tuple[int, str, bytes]


class Endpoint:
    """Serves *pages* (path -> function making the page) on a TCP address."""

    def __init__(self, host: str, port: int, pages: Mapping[str, Callable[[], Page]]) -> None:
        self.host = host
        self.port = port
        self.pages = pages
        self._listener: anyio.streams.stapled.MultiListener[anyio.abc.SocketStream] | None = None
        self._clients: dict[int, _Client] = {}  # by arrival: the oldest first
        self._arrivals = 0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def bind(self) -> None:
        """Listen now (so that a port in use is an error at start, not later).

        Raises:
            OSError: the address cannot be listened on (taken, not local...).
        """
        listener = self._listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port
        )
        if self.port == 0:  # tests ask for a free port
            first = listener.listeners[0]
            self.port = first.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  # anyio

    async def aclose(self) -> None:
        """Stop listening (done by ``serve`` when cancelled; needed if it never ran)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    async def serve(self) -> None:
        listener = self._listener
        assert listener is not None  # bind() first
        try:
            async with anyio.create_task_group() as tg:
                for one in listener.listeners:
                    assert isinstance(one, anyio.abc.SocketListener)  # create_tcp_listener's
                    tg.start_soon(self._accept, one, tg)
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def _accept(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        """Accept forever; past ``MAX_CLIENTS`` the oldest client is closed, and a failed
        accept (no file descriptors left, say) is logged and retried, never fatal."""
        while True:
            stream = await accept(listener, "metrics listener", log)
            if len(self._clients) >= MAX_CLIENTS and not self._evict():
                await stream.aclose()  # every client is being answered: this one waits its turn
                continue
            self._arrivals += 1  # here, not in the task: the next accept must see it
            client = self._clients[self._arrivals] = _Client(anyio.CancelScope())
            tg.start_soon(self._connection, stream, self._arrivals, client)

    def _evict(self) -> bool:
        """Close the oldest client still sending its request, else the oldest that has not
        read its answer for ANSWER_GRACE; False if every client is being answered."""
        now = anyio.current_time()
        slow = [n for n, c in self._clients.items() if c.answering is None]
        if not slow:
            slow = [
                n
                for n, c in self._clients.items()
                if c.answering is not None and now - c.answering > ANSWER_GRACE
            ]
        if not slow:
            return False
        self._clients.pop(slow[0]).scope.cancel()
        return True

    async def _connection(
        self, stream: anyio.abc.SocketStream, arrival: int, client: _Client
    ) -> None:
        try:
            with client.scope, contextlib.suppress(*_GONE):
                async with stream:
                    page, head_only = await self._read(stream)
                    client.answering = anyio.current_time()
                    await self._respond(stream, page, head_only=head_only)
        finally:
            self._clients.pop(arrival, None)

    async def _read(self, stream: anyio.abc.SocketStream) -> tuple[Page, bool]:
        reader = BufferedByteReceiveStream(stream)
        head = None
        with anyio.move_on_after(REQUEST_TIMEOUT):
            with contextlib.suppress(
                anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound
            ):
                head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD)
        if head is None:
            return text_page(400, "incomplete request head (at most 8 KiB, within 10 s)\n"), False
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return text_page(400, f"not an HTTP/1.x request line: {line[:100]!r}\n"), False
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return text_page(405, f"{method} is not served: use GET\n"), False
        make = self.pages.get(path)
        if make is None:
            known = ", ".join(sorted(self.pages))
            return text_page(404, f"no page {path!r}: try {known}\n"), method == "HEAD"
        try:
            return make(), method == "HEAD"
        except Exception:  # a bug, or the system refusing (e.g. /proc hidden): say so, go on
            log.exception("cannot make the page %s", path)
            return text_page(500, "internal error making this page: see the daemon's log\n"), False

    async def _respond(
        self, stream: anyio.abc.SocketStream, page: Page, *, head_only: bool
    ) -> None:
        status, content_type, body = page
        reason = _REASONS.get(status) or _REASONS_5XX.get(status, "")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        with anyio.move_on_after(REQUEST_TIMEOUT):
            await stream.send(head if head_only else head + body)


def text_page(status: int, text: str) -> Page:
    """A plain-text page."""
    return status, "text/plain; charset=utf-8", text.encode()
