"""One measurement on a fresh event loop: corral's through ``anyio.run``, a baseline's
through ``asyncio.run`` / ``trio.run``; each after a ``gc.collect()``."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, TypeVar

import anyio
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ("run_corral", "run_raw")

T = TypeVar("T")


def run_corral(backend: str, fn: Callable[[int], Awaitable[T]], n: int) -> T:
    """``fn(n)`` on *backend* through anyio."""
    gc.collect()
    return anyio.run(fn, n, backend=backend)


def run_raw(
    backend: str,
    on_asyncio: Callable[[int], Awaitable[T]],
    on_trio: Callable[[int], Awaitable[T]],
    n: int,
) -> T:
    """The baseline written for *backend*, on that backend directly."""
    gc.collect()
    if backend == "asyncio":

        async def main() -> T:
            return await on_asyncio(n)

        return asyncio.run(main())
    return trio.run(on_trio, n)
