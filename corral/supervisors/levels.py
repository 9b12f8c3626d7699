"""The tree's service level: what it can serve now, from a snapshot (a pure function).

Each child is essential (the default) or not (``ChildSpec(essential=False)``, ``essential =
false``); a child below a non-essential supervisor is not essential either. The rules are
over the tree's *units*: every running worker, and every supervisor child that is not
running (its children are not in the snapshot then; it stands for them). A unit is *down*
when it should run and does not: starting, stopping, waiting in backoff, failed, or stopped
by an operator (held). A stopped unit that is not held (it ended normally, declined to
start, or was terminated through the library's API) is not down.

* ``unavailable``: the tree is not running (starting, stopping), or it has essential
  units that run or are down, and every one of them is down;
* ``minimal``: some essential units are down, not all;
* ``degraded``: every essential unit runs, but a non-essential unit is down or a circuit
  breaker is not closed;
* ``full``: every unit that should run runs and every breaker is closed.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

from corral.actors.breaker import BreakerState
from corral.supervisors.core import ChildStatus
from corral.supervisors.spec import ChildType

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from corral.supervisors.statistics import ChildStatistics, SupervisorStatistics

__all__ = ("MAX_NAMED", "ServiceLevel", "ServiceStatus", "service_status")

MAX_NAMED = 5  # the reasons name at most this many children (and breakers), then count


class ServiceLevel(enum.Enum):
    """Ordered from best to worst: ``ServiceLevel.FULL.rank < ServiceLevel.DEGRADED.rank``."""

    FULL = "full"
    DEGRADED = "degraded"
    MINIMAL = "minimal"
    UNAVAILABLE = "unavailable"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {level: rank for rank, level in enumerate(ServiceLevel)}


@attrs.frozen
class ServiceStatus:
    """The level and why it is not full (one line per cause, for people)."""

    level: ServiceLevel
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        """``degraded: /cache failed; breaker pricing of /api open``."""
        if not self.reasons:
            return self.level.value
        return f"{self.level.value}: {'; '.join(self.reasons)}"


_UP = ChildStatus.RUNNING


def _down(child: ChildStatistics, held: Collection[str]) -> bool:
    if child.state is _UP:
        return False
    if child.state is ChildStatus.STOPPED:
        return child.path in held
    return True  # starting, stopping, backoff, failed


def _units(sup: SupervisorStatistics, essential: bool) -> Iterator[tuple[ChildStatistics, bool]]:
    for child in sup.children:
        counts = essential and child.essential
        if child.type is ChildType.SUPERVISOR and child.supervisor is not None:
            yield from _units(child.supervisor, counts)
        else:
            yield child, counts


def _named(paths: list[str], what: str) -> str:
    shown = ", ".join(paths[:MAX_NAMED])
    more = f" and {len(paths) - MAX_NAMED} more" if len(paths) > MAX_NAMED else ""
    return f"{what}: {shown}{more}"


def service_status(
    snapshot: SupervisorStatistics | None, held: Collection[str] = (), *, stopping: bool = False
) -> ServiceStatus:
    """The service level of the tree whose root's snapshot is *snapshot* (None: not started
    yet); *held*: the paths stopped by an operator; *stopping*: the tree is being stopped."""
    if snapshot is None:
        return ServiceStatus(ServiceLevel.UNAVAILABLE, ("starting",))
    if stopping:
        return ServiceStatus(ServiceLevel.UNAVAILABLE, ("stopping",))
    essential_total = 0
    essential_down: list[str] = []
    optional_down: list[str] = []
    tripped: list[str] = []
    for child, essential in _units(snapshot, essential=True):
        down = _down(child, held)
        if essential and (down or child.state is _UP):  # one that is done does not count
            essential_total += 1
            if down:
                essential_down.append(f"{child.path} {child.state.value}")
        elif down:
            optional_down.append(f"{child.path} {child.state.value}")
        tripped.extend(
            f"{b.name} of {child.path} {b.state.value}"
            for b in child.breakers
            if b.state is not BreakerState.CLOSED
        )
    reasons: list[str] = []
    if essential_down:
        reasons.append(_named(essential_down, "essential down"))
    if optional_down:
        reasons.append(_named(optional_down, "non-essential down"))
    if tripped:
        reasons.append(_named(tripped, "breakers not closed"))
    if essential_down and len(essential_down) == essential_total:
        level = ServiceLevel.UNAVAILABLE
    elif essential_down:
        level = ServiceLevel.MINIMAL
    elif optional_down or tripped:
        level = ServiceLevel.DEGRADED
    else:
        level = ServiceLevel.FULL
    return ServiceStatus(level, tuple(reasons))
