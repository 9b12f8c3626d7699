"""corral's benchmark suite: speed and memory beside hand-written asyncio and trio baselines.

Run it with ``make bench`` (or ``python -m bench --help``); bench/README.md explains what each
benchmark measures and how its baseline is written. Nothing here is imported by ``corral``.
"""

from __future__ import annotations

__all__ = ()
