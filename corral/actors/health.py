"""Health probes of actors (Kubernetes' liveness probe, per actor) and the handling timeout.

An ``Actor`` that defines ``async def health(self)`` and whose child declares ``health =
HealthSpec(...)`` is probed by a task of its incarnation: every ``interval`` seconds (the
first one ``interval`` after it started), one probe at a time, each given ``timeout``
seconds. A probe fails when ``health()`` raises an ``Exception``, returns ``False`` or does
not return in time (it is then cancelled). After ``failures`` failed probes in a row the
probe task raises ``UnhealthyError``, which crashes the incarnation as a handler's error
would: its supervisor restarts it by its restart type, and the restart counts in its
intensity. A probe that passes resets the count. The probe task ends with the incarnation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import attrs

from corral.actors.checks import check_count
from corral.errors import SpecError, UnhealthyError

if TYPE_CHECKING:
    from corral.actors.actor import Actor
    from corral.actors.cell import ActorCell

__all__ = ("HealthSpec", "probe")


def _seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"health {name} must be a finite number of seconds > 0, got {value!r}"
        raise SpecError(msg)


@attrs.frozen
class HealthSpec:
    """How an actor's ``health()`` is probed (see the module's rules)."""

    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 3

    def __attrs_post_init__(self) -> None:
        _seconds("interval", self.interval)
        _seconds("timeout", self.timeout)
        check_count("health failures", self.failures)


async def probe(actor: Actor, cell: ActorCell, spec: HealthSpec) -> None:
    """The probe task of one incarnation: returns never; raises ``UnhealthyError``."""
    health = actor.health
    in_a_row = 0
    while True:
        await anyio.sleep(spec.interval)
        failure: str | None = None
        with anyio.move_on_after(spec.timeout) as scope:
            try:
                answer = await health()
            except Exception as exc:  # any error is a failed probe
                failure = f"{type(exc).__qualname__}: {exc}".rstrip(": ")
            else:
                if answer is False:
                    failure = "health() returned False"
        if scope.cancelled_caught:
            failure = f"health() did not return within {spec.timeout} s"
        if failure is None:
            in_a_row = 0
            cell.probe_failure = None
            continue
        in_a_row += 1
        cell.probe_failure = (in_a_row, failure)
        if in_a_row >= spec.failures:
            msg = (
                f"actor {cell.path} is unhealthy: {in_a_row} probe"
                f"{'s' if in_a_row != 1 else ''} failed in a row, last: {failure}"
            )
            raise UnhealthyError(msg, path=cell.path)
