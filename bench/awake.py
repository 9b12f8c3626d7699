"""One sample of the ``awake-start`` benchmark, in a process of its own.

``python -m bench.awake BACKEND raw|on_start|woken N`` prints the seconds that start took.
Each sample starts from a fresh interpreter: a start of 100,000 actors is mostly the garbage
collector's full passes over a growing heap, and what an earlier run in the same process left
(its freed memory, the collector's counts) moved a single sample by up to 20%.
"""

from __future__ import annotations

import asyncio
import gc
import sys

import anyio
import trio

from bench import group


def sample(backend: str, variant: str, n: int) -> float:
    """Seconds to start *n* awake actors (*variant*: raw, on_start or woken)."""
    gc.collect()
    if variant == "raw":
        if backend == "asyncio":

            async def main() -> float:
                return await group.raw_asyncio_spawn(n)

            return asyncio.run(main())
        return trio.run(group.raw_trio_spawn, n)
    woken = variant == "woken"

    async def ours() -> float:
        return await group.corral_awake_start(n, woken=woken)

    return anyio.run(ours, backend=backend)


if __name__ == "__main__":
    backend, variant, count = sys.argv[1:4]
    print(sample(backend, variant, int(count)))
