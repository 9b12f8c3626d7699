"""Fixtures of the in-process daemon tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="corral-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
