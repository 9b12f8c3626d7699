"""The actors of the embedded demo tree (``corral run`` without a file; ``make run``).

A ticker counts on its own timer, a flaky worker crashes now and then and is restarted with
backoff, an echo actor answers calls, and a nested rest-for-one group restarts its follower
with its leader. The tree itself is ``corral/daemon/demo.toml``.
"""

from __future__ import annotations

import random

import anyio

import corral


async def ticker(ctx: corral.Context, *, interval: float = 1.0) -> None:
    """Counts a tick every *interval* seconds; a call (any message) returns the count."""
    ctx.started()
    ticks = 0
    while True:
        with anyio.move_on_after(interval):
            await ctx.receive()
            ctx.reply(ticks)
            continue
        ticks += 1


async def flaky(ctx: corral.Context, *, interval: float = 1.0, crash_chance: float = 0.1) -> None:
    """Does a unit of work every *interval* seconds and crashes on about *crash_chance* of them."""
    ctx.started()
    done = 0
    while True:
        with anyio.move_on_after(interval):
            await ctx.receive()
            ctx.reply(done)
            continue
        done += 1
        if random.random() < crash_chance:  # noqa: S311  # a demo, not cryptography
            msg = f"flaky worker failed on unit {done}"
            raise RuntimeError(msg)


class Echo(corral.Actor):
    """Answers every call with the message it was sent (try `corral call /echo '"hi"'`)."""

    socket_messages = True  # the operator may send it messages from the shell

    async def handle(self, message: object) -> object:
        return message


class Leader(corral.Actor):
    """Fails on ``"fail"``; under rest-for-one its followers restart with it."""

    async def handle(self, message: object) -> object:
        if message == "fail":
            msg = "leader failed on purpose"
            raise RuntimeError(msg)
        return "ok"


class Follower(corral.Actor):
    """Depends on the leader started before it."""

    async def on_start(self) -> None:
        await self.ctx.lookup("/group/leader").call("ready?")

    async def handle(self, message: object) -> object:
        return message
