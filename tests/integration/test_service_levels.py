"""The tree's service level (full, degraded, minimal, unavailable) by the README's rules, and
callers' fallbacks, on both backends; then what the daemon makes of them: /readyz by
``ready-when``, the status header, STATUS=, the metric and the log entry on each change."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from corral.daemon import cli
from corral.daemon.logging import setup
from corral.daemon.systemd import summary
from corral.supervisors.core import ChildStatus
from tests.integration.support import HANG_GUARD, EventLog
from tests.integration.test_daemon import corral_logger, make_daemon, serving

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

__all__ = ("corral_logger",)  # the fixture, used here too

FULL, DEGRADED = corral.ServiceLevel.FULL, corral.ServiceLevel.DEGRADED
MINIMAL, UNAVAILABLE = corral.ServiceLevel.MINIMAL, corral.ServiceLevel.UNAVAILABLE
LONG = corral.Backoff(initial=3600.0, cap=3600.0, jitter=0)  # crashed: in backoff for good


class Service(corral.Actor):
    """Answers "ok"; crashes on "crash"; "hang" never answers; "dep" fails its breaker."""

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = "crashed on purpose"
            raise RuntimeError(msg)
        if message == "hang":
            await anyio.sleep_forever()
        if message == "dep":
            async with self.ctx.breaker("dep"):
                msg = "dependency down"
                raise ConnectionError(msg)
        return "ok"


async def done(ctx: corral.Context) -> None:
    """A one-off job: ready, then finished (a transient child that ended normally)."""
    ctx.started()


def child(child_id: str, *, essential: bool = True, **options: object) -> corral.ChildSpec:
    return corral.ChildSpec(
        child_id,
        Service,
        essential=essential,
        backoff=LONG,
        breakers={"dep": corral.BreakerSpec(failures=1, wait=3600.0, wait_cap=3600.0)},
        **options,  # type: ignore[arg-type]  # ChildSpec's own keywords
    )


def levels_tree() -> corral.SupervisorSpec:
    extras = corral.SupervisorSpec([child("report")], intensity=10)
    return corral.SupervisorSpec(
        [
            child("db"),
            child("api"),
            child("cache", essential=False),
            corral.ChildSpec("extras", extras, essential=False),  # report is not essential
            corral.ChildSpec("job", done, restart=corral.RestartType.TRANSIENT),
        ],
        intensity=10,
    )


async def crash(tree: corral.Tree, events: EventLog, path: str) -> None:
    with pytest.raises(corral.ActorCrashedError):
        await tree.lookup(path).call("crash")
    await events.wait_for(corral.RestartScheduled, path)


async def test_the_level_follows_the_rules() -> None:
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(levels_tree()) as tree:
            tree.events.subscribe(events)
            assert tree.service_status() == corral.ServiceStatus(FULL)  # the job ended: fine
            await crash(tree, events, "/extras/report")  # below a non-essential supervisor
            assert tree.service_status() == corral.ServiceStatus(
                DEGRADED, ("non-essential down: /extras/report backoff",)
            )
            with pytest.raises(corral.ActorCrashedError):
                await tree.lookup("/api").call("dep")
            await events.wait_for(corral.RestartScheduled, "/api")
            status = tree.service_status()
            assert status.level is MINIMAL  # /api crashed: in backoff
            assert status.reasons == (
                "essential down: /api backoff",
                "non-essential down: /extras/report backoff",
                "breakers not closed: dep of /api open",
            )
            assert status.describe().startswith("minimal: essential down: /api backoff; ")
            await crash(tree, events, "/db")
            assert tree.service_status().level is UNAVAILABLE  # every essential unit down


async def test_a_breaker_open_alone_is_degraded() -> None:
    class Careful(Service):
        async def handle(self, message: object) -> object:
            try:
                return await super().handle(message)
            except ConnectionError:
                return "fallback"

    spec = corral.SupervisorSpec(
        [corral.ChildSpec("api", Careful, breakers={"dep": corral.BreakerSpec(failures=1)})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            assert await tree.lookup("/api").call("dep") == "fallback"
            assert tree.service_status() == corral.ServiceStatus(
                DEGRADED, ("breakers not closed: dep of /api open",)
            )


async def test_an_operators_stop_is_down_and_many_are_counted() -> None:
    spec = corral.SupervisorSpec(
        [child("keep")] + [child(f"w{n}", essential=False) for n in range(7)], intensity=10
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            for n in range(7):
                await tree.supervisor().terminate_child(f"w{n}", hold=True)
            assert tree.service_status() == corral.ServiceStatus(
                DEGRADED,
                (
                    "non-essential down: /w0 stopped, /w1 stopped, /w2 stopped, /w3 stopped,"
                    " /w4 stopped and 2 more",
                ),
            )


async def test_a_tree_of_non_essential_children_is_never_below_degraded() -> None:
    spec = corral.SupervisorSpec([child("a", essential=False)], intensity=10)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await crash(tree, events, "/a")
            assert tree.service_status().level is DEGRADED


async def test_a_child_terminated_after_a_crash_is_not_down() -> None:
    """Not held, a stopped child is neither up nor down, whatever its last exit was."""
    spec = corral.SupervisorSpec([child("a"), corral.ChildSpec("b", Service)], intensity=10)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            with pytest.raises(corral.ActorCrashedError):
                await tree.lookup("/b").call("crash")
            await events.wait_for(corral.ChildStarted, "/b", restarts=1)
            await tree.supervisor().terminate_child("b")
            assert tree.service_status() == corral.ServiceStatus(FULL)


async def test_a_reload_changes_a_supervisors_essential_flag_in_place() -> None:
    """A sub-supervisor whose essential flag changes with its children is adopted, not
    restarted: its running children stay."""

    def spec(essential: bool, extra: bool) -> corral.SupervisorSpec:
        inner = [child("x")] + ([child("y")] if extra else [])
        sub = corral.SupervisorSpec(inner, intensity=10)
        return corral.SupervisorSpec([corral.ChildSpec("s", sub, essential=essential)])

    old, new = spec(True, False), spec(False, True)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            [before] = tree.statistics().children
            done = await tree.reconfigure(old, new)
            [after] = tree.statistics().children
            assert after.started_at == before.started_at  # not restarted
            assert after.essential is False
            assert "start /s/y (new)" in done.applied


def test_a_spec_says_essential_with_a_bool() -> None:
    with pytest.raises(corral.SpecError, match="essential must be True or False, got 'no'"):
        corral.ChildSpec("a", Service, essential="no")  # type: ignore[arg-type]  # on purpose


# -- fallbacks --------------------------------------------------------------------------------


def fallbacks_of(tree: corral.Tree, child_id: str) -> dict[str, int]:
    [found] = [c for c in tree.statistics().children if c.id == child_id]
    return dict(found.fallbacks)


async def test_a_fallback_answers_for_a_callee_that_cannot() -> None:
    quick = corral.BreakerSpec(failures=1, wait=3600.0, wait_cap=3600.0)
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("api", Service, breakers={"dep": quick}),
            child("slow"),  # restarts in an hour once crashed
            child("stopped"),
            child("hanger"),
            corral.ChildSpec(
                "full", Service, mailbox=corral.MailboxSpec(1, corral.Overflow.REJECT)
            ),
        ],
        intensity=10,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            api = tree.lookup("/api")
            assert await api.call("ok", fallback="cached") == "ok"  # served: no fallback
            with pytest.raises(corral.ActorCrashedError):  # the dependency's error crashes it
                await api.call("dep", fallback="cached")
            await events.wait_for(corral.ChildStarted, "/api", restarts=1)
            seen: list[corral.CorralError] = []

            def cached(error: corral.CorralError) -> str:
                seen.append(error)
                return "cached"

            answer = await api.call("dep", fallback=cached)
            assert answer == "cached"  # its breaker is open: BreakerOpenError crashed it
            [crashed] = seen
            assert isinstance(crashed, corral.ActorCrashedError)
            assert isinstance(crashed.__cause__, corral.BreakerOpenError)

            hanger = tree.lookup("/hanger")
            assert await hanger.call("hang", timeout=0.01, fallback="cached") == "cached"

            await crash(tree, events, "/slow")  # waiting in backoff now
            assert await tree.lookup("/slow").call("ok", fail_fast=True, fallback=0) == 0

            await tree.supervisor().terminate_child("stopped")
            stopped = tree.lookup("/stopped")
            assert await stopped.call("ok", fallback=lambda e: type(e).__name__) == (
                "ActorNotRunningError"
            )

            full = tree.lookup("/full")
            assert full.cast_nowait("hang")  # its one place taken: nothing ran in between
            assert await full.call("ok", fallback="busy") == "busy"

            assert fallbacks_of(tree, "api") == {"breaker_open": 1}
            assert fallbacks_of(tree, "hanger") == {"timeout": 1}
            assert fallbacks_of(tree, "slow") == {"restarting": 1}
            assert fallbacks_of(tree, "stopped") == {"not_running": 1}
            assert fallbacks_of(tree, "full") == {"mailbox_full": 1}


async def test_a_callee_crashing_on_its_own_bug_is_not_a_fallback() -> None:
    spec = corral.SupervisorSpec([child("api")], intensity=10)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            with pytest.raises(corral.ActorCrashedError):
                await tree.lookup("/api").call("crash", fallback="cached")
            assert fallbacks_of(tree, "api") == {}


# -- in the daemon ----------------------------------------------------------------------------

TREE = f"""
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "db"
start = "{__name__}:Service"

[[supervisor.children]]
id = "cache"
start = "{__name__}:Service"
essential = false
backoff = {{ initial = 3600, cap = 3600 }}
"""


class Seen(logging.Handler):
    """Sets *seen* when a record of the *event* comes (on the loop's thread: records of the
    daemon are made there)."""

    def __init__(self, event: str, seen: anyio.Event) -> None:
        super().__init__()
        self.event, self.seen = event, seen

    def emit(self, record: logging.LogRecord) -> None:
        if (getattr(record, "fields", None) or {}).get("event") == self.event:
            self.seen.set()


@pytest.mark.parametrize("ready_when", ["degraded", "full"])
async def test_readyz_status_metrics_and_the_log_follow_the_level(
    workdir: Path, anyio_backend: str, corral_logger: logging.Logger, ready_when: str
) -> None:
    stream = io.StringIO()
    setup("json", "info", stream)
    logged = anyio.Event()
    corral_logger.addHandler(Seen("service-level", logged))
    daemon = make_daemon(workdir, anyio_backend, TREE, daemon=f'ready-when = "{ready_when}"')
    async with serving(daemon) as running:
        assert running.daemon.unready() is None
        conn = await running.connect()
        root = await conn.ok("status")
        assert (root["service"], root.get("service_reasons")) == ("full", [])
        with pytest.raises(corral.ActorCrashedError):
            await running.tree.lookup("/cache").call("crash")
        await running.log.wait_for(corral.RestartScheduled, "/cache")
        root = await conn.ok("status")
        assert (root["service"], root["service_reasons"]) == (
            "degraded",
            ["non-essential down: /cache backoff"],
        )
        head, reason = cli.render_status(root, colour=False)[:2]
        assert head.endswith("(2 below: 1 backoff, 1 running)  service degraded")
        assert reason == "  non-essential down: /cache backoff"
        if ready_when == "degraded":
            assert running.daemon.unready() is None
        else:
            assert running.daemon.unready() == (
                "service degraded: non-essential down: /cache backoff (ready-when = 'full');"
                " see corral status"
            )
        text = await conn.ok("metrics")
        assert [line for line in text.splitlines() if line.startswith("corral_service_level")] == [
            'corral_service_level{level="full"} 0',
            'corral_service_level{level="degraded"} 1',
            'corral_service_level{level="minimal"} 0',
            'corral_service_level{level="unavailable"} 0',
        ]
        await logged.wait()  # within a second of the change
        assert await running.cli("status") == 0
    [entry] = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if json.loads(line).get("event") == "service-level"
    ]
    assert (entry["service"], entry["message"], entry["reason"], entry["level"]) == (
        "degraded",
        "service level degraded (was full): non-essential down: /cache backoff",
        "non-essential down: /cache backoff",
        "warning",
    )


async def test_readyz_names_what_an_operators_stop_takes_down(
    workdir: Path, anyio_backend: str
) -> None:
    async with serving(make_daemon(workdir, anyio_backend, TREE)) as running:
        await running.tree.supervisor().terminate_child("db", hold=True)
        assert running.daemon.unready() == (
            "service unavailable: essential down: /db stopped (ready-when = 'degraded');"
            " see corral status"
        )


def test_the_status_line_ends_with_the_level() -> None:
    census = {ChildStatus.RUNNING: 4, ChildStatus.BACKOFF: 1}
    assert summary(census, DEGRADED) == "4/5 running, 1 in backoff; service degraded"
    assert summary(census) == "4/5 running, 1 in backoff"
