"""Shared actors and an event log for the integration tests (no fakes of corral itself)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, TypeVar, final

import anyio
import anyio.lowlevel

import corral

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = (
    "HANG_GUARD",
    "Boom",
    "EventLog",
    "Gated",
    "Lifecycle",
    "Worker",
    "crash_until_cancelled",
    "open_until_cancelled",
    "summary",
)

HANG_GUARD = 10.0
"""Seconds a test may take before ``fail_after`` calls it hung; never part of pass/fail."""

E = TypeVar("E", bound=corral.Event)


class Boom(Exception):
    """The exception test actors raise on purpose."""


@final
class EventLog:
    """An observer that keeps a tree's events and wakes tests waiting for one of them."""

    def __init__(self) -> None:
        self.events: list[corral.Event] = []
        self._waiters: list[tuple[Callable[[corral.Event], bool], anyio.Event]] = []

    def __call__(self, event: corral.Event) -> None:
        self.events.append(event)
        for predicate, woken in self._waiters:
            if predicate(event):
                woken.set()

    def find(self, kind: type[E], path: str, **fields: object) -> list[E]:
        """The events so far of type *kind* at *path* whose *fields* have those values."""
        return [e for e in self.events if isinstance(e, kind) and _matches(e, path, fields)]

    async def wait_for(self, kind: type[E], path: str, **fields: object) -> E:
        """The first event of type *kind* at *path* with those *fields*, waiting for it."""
        found = self.find(kind, path, **fields)
        if not found:
            woken = anyio.Event()
            self._waiters.append(
                (lambda e: isinstance(e, kind) and _matches(e, path, fields), woken)
            )
            await woken.wait()
            found = self.find(kind, path, **fields)
        return found[0]

    def summary(self, *kinds: type[corral.Event]) -> list[tuple[str, str]]:
        """``(event type name, path)`` of the events of *kinds* (default: all), in order."""
        return summary(self.events, *kinds)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _matches(event: corral.Event, path: str, fields: dict[str, object]) -> bool:
    return event.path == path and all(getattr(event, k) == v for k, v in fields.items())


def summary(events: list[corral.Event], *kinds: type[corral.Event]) -> list[tuple[str, str]]:
    """``(event type name, path)`` of the *events* of *kinds* (default: all), in order."""
    return [(type(e).__name__, e.path) for e in events if not kinds or isinstance(e, kinds)]


async def open_until_cancelled(
    spec: corral.SupervisorSpec, act: Callable[[corral.Tree], Awaitable[None]]
) -> None:
    """Open *spec*'s tree, run *act* on it, then wait for the tree to cancel the block
    (its root gave up or shut down); whatever open_tree raises then propagates."""
    async with corral.open_tree(spec) as tree:
        await act(tree)
        await anyio.sleep_forever()


async def crash_until_cancelled(
    spec: corral.SupervisorSpec, path: str, events: EventLog | None = None
) -> None:
    """``open_until_cancelled``: *events* subscribed (if given), then the actor at *path*
    told to crash."""

    async def crash(tree: corral.Tree) -> None:
        if events is not None:
            tree.events.subscribe(events)
        tree.lookup(path).cast_nowait("crash")

    await open_until_cancelled(spec, crash)


class Worker(corral.Actor):
    """Echoes messages; ``"crash"`` raises ``Boom``. Logs its life into *log* if given."""

    def __init__(self, name: str = "", log: list[str] | None = None) -> None:
        self.name = name
        self.log = log if log is not None else []

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}")

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = f"{self.name} crashed"
            raise Boom(msg)
        self.log.append(f"{self.name} got {message!r}")
        return message

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")


class Lifecycle(corral.Actor):
    """Records ``start <name>`` / ``stop <name>``; a checkpoint in each so order is earned."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def on_start(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(f"start {self.name}")

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(f"stop {self.name}")


class Gated(corral.Actor):
    """``"hold"`` blocks the actor until *gate* is set; other messages are logged and echoed."""

    def __init__(self, gate: anyio.Event, log: list[object] | None = None) -> None:
        self.gate = gate
        self.log = log if log is not None else []

    async def handle(self, message: object) -> object:
        if message == "hold":
            await self.gate.wait()
        self.log.append(message)
        return message
