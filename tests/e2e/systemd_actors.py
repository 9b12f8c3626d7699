"""Actors for the real-systemd tests: each waits on a file the test creates, so that what the
test checks happens when the test says (the files live in /run/corral, the service's
RuntimeDirectory, which it may write)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import corral

POLL = 0.05  # seconds between looks at the file: these actors stand in for slow real work


async def gated(ctx: corral.Context, gate: str) -> None:
    """Starts (signals readiness) only once *gate* exists: a slow start held open by the test."""
    while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240  # another process' file: no event
        await anyio.sleep(POLL)
    ctx.started()
    await anyio.sleep_forever()


async def blocker(ctx: corral.Context, gate: str) -> None:
    """Once *gate* exists, removes it and blocks the event loop (a bug the watchdog catches)."""
    ctx.started()
    while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240  # another process' file: no event
        await anyio.sleep(POLL)
    Path(gate).unlink()  # noqa: ASYNC240  # a tiny file, and blocking is the point here
    time.sleep(60)  # noqa: ASYNC251  # the point: a blocking call on the loop
