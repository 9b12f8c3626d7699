"""``corral run``: the tree from a config file, kept alive, steered over the control socket.

The daemon is one task group: the tree (``open_tree``), the control server, the signal
handler and a watcher of the root. It stops when told to (SIGTERM, SIGINT, ``corral
shutdown``) or when the root supervisor ends on its own; either way the tree stops in
reverse start order first. Exit codes (``ExitCode``) are documented in the README so that
systemd's ``Restart=`` and ``RestartPreventExitStatus=`` can tell a crash from a bad config.
"""

from __future__ import annotations

import enum
import functools
import gc
import logging
import math
import os
import signal
from collections import deque
from importlib.metadata import version
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from corral.actors.registry import join_path, within
from corral.daemon import protocol, view
from corral.daemon.config import (
    ConfigError,
    DaemonConfig,
    LoadedConfig,
    args_problem,
    id_problem,
    load,
    load_demo,
)
from corral.daemon.control import ControlServer, DaemonStoppingError
from corral.daemon.endpoint import Endpoint, Page, text_page
from corral.daemon.logging import log_event
from corral.daemon.loop import LoopMonitor
from corral.daemon.metrics import (
    CONTENT_TYPE,
    Counters,
    TreeCollector,
    exposition,
    process_registry,
)
from corral.daemon.state import StateError, StateFile
from corral.daemon.systemd import STATUS_EVERY, Notifier, activated_socket, summary
from corral.errors import (
    ActorNotRunningError,
    CorralError,
    RunningError,
    SpecError,
    StartError,
    SupervisorGaveUpError,
    UnknownPathError,
    UnsupportedError,
)
from corral.supervisors.reconfigure import declared_paths, plan_tree
from corral.supervisors.spec import (
    ChildSpec,
    DynamicSupervisorSpec,
    RestartType,
    SupervisorSpec,
    stop_bound,
)
from corral.supervisors.tree import open_tree

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from prometheus_client import CollectorRegistry

    from corral.supervisors.events import Event
    from corral.supervisors.tree import SupervisorRef, Tree

__all__ = ("Daemon", "DaemonError", "ExitCode", "Killed", "run")

log = logging.getLogger("corral.daemon")
RECENT_EVENTS: Final = 1000  # kept for `corral events`


class ExitCode(enum.IntEnum):
    """``corral run``'s exit status (systemd shows 2, 6 and 69 by their names)."""

    OK = 0  # stopped as asked (signal, `corral shutdown`), or the root shut down normally
    INTERNAL = 1  # a bug, or the control socket could not be served: see the log
    USAGE = 2  # bad command line
    CONFIG = 6  # LSB "not configured": invalid config or unusable state directory
    TREE_FAILED = 69  # EX_UNAVAILABLE: a child failed to start, or the root gave up


class DaemonError(CorralError):
    """The daemon cannot run as configured (e.g. another one serves the socket)."""


class Killed(Exception):  # reads as what happened to the child: Killed('...')
    """Raised into a child by ``corral kill`` (a drill): an abnormal exit like any other."""


@attrs.define(eq=False)
class Daemon:
    """One daemon: its config, its tree once started, and the operator's commands."""

    loaded: LoadedConfig
    config_path: str | None  # None: the embedded demo
    state: StateFile
    backend: str
    tree: Tree | None = None
    started_at: float = 0.0
    exit_code: ExitCode = ExitCode.OK
    _stop: anyio.Event = attrs.field(factory=anyio.Event)
    _stopping: bool = False
    _reloading: anyio.Lock = attrs.field(factory=anyio.Lock)
    _unsaved: StateError | None = None  # the last save of the held paths failed so
    settings: DaemonConfig = attrs.field(init=False)  # in use: [daemon] is read at start only
    _recent: deque[Event] = attrs.field(factory=lambda: deque(maxlen=RECENT_EVENTS))
    notifier: Notifier = attrs.field(factory=Notifier)
    counters: Counters = attrs.field(init=False)
    collector: TreeCollector = attrs.field(init=False)
    process: CollectorRegistry = attrs.field(init=False)  # psutil's figures
    monitor: LoopMonitor = attrs.field(init=False)
    endpoint: Endpoint | None = None  # the metrics listener, once bound
    _booting: bool = True  # until the whole tree has started
    _status_changed: anyio.Event = attrs.field(factory=anyio.Event)
    _window: tuple[SupervisorSpec | None, float] = (None, 0.0)  # _progress_window's, per spec

    @property
    def spec(self) -> SupervisorSpec:
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
        self.settings = self.loaded.daemon
        self.counters = Counters(is_dynamic=self._is_dynamic)
        self.monitor = LoopMonitor(self.counters, self.settings.loop_stall_timeout)
        self.collector = TreeCollector(
            lambda: self.tree,
            self.counters,
            lambda: {"version": version_string(), "backend": self.backend},
            self.ready,
        )
        self.process = process_registry()

    def _is_dynamic(self, path: str) -> bool:
        tree = self.tree
        try:
            return tree is not None and tree.supervisor(path).dynamic
        except CorralError:
            return False

    def unready(self) -> str | None:
        """Why /readyz says 503, or None when ready: the tree has started, the daemon is not
        stopping, and the root supervisor is not at the end of its restart budget."""
        tree = self.tree
        if tree is None or self._booting:
            return "starting"
        if self._stopping:
            return "stopping"
        budget = tree.root.core.intensity
        if budget.intensity and not budget.remaining(anyio.current_time()):
            return "root at its restart limit"
        return None

    def ready(self) -> bool:
        return self.unready() is None

    def metrics(self) -> str:
        """The Prometheus exposition, as `/metrics` serves it."""
        return exposition(self.collector, self.process).decode()

    def _pages(self) -> dict[str, Callable[[], Page]]:
        def healthz() -> Page:
            return text_page(200, "ok: the event loop answers\n")

        def readyz() -> Page:
            why = self.unready()
            return (
                text_page(200, "ready\n") if why is None else text_page(503, f"not ready: {why}\n")
            )

        def metrics() -> Page:
            return 200, CONTENT_TYPE, exposition(self.collector, self.process)

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}

    def _observe(self, event: Event) -> None:
        """Keeps systemd informed: progress while booting or stopping, and the STATUS line."""
        notifier = self.notifier
        if notifier.enabled:
            if self._booting or self._stopping:
                notifier.extend(self._progress_window())
            self._status_changed.set()

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
        """STATUS= follows the tree, at most once a second."""
        while True:
            await self._status_changed.wait()
            self._status_changed = anyio.Event()
            if self.tree is not None and not self._stopping:
                self.notifier.status(summary(self.tree.census()))
            await anyio.sleep(STATUS_EVERY)

    async def serve(self, shutdown_trigger: Awaitable[None] | None = None) -> ExitCode:
        """Run until stopped; returns the exit code. *shutdown_trigger* stops it too (tests)."""
        settings = self.loaded.daemon
        server = ControlServer(self, settings, on_answer=self.counters.command)
        try:
            activated = activated_socket()
        except OSError as exc:
            msg = f"cannot use the control socket passed by systemd: {exc}"
            raise DaemonError(msg) from None
        await server.bind(activated)  # first: a daemon refused here must not touch the state
        # Signals are caught from before the boot: one that comes during it is acted on as
        # soon as the tree has started, never left to kill the process.
        signals = anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        endpoint = None
        try:
            endpoint = await self._bind_endpoint()
            held = self._held_at_start()
            with signals as received:
                failure: CorralError | None = None
                async with anyio.create_task_group() as probes:  # from before the boot
                    probes.start_soon(self.monitor.run)
                    if endpoint is not None:
                        probes.start_soon(self._serve_metrics, endpoint)
                    probes.start_soon(self.notifier.pet, self.monitor.healthy)
                    try:
                        code = await self._run(server, held, received, shutdown_trigger)
                    except (StartError, SupervisorGaveUpError) as exc:
                        failure = exc  # raised below as itself, not in a group
                    finally:
                        probes.cancel_scope.cancel()
                if failure is not None:
                    raise failure
                return code
        except StartError as exc:
            log.error("the tree did not start: %s", exc)  # noqa: TRY400  # the cause is logged
            return ExitCode.TREE_FAILED
        except SupervisorGaveUpError as exc:
            log.error("%s; the daemon exits", exc)  # noqa: TRY400  # events told the story
            return ExitCode.TREE_FAILED
        finally:
            gc.unfreeze()
            server.remove()
            self.notifier.close()
            if endpoint is not None:
                with anyio.CancelScope(shield=True):
                    await endpoint.aclose()

    async def _serve_metrics(self, endpoint: Endpoint) -> None:
        """The metrics listener; its failure turns metrics off, never the tree."""
        try:
            await endpoint.serve()
        except Exception:
            log.exception("the metrics listener failed: no metrics until the daemon restarts")

    async def _bind_endpoint(self) -> Endpoint | None:
        address = self.settings.metrics_address()
        if address is None:
            return None
        endpoint = self.endpoint = Endpoint(*address, self._pages())
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
        server: ControlServer,
        held: frozenset[str],
        signals: AsyncIterator[int],
        shutdown_trigger: Awaitable[None] | None,
    ) -> ExitCode:
        settings = self.loaded.daemon
        self.notifier.status(f"starting {len(self.spec.children)} children under /")
        async with open_tree(
            self.spec,
            held=held,
            on_held=self._save_held,
            dead_letters=settings.dead_letters,
            observers=(log_event, self._recent.append, self.counters.observe, self._observe),
            timings=settings.metrics_address() is not None,
        ) as tree:
            self.tree = tree
            self.started_at = anyio.current_time()
            self._booting = False
            gc.freeze()  # the tree's objects are long-lived: keep them out of GC passes
            self.notifier.ready(summary(tree.census()))
            log.info(
                "corral %s ready: %d children under / from %s, control socket %s",
                version_string(),
                len(self.spec.children),
                self.loaded.source,
                server.path,
                extra={"fields": {"event": "daemon-ready"}},
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve)
                tg.start_soon(self._signals, signals)
                tg.start_soon(self._watch_root, tree)
                tg.start_soon(self._keep_status)
                if shutdown_trigger is not None:
                    tg.start_soon(self._stop_after, shutdown_trigger)
                await self._stop.wait()
                log.info(
                    "stopping: children stop in reverse start order",
                    extra={"fields": {"event": "daemon-stopping"}},
                )
                self.notifier.stopping()
                tree.stop()  # the socket still answers meanwhile (status, `stopping`)
                await tree.wait()
                tg.cancel_scope.cancel()
        log.info("stopped")
        return self.exit_code

    def _held_at_start(self) -> frozenset[str]:
        """The operator's stops that still name a child of this config."""
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
        """Begin a graceful stop (`corral shutdown`, the first SIGTERM or SIGINT)."""
        self._stopping = True
        self._stop.set()

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
                    reloads.start_soon(self._reload_logged)
                elif not self._stopping:
                    log.info("%s: stopping gracefully (again to force)", name)
                    self.request_stop()
                else:
                    log.warning(
                        "%s again: forcing the stop; children still running are cancelled", name
                    )
                    assert self.tree is not None
                    self.tree.stop(anyio.current_time())

    async def _reload_logged(self) -> None:
        try:
            result = await self.reload(dry_run=False)
        except ConfigError as exc:
            log.error("reload rejected, the running tree is unchanged: %s", exc)  # noqa: TRY400
            return
        for line in result.changes or ["no changes"]:
            log.info("reload: %s", line, extra={"fields": {"event": "reload"}})
        for line in (*result.notes, *result.failures):
            log.warning("reload: %s", line)

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
            config=self.loaded.source,
        )

    def recent_events(self, count: int) -> list[protocol.Event]:
        clock = view.Clock()
        recent = list(self._recent)[-count:] if count else []
        return [view.event(e, clock) for e in recent]

    def status(self, path: str) -> protocol.StatusNode:
        return view.status(self._tree(), path, stopping=self._stopping)

    def why(self, path: str) -> protocol.WhyResult:
        return view.why(self._tree(), path)

    def dead_letters(self, path: str | None, limit: int) -> list[protocol.DeadLetterInfo]:
        letters = self._tree().dead_letters()
        if path is not None:
            top = view.normalize(path)
            letters = tuple(d for d in letters if within(d.path, top))
        return [view.dead_letter(d) for d in letters[-limit:]]

    def _child(self, path: str) -> tuple[SupervisorRef, str, str]:
        """The parent supervisor, the child id and the normalized path."""
        path = view.normalize(path)
        if path == "/":
            msg = "the root supervisor is not a child: use `corral shutdown` to stop the daemon"
            raise UnsupportedError(msg, supervisor="/", child_id="")
        parent, child_id = view.parent_path(path), path.rsplit("/", 1)[1]
        try:
            sup = self._tree().supervisor(parent)
            found = child_id in sup
        except UnknownPathError:
            found = False
        if not found:  # only now a snapshot: its error names the part that is missing
            view.find(self._tree(), path)
        return self._tree().supervisor(parent), child_id, path

    async def start(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        try:
            await sup.restart_child(child_id)
        except RunningError as exc:
            msg = f"{exc} (`corral restart {path}` stops and starts it)"
            raise RunningError(msg, supervisor=exc.supervisor, child_id=exc.child_id) from None
        return self._done(path, "started")

    async def stop(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.terminate_child(child_id, hold=True)
        if path not in self._tree().held:  # OTP keeps no spec of these once stopped
            why = "a dynamic supervisor's child" if sup.dynamic else "a temporary child"
            return self._done(path, f"stopped and removed ({why}: its spec is not kept)")
        return self._done(path, "stopped; it stays stopped until `corral start`")

    async def restart(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        if sup.dynamic:
            msg = (
                f"{path} belongs to a dynamic supervisor, whose children cannot be restarted"
                " by hand (OTP's rule): `corral kill` crashes it, and its supervisor restarts"
                " it unless it is temporary; or terminate-child, then start-child"
            )
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id)
        # A temporary child's spec is dropped when it stops (OTP), unless held: hold it for
        # the moment between the stop and the start, which ends the hold.
        await sup.terminate_child(child_id, hold=self._temporary(path))
        await sup.restart_child(child_id)
        return self._done(path, "restarted")

    async def kill(self, path: str, reason: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        try:
            await sup.kill_child(child_id, Killed(reason))
        except ActorNotRunningError as exc:
            msg = f"{exc} (`corral start {path}` starts it)"
            raise ActorNotRunningError(msg, path=path) from None
        return self._done(path, "killed; its supervisor decides what comes next")

    async def start_child(
        self, supervisor: str, child_id: str | None, args: dict[str, object]
    ) -> protocol.Done:
        tree = self._tree()
        sup = tree.supervisor(view.normalize(supervisor))
        if not sup.dynamic:
            msg = (
                f"supervisor {sup.path!r} is not dynamic: its children come from the config"
                " (edit it and `corral reload`)"
            )
            raise UnsupportedError(msg, supervisor=sup.path, child_id=child_id or "")
        if child_id is not None and (problem := id_problem(child_id)) is not None:
            raise SpecError(problem)
        template = self._declared(sup.path)
        if isinstance(template, DynamicSupervisorSpec):  # else added since: trust the spec
            child = template.child
            target = child.start
            if isinstance(target, SupervisorSpec | DynamicSupervisorSpec):
                if args:  # a supervisor is built from its spec: there is nothing to pass
                    msg = f"supervisor {sup.path!r} starts supervisors, which take no args"
                    raise SpecError(msg)
            else:
                module = getattr(target, "__module__", "?")
                name = f"{module}:{getattr(target, '__qualname__', '?')}"
                problem = args_problem(target, {**child.args, **args}, name)
                if problem is not None:
                    raise SpecError(problem)
        path = await sup.start_child(args=args, id=child_id)
        return self._done(path, "started")

    async def terminate_child(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.terminate_child(child_id)
        return self._done(path, "terminated")

    async def delete_child(self, path: str) -> protocol.Done:
        sup, child_id, path = self._child(path)
        await sup.delete_child(child_id)
        return self._done(path, "deleted")

    def _declared_child(self, path: str) -> ChildSpec | None:
        """The config's spec of the child at *path*, if the config declares one."""
        spec: SupervisorSpec | None = self.spec
        child = None
        for child_id in [p for p in path.split("/") if p]:
            child = next((c for c in spec.children if c.id == child_id), None) if spec else None
            spec = child.start if child and isinstance(child.start, SupervisorSpec) else None
        return child

    def _declared(self, path: str) -> object:
        """What the config says the supervisor at *path* runs (None if it does not say)."""
        child = self._declared_child(path)
        return child.start if child is not None else None

    def _temporary(self, path: str) -> bool:
        """Whether the config declares the child at *path* temporary."""
        child = self._declared_child(path)
        return child is not None and child.restart is RestartType.TEMPORARY

    def _done(self, path: str, what: str) -> protocol.Done:
        """The command was carried out (and the operator's stops saved as they changed)."""
        if self._unsaved is not None:
            warning = f"{self._unsaved}: the operator's stops are not kept across restarts"
            return protocol.Done(path=path, done=what, warning=warning)
        return protocol.Done(path=path, done=what)

    async def reload(self, *, dry_run: bool) -> protocol.ReloadResult:
        """Re-read the config and apply the difference (see ``supervisors/reconfigure.py``).

        Raises:
            ConfigError: the new file is invalid; nothing was changed.
        """
        async with self._reloading:
            # Read and imported in a thread: a slow import or a big file must not stop the loop.
            path = self.config_path
            new = await anyio.to_thread.run_sync(
                load_demo if path is None else lambda: load(path),
                abandon_on_cancel=True,  # a stop does not wait for a slow import
            )
            if self._stopping:
                msg = "the daemon is stopping: the reload was not applied"
                raise DaemonStoppingError(msg)
            plans = plan_tree(self._running_spec(self.spec), new.spec)
            changes = [line for plan in plans for line in plan.describe()]
            notes = []
            if new.daemon != self.settings:
                changed = [
                    name.replace("_", "-")
                    for name in new.daemon.__struct_fields__
                    if getattr(new.daemon, name) != getattr(self.settings, name)
                ]
                notes.append(
                    f"[daemon] {', '.join(changed)} changed: applied when the daemon restarts"
                )
            result = protocol.ReloadResult(
                source=new.source, dry_run=dry_run, changes=changes, notes=notes, failures=[]
            )
            if dry_run:
                return result
            tree = self._tree()
            failures: list[str] = []
            self.notifier.reloading()
            try:
                for plan in plans:
                    try:
                        sup = tree.supervisor(plan.path)
                    except CorralError:
                        notes.append(
                            f"{plan.path} is not running: its new spec applies when it starts"
                        )
                        continue
                    failures.extend(str(f) for f in await sup.reconfigure(plan))
            finally:
                if not self._stopping:  # a stop that came meanwhile has said STOPPING=1
                    self.notifier.ready(summary(tree.census()))
            self.loaded = new
            if self._unsaved is not None:
                notes.append(f"{self._unsaved}: the operator's stops are not kept across restarts")
            return protocol.ReloadResult(
                source=new.source, dry_run=False, changes=changes, notes=notes, failures=failures
            )

    def _save_held(self, held: frozenset[str]) -> None:
        """Save the operator's stops the moment they change (a stop may be cut short)."""
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


@functools.cache
def version_string() -> str:
    try:
        return version("corral")
    except Exception:  # pragma: no cover  # running from a source tree without metadata
        return "unknown"


BACKENDS: Final = ("asyncio", "trio")


def run(config_path: str | None, *, backend: str | None = None) -> ExitCode:
    """``corral run``: load the config, serve until stopped; returns the exit code."""
    from corral.daemon.logging import setup  # only the daemon configures logs

    try:
        loaded = load_demo() if config_path is None else load(config_path)
    except ConfigError as exc:
        setup("text", "info")
        log.error("%s", exc)  # noqa: TRY400  # the message is the whole story
        return ExitCode.CONFIG
    settings = loaded.daemon
    setup(settings.log_format, settings.log_level, redact=settings.redact)
    chosen = backend or settings.backend

    async def main() -> ExitCode:
        daemon = Daemon(loaded, config_path, StateFile(settings.state_path()), chosen)
        return await daemon.serve()

    try:
        return anyio.run(main, backend=chosen)
    except StateError as exc:
        log.error("%s", exc)  # noqa: TRY400
        return ExitCode.CONFIG
    except DaemonError as exc:
        log.error("%s", exc)  # noqa: TRY400
        return ExitCode.INTERNAL
    except Exception:
        log.exception("internal error: please report it with this traceback")
        return ExitCode.INTERNAL
