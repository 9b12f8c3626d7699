"""``corral doctor``: a checklist of what a deployment needs, with one verdict.

Each check gives ``ok``, ``warn`` (works, but look) or ``fail`` (will not work, or will lose
something), one line each, with what to do. The verdict is the worst of them, and the exit
status is 1 when anything failed.

It checks the deployment, not the current directory: the unit (``systemctl show``, or a unit
file given with ``--unit``; template instances such as ``corral@web`` too) says which config
``ExecStart=`` runs, where the control socket is (its ``.socket`` unit's ``ListenStream=``,
else ``RuntimeDirectory=``), where the state lives (``StateDirectory=``) and as which user.
A running daemon is asked first: what it answers is the truth, and a port it holds is its own,
never a failure. Checks: the config; the control socket (a daemon answers, and is configured);
the state directory (safe for the unit's user); journald; the metrics address; and that
``TimeoutStopSec`` covers the worst-case ordered shutdown of the tree and ``WatchdogSec``
leaves the loop monitor time to report a stall before systemd acts.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import math
import os
import pwd
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import psutil

from corral.daemon.config import ConfigError, DaemonConfig, LoadedConfig, load
from corral.daemon.directory import open_directory
from corral.daemon.endpoint import Endpoint
from corral.supervisors.spec import stop_bound

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ("Check", "Deployment", "Level", "deployment_of", "diagnose", "parse_timespan", "verdict")

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


@attrs.frozen
class Deployment:
    """What a systemd unit says of the daemon it runs (None: it does not say)."""

    unit: str
    config: str | None = None  # ExecStart=: corral run CONFIG
    socket: Path | None = None  # its .socket unit's ListenStream=, else RuntimeDirectory=
    state: Path | None = None  # StateDirectory=, under /var/lib
    user: str | None = None  # User=
    main_pid: int = 0  # 0: not running
    timeouts: dict[str, float] = attrs.field(factory=dict)  # TimeoutStopSec, WatchdogSec
    problem: str | None = None  # why the unit could not be read


def diagnose(config: str | None, *, unit: str, socket_path: Path | None) -> Iterator[Check]:
    """The checks, in order; later ones are skipped when the config is invalid."""
    try:
        deployment = deployment_of(unit)
    except ValueError as exc:
        deployment = Deployment(unit, problem=str(exc))
    config = config or (deployment.config if deployment is not None else None)
    if config is None:
        yield Check(
            Level.FAIL,
            "config",
            f"no CONFIG given, and {unit} is not loaded (or its ExecStart= names none):"
            " corral doctor /etc/corral/corral.toml (or --unit with the unit's name or file)",
        )
        return
    try:
        loaded = load(config)
    except ConfigError as exc:
        yield Check(Level.FAIL, "config", f"{exc}")
        return
    children = len(loaded.spec.children)
    yield Check(Level.OK, "config", f"{loaded.source}: valid, {children} children under /")
    settings = loaded.daemon
    found = deployment or Deployment(unit)
    path = socket_path or _configured(settings.control_socket) or found.socket
    answer = yield from _socket(path or settings.socket_path(), loaded.source)
    state = _configured(settings.state_directory) or found.state or settings.state_path()
    yield _state(state, found)
    yield _journal()
    yield _metrics(settings, answering=answer is not None, holder=found.main_pid)
    yield from _unit(unit, loaded, deployment)


def _configured(value: str | None) -> Path | None:
    return Path(value) if value else None


def deployment_of(unit: str) -> Deployment | None:
    """What *unit* (a loaded unit's name, or a unit file) says; None if it is neither.

    Raises:
        ValueError: a time span in it cannot be read.
    """
    path = Path(unit)
    if path.is_file():
        return _from_file(path)
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    props = _show(
        systemctl,
        unit,
        "LoadState,TimeoutStopUSec,WatchdogUSec,ExecStart,RuntimeDirectory,StateDirectory,"
        "User,MainPID,Sockets",
    )
    if props.get("LoadState") != "loaded":
        return None
    listen = ""
    for socket_unit in props.get("Sockets", "").split():
        listen = listen or _show(systemctl, socket_unit, "Listen").get("Listen", "")
    return Deployment(
        unit,
        config=_config_of(_argv_of_shown(props.get("ExecStart", ""))),
        socket=_socket_of(listen, props.get("RuntimeDirectory", "")),
        state=_state_of(props.get("StateDirectory", "")),
        user=props.get("User") or None,
        main_pid=int(props.get("MainPID") or 0),
        timeouts={
            "TimeoutStopSec": parse_timespan(props.get("TimeoutStopUSec", "90s")),
            "WatchdogSec": parse_timespan(props.get("WatchdogUSec", "0")),
        },
    )


def _show(systemctl: str, unit: str, properties: str) -> dict[str, str]:
    shown = subprocess.run(  # noqa: S603  # fixed argv
        [systemctl, "show", unit, "-p", properties],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)


def _from_file(path: Path) -> Deployment:
    """A unit file's settings (the last assignment wins; an empty one resets), and its
    ``.socket`` sibling's ``ListenStream=``."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, equals, value = line.partition("=")
        key = "TimeoutStopSec" if key.strip() == "TimeoutSec" else key.strip()
        if equals and not key.startswith(("#", ";")):
            values[key] = value.strip()
    timeouts = {
        key: parse_timespan(values[key])
        for key in ("TimeoutStopSec", "WatchdogSec")
        if values.get(key)
    }
    listen = ""
    sibling = path.with_suffix(".socket")
    if sibling.is_file():
        for line in sibling.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ListenStream" and value.strip():
                listen = value.strip()
    return Deployment(
        str(path),
        config=_config_of(values.get("ExecStart", "").lstrip("-@+!:").split()),
        socket=_socket_of(listen, values.get("RuntimeDirectory", "")),
        state=_state_of(values.get("StateDirectory", "")),
        user=values.get("User") or None,
        timeouts=timeouts,
    )


def _argv_of_shown(exec_start: str) -> list[str]:
    """The argv of ``systemctl show``'s ExecStart= ("{ path=... ; argv[]=corral run FILE ;
    ... }")."""
    _, found, rest = exec_start.partition("argv[]=")
    return rest.split(" ;", 1)[0].split() if found else []


def _config_of(argv: list[str]) -> str | None:
    """CONFIG in ``corral [--options] run [--options] CONFIG`` (None: the demo, or no run)."""
    if "run" not in argv:
        return None
    skip = False
    for arg in argv[argv.index("run") + 1 :]:
        if skip:
            skip = False
        elif arg == "--backend":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _socket_of(listen: str, runtime: str) -> Path | None:
    if listen.startswith("/"):
        return Path(listen.split(" ", 1)[0])
    if runtime.split():
        return Path("/run") / runtime.split()[0] / "control.sock"
    return None


def _state_of(state: str) -> Path | None:
    return Path("/var/lib") / state.split()[0] if state.split() else None


def _socket(path: Path, source: str) -> Generator[Check, None, dict[str, Any] | None]:
    """The daemon's answer to ping at *path* (the return value, None if none), as checks."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(os.fspath(path))
        reader = probe.makefile("rb")
        probe.sendall(b'{"command":"ping"}\n{"command":"status","path":"/"}\n')
        pong, status = reader.readline(), reader.readline()
    except PermissionError:
        yield Check(
            Level.FAIL,
            "control socket",
            f"{path}: permission denied: run as root, or as a member of the socket's group",
        )
        return None
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
        return None
    finally:
        probe.close()
    try:
        answer: dict[str, Any] = dict(json.loads(pong)["result"])
        error: dict[str, Any] = dict(json.loads(status).get("error") or {})
    except (ValueError, KeyError, TypeError, AttributeError):
        yield Check(Level.FAIL, "control socket", f"{path} answered {pong[:200]!r}")
        return None
    pid = answer.get("pid")
    if error.get("code") == "invalid_config":
        yield Check(
            Level.FAIL,
            "control socket",
            f"the daemon at {path} (pid {pid}) runs no tree: {error.get('message')}",
        )
        return answer
    config = str(answer.get("config", ""))
    text = f"a daemon answers at {path} (pid {pid}, running {config})"
    if config not in (source, os.path.abspath(source)):
        yield Check(Level.WARN, "control socket", f"{text}, not {source}: is it the one checked?")
    else:
        yield Check(Level.OK, "control socket", text)
    return answer


def _state(path: Path, deployment: Deployment) -> Check:
    """Whether the daemon, as the unit's user, can keep its state in *path*, safely."""
    uid = _uid_of(deployment.user)
    managed = deployment.state is not None and path == deployment.state
    if managed and not path.exists():
        return Check(
            Level.OK,
            "state directory",
            f"{path}: made by systemd at start (StateDirectory=), owned by"
            f" {deployment.user or 'root'}",
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        os.close(open_directory(existing, uid=uid))
    except OSError as exc:
        return Check(
            Level.FAIL,
            "state directory",
            f"{path}: {exc.strerror or exc} (StateDirectory= in the unit, or state-directory in"
            " the config)",
        )
    owner = existing.stat().st_uid
    if owner != uid and (existing == path or not os.access(existing, os.W_OK)):
        return Check(
            Level.FAIL,
            "state directory",
            f"{existing} belongs to uid {owner}, not to the daemon's user (uid {uid}): operator"
            " stops could not be saved (StateDirectory= in the unit makes it right)",
        )
    return Check(Level.OK, "state directory", f"{path}: usable and safe for uid {uid}")


def _uid_of(user: str | None) -> int:
    """The uid a unit's ``User=`` names (this process's when it names none)."""
    if not user:
        return os.geteuid()
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return int(user) if user.isdigit() else os.geteuid()


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


def _metrics(settings: DaemonConfig, *, answering: bool, holder: int) -> Check:
    """The metrics address: answering, when the daemon runs; else free to listen on (a port
    held by the unit's own daemon, *holder*, is not a failure)."""
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
            pid = _listener_of(port)
            if pid and pid == holder:
                return Check(
                    Level.WARN,
                    "metrics",
                    f"{listen} is held by the unit's daemon (pid {pid}), whose control socket"
                    " does not answer",
                )
            who = f"pid {pid} ({_process_name(pid)})" if pid else "another process"
            return Check(
                Level.FAIL,
                "metrics",
                f"cannot listen on {listen}: {exc.strerror or exc}: {who} has it",
            )
    return Check(Level.OK, "metrics", f"{listen} is free to listen on")


def _listener_of(port: int) -> int | None:
    """The pid listening on TCP *port*, when this user may know it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):  # pragma: no cover  # /proc hidden
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:  # pragma: no cover  # gone meanwhile
        return "?"


def _unit(unit: str, loaded: LoadedConfig, deployment: Deployment | None) -> Iterator[Check]:
    if deployment is not None and deployment.problem is not None:
        yield Check(
            Level.WARN,
            "unit",
            f"{unit}: {deployment.problem}: TimeoutStopSec and WatchdogSec not checked",
        )
        return
    if deployment is None:
        yield Check(
            Level.WARN,
            "unit",
            f"{unit} is not loaded and is not a file: TimeoutStopSec and WatchdogSec not checked"
            " (give the unit file with --unit)",
        )
        return
    values = deployment.timeouts
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
