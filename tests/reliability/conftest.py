"""The reliability suite: chaos, load and fuzz against real daemons, each test asserting
"nothing lost, nothing leaked, still answering".

Bounded in time so that it runs in ``make test``; ``make soak`` runs it longer and bigger
(``CORRAL_SOAK``, a factor on every duration, count and number of examples).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Final

import attrs
import psutil
import pytest

from tests.e2e.conftest import backend, daemons, workdir
from tests.e2e.support import TIMEOUT, Raw

if TYPE_CHECKING:
    from pathlib import Path

    from _pytest.terminal import TerminalReporter

    from tests.e2e.support import Daemon

__all__ = ("SOAK", "Footprint", "Poller", "backend", "daemons", "measured", "workdir")

_MEASURED: list[tuple[str, dict[str, object]]] = []


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> dict[str, object]:
    """What the test measured (latencies, rates, growth): printed after the run, never a
    condition for passing."""
    figures: dict[str, object] = {}
    _MEASURED.append((request.node.nodeid, figures))
    return figures


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    shown = [(name, figures) for name, figures in _MEASURED if figures]
    if shown:
        terminalreporter.section("reliability figures (measured, not asserted)")
        for name, figures in shown:
            terminalreporter.write_line(f"{name}: {figures}")


SOAK: Final = max(1, int(os.environ.get("CORRAL_SOAK", "1")))
"""How much longer and bigger than in ``make test`` (``make soak`` sets it)."""


@attrs.frozen
class Footprint:
    """What a daemon process holds: resident memory and open file descriptors."""

    rss: int
    fds: int

    @classmethod
    def of(cls, daemon: Daemon) -> Footprint:
        process = psutil.Process(daemon.proc.pid)
        return cls(process.memory_info().rss, process.num_fds())

    @classmethod
    def settled(cls, daemon: Daemon, *, fds: int) -> Footprint:
        """The footprint once the daemon holds at most *fds* descriptors, or after
        ``TIMEOUT``: closes made by clients reach it a moment later, and /proc is the only
        place that says when (so this looks, rather than waits for an event)."""
        deadline = time.monotonic() + TIMEOUT
        while (now := cls.of(daemon)).fds > fds and time.monotonic() < deadline:
            time.sleep(0.05)
        return now


class Poller:
    """Asks `status` of *path* over and over on one connection while a test hammers the
    daemon: it must answer every time, the child running (how fast is measured, never
    asserted)."""

    def __init__(self, socket: Path, path: str) -> None:
        self.socket = socket
        self.path = path
        self.answers = 0
        self.latencies: list[float] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with Raw(self.socket) as client:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    answer = client.ask({"command": "status", "path": self.path})
                    self.latencies.append(time.perf_counter() - started)
                    assert answer["result"]["state"] == "running", answer
                    self.answers += 1
        except BaseException as exc:  # reported by the test, in its own thread
            self.failure = exc

    def figures(self) -> dict[str, object]:
        """How many answers, and how fast (p50 and p99, in ms)."""
        latencies = sorted(self.latencies)
        if not latencies:
            return {"status_answers": 0}
        return {
            "status_answers": len(latencies),
            "status_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "status_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        }
