"""Run the benchmarks and print a markdown table: ``python -m bench [--quick] [--backend ...]``.

Every benchmark runs corral and its raw baseline on each backend, one event loop per
measurement, with a ``gc.collect()`` before each (``bench.runs``); ``awake-start`` and the
daemon rows take each sample in a process of its own, the rest in this one. Restart latency
and throughput alternate raw and corral for a few rounds and keep each one's best round, so a
burst of noise on a shared machine does not decide a ratio. Progress goes to stderr, the
table to stdout; the exit status is 0 whether or not targets are met (this measures, it does
not gate).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

import corral
from bench import control, group, message, population, restart, scrape
from bench.report import (
    BYTES,
    MEBIBYTES,
    MICROSECONDS,
    MILLISECONDS,
    PER_SECOND,
    SECONDS,
    Bound,
    Row,
    Target,
    median,
    p99,
    render,
)
from bench.runs import run_corral, run_raw

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

BACKENDS: Final = ("asyncio", "trio")
BENCHMARKS: Final = (
    "restart",
    "daemon-restart",
    "cast",
    "call",
    "memory",
    "resilience",
    "group-restart",
    "awake-start",
    "lifecycle",
    "control",
    "scrape",
)

KIB: Final = 1024


@attrs.frozen
class Sizes:
    """How much each benchmark does."""

    crashes: int  # restarts measured (after a warm-up of a tenth, at most 100)
    casts: int
    calls: int
    actors: int  # for memory, for start/stop and for the awake start
    members: int  # of the group that restarts
    group_restarts: int  # group restarts measured per round (the median counts)
    rounds: int  # restart and throughput alternate raw and corral this often; the best counts
    daemon_actors: int  # in the daemon for the control-socket benchmark
    statuses: int
    pings: int
    commands: int
    scrapes: int


FULL: Final = Sizes(
    crashes=10_000,
    casts=1_000_000,
    calls=100_000,
    actors=100_000,
    members=1_000,
    group_restarts=20,
    rounds=3,
    daemon_actors=10_000,
    statuses=100,
    pings=10_000,
    commands=1_000,
    scrapes=30,
)
QUICK: Final = Sizes(
    crashes=1_000,
    casts=50_000,
    calls=5_000,
    actors=5_000,
    members=200,
    group_restarts=5,
    rounds=1,
    daemon_actors=1_000,
    statuses=10,
    pings=500,
    commands=50,
    scrapes=5,
)


def _best_of(
    sizes: Sizes,
    backend: str,
    raw: tuple[Callable[[int], Awaitable[float]], Callable[[int], Awaitable[float]]],
    ours: Callable[[int], Awaitable[float]],
    n: int,
) -> tuple[float, float]:
    """The highest rate of each over ``sizes.rounds`` alternating runs: (corral, raw)."""
    best_raw = best_ours = 0.0
    for _ in range(sizes.rounds):
        best_raw = max(best_raw, run_raw(backend, *raw, n))
        best_ours = max(best_ours, run_corral(backend, ours, n))
    return best_ours, best_raw


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_restart(backend: str, sizes: Sizes) -> list[Row]:
    warmup = min(100, sizes.crashes // 10)
    crashes = sizes.crashes + warmup
    raw: list[float] = []
    ours: list[float] = []
    for _ in range(sizes.rounds):  # keep each one's round with the lowest median
        raw_round = run_raw(
            backend, restart.raw_asyncio_restarts, restart.raw_trio_restarts, crashes
        ).latencies(warmup)
        ours_round = run_corral(backend, restart.corral_restarts, crashes).latencies(warmup)
        assert len(raw_round) == len(ours_round) == sizes.crashes
        if not raw or median(raw_round) < median(raw):
            raw = raw_round
        if not ours or median(ours_round) < median(ours):
            ours = ours_round
    return [
        Row(
            f"restart latency, median of {sizes.crashes:,}",
            backend,
            median(ours),
            median(raw),
            MICROSECONDS,
            Target(Bound.RATIO_AT_MOST, 2.0),
        ),
        Row(
            f"restart latency, p99 of {sizes.crashes:,}", backend, p99(ours), p99(raw), MICROSECONDS
        ),
    ]


def _shared_tool(name: str) -> str | None:
    """The shared tool *name* (``$CORRAL_SHARED_TOOLS``, default /work/shared/tools), if any."""
    tools = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools"))
    found = tools / name
    return str(found) if found.exists() else shutil.which(name)


def bench_daemon_restart(backend: str, sizes: Sizes) -> list[Row]:
    """Restart latency with what ``corral run`` attaches (``bench.daemon``), logging JSON lines
    and to a real journald, beside library mode measured in the same process."""
    warmup = min(100, sizes.crashes // 10)
    counts = [str(sizes.crashes), str(warmup), str(sizes.rounds)]
    rows: list[Row] = []
    for log_format, shown in (("json", "JSON lines"), ("journal", "journald")):
        command = [sys.executable, "-m", "bench.daemon", backend, log_format, *counts]
        if log_format == "journal":
            with_journald = _shared_tool("with-journald")
            if with_journald is None:
                _progress("  no with-journald (set CORRAL_SHARED_TOOLS): journald rows left out")
                continue
            command = [with_journald, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _progress(f"  {shown}: {' '.join(command)} failed:\n{done.stderr}")
            continue
        figures = json.loads(done.stdout.splitlines()[-1])
        library, daemon = figures["library"], figures["daemon"]
        assert len(library) == len(daemon) == sizes.crashes
        if figures["logged"] != figures["exits"]:  # a figure that lost events does not count
            msg = f"{shown}: {figures['exits']} exits, {figures['logged']} logged"
            raise AssertionError(msg)
        name = f"restart latency in the daemon ({shown}, metrics on)"
        rows += [
            Row(
                f"{name}, median",
                backend,
                median(daemon),
                median(library),
                MICROSECONDS,
                Target(Bound.RATIO_AT_MOST, 1.5),
            ),
            Row(f"{name}, p99", backend, p99(daemon), p99(library), MICROSECONDS),
        ]
    return rows


def bench_cast(backend: str, sizes: Sizes) -> list[Row]:
    raw_casts = (message.raw_asyncio_casts, message.raw_trio_casts)
    ours, raw = _best_of(sizes, backend, raw_casts, message.corral_casts, sizes.casts)
    target = Target(Bound.RATIO_AT_LEAST, 1.0)
    timed, raw_again = _best_of(sizes, backend, raw_casts, message.corral_casts_timed, sizes.casts)
    return [
        Row(f"cast throughput ({sizes.casts:,} msgs)", backend, ours, raw, PER_SECOND, target),
        Row(
            f"cast throughput, metrics on ({sizes.casts:,} msgs)",
            backend,
            timed,
            raw_again,
            PER_SECOND,
            Target(Bound.RATIO_AT_LEAST, 0.9),
        ),
    ]


def bench_call(backend: str, sizes: Sizes) -> list[Row]:
    raw_calls = (message.raw_asyncio_calls, message.raw_trio_calls)
    ours, raw = _best_of(sizes, backend, raw_calls, message.corral_calls, sizes.calls)
    target = Target(Bound.RATIO_AT_LEAST, 0.5)
    timed, raw_again = _best_of(sizes, backend, raw_calls, message.corral_calls_timed, sizes.calls)
    return [
        Row(f"call round trips ({sizes.calls:,})", backend, ours, raw, PER_SECOND, target),
        Row(
            f"call round trips, metrics on ({sizes.calls:,})",
            backend,
            timed,
            raw_again,
            PER_SECOND,
            Target(Bound.RATIO_AT_LEAST, 0.5),
        ),
    ]


def bench_resilience(backend: str, sizes: Sizes) -> list[Row]:
    """Circuit breakers and a health probe on the message path: beside the same actor
    without either (the "raw" column here is corral without them, in the same run)."""
    within = Target(Bound.RATIO_AT_LEAST, 0.95)
    rows = []
    for what, n, plain, declared, guarded, probed in (
        (
            f"cast throughput ({sizes.casts:,} msgs)",
            sizes.casts,
            message.corral_casts,
            message.corral_casts_breakers,
            message.corral_casts_guarded,
            message.corral_casts_probed,
        ),
        (
            f"call round trips ({sizes.calls:,})",
            sizes.calls,
            message.corral_calls,
            message.corral_calls_breakers,
            message.corral_calls_guarded,
            message.corral_calls_probed,
        ),
    ):
        best = dict.fromkeys((plain, declared, guarded, probed), 0.0)
        # The best of each over alternating rounds, in turn first and last: a run's place in
        # the sequence alone moves its rate by 5-10% on this machine.
        for round_ in range(max(sizes.rounds, 4)):
            for fn in list(best)[:: 1 if round_ % 2 == 0 else -1]:
                best[fn] = max(best[fn], run_corral(backend, fn, n))
        base, with_breakers, through, with_probe = best.values()
        rows.append(
            Row(
                f"{what}, 2 closed breakers vs none",
                backend,
                with_breakers,
                base,
                PER_SECOND,
                within,
            )
        )
        rows.append(
            Row(
                f"{what}, probed {1 / message.PROBE_EVERY:g} times a second vs not",
                backend,
                with_probe,
                base,
                PER_SECOND,
                within,
            )
        )
        rows.append(
            Row(
                f"{what}, each through its closed breaker vs none",
                backend,
                through,
                base,
                PER_SECOND,
            )
        )
    return rows


def bench_memory(backend: str, sizes: Sizes) -> list[Row]:
    raw = run_raw(backend, population.raw_asyncio_memory, population.raw_trio_memory, sizes.actors)
    ours = run_corral(backend, population.corral_memory, sizes.actors)
    awake = run_corral(backend, population.corral_memory_awake, sizes.actors)
    target = Target(Bound.AT_MOST, 6 * KIB)
    return [
        Row(f"memory per idle actor ({sizes.actors:,})", backend, ours, raw, BYTES, target),
        Row(
            f"memory per idle actor after 1 message ({sizes.actors:,})",
            backend,
            awake,
            raw,
            BYTES,
            target,
        ),
    ]


def bench_group_restart(backend: str, sizes: Sizes) -> list[Row]:
    n, restarts = sizes.members, sizes.group_restarts
    rows = []
    variants = [
        (strategy, on_start)
        for on_start in (False, True)
        for strategy in (corral.Strategy.ONE_FOR_ALL, corral.Strategy.REST_FOR_ONE)
    ]
    for strategy, on_start in variants:
        raw = ours = math.inf
        for _ in range(sizes.rounds):  # the lowest median of each
            by_hand = (  # with on_start, by hand too each member is ready before the next
                functools.partial(group.raw_asyncio_group, restarts=restarts, ordered=on_start),
                functools.partial(group.raw_trio_group, restarts=restarts, ordered=on_start),
            )
            raw = min(raw, run_raw(backend, *by_hand, n))
            ours_fn = functools.partial(
                group.corral_group_restart, restarts=restarts, strategy=strategy, on_start=on_start
            )
            ours = min(ours, run_corral(backend, ours_fn, n))
        rows.append(
            Row(
                f"{strategy.value} restart of {n:,} children"
                f"{' with on_start' if on_start else ''}, median of {restarts}",
                backend,
                ours,
                raw,
                MILLISECONDS,
                Target(Bound.RATIO_AT_MOST, 1.5),
            )
        )
    return rows


def bench_awake_start(backend: str, sizes: Sizes) -> list[Row]:
    """Each sample in a fresh process (``bench.awake``), the baselines and corral's two
    variants alternating for ``sizes.rounds`` rounds; the fastest of each counts. Against raw
    spawning, with the target; against spawning by hand with a cancel scope per task (in turn,
    for on_start), without one: what corral adds beyond what any supervisor must."""
    n = sizes.actors
    variants = ("raw", "scoped", "ordered", "on_start", "woken")
    best = dict.fromkeys(variants, math.inf)
    for _ in range(sizes.rounds):
        for variant in variants:
            command = [sys.executable, "-m", "bench.awake", backend, variant, str(n)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            best[variant] = min(best[variant], float(done.stdout.splitlines()[-1]))
    target = Target(Bound.RATIO_AT_MOST, 1.5, also=Target(Bound.BELOW, 5.0))
    # each of corral's variants, and the hand-written floor it is set beside
    kinds = (
        ("on_start", "with on_start", "ordered", ", in turn"),
        ("woken", "woken by a message", "scoped", ""),
    )
    rows = [
        Row(
            f"start {n:,} awake actors ({how})",
            backend,
            best[variant],
            best["raw"],
            SECONDS,
            target,
        )
        for variant, how, _, _ in kinds
    ]
    rows += [
        Row(
            f"start {n:,} awake actors ({how}), against by hand with a cancel scope each{spawned}",
            backend,
            best[variant],
            best[floor],
            SECONDS,
        )
        for variant, how, floor, spawned in kinds
    ]
    return rows


def bench_lifecycle(backend: str, sizes: Sizes) -> list[Row]:
    raw = run_raw(
        backend, population.raw_asyncio_timings, population.raw_trio_timings, sizes.actors
    )
    ours = run_corral(backend, population.corral_timings, sizes.actors)
    target = Target(Bound.BELOW, 5.0)
    n = f"{sizes.actors:,}"
    return [
        Row(f"start {n} actors", backend, ours.start, raw.start, SECONDS, target),
        Row(f"stop {n} actors", backend, ours.stop, raw.stop, SECONDS, target),
    ]


def bench_control(backend: str, sizes: Sizes) -> list[Row]:
    n = sizes.daemon_actors
    ours = control.measure_corral(backend, n, sizes.statuses, sizes.pings, sizes.commands)
    raw = control.measure_raw(backend, n, ours.status_bytes, sizes.statuses, sizes.pings)
    size = f"{n:,} actors, {ours.status_bytes / 1024:,.0f} KiB"
    return [
        Row(
            f"daemon: status of the whole tree ({size}), median",
            backend,
            median(ours.status_latencies),
            median(raw.status_latencies),
            MILLISECONDS,
            Target(Bound.BELOW, 0.1),
        ),
        Row(
            "daemon: ping round trips over the socket",
            backend,
            ours.pings_per_second,
            raw.pings_per_second,
            PER_SECOND,
            Target(Bound.RATIO_AT_LEAST, 0.5),
        ),
        Row(
            "daemon: restart commands (raw: its ping round trips)",
            backend,
            ours.commands_per_second,
            raw.pings_per_second,
            PER_SECOND,
        ),
        Row(
            f"daemon: resident memory with {n:,} actors",
            backend,
            ours.rss,
            raw.rss,
            MEBIBYTES,
            Target(Bound.RATIO_AT_MOST, 1.5),
        ),
    ]


def bench_scrape(backend: str, sizes: Sizes) -> list[Row]:
    n = sizes.daemon_actors
    ours = scrape.measure_corral(backend, n, sizes.scrapes)
    raw = scrape.measure_raw(backend, n, ours.size, sizes.scrapes)
    size = f"{n:,} actors, {ours.size / 1024:,.0f} KiB = {ours.size / n:,.0f} B per actor"
    return [
        Row(
            f"daemon: /metrics scrape ({size}), median",
            backend,
            median(ours.latencies),
            median(raw.latencies),
            MILLISECONDS,
            Target(Bound.BELOW, 0.25),
        )
    ]


RUNNERS: Final[dict[str, Callable[[str, Sizes], list[Row]]]] = {
    "restart": bench_restart,
    "daemon-restart": bench_daemon_restart,
    "cast": bench_cast,
    "call": bench_call,
    "resilience": bench_resilience,
    "memory": bench_memory,
    "group-restart": bench_group_restart,
    "awake-start": bench_awake_start,
    "lifecycle": bench_lifecycle,
    "control": bench_control,
    "scrape": bench_scrape,
}


def environment() -> str:
    """One line saying where and with what the numbers were measured."""
    return (
        f"{datetime.date.today().isoformat()}, Python {platform.python_version()},"
        f" anyio {version('anyio')}, trio {version('trio')}, {os.cpu_count()} CPUs,"
        f" {platform.system()} {platform.machine()}"
    )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="corral beside raw asyncio and trio: restart latency, message throughput,"
        " memory per actor, start and stop of many actors.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts, for a smoke test (seconds, not minutes)"
    )
    parser.add_argument(
        "--backend", choices=(*BACKENDS, "both"), default="both", help="default: both"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    names = [name for name in BENCHMARKS if args.only is None or name in args.only]
    began = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        for backend in backends:
            _progress(f"{name} on {backend} ...")
            rows.extend(RUNNERS[name](backend, sizes))
    print(f"corral bench{' --quick' if args.quick else ''}: {environment()}\n")
    print(render(rows))
    missed = [row for row in rows if row.met is False]
    print(f"\n{len(missed)} of {sum(r.target is not None for r in rows)} targets missed", end="")
    print(f" ({time.perf_counter() - began:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
