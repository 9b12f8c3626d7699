"""Restart latency as the daemon runs it, beside library mode in the same process.

``python -m bench.daemon BACKEND FORMAT CRASHES WARMUP ROUNDS`` prints one JSON object: the
latencies of library mode and of the daemon's configuration (``restart.daemon_restarts``), each
from its round with the lowest median, and how many exits reached the log.

``python -m bench`` runs it in a fresh process per log format, so that the daemon's logging
setup (the root logger's handler, captured warnings) stays out of the other benchmarks:
``json`` writes JSON lines to a temporary file, ``journal`` writes to the journald of the
process (a private, real one: the process runs under ``with-journald``). Once measured, every
exit of every round is counted in what was written: a figure that lost events would not count.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
from typing import IO, TYPE_CHECKING

import anyio

from bench import restart
from bench.report import median

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("count_journal_exits", "main", "measure")

EXITED = "child-exited"


def measure(
    backend: str, log_format: str, crashes: int, warmup: int, rounds: int, stream: IO[str] | None
) -> tuple[list[float], list[float]]:
    """(library, daemon) latencies, alternating for *rounds*; each keeps its lowest median."""
    library: list[float] = []
    daemon: list[float] = []
    for _ in range(rounds):
        gc.collect()
        ours = anyio.run(restart.corral_restarts, crashes + warmup, backend=backend)
        gc.collect()
        probe = anyio.run(
            restart.daemon_restarts, crashes + warmup, backend, log_format, stream, backend=backend
        )
        for kept, latencies in (
            (library, ours.latencies(warmup)),
            (daemon, probe.latencies(warmup)),
        ):
            if not kept or median(latencies) < median(kept):
                kept[:] = latencies
    return library, daemon


def count_journal_exits() -> int:
    """Entries of exits in this process's journal, once journald has written what it got."""
    from systemd import journal  # only under with-journald

    subprocess.run(["journalctl", "--sync"], check=True)  # noqa: S607  # the journal's own tool
    reader = journal.Reader()
    reader.add_match(CORRAL_EVENT=EXITED)
    return sum(1 for _ in reader)


def main(argv: Sequence[str] | None = None) -> int:
    backend, log_format, *counts = argv if argv is not None else sys.argv[1:]
    crashes, warmup, rounds = map(int, counts)
    with tempfile.TemporaryFile("w+") as stream:
        library, daemon = measure(backend, log_format, crashes, warmup, rounds, stream)
        if log_format == "journal":
            logged = count_journal_exits()
        else:
            stream.seek(0)
            logged = sum(json.loads(line).get("event") == EXITED for line in stream)
    answer = {"library": library, "daemon": daemon, "exits": rounds * (crashes + warmup)}
    print(json.dumps(answer | {"logged": logged}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
