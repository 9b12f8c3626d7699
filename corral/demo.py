"""A small tree that shows supervision happening: ``python -m corral.demo`` (``make run``).

A ticker counts, a flaky worker crashes now and then and is restarted, and a nested
rest-for-one group restarts its followers with its leader. Lifecycle events are printed as
they happen; Ctrl-C stops the tree in reverse start order.
"""

from __future__ import annotations

import random
import signal
import sys

import anyio

import corral


class Ticker(corral.Actor):
    """Counts ticks sent by its own timer task; answers ``"count"`` calls."""

    def __init__(self) -> None:
        self.ticks = 0

    async def handle(self, message: object) -> object:
        if message == "tick":
            self.ticks += 1
        return self.ticks


async def flaky(ctx: corral.Context, *, crash_chance: float) -> None:
    """Handles ``"work"`` and crashes on about *crash_chance* of the messages."""
    ctx.started()
    async for message in ctx:
        if random.random() < crash_chance:  # noqa: S311  # a demo, not cryptography
            msg = f"flaky worker dropped {message!r}"
            raise RuntimeError(msg)


class Leader(corral.Actor):
    async def handle(self, message: object) -> object:
        if message == "fail":
            msg = "leader failed on purpose"
            raise RuntimeError(msg)
        return "ok"


class Follower(corral.Actor):
    async def handle(self, message: object) -> object:
        return message


def tree() -> corral.SupervisorSpec:
    """The demo tree."""
    group = corral.SupervisorSpec(
        [corral.ChildSpec("leader", Leader), corral.ChildSpec("follower", Follower)],
        strategy=corral.Strategy.REST_FOR_ONE,
        intensity=5,
        period=10,
    )
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("ticker", Ticker),
            corral.ChildSpec(
                "flaky",
                flaky,
                args={"crash_chance": 0.2},
                backoff=corral.Backoff(initial=0.2, cap=2.0),
            ),
            corral.ChildSpec("group", group),
        ],
        intensity=10,
        period=5,
    )


def describe(event: corral.Event) -> str:
    match event:
        case corral.ChildStarted(path=path, restarts=restarts):
            return f"started     {path} (restarts: {restarts})"
        case corral.ChildExited(path=path, kind=kind, exception=exc):
            return f"exited      {path}: {kind.value}" + (f" ({exc!r})" if exc else "")
        case corral.RestartScheduled(path=path, delay=delay):
            return f"restarting  {path} in {delay:.2f} s"
        case corral.ChildStopped(path=path):
            return f"stopped     {path}"
        case corral.MessageDeadLettered(path=path, reason=reason):
            return f"dead letter {path} ({reason})"
        case _:
            return repr(event)


async def main(rounds: int | None = None) -> None:
    """Run the demo; *rounds* of work (None: until Ctrl-C or SIGTERM)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with corral.open_tree(tree()) as running, anyio.create_task_group() as tg:
            running.events.subscribe(lambda event: print(describe(event), flush=True))
            print("corral demo: supervision in action; Ctrl-C stops it", flush=True)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    print("stopping (reverse start order)...", flush=True)
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(stop_on_signal)
            ticker, worker = running.lookup("/ticker"), running.lookup("/flaky")
            leader = running.lookup("/group/leader")
            n = 0
            while rounds is None or n < rounds:
                n += 1
                await ticker.cast("tick")
                await worker.cast(n)  # queued while it restarts: the mailbox survives
                if n % 7 == 0:
                    await leader.cast("fail")
                await anyio.sleep(0.3)
            tg.cancel_scope.cancel()


if __name__ == "__main__":  # pragma: no cover
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    anyio.run(main, backend=backend)
