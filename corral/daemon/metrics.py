"""Prometheus metrics: collected at scrape time from the tree's snapshot, never on hot paths.

Three sources feed one exposition:

- the tree's ``statistics()`` snapshot, read when Prometheus scrapes: children up and by
  state, mailbox depth and capacity, messages handled, backoff delays, each supervisor's
  restart budget. A removed child is simply absent from the next snapshot, so it leaves no
  stale series;
- ``Counters``, an event observer: restarts by reason, exits by kind, escalations, dead
  letters, plus the control commands and the loop monitor's lag and stalls. Lifecycle events
  are rare beside messages, so counting them costs the hot paths nothing; counts of children
  no longer in the tree are pruned at the next scrape;
- the tree's sampled ``Timings`` (``corral/actors/timing.py``): handling time and call
  latency histograms per supervisor.

**Cardinality.** Per-child series (label ``path``) exist only for children of ordinary
supervisors, whose number the config fixes. The children of a dynamic supervisor ``/pool``
are reported together under ``path="/pool/*"`` (sums, and for the mailbox depth the sum over
the pool), so a pool of 100,000 connections costs the same handful of series as a pool of
one. Histograms carry only a ``supervisor`` label.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Final, final

import anyio
import attrs
import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corral.actors.breaker import BreakerState
from corral.actors.registry import within
from corral.actors.timing import Histogram
from corral.daemon.endpoint import text_page
from corral.daemon.view import parent_path
from corral.errors import SupervisorGaveUpError
from corral.supervisors.core import ChildStatus
from corral.supervisors.events import (
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    Event,
    MessageDeadLettered,
    StartFailed,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.levels import ServiceLevel, service_status
from corral.supervisors.spec import ChildType, ExitKind

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator

    from corral.actors.breaker import BreakerStatistics
    from corral.daemon.endpoint import Page
    from corral.supervisors.statistics import ChildStatistics, SupervisorStatistics
    from corral.supervisors.tree import Tree

__all__ = (
    "CONTENT_TYPE",
    "LAG_BOUNDS",
    "REASONS",
    "Counters",
    "HostMetrics",
    "ProcessCollector",
    "TreeCollector",
    "exposition",
    "process_registry",
)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Event-loop lag (seconds late a timer fired); a stall is counted apart, by the loop monitor.
LAG_BOUNDS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
# Why a child started again: its last end. "error": it raised (or failed to start); "exit": it
# returned or shut down and its restart type restarts that; "stopped": its supervisor stopped
# it first (a sibling's restart under one-for-all or rest-for-one, `corral restart`, a reload).
REASONS: Final = ("error", "exit", "stopped")
SWEEP_FLOOR: Final = 1024  # Counters keeps this many children's last ends before a sweep
_STATES: Final = tuple(s.value for s in ChildStatus)


@attrs.define(eq=False)
class Counters:
    """What the snapshot cannot tell: counts of events, commands and loop lag, by key.

    ``is_dynamic(path)`` says whether the supervisor at *path* is dynamic: its children are
    counted under ``path + "/*"``. ``is_gone(path)`` says whether the child at *path* has
    left the tree for good: what is kept per child path is forgotten then, without waiting
    for a scrape's ``prune``, so that churn (a pool's children started and ended by the
    hundred thousand) leaves memory flat.
    """

    is_dynamic: Callable[[str], bool] = lambda _: False
    is_gone: Callable[[str], bool] = lambda _: False
    restarts: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, reason)
    exits: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, kind)
    dead_letters: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, reason)
    escalations: Counter[str] = attrs.field(factory=Counter)  # supervisor path
    gave_up: Counter[str] = attrs.field(factory=Counter)
    given_up: Counter[str] = attrs.field(factory=Counter)  # children past max_restarts, by path
    commands: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (command, result)
    lag: Histogram = attrs.field(factory=lambda: Histogram(LAG_BOUNDS))
    stalls: int = 0
    _ended: dict[str, str] = attrs.field(factory=dict)  # path -> reason of its last end
    _sweep_at: int = SWEEP_FLOOR  # entries in _ended that make the next sweep

    def key(self, path: str) -> str:
        """The ``path`` label: the child's, or its dynamic supervisor's ``/*``."""
        parent = parent_path(path)
        return f"{parent.rstrip('/')}/*" if path != "/" and self.is_dynamic(parent) else path

    def observe(self, event: Event) -> None:
        """An ``EventBus`` observer."""
        match event:
            case ChildStarted(path=path, restart=restart):
                reason = self._ended.pop(path, "stopped")
                if restart:  # not a first start, nor an operator's start of a stopped child
                    self.restarts[self.key(path), reason] += 1
            case ChildExited(path=path, kind=kind, exception=exception):
                self.exits[self.key(path), kind.value] += 1
                if kind is ExitKind.ERROR:
                    self._end(path, "error")
                elif isinstance(exception, SupervisorGaveUpError):  # a sub-supervisor's
                    self._end(path, "gave_up")
                else:
                    self._end(path, "exit")
            case StartFailed(path=path):
                self.exits[self.key(path), "start_error"] += 1
                self._end(path, "error")
            case ChildStopped(path=path):
                if path not in self._ended:  # an exit seen first is the reason
                    self._end(path, "stopped")
            case SupervisorEscalated(path=path):
                self.escalations[path] += 1
            case SupervisorGaveUp(path=path):
                self.gave_up[path] += 1
            case ChildGivenUp(path=path):
                self.given_up[self.key(path)] += 1
            case MessageDeadLettered(path=path, reason=reason):
                self.dead_letters[self.key(path), reason] += 1
            case _:
                pass

    def _end(self, path: str, reason: str) -> None:
        self._ended[path] = reason
        if len(self._ended) >= self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        """Forget the ends of children gone for good (a temporary child's exit, a pool's
        terminated child: no start will ever read them). Run when the entries have doubled
        since the last sweep, so its cost is constant per event, amortized."""
        self._ended = {p: r for p, r in self._ended.items() if not self.is_gone(p)}
        self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._ended))

    def command(self, command: str, result: str) -> None:
        """A control command was answered (*result*: ``ok`` or the error code)."""
        self.commands[command, result] += 1

    def prune(self, present: Collection[str], dormant: Collection[str]) -> None:
        """Forget the counts of children (and pools) no longer in the tree: *present* holds
        every child's path and every pool's key; below a *dormant* supervisor (not running
        now: in backoff, held, failed) counts are kept for when it runs again."""

        def gone(path: str) -> bool:
            return path not in present and not any(within(path, top) for top in dormant)

        for counter in (self.restarts, self.exits, self.dead_letters):
            for key in [k for k in counter if gone(k[0])]:
                del counter[key]
        for path in [p for p in self._ended if gone(p)]:
            del self._ended[path]
        for path in [p for p in self.given_up if gone(p)]:
            del self.given_up[path]


def _label(value: str) -> str:
    """A label value escaped for the text format (paths rarely need it)."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    """An int as itself, a float by repr, infinity as Prometheus writes it."""
    return "+Inf" if value == math.inf else repr(value)


class _Text:
    """The text exposition format (0.0.4), written directly: the tree's families have tens of
    thousands of samples, and formatting them through ``prometheus_client``'s generic
    ``Metric`` objects took most of a scrape's time."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def family(self, name: str, kind: str, doc: str) -> None:
        self.parts.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.parts.append(f"{name}{{{inner}}} {_number(value)}\n")
        else:
            self.parts.append(f"{name} {_number(value)}\n")

    def histogram(self, name: str, h: Histogram, **labels: str) -> None:
        inner = "".join(f'{k}="{_label(v)}",' for k, v in labels.items())
        cumulative = 0
        for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
            cumulative += count
            self.parts.append(f'{name}_bucket{{{inner}le="{_number(bound)}"}} {cumulative}\n')
        outer = f"{{{inner.rstrip(',')}}}" if inner else ""
        self.parts.append(f"{name}_sum{outer} {h.sum!r}\n{name}_count{outer} {h.count}\n")

    def text(self) -> str:
        return "".join(self.parts)


@attrs.define(eq=False)
class _Pool:
    """A dynamic supervisor's children, summed."""

    up: int = 0
    handled: int = 0
    depth: int = 0
    capacity: float = 0.0


@attrs.define(eq=False)
class _Breakers:
    """One breaker's figures (summed over a pool's children, which share its name)."""

    states: Counter[BreakerState] = attrs.field(factory=Counter)
    calls: Counter[str] = attrs.field(factory=Counter)
    entered: Counter[BreakerState] = attrs.field(factory=Counter)

    def add(self, b: BreakerStatistics) -> None:
        self.states[b.state] += 1
        calls = self.calls
        calls["success"] += b.succeeded
        calls["failure"] += b.failed
        calls["rejected"] += b.rejected
        calls["ignored"] += b.ignored
        for state, n in b.entered:
            self.entered[state] += n


class TreeCollector:
    """The tree's metrics and the daemon's own, as exposition text (``tree()`` is None
    before the boot and after the stop: only the daemon's families are written then)."""

    def __init__(
        self,
        tree: Callable[[], Tree | None],
        counters: Counters,
        info: Callable[[], dict[str, str]],
        ready: Callable[[], bool],
    ) -> None:
        self._tree = tree
        self._counters = counters
        self._info = info
        self._ready = ready

    def text(self) -> str:
        out = _Text()
        self._daemon(out)
        tree = self._tree()
        if tree is not None:
            self._children(out, tree)
        return out.text()

    def _daemon(self, out: _Text) -> None:
        counters = self._counters
        out.family("corral_build_info", "gauge", "The daemon's version and backend.")
        out.sample("corral_build_info", 1, **self._info())
        out.family(
            "corral_ready",
            "gauge",
            "1 when the tree has started and the daemon is not stopping (what /readyz says).",
        )
        out.sample("corral_ready", int(self._ready()))
        out.family(
            "corral_control_commands_total",
            "counter",
            "Control-socket commands answered, by command and result (ok or the error code).",
        )
        for (command, result), n in sorted(counters.commands.items()):
            out.sample("corral_control_commands_total", n, command=command, result=result)
        out.family(
            "corral_event_loop_lag_seconds",
            "histogram",
            "How late the loop monitor's timer fired: time the event loop was busy elsewhere.",
        )
        out.histogram("corral_event_loop_lag_seconds", counters.lag)
        out.family(
            "corral_event_loop_stalls_total",
            "counter",
            "Times the event loop was blocked longer than loop-stall-timeout (the log names"
            " the actor and its stack).",
        )
        out.sample("corral_event_loop_stalls_total", counters.stalls)

    def _children(self, out: _Text, tree: Tree) -> None:  # family by family
        counters = self._counters
        snapshot = tree.statistics()
        now = anyio.current_time()  # the clock of next_restart_at (trio's is offset)
        children: list[ChildStatistics] = []
        pools: dict[str, _Pool] = {}
        supervisors: list[SupervisorStatistics] = []
        every: set[str] = set()
        dormant: list[str] = []
        breakers: dict[tuple[str, str], _Breakers] = {}
        fallbacks: Counter[tuple[str, str]] = Counter()
        _walk(snapshot, children, pools, supervisors, every, dormant, breakers, fallbacks)
        workers = [c for c in children if c.type is ChildType.WORKER]
        present = {c.path for c in children} | set(pools)
        counters.prune(present | every, dormant)

        # The per-child families, the bulk of a big tree's exposition, are written in one
        # f-string per sample.
        parts = out.parts
        running = ChildStatus.RUNNING
        out.family("corral_child_up", "gauge", "1 while the child runs, else 0.")
        parts.extend(
            f'corral_child_up{{path="{_label(c.path)}"}} {int(c.state is running)}\n'
            for c in children
        )
        pooled = [(_label(key), pool) for key, pool in pools.items()]
        parts.extend(f'corral_child_up{{path="{key}"}} {pool.up}\n' for key, pool in pooled)
        labelled = [(_label(c.path), c) for c in workers]
        out.family("corral_mailbox_depth", "gauge", "Messages waiting in the mailbox.")
        parts.extend(f'corral_mailbox_depth{{path="{p}"}} {c.mailbox_depth}\n' for p, c in labelled)
        parts.extend(f'corral_mailbox_depth{{path="{p}"}} {pool.depth}\n' for p, pool in pooled)
        out.family("corral_mailbox_capacity", "gauge", "Mailbox capacity.")
        parts.extend(
            f'corral_mailbox_capacity{{path="{p}"}} {c.mailbox_capacity}\n' for p, c in labelled
        )
        parts.extend(
            f'corral_mailbox_capacity{{path="{p}"}} {pool.capacity}\n' for p, pool in pooled
        )
        out.family(
            "corral_messages_handled_total",
            "counter",
            "Messages handled (one that crashed its actor counts too).",
        )
        parts.extend(
            f'corral_messages_handled_total{{path="{p}"}} {c.handled}\n' for p, c in labelled
        )
        parts.extend(
            f'corral_messages_handled_total{{path="{p}"}} {pool.handled}\n' for p, pool in pooled
        )
        out.family(
            "corral_child_backoff_seconds",
            "gauge",
            "Seconds until the next restart attempt, for children waiting in backoff.",
        )
        for child in children:
            if child.next_restart_at is not None:
                delay = max(0.0, child.next_restart_at - now)
                out.sample("corral_child_backoff_seconds", delay, path=child.path)

        out.family(
            "corral_child_restarts_total",
            "counter",
            "Restarts by reason: error (it raised or failed to start), exit (it ended and its"
            " restart type restarts that), gave_up (a supervisor that gave up), stopped (its"
            " supervisor stopped it first: a sibling's restart, `corral restart`, a reload).",
        )
        restarts = counters.restarts
        parts.extend(  # `error` always, so that rate() sees the first crash
            f'corral_child_restarts_total{{path="{_label(path)}",reason="error"}}'
            f" {restarts[path, 'error']}\n"
            for path in sorted(present)
        )
        for (path, reason), n in sorted(restarts.items()):
            if reason != "error":
                out.sample("corral_child_restarts_total", n, path=path, reason=reason)
        out.family(
            "corral_child_exits_total",
            "counter",
            "Exits by kind: normal, shutdown, error, start_error (only kinds seen).",
        )
        for (path, kind), n in sorted(counters.exits.items()):
            out.sample("corral_child_exits_total", n, path=path, kind=kind)
        out.family(
            "corral_child_given_up_total",
            "counter",
            "Times the child was given up: more exits than its max_restarts within its period"
            " (it is left failed, its supervisor goes on).",
        )
        for path, n in sorted(counters.given_up.items()):
            out.sample("corral_child_given_up_total", n, path=path)
        out.family(
            "corral_dead_letters_total",
            "counter",
            "Messages kept as dead letters, by reason (see `corral dead-letters`).",
        )
        for (path, reason), n in sorted(counters.dead_letters.items()):
            out.sample("corral_dead_letters_total", n, path=path, reason=reason)

        out.family(
            "corral_children",
            "gauge",
            "Children by supervisor and state (states with none are left out, but running).",
        )
        for sup in supervisors:
            by_state = Counter(c.state.value for c in sup.children)
            by_state.setdefault("running", 0)
            for state, n in sorted(by_state.items()):
                out.sample("corral_children", n, supervisor=sup.path, state=state)
        for name, doc, values in (
            (
                "corral_supervisor_restarts_remaining",
                "Restarts the supervisor may still make within its period before it gives up.",
                [s.restarts_remaining for s in supervisors],
            ),
            (
                "corral_supervisor_intensity",
                "The supervisor's restart limit within its period.",
                [s.intensity for s in supervisors],
            ),
        ):
            out.family(name, "gauge", doc)
            for sup, value in zip(supervisors, values, strict=True):
                out.sample(name, value, supervisor=sup.path)
        for name, doc, counter in (
            (
                "corral_supervisor_escalations_total",
                "Times the supervisor exited and escalated to its parent.",
                counters.escalations,
            ),
            (
                "corral_supervisor_gave_up_total",
                "Times the supervisor gave up: more restarts than its intensity in its period.",
                counters.gave_up,
            ),
        ):
            out.family(name, "counter", doc)
            for sup in supervisors:
                out.sample(name, counter[sup.path], supervisor=sup.path)

        _write_breakers(out, breakers)
        out.family(
            "corral_call_fallbacks_total",
            "counter",
            "Calls answered by the caller's fallback instead of the actor, by reason:"
            " not_running, restarting, timeout, mailbox_full, breaker_open.",
        )
        for (path, reason), n in sorted(fallbacks.items()):
            out.sample("corral_call_fallbacks_total", n, path=path, reason=reason)
        level = service_status(snapshot, tree.held).level
        out.family(
            "corral_service_level",
            "gauge",
            "1 for the tree's service level (full, degraded, minimal, unavailable), else 0.",
        )
        for each in ServiceLevel:
            out.sample("corral_service_level", int(each is level), level=each.value)

        alive = {sup.path for sup in supervisors}  # a removed supervisor's timings stay out
        timings = sorted((p, t) for p, t in tree.timings.items() if p in alive)
        out.family(
            "corral_message_handling_seconds",
            "histogram",
            "Time to handle one message, sampled (1 in 32 per actor), by supervisor (those"
            " whose actors handled any).",
        )
        for path, t in timings:
            if t.handling.count:
                out.histogram("corral_message_handling_seconds", t.handling, supervisor=path)
        out.family(
            "corral_call_duration_seconds",
            "histogram",
            "Time from a call's send to its reply, for answered calls, by the callee's"
            " supervisor (those that answered any).",
        )
        for path, t in timings:
            if t.calls.count:
                out.histogram("corral_call_duration_seconds", t.calls, supervisor=path)


def _walk(  # the walk fills all of these in one pass
    sup: SupervisorStatistics,
    children: list[ChildStatistics],
    pools: dict[str, _Pool],
    supervisors: list[SupervisorStatistics],
    every: set[str],
    dormant: list[str],
    breakers: dict[tuple[str, str], _Breakers],
    fallbacks: Counter[tuple[str, str]],
) -> None:
    """Fill: the children of ordinary supervisors, the pools' sums, the supervisors, every
    child's path, the supervisor children that are not running (their subtree is not in
    the snapshot now), the breakers by (path or pool, name) and the fallbacks callers used
    by (path or pool, reason)."""
    supervisors.append(sup)
    pool = None
    key = f"{sup.path.rstrip('/')}/*"
    if sup.dynamic:
        pool = pools[key] = _Pool()
    for child in sup.children:
        for b in child.breakers:
            found = breakers.get((key if pool else child.path, b.name))
            if found is None:
                found = breakers[key if pool else child.path, b.name] = _Breakers()
            found.add(b)
        for reason, n in child.fallbacks:
            fallbacks[key if pool else child.path, reason] += n
        every.add(child.path)
        if child.type is ChildType.SUPERVISOR and child.supervisor is None:
            dormant.append(child.path)
        if pool is not None:
            pool.up += child.state is ChildStatus.RUNNING
            pool.handled += child.handled
            pool.depth += child.mailbox_depth
            pool.capacity += child.mailbox_capacity
        else:
            children.append(child)
        if child.supervisor is not None:
            _walk(
                child.supervisor, children, pools, supervisors, every, dormant, breakers, fallbacks
            )


def _write_breakers(out: _Text, breakers: dict[tuple[str, str], _Breakers]) -> None:
    out.family(
        "corral_breaker_state",
        "gauge",
        "1 for the state each circuit breaker is in (closed, open, half-open), else 0; for a"
        " pool (path /pool/*), how many of its children's breakers of that name are in it.",
    )
    ordered = sorted(breakers.items())
    for (path, name), b in ordered:
        for state in BreakerState:
            out.sample(
                "corral_breaker_state", b.states[state], path=path, breaker=name, state=state.value
            )
    out.family(
        "corral_breaker_calls_total",
        "counter",
        "Calls through each breaker, by result: success, failure, rejected (while open or"
        " half-open with its trials under way) and ignored (neither way).",
    )
    for (path, name), b in ordered:
        for result in ("success", "failure", "rejected", "ignored"):
            out.sample(
                "corral_breaker_calls_total",
                b.calls[result],
                path=path,
                breaker=name,
                result=result,
            )
    out.family(
        "corral_breaker_transitions_total",
        "counter",
        "Each breaker's changes of state, by the state entered (to).",
    )
    for (path, name), b in ordered:
        for state in BreakerState:
            out.sample(
                "corral_breaker_transitions_total",
                b.entered[state],
                path=path,
                breaker=name,
                to=state.value,
            )


class ProcessCollector:
    """The daemon process' figures from psutil, under Prometheus' standard ``process_`` names."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        p = self._process
        with p.oneshot():
            memory = p.memory_info()
            cpu = p.cpu_times()
            fds = p.num_fds()
            threads = p.num_threads()
            started = p.create_time()
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", value=memory.rss
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=memory.vms
        )
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            value=cpu.user + cpu.system,
        )
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=fds)
        yield GaugeMetricFamily("process_threads", "Number of OS threads.", value=threads)
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=started,
        )


def exposition(collector: TreeCollector, process: CollectorRegistry) -> bytes:
    """The whole text exposition: the tree's and daemon's families, then the process'."""
    return collector.text().encode() + generate_latest(process)


@final
class HostMetrics:
    """What a host of a tree (the daemon, an embedded tree) serves as metrics: counters fed by
    the tree's events, the tree's snapshot, and the process' own figures; as the exposition
    text (``corral metrics``) and as the listener's pages."""

    __slots__ = ("_unready", "collector", "counters", "process")

    def __init__(
        self,
        tree: Callable[[], Tree | None],
        is_dynamic: Callable[[str], bool],
        is_gone: Callable[[str], bool],
        info: Callable[[], dict[str, str]],
        unready: Callable[[], str | None],
    ) -> None:
        self._unready = unready  # why /readyz says 503, or None when ready
        self.counters = Counters(is_dynamic=is_dynamic, is_gone=is_gone)
        self.collector = TreeCollector(tree, self.counters, info, lambda: unready() is None)
        self.process = process_registry()

    def exposition(self) -> bytes:
        """The whole text exposition, as ``/metrics`` serves it."""
        return exposition(self.collector, self.process)

    def pages(self) -> dict[str, Callable[[], Page]]:
        """``/metrics``, ``/healthz`` (the loop answers) and ``/readyz`` (503 with the
        reason while there is one)."""

        def healthz() -> Page:
            return text_page(200, "ok: the event loop answers\n")

        def readyz() -> Page:
            why = self._unready()
            if why is None:
                return text_page(200, "ready\n")
            return text_page(503, f"not ready: {why}\n")

        def metrics() -> Page:
            return 200, CONTENT_TYPE, self.exposition()

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}


def process_registry() -> CollectorRegistry:
    """A registry of the process' figures (the daemon's own, never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessCollector())
    return registry
