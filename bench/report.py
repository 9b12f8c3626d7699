"""Results and how they are shown: one row per metric and backend, corral beside its baseline.

The ratio is always corral / raw. Whether bigger is better depends on the metric, so each
target says what it bounds: the ratio (restart latency, throughput) or corral's own value
(bytes per actor, seconds to start and stop).
"""

from __future__ import annotations

import enum
import operator
import statistics
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = (
    "BYTES",
    "MEBIBYTES",
    "MICROSECONDS",
    "MILLISECONDS",
    "PER_SECOND",
    "SECONDS",
    "Bound",
    "Row",
    "Target",
    "Unit",
    "median",
    "p99",
    "render",
)


@attrs.frozen
class Unit:
    """How a measurement is shown: stored in base units, multiplied by ``scale`` for display."""

    name: str
    scale: float
    digits: int

    def show(self, value: float) -> str:
        return f"{value * self.scale:,.{self.digits}f} {self.name}"


MICROSECONDS: Final = Unit("µs", 1e6, 1)
MILLISECONDS: Final = Unit("ms", 1e3, 1)
MEBIBYTES: Final = Unit("MiB", 1 / 2**20, 1)
PER_SECOND: Final = Unit("k/s", 1e-3, 1)
BYTES: Final = Unit("KiB", 1 / 1024, 2)
SECONDS: Final = Unit("s", 1.0, 2)


class Bound(enum.Enum):
    """What a target bounds, and in which direction."""

    RATIO_AT_MOST = "ratio <="
    RATIO_AT_LEAST = "ratio >="
    AT_MOST = "<="
    BELOW = "<"


_CHECKS: Final = {
    Bound.RATIO_AT_MOST: operator.le,
    Bound.RATIO_AT_LEAST: operator.ge,
    Bound.AT_MOST: operator.le,
    Bound.BELOW: operator.lt,
}


@attrs.frozen
class Target:
    """A goal for one metric (in the metric's base units when it bounds corral's value)."""

    bound: Bound
    limit: float
    also: Target | None = None  # a second bound, met as well (a ratio and a time)

    @property
    def on_ratio(self) -> bool:
        return self.bound in (Bound.RATIO_AT_MOST, Bound.RATIO_AT_LEAST)

    def met(self, corral: float, raw: float) -> bool:
        value = corral / raw if self.on_ratio else corral
        met = bool(_CHECKS[self.bound](value, self.limit))
        return met and (self.also is None or self.also.met(corral, raw))

    def describe(self, unit: Unit) -> str:
        if self.on_ratio:
            text = f"{self.bound.value} {self.limit:g}x"
        else:
            text = f"{self.bound.value} {unit.show(self.limit)}"
        return text if self.also is None else f"{text} and {self.also.describe(unit)}"


@attrs.frozen
class Row:
    """One line of the table: a metric on one backend, corral beside the raw baseline."""

    metric: str
    backend: str
    corral: float
    raw: float
    unit: Unit
    target: Target | None = None

    @property
    def ratio(self) -> float:
        return self.corral / self.raw if self.raw else float("inf")

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when the row has no target."""
        if self.target is None:
            return None
        return self.target.met(self.corral, self.raw)


def render(rows: Sequence[Row]) -> str:
    """The rows as a markdown table; a missed target is marked **MISSED**."""
    lines = [
        "| metric | backend | corral | raw | ratio | target |",
        "|---|---|--:|--:|--:|---|",
    ]
    for row in rows:
        if row.target is None:
            target = "-"
        else:
            verdict = "ok" if row.met else "**MISSED**"
            target = f"{row.target.describe(row.unit)}: {verdict}"
        lines.append(
            f"| {row.metric} | {row.backend} | {row.unit.show(row.corral)}"
            f" | {row.unit.show(row.raw)} | {row.ratio:.2f}x | {target} |"
        )
    return "\n".join(lines)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile (linear interpolation between the closest ranks)."""
    return statistics.quantiles(samples, n=100, method="inclusive")[98]
