"""``corral doctor``: a checklist of what a deployment needs, with one verdict.

Each check gives ``ok``, ``warn`` (works, but look) or ``fail`` (will not work, or will lose
something), one line each, with what to do. The verdict is the worst of them, and the exit
status is 1 when anything failed. Checks: the config; the control socket (a daemon answers,
or the path can be served); the state directory; journald; the metrics address; and, against
the unit (``systemctl show``, or a unit file given with ``--unit``), that ``TimeoutStopSec``
covers the worst-case ordered shutdown of the tree and that ``WatchdogSec`` leaves the loop
monitor time to report a stall before systemd acts.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from corral.daemon.config import ConfigError, DaemonConfig, LoadedConfig, load, load_demo
from corral.daemon.endpoint import Endpoint
from corral.supervisors.spec import stop_bound

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ("Check", "Level", "diagnose", "parse_timespan", "verdict")

JOURNAL_SOCKET: Final = Path("/run/systemd/journal/socket")
STOP_MARGIN: Final = 5.0  # seconds TimeoutStopSec should leave beyond the tree's own bound
# systemd.time(7): case matters ("M" is a month, "m" a minute).
_UNITS: Final = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
    "M": 2629800.0,
    "month": 2629800.0,
    "months": 2629800.0,
    "y": 31557600.0,
    "year": 31557600.0,
    "years": 31557600.0,
}
_SPAN: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")


class Level(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@attrs.frozen
class Check:
    level: Level
    name: str
    text: str

    def line(self) -> str:
        mark = {Level.OK: "ok  ", Level.WARN: "warn", Level.FAIL: "FAIL"}[self.level]
        return f"[{mark}] {self.name}: {self.text}"


def parse_timespan(text: str) -> float:
    """A systemd time span ("90", "1min 30s", "500ms", "infinity") in seconds.

    Raises:
        ValueError: not a time span (an empty one means "the default": the caller decides).
    """
    text = text.strip()
    if text == "infinity":
        return math.inf
    total, end = 0.0, 0
    for match in _SPAN.finditer(text):
        number, unit = match.groups()
        if text[end : match.start()].strip() or unit not in _UNITS:
            break
        total += float(number) * _UNITS[unit]
        end = match.end()
    if end == 0 or text[end:].strip():
        msg = f"not a systemd time span: {text!r}"
        raise ValueError(msg)
    return total


def verdict(checks: list[Check]) -> str:
    fails = sum(c.level is Level.FAIL for c in checks)
    warns = sum(c.level is Level.WARN for c in checks)
    if fails:
        return f"verdict: NOT READY: {fails} failed, {warns} to look at"
    if warns:
        return f"verdict: OK, with {warns} to look at"
    return "verdict: OK"


def diagnose(config: str | None, *, unit: str, socket_path: Path | None) -> Iterator[Check]:
    """The checks, in order; later ones are skipped when the config is invalid."""
    try:
        loaded = load_demo() if config is None else load(config)
    except ConfigError as exc:
        yield Check(Level.FAIL, "config", f"{exc}")
        return
    children = len(loaded.spec.children)
    yield Check(Level.OK, "config", f"{loaded.source}: valid, {children} children under /")
    settings = loaded.daemon
    path = socket_path or settings.socket_path()
    answering = yield from _socket(path)
    yield _state(settings.state_path())
    yield _journal()
    yield _metrics(settings, answering=answering)
    yield from _unit(unit, loaded)


def _socket(path: Path) -> Generator[Check, None, bool]:
    """Whether a daemon answers at *path* (the return value), as checks."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(os.fspath(path))
        probe.sendall(b'{"command":"ping"}\n')
        answer = probe.makefile("rb").readline()
    except PermissionError:
        yield Check(
            Level.FAIL,
            "control socket",
            f"{path}: permission denied: run as root, or as a member of the socket's group",
        )
        return False
    except OSError as exc:
        parent = path.parent
        if parent.exists() and not os.access(parent, os.W_OK):
            yield Check(
                Level.FAIL,
                "control socket",
                f"no daemon answers at {path}, and {parent} is not writable: the daemon could"
                " not create its socket there",
            )
        else:
            yield Check(
                Level.WARN,
                "control socket",
                f"no daemon answers at {path} ({exc.strerror or exc}): start it"
                " (`systemctl start corral`) if it should be running",
            )
        return False
    finally:
        probe.close()
    if b'"ok":true' not in answer.replace(b" ", b""):
        yield Check(Level.FAIL, "control socket", f"{path} answered {answer[:200]!r}")
        return False
    yield Check(Level.OK, "control socket", f"a daemon answers at {path}")
    return True


def _state(path: Path) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK):
        return Check(Level.OK, "state directory", f"{path} is writable")
    return Check(
        Level.FAIL,
        "state directory",
        f"{path} is not writable by uid {os.getuid()}: operator stops could not be saved"
        " (StateDirectory= in the unit, or state-directory in the config)",
    )


def _journal() -> Check:
    if not JOURNAL_SOCKET.exists():
        return Check(
            Level.WARN,
            "journald",
            f"{JOURNAL_SOCKET} is missing: logs go to stderr (text or JSON), not the journal",
        )
    if importlib.util.find_spec("systemd") is None:
        return Check(
            Level.WARN,
            "journald",
            "systemd-python is not installed: logs go to stderr, where journald stores them"
            " without fields (pip install 'corral[systemd]')",
        )
    return Check(Level.OK, "journald", "native logging available (fields and MESSAGE_IDs)")


def _metrics(settings: DaemonConfig, *, answering: bool) -> Check:
    listen, address = settings.metrics_listen, settings.metrics_address()
    if address is None:
        return Check(Level.WARN, "metrics", 'metrics-listen is "": nothing to scrape')
    host, port = address
    if port == 0:
        return Check(
            Level.WARN,
            "metrics",
            f"{listen}: a free port is picked at each start (its log says which):"
            " Prometheus needs a fixed one",
        )
    if answering:
        url = f"{Endpoint(host, port, {}).address}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as page:  # noqa: S310  # http, ours
                return Check(Level.OK, "metrics", f"{url} answers {page.status}")
        except OSError as exc:
            return Check(Level.FAIL, "metrics", f"the daemon runs but {url} fails: {exc}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return Check(
                Level.FAIL,
                "metrics",
                f"cannot listen on {listen}: {exc.strerror or exc} (another process has it?)",
            )
    return Check(Level.OK, "metrics", f"{listen} is free to listen on")


def _unit(unit: str, loaded: LoadedConfig) -> Iterator[Check]:
    try:
        values = _unit_values(unit)
    except ValueError as exc:
        yield Check(
            Level.WARN, "unit", f"{unit}: {exc}: TimeoutStopSec and WatchdogSec not checked"
        )
        return
    if values is None:
        yield Check(
            Level.WARN,
            "unit",
            f"{unit} is not loaded and is not a file: TimeoutStopSec and WatchdogSec not checked"
            " (give the unit file with --unit)",
        )
        return
    bound = stop_bound(loaded.spec)
    timeout = values.get("TimeoutStopSec", 90.0)
    if bound == math.inf:
        yield Check(
            Level.WARN,
            "stop timeout",
            "a child has shutdown = infinity with no bound below it: the tree's stop has no"
            f" worst case, and systemd kills what is left after TimeoutStopSec ({timeout:g} s)",
        )
    elif timeout < bound + STOP_MARGIN:
        yield Check(
            Level.FAIL,
            "stop timeout",
            f"TimeoutStopSec={timeout:g}s is below the worst-case ordered shutdown, {bound:g} s"
            f" (+{STOP_MARGIN:g} s margin): raise it to {math.ceil(bound + STOP_MARGIN)}s or"
            " lower the children's shutdown timeouts",
        )
    else:
        yield Check(
            Level.OK,
            "stop timeout",
            f"TimeoutStopSec={timeout:g}s covers the worst-case ordered shutdown ({bound:g} s)",
        )
    watchdog = values.get("WatchdogSec", 0.0)
    stall = loaded.daemon.loop_stall_timeout
    if not watchdog or watchdog == math.inf:
        yield Check(
            Level.WARN, "watchdog", "WatchdogSec is not set: a wedged loop is not restarted"
        )
    elif watchdog < 2 * stall:
        yield Check(
            Level.FAIL,
            "watchdog",
            f"WatchdogSec={watchdog:g}s is under twice loop-stall-timeout ({stall:g} s): systemd"
            " may kill the daemon before a stall is even logged; raise WatchdogSec or lower"
            " loop-stall-timeout",
        )
    else:
        yield Check(
            Level.OK,
            "watchdog",
            f"WatchdogSec={watchdog:g}s; pets every {watchdog / 2:g} s while the loop is healthy;"
            f" stalls are logged after {stall:g} s",
        )


def _unit_values(unit: str) -> dict[str, float] | None:
    """TimeoutStopSec and WatchdogSec, from the unit file *unit* or ``systemctl show``."""
    path = Path(unit)
    if path.is_file():
        values = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("TimeoutStopSec", "WatchdogSec", "TimeoutSec"):
                name = "TimeoutStopSec" if key.strip() == "TimeoutSec" else key.strip()
                if value.strip():
                    values[name] = parse_timespan(value)
                else:  # an empty assignment resets it to the default
                    values.pop(name, None)
        return values
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    shown = subprocess.run(  # noqa: S603  # fixed argv
        [systemctl, "show", unit, "-p", "LoadState,TimeoutStopUSec,WatchdogUSec"],
        capture_output=True,
        text=True,
        check=False,
    )
    props = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return None
    return {
        "TimeoutStopSec": parse_timespan(props.get("TimeoutStopUSec", "90s")),
        "WatchdogSec": parse_timespan(props.get("WatchdogUSec", "0")),
    }
