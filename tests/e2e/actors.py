"""Actors for end-to-end configs: the daemon subprocess imports them as ``tests.e2e.actors``."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import anyio

import corral


class Echo(corral.Actor):
    """Answers every call with its message; ``greeting`` shows which args it was started with."""

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    async def handle(self, message: object) -> object:
        return f"{self.greeting} {message}"


class Steady(corral.Actor):
    """Has ``on_start``/``on_stop``, so the daemon must run and stop it in order."""

    async def on_start(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await anyio.lowlevel.checkpoint()


class FailsToStart(corral.Actor):
    async def on_start(self) -> None:
        msg = "cannot start: the database is down"
        raise RuntimeError(msg)


class SlowStop(corral.Actor):
    """Takes *seconds* to stop (its shutdown timeout decides how long it is given)."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await anyio.sleep(self.seconds)


async def crash_on_start(ctx: corral.Context) -> None:
    """Crashes at once, every time: its supervisor gives up."""
    ctx.started()
    msg = "crash loop"
    raise RuntimeError(msg)


class Dropper(corral.Actor):
    """Casts itself two messages while starting; with a one-message drop-newest mailbox the
    second one becomes a dead letter (reason ``dropped``)."""

    async def on_start(self) -> None:
        self.ctx.ref.cast_nowait("first")
        self.ctx.ref.cast_nowait("second")

    async def handle(self, message: object) -> object:
        return message


class Poller(corral.Actor):
    """Polls an upstream through its breaker ``upstream`` once started; the upstream refuses
    every connection, so the breaker opens (what it does with a refusal or an open breaker:
    nothing, it polls again when told)."""

    async def on_start(self) -> None:
        self.ctx.send_after(0, "poll")

    async def handle(self, message: object) -> object:
        try:
            async with self.ctx.breaker("upstream"):
                msg = "upstream refused the connection"
                raise ConnectionRefusedError(msg)
        except (ConnectionError, corral.BreakerOpenError):
            return "unavailable"


async def finishes(ctx: corral.Context) -> None:
    """Returns as soon as it has started: a normal exit (with ``significant``, its
    supervisor's auto-shutdown decides what follows)."""
    ctx.started()
    await anyio.lowlevel.checkpoint()


def _append(path: str, line: str) -> None:
    with Path(path).open("a") as f:
        f.write(line + "\n")


class Recorder(corral.Actor):
    """Appends ``start NAME NOTE`` and ``stop NAME`` lines to the file *log* as ``on_start`` and
    ``on_stop`` run: a test reads when each ran, in which order, and with which args. Its
    ``on_stop`` first takes *seconds*, so a sibling stopped at the same time would show."""

    def __init__(self, log: str, name: str, note: str = "", seconds: float = 0.0) -> None:
        self.log = log
        self.name = name
        self.note = note
        self.seconds = seconds

    async def on_start(self) -> None:
        _append(self.log, f"start {self.name} {self.note}".rstrip())

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        await anyio.sleep(self.seconds)
        _append(self.log, f"stop {self.name}")


def block_the_loop(seconds: float) -> None:
    """What a careless actor does: a blocking call on the event loop (the loop monitor's stack
    of the stall names this function)."""
    time.sleep(seconds)


class Blocker(corral.Actor):
    """Casts itself a message while starting and blocks the whole event loop for *seconds*
    when it handles it: started by ``corral start-child``, it stalls the loop at once (its
    task goes on to the message before the command is answered)."""

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds

    async def on_start(self) -> None:
        self.ctx.ref.cast_nowait("block")

    async def handle(self, message: object) -> object:
        block_the_loop(self.seconds)
        return message


async def secretive(ctx: corral.Context, password: str, url: str) -> None:
    """Crashes once started, with its secrets in the exception's message."""
    ctx.started()
    await anyio.lowlevel.checkpoint()
    msg = f"login failed for {url} with password={password}"
    raise RuntimeError(msg)


class Gate(corral.Actor):
    """Does not finish starting until the file *path* exists; logs (to the daemon's log) that
    it waits, so a test knows when the boot is held up by it."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    async def on_start(self) -> None:
        logging.getLogger("corral.tests").info("gate: waiting for %s", self.path)
        while not self.path.exists():  # noqa: ASYNC110  # a file from another process: no event
            await anyio.sleep(0.01)

    async def handle(self, message: object) -> object:
        return message


async def shielded(ctx: corral.Context) -> None:
    """Shields itself from cancellation for good: a stop can only abandon it."""
    ctx.started()
    with anyio.CancelScope(shield=True):
        await anyio.sleep_forever()


class StuckStart(corral.Actor):
    """An ``on_start`` that never returns (a dependency that never answers); logs that it
    waits, so a test knows when the boot is held up by it."""

    async def on_start(self) -> None:
        logging.getLogger("corral.tests").info("stuck: on_start waits forever")
        await anyio.sleep_forever()

    async def handle(self, message: object) -> object:
        return message


class DeadLetterStorm(corral.Actor):
    """Casts itself a message as it starts and crashes on it: every incarnation leaves a
    dead letter and a restart (a crash storm that also fills the dead letters)."""

    async def on_start(self) -> None:
        self.ctx.ref.cast_nowait("poison")

    async def handle(self, message: object) -> object:
        msg = f"cannot handle {message!r}"
        raise RuntimeError(msg)


class GatedStop(corral.Actor):
    """Its ``on_stop`` waits for the file *path* (a slow stop held open by the test); logs
    that it waits, so the test knows the stop has reached it."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        logging.getLogger("corral.tests").info("gated stop: waiting for %s", self.path)
        while not self.path.exists():  # noqa: ASYNC110  # a file from another process: no event
            await anyio.sleep(0.01)


class ShieldedStart(corral.Actor):
    """An ``on_start`` that never returns and shields itself from cancellation: only a forced
    stop gets past it (and the daemon then exits without it)."""

    async def on_start(self) -> None:
        logging.getLogger("corral.tests").info("stuck: on_start waits forever")
        with anyio.CancelScope(shield=True):
            await anyio.sleep_forever()

    async def handle(self, message: object) -> object:
        return message


class Chatty(corral.Actor):
    """Logs as an application does: through its own module's logger, through the actor's
    logger, and with a warning; and once more for each message it handles."""

    async def on_start(self) -> None:
        logging.getLogger("jobsvc").info("jobsvc: pricing ready")
        self.logger.warning("chatty: rate is %s", 1.2)
        warnings.warn("chatty: the rate is deprecated", UserWarning, stacklevel=1)

    async def handle(self, message: object) -> object:
        logging.getLogger("jobsvc.pricing").info("priced %s", message)
        return message


class Dependent(corral.Actor):
    """Looks up the actor at *dep* as it starts: it cannot start before that actor runs
    (``UnknownPathError``), as a real client of another actor would fail."""

    def __init__(self, dep: str) -> None:
        self.dep = dep

    async def on_start(self) -> None:
        self.ctx.lookup(self.dep)

    async def handle(self, message: object) -> object:
        return message
