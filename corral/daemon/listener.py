"""Accepting connections on a machine that runs out of resources.

A failed ``accept`` (no file descriptors left: the actors share the daemon's limit; no memory
for a socket) must never end a listener, let alone the daemon: ``accept`` waits and tries
again, logging once per episode and once when it works again. anyio reports these failures as
``BrokenResourceError`` caused by the ``OSError``; a listener that was closed is still an
error.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc

if TYPE_CHECKING:
    import logging

__all__ = ("RETRY", "accept")

RETRY: Final = 0.5  # seconds between attempts while accepting fails
_EXHAUSTED: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
)


def _exhausted(exc: BaseException) -> OSError | None:
    """The resource shortage behind *exc*, if that is what it is."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.errno in _EXHAUSTED:
        return cause
    return None


async def accept(
    listener: anyio.abc.SocketListener, name: str, log: logging.Logger
) -> anyio.abc.SocketStream:
    """The next connection on *listener* (*name* says which, in the log), however long
    the machine has no resources to accept it.

    Raises:
        anyio.ClosedResourceError, anyio.BrokenResourceError: the listener itself is gone.
    """
    failing = False
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as exc:
            shortage = _exhausted(exc)
            if shortage is None:
                raise
            if not failing:
                log.warning(
                    "%s: accept failed: %s; retrying every %g s",
                    name,
                    shortage.strerror or shortage,
                    RETRY,
                )
                failing = True
            await anyio.sleep(RETRY)
            continue
        if failing:
            log.info("%s: accepting connections again", name)
        return stream
