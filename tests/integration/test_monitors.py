"""Monitors (``ctx.monitor``): one ``Down`` per watched incarnation, however it ends, at once
for an actor that is not running, none after ``cancel()`` or after the watcher's own end."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog

pytestmark = pytest.mark.anyio


class Target(corral.Actor):
    """ "crash" raises; "return" is not for class actors: stop it from outside instead."""

    async def on_start(self) -> None:  # not dormant: an incarnation that runs
        pass

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise Boom(message)
        return message


class Quiet(corral.Actor):
    """Dormant: no on_start, no on_stop."""

    async def handle(self, message: object) -> object:
        return message


class Watcher(corral.Actor):
    """("watch", path) monitors *path*; ("unwatch", path) cancels; every Down is recorded."""

    def __init__(self, downs: list[corral.Down], arrived: list[anyio.Event]) -> None:
        self.downs = downs
        self.arrived = arrived
        self.monitors: dict[str, corral.Monitor] = {}

    async def handle(self, message: object) -> object:
        match message:
            case ("watch", str(path)):
                self.monitors[path] = self.ctx.monitor(path)
            case ("unwatch", str(path)):
                self.monitors.pop(path).cancel()
            case corral.Down():
                self.downs.append(message)
                for event in self.arrived:
                    event.set()
            case "crash":
                raise Boom(message)
        return None


def tree(downs: list[corral.Down], arrived: list[anyio.Event]) -> corral.SupervisorSpec:
    args: dict[str, Any] = {"downs": downs, "arrived": arrived}
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("t", Target),
            corral.ChildSpec("q", Quiet),
            corral.ChildSpec("w", Watcher, args=args),
        ],
        intensity=10,
    )


async def next_down(downs: list[corral.Down], arrived: list[anyio.Event], count: int) -> None:
    while len(downs) < count:
        event = anyio.Event()
        arrived[:] = [event]
        await event.wait()


async def test_a_down_per_incarnation_however_it_ends() -> None:
    """A crash gives Down(error, the exception); once delivered the monitor is done (the
    restarted target is not watched until monitored again); a stop gives Down(stopped)."""
    downs: list[corral.Down] = []
    arrived: list[anyio.Event] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(downs, arrived)) as running:
            running.events.subscribe(events)
            w = running.lookup("/w")
            await w.call(("watch", "/t"))
            running.lookup("/t").cast_nowait("crash")
            await next_down(downs, arrived, 1)
            await events.wait_for(corral.ChildStarted, "/t", restarts=1)
            await w.call(("watch", "/t"))  # the new incarnation
            await running.supervisor().terminate_child("t")
            await next_down(downs, arrived, 2)
            await running.supervisor().restart_child("t")
            running.lookup("/t").cast_nowait("crash")  # not watched: no Down
            await events.wait_for(corral.ChildStarted, "/t", restarts=1)
            await w.call(("watch", "/q"))  # a dormant actor counts as running
            await running.supervisor().terminate_child("q")
            await next_down(downs, arrived, 3)
    assert [(d.path, d.kind, repr(d.reason)) for d in downs] == [
        ("/t", "error", "Boom('crash')"),
        ("/t", "stopped", "None"),
        ("/q", "stopped", "None"),
    ]


async def test_noproc_at_once_and_no_down_after_a_cancel_or_the_watchers_end() -> None:
    """Monitoring a stopped actor or an unknown path delivers Down(noproc) at once; a
    cancelled monitor, or one of a watcher incarnation that ended, delivers nothing."""
    downs: list[corral.Down] = []
    arrived: list[anyio.Event] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree(downs, arrived)) as running:
            running.events.subscribe(events)
            w = running.lookup("/w")
            await running.supervisor().terminate_child("q")
            await w.call(("watch", "/q"))
            await w.call(("watch", "/nobody"))
            await next_down(downs, arrived, 2)
            await w.call(("watch", "/t"))
            await w.call(("unwatch", "/t"))
            await w.call(("watch", "/t"))
            w.cast_nowait("crash")  # the watcher's incarnation ends: its monitors with it
            await events.wait_for(corral.ChildStarted, "/w", restarts=1)
            running.lookup("/t").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/t", restarts=1)
            await w.call("ping")  # anything delivered to /w is handled by now
    assert [(d.path, d.kind) for d in downs] == [("/q", "noproc"), ("/nobody", "noproc")]
