"""The daemon's TOML file: decoded by msgspec (shape), then converted to specs (meaning).

Two passes, like OTP's ``check_childspec``. Decoding checks every key and type against the
Structs below (unknown keys are errors); conversion checks what a type cannot say: which keys
go with which kind of child, duplicate ids, OTP's bad combinations, and that every ``start``
target imports and is something corral can run. Nothing starts until both passes are clean,
and every error names the file, what was expected and the key path::

    corral.toml: expected "one-for-one", "one-for-all" or "rest-for-one", got "one_for_one"
    at $.supervisor.children[2].strategy

The file (keys are kebab-case)::

    [daemon]                      # all optional
    control-socket = "/run/corral/control.sock"
    state-directory = "/var/lib/corral"

    [supervisor]                  # the root: strategy, intensity, period, auto-shutdown
    strategy = "one-for-one"

    [[supervisor.children]]       # a worker
    id = "ticker"
    start = "corral.demo:ticker"
    args = { interval = 1.0 }

    [[supervisor.children]]       # a supervisor: children, or child + max-children (dynamic)
    id = "group"
    type = "supervisor"
    strategy = "rest-for-one"
    children = [ { id = "leader", start = "corral.demo:Leader" } ]
"""

from __future__ import annotations

import errno
import grp
import importlib
import importlib.resources
import inspect
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, get_args

import attrs
import msgspec

from corral.actors.actor import Actor
from corral.errors import CorralError, SpecError
from corral.supervisors.spec import (
    BREAKER_NAME,
    AutoShutdown,
    Backoff,
    BreakerSpec,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    HealthSpec,
    MailboxSpec,
    Overflow,
    RestartType,
    Strategy,
    SupervisorSpec,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "DEMO",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "LoadedConfig",
    "args_problem",
    "id_problem",
    "listen_problem",
    "load",
    "load_demo",
    "parse",
)

DEMO: Final = "corral:demo.toml"  # how the embedded demo config is named in messages


class ConfigError(CorralError, ValueError):
    """The config file is unreadable or invalid; ``.source`` names it, ``.at`` the key path."""

    def __init__(self, source: str, message: str, at: str | None = None) -> None:
        self.source = source
        self.at = at
        super().__init__(f"{source}: {message}" + (f" at {at}" if at else ""))


# -- pass 1: the shape ---------------------------------------------------------------------


class Base(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Config base: unknown keys are errors (typos fail loudly)."""


MAX_SECONDS: Final = 1e9  # about 31 years: beyond it a duration is a typo, or `inf`
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Positive = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
Count = Annotated[int, msgspec.Meta(ge=0)]
StrategyName = Literal["one-for-one", "one-for-all", "rest-for-one"]
RestartName = Literal["permanent", "transient", "temporary"]
AutoShutdownName = Literal["never", "any-significant", "all-significant"]
OverflowName = Literal["block", "drop-newest", "reject"]
Shutdown = Seconds | Literal["brutal", "infinity"]


class BackoffConfig(Base, frozen=True):
    """Restart delays (see ``corral.Backoff``)."""

    initial: Seconds = 0.1
    cap: Seconds = 30.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    reset_after: Seconds = 60.0


class MailboxConfig(Base, frozen=True):
    capacity: Annotated[int, msgspec.Meta(ge=1)] = 1024
    overflow: OverflowName = "block"


class BreakerConfig(Base, frozen=True):
    """A circuit breaker (see ``corral.BreakerSpec``); ``failures = 0`` turns the rule of
    failures in a row off (then ``failure-rate`` must be set). Exception classes are named
    as builtins (``"ConnectionError"``) or ``"package.module:Class"``."""

    failures: Count = 5
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    window: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20
    min_calls: Annotated[int, msgspec.Meta(ge=1)] = 10
    wait: Seconds = 5.0
    wait_cap: Seconds = 60.0
    wait_multiplier: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    trials: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    timeout: Positive | None = None
    failure_on: list[str] | None = None
    ignore: list[str] | None = None


class HealthConfig(Base, frozen=True):
    """Health probes of an Actor's ``health()`` (see ``corral.HealthSpec``)."""

    interval: Positive = 10.0
    timeout: Positive = 5.0
    failures: Annotated[int, msgspec.Meta(ge=1)] = 3


class ChildConfig(Base, frozen=True):
    """A child. Workers use ``start``/``args``/``mailbox``; supervisors the flags and either
    ``children`` or (dynamic) ``child`` and ``max-children``. None means "not given"."""

    id: str
    type: Literal["worker", "supervisor"] = "worker"
    start: str | None = None
    args: dict[str, Any] | None = None
    restart: RestartName = "permanent"
    shutdown: Shutdown | None = None
    significant: bool = False
    essential: bool = True
    backoff: BackoffConfig | None = None
    mailbox: MailboxConfig | None = None
    breakers: dict[str, BreakerConfig] | None = None
    health: HealthConfig | None = None
    handle_timeout: Positive | None = None
    max_restarts: Count | None = None
    max_restarts_period: Positive | None = None
    start_retries: Count = 0
    drain: bool | None = None
    strategy: StrategyName | None = None
    intensity: Count | None = None
    period: Positive | None = None
    auto_shutdown: AutoShutdownName | None = None
    children: list[ChildConfig] | None = None
    child: ChildConfig | None = None
    max_children: Count | None = None


class SupervisorConfig(Base, frozen=True):
    """The root supervisor (OTP's defaults: at most 1 restart in 5 seconds)."""

    strategy: StrategyName = "one-for-one"
    intensity: Count = 1
    period: Positive = 5.0
    auto_shutdown: AutoShutdownName = "never"
    children: list[ChildConfig] = msgspec.field(default_factory=list)


REDACT_DEFAULT: Final = ("password", "passwd", "secret", "token", "apikey", "credential", "dsn")


class DaemonConfig(Base, frozen=True):
    """Daemon settings; the defaults suit a developer's shell and systemd alike."""

    control_socket: str | None = None  # $RUNTIME_DIRECTORY/control.sock, else ./run/control.sock
    socket_mode: Literal[0o600, 0o660] = 0o600
    socket_group: str | None = None  # group that owns the socket (with mode 0o660)
    allowed_uids: list[Count] = msgspec.field(default_factory=list)  # besides root and us
    allowed_gids: list[Count] = msgspec.field(default_factory=list)  # besides socket-group
    state_directory: str | None = None  # $STATE_DIRECTORY, else ./state
    backend: Literal["asyncio", "trio"] = "asyncio"
    log_format: Literal["auto", "text", "json", "journal"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_listen: str = "127.0.0.1:9810"  # host:port (port 0: any free one); "" is off
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 64
    idle_timeout: Positive = 300.0  # a silent control connection is closed after this
    dead_letters: Annotated[int, msgspec.Meta(ge=0)] = 1000  # kept for `corral dead-letters`
    # While starting or stopping, each child started or stopped gives systemd this much more
    # time (EXTEND_TIMEOUT_USEC), and at least the longest child's shutdown timeout.
    progress_timeout: Positive = 30.0
    loop_stall_timeout: Positive = 1.0  # the loop blocked this long is a stall: logged, counted
    # /readyz answers 200 while the service level is this or better (see supervisors/levels.py)
    ready_when: Literal["full", "degraded"] = "degraded"
    # Actor args whose name contains one of these (case, "-" and "_" ignored) are shown as
    # "<redacted>" in logs, `status` and `why`; so are passwords in URLs and bearer tokens.
    redact: list[str] = msgspec.field(default_factory=lambda: list(REDACT_DEFAULT))
    # Directories (relative to the config file's) added to the import path, after the config
    # file's own directory, which is always importable (as `python app.py` makes its own).
    python_path: list[str] = msgspec.field(default_factory=list)

    def socket_path(self) -> Path:
        if self.control_socket:
            return Path(self.control_socket)
        runtime = os.environ.get("RUNTIME_DIRECTORY")
        return Path(runtime.split(":")[0] if runtime else "run") / "control.sock"

    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics-listen`` as (host, port), None when off; ``[::1]`` loses its brackets."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    def state_path(self) -> Path:
        if self.state_directory:
            return Path(self.state_directory)
        state = os.environ.get("STATE_DIRECTORY")
        return Path(state.split(":")[0] if state else "state")


def listen_problem(listen: str) -> str | None:
    """What is wrong with a ``metrics-listen`` value, or None ("" is no listener)."""
    if not listen:
        return None
    host, colon, port = listen.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return f'expected "host:port" (or "" for no listener), got {listen!r}'
    return None


class Config(Base, frozen=True):
    """The whole file."""

    supervisor: SupervisorConfig
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)


def _quoted(choices: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f'"{c}"' for c in choices)


# What is allowed, by key name, for messages about a value that is not.
_CHOICES: Final = {
    "strategy": _quoted(get_args(StrategyName)),
    "restart": _quoted(get_args(RestartName)),
    "auto-shutdown": _quoted(get_args(AutoShutdownName)),
    "overflow": _quoted(get_args(OverflowName)),
    "type": _quoted(("worker", "supervisor")),
    "backend": _quoted(("asyncio", "trio")),
    "log-format": _quoted(("auto", "text", "json", "journal")),
    "log-level": _quoted(("debug", "info", "warning", "error")),
    "shutdown": ("a number of seconds >= 0", '"brutal"', '"infinity"'),
    "socket-mode": ("0o600", "0o660"),
}
_MSGSPEC_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `(?P<at>[^`]*)`)?$")
_TOO_LARGE = re.compile(r"^Expected `float` <= 1000000000\.0$")  # MAX_SECONDS
_ENUM_VALUE = re.compile(r"^Invalid enum value (?P<value>.*)$")
_WRONG_TYPE = re.compile(r"^Expected `[^`]*`, got `(?P<found>[^`]*)`$")


@attrs.frozen
class LoadedConfig:
    """A valid config: its settings and the root spec built from it."""

    source: str
    config: Config
    spec: SupervisorSpec
    # Files of modules it names that changed since this process imported them: it keeps
    # running the code it imported (a reload changes the config, not the code).
    stale: tuple[str, ...] = ()

    @property
    def daemon(self) -> DaemonConfig:
        return self.config.daemon


def load(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read, decode and convert the file at *path*.

    Raises:
        ConfigError: unreadable or invalid, with the file and the key path in its message.
    """
    source = os.fspath(path)
    try:
        data = _read(source)
    except OSError as exc:
        raise ConfigError(source, f"cannot read the config: {exc.strerror or exc}") from None
    return parse(data, source, base=Path(os.path.abspath(source)).parent)


MAX_CONFIG_SIZE: Final = 16 * 1024 * 1024  # bytes: a tree of 100,000 declared children fits


def _read(source: str) -> bytes:
    """The file's bytes: a regular file of at most ``MAX_CONFIG_SIZE`` bytes. Opened without
    blocking, so that a FIFO does not hang the reader, and read no further than the limit,
    so that /dev/zero does not fill the memory."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    with open(os.open(source, flags), "rb") as f:  # a descriptor, not a path
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            msg = f"{kind}, not a regular file: give the path of a TOML file"
            raise OSError(errno.EINVAL, msg)
        data = f.read(MAX_CONFIG_SIZE + 1)
    if len(data) > MAX_CONFIG_SIZE:
        msg = f"larger than {MAX_CONFIG_SIZE // (1024 * 1024)} MiB: not a config file"
        raise OSError(errno.EFBIG, msg)
    return data


_KINDS: Final = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def load_demo() -> LoadedConfig:
    """The embedded demo tree (``corral run`` without a file)."""
    data = importlib.resources.files("corral.daemon").joinpath("demo.toml").read_bytes()
    return parse(data, DEMO)


def parse(data: bytes | str, source: str, *, base: Path | None = None) -> LoadedConfig:
    """Decode and convert TOML *data*; *source* names it in errors. *base* is the directory of
    the file: importable, and where relative ``python-path`` entries start (None: the
    current directory, and nothing made importable but ``python-path``)."""
    try:
        config = msgspec.toml.decode(data, type=Config)
        converter = _Converter(source)
        converter.daemon(config.daemon)
        converter.importable(base, config.daemon.python_path)
        root = converter.root(config.supervisor)
        return LoadedConfig(source, config, root, tuple(sorted(converter.stale)))
    except msgspec.ValidationError as exc:
        raise _shape_error(source, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(source, "nested too deeply to read") from None


def id_problem(child_id: str) -> str | None:
    """Why *child_id* is not a usable path segment, or None. Ids are typed by people: no
    slash, dot-paths, control characters or surrounding blanks, and at most 255 characters
    (for config children and dynamic ones alike)."""
    bad = (
        not child_id
        or len(child_id) > _MAX_ID
        or child_id in (".", "..")
        or "/" in child_id
        or child_id != child_id.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in child_id)
    )
    if not bad:
        return None
    return (
        f"child id {child_id[:60]!r} is not usable in a path: use 1 to {_MAX_ID}"
        " characters, no '/', no control characters, no blanks around it, not '.' or '..'"
    )


def args_problem(target: object, args: Mapping[str, object], name: str) -> str | None:
    """Why *args* do not fit *target*'s signature (an Actor class, or an async function
    whose first parameter is the Context), or None if they do."""
    assert callable(target)
    signature = inspect.signature(target)
    try:
        if isinstance(target, type):
            signature.bind(**args)
        else:
            signature.bind(None, **args)
    except TypeError as exc:
        plain = signature.replace(
            parameters=[
                p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
            ],
            return_annotation=inspect.Signature.empty,
        )
        return f"args do not fit {name}{plain}: {exc}"
    return None


def _shape_error(source: str, text: str) -> ConfigError:
    """msgspec's message, in the config's words: TOML has no null, keys are quoted."""
    match = _MSGSPEC_ERROR.match(text)
    assert match is not None  # the pattern matches any text
    what, at = match["what"], match["at"] or "$"  # msgspec names no path for the top level
    key = at.rsplit(".", 1)[-1]
    enum = _ENUM_VALUE.match(what)
    wrong = _WRONG_TYPE.match(what)
    if enum is not None and key in _CHOICES:
        value = enum["value"]
        if key == "socket-mode" and value.isdigit():
            value = f"0o{int(value):o}"
        what = f"expected {_either(_CHOICES[key])}, got {value}"
    elif wrong is not None and key in _CHOICES:
        found = wrong["found"]
        what = (
            f"expected {_either(_CHOICES[key])}, got {'an' if found[0] in 'aeiou' else 'a'} {found}"
        )
    elif _TOO_LARGE.match(what):
        what = (
            f"expected a number of seconds up to {MAX_SECONDS:.0f} (about 31 years); for no"
            ' limit, a shutdown takes "infinity"'
        )
    elif what.startswith("Object contains unknown field"):
        name = what.split("`")[1]
        what = f"unknown key {name!r} (keys are kebab-case; see the README for the list)"
    elif what.startswith("Object missing required field"):
        name = what.split("`")[1]
        what = f"missing required key {name!r}"
    else:
        what = what.replace(" | null", "").replace("`object`", "a table")
        what = what[0].lower() + what[1:]
    return ConfigError(source, what, at)


def _either(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}"


# -- pass 2: the meaning ---------------------------------------------------------------------

_MAX_SOCKET_PATH: Final = 107  # sun_path is 108 bytes with its NUL
_MAX_ID: Final = 255
_WORKER_ONLY: Final = (
    "start",
    "args",
    "mailbox",
    "breakers",
    "health",
    "handle_timeout",
    "drain",
)
_SUPERVISOR_ONLY: Final = (
    "strategy",
    "intensity",
    "period",
    "auto_shutdown",
    "children",
    "child",
    "max_children",
)


def _key(field: str) -> str:
    return field.replace("_", "-")


_IMPORTED: dict[str, tuple[int, int]] = {}  # a module's file -> (mtime, size) when first named
_NEW_CODE: Final = (
    "the daemon keeps running the code it imported (a reload changes the config, not the"
    " code): restart the daemon to run the new code"
)


def _changed(module: object) -> str | None:
    """*module*'s file, if it changed since a config first named it in this process."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    try:
        info = os.stat(file)
    except OSError:
        return None
    now = (info.st_mtime_ns, info.st_size)
    return file if _IMPORTED.setdefault(file, now) != now else None


@attrs.define
class _Converter:
    source: str
    stale: set[str] = attrs.field(factory=set)  # see LoadedConfig.stale

    def fail(self, message: str, at: str) -> ConfigError:
        return ConfigError(self.source, message, at)

    def daemon(self, config: DaemonConfig) -> None:
        socket = os.fsencode(config.socket_path())
        if b"\0" in socket:
            msg = "a path cannot contain a NUL character"
            raise self.fail(msg, "$.daemon.control-socket")
        if len(socket) > _MAX_SOCKET_PATH:
            msg = (
                f"a Unix socket path must be at most {_MAX_SOCKET_PATH} bytes;"
                f" got {len(socket)} bytes: choose a shorter one"
            )
            raise self.fail(msg, "$.daemon.control-socket")
        problem = listen_problem(config.metrics_listen)
        if problem is not None:
            raise self.fail(problem, "$.daemon.metrics-listen")
        if config.socket_group is not None and config.socket_mode != 0o660:
            msg = "a socket-group needs socket-mode = 0o660 (the group must be able to connect)"
            raise self.fail(msg, "$.daemon.socket-mode")
        if config.socket_group is not None:
            try:
                grp.getgrnam(config.socket_group)
            except KeyError:
                name = config.socket_group
                msg = f"group {name!r} does not exist: create it (groupadd {name}) or name another"
                raise self.fail(msg, "$.daemon.socket-group") from None

    def importable(self, base: Path | None, entries: list[str]) -> None:
        """The config's directory and its ``python-path`` entries go first on ``sys.path``
        (in that order, once each), before anything is imported."""
        here = base or Path.cwd()
        directories = [] if base is None else [base]
        for index, entry in enumerate(entries):
            directory = here / entry
            if not directory.is_dir():
                msg = (
                    f"{entry!r} ({directory}) is not a directory: python-path names directories"
                    " to import from, relative to the config file's"
                )
                raise self.fail(msg, f"$.daemon.python-path[{index}]")
            directories.append(directory)
        for directory in reversed(directories):
            name = os.fspath(directory)
            if name in sys.path:
                sys.path.remove(name)
            sys.path.insert(0, name)
        importlib.invalidate_caches()

    def root(self, config: SupervisorConfig) -> SupervisorSpec:
        at = "$.supervisor"
        children = self.children(config.children, f"{at}.children")
        try:
            return SupervisorSpec(
                children,
                strategy=Strategy(config.strategy),
                intensity=config.intensity,
                period=config.period,
                auto_shutdown=AutoShutdown(config.auto_shutdown),
            )
        except SpecError as exc:
            raise self.fail(str(exc), at) from None

    def children(self, configs: list[ChildConfig], at: str) -> tuple[ChildSpec, ...]:
        seen: dict[str, int] = {}
        specs = []
        for index, child in enumerate(configs):
            self.check_id(child.id, f"{at}[{index}].id")
            if child.id in seen:
                msg = f"child id {child.id!r} is defined twice ([{seen[child.id]}] and [{index}])"
                raise self.fail(msg, f"{at}[{index}].id")
            seen[child.id] = index
            specs.append(self.child(child, f"{at}[{index}]"))
        return tuple(specs)

    def child(self, config: ChildConfig, at: str) -> ChildSpec:
        is_supervisor = config.type == "supervisor"
        wrong = _SUPERVISOR_ONLY if not is_supervisor else _WORKER_ONLY
        for field in wrong:
            if getattr(config, field) is not None:
                kind = "supervisor" if is_supervisor else "worker"
                msg = (
                    f"key {_key(field)!r} does not apply to a {kind}"
                    f" (child {config.id!r} has type = {config.type!r})"
                )
                raise self.fail(msg, f"{at}.{_key(field)}")
        if is_supervisor:
            start: Any = self.supervisor(config, at)
        else:
            start = self.target(config, at)
            self.check_args(config, start, f"{at}.args")
        options: dict[str, Any] = {}
        if config.shutdown is not None:
            options["shutdown"] = config.shutdown
        try:
            if config.backoff is not None:
                options["backoff"] = Backoff(**msgspec.structs.asdict(config.backoff))
        except SpecError as exc:  # what types cannot say, e.g. inf
            raise self.fail(str(exc), f"{at}.backoff") from None
        if config.mailbox is not None:
            options["mailbox"] = MailboxSpec(
                config.mailbox.capacity, Overflow(config.mailbox.overflow)
            )
        if config.drain:
            options["drain"] = True
        if config.start_retries:
            options["start_retries"] = config.start_retries
        if config.max_restarts is not None:
            options["max_restarts"] = config.max_restarts
        if config.max_restarts_period is not None:
            options["max_restarts_period"] = config.max_restarts_period
        if config.health is not None:
            options["health"] = HealthSpec(**msgspec.structs.asdict(config.health))
        if config.handle_timeout is not None:
            options["handle_timeout"] = config.handle_timeout
        if config.breakers:
            options["breakers"] = {
                name: self.breaker(breaker, f"{at}.breakers.{name}")
                for name, breaker in config.breakers.items()
            }
        try:
            return ChildSpec(
                config.id,
                start,
                args=config.args or {},
                restart=RestartType(config.restart),
                type=ChildType(config.type),
                significant=config.significant,
                essential=config.essential,
                **options,
            )
        except SpecError as exc:
            raise self.fail(str(exc), at) from None

    def breaker(self, config: BreakerConfig, at: str) -> BreakerSpec:
        if not BREAKER_NAME.fullmatch(at.rsplit(".", 1)[1]):
            msg = "a breaker's name must be 1-64 letters, digits, '_', '-' or '.'"
            raise self.fail(msg, at)
        options: dict[str, Any] = {
            field: getattr(config, field)
            for field in config.__struct_fields__
            if field not in ("failure_on", "ignore")
        }
        options["failures"] = config.failures or None
        for field in ("failure_on", "ignore"):
            names = getattr(config, field)
            if names is not None:
                options[field] = tuple(
                    self.exception(name, f"{at}.{_key(field)}[{index}]")
                    for index, name in enumerate(names)
                )
        try:
            return BreakerSpec(**options)
        except SpecError as exc:  # what types cannot say, e.g. neither rule set
            raise self.fail(str(exc), at) from None

    def exception(self, name: str, at: str) -> type[BaseException]:
        """An exception class by name: a builtin (``ConnectionError``) or ``module:Class``."""
        module_name, colon, attribute = name.rpartition(":")
        try:
            target: object = importlib.import_module(module_name or "builtins")
            for part in attribute.split("."):
                target = getattr(target, part)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            hint = "" if colon else ' (a builtin\'s name, or "package.module:Class")'
            msg = f"cannot import exception {name!r}{hint}: {type(exc).__name__}: {exc}"
            raise self.fail(msg, at) from None
        if not (isinstance(target, type) and issubclass(target, BaseException)):
            msg = f"{name!r} is not an exception class: {target!r}"
            raise self.fail(msg, at)
        return target

    def supervisor(self, config: ChildConfig, at: str) -> SupervisorSpec | DynamicSupervisorSpec:
        flags: dict[str, Any] = {}
        if config.intensity is not None:
            flags["intensity"] = config.intensity
        if config.period is not None:
            flags["period"] = config.period
        if config.child is not None:
            for field in ("children", "strategy", "auto_shutdown"):
                if getattr(config, field) is not None:
                    msg = (
                        f"key {_key(field)!r} does not apply to a dynamic supervisor"
                        " (one with a child template): it is one-for-one, never shuts down"
                    )
                    raise self.fail(msg, f"{at}.{_key(field)}")
            template = self.child(config.child, f"{at}.child")
            try:
                return DynamicSupervisorSpec(template, max_children=config.max_children, **flags)
            except SpecError as exc:
                raise self.fail(str(exc), at) from None
        if config.max_children is not None:
            msg = "key 'max-children' needs a dynamic supervisor (one with a 'child' template)"
            raise self.fail(msg, f"{at}.max-children")
        if config.children is None:
            msg = (
                f"supervisor {config.id!r} needs 'children' (a list of tables) or,"
                " for a dynamic supervisor, a 'child' template"
            )
            raise self.fail(msg, at)
        children = self.children(config.children, f"{at}.children")
        try:
            return SupervisorSpec(
                children,
                strategy=Strategy(config.strategy or "one-for-one"),
                auto_shutdown=AutoShutdown(config.auto_shutdown or "never"),
                **flags,
            )
        except SpecError as exc:
            raise self.fail(str(exc), at) from None

    def check_id(self, child_id: str, at: str) -> None:
        problem = id_problem(child_id)
        if problem is not None:
            raise self.fail(problem, at)

    def check_args(self, config: ChildConfig, target: object, at: str) -> None:
        """The args must fit the target's signature: found now, not at the first start."""
        problem = args_problem(target, config.args or {}, str(config.start))
        if problem is not None:
            raise self.fail(self._code_changed(problem, target), at)

    def _code_changed(self, problem: str, target: object) -> str:
        """*problem*, and why, when the module on disk is not the one imported."""
        module = sys.modules.get(getattr(target, "__module__", "") or "")
        file = _changed(module) if module is not None else None
        if file is None:
            return problem
        return f"{problem}; {file} has changed since it was imported: {_NEW_CODE}"

    def target(self, config: ChildConfig, at: str) -> object:
        """Import ``package.module:callable`` and check that corral can run it."""
        at = f"{at}.start"
        name = config.start
        if name is None:
            msg = f"worker {config.id!r} needs 'start' (\"package.module:callable\")"
            raise self.fail(msg, at.rsplit(".", 1)[0])
        module_name, colon, attribute = name.partition(":")
        if not colon or not module_name or not attribute:
            msg = f'expected "package.module:callable", got {name!r}'
            raise self.fail(msg, at)
        try:
            target: object = importlib.import_module(module_name)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # An import runs arbitrary code: any failure is reported, also one that would
            # end the daemon (sys.exit() in a script taken for a module).
            text = f"{type(exc).__name__}: {exc}".rstrip(": ")
            msg = f"cannot import {name!r}: {text}"
            raise self.fail(msg, at) from None
        changed = _changed(target)
        if changed is not None:
            self.stale.add(changed)
        try:
            for part in attribute.split("."):
                target = getattr(target, part)
        except Exception as exc:  # a module's __getattr__ may raise anything
            msg = f"cannot import {name!r}: {type(exc).__name__}: {exc}"
            if changed is not None:
                msg += f"; {changed} has changed since it was imported: {_NEW_CODE}"
            raise self.fail(msg, at) from None
        runnable = (isinstance(target, type) and issubclass(target, Actor)) or (
            inspect.iscoroutinefunction(target)
        )
        if not runnable:
            msg = f"{name!r} is neither an Actor subclass nor an async function: {target!r}"
            raise self.fail(msg, at)
        return target
