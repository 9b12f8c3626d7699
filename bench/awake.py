"""One sample of the ``awake-start`` benchmark, in a process of its own.

``python -m bench.awake BACKEND raw|scoped|ordered|on_start|woken N`` prints the seconds that
start took. Each sample starts from a fresh interpreter: a start of 100,000 actors is mostly
the garbage collector's full passes over a growing heap, and what an earlier run in the same
process left (its freed memory, the collector's counts) moved a single sample by up to 20%.
"""

from __future__ import annotations

import functools
import sys

from bench import group
from bench.runs import run_corral, run_raw


def sample(backend: str, variant: str, n: int) -> float:
    """Seconds to start *n* awake actors (*variant*: on_start or woken), or *n* tasks by hand
    (raw; scoped: each in a cancel scope of its own; ordered: scoped, each awaited in turn)."""
    if variant == "raw":
        return run_raw(backend, group.raw_asyncio_spawn, group.raw_trio_spawn, n)
    if variant in ("scoped", "ordered"):
        ordered = variant == "ordered"
        on_asyncio = functools.partial(group.raw_asyncio_scoped_spawn, ordered=ordered)
        on_trio = functools.partial(group.raw_trio_scoped_spawn, ordered=ordered)
        return run_raw(backend, on_asyncio, on_trio, n)
    woken = variant == "woken"
    return run_corral(backend, functools.partial(group.corral_awake_start, woken=woken), n)


if __name__ == "__main__":
    backend, variant, count = sys.argv[1:4]
    print(sample(backend, variant, int(count)))
