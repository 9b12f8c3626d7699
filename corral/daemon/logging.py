"""The daemon's log: stdlib ``logging``, readable text on a terminal, JSON lines otherwise,
native journald entries under systemd.

Lifecycle events and audit records carry their fields in ``record.fields`` (a dict), so a
JSON line or a journald entry (``journal.py``) can be filtered by ``path``, ``event`` or
``uid`` rather than parsed out of the message. Every record passes the redaction filter
(``redact.py``) first.

Everything goes through one ``LogSink``, the root logger's handler: the daemon's own records,
every other logger's (an actor's ``logging.getLogger("jobsvc")``), ``warnings``, and the
lifecycle events, which are queued as the events themselves (an append: a crash and its
restart do not wait for a line to be formatted and written). A record made while an actor
runs carries that actor's path, from the ``current_path`` context variable. On the event
loop, the sink writes what is queued in order, in batches, shortly after (``FLUSH_AFTER``);
anywhere else (another thread, before or after the loop) it writes at once, after what is
queued; at exit, and at the end of ``serve``, it writes everything left. Nothing is dropped.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import msgspec

from corral.actors.actor import current_path
from corral.daemon import protocol, view
from corral.daemon.config import REDACT_DEFAULT
from corral.daemon.journal import JournalHandler, journal_stream
from corral.daemon.redact import RedactingFilter, Redactor
from corral.supervisors.events import (
    BreakerChanged,
    ChildAbandoned,
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    MessageDeadLettered,
    RestartScheduled,
    StartFailed,
    SupervisorAutoShutdown,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.spec import ExitKind

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from corral.supervisors.events import Event

__all__ = (
    "EVENTS",
    "FLUSH_AFTER",
    "JsonFormatter",
    "LogSink",
    "current_sink",
    "describe_daemon",
    "log_event",
    "setup",
)

EVENTS: Final = logging.getLogger("corral.events")

# event type -> level; everything that needs a look is WARNING or worse (lowered for a
# normal exit and for a breaker that is not opening: see _event_level).
_LEVELS_BY_TYPE: Final[dict[type, int]] = {
    ChildStarted: logging.INFO,
    ChildExited: logging.WARNING,
    ChildStopped: logging.INFO,
    ChildAbandoned: logging.ERROR,
    StartFailed: logging.ERROR,
    RestartScheduled: logging.INFO,
    SupervisorGaveUp: logging.ERROR,
    SupervisorAutoShutdown: logging.WARNING,
    SupervisorEscalated: logging.WARNING,
    MessageDeadLettered: logging.WARNING,
    BreakerChanged: logging.WARNING,
    ChildGivenUp: logging.ERROR,
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
        case "child-given-up":
            return f"gave up {ev.path}: {ev.reason}"
        case "breaker-changed":
            return f"breaker {ev.breaker} of {ev.path} is {ev.state}: {ev.reason}"
        case _:
            return f"dead letter at {ev.path} ({ev.reason}): {ev.message}"


def log_event(event: Event) -> None:
    """An ``EventBus`` observer: one log record per lifecycle event."""
    level = _event_level(event)
    if EVENTS.isEnabledFor(level):  # the event's view is built only for a line written
        ev = view.event(event)
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


FLUSH_AFTER: Final = 0.002  # seconds from a queued line to its batch's write, on the loop
BATCH: Final = 8  # lines written before the loop's other tasks get a turn
LETTERS_EVERY: Final = 1.0  # seconds: at most one dead-letter line per path and reason


class _Burst:
    """The dead letters of one path and reason within one second: the first is logged, the
    rest counted and logged as one line once the second is over."""

    __slots__ = ("last", "more", "until")

    def __init__(self, until: float) -> None:
        self.until = until
        self.more = 0
        self.last: MessageDeadLettered | None = None


class LogSink:
    """The one way to the log (see the module's notes): *handler* writes a record."""

    def __init__(self, handler: logging.Handler, level: int) -> None:
        self.handler = handler
        self.level = level
        self.format = ""  # the format setup chose: "journal", "text" or "json"
        self.pending: deque[logging.LogRecord | tuple[float, Event]] = deque()
        self._lock = threading.RLock()
        self._loop: int | None = None  # the thread whose event loop runs the flushing task
        self._wake: anyio.Event | None = None
        self._bursts: dict[tuple[str, str], _Burst] = {}  # dead letters, by path and reason

    def observe(self, event: Event) -> None:
        """An ``EventBus`` observer: the event is queued as it is, with the time it came.
        Dead letters make at most one line per path and reason per second: the first one,
        then (once the second is over) one saying how many more and naming the last."""
        if self.level > _event_level(event):
            return
        now = time.time()
        if type(event) is MessageDeadLettered:
            with self._lock:  # another thread's record flushes (and closes bursts) too
                key = (event.path, event.reason)
                burst = self._bursts.get(key)
                if burst is not None and now < burst.until:
                    burst.more += 1
                    burst.last = event
                    self._poke()  # the run loop writes it when its second is over
                    return
                if burst is not None and burst.more:
                    self.pending.append(self._summary(burst))
                self._bursts[key] = _Burst(now + LETTERS_EVERY)
        self.pending.append((now, event))
        if self._loop is None:
            self.flush()
        else:
            self._poke()

    def put(self, record: logging.LogRecord) -> None:
        """A record (its message formatted now, while its arguments are what they are)."""
        record.msg, record.args = record.getMessage(), None
        if self._loop != threading.get_ident():
            with self._lock:
                self.flush()
                self.handler.handle(record)
            return
        self.pending.append(record)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def _summary(self, burst: _Burst) -> logging.LogRecord:
        last = burst.last
        assert last is not None
        record = _event_record(burst.until, last)
        fields = record.fields  # type: ignore[attr-defined]  # set by _event_record
        fields["count"] = burst.more
        record.msg = (
            f"dead letters at {last.path} ({last.reason}): {burst.more} more within"
            f" {LETTERS_EVERY:g} s, the last: {fields.get('message')}"
        )
        return record

    def _close_bursts(self, now: float) -> float:
        """Queue the lines of the bursts whose second is over (all, with ``now`` inf) and
        forget them; returns when the next one ends (inf: none)."""
        with self._lock:
            ended = [key for key, burst in self._bursts.items() if burst.until <= now]
            for key in ended:
                burst = self._bursts.pop(key)
                if burst.more:
                    self.pending.append(self._summary(burst))
            return min((b.until for b in self._bursts.values() if b.more), default=math.inf)

    def flush(self, most: float = math.inf) -> None:
        """Write what is queued, in order (at most *most* items)."""
        with self._lock:
            if self._bursts:
                self._close_bursts(time.time())
            pending = self.pending
            written = 0
            while pending and written < most:
                item = pending.popleft()
                record = item if isinstance(item, logging.LogRecord) else _event_record(*item)
                self.handler.handle(record)
                written += 1
            self.handler.flush()

    async def run(self) -> None:
        """Write what is queued on this loop, batch by batch, until cancelled (then write
        what is left)."""
        self._loop = threading.get_ident()
        try:
            while True:
                wake = self._wake = anyio.Event()
                next_burst = self._close_bursts(time.time())
                if not self.pending:
                    with anyio.move_on_after(max(0.0, next_burst - time.time())):
                        await wake.wait()
                    self._close_bursts(time.time())
                    if not self.pending:
                        continue
                await anyio.sleep(FLUSH_AFTER)  # the rest of the burst joins the batch
                while self.pending:  # a big batch in slices, the loop's other work between
                    self.flush(BATCH)
                    await anyio.lowlevel.checkpoint()
        finally:
            self._loop = None
            self._wake = None
            self._close_bursts(math.inf)  # what was counted is written too: nothing is lost
            self.flush()


class _Handler(logging.Handler):
    """The root logger's handler: hands every record to the sink, with the path of the actor
    running when it was made."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            path = current_path.get()
            if path is not None:
                fields = getattr(record, "fields", None)
                if fields is None:
                    record.fields = {"path": path}
                elif "path" not in fields:
                    record.fields = {**fields, "path": path}
            self.sink.put(record)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.sink.flush()  # logging.shutdown, at exit: nothing queued is lost


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]  # stdlib generic
    """Writes a batch and flushes the stream once (the sink flushes after each batch)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


def _event_level(event: Event) -> int:
    level = _LEVELS_BY_TYPE.get(type(event), logging.INFO)
    if isinstance(event, ChildExited) and event.kind is not ExitKind.ERROR:
        return logging.INFO
    if isinstance(event, BreakerChanged) and event.state != "open":
        return logging.INFO
    return level


def _event_record(created: float, event: Event) -> logging.LogRecord:
    """The record ``log_event`` would have made for *event*, observed at *created* (Unix
    time, read with the event: its ``at`` is the same moment on the loop's clock)."""
    ev = view.event(event, view.Clock(now=event.at, wall=created))
    level = _event_level(event)
    fields = msgspec.structs.asdict(ev)
    exception = getattr(event, "exception", None)
    if exception is not None:
        fields["exception_type"] = type(exception).__qualname__
    record = EVENTS.makeRecord(
        EVENTS.name, level, __file__, 0, _describe(ev), (), None, extra={"fields": fields}
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def current_sink() -> LogSink | None:
    """The sink ``setup`` put on the root logger, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Handler):
            return handler.sink
    return None


def setup(
    log_format: str, level: str, stream: Any = None, redact: Iterable[str] = REDACT_DEFAULT
) -> LogSink:
    """Log to journald or *stream* (stderr), every logger and ``warnings`` alike; returns the
    sink (``sink.format``: the format chosen).

    *log_format* is ``journal``, ``text``, ``json`` or ``auto``: journald when stderr is
    connected to it (``$JOURNAL_STREAM``), else text on a terminal, else JSON lines. Without
    systemd-python, ``journal`` falls back to JSON lines and says so. Secrets named by
    *redact* are redacted in every record. Called again, the sink keeps going with the new
    handler and level (after writing what it had queued).
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
        handler = _StreamHandler(stream)
        handler.setFormatter(_TextFormatter() if log_format == "text" else JsonFormatter())
    handler.addFilter(RedactingFilter(Redactor(redact)))
    root = logging.getLogger()
    sink = current_sink()
    if sink is None:
        sink = LogSink(handler, logging.getLevelName(level.upper()))
        root.addHandler(_Handler(sink))
    else:  # the same sink (its flushing task goes on) with the new handler and level
        sink.flush()
        if isinstance(sink.handler, JournalHandler) and isinstance(handler, JournalHandler):
            handler.context.update(sink.handler.context)
        sink.handler.close()
        sink.handler = handler
        sink.level = logging.getLevelName(level.upper())
    sink.format = log_format
    root.setLevel(level.upper())
    corral = logging.getLogger("corral")
    corral.handlers[:] = []
    corral.setLevel(logging.NOTSET)
    corral.propagate = True
    logging.captureWarnings(True)
    if fallback is not None:
        EVENTS.parent.warning(  # type: ignore[union-attr]  # "corral.events" has a parent
            "cannot log to journald: %s; logging JSON lines to stderr", fallback
        )
    return sink


def describe_daemon(**fields: str) -> None:
    """Add *fields* (``CORRAL_SOCKET=...``) to every journal entry from now on."""
    sink = current_sink()
    if sink is not None and isinstance(sink.handler, JournalHandler):
        sink.handler.context.update(fields)
