"""Restart intensity: at most *intensity* restarts within *period* seconds (OTP's add_restart)."""

from __future__ import annotations

import attrs

__all__ = ("RestartIntensity",)


@attrs.frozen
class RestartIntensity:
    """The supervisor's restart budget; a value, so the core can swap it whole.

    As OTP's ``add_restart``: the new restart is recorded first, restarts older than
    ``now - period`` are forgotten (one exactly ``period`` ago still counts), and the budget
    is exceeded when more than ``intensity`` remain. OTP counts whole seconds; corral counts
    monotonic float seconds.
    """

    intensity: int
    period: float
    history: tuple[float, ...] = ()  # restart times, newest first

    def record(self, now: float) -> tuple[RestartIntensity, bool]:
        """Add a restart at *now*; return the new budget and whether it is exceeded."""
        threshold = now - self.period
        recent = []
        for t in self.history:  # newest first, so stop at the first stale one (takewhile)
            if t < threshold:
                break
            recent.append(t)
        new = attrs.evolve(self, history=(now, *recent))
        return new, len(new.history) > self.intensity

    def remaining(self, now: float) -> int:
        """Restarts still allowed at *now* before the next one exceeds the budget."""
        threshold = now - self.period
        used = sum(1 for t in self.history if t >= threshold)
        return max(0, self.intensity - used)
