"""A tree in a program of its own, observable as the daemon's: ``corral.open_tree``.

``open_tree(spec)`` runs a tree inside any async program. With ``control_socket=PATH`` it
also serves the daemon's control socket there, so ``corral --socket PATH status`` (and
``why``, ``events``, ``dead-letters``, ``start``/``stop``/``restart``/``kill``, the
dynamic-child commands, ``call``/``cast``, ``metrics``) answer for it exactly as for
``corral run``; with ``metrics_listen="HOST:PORT"`` it serves ``/metrics``, ``/healthz`` and
``/readyz`` as the daemon's listener does. What only a daemon has is refused with a clear
error: ``reload`` (there is no config file: the program changes its tree with
``Tree.reconfigure``) and ``shutdown`` (the program owns its tree: stop the program, or leave
the ``async with`` block). The socket is made as the daemon makes it (mode 0600, in a
directory only this user or root can write) and removed when the block ends.

The daemon's modules are imported only when one of the two is asked for, so a program that
asks for neither pays nothing for them.
"""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from corral.errors import UnsupportedError
from corral.supervisors.tree import open_tree as _open_tree
from corral.supervisors.tree import single_exception

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from corral.daemon import protocol
    from corral.daemon.commands import TreeCommands
    from corral.daemon.control import ControlServer
    from corral.daemon.endpoint import Endpoint
    from corral.supervisors.spec import SupervisorSpec
    from corral.supervisors.tree import Tree

__all__ = ("EmbeddedHost", "open_tree")


@asynccontextmanager
async def open_tree(
    spec: SupervisorSpec,
    *,
    control_socket: str | os.PathLike[str] | None = None,
    metrics_listen: str | None = None,
    **options: Any,
) -> AsyncIterator[Tree]:
    """Start *spec*'s tree and yield it (``corral.supervisors.tree.open_tree``: the other
    keyword arguments are its own); with *control_socket* and *metrics_listen*, serve the
    tree there as the daemon serves its own (see this module).

    Raises:
        DaemonError: the socket or the metrics address cannot be used (nothing started).
        ValueError: *metrics_listen* is not ``"host:port"``.
    """
    if control_socket is None and metrics_listen is None:
        async with _open_tree(spec, **options) as tree:
            yield tree
        return
    host = EmbeddedHost(spec, control_socket, metrics_listen)
    leaf: BaseException | None = None
    try:
        await host.bind()  # inside the try: a bind cut short is undone too
        observers = (*options.pop("observers", ()), *host.observers())
        host.on_open = options.pop("on_open", None)  # the caller's, called after the host's
        if metrics_listen is not None:
            options.setdefault("timings", True)  # handling times and call latencies: metrics
        async with anyio.create_task_group() as tg:
            host.serve(tg)
            try:
                async with _open_tree(
                    spec, observers=observers, on_open=host.opened, **options
                ) as tree:
                    host.up(tree)
                    try:
                        yield tree
                    finally:
                        host.stopping = True
            finally:
                host.up(None)
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the body's error comes out as itself
        leaf = single_exception(group)
        if leaf is None:
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await host.aclose()
    if leaf is not None:
        raise leaf


class EmbeddedHost:
    """What the control server and the metrics listener serve for an embedded tree."""

    def __init__(
        self,
        spec: SupervisorSpec,
        control_socket: str | os.PathLike[str] | None,
        metrics_listen: str | None,
    ) -> None:
        from corral.daemon.commands import TreeCommands
        from corral.daemon.config import DaemonConfig
        from corral.daemon.metrics import HostMetrics

        self.tree: Tree | None = None
        self._opened: Tree | None = None  # from the moment its boot begins
        self._up = anyio.Event()  # set once the tree is up, or stopping (the boot failed)
        self.stopping = False
        self.problem = None
        self.started_at = anyio.current_time()
        self.backend = sniffio.current_async_library()
        self.spec = spec
        self.settings = DaemonConfig(
            control_socket=None if control_socket is None else os.fspath(control_socket),
            metrics_listen=metrics_listen or "",
        )
        self._serve_socket = control_socket is not None
        self._address = _address(self.settings.metrics_listen)  # checked before anything
        self.commands: TreeCommands = TreeCommands(
            lambda: self.tree, lambda: spec, lambda: self.stopping
        )
        self.telemetry = HostMetrics(
            lambda: self._opened,
            self.commands.is_dynamic,
            self.commands.is_gone,
            lambda: {"version": self._version(), "backend": self.backend},
            self.unready,
        )
        self.counters = self.telemetry.counters
        self.on_open: Callable[[Tree], None] | None = None
        self.server: ControlServer | None = None
        self.endpoint: Endpoint | None = None

    @staticmethod
    def _version() -> str:
        from corral.daemon.commands import version_string

        return version_string()

    async def bind(self) -> None:
        """Make the socket and bind the metrics address, before anything starts.

        Raises:
            DaemonError: either cannot be used (another daemon serves the socket, its
                directory is unsafe, the port is taken...).
        """
        from corral.daemon.control import ControlServer, DaemonError
        from corral.daemon.endpoint import Endpoint

        address = self._address
        if self._serve_socket:
            self.server = ControlServer(self, self.settings, on_answer=self.counters.command)
            await self.server.bind()
        if address is not None:
            self.endpoint = Endpoint(*address, self.telemetry.pages())
            try:
                await self.endpoint.bind()
            except OSError as exc:
                await self.aclose()
                listen = self.settings.metrics_listen
                msg = f"cannot listen for metrics on {listen}: {exc.strerror or exc}"
                raise DaemonError(msg) from None

    def serve(self, tg: anyio.abc.TaskGroup) -> None:
        if self.server is not None:
            tg.start_soon(self.server.serve)
        if self.endpoint is not None:
            tg.start_soon(self.endpoint.serve)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.remove()
        if self.endpoint is not None:
            await self.endpoint.aclose()

    def observers(self) -> tuple[Any, ...]:
        """The recent-events ring (``corral events``) and the metrics counters."""
        return (self.commands.recent.append, self.counters.observe)

    def opened(self, tree: Tree) -> None:
        self._opened = tree
        if self.on_open is not None:
            self.on_open(tree)

    def unready(self) -> str | None:
        if self.tree is None:
            return "starting"
        if self.stopping:
            return "stopping"
        return self.commands.unready()

    # -- what the control server asks (control.Host) --------------------------------------

    def ping(self) -> protocol.Pong:
        from corral.daemon import protocol

        return protocol.Pong(
            version=self._version(),
            pid=os.getpid(),
            backend=self.backend,
            uptime=round(anyio.current_time() - self.started_at, 3),
            config=f"embedded in {sys.argv[0] or 'python'} (open_tree)",
        )

    def shutdown(self) -> protocol.Done:
        msg = (
            "this tree is embedded in a program (open_tree), which owns it: stop that program"
            f" (pid {os.getpid()}), or let it leave its `async with` block"
        )
        raise UnsupportedError(msg, supervisor="/", child_id="")

    def request_stop(self) -> None:  # pragma: no cover  # shutdown is refused first
        raise AssertionError

    async def reload(self, *, dry_run: bool) -> protocol.ReloadResult:
        msg = (
            "this tree is embedded in a program (open_tree): it has no config file to reload;"
            " the program changes it with Tree.reconfigure(old, new)"
        )
        raise UnsupportedError(msg, supervisor="/", child_id="")

    def up(self, tree: Tree | None) -> None:
        """The tree is up (None: it never will be, its boot failed or it is stopping)."""
        if tree is None:
            self.stopping = True
        else:
            self.tree = tree
        self._up.set()

    async def serving(self) -> Tree:
        await self._up.wait()  # booting: the answer waits for the boot, as the daemon's does
        tree = self.tree
        if tree is None:
            from corral.daemon.control import DaemonStoppingError

            msg = "the tree is stopping"
            raise DaemonStoppingError(msg)
        return tree

    def metrics(self) -> str:
        return self.telemetry.exposition().decode()


def _address(listen: str) -> tuple[str, int] | None:
    """``"host:port"`` as a pair, None for ""."""
    from corral.daemon.config import DaemonConfig, listen_problem

    problem = listen_problem(listen)
    if problem is not None:
        msg = f"metrics_listen: {problem}"
        raise ValueError(msg)
    return DaemonConfig(metrics_listen=listen).metrics_address()
