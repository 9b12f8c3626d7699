"""The daemon's log: stdlib ``logging``, readable text on a terminal, JSON lines otherwise.

Lifecycle events and audit records carry their fields in ``record.fields`` (a dict), so a
JSON line or a journald entry (``journal.py``) can be filtered by ``path``, ``event`` or
``uid`` rather than parsed out of the message. Every record passes the redaction filter
(``redact.py``) first.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Final

import msgspec

from corral.daemon import protocol, view
from corral.daemon.config import REDACT_DEFAULT
from corral.daemon.journal import JournalHandler, journal_stream
from corral.daemon.redact import RedactingFilter, Redactor

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from corral.supervisors.events import Event

__all__ = ("EVENTS", "JsonFormatter", "describe_daemon", "log_event", "setup")

EVENTS: Final = logging.getLogger("corral.events")

# event name -> level; everything that needs a look is WARNING or worse.
_LEVELS: Final = {
    "child-started": logging.INFO,
    "child-exited": logging.WARNING,  # NORMAL exits are lowered to INFO below
    "child-stopped": logging.INFO,
    "child-abandoned": logging.ERROR,
    "start-failed": logging.ERROR,
    "restart-scheduled": logging.INFO,
    "supervisor-gave-up": logging.ERROR,
    "supervisor-auto-shutdown": logging.WARNING,
    "supervisor-escalated": logging.WARNING,  # the reason (gave up, ...) is logged before
    "dead-letter": logging.WARNING,
}


def _describe(ev: protocol.Event) -> str:
    match ev.event:
        case "child-started":
            return f"started {ev.path} (restarts: {ev.restarts})"
        case "child-exited":
            return f"{ev.path} exited ({ev.exit})" + (f": {ev.exception}" if ev.exception else "")
        case "child-stopped":
            return f"stopped {ev.path}"
        case "child-abandoned":
            return f"{ev.path} did not stop within {ev.delay} s: abandoned (still cancelled)"
        case "start-failed":
            return f"{ev.path} failed to start: {ev.exception}"
        case "restart-scheduled":
            return f"restarting {ev.path} in {ev.delay:.3f} s"
        case "supervisor-gave-up":
            return f"supervisor {ev.path} gave up: {ev.reason}"
        case "supervisor-auto-shutdown":
            return f"supervisor {ev.path} shut down: {ev.reason}"
        case "supervisor-escalated":
            return f"supervisor {ev.path} exited; escalated to {ev.supervisor or 'the daemon'}"
        case _:
            return f"dead letter at {ev.path} ({ev.reason})"


def log_event(event: Event) -> None:
    """An ``EventBus`` observer: one log record per lifecycle event."""
    ev = view.event(event)
    level = _LEVELS[ev.event]
    if ev.event == "child-exited" and ev.exit != "error":
        level = logging.INFO
    if EVENTS.isEnabledFor(level):
        fields = msgspec.structs.asdict(ev)
        exception = getattr(event, "exception", None)
        if exception is not None:
            fields["exception_type"] = type(exception).__qualname__
        EVENTS.log(level, "%s", _describe(ev), extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line.update((k, v) for k, v in fields.items() if v is not None and k not in line)
        if record.exc_info or record.exc_text:
            line["traceback"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]  # one of the two is set
        return msgspec.json.encode(line).decode()


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")


def setup(
    log_format: str, level: str, stream: Any = None, redact: Iterable[str] = REDACT_DEFAULT
) -> str:
    """Log to journald or *stream* (stderr); returns the format chosen.

    *log_format* is ``journal``, ``text``, ``json`` or ``auto``: journald when stderr is
    connected to it (``$JOURNAL_STREAM``), else text on a terminal, else JSON lines. Without
    systemd-python, ``journal`` falls back to JSON lines and says so. Secrets named by
    *redact* are redacted in every record.
    """
    stream = stream or sys.stderr
    fallback = None
    if log_format == "auto":
        log_format = "journal" if journal_stream(stream) else "text" if stream.isatty() else "json"
    handler: logging.Handler
    if log_format == "journal":
        try:
            handler = JournalHandler()
        except ImportError:
            fallback = "systemd-python is not installed (pip install 'corral[systemd]')"
            log_format = "json"
    if log_format != "journal":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_TextFormatter() if log_format == "text" else JsonFormatter())
    handler.addFilter(RedactingFilter(Redactor(redact)))
    root = logging.getLogger("corral")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    if fallback is not None:
        root.warning("cannot log to journald: %s; logging JSON lines to stderr", fallback)
    return log_format


def describe_daemon(**fields: str) -> None:
    """Add *fields* (``CORRAL_SOCKET=...``) to every journal entry from now on."""
    for handler in logging.getLogger("corral").handlers:
        if isinstance(handler, JournalHandler):
            handler.context.update(fields)
