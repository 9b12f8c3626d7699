"""Laws of monitors, on both backends, over random scripts of monitoring, cancelling,
crashing and stopping: each monitor delivers exactly one ``Down`` for the incarnation it
watched when that incarnation ends (with how it ended), none once cancelled, and a monitor of
an actor that is not running delivers ``noproc`` at once."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])

HANG_GUARD = 20.0


class Target(corral.Actor):
    async def on_start(self) -> None:  # an incarnation that runs (not dormant)
        pass

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = "on purpose"
            raise RuntimeError(msg)
        return message


class Watcher(corral.Actor):
    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.monitors: list[corral.Monitor] = []

    async def handle(self, message: object) -> object:
        match message:
            case "watch":
                self.monitors.append(self.ctx.monitor("/t"))
            case "cancel" if self.monitors:
                self.monitors.pop().cancel()
            case corral.Down(kind=kind):
                self.kinds.append(kind)
        return None


STEPS = st.lists(st.sampled_from(["watch", "cancel", "crash", "stop", "start"]), max_size=12)


@settings(deadline=None)
@given(steps=STEPS)
def test_one_down_per_watched_incarnation(backend: str, steps: list[str]) -> None:
    kinds: list[str] = []
    expected: list[str] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("t", Target),
            corral.ChildSpec("w", Watcher, args={"kinds": kinds}),
        ],
        intensity=10**6,
    )

    async def run() -> None:
        active = 0  # monitors of the running target, not cancelled, not fired
        watching: list[bool] = []  # the watcher's list: True while that monitor is active
        running = True
        restarts = 0
        with anyio.fail_after(HANG_GUARD):
            async with corral.open_tree(spec) as tree:
                log: list[corral.Event] = []
                started = anyio.Event()

                def observe(event: corral.Event) -> None:
                    log.append(event)
                    if isinstance(event, corral.ChildStarted) and event.path == "/t":
                        started.set()

                tree.events.subscribe(observe)
                w, root = tree.lookup("/w"), tree.supervisor()
                for step in steps:
                    match step:
                        case "watch":
                            await w.call("watch")
                            if running:
                                watching.append(True)
                                active += 1
                            else:
                                watching.append(False)
                                expected.append("noproc")
                        case "cancel":
                            await w.call("cancel")
                            if watching and watching.pop():
                                active -= 1
                        case "crash" if running:
                            started = anyio.Event()
                            tree.lookup("/t").cast_nowait("crash")
                            await started.wait()  # restarted
                            restarts += 1
                            expected.extend(["error"] * active)
                            active = 0
                            watching = [False] * len(watching)
                        case "stop" if running:
                            await root.terminate_child("t")
                            running = False
                            expected.extend(["stopped"] * active)
                            active = 0
                            watching = [False] * len(watching)
                        case "start" if not running:
                            await root.restart_child("t")
                            running = True
                    await w.call("barrier")  # every Down sent so far is handled

    anyio.run(run, backend=backend)
    assert kinds == expected
