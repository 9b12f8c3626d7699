"""journald: native entries with fields an operator filters on, and ``corral logs``.

Under systemd (``$JOURNAL_STREAM`` names our stderr, or ``log-format = "journal"``) every
record goes to journald through systemd-python's ``journal.send``, with:

- ``MESSAGE``, ``PRIORITY`` (syslog level), ``SYSLOG_IDENTIFIER=corral``, ``CODE_*``;
- ``MESSAGE_ID``, stable per event kind (``MESSAGE_IDS``), which ``systemd/corral.catalog``
  explains under ``journalctl -x``;
- the record's fields, upper-cased: ``CHILD_PATH``, ``SUPERVISOR``, ``CORRAL_EVENT``,
  ``EXIT_KIND``, ``EXCEPTION``, ``EXCEPTION_TYPE``, ``RESTARTS``, ``DELAY``, ``REASON``; the
  audit's ``PEER_UID``, ``PEER_PID``, ``COMMAND``, ``RESULT``; a stall's ``STACK``.

So ``journalctl -u corral CHILD_PATH=/db`` or ``MESSAGE_ID=...`` finds them without parsing
text. ``corral logs [PATH]`` runs ``journalctl -o json`` for corral's entries and keeps those
of PATH and below.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from corral.actors.registry import within
from corral.daemon.view import normalize

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = (
    "FIELDS",
    "IDENTIFIER",
    "JOURNALS",
    "MESSAGE_IDS",
    "JournalHandler",
    "journal_stream",
    "own_unit",
    "read",
    "render",
    "unreadable",
)

IDENTIFIER: Final = "corral"
MESSAGE_IDS: Final = {
    "child-started": "f215683db39a4da19e938caf9502525d",
    "child-exited": "5450bc697d784dcd896db890555037f5",
    "child-stopped": "695e9bbe545d4b89bbf968762572497d",
    "child-abandoned": "34f525ad92114734868c94c1a1f94db8",
    "start-failed": "7dab4d88121c477b8394c9aecaeb966c",
    "restart-scheduled": "08176e8fcf76486db9da84fb6eae15e3",
    "supervisor-gave-up": "2949516a352f48f9a54b36fb32d852ae",
    "supervisor-auto-shutdown": "70174c73790846b780dfff71e61f57e1",
    "supervisor-escalated": "7f8c584671a34f388d610e120223d413",
    "dead-letter": "9adcf6569e4c49db9933d45c425e1d78",
    "breaker-changed": "bccccd81257e4ce892aed22b09edefbd",
    "service-level": "9be91542f9ea489f8c47a334ea187105",
    "child-given-up": "fc79944b28244e27b74486a508fd1f00",
    "audit": "14f8d5f30ab349c9b898bfda820768d5",
    "loop-stall": "40dcdafe5219416aa651db7a5f7eacf2",
    "loop-recovered": "8361ae00036742e4876f4281ed02fb7b",
    "daemon-ready": "ad8ffa85830d4ff59b9140eaff13ee2c",
    "daemon-stopping": "80ad436475c44eb9af364dc6216039d2",
    "reload": "481c921620f64823b215d45f710c2b58",
    "not-configured": "8930da68de6048bdb7b3ae67030c5886",
    "daemon-stopped": "2a08ffd979ea402bb6c5abfc232f17af",
    "config-invalid": "b9eca2eb7e5d41ef9b1cdef52ad35159",
    "daemon-failed": "8394049c13274cf683f1e7cc61fcd46d",
}
# record field -> journal field
FIELDS: Final = {
    "path": "CHILD_PATH",
    "supervisor": "SUPERVISOR",
    "event": "CORRAL_EVENT",
    "exit": "EXIT_KIND",
    "exception": "EXCEPTION",
    "exception_type": "EXCEPTION_TYPE",
    "restarts": "RESTARTS",
    "delay": "DELAY",
    "reason": "REASON",
    "uid": "PEER_UID",
    "pid": "PEER_PID",
    "command": "COMMAND",
    "result": "RESULT",
    "stack": "STACK",
    "breaker": "BREAKER",
    "state": "BREAKER_STATE",
    "service": "SERVICE_LEVEL",
    "count": "COUNT",
}
_PRIORITY: Final = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def journal_stream(stream: Any, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether *stream* is connected to journald (``$JOURNAL_STREAM`` is its device:inode)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class JournalHandler(logging.Handler):
    """Sends records to journald as native entries with fields (see the module's notes).

    Every entry also carries ``context``: ``CORRAL_UNIT``, the systemd unit the daemon runs
    in (``corral.service``, ``corral@web.service``), and ``CORRAL_SOCKET``, its control
    socket, once bound. The catalog's commands use them, so that they work as written on a
    host of several trees too (``corral --socket @CORRAL_SOCKET@ why ...``).
    """

    def __init__(self) -> None:
        super().__init__()
        import systemd.journal as journal  # the systemd extra (ImportError: the caller falls back)

        self._send = journal.send
        unit = own_unit()
        self.context: dict[str, str] = {"CORRAL_UNIT": unit} if unit else {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info or record.exc_text:
                trace = record.exc_text or logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]  # exc_info is set
                message = f"{message}\n{trace}"
            fields: dict[str, Any] = {
                "PRIORITY": str(_PRIORITY.get(record.levelname, 6)),
                "SYSLOG_IDENTIFIER": IDENTIFIER,
                "LOGGER": record.name,
            }
            for key, value in (getattr(record, "fields", None) or {}).items():
                if value is not None and key in FIELDS:
                    fields[FIELDS[key]] = str(value)
            fields.update(self.context)
            event = fields.get("CORRAL_EVENT")
            self._send(
                message,
                MESSAGE_ID=MESSAGE_IDS.get(event) if event else None,
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except Exception:
            self.handleError(record)


def own_unit(cgroup: Path = Path("/proc/self/cgroup")) -> str | None:
    """The systemd service this process runs in (its cgroup's last part), or None."""
    try:
        text = cgroup.read_text()
    except OSError:  # pragma: no cover  # no /proc
        return None
    for line in text.splitlines():
        name = line.rpartition("/")[2]
        if name.endswith(".service"):
            return name
    return None


JOURNALS: Final = (Path("/var/log/journal"), Path("/run/log/journal"))


def unreadable(directory: str | None, journals: Sequence[Path] = JOURNALS) -> str | None:
    """Why the system journal cannot be read here, or None: there is none (journald does not
    run, or keeps nothing), or its files are not ours to read (and which group may)."""
    if directory is not None:
        found = sorted(Path(directory).glob("*.journal")) + sorted(
            Path(directory).glob("*/*.journal")
        )
        where = directory
    else:
        found = [f for top in journals for f in sorted(top.glob("*/system*.journal"))]
        where = " or ".join(str(top) for top in journals)
    if not found:
        return (
            f"no systemd journal in {where}: journald does not run here or keeps no files;"
            " the daemon then logs to its stderr (`corral run` in a terminal, or where its"
            " service manager keeps it)"
        )
    if any(os.access(f, os.R_OK) for f in found):
        return None
    group = _group_of(found[0])
    return (
        f"you may not read the system journal ({found[0].parent}): members of group"
        f" {group!r} may (sudo usermod -aG {group} $USER, then log in again), or run as root"
    )


def _group_of(path: Path) -> str:
    gid = path.stat().st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def read(
    path: str | None,
    *,
    follow: bool,
    since: str | None,
    unit: str | None,
    directory: str | None,
    lines: int | None,
) -> Iterator[dict[str, Any]]:
    """corral's journal entries (as ``journalctl -o json`` gives them), of *path* and below.

    Raises:
        FileNotFoundError: there is no ``journalctl``.
    """
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        msg = "journalctl not found: `corral logs` reads the systemd journal"
        raise FileNotFoundError(msg)
    command = [journalctl, "-o", "json", "--no-pager", f"SYSLOG_IDENTIFIER={IDENTIFIER}"]
    if unit:
        command += ["--unit", unit]
    if directory:
        command += ["--directory", directory]
    if since:
        command += ["--since", since]
    if lines is not None:
        command += ["--lines", str(lines)]
    if follow:
        command.append("--follow")
    top = None if path is None else normalize(path)
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:  # noqa: S603  # fixed argv
        assert process.stdout is not None
        try:
            for line in process.stdout:
                entry = json.loads(line)
                if top is None or top == "/" or _of(entry, top):
                    yield entry
        finally:
            process.terminate()
    if process.returncode not in (0, -15):
        msg = f"journalctl failed (exit {process.returncode}); see its message above"
        raise OSError(msg)


def _of(entry: Mapping[str, Any], top: str) -> bool:
    child = entry.get("CHILD_PATH")
    supervisor = entry.get("SUPERVISOR")
    return (isinstance(child, str) and within(child, top)) or (
        isinstance(supervisor, str) and within(supervisor, top) and child is None
    )


def render(entry: Mapping[str, Any]) -> str:
    """One entry as a line: its local time and message."""
    usec = int(entry.get("__REALTIME_TIMESTAMP", "0"))
    when = datetime.fromtimestamp(usec / 1e6).astimezone().strftime("%b %d %H:%M:%S")
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):  # journalctl gives non-UTF-8 messages as byte arrays
        message = bytes(message).decode(errors="replace")
    first, *rest = str(message).rstrip("\n").split("\n")
    indent = " " * (len(when) + 1)  # a traceback's lines under its message, as journalctl
    return "\n".join([f"{when} {first}", *(indent + line for line in rest)])
