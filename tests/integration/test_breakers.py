"""Circuit breakers owned by the tree: used from actors, kept across restarts, retuned by a
reload, and seen and steered through the control socket (status, why, breakers, breaker
reset|open, metrics, events, the audit log), on both backends."""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from corral.daemon.logging import setup
from tests.integration.support import HANG_GUARD, EventLog
from tests.integration.test_daemon import corral_logger, make_daemon, serving

if TYPE_CHECKING:
    import logging
    from pathlib import Path

pytestmark = pytest.mark.anyio

__all__ = ("corral_logger",)  # the fixture, used here too


class Api(corral.Actor):
    """Calls its dependency through breaker ``dep``: "down" fails it, "hang" never ends,
    "bug" is the actor's own error (not the dependency's); an open breaker answers a
    fallback. "crash" crashes the actor outside the breaker."""

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = "crashed on purpose"
            raise RuntimeError(msg)
        try:
            async with self.ctx.breaker("dep"):
                return await dependency(message)
        except corral.BreakerOpenError as exc:
            return f"fallback ({exc.state})"


async def dependency(message: object) -> str:
    if message == "down":
        msg = "dependency down"
        raise ConnectionError(msg)
    if message == "hang":
        await anyio.sleep_forever()
    if message == "bug":
        msg = "the caller's own bug"
        raise KeyError(msg)
    return "ok"


class Guarded(corral.Actor):
    """The decorator's form of Api's breaker."""

    @corral.guarded("dep")
    async def fetch(self, message: object) -> str:
        return await dependency(message)

    async def handle(self, message: object) -> object:
        try:
            return await self.fetch(message)
        except corral.BreakerOpenError:
            return "fallback"


async def function_api(ctx: corral.Context) -> None:
    async for message in ctx:
        try:
            answer = await ctx.breaker("dep").call(dependency, message)
        except corral.BreakerOpenError:
            answer = "fallback"
        except ConnectionError as exc:
            answer = f"failed: {exc}"
        ctx.reply(answer)


DEP = corral.BreakerSpec(
    failures=2, wait=3600.0, wait_cap=3600.0, jitter=0.0, failure_on=(ConnectionError,)
)


def api_tree(start: object = Api, dep: corral.BreakerSpec = DEP) -> corral.SupervisorSpec:
    return corral.SupervisorSpec(
        [corral.ChildSpec("api", start, breakers={"dep": dep})],  # type: ignore[arg-type]  # one of three kinds
        intensity=100,
    )


async def call(tree: corral.Tree, message: object) -> object:
    try:
        return await tree.lookup("/api").call(message)
    except corral.ActorCrashedError as exc:
        return f"crashed: {exc.__cause__!r}"


def dep_of(tree: corral.Tree) -> corral.BreakerState:
    [child] = tree.statistics().children
    [breaker] = child.breakers
    return breaker.state


@pytest.mark.parametrize("start", [Api, Guarded])
async def test_failures_open_the_breaker_and_calls_then_fail_fast(start: object) -> None:
    """Two failures of the dependency open it; then the actor's calls fail at once (its
    fallback) without reaching the dependency; the actor's own errors do not count."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(start)) as tree:
            assert await call(tree, "bug") == 'crashed: KeyError("the caller\'s own bug")'
            assert await call(tree, "down") == "crashed: ConnectionError('dependency down')"
            assert dep_of(tree) is corral.BreakerState.CLOSED
            assert await call(tree, "down") == "crashed: ConnectionError('dependency down')"
            assert dep_of(tree) is corral.BreakerState.OPEN
            assert await call(tree, "fine") == "fallback" + (" (open)" if start is Api else "")
            [child] = tree.statistics().children
            [b] = child.breakers
            assert (b.succeeded, b.failed, b.rejected) == (1, 2, 1)  # the bug counts as a success


async def test_the_breaker_outlives_the_actors_restarts() -> None:
    """Its state is the child's: restarts of the actor (here three crashes) leave it open."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree()) as tree:
            tree.events.subscribe(events)
            for _ in range(2):
                await call(tree, "down")
            for _ in range(3):
                await call(tree, "crash")
            await events.wait_for(corral.ChildStarted, "/api", restarts=5)
            assert dep_of(tree) is corral.BreakerState.OPEN
            assert await call(tree, "fine") == "fallback (open)"


async def test_a_function_actor_calls_through_its_breaker() -> None:
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(function_api)) as tree:
            ref = tree.lookup("/api")
            assert await ref.call("fine") == "ok"
            assert await ref.call("down") == "failed: dependency down"
            assert await ref.call("down") == "failed: dependency down"
            assert await ref.call("fine") == "fallback"


async def test_a_call_past_the_timeout_is_cancelled_and_counts_as_a_failure() -> None:
    dep = corral.BreakerSpec(failures=1, wait=3600.0, wait_cap=3600.0, timeout=0.01)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(dep=dep)) as tree:
            answer = await call(tree, "hang")
            assert answer == (
                "crashed: BreakerTimeoutError(\"a call through breaker 'dep' of /api took longer"
                ' than its timeout (0.01 s)")'
            )
            assert dep_of(tree) is corral.BreakerState.OPEN


async def test_the_trial_after_the_wait_closes_it() -> None:
    """Open, then (its wait of 0 over) one trial call goes through and closes it; events
    tell each change."""
    dep = corral.BreakerSpec(failures=1, wait=0.0, failure_on=(ConnectionError,))
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(dep=dep)) as tree:
            tree.events.subscribe(events)
            await call(tree, "down")
            assert await call(tree, "fine") == "ok"
    assert [(e.previous, e.state) for e in events.find(corral.BreakerChanged, "/api")] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    opened = events.find(corral.BreakerChanged, "/api")[0]
    assert (opened.breaker, opened.reason) == (
        "dep",
        "1 failure in a row, last: ConnectionError: dependency down",
    )


async def test_an_undeclared_breaker_is_an_error_that_names_the_declared_ones() -> None:
    async def wrong(ctx: corral.Context) -> None:
        ctx.started()
        try:
            ctx.breaker("pricing")
        except corral.UnknownBreakerError as exc:
            found.append(str(exc))
        await anyio.sleep_forever()

    found: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(wrong)):
            pass
    assert found == [
        "actor /api has no breaker 'pricing' (declared: dep); declare it on its child:"
        " breakers = { pricing = { failures = 5 } }"
    ]


async def test_a_guard_serves_one_call_at_a_time() -> None:
    async def reuse(ctx: corral.Context) -> None:
        guard = ctx.breaker("dep")
        async with guard:
            with pytest.raises(RuntimeError, match="a Guard serves one call at a time"):
                await guard.__aenter__()
        async with guard:  # once the first has ended, again
            pass
        ctx.started()
        await anyio.sleep_forever()

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(api_tree(reuse)) as tree:
            [child] = tree.statistics().children
            assert child.breakers[0].succeeded == 2


async def test_a_reload_retunes_a_breaker_without_restarting_its_actor() -> None:
    """New thresholds take effect in place: the actor keeps running, the breaker keeps its
    run of failures and counts."""
    old = api_tree(function_api, corral.BreakerSpec(failures=3, failure_on=(ConnectionError,)))
    new = api_tree(function_api, corral.BreakerSpec(failures=2, failure_on=(ConnectionError,)))
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            assert await call(tree, "down") == "failed: dependency down"
            [before] = tree.statistics().children
            done = await tree.reconfigure(old, new)
            assert done.applied == ("update /api: breakers (in place, running on)",)
            [after] = tree.statistics().children
            assert (after.restarts, after.started_at) == (before.restarts, before.started_at)
            assert after.breakers[0].consecutive == 1
            assert await call(tree, "down") == "failed: dependency down"  # the new threshold
            assert dep_of(tree) is corral.BreakerState.OPEN


async def test_a_reload_that_removes_a_breaker_drops_it() -> None:
    old = api_tree(function_api)
    new = corral.SupervisorSpec([corral.ChildSpec("api", function_api)], intensity=100)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(old) as tree:
            await tree.reconfigure(old, new)
            [child] = tree.statistics().children
            assert child.breakers == ()
            assert tree.services.breakers == {}


async def test_each_child_of_a_pool_has_its_own_breaker() -> None:
    pool = corral.DynamicSupervisorSpec(
        corral.ChildSpec("api", Api, breakers={"dep": DEP}), intensity=100
    )
    spec = corral.SupervisorSpec([corral.ChildSpec("pool", pool)], intensity=100)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            sup = tree.supervisor("/pool")
            await sup.start_child(id="a")
            await sup.start_child(id="b")
            for _ in range(2):
                with pytest.raises(corral.ActorCrashedError):
                    await tree.lookup("/pool/a").call("down")
            assert await tree.lookup("/pool/a").call("x") == "fallback (open)"
            assert await tree.lookup("/pool/b").call("x") == "ok"
            await sup.terminate_child("a")
            assert set(tree.services.breakers) == {"/pool/b"}


# -- through the control socket ----------------------------------------------------------------

TREE = f"""
[supervisor]
intensity = 100
period = 60

[[supervisor.children]]
id = "api"
start = "{__name__}:Api"
breakers.dep = {{ failures = 2, wait = 3600, wait-cap = 3600, jitter = 0, failure-on = [
  "ConnectionError",
] }}

[[supervisor.children]]
id = "echo"
start = "corral.demo:Echo"
"""


async def test_status_why_and_breakers_show_each_breaker(workdir: Path, anyio_backend: str) -> None:
    async with serving(make_daemon(workdir, anyio_backend, TREE)) as running:
        ref = running.tree.lookup("/api")
        for _ in range(2):
            with pytest.raises(corral.ActorCrashedError):
                await ref.call("down")
        conn = await running.connect()
        [api, echo] = (await conn.ok("status"))["children"]
        assert "breakers" not in echo
        [info] = api["breakers"]
        assert info["retry_in"] == pytest.approx(3600, abs=60)
        assert {k: v for k, v in info.items() if k not in ("since", "retry_in")} == {
            "path": "/api",
            "name": "dep",
            "state": "open",
            "failures_in_a_row": 2,
            "window_calls": 2,
            "window_failures": 2,
            "failed": 2,
            "last_failure": "ConnectionError('dependency down')",
        }
        [in_why] = (await conn.ok("why", path="/api"))["breakers"]
        timeless = ("since", "retry_in")
        assert {k: v for k, v in in_why.items() if k not in timeless} == {
            k: v for k, v in info.items() if k not in timeless
        }
        assert [b["name"] for b in await conn.ok("breakers")] == ["dep"]
        assert await conn.ok("breakers", path="/echo") == []
        assert await conn.error("breakers", path="/nope") == (
            "not_found",
            "supervisor '/' has no child 'nope'",
        )


async def test_operators_hold_a_breaker_open_and_reset_it(
    workdir: Path, anyio_backend: str, corral_logger: logging.Logger
) -> None:
    """``corral breaker open`` holds it open (no trial), ``reset`` closes it; both audited and
    published as events; an unknown breaker or path is not_found."""
    stream = io.StringIO()
    setup("json", "info", stream)
    async with serving(make_daemon(workdir, anyio_backend, TREE)) as running:
        ref = running.tree.lookup("/api")
        assert await running.cli("breaker", "open", "/api", "dep") == 0
        assert await ref.call("x") == "fallback (open)"
        [info] = await (await running.connect()).ok("breakers", path="/api")
        assert (info["state"], info["held"], info.get("retry_in")) == ("open", True, None)
        assert await running.cli("breaker", "reset", "/api", "dep") == 0
        assert await ref.call("x") == "ok"
        conn = await running.connect()
        assert await conn.error("breaker", path="/api", name="pricing", action="reset") == (
            "not_found",
            "/api has no breaker 'pricing' (declared: dep)",
        )
        assert await conn.error("breaker", path="/echo", name="dep", action="open") == (
            "not_found",
            "/echo has no breaker 'dep' (declared: none)",
        )
        events = running.log.find(corral.BreakerChanged, "/api")
    assert [(e.state, e.reason) for e in events] == [
        ("open", "held open by an operator (`corral breaker open`)"),
        ("closed", "reset by an operator (`corral breaker reset`)"),
    ]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    audits = [line["message"] for line in lines if line.get("event") == "audit"]
    who = f"audit: uid {os.getuid()} (pid {os.getpid()})"
    assert audits == [
        f"{who} breaker path='/api' name='dep' action='open': ok",
        f"{who} breaker path='/api' name='dep' action='reset': ok",
        f"{who} breaker path='/api' name='pricing' action='reset': error not_found",
        f"{who} breaker path='/echo' name='dep' action='open': error not_found",
    ]
    changes = [line for line in lines if line.get("event") == "breaker-changed"]
    assert [(c["level"], c["breaker"], c["state"], c["message"]) for c in changes] == [
        (
            "warning",
            "dep",
            "open",
            "breaker dep of /api is open: held open by an operator (`corral breaker open`)",
        ),
        (
            "info",
            "dep",
            "closed",
            "breaker dep of /api is closed: reset by an operator (`corral breaker reset`)",
        ),
    ]


async def test_metrics_expose_each_breaker(workdir: Path, anyio_backend: str) -> None:
    async with serving(make_daemon(workdir, anyio_backend, TREE)) as running:
        ref = running.tree.lookup("/api")
        assert await ref.call("x") == "ok"
        for _ in range(2):
            with pytest.raises(corral.ActorCrashedError):
                await ref.call("down")
        assert await ref.call("x") == "fallback (open)"
        text = await (await running.connect()).ok("metrics")
    lines = [line for line in text.splitlines() if line.startswith("corral_breaker")]
    assert lines == [
        'corral_breaker_state{path="/api",breaker="dep",state="closed"} 0',
        'corral_breaker_state{path="/api",breaker="dep",state="open"} 1',
        'corral_breaker_state{path="/api",breaker="dep",state="half-open"} 0',
        'corral_breaker_calls_total{path="/api",breaker="dep",result="success"} 1',
        'corral_breaker_calls_total{path="/api",breaker="dep",result="failure"} 2',
        'corral_breaker_calls_total{path="/api",breaker="dep",result="rejected"} 1',
        'corral_breaker_calls_total{path="/api",breaker="dep",result="ignored"} 0',
        'corral_breaker_transitions_total{path="/api",breaker="dep",to="closed"} 0',
        'corral_breaker_transitions_total{path="/api",breaker="dep",to="open"} 1',
        'corral_breaker_transitions_total{path="/api",breaker="dep",to="half-open"} 0',
    ]


async def test_corral_reload_retunes_a_breaker_and_keeps_its_state(
    workdir: Path, anyio_backend: str
) -> None:
    """The config's thresholds change: `reload` says so, the actor is not restarted, and the
    breaker keeps its run of failures under the new threshold."""
    tree = TREE.replace("failures = 2,", "failures = 3,")
    async with serving(make_daemon(workdir, anyio_backend, tree, from_file=True)) as running:
        ref = running.tree.lookup("/api")
        with pytest.raises(corral.ActorCrashedError):
            await ref.call("down")
        await running.log.wait_for(corral.ChildStarted, "/api", restarts=1)
        path = workdir / "corral.toml"
        path.write_text(path.read_text().replace("failures = 3,", "failures = 2,"))
        result = await (await running.connect()).ok("reload")
        assert result["changes"] == ["update /api: breakers (in place, running on)"]
        [api, _] = running.tree.statistics().children
        assert (api.restarts, api.breakers[0].consecutive) == (1, 1)
        with pytest.raises(corral.ActorCrashedError):
            await ref.call("down")
        await running.log.wait_for(corral.BreakerChanged, "/api")
