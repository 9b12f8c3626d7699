"""Laws of the running tree, on both backends, over random trees and crash scripts.

Whatever the strategies, nesting and crashes: children start in order, stop in reverse order
when the tree exits, no task is left running afterwards, and no message is lost on a restart
(every cast is handled exactly once; only the messages that crashed an actor are dead letters).
"""

from __future__ import annotations

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])

HANG_GUARD = 20.0
STRATEGIES = st.sampled_from(list(corral.Strategy))


@attrs.define
class Journal:
    """What every incarnation of every actor did, in order."""

    entries: list[tuple[str, str]] = attrs.field(factory=list)  # (event, path)
    handled: list[int] = attrs.field(factory=list)
    live: int = 0


class Recorder(corral.Actor):
    """Logs its start and stop; handles ints; raises on "crash"."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def on_start(self) -> None:
        self.journal.entries.append(("start", self.ctx.path))
        self.journal.live += 1

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = f"{self.ctx.path} crashes on purpose"
            raise RuntimeError(msg)
        if isinstance(message, int):
            self.journal.handled.append(message)
        return message

    async def on_stop(self) -> None:
        self.journal.entries.append(("stop", self.ctx.path))
        self.journal.live -= 1


@attrs.frozen
class Shape:
    """A root with some workers and, optionally, a nested group of workers."""

    strategy: corral.Strategy
    workers: int
    group_at: int | None  # position of the nested group among the root's children
    group_strategy: corral.Strategy
    group_workers: int

    def spec(self, journal: Journal) -> corral.SupervisorSpec:
        children = [
            corral.ChildSpec(f"w{i}", Recorder, args={"journal": journal})
            for i in range(self.workers)
        ]
        if self.group_at is not None:
            group = corral.SupervisorSpec(
                [
                    corral.ChildSpec(f"g{i}", Recorder, args={"journal": journal})
                    for i in range(self.group_workers)
                ],
                strategy=self.group_strategy,
                intensity=10**6,
            )
            children.insert(self.group_at, corral.ChildSpec("group", group))
        return corral.SupervisorSpec(children, strategy=self.strategy, intensity=10**6)

    def paths(self) -> list[str]:
        """Every worker's path, depth first in start order."""
        paths = [f"/w{i}" for i in range(self.workers)]
        if self.group_at is not None:
            paths[self.group_at : self.group_at] = [
                f"/group/g{i}" for i in range(self.group_workers)
            ]
        return paths


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    workers = draw(st.integers(1, 4))
    nested = draw(st.booleans())
    return Shape(
        strategy=draw(STRATEGIES),
        workers=workers,
        group_at=draw(st.integers(0, workers)) if nested else None,
        group_strategy=draw(STRATEGIES),
        group_workers=draw(st.integers(1, 3)),
    )


@st.composite
def scripts(draw: st.DrawFn) -> tuple[Shape, list[tuple[int, bool]]]:
    """A shape and a list of (worker index, crash?) sends."""
    shape = draw(shapes())
    n = len(shape.paths())
    steps = draw(st.lists(st.tuples(st.integers(0, n - 1), st.booleans()), max_size=30))
    return shape, steps


async def run_script(shape: Shape, steps: list[tuple[int, bool]]) -> tuple[Journal, list[int], int]:
    journal = Journal()
    paths = shape.paths()
    sent: list[int] = []
    crashes = 0
    before = len(anyio.get_running_tasks())
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(shape.spec(journal)) as tree:
            boot = list(journal.entries)
            assert boot == [("start", p) for p in paths]  # ordered start
            for number, (index, crash) in enumerate(steps):
                ref = tree.lookup(paths[index])
                if crash:
                    crashes += 1
                    await ref.cast("crash")
                else:
                    sent.append(number)
                    await ref.cast(number)
            for path in paths:  # every message queued so far is handled before the reply
                await tree.lookup(path).call("sync")
            await anyio.wait_all_tasks_blocked()
            letters = tree.dead_letters()
            journal.entries.clear()
    assert len(anyio.get_running_tasks()) == before  # no task left running
    assert [d.message for d in letters] == ["crash"] * crashes
    return journal, sent, crashes


@settings(deadline=None)
@given(script=scripts())
def test_the_running_tree_keeps_its_laws(
    backend: str, script: tuple[Shape, list[tuple[int, bool]]]
) -> None:
    """Ordered start, reverse stop, nothing left running, no message lost to a restart."""
    shape, steps = script
    journal, sent, _ = anyio.run(run_script, shape, steps, backend=backend)
    assert sorted(journal.handled) == sent  # each cast handled exactly once
    assert journal.entries == [("stop", p) for p in reversed(shape.paths())]  # reverse stop
    assert journal.live == 0
