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
import time
from collections import Counter
from typing import TYPE_CHECKING, Final

import attrs
import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from corral.actors.timing import Histogram
from corral.daemon.view import parent_path
from corral.supervisors.core import ChildStatus
from corral.supervisors.events import (
    ChildExited,
    ChildStarted,
    ChildStopped,
    Event,
    MessageDeadLettered,
    StartFailed,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.spec import ExitKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from corral.supervisors.runtime import ChildStatistics, SupervisorStatistics
    from corral.supervisors.tree import Tree

__all__ = (
    "CONTENT_TYPE",
    "LAG_BOUNDS",
    "REASONS",
    "Counters",
    "ProcessCollector",
    "TreeCollector",
    "exposition",
    "make_registry",
)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Event-loop lag (seconds late a timer fired); a stall is counted apart, by the loop monitor.
LAG_BOUNDS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
# Why a child started again: its last end. "error": it raised (or failed to start); "exit": it
# returned or shut down and its restart type restarts that; "stopped": its supervisor stopped
# it first (a sibling's restart under one-for-all or rest-for-one, `corral restart`, a reload).
REASONS: Final = ("error", "exit", "stopped")
_STATES: Final = tuple(s.value for s in ChildStatus)


@attrs.define(eq=False)
class Counters:
    """What the snapshot cannot tell: counts of events, commands and loop lag, by key.

    ``is_dynamic(path)`` says whether the supervisor at *path* is dynamic: its children are
    counted under ``path + "/*"``.
    """

    is_dynamic: Callable[[str], bool] = lambda _: False
    restarts: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, reason)
    exits: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, kind)
    dead_letters: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (path, reason)
    escalations: Counter[str] = attrs.field(factory=Counter)  # supervisor path
    gave_up: Counter[str] = attrs.field(factory=Counter)
    commands: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (command, result)
    lag: Histogram = attrs.field(factory=lambda: Histogram(LAG_BOUNDS))
    stalls: int = 0
    _ended: dict[str, str] = attrs.field(factory=dict)  # path -> reason of its last end

    def key(self, path: str) -> str:
        """The ``path`` label: the child's, or its dynamic supervisor's ``/*``."""
        parent = parent_path(path)
        return f"{parent.rstrip('/')}/*" if path != "/" and self.is_dynamic(parent) else path

    def observe(self, event: Event) -> None:
        """An ``EventBus`` observer."""
        match event:
            case ChildStarted(path=path):
                reason = self._ended.pop(path, None)
                if reason is not None:
                    self.restarts[self.key(path), reason] += 1
            case ChildExited(path=path, kind=kind):
                self.exits[self.key(path), kind.value] += 1
                self._ended[path] = "error" if kind is ExitKind.ERROR else "exit"
            case StartFailed(path=path):
                self.exits[self.key(path), "start_error"] += 1
                self._ended[path] = "error"
            case ChildStopped(path=path):
                self._ended.setdefault(path, "stopped")  # an exit seen first is the reason
            case SupervisorEscalated(path=path):
                self.escalations[path] += 1
            case SupervisorGaveUp(path=path):
                self.gave_up[path] += 1
            case MessageDeadLettered(path=path, reason=reason):
                self.dead_letters[self.key(path), reason] += 1
            case _:
                pass

    def command(self, command: str, result: str) -> None:
        """A control command was answered (*result*: ``ok`` or the error code)."""
        self.commands[command, result] += 1

    def prune(self, present: set[str]) -> None:
        """Forget the counts of children (and pools) no longer in the tree."""
        for counter in (self.restarts, self.exits, self.dead_letters):
            for key in [k for k in counter if k[0] not in present]:
                del counter[key]
        for path in [p for p in self._ended if self.key(p) not in present]:
            del self._ended[path]


def _histogram(
    name: str, doc: str, label: str | None, histograms: Iterable[tuple[str, Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for value, h in histograms:
        cumulative, buckets = 0, []
        for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        family.add_metric([value] if label else [], buckets, h.sum)
    return family


@attrs.define(eq=False)
class _Pool:
    """A dynamic supervisor's children, summed."""

    up: int = 0
    handled: int = 0
    depth: int = 0
    capacity: float = 0.0


class TreeCollector:
    """A prometheus ``Collector`` over a running tree (``tree()`` is None before and after)."""

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

    def collect(self) -> Iterator[Metric]:  # one family after another
        counters = self._counters
        info = GaugeMetricFamily(
            "corral_build_info", "The daemon's version and backend.", labels=list(self._info())
        )
        info.add_metric(list(self._info().values()), 1)
        yield info
        yield GaugeMetricFamily(
            "corral_ready",
            "1 when the tree has started and the daemon is not stopping (what /readyz says).",
            value=int(self._ready()),
        )
        commands = CounterMetricFamily(
            "corral_control_commands",
            "Control-socket commands answered, by command and result (ok or the error code).",
            labels=["command", "result"],
        )
        for (command, result), n in sorted(counters.commands.items()):
            commands.add_metric([command, result], n)
        yield commands
        lag = _histogram(
            "corral_event_loop_lag_seconds",
            "How late the loop monitor's timer fired: time the event loop was busy elsewhere.",
            None,
            [("", counters.lag)],
        )
        yield lag
        yield CounterMetricFamily(
            "corral_event_loop_stalls",
            "Times the event loop was blocked longer than loop-stall-timeout (see the log for"
            " the actor and stack).",
            value=counters.stalls,
        )
        tree = self._tree()
        if tree is None:
            return
        snapshot = tree.statistics()
        now = time.monotonic()
        children: list[tuple[ChildStatistics, str]] = []
        pools: dict[str, _Pool] = {}
        supervisors: list[SupervisorStatistics] = []
        self._walk(snapshot, children, pools, supervisors)
        present = {c.path for c, _ in children} | set(pools)
        counters.prune(present)

        up = GaugeMetricFamily(
            "corral_child_up", "1 while the child runs, else 0.", labels=["path"]
        )
        depth = GaugeMetricFamily(
            "corral_mailbox_depth", "Messages waiting in the mailbox.", labels=["path"]
        )
        capacity = GaugeMetricFamily(
            "corral_mailbox_capacity", "Mailbox capacity (+Inf: unbounded).", labels=["path"]
        )
        handled = CounterMetricFamily(
            "corral_messages_handled",
            "Messages handled (a crash on one counts it too).",
            labels=["path"],
        )
        backoff = GaugeMetricFamily(
            "corral_child_backoff_seconds",
            "Seconds until the next restart attempt, for children waiting in backoff.",
            labels=["path"],
        )
        for child, _ in children:
            if child.mailbox_capacity == 0 and child.type.value == "supervisor":
                up.add_metric([child.path], int(child.state is ChildStatus.RUNNING))
                continue
            path = child.path
            up.add_metric([path], int(child.state is ChildStatus.RUNNING))
            depth.add_metric([path], child.mailbox_depth)
            capacity.add_metric([path], child.mailbox_capacity)
            handled.add_metric([path], child.handled)
            if child.next_restart_at is not None:
                backoff.add_metric([path], max(0.0, child.next_restart_at - now))
        for key, pool in pools.items():
            up.add_metric([key], pool.up)
            depth.add_metric([key], pool.depth)
            capacity.add_metric([key], pool.capacity)
            handled.add_metric([key], pool.handled)
        yield from (up, depth, capacity, handled, backoff)

        restarts = CounterMetricFamily(
            "corral_child_restarts",
            "Restarts by reason: error (it raised or failed to start), exit (it ended and its"
            " restart type restarts that), stopped (its supervisor stopped it first: a"
            " sibling's restart, `corral restart`, a reload).",
            labels=["path", "reason"],
        )
        exits = CounterMetricFamily(
            "corral_child_exits",
            "Exits by kind: normal, shutdown, error, start_error.",
            labels=["path", "kind"],
        )
        for path in sorted(present):  # `error` always, so rate() sees the first crash
            restarts.add_metric([path, "error"], counters.restarts[path, "error"])
            exits.add_metric([path, "error"], counters.exits[path, "error"])
        for (path, reason), n in counters.restarts.items():
            if reason != "error":
                restarts.add_metric([path, reason], n)
        for (path, kind), n in counters.exits.items():
            if kind != "error":
                exits.add_metric([path, kind], n)
        yield restarts
        yield exits
        letters = CounterMetricFamily(
            "corral_dead_letters",
            "Messages kept as dead letters, by reason (see `corral dead-letters`).",
            labels=["path", "reason"],
        )
        for (path, reason), n in sorted(counters.dead_letters.items()):
            letters.add_metric([path, reason], n)
        yield letters

        states = GaugeMetricFamily(
            "corral_children", "Children by supervisor and state.", labels=["supervisor", "state"]
        )
        remaining = GaugeMetricFamily(
            "corral_supervisor_restarts_remaining",
            "Restarts the supervisor may still make within its period before it gives up.",
            labels=["supervisor"],
        )
        intensity = GaugeMetricFamily(
            "corral_supervisor_intensity",
            "The supervisor's restart limit within its period.",
            labels=["supervisor"],
        )
        escalations = CounterMetricFamily(
            "corral_supervisor_escalations",
            "Times the supervisor exited and escalated to its parent.",
            labels=["supervisor"],
        )
        gave_up = CounterMetricFamily(
            "corral_supervisor_gave_up",
            "Times the supervisor gave up: more restarts than its intensity within its period.",
            labels=["supervisor"],
        )
        for sup in supervisors:
            by_state = Counter(c.state.value for c in sup.children)
            for state in _STATES:
                states.add_metric([sup.path, state], by_state[state])
            remaining.add_metric([sup.path], sup.restarts_remaining)
            intensity.add_metric([sup.path], sup.intensity)
            escalations.add_metric([sup.path], counters.escalations[sup.path])
            gave_up.add_metric([sup.path], counters.gave_up[sup.path])
        yield from (states, remaining, intensity, escalations, gave_up)

        timings = tree.timings
        yield _histogram(
            "corral_message_handling_seconds",
            "Time to handle one message, sampled (1 in 8 per actor), by supervisor.",
            "supervisor",
            sorted((path, t.handling) for path, t in timings.items()),
        )
        yield _histogram(
            "corral_call_duration_seconds",
            "Time from a call's send to its reply, for answered calls, by the callee's supervisor.",
            "supervisor",
            sorted((path, t.calls) for path, t in timings.items()),
        )

    def _walk(
        self,
        sup: SupervisorStatistics,
        children: list[tuple[ChildStatistics, str]],
        pools: dict[str, _Pool],
        supervisors: list[SupervisorStatistics],
    ) -> None:
        supervisors.append(sup)
        pool = None
        if sup.dynamic:
            pool = pools[f"{sup.path.rstrip('/')}/*"] = _Pool()
        for child in sup.children:
            if pool is not None:
                pool.up += child.state is ChildStatus.RUNNING
                pool.handled += child.handled
                pool.depth += child.mailbox_depth
                pool.capacity += child.mailbox_capacity
            else:
                children.append((child, sup.path))
            if child.supervisor is not None:
                self._walk(child.supervisor, children, pools, supervisors)


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


def make_registry(collector: TreeCollector) -> CollectorRegistry:
    """A registry of the daemon's own (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    registry.register(ProcessCollector())
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of everything in *registry*."""
    return generate_latest(registry)
