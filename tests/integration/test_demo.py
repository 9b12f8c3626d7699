"""The embedded demo tree (``corral run`` without a file): its actors behave as described."""

from __future__ import annotations

import anyio
import attrs
import pytest

import corral
from corral import demo
from corral.daemon import config
from tests.integration.support import HANG_GUARD, EventLog

pytestmark = pytest.mark.anyio


def demo_spec() -> corral.SupervisorSpec:
    return config.load_demo().spec


async def test_demo_tree_starts_and_answers() -> None:
    """The demo starts its children in order; ticker and flaky count, echo echoes."""
    log = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(demo_spec()) as tree:
            tree.events.subscribe(log)
            assert [c.path for c in tree.statistics().children] == [
                "/ticker",
                "/flaky",
                "/echo",
                "/group",
            ]
            ticks = await tree.lookup("/ticker").call("count")
            assert isinstance(ticks, int)
            assert ticks >= 0
            done = await tree.lookup("/flaky").call("count")
            assert isinstance(done, int)
            assert await tree.lookup("/echo").call("hi") == "hi"
            assert await tree.lookup("/echo").call({"n": 1}) == {"n": 1}
            assert await tree.lookup("/group/follower").call("x") == "x"
            assert await tree.lookup("/group/leader").call("anything") == "ok"
    assert log.summary(corral.ChildStopped) == [
        ("ChildStopped", "/group/follower"),
        ("ChildStopped", "/group/leader"),
        ("ChildStopped", "/group"),
        ("ChildStopped", "/echo"),
        ("ChildStopped", "/flaky"),
        ("ChildStopped", "/ticker"),
    ]


async def test_leader_failure_restarts_its_follower() -> None:
    """A leader that fails on "fail" is restarted with its follower (rest-for-one)."""
    log = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(demo_spec()) as tree:
            tree.events.subscribe(log)
            with pytest.raises(corral.ActorCrashedError):
                await tree.lookup("/group/leader").call("fail")
            await log.wait_for(corral.ChildStarted, "/group/follower", restarts=1)
            assert log.summary(corral.ChildExited, corral.ChildStopped, corral.ChildStarted) == [
                ("ChildExited", "/group/leader"),
                ("ChildStopped", "/group/follower"),
                ("ChildStarted", "/group/leader"),
                ("ChildStarted", "/group/follower"),
            ]
            (exited,) = log.find(corral.ChildExited, "/group/leader")
            assert repr(exited.exception) == "RuntimeError('leader failed on purpose')"
            assert [e.path for e in log.find(corral.ChildStarted, "/echo")] == []  # untouched


async def test_flaky_crashes_and_is_restarted_with_backoff() -> None:
    """flaky, made to crash on every unit, is restarted after growing backoff delays."""
    spec = demo_spec()
    flaky = next(c for c in spec.children if c.id == "flaky")
    assert flaky.start is demo.flaky
    assert flaky.backoff is not None
    always = attrs.evolve(
        flaky,
        args={**flaky.args, "interval": 0.001, "crash_chance": 1.0},
        backoff=attrs.evolve(flaky.backoff, initial=0.02),
    )
    spec = attrs.evolve(
        spec, children=tuple(always if c.id == "flaky" else c for c in spec.children)
    )
    log = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec, random=lambda: 0.0) as tree:  # no jitter
            tree.events.subscribe(log)
            await log.wait_for(corral.ChildStarted, "/flaky", restarts=2)
    exits = log.find(corral.ChildExited, "/flaky")
    assert {repr(e.exception) for e in exits} == {"RuntimeError('flaky worker failed on unit 1')"}
    # Each restart-scheduled is followed by the start it announced: the n-th restart waits
    # initial * 2 ** (n - 1) (the demo's multiplier; no jitter).
    waits = []
    delay = None
    for event in log.events:
        if isinstance(event, corral.RestartScheduled) and event.path == "/flaky":
            delay = event.delay
        elif isinstance(event, corral.ChildStarted) and event.path == "/flaky" and delay:
            waits.append((event.restarts, delay))
    assert (2, 0.04) in waits
    assert all(delay == 0.02 * 2 ** (n - 1) for n, delay in waits)
