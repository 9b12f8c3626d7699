"""Shared strategies: child specs with random restart types and backoff, supervisor flags.

Times and delays are dyadic fractions (multiples of 1/16 s), so sums of them are exact floats
and the model's arithmetic cannot drift from the core's at a period boundary.
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from corral.supervisors.spec import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    ExitKind,
    RestartType,
    Strategy,
)

__all__ = (
    "CHILD_IDS",
    "SAMPLE",
    "STEPS",
    "Flags",
    "backoffs",
    "child_specs",
    "children_of",
    "exit_kinds",
    "idle",
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
