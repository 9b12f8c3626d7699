"""A child's own restart limit (max_restarts within max_restarts_period: past it the child
alone is given up, its supervisor goes on) and boot retries (start_retries), on both
backends; and what the daemon shows of a child given up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import corral
from corral.daemon import config
from corral.supervisors.tree import open_tree
from tests.integration.support import HANG_GUARD, EventLog
from tests.integration.test_daemon import make_daemon, serving

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

POISON = 7


async def job(ctx: corral.Context, n: int) -> None:
    """A job of a pool: ready, then done when told; job POISON crashes every time."""
    ctx.started()
    if n == POISON:
        msg = f"job {n}: poison input"
        raise ValueError(msg)
    await ctx.receive()


def pool(max_restarts: int | None) -> corral.SupervisorSpec:
    template = corral.ChildSpec(
        "job",
        job,
        restart=corral.RestartType.TRANSIENT,
        max_restarts=max_restarts,
        max_restarts_period=60.0,
    )
    jobs = corral.DynamicSupervisorSpec(template)  # OTP's intensity: 1 restart in 5 s
    return corral.SupervisorSpec([corral.ChildSpec("jobs", jobs)], intensity=10)


async def start_jobs(tree: corral.Tree, count: int) -> None:
    for n in range(count):
        await tree.supervisor("/jobs").start_child(args={"n": n}, id=f"j{n}")


async def test_a_poison_job_is_given_up_alone() -> None:
    """With max_restarts = 1 the poison job is restarted once, then given up; the pool's
    own intensity is untouched, so its 19 good jobs keep running."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with open_tree(pool(max_restarts=1), observers=[events]) as tree:
            await start_jobs(tree, 20)
            given_up = await events.wait_for(corral.ChildGivenUp, f"/jobs/j{POISON}")
            jobs = tree.supervisor("/jobs")
            assert jobs.count_children().active == 19
            assert f"j{POISON}" not in jobs  # a dynamic supervisor's child: removed
    assert (given_up.supervisor, given_up.restarts, given_up.limit, given_up.period) == (
        "/jobs",
        2,
        1,
        60.0,
    )
    assert events.find(corral.SupervisorGaveUp, "/jobs") == []
    assert len(events.find(corral.ChildExited, f"/jobs/j{POISON}")) == 2


async def test_without_a_limit_the_poison_job_takes_its_pool_down() -> None:
    """The same pool without max_restarts: the poison job's second restart exceeds the pool's
    intensity, which gives up and stops every good job with it (what the limit prevents)."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with open_tree(pool(max_restarts=None), observers=[events]) as tree:
            with pytest.raises(corral.UnknownPathError):  # gone before the last job is added
                await start_jobs(tree, 20)
            await events.wait_for(corral.SupervisorGaveUp, "/jobs")
    assert events.find(corral.ChildGivenUp, f"/jobs/j{POISON}") == []
    assert len(events.find(corral.ChildStopped, "/jobs/j0")) == 1


class Crasher(corral.Actor):
    async def handle(self, message: object) -> object:
        msg = "crashed on purpose"
        raise RuntimeError(msg)


async def test_a_declared_child_given_up_is_left_failed_until_started() -> None:
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("c", Crasher, max_restarts=0), corral.ChildSpec("d", Crasher)],
        intensity=1,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with open_tree(spec, observers=[events]) as tree:
            for _ in range(2):  # the second crash would be past the root's intensity
                tree.lookup("/c").cast_nowait("x")
                await events.wait_for(corral.ChildGivenUp, "/c")
                [c, _] = tree.statistics().children
                assert c.state is corral.ChildStatus.FAILED
                await tree.supervisor().restart_child("c")  # an operator starts it again
                events.events.clear()
    assert events.find(corral.SupervisorGaveUp, "/") == []


def flaky_start(fails: int) -> type[corral.Actor]:
    tries: list[int] = []

    class Flaky(corral.Actor):
        async def on_start(self) -> None:
            tries.append(1)
            if len(tries) <= fails:
                msg = f"port 8080 still held (try {len(tries)})"
                raise OSError(msg)

        async def handle(self, message: object) -> object:
            return message

    return Flaky


async def test_boot_retries_start_a_child_that_failed_to_start() -> None:
    backoff = corral.Backoff(initial=0.001, jitter=0)
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("web", flaky_start(2), start_retries=2, backoff=backoff)]
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with open_tree(spec, observers=[events]) as tree:
            assert await tree.lookup("/web").call("up") == "up"
    assert len(events.find(corral.StartFailed, "/web")) == 2
    assert [e.delay for e in events.find(corral.RestartScheduled, "/web")] == [0.001, 0.002]


async def test_the_boot_fails_once_the_retries_are_spent() -> None:
    spec = corral.SupervisorSpec([corral.ChildSpec("web", flaky_start(2), start_retries=1)])
    with anyio.fail_after(HANG_GUARD), pytest.raises(corral.StartError) as caught:
        async with open_tree(spec):
            pass
    assert str(caught.value) == (
        "supervisor '/': child 'web' failed to start: OSError('port 8080 still held (try 2)')"
        " (after 1 retries)"
    )


async def test_a_stop_ends_the_wait_before_a_retry() -> None:
    """A retry an hour away does not hold up a stop asked for meanwhile."""
    long = corral.Backoff(initial=3600.0, cap=3600.0, jitter=0)
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("web", flaky_start(5), start_retries=3, backoff=long)]
    )
    with anyio.fail_after(HANG_GUARD), anyio.CancelScope() as scope:

        def stop_when_waiting(event: corral.Event) -> None:
            if isinstance(event, corral.RestartScheduled):
                scope.cancel()

        async with open_tree(spec, observers=[stop_when_waiting]):
            pytest.fail("the boot cannot finish: the child keeps failing")
    assert scope.cancelled_caught


def test_config_keys_and_their_errors() -> None:
    text = """
[[supervisor.children]]
id = "c"
start = "tests.integration.test_restart_limits:Crasher"
max-restarts = 3
max-restarts-period = 30
start-retries = 2
"""
    [child] = config.parse(text, "corral.toml").spec.children
    assert (child.max_restarts, child.max_restarts_period, child.start_retries) == (3, 30.0, 2)
    with pytest.raises(corral.SpecError, match="max_restarts must be an integer >= 0, got -1"):
        corral.ChildSpec("c", Crasher, max_restarts=-1)
    with pytest.raises(corral.SpecError, match=r"start_retries must be an integer >= 0, got 1\.5"):
        corral.ChildSpec("c", Crasher, start_retries=1.5)  # type: ignore[arg-type]  # on purpose


async def test_a_reload_changes_a_restart_limit_in_place() -> None:
    old = corral.SupervisorSpec([corral.ChildSpec("c", Crasher, max_restarts=3)])
    new = corral.SupervisorSpec([corral.ChildSpec("c", Crasher, max_restarts=0)])
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with open_tree(old, observers=[events]) as tree:
            done = await tree.reconfigure(old, new)
            assert done.applied == ("update /c: max_restarts (in place, running on)",)
            tree.lookup("/c").cast_nowait("x")
            await events.wait_for(corral.ChildGivenUp, "/c")  # the new limit: at once


TREE = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "c"
start = "tests.integration.test_restart_limits:Crasher"
max-restarts = 0
"""


async def test_the_daemon_counts_and_tells_a_child_given_up(
    workdir: Path, anyio_backend: str
) -> None:
    async with serving(make_daemon(workdir, anyio_backend, TREE)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/c")
        await running.log.wait_for(corral.ChildGivenUp, "/c")
        [c] = (await conn.ok("status"))["children"]
        assert c["state"] == "failed"
        text = await conn.ok("metrics")
        [event] = [
            e
            for e in await conn.ok("events", recent=100, follow=False)
            if e["event"] == "child-given-up"
        ]
    assert 'corral_child_given_up_total{path="/c"} 1' in text.splitlines()
    assert event["reason"] == "1 exits within 5.0 s (its max_restarts 0); / goes on"
