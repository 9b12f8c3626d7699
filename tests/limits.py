"""Process limits that stand in for a sick machine, for the tests that need one."""

from __future__ import annotations

import contextlib
import resource
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("disk_full_after",)


@contextlib.contextmanager
def disk_full_after(size: int) -> Iterator[None]:
    """Writes that would make a file larger than *size* bytes fail with EFBIG, as they would
    on a full disk (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored so that it is an error)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
