"""The daemon's TOML file: what decodes and converts, and every rejection's exact message."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from corral import demo
from corral.daemon import config
from corral.daemon.config import ConfigError, DaemonConfig
from corral.supervisors.spec import (
    INFINITY,
    AutoShutdown,
    Backoff,
    ChildType,
    DynamicSupervisorSpec,
    MailboxSpec,
    Overflow,
    RestartType,
    Strategy,
    SupervisorSpec,
)

SOURCE = "corral.toml"
ECHO = 'start = "corral.demo:Echo"'


def parse(text: str) -> config.LoadedConfig:
    return config.parse(text, SOURCE)


def test_all_is_pinned() -> None:
    """The config module exports exactly its public names, as a tuple."""
    assert config.__all__ == (
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


def test_config_error_is_a_value_error() -> None:
    """ConfigError refines ValueError and carries its source and key path."""
    error = ConfigError("f.toml", "bad", "$.x")
    assert isinstance(error, ValueError)
    assert (str(error), error.source, error.at) == ("f.toml: bad at $.x", "f.toml", "$.x")
    bare = ConfigError("f.toml", "bad")
    assert (str(bare), bare.at) == ("f.toml: bad", None)


# -- accepted ----------------------------------------------------------------------------------


def test_demo_config_converts_to_the_demo_tree() -> None:
    """The embedded demo config builds the documented tree from corral.demo's actors."""
    loaded = config.load_demo()
    assert loaded.source == config.DEMO == "corral:demo.toml"
    assert loaded.daemon.metrics_listen == ""
    spec = loaded.spec
    assert (spec.strategy, spec.intensity, spec.period) == (Strategy.ONE_FOR_ONE, 10, 60.0)
    assert [c.id for c in spec.children] == ["ticker", "flaky", "echo", "group"]
    ticker, flaky, echo, group = spec.children
    assert (ticker.start, ticker.args) == (demo.ticker, {"interval": 1.0})
    assert flaky.start is demo.flaky
    assert flaky.args == {"interval": 2.0, "crash_chance": 0.15}
    assert flaky.backoff == Backoff(initial=0.5, cap=10.0)
    assert echo.mailbox == MailboxSpec(100, Overflow.REJECT)
    assert isinstance(group.start, SupervisorSpec)
    assert group.type is ChildType.SUPERVISOR
    assert group.shutdown == INFINITY
    assert (group.start.strategy, group.start.intensity, group.start.period) == (
        Strategy.REST_FOR_ONE,
        5,
        30.0,
    )
    assert [(c.id, c.start) for c in group.start.children] == [
        ("leader", demo.Leader),
        ("follower", demo.Follower),
    ]


def test_minimal_config_takes_otp_defaults() -> None:
    """An empty [supervisor] is a root with OTP's defaults and default daemon settings."""
    loaded = parse("[supervisor]\n")
    assert loaded.source == SOURCE
    assert loaded.spec == SupervisorSpec(
        (), strategy=Strategy.ONE_FOR_ONE, intensity=1, period=5.0, auto_shutdown=AutoShutdown.NEVER
    )
    assert loaded.daemon == DaemonConfig()
    assert loaded.config.daemon is loaded.daemon


def test_nested_supervisors_convert_recursively() -> None:
    """Supervisors nest, each with its own flags and children."""
    loaded = parse(
        f"""
        [supervisor]
        strategy = "one-for-all"
        [[supervisor.children]]
        id = "outer"
        type = "supervisor"
        intensity = 4
        period = 9.5
        [[supervisor.children.children]]
        id = "inner"
        type = "supervisor"
        strategy = "rest-for-one"
        auto-shutdown = "all-significant"
        children = [{{ id = "leaf", {ECHO}, restart = "transient", significant = true }}]
        """
    )
    (outer,) = loaded.spec.children
    assert isinstance(outer.start, SupervisorSpec)
    assert (outer.start.strategy, outer.start.intensity, outer.start.period) == (
        Strategy.ONE_FOR_ONE,
        4,
        9.5,
    )
    (inner,) = outer.start.children
    assert isinstance(inner.start, SupervisorSpec)
    assert (inner.start.strategy, inner.start.auto_shutdown) == (
        Strategy.REST_FOR_ONE,
        AutoShutdown.ALL_SIGNIFICANT,
    )
    (leaf,) = inner.start.children
    assert (leaf.id, leaf.start, leaf.restart, leaf.significant) == (
        "leaf",
        demo.Echo,
        RestartType.TRANSIENT,
        True,
    )


def test_dynamic_supervisor_converts_its_template() -> None:
    """A supervisor with a child template and max-children is a DynamicSupervisorSpec."""
    loaded = parse(
        """
        [supervisor]
        [[supervisor.children]]
        id = "pool"
        type = "supervisor"
        max-children = 3
        intensity = 2
        period = 10
        child = { id = "t", start = "corral.demo:ticker", args = { interval = 0.5 }, restart = "temporary" }
        """  # noqa: E501  # one TOML line
    )
    (pool,) = loaded.spec.children
    assert isinstance(pool.start, DynamicSupervisorSpec)
    assert (pool.start.max_children, pool.start.intensity, pool.start.period) == (3, 2, 10.0)
    template = pool.start.child
    assert (template.id, template.start, template.args, template.restart) == (
        "t",
        demo.ticker,
        {"interval": 0.5},
        RestartType.TEMPORARY,
    )


def test_backoff_and_mailbox_tables_convert() -> None:
    """backoff and mailbox tables become Backoff and MailboxSpec; shutdown takes its words."""
    loaded = parse(
        f"""
        [supervisor]
        [[supervisor.children]]
        id = "a"
        {ECHO}
        shutdown = "brutal"
        backoff = {{ initial = 0.2, cap = 5, multiplier = 3, jitter = 0, reset-after = 7 }}
        mailbox = {{ capacity = 8, overflow = "drop-newest" }}
        [[supervisor.children]]
        id = "b"
        {ECHO}
        shutdown = 2.5
        """
    )
    a, b = loaded.spec.children
    assert a.backoff == Backoff(initial=0.2, cap=5.0, multiplier=3.0, jitter=0.0, reset_after=7.0)
    assert a.mailbox == MailboxSpec(8, Overflow.DROP_NEWEST)
    assert (a.shutdown, b.shutdown) == ("brutal", 2.5)
    assert b.backoff is None


def test_daemon_table_is_decoded() -> None:
    """Every [daemon] key decodes to its field; a socket-group goes with mode 0o660."""
    loaded = parse(
        """
        [daemon]
        control-socket = "/tmp/c.sock"
        socket-mode = 0o660
        socket-group = "root"
        allowed-uids = [1000]
        allowed-gids = [100]
        state-directory = "/tmp/state"
        backend = "trio"
        log-format = "json"
        log-level = "debug"
        metrics-listen = "[::1]:9810"
        max-connections = 2
        idle-timeout = 1.5
        dead-letters = 0
        [supervisor]
        """
    )
    assert loaded.daemon == DaemonConfig(
        control_socket="/tmp/c.sock",  # noqa: S108  # a value, not a file this test uses
        socket_mode=0o660,
        socket_group="root",
        allowed_uids=[1000],
        allowed_gids=[100],
        state_directory="/tmp/state",  # noqa: S108
        backend="trio",
        log_format="json",
        log_level="debug",
        metrics_listen="[::1]:9810",
        max_connections=2,
        idle_timeout=1.5,
        dead_letters=0,
    )


def test_load_reads_a_file(tmp_path: Path) -> None:
    """load() names the file as the source."""
    path = tmp_path / "corral.toml"
    path.write_text(f'[supervisor]\n[[supervisor.children]]\nid = "a"\n{ECHO}\n')
    loaded = config.load(path)
    assert loaded.source == str(path)
    assert [c.id for c in loaded.spec.children] == ["a"]


# -- rejected ----------------------------------------------------------------------------------


def child(*lines: str) -> str:
    """A root with one child made of *lines*."""
    return "[supervisor]\n[[supervisor.children]]\n" + "\n".join(lines) + "\n"


def group(*lines: str) -> str:
    """A root with one supervisor child 'g' made of *lines*."""
    return child('id = "g"', 'type = "supervisor"', *lines)


C0 = "$.supervisor.children[0]"
STRATEGIES = '"one-for-one", "one-for-all" or "rest-for-one"'


@pytest.mark.parametrize(
    ("text", "message", "at"),
    [
        pytest.param(
            child('id = "a"', ECHO, 'strategy = "one_for_one"'),
            f"expected {STRATEGIES}, got 'one_for_one'",
            f"{C0}.strategy",
            id="bad-strategy",
        ),
        pytest.param(
            '[supervisor]\nstrategy = "simple-one-for-one"\n',
            f"expected {STRATEGIES}, got 'simple-one-for-one'",
            "$.supervisor.strategy",
            id="bad-root-strategy",
        ),
        pytest.param(
            child('id = "a"', ECHO, 'restart = "always"'),
            """expected "permanent", "transient" or "temporary", got 'always'""",
            f"{C0}.restart",
            id="bad-restart",
        ),
        pytest.param(
            child('id = "a"', 'type = "actor"'),
            """expected "worker" or "supervisor", got 'actor'""",
            f"{C0}.type",
            id="bad-type",
        ),
        pytest.param(
            child('id = "a"', ECHO, 'mailbox = { overflow = "drop" }'),
            """expected "block", "drop-newest" or "reject", got 'drop'""",
            f"{C0}.mailbox.overflow",
            id="bad-overflow",
        ),
        pytest.param(
            '[daemon]\nbackend = "curio"\n[supervisor]\n',
            """expected "asyncio" or "trio", got 'curio'""",
            "$.daemon.backend",
            id="bad-backend",
        ),
        pytest.param(
            "[supervisor]\nfoo = 1\n",
            "unknown key 'foo' (keys are kebab-case; see the README for the list)",
            "$.supervisor",
            id="unknown-key",
        ),
        pytest.param(
            '[supervisor]\nauto_shutdown = "never"\n',
            "unknown key 'auto_shutdown' (keys are kebab-case; see the README for the list)",
            "$.supervisor",
            id="snake-case-key",
        ),
        pytest.param(
            child(ECHO),
            "missing required key 'id'",
            C0,
            id="missing-id",
        ),
        pytest.param(
            '[supervisor]\nintensity = "3"\n',
            "expected `int`, got `str`",
            "$.supervisor.intensity",
            id="wrong-type",
        ),
        pytest.param(
            child("id = 3"),
            "expected `str`, got `int`",
            f"{C0}.id",
            id="id-not-a-string",
        ),
        pytest.param(
            "[supervisor]\nchildren = 3\n",
            "expected `array`, got `int`",
            "$.supervisor.children",
            id="children-not-a-list",
        ),
        pytest.param(
            "supervisor = 3\n",
            "expected a table, got `int`",
            "$.supervisor",
            id="supervisor-not-a-table",
        ),
        pytest.param(
            "[supervisor]\nintensity = -1\n",
            "expected `int` >= 0",
            "$.supervisor.intensity",
            id="negative-intensity",
        ),
        pytest.param(
            "[supervisor]\nperiod = 0\n",
            "expected `float` > 0.0",
            "$.supervisor.period",
            id="zero-period",
        ),
        pytest.param(
            child('id = "a"', ECHO, "shutdown = -1"),
            "expected `float` >= 0.0",
            f"{C0}.shutdown",
            id="negative-shutdown",
        ),
        pytest.param(
            child('id = "a"', ECHO, 'shutdown = "forever"'),
            """expected a number of seconds >= 0, "brutal" or "infinity", got 'forever'""",
            f"{C0}.shutdown",
            id="shutdown-forever",
        ),
        pytest.param(
            child('id = "a"', ECHO, "backoff = { multiplier = 0.5 }"),
            "expected `float` >= 1.0",
            f"{C0}.backoff.multiplier",
            id="backoff-shrinks",
        ),
        pytest.param(
            "[daemon]\nallowed-uids = [-1]\n[supervisor]\n",
            "expected `int` >= 0",
            "$.daemon.allowed-uids[0]",
            id="negative-uid",
        ),
        pytest.param(
            child('id = "a"', ECHO)
            + '[[supervisor.children]]\nid = "b"\n'
            + ECHO
            + '\n[[supervisor.children]]\nid = "a"\n'
            + ECHO
            + "\n",
            "child id 'a' is defined twice ([0] and [2])",
            "$.supervisor.children[2].id",
            id="duplicate-ids",
        ),
        pytest.param(
            group(f'children = [{{ id = "x", {ECHO} }}, {{ id = "x", {ECHO} }}]'),
            "child id 'x' is defined twice ([0] and [1])",
            f"{C0}.children[1].id",
            id="duplicate-nested-ids",
        ),
        pytest.param(
            child('id = "a/b"', ECHO),
            "child id 'a/b' is not usable in a path: use 1 to 255 characters, no '/', no control"
            " characters, no blanks around it, not '.' or '..'",
            f"{C0}.id",
            id="id-with-slash",
        ),
        pytest.param(
            child('id = ".."', ECHO),
            "child id '..' is not usable in a path: use 1 to 255 characters, no '/', no control"
            " characters, no blanks around it, not '.' or '..'",
            f"{C0}.id",
            id="id-dot-dot",
        ),
        pytest.param(
            child(f'id = "{"x" * 256}"', ECHO),
            f"child id {'x' * 60!r} is not usable in a path: use 1 to 255 characters, no '/',"
            " no control characters, no blanks around it, not '.' or '..'",
            f"{C0}.id",
            id="id-too-long",
        ),
        pytest.param(
            child('id = "a"', ECHO, "backoff = { initial = inf }"),
            "expected a number of seconds up to 1000000000 (about 31 years); for no limit, a"
            ' shutdown takes "infinity"',
            f"{C0}.backoff.initial",
            id="backoff-infinite",
        ),
        pytest.param(
            child('id = "a"', ECHO, "children = []"),
            "key 'children' does not apply to a worker (child 'a' has type = 'worker')",
            f"{C0}.children",
            id="worker-with-children",
        ),
        pytest.param(
            child('id = "a"', ECHO, 'child = { id = "x" }'),
            "key 'child' does not apply to a worker (child 'a' has type = 'worker')",
            f"{C0}.child",
            id="worker-with-child",
        ),
        pytest.param(
            group(ECHO, "children = []"),
            "key 'start' does not apply to a supervisor (child 'g' has type = 'supervisor')",
            f"{C0}.start",
            id="supervisor-with-start",
        ),
        pytest.param(
            group(),
            "supervisor 'g' needs 'children' (a list of tables) or, for a dynamic supervisor,"
            " a 'child' template",
            C0,
            id="supervisor-without-children",
        ),
        pytest.param(
            group('strategy = "one-for-all"', f'child = {{ id = "w", {ECHO} }}'),
            "key 'strategy' does not apply to a dynamic supervisor (one with a child template):"
            " it is one-for-one, never shuts down",
            f"{C0}.strategy",
            id="dynamic-with-strategy",
        ),
        pytest.param(
            group('auto-shutdown = "any-significant"', f'child = {{ id = "w", {ECHO} }}'),
            "key 'auto-shutdown' does not apply to a dynamic supervisor (one with a child"
            " template): it is one-for-one, never shuts down",
            f"{C0}.auto-shutdown",
            id="dynamic-with-auto-shutdown",
        ),
        pytest.param(
            group(
                f'child = {{ id = "w", {ECHO}, significant = true, restart = "temporary" }}',
            ),
            "a dynamic supervisor's children cannot be significant",
            C0,
            id="dynamic-significant-template",
        ),
        pytest.param(
            group("max-children = 3", "children = []"),
            "key 'max-children' needs a dynamic supervisor (one with a 'child' template)",
            f"{C0}.max-children",
            id="max-children-without-child",
        ),
        pytest.param(
            '[supervisor]\nauto-shutdown = "any-significant"\n'
            '[[supervisor.children]]\nid = "a"\n' + ECHO + "\nsignificant = true\n",
            "child 'a': a significant child cannot be permanent",
            "$.supervisor",
            id="significant-permanent",
        ),
        pytest.param(
            child('id = "a"', ECHO, "significant = true", 'restart = "transient"'),
            "child 'a': significant children need auto_shutdown other than never",
            "$.supervisor",
            id="significant-without-auto-shutdown",
        ),
        pytest.param(
            group(
                f'children = [{{ id = "x", {ECHO}, restart = "transient", significant = true }}]'
            ),
            "child 'x': significant children need auto_shutdown other than never",
            C0,
            id="nested-significant-without-auto-shutdown",
        ),
        pytest.param(
            child('id = "a"'),
            """worker 'a' needs 'start' ("package.module:callable")""",
            C0,
            id="worker-without-start",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.demo.Echo"'),
            """expected "package.module:callable", got 'corral.demo.Echo'""",
            f"{C0}.start",
            id="start-without-colon",
        ),
        pytest.param(
            child('id = "a"', 'start = ":Echo"'),
            """expected "package.module:callable", got ':Echo'""",
            f"{C0}.start",
            id="start-without-module",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.nosuch:Echo"'),
            "cannot import 'corral.nosuch:Echo': ModuleNotFoundError: No module named"
            " 'corral.nosuch'",
            f"{C0}.start",
            id="start-module-missing",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.demo:Nope"'),
            "cannot import 'corral.demo:Nope': AttributeError: module 'corral.demo' has no"
            " attribute 'Nope'",
            f"{C0}.start",
            id="start-attribute-missing",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.demo:Echo.nope"'),
            "cannot import 'corral.demo:Echo.nope': AttributeError: type object 'Echo' has no"
            " attribute 'nope'",
            f"{C0}.start",
            id="start-dotted-attribute-missing",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.daemon.config:Config"'),
            "'corral.daemon.config:Config' is neither an Actor subclass nor an async function:"
            " <class 'corral.daemon.config.Config'>",
            f"{C0}.start",
            id="start-not-an-actor",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.daemon.config:DEMO"'),
            "'corral.daemon.config:DEMO' is neither an Actor subclass nor an async function:"
            " 'corral:demo.toml'",
            f"{C0}.start",
            id="start-not-callable",
        ),
        pytest.param(
            child('id = "a"', 'start = "corral.demo:ticker"', "args = { speed = 2 }"),
            "args do not fit corral.demo:ticker(ctx, *, interval=1.0): got an unexpected"
            " keyword argument 'speed'",
            f"{C0}.args",
            id="args-do-not-fit-function",
        ),
        pytest.param(
            child('id = "a"', ECHO, "args = { x = 2 }"),
            "args do not fit corral.demo:Echo(): got an unexpected keyword argument 'x'",
            f"{C0}.args",
            id="args-do-not-fit-actor",
        ),
        pytest.param(
            group('child = { id = "t", start = "corral.demo:ticker", args = { bogus = 1 } }'),
            "args do not fit corral.demo:ticker(ctx, *, interval=1.0): got an unexpected"
            " keyword argument 'bogus'",
            f"{C0}.child.args",
            id="template-args-do-not-fit",
        ),
        pytest.param(
            child('id = "a"', ECHO, "args = 3"),
            "expected a table, got `int`",
            f"{C0}.args",
            id="args-not-a-table",
        ),
        pytest.param(
            '[daemon]\nmetrics-listen = "9810"\n[supervisor]\n',
            """expected "host:port" (or "" for no listener), got '9810'""",
            "$.daemon.metrics-listen",
            id="metrics-listen-without-host",
        ),
        pytest.param(
            '[daemon]\nmetrics-listen = "localhost:70000"\n[supervisor]\n',
            """expected "host:port" (or "" for no listener), got 'localhost:70000'""",
            "$.daemon.metrics-listen",
            id="metrics-listen-port-too-big",
        ),
        pytest.param(
            '[daemon]\nmetrics-listen = "localhost:http"\n[supervisor]\n',
            """expected "host:port" (or "" for no listener), got 'localhost:http'""",
            "$.daemon.metrics-listen",
            id="metrics-listen-port-not-a-number",
        ),
        pytest.param(
            '[daemon]\nsocket-group = "corral"\n[supervisor]\n',
            "a socket-group needs socket-mode = 0o660 (the group must be able to connect)",
            "$.daemon.socket-mode",
            id="socket-group-without-0o660",
        ),
        pytest.param(
            "[daemon]\nsocket-mode = 0o644\n[supervisor]\n",
            "expected 0o600 or 0o660, got 0o644",
            "$.daemon.socket-mode",
            id="socket-mode-0o644",
        ),
    ],
)
def test_invalid_config_is_rejected(text: str, message: str, at: str) -> None:
    """Each invalid config raises ConfigError naming the file, the problem and the key path."""
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{SOURCE}: {message} at {at}')}$") as info:
        parse(text)
    assert (info.value.source, info.value.at) == (SOURCE, at)


def test_invalid_toml_is_rejected_without_a_key_path() -> None:
    """A TOML syntax error says so, with msgspec's line and column, and has no key path."""
    with pytest.raises(ConfigError) as info:
        parse("[supervisor\n")
    assert str(info.value) == (
        "corral.toml: not valid TOML: Expected ']' at the end of a table declaration"
        " (at line 1, column 12)"
    )
    assert (info.value.source, info.value.at) == (SOURCE, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "missing required key 'supervisor'", id="empty-file"),
        pytest.param("[daemon]\n", "missing required key 'supervisor'", id="no-supervisor"),
        pytest.param(
            "[supervisor]\n[supervisr]\n",
            "unknown key 'supervisr' (keys are kebab-case; see the README for the list)",
            id="unknown-top-level-table",
        ),
    ],
)
def test_top_level_errors_read_like_the_others(text: str, message: str) -> None:
    """A problem with the file's top level is worded like any other and placed at ``$``."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == f"{SOURCE}: {message} at $"
    assert info.value.at == "$"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming it and the OS's reason."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        config.load(missing)
    assert str(info.value) == f"{missing}: cannot read the config: No such file or directory"
    assert (info.value.source, info.value.at) == (str(missing), None)


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    """Reading a directory as the config is reported like any unreadable file."""
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read the config: Is a directory"


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO given as the config is refused at once (reading it would wait for a writer)."""
    fifo = tmp_path / "corral.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        config.load(fifo)
    assert str(info.value) == (
        f"{fifo}: cannot read the config: a FIFO, not a regular file: give the path of a TOML file"
    )


def test_a_device_is_refused_without_reading_it() -> None:
    """/dev/zero is refused before a byte is read (it never ends)."""
    with pytest.raises(ConfigError) as info:
        config.load("/dev/zero")
    assert str(info.value) == (
        "/dev/zero: cannot read the config: a character device, not a regular file: give the"
        " path of a TOML file"
    )


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    """A file over the size limit is refused, whatever it holds, and not read past it."""
    big = tmp_path / "corral.toml"
    with big.open("wb") as f:
        f.truncate(config.MAX_CONFIG_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError) as info:
        config.load(big)
    assert (
        str(info.value) == f"{big}: cannot read the config: larger than 16 MiB: not a config file"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("[daemon]\nprogress-timeout", "inf"),
        ("[daemon]\nidle-timeout", "1e308"),
        ("[daemon]\nloop-stall-timeout", "inf"),
    ],
)
def test_endless_durations_are_refused(key: str, value: str) -> None:
    """inf or 1e308 seconds, which TOML allows, are refused with the range allowed."""
    with pytest.raises(ConfigError) as info:
        config.parse(f"{key} = {value}\n[supervisor]\n", "corral.toml")
    assert str(info.value).startswith(
        "corral.toml: expected a number of seconds up to 1000000000 (about 31 years); for no"
        ' limit, a shutdown takes "infinity" at $.daemon.'
    )


def test_an_endless_child_shutdown_is_refused() -> None:
    """A child's shutdown of 1e308 seconds is refused; "infinity" says it on purpose."""
    child = '[[supervisor.children]]\nid = "a"\nstart = "corral.demo:Echo"\nshutdown = {}\n'
    with pytest.raises(
        ConfigError, match=r"up to 1000000000 .* at \$\.supervisor\.children\[0\]\.shutdown$"
    ):
        config.parse("[supervisor]\n" + child.format("1e308"), "corral.toml")
    spec = config.parse("[supervisor]\n" + child.format('"infinity"'), "corral.toml").spec
    assert spec.children[0].shutdown == "infinity"


# -- daemon paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "runtime", "expected"),
    [
        pytest.param(DaemonConfig(), None, Path("run/control.sock"), id="default"),
        pytest.param(DaemonConfig(), "/run/corral", Path("/run/corral/control.sock"), id="env"),
        pytest.param(
            DaemonConfig(),
            "/run/corral:/run/other",
            Path("/run/corral/control.sock"),
            id="env-first-of-several",
        ),
        pytest.param(
            DaemonConfig(control_socket="/srv/c.sock"),
            "/run/corral",
            Path("/srv/c.sock"),
            id="configured-wins",
        ),
    ],
)
def test_socket_path(
    monkeypatch: pytest.MonkeyPatch, settings: DaemonConfig, runtime: str | None, expected: Path
) -> None:
    """control-socket, else $RUNTIME_DIRECTORY/control.sock (first entry), else ./run."""
    if runtime is None:
        monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("RUNTIME_DIRECTORY", runtime)
    assert settings.socket_path() == expected


@pytest.mark.parametrize(
    ("settings", "state", "expected"),
    [
        pytest.param(DaemonConfig(), None, Path("state"), id="default"),
        pytest.param(DaemonConfig(), "/var/lib/corral", Path("/var/lib/corral"), id="env"),
        pytest.param(DaemonConfig(), "/var/lib/a:/var/lib/b", Path("/var/lib/a"), id="env-first"),
        pytest.param(
            DaemonConfig(state_directory="/srv/state"),
            "/var/lib/corral",
            Path("/srv/state"),
            id="configured-wins",
        ),
    ],
)
def test_state_path(
    monkeypatch: pytest.MonkeyPatch, settings: DaemonConfig, state: str | None, expected: Path
) -> None:
    """state-directory, else $STATE_DIRECTORY (first entry), else ./state."""
    if state is None:
        monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("STATE_DIRECTORY", state)
    assert settings.state_path() == expected


def test_python_path_entries_must_be_directories(tmp_path: Path) -> None:
    """A python-path entry that is not a directory (relative to the config's) is an error
    naming it; the config's directory and the entries go first on sys.path, in order."""
    config_file = tmp_path / "app.toml"
    config_file.write_text('[daemon]\npython-path = ["src", "lib"]\n[supervisor]\n')
    with pytest.raises(ConfigError) as info:
        config.load(config_file)
    assert str(info.value) == (
        f"{config_file}: 'src' ({tmp_path / 'src'}) is not a directory: python-path names"
        " directories to import from, relative to the config file's at"
        " $.daemon.python-path[0]"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "lib").mkdir()
    saved = list(sys.path)
    try:
        config.load(config_file)
        assert sys.path[:3] == [str(tmp_path), str(tmp_path / "src"), str(tmp_path / "lib")]
        config.load(config_file)  # again: no duplicates
        assert sys.path.count(str(tmp_path / "src")) == 1
    finally:
        sys.path[:] = saved
