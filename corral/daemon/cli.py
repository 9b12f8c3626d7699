"""``corral``: run the daemon, and see and steer a running one over its control socket.

Exit codes follow systemctl's (LSB) habits: 0 ok, 1 error, 2 usage, 3 a child is not running
(``status PATH``), 4 the daemon cannot be reached (not running, or permission denied).
``corral run`` has its own (``main.ExitCode``). Errors go to stderr and say what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import grp
import json
import math
import os
import pwd
import socket
import stat
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

import msgspec

from corral.daemon import protocol
from corral.daemon.config import ConfigError, id_problem, load
from corral.supervisors.spec import BREAKER_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ("Client", "Exit", "Unreachable", "main", "render_status")


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_RUNNING = 3
    UNREACHABLE = 4


SOCKET_ENV: Final = "CORRAL_SOCKET"
DEFAULT_SOCKETS: Final = (Path("run/control.sock"), Path("/run/corral/control.sock"))
TIMEOUT: Final = 60.0  # for questions; a command waits as long as its child's stop or start


class Unreachable(Exception):  # the daemon is: "corral: Unreachable(...)" reads well
    """The daemon's socket cannot be used; the message says why and what to do."""


class Failed(Exception):
    """The daemon answered with an error."""

    def __init__(self, error: protocol.ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


def default_socket() -> Path:
    """``$CORRAL_SOCKET``, else ``./run/control.sock`` if it exists, else systemd's path."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env)
    for path in DEFAULT_SOCKETS:
        try:
            if path.exists():
                return path
        except PermissionError:  # /run/corral is not ours to enter: connecting says so
            return path
    return DEFAULT_SOCKETS[-1]


class Client:
    """A blocking connection to a daemon: one request, one response line."""

    def __init__(self, path: Path, timeout: float | None = TIMEOUT) -> None:
        self.path = path
        with contextlib.suppress(OSError):
            if not stat.S_ISSOCK(path.stat().st_mode):
                msg = f"{path} is not a socket: pick the daemon's control socket with --socket"
                raise Unreachable(msg)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            msg = (
                f"the daemon is not running at {path} (start it with `corral run` or"
                " `systemctl start corral`, or pick another with --socket)"
            )
            raise Unreachable(msg) from None
        except PermissionError:
            sock.close()
            raise Unreachable(_permission_help(path)) from None
        except OSError as exc:
            sock.close()
            msg = f"cannot connect to {path}: {exc.strerror or exc}"
            raise Unreachable(msg) from None
        self._sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, request: protocol.Request) -> None:
        try:
            self._sock.sendall(protocol.encode(request))
        except (BrokenPipeError, ConnectionResetError):
            # Refused before it read anything (busy, forbidden): its answer may be waiting.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise Unreachable(self._silent()) from None
        except OSError as exc:
            raise Unreachable(self._gone(exc)) from None

    def receive(self) -> bytes:
        try:
            line = self._file.readline(protocol.MAX_FRAME * 64)
        except TimeoutError:
            raise Unreachable(self._silent()) from None
        except OSError as exc:  # reset: the daemon died, or exited at start
            raise Unreachable(self._gone(exc)) from None
        if not line:
            raise Unreachable(self._gone(None))
        return line

    def _silent(self) -> str:
        return f"the daemon at {self.path} did not answer within {self._sock.gettimeout()} s"

    def _gone(self, exc: OSError | None) -> str:
        why = f" ({exc.strerror or exc})" if exc is not None else ""
        return (
            f"the daemon at {self.path} closed the connection{why} before it answered: it is"
            " stopping, or it exited (see `journalctl -u corral` or its log)"
        )

    def call(self, request: protocol.Request) -> Any:
        """Send *request*; the result, or ``Failed`` with the daemon's error."""
        self.send(request)
        response = protocol.decode_response(self.receive())
        if not response.ok:
            assert response.error is not None
            if response.error.code == protocol.Code.FORBIDDEN:
                msg = f"{self.path}: {response.error.message}"
                raise Unreachable(msg)
            raise Failed(response.error)
        return response.result

    def stream(self) -> Iterator[dict[str, Any]]:
        """Event lines until the daemon closes the connection."""
        self._sock.settimeout(None)
        with contextlib.suppress(ConnectionResetError):  # as closed: the caller says so
            for line in self._file:
                yield json.loads(line)


def _permission_help(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:  # its directory is closed to us: it says who may enter
        return _directory_help(path)
    owner = _name(pwd.getpwuid, st.st_uid)
    who = "root" if owner == "root" else f"{owner!r} and root"
    if st.st_mode & stat.S_IWGRP:
        group = _name(grp.getgrgid, st.st_gid)
        return (
            f"permission denied on {path}: members of group {group!r} may use it"
            f" (sudo usermod -aG {group} $USER, then log in again), or run as {who}"
        )
    return f"permission denied on {path}: only {who} may use it"


def _directory_help(path: Path) -> str:
    """Why *path* cannot be reached, from the first directory on the way we may not enter."""
    for directory in reversed(path.parents):
        try:
            st = directory.stat()
        except OSError:
            break
        if os.access(directory, os.X_OK):
            continue
        owner = _name(pwd.getpwuid, st.st_uid)
        who = "root" if owner == "root" else f"{owner!r} and root"
        if st.st_mode & stat.S_IXGRP:
            group = _name(grp.getgrgid, st.st_gid)
            return (
                f"permission denied on {path}: its directory {directory} is open to group"
                f" {group!r} (sudo usermod -aG {group} $USER, then log in again), or run as"
                f" {who}"
            )
        return f"permission denied on {path}: its directory {directory} is open to {who} only"
    return f"permission denied on {path}"


def _name(lookup: Callable[[int], Any], ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


# -- rendering ---------------------------------------------------------------------------------

_COLOURS: Final = {
    "running": "\x1b[32m",  # green
    "starting": "\x1b[33m",  # yellow
    "restarting": "\x1b[33m",
    "stopping": "\x1b[33m",
    "backoff": "\x1b[33m",
    "failed": "\x1b[31m",  # red
    "stopped": "\x1b[90m",  # grey
}
_RESET: Final = "\x1b[0m"


def _use_colour(stream: IO[str]) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``5m 3s``, ``4.2s``: two units at most."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _counts(node: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in node.get("children") or ():
        counts[child["state"]] = counts.get(child["state"], 0) + 1
        for state, n in _counts(child).items():
            counts[state] = counts.get(state, 0) + n
    return counts


def render_status(node: dict[str, Any], *, colour: bool) -> list[str]:
    """The tree at *node* for a person: one line per child, like ``systemctl status``."""
    counts = _counts(node)
    total = sum(counts.values())
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines = [f"{_dot(node['state'], colour)} {node['path']}  {_describe(node)}"]
    if node.get("children") is not None:
        lines[0] += f"  ({total} below: {summary or 'none'})"
    if node.get("service"):
        reasons = node.get("service_reasons") or []
        lines[0] += f"  service {node['service']}"
        lines.extend(f"  {reason}" for reason in reasons)
    lines.extend(_render_children(node, "", colour))
    failed = list(_failed(node))
    if failed:
        lines.append(
            f"{len(failed)} failed, not running until started again: {', '.join(failed)}"
            f" (see corral why {failed[0]}; corral start PATH)"
        )
    tripped = list(_open_breakers(node))
    if tripped:
        lines.append(
            f"{len(tripped)} breaker(s) not closed: {', '.join(tripped)} (see corral breakers)"
        )
    return lines


def _failed(node: dict[str, Any]) -> Iterator[str]:
    for child in node.get("children") or ():
        if child["state"] == "failed":
            yield child["path"]
        yield from _failed(child)


def _render_children(node: dict[str, Any], indent: str, colour: bool) -> Iterator[str]:
    children = node.get("children") or []
    width = max((len(c["path"].rsplit("/", 1)[1]) for c in children), default=0)
    for n, child in enumerate(children):
        last = n == len(children) - 1
        name = child["path"].rsplit("/", 1)[1]
        branch = "└─" if last else "├─"
        yield f"{indent}{branch} {_dot(child['state'], colour)} {name:<{width}}  {_describe(child)}"
        yield from _render_children(child, indent + ("   " if last else "│  "), colour)


def _dot(state: str, colour: bool) -> str:
    return f"{_COLOURS.get(state, '')}●{_RESET}" if colour else "●"


def _describe(node: dict[str, Any]) -> str:
    parts = [f"{node['state']:<8}"]
    if node.get("uptime") is not None:
        parts.append(f"up {duration(node['uptime'])}")
    if node.get("next_restart_in") is not None:
        parts.append(f"restart in {duration(node['next_restart_in'])}")
    if node.get("restarts"):
        parts.append(f"restarts {node['restarts']}")
    if node.get("held"):
        parts.append("stopped by operator")
    if node.get("strategy"):
        parts.append(
            f"{node['strategy']}, budget {node['restarts_remaining']}/{node['intensity']}"
            f" per {node['period']:g}s"
        )
    if node.get("mailbox_depth"):
        parts.append(f"mailbox {node['mailbox_depth']}/{node['mailbox_capacity']}")
    if node.get("dead_letters"):
        parts.append(f"dead letters {node['dead_letters']}")
    if node.get("last_exit") and node["state"] != "running":
        error = node.get("last_error")
        parts.append(f"last exit: {node['last_exit']}" + (f" {error}" if error else ""))
    if node.get("start_error") and node["state"] != "running":
        parts.append(f"failed to start: {node['start_error']}")
    parts.extend(
        f"breaker {b['name']} {_breaker_state(b)}"
        for b in node.get("breakers") or ()
        if b["state"] != "closed"
    )
    return "  ".join(parts)


def _plural(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _breaker_state(breaker: dict[str, Any]) -> str:
    """``open (next trial in 3.2s)``, ``open (held by an operator)``, ``half-open``..."""
    state = str(breaker["state"])
    if breaker.get("held"):
        return f"{state} (held by an operator)"
    if breaker.get("retry_in") is not None:
        return f"{state} (next trial in {duration(breaker['retry_in'])})"
    return state


def _open_breakers(node: dict[str, Any]) -> Iterator[str]:
    for breaker in node.get("breakers") or ():
        if breaker["state"] != "closed":
            yield f"{breaker['path']} {breaker['name']}"
    for child in node.get("children") or ():
        yield from _open_breakers(child)


def render_breaker(breaker: dict[str, Any]) -> str:
    """One breaker for a person: state, counts, last failure."""
    window = f"{breaker.get('window_failures', 0)}/{breaker.get('window_calls', 0)} failed"
    return (
        f"{breaker['name']}: {_breaker_state(breaker)} for {duration(breaker['since'])};"
        f" {_plural(breaker.get('failures_in_a_row', 0), 'failure')} in a row, window {window};"
        f" totals {breaker.get('succeeded', 0)} ok, {breaker.get('failed', 0)} failed,"
        f" {breaker.get('rejected', 0)} rejected, {breaker.get('ignored', 0)} ignored"
        + (f"; last failure: {breaker['last_failure']}" if breaker.get("last_failure") else "")
    )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def render_why(why: dict[str, Any]) -> list[str]:
    lines = [
        f"{why['path']}: {why['state']}"
        + (" (stopped by an operator; `corral start` to run it)" if why["held"] else ""),
        f"  restarts: {why['restarts']}",
    ]
    if why.get("next_restart_in") is not None:
        lines.append(f"  next restart in: {duration(why['next_restart_in'])}")
    lines.append(
        f"  supervisor {why['supervisor']} ({why['strategy']}): {why['restarts_remaining']} of"
        f" {why['intensity']} restarts left within {why['period']:g}s before it gives up"
    )
    if why.get("dead_letters"):
        lines.append(f"  dead letters: {why['dead_letters']} (corral dead-letters {why['path']})")
    if why.get("declined"):
        lines.append(f"  declined to start (corral.Ignore): {why['declined']}")
    if why.get("health"):
        lines.append(f"  health: {why['health']}")
    lines.extend(f"  breaker {render_breaker(b)}" for b in why.get("breakers") or ())
    if why.get("start_error"):
        lines.append(f"  last start failed: {why['start_error']}")
        if why.get("start_traceback"):
            lines.extend("    " + line for line in why["start_traceback"].rstrip().splitlines())
    exits = why["exits"]
    if not exits:
        lines.append("  no exits recorded")
    for n, exit_ in enumerate(reversed(exits)):
        label = "last exit" if n == 0 else "earlier"
        reason = f": {exit_['reason']}" if exit_.get("reason") else ""
        lines.append(f"  {label}: {_when(exit_['at'])} {exit_['kind']}{reason}")
        if exit_.get("traceback"):
            lines.extend("    " + line for line in exit_["traceback"].rstrip().splitlines())
    return lines


def render_event(ev: dict[str, Any]) -> str:
    details = [
        f"{k}={ev[k]}"
        for k in ("breaker", "state", "restarts", "exit", "exception", "delay", "reason")
        if ev.get(k) is not None
    ]
    return f"{_when(ev['at'])} {ev['event']:<24} {ev['path']}  {' '.join(details)}".rstrip()


# -- commands ----------------------------------------------------------------------------------


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _client(args: argparse.Namespace, timeout: float | None = TIMEOUT) -> Client:
    return Client(args.socket or default_socket(), timeout)


def cmd_run(args: argparse.Namespace) -> int:
    from corral.daemon.main import run  # only `run` needs the daemon

    return int(run(args.config, backend=args.backend))


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.config)
    except ConfigError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return Exit.ERROR
    print(f"{args.config}: valid ({len(loaded.spec.children)} children under the root)")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        node = client.call(protocol.Status(path=args.path or "/"))
    if args.json:
        _print_json(node)
    else:
        print("\n".join(render_status(node, colour=_use_colour(sys.stdout))))
    if args.path not in ("/", "") and node["state"] != "running":
        return Exit.NOT_RUNNING
    return Exit.OK


def _action(request: protocol.Request) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        with _client(args, timeout=None) as client:  # as long as the child's shutdown takes
            done = client.call(request_for(args))
        print(f"{done['path']}: {done['done']}")
        if done.get("warning"):
            print(f"corral: warning: {done['warning']}", file=sys.stderr)
        return Exit.OK

    def request_for(args: argparse.Namespace) -> protocol.Request:
        fields = {f: getattr(args, f) for f in request.__struct_fields__ if hasattr(args, f)}
        return msgspec.structs.replace(request, **fields)

    return command


def cmd_start_child(args: argparse.Namespace) -> int:
    try:
        child_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        return _usage(f"--args must be a JSON object: {exc}")
    if not isinstance(child_args, dict):
        return _usage("--args must be a JSON object, e.g. '{\"port\": 8080}'")
    request = protocol.StartChild(
        supervisor=args.supervisor, id=args.id, args=child_args, wait=args.wait
    )
    with _client(args, timeout=None) as client:
        done = client.call(request)
    print(f"{done['path']}: {done['done']}")
    return Exit.OK


def _message(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _usage(f'MESSAGE must be JSON ({exc}), e.g. \'{{"get": "key"}}\' or \'"ping"\'')


def cmd_call(args: argparse.Namespace) -> int:
    request = protocol.CallActor(
        path=args.path, message=_message(args.message), timeout=args.timeout
    )
    with _client(args, timeout=args.timeout + 5) as client:
        answer = client.call(request)
    print(json.dumps(answer.get("answer")))
    return Exit.OK


def cmd_cast(args: argparse.Namespace) -> int:
    request = protocol.CastActor(path=args.path, message=_message(args.message))
    with _client(args) as client:
        answer = client.call(request)
    print(f"{answer['path']}: queued")
    return Exit.OK


def cmd_reload(args: argparse.Namespace) -> int:
    with _client(args, timeout=None) as client:
        result = client.call(protocol.Reload(dry_run=args.dry_run))
    applied, missed = result["changes"], result.get("not_applied") or []
    if args.dry_run:
        head = f"would apply {len(applied)} change(s)"
    elif missed:
        head = f"applied {len(applied)} of {len(applied) + len(missed)} change(s)"
    else:
        head = f"did apply {len(applied)} change(s)"
    print(f"reload of {result['source']}: {head}")
    for line in applied:
        print(f"  {line}")
    for line in result.get("notes") or ():
        print(f"  note: {line}")
    for line in missed:
        print(f"corral: not applied: {line}", file=sys.stderr)
    if not missed:  # each failure is the reason of a change not applied, said above
        for line in result.get("failures") or ():
            print(f"corral: failed: {line}", file=sys.stderr)
    return Exit.ERROR if missed or result.get("failures") else Exit.OK


def cmd_why(args: argparse.Namespace) -> int:
    with _client(args) as client:
        why = client.call(protocol.Why(path=args.path))
    if args.json:
        _print_json(why)
    else:
        print("\n".join(render_why(why)))
    return Exit.OK


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        recent = client.call(protocol.Events(recent=args.recent, follow=args.follow))
        for ev in recent:
            print(json.dumps(ev) if args.json else render_event(ev), flush=True)
        if args.follow:
            try:
                for ev in client.stream():
                    print(json.dumps(ev) if args.json else render_event(ev), flush=True)
            except KeyboardInterrupt:
                return Exit.OK
            print("corral: the daemon closed the connection (it stopped?)", file=sys.stderr)
            return Exit.UNREACHABLE
    return Exit.OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    with _client(args) as client:
        letters = client.call(protocol.DeadLetters(path=args.path, limit=args.limit))
    if args.json:
        _print_json(letters)
        return Exit.OK
    if not letters:
        print("no dead letters")
    for letter in letters:
        cause = f" {letter['exception']}" if letter.get("exception") else ""
        print(
            f"{_when(letter['at'])} {letter['path']} {letter['reason']}{cause}: {letter['message']}"
        )
    return Exit.OK


def cmd_breakers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        breakers = client.call(protocol.Breakers(path=args.path or "/"))
    if args.json:
        _print_json(breakers)
        return Exit.OK
    if not breakers:
        print(f"no breakers at or below {args.path or '/'}")
    for breaker in breakers:
        print(f"{breaker['path']} {render_breaker(breaker)}")
    return Exit.OK


def cmd_metrics(args: argparse.Namespace) -> int:
    with _client(args) as client:
        text: str = client.call(protocol.Metrics())
    sys.stdout.write(text)
    return Exit.OK


def cmd_logs(args: argparse.Namespace) -> int:
    from corral.daemon import journal

    problem = journal.unreadable(args.directory)
    if problem is not None:
        print(f"corral: {problem}", file=sys.stderr)
        return Exit.ERROR
    entries = journal.read(
        args.path,
        follow=args.follow,
        since=args.since,
        unit=args.unit,
        directory=args.directory,
        lines=args.lines,
    )
    try:
        for entry in entries:
            print(json.dumps(entry) if args.json else journal.render(entry), flush=True)
    except BrokenPipeError:
        raise  # `corral logs | head`: handled in main
    except OSError as exc:  # no journalctl, or it failed
        print(f"corral: {exc}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        return Exit.OK
    return Exit.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from corral.daemon import doctor

    checks = []
    for check in doctor.diagnose(args.config, unit=args.unit, socket_path=args.socket):
        print(check.line(), flush=True)
        checks.append(check)
    print(doctor.verdict(checks))
    return Exit.ERROR if any(c.level is doctor.Level.FAIL for c in checks) else Exit.OK


def cmd_shutdown(args: argparse.Namespace) -> int:
    with _client(args, timeout=None) as client:
        done = client.call(protocol.Shutdown())
    print(done["done"])
    return Exit.OK


def cmd_version(args: argparse.Namespace) -> int:
    from corral.daemon.main import version_string

    print(f"corral {version_string()}")
    with _client(args) as client:
        pong = client.call(protocol.Ping())
    print(
        f"daemon {pong['version']} (pid {pong['pid']}, {pong['backend']}, up"
        f" {duration(pong['uptime'])}, config {pong['config']})"
    )
    return Exit.OK


def _usage(message: str) -> NoReturn:
    print(f"corral: {message}", file=sys.stderr)
    raise SystemExit(Exit.USAGE)


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            msg = f"expected a whole number from {low} to {high}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _text(most: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > most:
            msg = f"at most {most} characters, got {len(text)}"
            raise argparse.ArgumentTypeError(msg)
        return text

    return parse


def _seconds(most: float, *, zero: bool = False) -> Callable[[str], float]:
    """Seconds above 0 (from 0 with *zero*), at most *most*."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        least = 0.0 if zero else math.ulp(0.0)  # above 0: the smallest float that is
        if not least <= value <= most:  # NaN too
            lowest = "from 0" if zero else "above 0"
            msg = f"expected seconds {lowest}, at most {most:g}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _child_id(text: str) -> str:
    problem = id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _breaker_name(text: str) -> str:
    if not BREAKER_NAME.fullmatch(text):
        msg = f"{text!r}: a breaker's name is 1-64 letters, digits, '_', '-' or '.'"
        raise argparse.ArgumentTypeError(msg)
    return text


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="corral",
        description="A supervisor daemon for Python actors: run it, see it, steer it.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 child not running, 4 daemon unreachable.",
    )
    top.add_argument(
        "--socket",
        type=Path,
        help=f"the daemon's control socket (default: ${SOCKET_ENV}, ./run/control.sock if it"
        " exists, else /run/corral/control.sock)",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    changes = {request.__struct_config__.tag for request in protocol.CHANGES}

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=func, changes=name in changes)
        return p

    p = add("run", cmd_run, "run the daemon in the foreground (the demo tree without CONFIG)")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the TOML file")
    p.add_argument("--backend", choices=("asyncio", "trio"), help="overrides the config's")
    p = add("check", cmd_check, "validate a config file without starting anything")
    p.add_argument("config", metavar="CONFIG")
    p = add(
        "status", cmd_status, "the tree (or the subtree at PATH); exit 3 if PATH is not running"
    )
    p.add_argument("path", nargs="?", default="/", metavar="PATH")
    p.add_argument("--json", action="store_true", help="the same data as JSON")
    for name, request, text in (
        ("start", protocol.Start(path="/"), "start a stopped child"),
        ("stop", protocol.Stop(path="/"), "stop a child; it stays stopped until `corral start`"),
        ("restart", protocol.Restart(path="/"), "stop and start a child (not counted as a crash)"),
        ("kill", protocol.Kill(path="/"), "crash a running child, as a drill of its supervisor"),
        ("terminate-child", protocol.TerminateChild(path="/"), "OTP's terminate_child"),
        ("delete-child", protocol.DeleteChild(path="/"), "OTP's delete_child (a stopped child)"),
    ):
        p = add(name, _action(request), text)
        p.add_argument("path", metavar="PATH")
        if name == "kill":
            p.add_argument(
                "--reason",
                type=_text(1024),
                default="killed by an operator",
                help="the crash's text",
            )
    p = add("start-child", cmd_start_child, "start a child of a dynamic supervisor")
    p.add_argument("supervisor", metavar="SUPERVISOR")
    p.add_argument("--id", type=_child_id, help="the child's id (default: the next number)")
    p.add_argument("--args", default="{}", help="JSON object merged into the template's args")
    p.add_argument(
        "--wait",
        type=_seconds(3600, zero=True),
        default=0.0,
        metavar="SECONDS",
        help="when it is full (max-children), wait this long for a free slot, first come first"
        " served (default 0: fail at once)",
    )
    p = add("call", cmd_call, "send an actor a message (JSON) and print its answer (JSON)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("message", metavar="MESSAGE", help="any JSON value, e.g. '{\"get\": 1}'")
    p.add_argument(
        "--timeout", type=_seconds(3600), default=5.0, help="seconds to wait (default 5)"
    )
    p = add("cast", cmd_cast, "send an actor a message (JSON), not waiting for it")
    p.add_argument("path", metavar="PATH")
    p.add_argument("message", metavar="MESSAGE", help="any JSON value")
    p = add("reload", cmd_reload, "re-read the config file and apply the difference")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p = add("why", cmd_why, "why a child is in its state: exits, tracebacks, restart budget")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p = add("events", cmd_events, "recent lifecycle events; --follow for new ones as they come")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument(
        "--recent", type=_count(0, 1000), default=20, help="how many past events (default 20)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("dead-letters", cmd_dead_letters, "messages that were not handled")
    p.add_argument("path", nargs="?", metavar="PATH", help="only those of PATH (or below it)")
    p.add_argument("--limit", type=_count(1, 10_000), default=100, help="at most (default 100)")
    p.add_argument("--json", action="store_true")
    p = add("breakers", cmd_breakers, "the circuit breakers of the actors at or below PATH")
    p.add_argument("path", nargs="?", default="/", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p = add(
        "breaker",
        _action(protocol.BreakerAction(path="/", name="x", action="reset")),
        "reset (close) an actor's breaker, or hold it open until reset",
    )
    p.add_argument("action", choices=("reset", "open"), metavar="reset|open")
    p.add_argument("path", metavar="PATH")
    p.add_argument("name", type=_breaker_name, metavar="NAME")
    add("metrics", cmd_metrics, "the Prometheus metrics, as /metrics serves them")
    p = add("logs", cmd_logs, "the daemon's journal entries, of PATH and below (journalctl)")
    p.add_argument("path", nargs="?", metavar="PATH", help="only those of PATH (or below it)")
    p.add_argument("--follow", "-f", action="store_true", help="then new entries as they come")
    p.add_argument("--since", metavar="TIME", help='as journalctl: "-1h", "today", a date')
    p.add_argument("--lines", "-n", type=_count(1, 1_000_000), help="only the last N entries")
    p.add_argument("--unit", "-u", metavar="UNIT", help="only this unit's (e.g. corral@web)")
    p.add_argument("--directory", "-D", metavar="DIR", help="read the journal files in DIR")
    p.add_argument("--json", action="store_true", help="the entries as journalctl's JSON")
    p = add("doctor", cmd_doctor, "check a deployment: config, socket, journald, metrics, unit")
    p.add_argument(
        "config", nargs="?", metavar="CONFIG", help="the TOML file (default: the unit's)"
    )
    p.add_argument(
        "--unit",
        default="corral.service",
        help="the unit (loaded in systemd, e.g. corral@web) or unit file whose deployment is"
        " checked: its config, socket, state directory and timeouts (default corral.service)",
    )
    add("shutdown", cmd_shutdown, "stop the tree in reverse order and the daemon")
    add("version", cmd_version, "the CLI's and the daemon's versions")
    return top


def _values_with_a_dash(argv: Sequence[str]) -> list[str]:
    """``--since -1h`` as ``--since=-1h``: argparse takes ``-1h`` for an option, journalctl
    (whose syntax `corral logs` borrows) does not."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--since" and arg.startswith("-"):
            out[-1] = f"--since={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(_values_with_a_dash(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except Unreachable as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return Exit.UNREACHABLE
    except Failed as exc:
        target = getattr(args, "path", None) or getattr(args, "supervisor", None) or args.command
        print(f"corral: {target}: ERROR ({exc.error.code}) {exc.error.message}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        if getattr(args, "changes", False):  # a command sent to the daemon, under way
            print(
                "corral: interrupted; the daemon carries on with the command (see `corral status`)",
                file=sys.stderr,
            )
        return 130
    except BrokenPipeError:  # `corral status --json | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
