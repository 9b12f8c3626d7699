"""``corral run``: the tree from a config file, kept alive, steered over the control socket.

The daemon is one task group: the control server, the signal handler, the probes and the
tree (``open_tree``). It stops when told to (SIGTERM, SIGINT, ``corral shutdown``) or when the
root supervisor ends on its own; either way the tree stops in reverse start order first. Exit
codes (``ExitCode``) are documented in the README so that systemd's ``Restart=`` and
``RestartPreventExitStatus=`` can tell a crash from a bad config.

Its life has phases, and signals are acted on in every one of them:

- *booting*: the children start in order; commands wait for the boot (a ``status`` that
  started the daemon through socket activation is answered once the tree is up). A SIGTERM
  cancels the boot: the child still starting is stopped by its shutdown policy and those
  started before it stop in reverse order.
- *running*: commands are served; SIGHUP reloads.
- *stopping*: the tree stops in reverse order; a second SIGTERM or SIGINT forces it.
- *not configured*: under socket activation only, when the config (or the state directory, or
  the metrics address) is unusable at start. Restarting cannot fix that, and exiting would make
  every CLI call start a daemon that exits again until systemd's start limit locks the socket
  unit out. So the daemon stays up, answers every command with ``invalid_config`` and the
  reason, and starts the tree when a ``corral reload`` (``systemctl reload``, SIGHUP) finds
  the file fixed.

The process always exits, within the documented bounds: once the tree has stopped, a child
that was abandoned (it shields itself from cancellation, and Python cannot kill a task) is
named in the log and left behind, and so is anything a forced stop could not end at once.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import gc
import logging
import math
import os
import signal
import threading
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import attrs

from corral.actors.registry import join_path
from corral.daemon import protocol
from corral.daemon.commands import TreeCommands, version_string
from corral.daemon.config import (
    DEMO,
    ConfigError,
    DaemonConfig,
    LoadedConfig,
    load,
    load_demo,
)
from corral.daemon.control import (
    ControlServer,
    DaemonError,
    DaemonStoppingError,
    NotConfiguredError,
)
from corral.daemon.endpoint import Endpoint
from corral.daemon.logging import LogSink, describe_daemon, log_event
from corral.daemon.loop import LoopMonitor
from corral.daemon.metrics import Counters, HostMetrics
from corral.daemon.state import StateError, StateFile
from corral.daemon.systemd import STATUS_EVERY, Notifier, activated_socket, summary
from corral.errors import (
    CorralError,
    StartError,
    SupervisorGaveUpError,
)
from corral.supervisors.events import ChildAbandoned, SupervisorAutoShutdown
from corral.supervisors.levels import ServiceLevel, ServiceStatus
from corral.supervisors.reconfigure import declared_paths, plan_tree
from corral.supervisors.spec import (
    DynamicSupervisorSpec,
    SupervisorSpec,
    stop_bound,
)
from corral.supervisors.tree import open_tree

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Awaitable, Callable

    from corral.supervisors.events import Event, Observer
    from corral.supervisors.tree import Tree

__all__ = ("Daemon", "DaemonError", "ExitCode", "run", "version_string")

log = logging.getLogger("corral.daemon")
LOAD_TIMEOUT: Final = 60.0  # seconds a reload waits for its file to be read, modules imported


class ExitCode(enum.IntEnum):
    """``corral run``'s exit status (systemd shows 2, 6 and 69 by their names)."""

    OK = 0  # stopped as asked (signal, `corral shutdown`), or the root shut down normally
    INTERNAL = 1  # a bug, or the control socket could not be served: see the log
    USAGE = 2  # bad command line
    CONFIG = 6  # LSB "not configured": invalid config or unusable state directory
    TREE_FAILED = 69  # EX_UNAVAILABLE: a child failed to start, or the root gave up


@attrs.define(eq=False)
class Daemon:
    """One daemon: its config, its tree once started, and the operator's commands.

    *loaded* is None while the daemon is not configured (``problem`` says why); so is *state*.
    """

    loaded: LoadedConfig | None
    config_path: str | None  # None: the embedded demo
    state: StateFile | None
    backend: str
    problem: CorralError | None = None  # not configured: why (socket activation only)
    activated: socket.socket | None = None  # the control socket passed by systemd
    sink: LogSink | None = None  # the log, written in batches (None: records as they come)
    tree: Tree | None = None
    started_at: float = 0.0
    exit_code: ExitCode = ExitCode.OK
    _stop: anyio.Event = attrs.field(factory=anyio.Event)
    _stopping: bool = False
    _reloading: anyio.Lock = attrs.field(factory=anyio.Lock)
    _unsaved: StateError | None = None  # the last save of the held paths failed so
    settings: DaemonConfig = attrs.field(init=False)  # in use: [daemon] is read at start only
    commands: TreeCommands = attrs.field(init=False)  # what the control socket's requests do
    notifier: Notifier = attrs.field(factory=Notifier)
    telemetry: HostMetrics = attrs.field(init=False)  # counters, the tree's and psutil's figures
    counters: Counters = attrs.field(init=False)  # the telemetry's: fed by events and commands
    monitor: LoopMonitor = attrs.field(init=False)
    endpoint: Endpoint | None = None  # the metrics listener, once bound
    server: ControlServer | None = None
    _metrics: anyio.CancelScope | None = None  # the metrics listener's, while it serves
    _booting: bool = True  # until the whole tree has started
    _boot: anyio.CancelScope | None = None  # the boot's, while it runs: a stop cancels it
    _reload_after_boot: bool = False  # a SIGHUP came during the boot
    _tree_opened: Tree | None = None  # from the moment its boot begins (self.tree: once up)
    _shut_down: bool = False  # the root shut down by itself (auto-shutdown): a clean end
    _configuring: _Configuring | None = None  # a reload that found the file fixed
    _transition: anyio.Event = attrs.field(factory=anyio.Event)  # set at each change of phase
    _probes: anyio.abc.TaskGroup | None = None  # tasks that live as long as serve()
    _abandoned: list[str] = attrs.field(factory=list)  # paths, in the order abandoned
    _status_changed: anyio.Event = attrs.field(factory=anyio.Event)
    _level: ServiceLevel | None = None  # the service level last logged
    _window: tuple[SupervisorSpec | None, float] = (None, 0.0)  # _progress_window's, per spec
    exit_now: Callable[[int], None] = attrs.field(factory=lambda: _hard_exit)  # tests replace it
    load_timeout: float = LOAD_TIMEOUT  # a reload gives up on reading its file after this

    @property
    def spec(self) -> SupervisorSpec:
        assert self.loaded is not None  # asked only once configured
        return self.loaded.spec

    def _running_spec(self, spec: SupervisorSpec, path: str = "/") -> SupervisorSpec:
        """*spec* without the declared children deleted at run time (``delete-child``, a
        temporary child's end), so that a reload of the file brings them back."""
        try:
            present = {info.id for info in self._tree().supervisor(path).which_children()}
        except CorralError:
            return spec  # not running: its parent's plan carries its spec
        children = []
        for child in spec.children:
            if child.id not in present:
                continue
            if isinstance(child.start, SupervisorSpec):
                child = attrs.evolve(
                    child, start=self._running_spec(child.start, join_path(path, child.id))
                )
            children.append(child)
        return attrs.evolve(spec, children=children)

    # -- life ---------------------------------------------------------------------------------

    def __attrs_post_init__(self) -> None:
        self.settings = self.loaded.daemon if self.loaded is not None else DaemonConfig()
        self.commands = TreeCommands(
            lambda: self.tree,
            lambda: self.spec,
            lambda: self._stopping,
            self._unsaved_warning,
            ready_when=ServiceLevel(self.settings.ready_when),
        )
        self.telemetry = HostMetrics(
            lambda: self.tree,
            self.commands.is_dynamic,
            self.commands.is_gone,
            lambda: {"version": version_string(), "backend": self.backend},
            self.unready,
        )
        self.counters = self.telemetry.counters
        self.monitor = LoopMonitor(self.counters, self.settings.loop_stall_timeout)

    def unready(self) -> str | None:
        """Why /readyz says 503, or None when ready: the tree has started, the daemon is not
        stopping, no child is failed, and the root supervisor is not at the end of its
        restart budget."""
        tree = self.tree
        if self.problem is not None:
            return "not configured"
        if tree is None or self._booting:
            return "starting"
        if self._stopping:
            return "stopping"
        return self.commands.unready()

    def ready(self) -> bool:
        return self.unready() is None

    def metrics(self) -> str:
        """The Prometheus exposition, as `/metrics` serves it."""
        return self.telemetry.exposition().decode()

    def observers(self) -> tuple[Observer, ...]:
        """What the daemon attaches to its tree's events: the log, the recent-events ring,
        the metrics counters, and its own bookkeeping (systemd, abandoned children)."""
        log = log_event if self.sink is None else self.sink.observe
        return (log, self.commands.recent.append, self.counters.observe, self._observe)

    def _observe(self, event: Event) -> None:
        """Keeps systemd informed: progress while booting or stopping, and the STATUS line;
        and notes the children abandoned (named when the daemon exits without them)."""
        if isinstance(event, ChildAbandoned) and event.path not in self._abandoned:
            self._abandoned.append(event.path)
        elif isinstance(event, SupervisorAutoShutdown) and event.path == "/":
            self._shut_down = True
        notifier = self.notifier
        if notifier.enabled and (self._booting or self._stopping):
            notifier.extend(self._progress_window())
        self._status_changed.set()  # STATUS= and the service level, soon

    def _progress_window(self) -> float:
        """How much more systemd should wait after each child that starts or stops (worked
        out once per config: it is asked at every event of a boot or a stop)."""
        spec, window = self._window
        if spec is not self.spec:
            window = self._longest_progress_window()
            self._window = (self.spec, window)
        return window

    def _longest_progress_window(self) -> float:
        longest = 0.0
        specs = list(self.spec.children)
        while specs:
            child = specs.pop()
            bound = stop_bound(child)
            if bound != math.inf:
                longest = max(longest, bound)
            start = child.start
            if isinstance(start, SupervisorSpec):
                specs.extend(start.children)
            elif isinstance(start, DynamicSupervisorSpec):
                specs.append(start.child)
        return max(self.settings.progress_timeout, longest + 5.0)

    async def _keep_status(self) -> None:
        """STATUS= and the service level follow the tree, at most once a second: a change of
        level is logged (its own journal entry, ``service-level``)."""
        while True:
            await self._status_changed.wait()
            self._status_changed = anyio.Event()
            tree = self.tree
            if tree is not None and not self._stopping:
                level = self.commands.service_status()
                self._level_is(level)
                self.notifier.status(summary(tree.census(), level.level))
            await anyio.sleep(STATUS_EVERY)

    def _level_is(self, level: ServiceStatus) -> None:
        before, self._level = self._level, level.level
        if before is not None and before is not level.level:
            worse = level.level.rank > before.rank
            log.log(
                logging.WARNING if worse else logging.INFO,
                "service level %s (was %s)%s",
                level.level.value,
                before.value,
                f": {'; '.join(level.reasons)}" if level.reasons else "",
                extra={
                    "fields": {
                        "event": "service-level",
                        "service": level.level.value,
                        "reason": "; ".join(level.reasons) or None,
                    }
                },
            )

    async def serve(self, shutdown_trigger: Awaitable[None] | None = None) -> ExitCode:
        """Run until stopped; returns the exit code. *shutdown_trigger* stops it too (tests).

        Raises:
            DaemonError, StateError, ConfigError: it cannot run as configured (without
                socket activation; with it, the daemon serves "not configured" instead).
        """
        self.started_at = anyio.current_time()
        server = self.server = ControlServer(self, self.settings, on_answer=self.counters.command)
        activated = self.activated
        if activated is None:
            try:
                activated = self.activated = activated_socket()
            except OSError as exc:
                msg = f"cannot use the control socket passed by systemd: {exc}"
                raise DaemonError(msg) from None
        await server.bind(activated)  # first: a daemon refused here must not touch the state
        describe_daemon(CORRAL_SOCKET=str(server.path))  # for the catalog's commands
        # Signals are caught from the start and acted on in every phase: a SIGTERM during the
        # boot stops it, and one that never gets acted on never kills the process.
        signals = anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        try:
            with signals as received:
                failure: CorralError | None = None
                async with anyio.create_task_group() as probes:
                    self._probes = probes
                    if self.sink is not None:
                        probes.start_soon(self.sink.run)
                    probes.start_soon(self.monitor.run)
                    probes.start_soon(self.notifier.pet, self.monitor.healthy)
                    probes.start_soon(server.serve)
                    probes.start_soon(self._signals, received)
                    try:
                        code = await self._life(shutdown_trigger)
                    except CorralError as exc:  # StartError, StateError, DaemonError...
                        failure = exc  # raised below as itself, not in a group
                    finally:
                        probes.cancel_scope.cancel()
                if failure is not None:
                    raise failure
                return code
        except StartError as exc:
            _failed(f"the tree did not start: {exc}")
            return ExitCode.TREE_FAILED
        except SupervisorGaveUpError as exc:
            _failed(f"{exc}; the daemon exits")
            return ExitCode.TREE_FAILED
        finally:
            gc.unfreeze()
            if self.sink is not None:
                self.sink.flush()
            self._release()
            with anyio.CancelScope(shield=True):
                await self._close_endpoint()

    def _release(self) -> None:
        """What must not outlive the daemon: its socket file, its lock on the state."""
        if self.server is not None:
            self.server.remove()
        self.notifier.close()
        if self.state is not None:
            self.state.close()

    async def _close_endpoint(self) -> None:
        if self._metrics is not None:
            self._metrics.cancel()
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            await endpoint.aclose()

    async def _life(self, shutdown_trigger: Awaitable[None] | None) -> ExitCode:
        """Configured or not, booting, running: until stopped; the exit code."""
        while True:
            configuring = None
            if self.problem is not None:
                configuring = await self._until_configured()
                if configuring is None:
                    return self.exit_code  # stopped while not configured
            try:
                await self._bind_endpoint()
                held = self._held_at_start()
            except (DaemonError, StateError) as exc:
                await self._close_endpoint()
                self._unconfigured(exc, configuring)
                continue
            try:
                return await self._run(held, configuring, shutdown_trigger)
            except StartError as exc:
                if configuring is None:  # at start: systemd's Restart= may help (exit 69)
                    raise
                await self._close_endpoint()
                self._unconfigured(exc, configuring)

    def _unconfigured(self, problem: CorralError, configuring: _Configuring | None) -> None:
        """*problem* keeps the daemon from running its tree. Under socket activation it
        stays up and says so (see the module's docstring); otherwise *problem* is raised."""
        if self.state is not None:
            self.state.close()  # a reload opens the (maybe new) state directory again
        if configuring is None and self.activated is None:
            raise problem
        self.problem = problem
        if configuring is not None:  # a reload's: it answers with the problem
            configuring.fail(problem)
        self._booting = True
        log.error(
            "not configured: %s; the control socket answers every command with this until"
            " the problem is fixed and `corral reload` (systemctl reload) starts the tree",
            problem,
            extra={"fields": {"event": "not-configured"}},
        )
        self.notifier.ready(f"not configured: {_first_line(problem)} (fix it, then reload)")
        self._transitioned()

    async def _until_configured(self) -> _Configuring | None:
        """Wait for a reload that found everything fixed (None: stopped meanwhile)."""
        while self._configuring is None and not self._stopping:
            await self._transition.wait()
        configuring, self._configuring = self._configuring, None
        if self._stopping:
            if configuring is not None:
                configuring.fail(DaemonStoppingError("the daemon is stopping"))
            return None
        assert configuring is not None
        self._adopt(configuring.loaded)
        return configuring

    def _adopt(self, loaded: LoadedConfig) -> None:
        """Run *loaded* from now on: its tree, its [daemon] settings (a daemon that was not
        configured has none in use yet)."""
        from corral.daemon.logging import setup

        self.loaded = loaded
        self.problem = None
        self.settings = settings = loaded.daemon
        self.state = StateFile(settings.state_path())
        self.sink = setup(settings.log_format, settings.log_level, redact=settings.redact)
        self.monitor.stall_timeout = settings.loop_stall_timeout
        if self.server is not None:
            self.server.apply(settings)
        self._transitioned()

    def _transitioned(self) -> None:
        """Wake whoever waits for the next phase (commands waiting for the tree, a reload
        waiting for the boot)."""
        self._transition.set()
        self._transition = anyio.Event()

    async def serving(self) -> Tree:
        """The tree, once it has started: commands wait for the boot.

        Raises:
            NotConfiguredError: the daemon is not configured (the message says why).
            DaemonStoppingError: it stopped before the tree was up.
        """
        while True:
            if self.problem is not None:
                raise NotConfiguredError(self._not_configured_message())
            if self.tree is not None and not self._booting:
                return self.tree
            if self._stopping:
                msg = "the daemon is stopping"
                raise DaemonStoppingError(msg)
            await self._transition.wait()

    def _not_configured_message(self) -> str:
        assert self.problem is not None
        reload = "`corral reload` (or `systemctl reload corral`)"
        return f"the daemon is not configured: {self.problem}; fix it, then {reload}"

    async def _serve_metrics(self, endpoint: Endpoint) -> None:
        """The metrics listener; its failure turns metrics off, never the tree."""
        with anyio.CancelScope() as self._metrics:
            try:
                await endpoint.serve()
            except Exception:
                log.exception("the metrics listener failed: no metrics until the daemon restarts")

    async def _bind_endpoint(self) -> Endpoint | None:
        address = self.settings.metrics_address()
        if address is None:
            return None
        endpoint = self.endpoint = Endpoint(*address, self.telemetry.pages())
        try:
            await endpoint.bind()
        except OSError as exc:
            msg = (
                f"cannot listen for metrics on {self.settings.metrics_listen}:"
                f' {exc.strerror or exc}; set metrics-listen to a free address, or "" for none'
            )
            raise DaemonError(msg) from None
        log.info(
            "metrics on %s/metrics (and /healthz, /readyz)",
            endpoint.address,
            extra={"fields": {"event": "metrics-listening", "url": endpoint.address}},
        )
        return endpoint

    async def _run(
        self,
        held: frozenset[str],
        configuring: _Configuring | None,
        shutdown_trigger: Awaitable[None] | None,
    ) -> ExitCode:
        """Boot the tree, run it until asked to stop, stop it; the exit code.

        Raises:
            StartError: a child failed to start (those started are stopped first).
            SupervisorGaveUpError: the root gave up.
        """
        settings = self.settings
        assert self.loaded is not None
        assert self.server is not None
        self.notifier.status(f"starting {len(self.spec.children)} children under /")
        self._booting = True
        if self.endpoint is not None:
            assert self._probes is not None
            self._probes.start_soon(self._serve_metrics, self.endpoint)
        with anyio.CancelScope() as boot:
            self._boot = boot
            if self._stopping:  # a SIGTERM before the boot began
                boot.cancel()
            async with open_tree(
                self.spec,
                held=held,
                on_held=self._save_held,
                dead_letters=settings.dead_letters,
                observers=self.observers(),
                timings=settings.metrics_address() is not None,
                on_open=self._opened,
            ) as tree:
                self._boot = None
                self.tree = tree
                self._booting = False
                gc.freeze()  # the tree's objects are long-lived: keep them out of GC passes
                level = self.commands.service_status()
                self._level = level.level
                self.notifier.ready(summary(tree.census(), level.level))
                log.info(
                    "corral %s ready: %d children under / from %s, control socket %s",
                    version_string(),
                    len(self.spec.children),
                    self.loaded.source,
                    self.server.path,
                    extra={"fields": {"event": "daemon-ready"}},
                )
                self._transitioned()
                if configuring is not None:
                    configuring.succeed()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_root, tree)
                    tg.start_soon(self._keep_status)
                    if shutdown_trigger is not None:
                        tg.start_soon(self._stop_after, shutdown_trigger)
                    if self._reload_after_boot:
                        self._reload_after_boot = False
                        tg.start_soon(self._reload_logged)
                    await self._stop.wait()
                    tree.stop()  # the socket still answers meanwhile (status, `stopping`)
                    await tree.wait_stopped()  # then _until_the_tree_ends takes over
                    tg.cancel_scope.cancel()
        if boot.cancelled_caught:
            log.info("the boot was stopped: the children started so far were stopped")
            if configuring is not None:
                configuring.fail(DaemonStoppingError("the daemon stopped during the boot"))
        log.info("stopped", extra={"fields": {"event": "daemon-stopped"}})
        return self.exit_code

    def _held_at_start(self) -> frozenset[str]:
        """The operator's stops that still name a child of this config.

        Raises:
            StateError: the state directory is unusable, in use or its file corrupt.
        """
        assert self.state is not None
        held = self.state.load()
        kept = held & frozenset(declared_paths(self.spec, "/"))
        if kept != held:
            log.info(
                "forgetting operator stops of children no longer configured: %s",
                ", ".join(sorted(held - kept)),
            )
        self.state.save(kept)  # also proves the state directory writable, before anything runs
        if kept:
            log.info("kept stopped by an operator: %s", ", ".join(sorted(kept)))
        return kept

    def request_stop(self) -> None:
        """Begin a graceful stop (`corral shutdown`, the first SIGTERM or SIGINT, the root's
        own end): in any phase, once."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        log.info(
            "stopping: children stop in reverse start order",
            extra={"fields": {"event": "daemon-stopping"}},
        )
        self.notifier.stopping()
        if self._boot is not None:
            self._boot.cancel()  # the child still starting is stopped by its shutdown policy
        self._transitioned()

    async def _stop_after(self, trigger: Awaitable[None]) -> None:
        await trigger
        self.request_stop()

    async def _watch_root(self, tree: Tree) -> None:
        """The root ended on its own (auto-shutdown): the daemon ends with it."""
        await tree.wait()
        if not self._stopping:
            log.warning("the root supervisor shut down (auto-shutdown): the daemon exits")
            self.request_stop()

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async with anyio.create_task_group() as reloads:  # a reload never delays a stop
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    if self._booting and self.problem is None and not self._stopping:
                        log.info("SIGHUP during the boot: reloading once the tree has started")
                        self._reload_after_boot = True
                    else:
                        reloads.start_soon(self._reload_logged)
                elif not self._stopping:
                    log.info("%s: stopping gracefully (again to force)", name)
                    self.request_stop()
                else:
                    self._force(name)

    def _force(self, name: str) -> None:
        """A second SIGTERM or SIGINT: what still runs is cancelled at once, and the daemon
        exits without waiting for what a cancellation cannot end."""
        log.warning("%s again: forcing the stop; children still running are cancelled", name)
        if self._tree_opened is not None:  # also while it boots
            self._tree_opened.stop(anyio.current_time())
        if self._probes is not None:
            self._probes.start_soon(self._exit_after, FORCE_GRACE)

    def _opened(self, tree: Tree) -> None:
        """``open_tree``'s ``on_open``: the tree exists, its boot begins."""
        self._tree_opened = tree
        if self._probes is not None:
            self._probes.start_soon(self._until_the_tree_ends, tree)

    async def _until_the_tree_ends(self, tree: Tree) -> None:
        """Once every child of *tree* has stopped or been abandoned, however that came about
        (asked to, a failed boot, the root gave up), the tree must be gone within EXIT_GRACE:
        if abandoned tasks hold it, the daemon exits without them, with the exit status the
        tree's end deserves."""
        await tree.wait_stopped()
        ended_well = self._stopping or self._shut_down  # else a failed boot, or it gave up
        with anyio.move_on_after(EXIT_GRACE) as grace:
            with contextlib.suppress(CorralError):  # the failure is serve()'s to report
                await tree.wait()
        if grace.cancelled_caught:
            if not ended_well:
                log.error("the tree failed; its children are stopped or abandoned")
                self.exit_code = ExitCode.TREE_FAILED
            await self._exit_after(0.0)

    async def _exit_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)  # cancelled when serve() returns in time
        if self._abandoned:
            left = ", ".join(f"{p} (abandoned: it ignores cancellation)" for p in self._abandoned)
        else:  # cut short before any child was declared abandoned
            left = "tasks that ignored the forced stop"
        log.warning(
            "stopped; exiting without waiting for what did not end: %s",
            left,
            extra={"fields": {"event": "daemon-stopped"}},
        )
        self._release()
        self.exit_now(int(self.exit_code))

    async def _reload_logged(self) -> None:
        """A reload asked by SIGHUP: ``reload`` logs how it went."""
        with contextlib.suppress(CorralError):
            await self.reload(dry_run=False)

    # -- commands -----------------------------------------------------------------------------

    def _tree(self) -> Tree:
        tree = self.tree
        assert tree is not None  # commands are served only while the tree runs
        return tree

    def ping(self) -> protocol.Pong:
        return protocol.Pong(
            version=version_string(),
            pid=os.getpid(),
            backend=self.backend,
            uptime=round(anyio.current_time() - self.started_at, 3),
            config=self._source(),
        )

    def _source(self) -> str:
        if self.loaded is not None and self.problem is None:
            return self.loaded.source
        return f"{self.config_path or DEMO} (not configured)"

    def _load(self) -> LoadedConfig:
        path = self.config_path
        return load_demo() if path is None else load(path)

    async def reload(self, *, dry_run: bool) -> protocol.ReloadResult:
        """Re-read the config and apply the difference (see ``supervisors/reconfigure.py``);
        when the daemon is not configured, start the tree if the file is now valid. However
        it was asked (`corral reload`, `systemctl reload`, SIGHUP), an applied reload is
        logged line by line (``reload``: its MESSAGE_ID), and a refused one as an error.

        Raises:
            ConfigError: the new file is invalid; nothing was changed.
        """
        try:
            result = await self._reload(dry_run=dry_run)
        except ConfigError as exc:
            if not dry_run:  # a dry run asks, and is answered: nothing to log
                log.error("reload rejected, the running tree is unchanged: %s", exc)  # noqa: TRY400
            raise
        except CorralError as exc:  # stopping meanwhile, or still not configured
            if not dry_run:
                log.error("reload not applied: %s", exc)  # noqa: TRY400  # the message says why
            raise
        if not dry_run:
            for line in result.changes or ["no changes"]:
                log.info("reload: %s", line, extra={"fields": {"event": "reload"}})
            for line in result.notes:
                log.warning("reload: %s", line)
            for line in result.not_applied:
                log.error("reload: not applied: %s", line, extra={"fields": {"event": "reload"}})
        return result

    async def _reload(self, *, dry_run: bool) -> protocol.ReloadResult:
        async with self._reloading:
            # Read and imported in a thread of its own: a slow import or a big file must not
            # stop the loop, and one that never returns must not keep the process alive, nor
            # this lock (the reloads after it) held.
            loaded: list[LoadedConfig] = []
            with anyio.move_on_after(self.load_timeout):
                loaded.append(await in_daemon_thread(self._load))
            if not loaded:
                msg = (
                    f"reading and importing it took over {self.load_timeout:g} s: a module"
                    " that blocks at import? It is left importing, and importing it again"
                    " waits for it: restart the daemon once the module is fixed"
                )
                raise ConfigError(self.config_path or DEMO, msg)
            new = loaded[0]
            if self._stopping:
                msg = "the daemon is stopping: the reload was not applied"
                raise DaemonStoppingError(msg)
            if self.problem is not None:
                return await self._configure(new, dry_run=dry_run)
            tree = await self.serving()  # a reload during the boot waits for it
            notes = []
            changed = [  # python-path is not among them: it was added as the file was read
                name.replace("_", "-")
                for name in new.daemon.__struct_fields__
                if name != "python_path"
                and getattr(new.daemon, name) != getattr(self.settings, name)
            ]
            if changed:
                notes.append(
                    f"[daemon] {', '.join(changed)} changed: applied when the daemon restarts"
                )
            notes.extend(
                f"{file} has changed since it was imported: the daemon keeps running the code"
                " it imported (a reload changes the config, not the code); restart it to run"
                " the new code"
                for file in new.stale
            )
            if dry_run:  # the plan alone; a real reload has Tree.reconfigure make and apply it
                plans = plan_tree(self._running_spec(self.spec), new.spec)
                changes = [line for plan in plans for line in plan.describe()]
                return protocol.ReloadResult(
                    source=new.source, dry_run=True, changes=changes, notes=notes, failures=[]
                )
            self.notifier.reloading()
            try:
                async with self.commands.applying:
                    done = await tree.reconfigure(self._running_spec(self.spec), new.spec)
            finally:
                if not self._stopping:  # a stop that came meanwhile has said STOPPING=1
                    level = self.commands.service_status().level
                    self.notifier.ready(summary(tree.census(), level))
            self.loaded = new
            notes.extend(done.notes)
            if self._unsaved is not None:
                notes.append(f"{self._unsaved}: the operator's stops are not kept across restarts")
            return protocol.ReloadResult(
                source=new.source,
                dry_run=False,
                changes=list(done.applied),
                notes=notes,
                failures=[str(failure) for failure in done.failures],
                not_applied=list(done.not_applied),
            )

    async def _configure(self, new: LoadedConfig, *, dry_run: bool) -> protocol.ReloadResult:
        """The daemon is not configured and *new* is valid: start its tree (or say that a
        reload would). Answers once the tree has started.

        Raises:
            StartError, StateError, DaemonError: the tree could not start; the daemon stays
                not configured, with this as the reason.
        """
        count = len(new.spec.children)
        notes = []
        if self.backend != new.daemon.backend:
            notes.append(
                f"backend {new.daemon.backend!r} applies when the daemon restarts (this one"
                f" runs {self.backend!r})"
            )
        if dry_run:
            changes = [f"would start the tree: {count} children under /"]
            return protocol.ReloadResult(
                source=new.source, dry_run=True, changes=changes, notes=notes, failures=[]
            )
        configuring = self._configuring = _Configuring(new)
        self.notifier.reloading()
        self._transitioned()
        await configuring.done.wait()
        if isinstance(configuring.error, DaemonStoppingError):
            raise configuring.error
        if configuring.error is not None:
            raise NotConfiguredError(self._not_configured_message())
        changes = [f"started the tree: {count} children under /"]
        return protocol.ReloadResult(
            source=new.source, dry_run=False, changes=changes, notes=notes, failures=[]
        )

    @property
    def stopping(self) -> bool:
        """Stopping: its tree's children are being stopped, or soon will be."""
        return self._stopping

    def _unsaved_warning(self) -> str | None:
        if self._unsaved is None:
            return None
        return f"{self._unsaved}: the operator's stops are not kept across restarts"

    def _save_held(self, held: frozenset[str]) -> None:
        """Save the operator's stops the moment they change (a stop may be cut short)."""
        assert self.state is not None  # held paths change only while the tree runs
        try:
            self.state.save(held)
        except StateError as exc:
            log.error("%s", exc)  # noqa: TRY400  # the message says it all
            self._unsaved = exc
        else:
            self._unsaved = None

    def shutdown(self) -> protocol.Done:
        """What `corral shutdown` answers; the control server then calls ``request_stop``."""
        return protocol.Done(path="/", done="stopping: children stop in reverse start order")


BACKENDS: Final = ("asyncio", "trio")


def run(config_path: str | None, *, backend: str | None = None) -> ExitCode:
    """``corral run``: load the config, serve until stopped; returns the exit code."""
    from corral.daemon.logging import setup  # only the daemon configures logs

    try:
        activated = activated_socket()
    except OSError as exc:
        setup("auto", "info")
        _failed(f"cannot use the control socket passed by systemd: {exc}")
        return ExitCode.INTERNAL
    loaded: LoadedConfig | None = None
    problem: ConfigError | None = None
    try:
        loaded = load_demo() if config_path is None else load(config_path)
    except ConfigError as exc:
        if activated is None:
            setup("auto", "info")  # under systemd: a journal entry of priority err
            log.error("%s", exc, extra={"fields": {"event": "config-invalid"}})  # noqa: TRY400
            return ExitCode.CONFIG
        problem = exc  # served as "not configured" (see the module's docstring)
    if loaded is not None:
        settings = loaded.daemon
        sink = setup(settings.log_format, settings.log_level, redact=settings.redact)
        chosen = backend or settings.backend
        state: StateFile | None = StateFile(settings.state_path())
    else:
        sink = setup("auto", "info")
        chosen = backend or "asyncio"
        state = None

    async def main() -> ExitCode:
        daemon = Daemon(loaded, config_path, state, chosen, activated=activated, sink=sink)
        if problem is not None:
            daemon._unconfigured(problem, None)
        return await daemon.serve()

    try:
        return anyio.run(main, backend=chosen)
    except StateError as exc:
        _failed(str(exc), event="config-invalid")
        return ExitCode.CONFIG
    except DaemonError as exc:
        _failed(str(exc))
        return ExitCode.INTERNAL
    except Exception:
        log.exception(
            "internal error: please report it with this traceback",
            extra={"fields": {"event": "daemon-failed"}},
        )
        return ExitCode.INTERNAL
    finally:
        sink.flush()  # a crash too: nothing queued is lost


def _failed(message: str, event: str = "daemon-failed") -> None:
    """The daemon cannot run: an error record with its MESSAGE_ID (journalctl -p err)."""
    log.error("%s", message, extra={"fields": {"event": event}})


@attrs.define(eq=False)
class _Configuring:
    """A reload found the file fixed while the daemon was not configured: the boot it asks
    for, and how it went (the reload answers with that)."""

    loaded: LoadedConfig
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: CorralError | None = None

    def succeed(self) -> None:
        self.done.set()

    def fail(self, error: CorralError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


EXIT_GRACE: Final = 0.5
"""Seconds the daemon waits, once its tree has stopped, for abandoned tasks before it exits
without them."""
EXIT_HANDLERS: Final = 2.0
"""Seconds the interpreter's exit handlers get when the daemon exits without its tasks."""
FORCE_GRACE: Final = 1.0
"""Seconds a forced stop (a second signal) is given to end every task before the daemon exits
without them."""


def _hard_exit(code: int) -> None:  # pragma: no cover  # the process ends here
    """End the process now, although tasks that ignore cancellation still run (an event loop
    cannot end before its last task; the daemon must). What the interpreter runs at exit
    (atexit: logging's flush, coverage) runs first, for at most EXIT_HANDLERS seconds (an
    actor's multiprocessing child, a stuck log stream could hold it); threads and tasks are
    not waited for."""
    backstop = threading.Timer(EXIT_HANDLERS, os._exit, (code,))
    backstop.daemon = True
    backstop.start()
    atexit._run_exitfuncs()
    os._exit(code)


def _first_line(problem: object) -> str:
    return str(problem).splitlines()[0][:200]


T = TypeVar("T")


async def in_daemon_thread(func: Callable[[], T]) -> T:
    """*func()* in a daemon thread of its own: a cancelled wait leaves it behind, and it never
    keeps the process from exiting (anyio's worker threads do, on asyncio, while they run)."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    results: list[T] = []
    errors: list[Exception] = []

    def work() -> None:
        try:
            results.append(func())
        except Exception as exc:  # carried to the caller, raised there
            errors.append(exc)
        finally:
            with contextlib.suppress(Exception):  # the loop may be gone: nobody waits any more
                anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=work, name="corral-load", daemon=True).start()
    await done.wait()
    if errors:
        raise errors[0]
    if not results:  # pragma: no cover  # func raised what config loading never lets out
        msg = "the loading thread ended without a result"
        raise RuntimeError(msg)
    return results[0]
