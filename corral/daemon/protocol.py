"""The control socket's language, shared by the daemon and the CLI.

Framing: one JSON object per line (UTF-8, ``\\n``-terminated, at most ``MAX_FRAME`` bytes), so
a person can drive the socket with ``socat - UNIX-CONNECT:/run/corral/control.sock``::

    {"command": "status", "path": "/workers"}
    {"ok": true, "result": {"path": "/workers", "type": "supervisor", ...}}

Every request gets exactly one response line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": "not_found", "message": "..."}}``, except ``events``,
which answers with the recent events and then, with ``follow``, sends one ``Event`` line
per new lifecycle event until the client disconnects. Codes are stable (``Code``);
messages are for people.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = (
    "CHANGES",
    "MAX_DEPTH",
    "MAX_FRAME",
    "Answer",
    "BreakerAction",
    "BreakerInfo",
    "Breakers",
    "CallActor",
    "CastActor",
    "Code",
    "DeadLetterInfo",
    "DeadLetters",
    "DeleteChild",
    "Done",
    "ErrorInfo",
    "Event",
    "Events",
    "ExitInfo",
    "Kill",
    "Metrics",
    "Ping",
    "Pong",
    "Reload",
    "ReloadResult",
    "Request",
    "Response",
    "Restart",
    "Shutdown",
    "Start",
    "StartChild",
    "Status",
    "StatusNode",
    "Stop",
    "TerminateChild",
    "Why",
    "WhyResult",
    "decode_request",
    "decode_response",
    "encode",
    "encode_value",
)

MAX_FRAME: Final = 1024 * 1024  # bytes in one line, newline included


class Code(enum.StrEnum):
    """Stable error codes: scripts match these, not messages."""

    BAD_REQUEST = "bad_request"  # not JSON, unknown command, wrong types, frame too large
    FORBIDDEN = "forbidden"  # the peer's uid/gid is not allowed
    BUSY = "busy"  # too many connections
    NOT_FOUND = "not_found"  # no such child or supervisor
    RUNNING = "running"  # it is running (start, delete)
    NOT_RUNNING = "not_running"  # it is not running (kill)
    RESTARTING = "restarting"  # it waits to restart (delete)
    ALREADY_PRESENT = "already_present"  # the id is taken by a stopped child
    ALREADY_STARTED = "already_started"  # the id is taken by a running child
    MAX_CHILDREN = "max_children"  # a dynamic supervisor is full
    UNSUPPORTED = "unsupported"  # the command does not apply to this supervisor or child
    START_FAILED = "start_failed"  # the child raised while starting
    INVALID_CONFIG = "invalid_config"  # reload: the file is invalid; nothing was changed
    STOPPING = "stopping"  # the daemon or that supervisor is stopping
    TIMEOUT = "timeout"  # call: the actor did not answer in time
    CRASHED = "crashed"  # call: the actor crashed while handling the message
    NO_REPLY = "no_reply"  # call: the actor deferred its answer and ended without giving it
    MAILBOX_FULL = "mailbox_full"  # call, cast: the actor's mailbox is full
    INTERNAL = "internal"  # a bug in corral: see the daemon's log


# -- requests --------------------------------------------------------------------------------

Path = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class _Request(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="command"
):
    """Base: the ``command`` key selects the request."""


class Ping(_Request, tag="ping", frozen=True):
    """The daemon's version, pid and uptime: is it there?"""


class Status(_Request, tag="status", frozen=True):
    path: Path = "/"


class Start(_Request, tag="start", frozen=True):
    """Start a stopped child (and forget an operator's stop)."""

    path: Path


class Stop(_Request, tag="stop", frozen=True):
    """Stop a child and keep it stopped, across daemon restarts too, until started."""

    path: Path


class Restart(_Request, tag="restart", frozen=True):
    """Stop (if running) and start a child; not counted in the restart intensity."""

    path: Path


class Kill(_Request, tag="kill", frozen=True):
    """Crash a running child, as if it had raised: a drill of its supervisor's rules."""

    path: Path
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = "killed by an operator"


class StartChild(_Request, tag="start-child", frozen=True):
    """Start a child of a dynamic supervisor from its template, with *args* merged in; a full
    one (``max_children``) is waited on for a free slot for *wait* seconds (0: not at all)."""

    supervisor: Path
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern="^[^/]+$")] | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    wait: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0


class TerminateChild(_Request, tag="terminate-child", frozen=True):
    """OTP's terminate_child: stop it (a dynamic supervisor's child is then gone)."""

    path: Path


class DeleteChild(_Request, tag="delete-child", frozen=True):
    """OTP's delete_child: forget a stopped child's spec."""

    path: Path


class Reload(_Request, tag="reload", frozen=True):
    dry_run: bool = False


class Why(_Request, tag="why", frozen=True):
    """Why a child is in its state: its last exits, restarts and its supervisor's budget."""

    path: Path


class DeadLetters(_Request, tag="dead-letters", frozen=True):
    path: Path | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class Events(_Request, tag="events", frozen=True):
    """The *recent* last events (the result); with *follow*, then every new event as an
    ``Event`` line until the client disconnects."""

    recent: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    follow: bool = True


class CallActor(_Request, tag="call", frozen=True):
    """Send an application message (any JSON value) to the actor at *path* and wait for its
    answer, at most *timeout* seconds. Only to an actor that accepts socket messages."""

    path: Path
    message: Any
    timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0


class CastActor(_Request, tag="cast", frozen=True):
    """Send an application message (any JSON value) to the actor at *path*, not waiting for
    it to be handled. Only to an actor that accepts socket messages."""

    path: Path
    message: Any


BreakerName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_.-]{1,64}$")]


class Breakers(_Request, tag="breakers", frozen=True):
    """The circuit breakers of the actors at or below ``path``."""

    path: Path = "/"


class BreakerAction(_Request, tag="breaker", frozen=True):
    """An operator's hand on one breaker: ``reset`` (closed, its window emptied) or ``open``
    (held open, no trials, until reset)."""

    path: Path
    name: BreakerName
    action: Literal["reset", "open"]


class Shutdown(_Request, tag="shutdown", frozen=True):
    """Stop the whole tree in reverse order and exit 0."""


class Metrics(_Request, tag="metrics", frozen=True):
    """The Prometheus exposition (text format 0.0.4) as the result, a string."""


Request = (
    Ping
    | Status
    | Start
    | Stop
    | Restart
    | Kill
    | StartChild
    | TerminateChild
    | DeleteChild
    | Reload
    | Why
    | DeadLetters
    | Events
    | Shutdown
    | Metrics
    | CallActor
    | CastActor
    | Breakers
    | BreakerAction
)

# The requests that change the tree or the daemon: audited, and worth a note if interrupted.
CHANGES: Final = (
    Start,
    Stop,
    Restart,
    Kill,
    StartChild,
    TerminateChild,
    DeleteChild,
    Reload,
    Shutdown,
    CallActor,
    CastActor,
    BreakerAction,
)

# -- results ---------------------------------------------------------------------------------


class _Result(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    pass


class Pong(_Result, frozen=True, kw_only=True):
    version: str
    pid: int
    backend: str
    uptime: float  # seconds
    config: str  # the file the tree comes from


class Done(_Result, frozen=True, kw_only=True):
    """A state-changing command was carried out."""

    path: str
    done: str  # what happened, for people: "stopped; it stays stopped until `corral start`"
    warning: str | None = None  # e.g. the operator's stop could not be saved


class Answer(_Result, frozen=True, kw_only=True):
    """What an actor answered to ``call`` (any JSON value), or that ``cast`` queued it."""

    path: str
    answer: Any = None
    queued: bool = False  # cast: the message is in its mailbox


class BreakerInfo(_Result, frozen=True, kw_only=True):
    """One circuit breaker of an actor."""

    path: str  # the actor's
    name: str
    state: str  # closed | open | half-open
    held: bool = False  # held open by an operator until `corral breaker reset`
    since: float  # seconds in this state
    retry_in: float | None = None  # open: seconds until its next trial (None: held open)
    failures_in_a_row: int = 0
    window_calls: int = 0
    window_failures: int = 0
    succeeded: int = 0  # totals since the breaker was made (across restarts)
    failed: int = 0
    rejected: int = 0
    ignored: int = 0
    last_failure: str | None = None  # repr of the last failure's exception


class StatusNode(_Result, frozen=True, kw_only=True):
    """One child (or the root) in ``status``; supervisors carry ``children``."""

    path: str
    type: str  # "worker" | "supervisor"
    state: str  # starting | running | backoff | stopping | stopped | failed
    restarts: int  # always present, like path, type and state
    held: bool  # stopped by an operator: stays stopped until started
    uptime: float | None = None  # seconds since it last started, while it runs
    last_exit: str | None = None  # "normal" | "shutdown" | "error"
    last_error: str | None = None  # repr of the last exit's exception
    start_error: str | None = None  # repr of a later failure to start again
    next_restart_in: float | None = None  # seconds, in backoff
    mailbox_depth: int = 0
    mailbox_capacity: int = 0
    handled: int = 0
    dead_letters: int = 0
    strategy: str | None = None  # supervisors
    intensity: int | None = None
    period: float | None = None
    restarts_remaining: int | None = None
    dynamic: bool = False
    breakers: list[BreakerInfo] | None = None  # a worker's, when it has any
    service: str | None = None  # the root: full | degraded | minimal | unavailable
    service_reasons: list[str] | None = None  # the root: why it is not full
    children: list[StatusNode] | None = None


class ExitInfo(_Result, frozen=True, kw_only=True):
    at: float  # Unix time
    kind: str  # "normal" | "shutdown" | "error"
    exception: str | None = None  # repr
    traceback: str | None = None  # with the cause's: a supervisor's give-up, its child's exit
    reason: str | None = None  # a shutdown's: why the supervisor gave up


class WhyResult(_Result, frozen=True, kw_only=True):
    path: str
    state: str
    restarts: int
    held: bool
    exits: list[ExitInfo]  # oldest first
    next_restart_in: float | None = None
    supervisor: str
    strategy: str
    intensity: int
    period: float
    restarts_remaining: int
    dead_letters: int = 0
    start_error: str | None = None  # its last start failed after its last exit (repr)
    start_traceback: str | None = None
    declined: str | None = None  # its last start declined (corral.Ignore): the reason
    health: str | None = None  # its health probes are failing: how many in a row, the last
    breakers: list[BreakerInfo] = []


class ReloadResult(_Result, frozen=True, kw_only=True):
    source: str
    dry_run: bool
    changes: list[str]  # one line per change that took effect (a dry run: would take)
    notes: list[str]  # what a reload does not apply, or could not save
    failures: list[str]  # children that failed to start (the rest was applied)
    not_applied: list[str] = []  # the plan's changes that did not take effect, each with why


class DeadLetterInfo(_Result, frozen=True, kw_only=True):
    path: str
    reason: str
    message: str  # repr, shortened
    at: float  # Unix time
    exception: str | None = None


class Event(_Result, frozen=True, kw_only=True):
    """A lifecycle event, as streamed by ``events`` and logged."""

    event: str  # child-started, child-exited, ... (see README)
    path: str
    at: float  # Unix time
    supervisor: str | None = None
    restarts: int | None = None
    exit: str | None = None
    exception: str | None = None
    delay: float | None = None
    reason: str | None = None
    message: str | None = None  # dead-letter: the message (repr, at most 200 characters)
    breaker: str | None = None  # breaker-changed: its name
    state: str | None = None  # breaker-changed: the state it entered


class ErrorInfo(msgspec.Struct, frozen=True):
    code: Code
    message: str


class Response(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


_request_decoder: Final = msgspec.json.Decoder(Request)
_response_decoder: Final = msgspec.json.Decoder(Response)
_encoder: Final = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """One frame: the message as JSON and a newline."""
    return _encoder.encode(message) + b"\n"


def encode_value(value: object) -> bytes:
    """Any JSON value as JSON (no newline)."""
    return _encoder.encode(value)


MAX_DEPTH: Final = 32
"""How deeply ``start-child`` args may nest: actors' keyword arguments need a few levels, and
a value nested 1,000 deep breaks whatever walks it (``repr``, a log line) by recursion."""


def decode_request(frame: bytes) -> Request:
    """Raises ``msgspec.DecodeError`` (``ValidationError`` for wrong shapes, nesting too
    deep included)."""
    try:
        request: Request = _request_decoder.decode(frame)
    except RecursionError:
        msg = f"nested too deeply to read (args may nest {MAX_DEPTH} levels of arrays and objects)"
        raise msgspec.ValidationError(msg) from None
    if isinstance(request, StartChild) and _deeper_than(request.args, MAX_DEPTH):
        msg = f"args nested more than {MAX_DEPTH} levels deep - at `$.args`"
        raise msgspec.ValidationError(msg)
    if isinstance(request, CallActor | CastActor) and _deeper_than(request.message, MAX_DEPTH):
        msg = f"message nested more than {MAX_DEPTH} levels deep - at `$.message`"
        raise msgspec.ValidationError(msg)
    return request


def _deeper_than(value: object, limit: int) -> bool:
    """Whether *value* nests lists and dicts more than *limit* levels (without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decode_response(frame: bytes) -> Response:
    return _response_decoder.decode(frame)
