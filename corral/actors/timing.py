"""Sampled timings of actors, for metrics: how long a message takes to handle, how long a call
waits for its reply.

Off unless the tree is opened with ``timings=True`` (the daemon does when it serves metrics):
then every actor of one supervisor shares that supervisor's ``Timings``, so the series stay
bounded by the number of supervisors, however many actors there are. Handling time is
sampled, one message in ``SAMPLE_EVERY`` per actor, so that the hot path pays for two clock
reads only on those; ``handled`` counts every message. Calls are all timed: a call already
waits for a reply, and two clock reads are small beside that.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final, final

__all__ = ("CALL_BOUNDS", "HANDLING_BOUNDS", "SAMPLE_EVERY", "Histogram", "Timings")

SAMPLE_EVERY: Final = 32  # a power of two: the check is a mask of the handled count
SAMPLE_MASK: Final = SAMPLE_EVERY - 1
# Upper bounds in seconds (Prometheus' `le`); +Inf is implied.
HANDLING_BOUNDS: Final = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)
CALL_BOUNDS: Final = (0.0001, 0.001, 0.01, 0.1, 1.0, 5.0, 30.0)


@final
class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf), the sum and the count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


@final
class Timings:
    """One supervisor's actors: message handling time (sampled) and call latency."""

    __slots__ = ("calls", "handling")

    def __init__(self) -> None:
        self.handling = Histogram(HANDLING_BOUNDS)
        self.calls = Histogram(CALL_BOUNDS)
