"""Restart intensity: at most *intensity* restarts within *period* seconds (OTP's add_restart)."""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ("RestartIntensity",)


@attrs.define(slots=True)
class RestartIntensity:
    """The supervisor's restart budget.

    As OTP's ``add_restart``: the new restart is recorded first, restarts older than
    ``now - period`` are forgotten (one exactly ``period`` ago still counts), and the budget
    is exceeded when more than ``intensity`` remain. OTP counts whole seconds; corral counts
    monotonic float seconds.

    Mutable on purpose: a frozen value with a tuple would copy the whole window on every
    restart, which is quadratic for a supervisor with a large intensity.
    """

    intensity: int
    period: float
    history: deque[float] = attrs.field(factory=deque)  # restart times, oldest first

    def record(self, now: float) -> bool:
        """Add a restart at *now*; return whether the budget is now exceeded."""
        self._forget_before(now)
        self.history.append(now)
        return len(self.history) > self.intensity

    def remaining(self, now: float) -> int:
        """Restarts still allowed at *now* before the next one exceeds the budget."""
        threshold = now - self.period
        used = sum(1 for t in self.history if t >= threshold)
        return max(0, self.intensity - used)

    def _forget_before(self, now: float) -> None:
        history = self.history
        threshold = now - self.period
        while history and history[0] < threshold:
            history.popleft()
