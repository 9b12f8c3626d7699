"""Shared strategies: child specs with random restart types and backoff, supervisor flags, and
pairs of static trees (old, new) for reconfiguration.

Times and delays are dyadic fractions (multiples of 1/16 s), so sums of them are exact floats
and the model's arithmetic cannot drift from the core's at a period boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import attrs
from hypothesis import strategies as st

from corral.supervisors.spec import (
    BRUTAL,
    INFINITY,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ExitKind,
    RestartType,
    Shutdown,
    Strategy,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = (
    "CHILD_IDS",
    "SAMPLE",
    "STEPS",
    "Flags",
    "GroupShape",
    "Shape",
    "WorkerShape",
    "backoffs",
    "child_specs",
    "children_of",
    "exit_kinds",
    "group_shapes",
    "idle",
    "reloads",
    "restart_types",
    "supervisor_flags",
)

CHILD_IDS = ("a", "b", "c", "d", "e")
"""The id pool: rules draw from it, so some ids are taken and some are free."""

STEPS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
"""How far time moves in one step: zero, fractions and whole periods."""

SAMPLE = 0.5
"""The jitter sample the cores under test are given (``random=lambda: SAMPLE``)."""


async def idle(ctx: object) -> None:
    """A child body; never run: the core only sees its spec."""


restart_types = st.sampled_from(RestartType)
exit_kinds = st.sampled_from(ExitKind)

backoffs: st.SearchStrategy[Backoff | None] = st.none() | st.builds(
    Backoff,
    initial=st.sampled_from([0.0, 0.25, 1.0]),
    cap=st.sampled_from([0.5, 2.0]),
    multiplier=st.sampled_from([1.0, 2.0]),
    jitter=st.sampled_from([0.0, 0.5]),
    reset_after=st.sampled_from([0.5, 2.0]),
)


@attrs.frozen
class Flags:
    """A supervisor's flags, as SupervisorSpec takes them."""

    strategy: Strategy
    intensity: int
    period: float
    auto_shutdown: AutoShutdown


def supervisor_flags(max_intensity: int = 3) -> st.SearchStrategy[Flags]:
    return st.builds(
        Flags,
        strategy=st.sampled_from(Strategy),
        intensity=st.integers(0, max_intensity),
        period=st.sampled_from([1.0, 2.0, 5.0]),
        auto_shutdown=st.sampled_from(AutoShutdown),
    )


@st.composite
def child_specs(draw: st.DrawFn, child_id: str, *, significant: bool = False) -> ChildSpec:
    """A worker with a random restart type and backoff; maybe significant if *significant*."""
    restart = draw(restart_types)
    # Mostly significant where allowed: auto_shutdown needs several of them to be interesting.
    is_significant = (
        significant
        and restart is not RestartType.PERMANENT
        and draw(st.sampled_from([True, True, False]))
    )
    return ChildSpec(
        child_id, idle, restart=restart, significant=is_significant, backoff=draw(backoffs)
    )


@st.composite
def children_of(draw: st.DrawFn, flags: Flags, *, min_size: int = 1) -> tuple[ChildSpec, ...]:
    """Children with distinct ids in random start order, valid under *flags*."""
    ids = draw(st.lists(st.sampled_from(CHILD_IDS), min_size=min_size, unique=True))
    significant = flags.auto_shutdown is not AutoShutdown.NEVER
    return tuple(draw(child_specs(i, significant=significant)) for i in ids)


# -- reload pairs ---------------------------------------------------------------------------

RELOAD_DEPTH = 3
"""Supervisor levels of a reload tree, the root included."""

WORKER_SHUTDOWNS: tuple[Shutdown, ...] = (5.0, 2.0, BRUTAL)
GROUP_SHUTDOWNS: tuple[Shutdown, ...] = (INFINITY, 5.0)


@attrs.frozen
class WorkerShape:
    """A worker of a reload tree: an actor with or without hooks, ``version`` in its args."""

    id: str
    version: int = 0
    restart: RestartType = RestartType.PERMANENT
    shutdown: Shutdown = 5.0
    on_start: bool = False
    on_stop: bool = False


@attrs.frozen
class GroupShape:
    """A static supervisor of a reload tree (the root's id, restart and shutdown are unused)."""

    id: str
    children: tuple[WorkerShape | GroupShape, ...] = ()
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    restart: RestartType = RestartType.PERMANENT
    shutdown: Shutdown = INFINITY


Shape = WorkerShape | GroupShape
T = TypeVar("T")


def _other(draw: st.DrawFn, options: Iterable[T], current: T) -> T:
    """Any of *options* but *current*."""
    return draw(st.sampled_from([o for o in options if o != current]))


@st.composite
def worker_shapes(draw: st.DrawFn, child_id: str) -> WorkerShape:
    return WorkerShape(
        child_id,
        restart=draw(restart_types),
        shutdown=draw(st.sampled_from(WORKER_SHUTDOWNS)),
        on_start=draw(st.booleans()),
        on_stop=draw(st.booleans()),
    )


@st.composite
def group_shapes(draw: st.DrawFn, child_id: str = "", depth: int = 1) -> GroupShape:
    """A supervisor at level *depth* (the root is 1) with up to five children, some nested."""
    ids = draw(st.lists(st.sampled_from(CHILD_IDS), unique=True, max_size=len(CHILD_IDS)))
    return GroupShape(
        child_id,
        tuple(draw(_shapes(i, depth + 1)) for i in ids),
        strategy=draw(st.sampled_from(Strategy)),
        intensity=draw(st.integers(1, 3)),
        restart=draw(restart_types),
        shutdown=draw(st.sampled_from(GROUP_SHUTDOWNS)),
    )


def _shapes(child_id: str, depth: int) -> st.SearchStrategy[Shape]:
    """A child at supervisor level *depth*: mostly a worker; a supervisor while levels are left."""
    if depth > RELOAD_DEPTH:
        return worker_shapes(child_id)
    worker = worker_shapes(child_id)
    return st.one_of(worker, worker, group_shapes(child_id, depth))


@st.composite
def _changed(draw: st.DrawFn, child: Shape, depth: int) -> Shape:
    """*child* with a spec change: new args version, restart type or shutdown, or the other type."""
    what = draw(st.sampled_from(["version", "restart", "shutdown", "type"]))
    if what == "type":
        if isinstance(child, GroupShape):
            return draw(worker_shapes(child.id))
        if depth <= RELOAD_DEPTH:
            return draw(group_shapes(child.id, depth))
        what = "version"  # no supervisor level left
    if what == "restart":
        return attrs.evolve(child, restart=_other(draw, RestartType, child.restart))
    if isinstance(child, GroupShape):
        return attrs.evolve(child, shutdown=_other(draw, GROUP_SHUTDOWNS, child.shutdown))
    if what == "shutdown":
        return attrs.evolve(child, shutdown=_other(draw, WORKER_SHUTDOWNS, child.shutdown))
    return attrs.evolve(child, version=child.version + 1)


@st.composite
def _reloaded(draw: st.DrawFn, group: GroupShape, depth: int) -> GroupShape:
    """*group* after a reload: children kept, removed, changed or changed inside, new ones
    added, the order maybe shuffled, the flags maybe changed. Shrinks towards no change."""
    children: list[Shape] = []
    for child in group.children:
        action = draw(st.sampled_from(["keep", "remove", "change", "inside"]))
        if action == "keep":
            children.append(child)
        elif action == "change":
            children.append(draw(_changed(child, depth + 1)))
        elif action == "inside":
            if isinstance(child, GroupShape):
                children.append(draw(_reloaded(child, depth + 1)))
            else:
                children.append(child)
    free = [i for i in CHILD_IDS if i not in {c.id for c in children}]
    if free:
        new_ids = draw(st.lists(st.sampled_from(free), unique=True, max_size=2))
        children.extend(draw(_shapes(i, depth + 1)) for i in new_ids)
    if draw(st.booleans()):
        children = list(draw(st.permutations(children)))
    strategy, intensity = group.strategy, group.intensity
    if draw(st.booleans()):
        strategy = draw(st.sampled_from(Strategy))
        intensity = draw(st.integers(1, 3))
    return attrs.evolve(group, children=tuple(children), strategy=strategy, intensity=intensity)


@st.composite
def reloads(draw: st.DrawFn) -> tuple[GroupShape, GroupShape]:
    """A root supervisor tree and the tree a reload turns it into; ids collide often."""
    old = draw(group_shapes())
    return old, draw(_reloaded(old, 1))
