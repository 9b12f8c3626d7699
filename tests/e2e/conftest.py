"""End-to-end fixtures: each test gets a directory and runs daemons on both backends."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.support import Daemon


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test started; any still running is stopped (SIGTERM) afterwards."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            try:
                daemon.stop()
            finally:  # one that did not stop is not left behind for the next tests
                if daemon.proc.poll() is None:
                    daemon.proc.kill()
                    daemon.proc.wait()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="corral-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
