"""The control socket: a Unix stream socket speaking ``protocol``'s JSON lines.

Who may connect is decided twice: by the socket file's mode (0600, or 0660 with
``socket-group``) and, for each connection, by the peer's credentials (``SO_PEERCRED``: root,
the daemon's own user, ``allowed-uids``, and members of ``socket-group`` or
``allowed-gids``). A refused peer gets a ``forbidden`` error and is logged.

Nothing a client sends can hurt the daemon: a frame over ``MAX_FRAME``, invalid JSON, an
unknown command or wrong types get a ``bad_request`` error; a client silent for
``idle-timeout`` seconds, or one that does not read its answers, is disconnected; past
``max-connections`` new clients get ``busy``. Each connection is its own task. A command
waits only for the supervisor of the child it touches, and a stop not even for that (it runs
beside the supervisor's loop); ``status``, ``why`` and ``events`` never wait for a command.
"""

from __future__ import annotations

import array
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from corral.daemon import protocol, view
from corral.daemon.config import ConfigError
from corral.daemon.directory import open_directory
from corral.daemon.listener import accept
from corral.daemon.redact import Redactor
from corral.errors import (
    ActorCrashedError,
    ActorNotRunningError,
    AlreadyPresentError,
    AlreadyStartedError,
    CallTimeoutError,
    CorralError,
    MailboxFullError,
    MaxChildrenError,
    NoReplyError,
    NotFoundError,
    RestartingError,
    RunningError,
    SpecError,
    StartError,
    UnknownBreakerError,
    UnknownPathError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.daemon.commands import TreeCommands
    from corral.daemon.config import DaemonConfig
    from corral.supervisors.tree import Tree

__all__ = (
    "ControlServer",
    "DaemonError",
    "DaemonStoppingError",
    "Host",
    "NotConfiguredError",
    "Peer",
    "peer_of",
)

log = logging.getLogger("corral.control")
_GONE: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)  # client left
audit = logging.getLogger("corral.audit")

_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13


class DaemonError(CorralError):
    """The daemon cannot run as configured (e.g. another one serves the socket)."""


class DaemonStoppingError(CorralError):
    """The daemon began to stop while a command was under way; it was not carried out."""


class NotConfiguredError(CorralError):
    """The daemon runs without a tree: its config (or state directory) is unusable."""


_CODES: Final[tuple[tuple[type[Exception], protocol.Code], ...]] = (
    (CallTimeoutError, protocol.Code.TIMEOUT),
    (ActorCrashedError, protocol.Code.CRASHED),
    (NoReplyError, protocol.Code.NO_REPLY),
    (MailboxFullError, protocol.Code.MAILBOX_FULL),
    (NotFoundError, protocol.Code.NOT_FOUND),
    (UnknownPathError, protocol.Code.NOT_FOUND),
    (UnknownBreakerError, protocol.Code.NOT_FOUND),
    (RunningError, protocol.Code.RUNNING),
    (RestartingError, protocol.Code.RESTARTING),
    (AlreadyPresentError, protocol.Code.ALREADY_PRESENT),
    (AlreadyStartedError, protocol.Code.ALREADY_STARTED),
    (ActorNotRunningError, protocol.Code.NOT_RUNNING),
    (MaxChildrenError, protocol.Code.MAX_CHILDREN),
    (UnsupportedError, protocol.Code.UNSUPPORTED),
    (StartError, protocol.Code.START_FAILED),
    (ConfigError, protocol.Code.INVALID_CONFIG),
    (SpecError, protocol.Code.BAD_REQUEST),
    (DaemonStoppingError, protocol.Code.STOPPING),
    (NotConfiguredError, protocol.Code.INVALID_CONFIG),
)
_COMMANDS: Final = ", ".join(sorted(t.__struct_config__.tag for t in protocol.Request.__args__))


class Peer(msgspec.Struct, frozen=True):
    """Who is on the other end of a connection (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def peer_of(sock: socket.socket) -> Peer:
    """The credentials of *sock*'s peer, with its supplementary groups when Linux says."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * 256)
        groups = tuple(array.array("I", raw))
    except OSError:  # pragma: no cover  # older kernels: the primary group only
        pass
    return Peer(pid, uid, gid, groups)


def _error(code: protocol.Code, message: str) -> protocol.Response:
    return protocol.Response(ok=False, error=protocol.ErrorInfo(code, message))


class Host(Protocol):
    """What a control server serves: the daemon (``Daemon``), or an embedded tree
    (``corral.open_tree(..., control_socket=...)``)."""

    @property
    def problem(self) -> CorralError | None:
        """Why it runs no tree (not configured), or None."""
        ...

    @property
    def tree(self) -> Tree | None: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def commands(self) -> TreeCommands: ...

    def ping(self) -> protocol.Pong: ...

    def shutdown(self) -> protocol.Done:
        """The answer to `corral shutdown`; ``request_stop`` follows once it is sent."""
        ...

    def request_stop(self) -> None: ...

    async def reload(self, *, dry_run: bool) -> protocol.ReloadResult: ...

    async def serving(self) -> Tree:
        """The tree once it is up (at once if it is); raises if it never will be."""
        ...

    def metrics(self) -> str: ...


class ControlServer:
    """Serves one host's commands (a daemon's, an embedded tree's) on its control socket."""

    def __init__(
        self,
        host: Host,
        settings: DaemonConfig,
        on_answer: Callable[[str, str], None] | None = None,
    ) -> None:
        self.host = host
        self._on_answer = on_answer  # (command, "ok" or the error code): for metrics
        self.path = settings.socket_path()
        self._listener: anyio.abc.SocketListener | None = None
        self._sock: socket.socket | None = None
        self._dir: int | None = None  # the socket's directory, checked (directory.py)
        self._connections = 0
        self._bound = False
        self._socket_gids: set[int] = set()  # the socket file's group, when it may connect
        self.apply(settings)

    def apply(self, settings: DaemonConfig) -> None:
        """Serve by *settings* from now on (limits, who may connect, what is redacted); the
        socket itself is not moved."""
        self.settings = settings
        self._redact = Redactor(settings.redact)  # every frame sent: see redact.py
        self._uids = {0, os.getuid(), *settings.allowed_uids}
        self._gids = {*settings.allowed_gids, *self._socket_gids}

    # -- the socket file ----------------------------------------------------------------------

    async def bind(self, activated: socket.socket | None = None) -> None:
        """Create the socket, with its mode and group before it listens, or serve the
        *activated* one that systemd passed (its ``.socket`` unit sets path, mode and
        group; it is left in place at exit, for the next start).

        The daemon often runs as root, so nothing is done by a path another user could
        change: the socket's directory must be one only root or the daemon's user can write
        (``directory.open_directory``), and mode and group are set through that checked
        directory's descriptor (the group without following symlinks).

        Raises:
            DaemonError: another daemon serves it, the path is taken or unsafe, or it cannot
                be made.
        """
        settings = self.settings
        if activated is not None:
            name = activated.getsockname()
            name = name if isinstance(name, str) else os.fsdecode(name)
            if name.startswith("\0"):  # an abstract address: no file, no mode, no group
                self.path = Path("@" + name[1:])
            else:
                self.path = Path(name)
                with contextlib.suppress(OSError):
                    info = self.path.stat()
                    if info.st_mode & 0o060:  # the file's group may connect: so may its peers
                        self._socket_gids.add(info.st_gid)
                        self._gids.add(info.st_gid)
            log.info("control socket %s passed by systemd (socket activation)", self.path)
            self._listener = await anyio.abc.SocketListener.from_socket(activated)
            return
        gid = -1
        if settings.socket_group is not None:
            try:
                gid = grp.getgrnam(settings.socket_group).gr_gid
            except KeyError:  # checked with the config; deleted since
                msg = f"socket-group {settings.socket_group!r} does not exist: create it or fix it"
                raise DaemonError(msg) from None
        path = self.path
        try:
            self._dir = open_directory(path.parent, create=True, mode=0o755)
            self._clear_stale(path, self._dir, DaemonError)
        except OSError as exc:
            self.remove()
            msg = f"cannot serve the control socket {path}: {exc.strerror or exc}"
            raise DaemonError(msg) from None
        sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The path resolves as the walk did (every directory and symlink on it belongs to
            # root or us), so bind by it: `ss -xl` shows it as configured.
            sock.bind(os.fspath(path))
            self._bound = True
            # Mode and group before listen(): until then nobody can connect, whatever the
            # umask made of the file (no process-wide umask change, with threads about).
            os.chmod(path.name, settings.socket_mode, dir_fd=self._dir)
            if gid != -1:
                os.chown(path.name, -1, gid, dir_fd=self._dir, follow_symlinks=False)
            if settings.socket_mode & 0o060:  # the file's group may connect: so may its peers
                st = os.stat(path.name, dir_fd=self._dir, follow_symlinks=False)
                self._socket_gids.add(st.st_gid)
                self._gids.add(st.st_gid)
            sock.listen(128)
        except OSError as exc:
            self.remove()
            msg = f"cannot serve the control socket {path}: {exc.strerror or exc}"
            raise DaemonError(msg) from None
        self._listener = await anyio.abc.SocketListener.from_socket(sock)

    @staticmethod
    def _clear_stale(path: Path, directory: int, error: type[Exception]) -> None:
        try:
            mode = os.stat(path.name, dir_fd=directory, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            msg = f"{path} exists and is not a socket: remove it or choose another control-socket"
            raise error(msg)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            os.unlink(path.name, dir_fd=directory)  # left by a daemon that died: nobody listens
            return
        finally:
            probe.close()
        msg = f"another daemon already serves {path}: stop it, or choose another control-socket"
        raise error(msg)

    def remove(self) -> None:
        """Close the listening socket and remove its file (only if this server made it)."""
        if self._sock is not None:
            self._sock.close()  # closing twice (after the listener did) is harmless
        if self._bound:
            self._bound = False
            assert self._dir is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.name, dir_fd=self._dir)
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None

    # -- connections --------------------------------------------------------------------------

    async def serve(self) -> None:
        """Accept and serve connections until cancelled (when the daemon ends)."""
        listener = self._listener
        assert listener is not None  # bind() first
        async with anyio.create_task_group() as tg, listener:
            while True:
                stream = await accept(listener, "control socket", log)
                tg.start_soon(self._connection, stream)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610  # anyio, not Django
            try:
                peer = peer_of(sock)
                await self._serve_peer(stream, peer)
            except _GONE:
                pass  # the client went away: nothing to answer
            except Exception:  # one connection's failure must never stop the daemon
                log.exception("a control connection failed")

    async def _serve_peer(self, stream: anyio.abc.SocketStream, peer: Peer) -> None:
        if not self._allowed(peer):
            log.warning(
                "refused a control connection from uid %d (pid %d, gid %d): not root, the"
                " daemon's user, in allowed-uids, or in socket-group/allowed-gids",
                peer.uid,
                peer.pid,
                peer.gid,
                extra={"fields": {"event": "refused", "uid": peer.uid, "pid": peer.pid}},
            )
            await self._send(stream, _error(protocol.Code.FORBIDDEN, self._forbidden(peer)))
            return
        if self._connections >= self.settings.max_connections:
            log.warning("refused a control connection: %d already open", self._connections)
            message = (
                f"the daemon serves at most {self.settings.max_connections} connections"
                " (max-connections): try again"
            )
            await self._send(stream, _error(protocol.Code.BUSY, message))
            return
        self._connections += 1
        try:
            await self._converse(stream, peer)
        finally:
            self._connections -= 1

    def _allowed(self, peer: Peer) -> bool:
        return peer.uid in self._uids or bool(self._gids & {peer.gid, *peer.groups})

    def _forbidden(self, peer: Peer) -> str:
        group = self.settings.socket_group
        if group:
            grant = f"add that user to group {group!r} (usermod -aG {group} USER), or list"
        else:
            grant = "list"
        return (
            f"uid {peer.uid} may not use this daemon: {grant} it in allowed-uids in the"
            " daemon's config"
        )

    async def _converse(self, stream: anyio.abc.SocketStream, peer: Peer) -> None:
        reader = BufferedByteReceiveStream(stream)
        idle = self.settings.idle_timeout
        while True:
            frame: bytes | None = None
            with anyio.move_on_after(idle):
                try:
                    frame = await reader.receive_until(b"\n", protocol.MAX_FRAME)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                except anyio.DelimiterNotFound:
                    message = (
                        f"frame over {protocol.MAX_FRAME} bytes without a newline: closing"
                        " (one JSON request per line)"
                    )
                    await self._send(stream, _error(protocol.Code.BAD_REQUEST, message))
                    return
            if frame is None:
                message = f"idle for {idle:g} s (idle-timeout): closing"
                await self._send(stream, _error(protocol.Code.BAD_REQUEST, message))
                return
            if len(frame) >= protocol.MAX_FRAME:  # the newline came in the last chunk read
                message = f"frame over {protocol.MAX_FRAME} bytes: closing (one request per line)"
                await self._send(stream, _error(protocol.Code.BAD_REQUEST, message))
                return
            if not frame.strip():
                continue  # a blank line (a person pressing Enter in socat)
            try:
                request = protocol.decode_request(frame)
            except msgspec.DecodeError as exc:
                self._answered("invalid", protocol.Code.BAD_REQUEST)
                await self._send(stream, _error(protocol.Code.BAD_REQUEST, _bad_request(exc)))
                continue
            if isinstance(request, protocol.Events):
                try:
                    await self.host.serving()
                except CorralError as exc:
                    response = self._failure(request, exc)
                    assert response.error is not None
                    self._answered("events", response.error.code)
                    await self._send(stream, response)
                    continue
                self._answered("events", "ok")
                if request.follow:
                    await self._events(stream, reader, request.recent)
                    return
                recent = self.host.commands.recent_events(request.recent)
                await self._send(stream, protocol.Response(ok=True, result=recent))
                continue
            response = await self._answer(request, peer)
            try:
                await self._send(stream, response)
            finally:  # asked and audited: done even if the client did not wait for the answer
                if isinstance(request, protocol.Shutdown) and response.ok:
                    self.host.request_stop()

    async def _send(self, stream: anyio.abc.SocketStream, response: protocol.Response) -> None:
        """Send one frame; a client that does not read for idle-timeout is dropped."""
        with anyio.move_on_after(self.settings.idle_timeout) as scope:
            await stream.send(self._redact.encoded(protocol.encode(response)))
        if scope.cancelled_caught:
            raise anyio.BrokenResourceError  # treated as the client going away

    async def _answer(self, request: protocol.Request, peer: Peer) -> protocol.Response:
        try:
            result = await self._dispatch(request)
            response = protocol.Response(ok=True, result=result)
        except Exception as exc:  # every error becomes an answer; the daemon goes on
            response = self._failure(request, exc)
        error = response.error
        self._answered(_tag(request), "ok" if error is None else error.code)
        if isinstance(request, protocol.CHANGES) and not getattr(request, "dry_run", False):
            outcome = "ok" if error is None else f"error {error.code}"
            failures = getattr(response.result, "failures", None)
            if failures:  # a reload applied, but not whole
                outcome = f"ok, {len(failures)} failed to start"
            fields = msgspec.structs.asdict(request)
            if "message" in fields:  # an application message may hold secrets: its size only
                fields["message"] = _Summary(len(protocol.encode_value(fields["message"])))
            audit.info(
                "audit: uid %d (pid %d) %s %s: %s",
                peer.uid,
                peer.pid,
                _tag(request),
                " ".join(f"{k}={v!r}" for k, v in fields.items()),
                outcome,
                extra={
                    "fields": {
                        "event": "audit",
                        "uid": peer.uid,
                        "pid": peer.pid,
                        "command": _tag(request),
                        "path": fields.get("path") or fields.get("supervisor"),
                        "result": outcome,
                    }
                },
            )
        return response

    def _answered(self, command: object, result: str) -> None:
        if self._on_answer is not None:
            self._on_answer(str(command), result)

    def _failure(self, request: protocol.Request, exc: Exception) -> protocol.Response:
        host = self.host
        if host.problem is not None and isinstance(exc, ConfigError):
            message = f"{exc} (the daemon is still not configured)"
            return _error(protocol.Code.INVALID_CONFIG, message)
        if not isinstance(exc, NotConfiguredError | DaemonStoppingError) and (
            host.tree is None or (host.stopping and isinstance(exc, UnknownPathError))
        ):
            return _error(protocol.Code.STOPPING, f"the daemon is stopping: {exc}")
        for kind, code in _CODES:
            if isinstance(exc, kind):
                return _error(code, str(exc))
        if isinstance(exc, CorralError):  # pragma: no cover  # every CorralError is mapped
            return _error(protocol.Code.INTERNAL, str(exc))
        # the request's type only: its fields may be an application message (secrets)
        log.exception("internal error while answering a %s request", _tag(request))
        return _error(protocol.Code.INTERNAL, f"internal error: {exc!r} (see the daemon's log)")

    async def _dispatch(self, request: protocol.Request) -> object:  # one per command
        host = self.host
        match request:  # answered in every phase
            case protocol.Ping():
                return host.ping()
            case protocol.Shutdown():
                return host.shutdown()
            case protocol.Reload(dry_run=dry_run):
                return await host.reload(dry_run=dry_run)
        await host.serving()  # the rest waits for the tree
        commands = host.commands
        match request:
            case protocol.Status(path=path):
                return commands.status(path)
            case protocol.Why(path=path):
                return commands.why(path)
            case protocol.DeadLetters(path=path, limit=limit):
                return commands.dead_letters(path, limit)
            case protocol.Start(path=path):
                return await commands.start(path)
            case protocol.Stop(path=path):
                return await commands.stop(path)
            case protocol.Restart(path=path):
                return await commands.restart(path)
            case protocol.Kill(path=path, reason=reason):
                return await commands.kill(path, reason)
            case protocol.StartChild(supervisor=supervisor, id=child_id, args=args, wait=wait):
                return await commands.start_child(supervisor, child_id, args, wait)
            case protocol.TerminateChild(path=path):
                return await commands.terminate_child(path)
            case protocol.DeleteChild(path=path):
                return await commands.delete_child(path)
            case protocol.Metrics():
                return host.metrics()
            case protocol.CallActor(path=path, message=message, timeout=timeout):
                return await commands.call(path, message, timeout)
            case protocol.CastActor(path=path, message=message):
                return await commands.cast(path, message)
            case protocol.Breakers(path=path):
                return commands.breakers(path)
            case protocol.BreakerAction(path=path, name=name, action=action):
                return commands.breaker(path, name, action)
        raise AssertionError(request)  # Events is handled by the connection

    async def _events(
        self, stream: anyio.abc.SocketStream, reader: BufferedByteReceiveStream, recent: int
    ) -> None:
        """The *recent* events, then every new one until the client closes its end (or stops
        reading). Subscribed first, so that no event falls between the two."""
        tree = self.host.tree
        assert tree is not None
        async with tree.events.stream() as events, anyio.create_task_group() as tg:
            result = self.host.commands.recent_events(recent)
            await self._send(stream, protocol.Response(ok=True, result=result))

            async def until_closed() -> None:
                with contextlib.suppress(anyio.EndOfStream, *_GONE):
                    while await reader.receive():
                        pass  # anything sent now is ignored
                tg.cancel_scope.cancel()

            tg.start_soon(until_closed)
            with contextlib.suppress(*_GONE):
                async for event in events:
                    with anyio.move_on_after(self.settings.idle_timeout) as scope:
                        await stream.send(self._redact.encoded(protocol.encode(view.event(event))))
                    if scope.cancelled_caught:
                        break  # a client that does not read: drop it
            tg.cancel_scope.cancel()


def _tag(request: protocol.Request) -> str:
    return str(type(request).__struct_config__.tag)


class _Summary:
    """What the audit log says of an application message: its size, not its content."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<JSON, {self.size} bytes>"


def _bad_request(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if "`$.command`" in text or "missing required field `command`" in text:
        return f"unknown or missing command ({text}); commands: {_COMMANDS}"
    return f"invalid request: {text}"
