"""Restart decisions carried out: strategies, restart types, intensity, auto-shutdown."""

from __future__ import annotations

import anyio
import pytest

import corral
from tests.integration.support import (
    HANG_GUARD,
    Boom,
    EventLog,
    Lifecycle,
    Worker,
    crash_until_cancelled,
    open_until_cancelled,
)

pytestmark = pytest.mark.anyio

PERMANENT = corral.RestartType.PERMANENT
TRANSIENT = corral.RestartType.TRANSIENT
TEMPORARY = corral.RestartType.TEMPORARY
RUNNING = corral.ChildStatus.RUNNING
STOPPED = corral.ChildStatus.STOPPED


async def exits_on_request(ctx: corral.Context) -> None:
    """A function actor: ``"return"`` makes it return normally, ``"raise"`` raise ``Boom``."""
    async for message in ctx:
        if message == "return":
            return
        if message == "raise":
            msg = "asked to"
            raise Boom(msg)


async def crashes_when_let(ctx: corral.Context, *, gate: anyio.Event) -> None:
    """A function actor that signals readiness, waits for *gate* and then raises."""
    ctx.started()
    await gate.wait()
    msg = "crashed when let"
    raise Boom(msg)


async def returns_at_once(ctx: corral.Context, *, log: list[str]) -> None:
    """A function actor that logs and returns without waiting for anything."""
    log.append("returned")


class StartsOnce(corral.Actor):
    """Starts the first time only; every later on_start raises. ``"crash"`` raises."""

    def __init__(self, starts: list[str]) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append("start")
        if len(self.starts) > 1:
            msg = "cannot restart"
            raise Boom(msg)

    async def handle(self, message: object) -> object:
        msg = "crash"
        raise Boom(msg)


def statuses(sup: corral.SupervisorRef) -> dict[str, corral.ChildStatus]:
    return {info.id: info.status for info in sup.which_children()}


STRATEGY_CASES = [
    pytest.param(
        corral.Strategy.ONE_FOR_ONE,
        "/b",
        [("ChildStarted", "/b")],
        id="one-for-one",
    ),
    pytest.param(
        corral.Strategy.ONE_FOR_ALL,
        "/c",
        [
            ("ChildStopped", "/c"),
            ("ChildStopped", "/a"),
            ("ChildStarted", "/a"),
            ("ChildStarted", "/b"),
            ("ChildStarted", "/c"),
        ],
        id="one-for-all",
    ),
    pytest.param(
        corral.Strategy.REST_FOR_ONE,
        "/c",
        [("ChildStopped", "/c"), ("ChildStarted", "/b"), ("ChildStarted", "/c")],
        id="rest-for-one",
    ),
]


@pytest.mark.parametrize(("strategy", "last", "expected"), STRATEGY_CASES)
async def test_strategy_decides_which_siblings_restart(
    strategy: corral.Strategy, last: str, expected: list[tuple[str, str]]
) -> None:
    """When b of a, b, c crashes, the strategy's siblings stop in reverse and all start in order."""
    spec = corral.SupervisorSpec(
        [corral.ChildSpec(name, Worker, args={"name": name}) for name in "abc"],
        strategy=strategy,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            tree.lookup("/b").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, last, restarts=1)
            await anyio.wait_all_tasks_blocked()
    kinds = (corral.ChildExited, corral.RestartScheduled, corral.ChildStopped, corral.ChildStarted)
    assert events.summary(*kinds)[: 2 + len(expected)] == [
        ("ChildExited", "/b"),
        ("RestartScheduled", "/b"),
        *expected,
    ]


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        pytest.param(corral.Strategy.ONE_FOR_ALL, ("t", "b"), id="one-for-all"),
        pytest.param(corral.Strategy.REST_FOR_ONE, ("b", "t"), id="rest-for-one"),
    ],
)
async def test_multi_child_restart_stops_and_forgets_a_temporary_sibling(
    strategy: corral.Strategy, order: tuple[str, str]
) -> None:
    """A restart that takes in a running temporary sibling stops it and forgets it (OTP)."""
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                name,
                Worker,
                args={"name": name},
                restart=TEMPORARY if name == "t" else PERMANENT,
            )
            for name in order
        ],
        strategy=strategy,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            tree.lookup("/b").cast_nowait("crash")
            await anyio.wait_all_tasks_blocked()  # no delay: the restart is done
            assert statuses(tree.supervisor()) == {"b": RUNNING}
            assert events.summary(corral.ChildStopped, corral.ChildStarted) == [
                ("ChildStopped", "/t"),
                ("ChildStarted", "/b"),
            ]


class Quiet(corral.Actor):
    """A class actor with neither on_start nor on_stop: stopping it runs nothing of it;
    ``"crash"`` raises ``Boom``."""

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise Boom(message)
        return message


class StopsAfter(corral.Actor):
    """Has on_stop: records which of *watched* had stopped (by ChildStopped) when it ran."""

    def __init__(self, events: EventLog, seen: list[list[str]]) -> None:
        self.events = events
        self.seen = seen

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        stopped = [e.path for e in self.events.events if isinstance(e, corral.ChildStopped)]
        self.seen.append(stopped)


@pytest.mark.parametrize(
    "strategy", [corral.Strategy.ONE_FOR_ALL, corral.Strategy.REST_FOR_ONE], ids=str
)
async def test_group_restart_stops_idle_siblings_together_in_reverse_order(
    strategy: corral.Strategy,
) -> None:
    """A group restart stops idle quiet siblings as batches, yet in OTP's order: the events
    come in reverse start order, and a sibling with on_stop runs it after every later
    sibling has stopped and before any earlier one."""
    events = EventLog()
    seen: list[list[str]] = []
    names = ["crasher", "q1", "q2", "mid", "q3", "q4"]
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(n, StopsAfter, args={"events": events, "seen": seen})
            if n == "mid"
            else corral.ChildSpec(n, Quiet)
            for n in names
        ],
        strategy=strategy,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            for name in names:  # every one awake: each has a task parked on its mailbox
                assert await tree.lookup(f"/{name}").call("ping") == "ping"
            tree.events.subscribe(events)
            tree.lookup("/crasher").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/q4", restarts=1)
            assert statuses(tree.supervisor()) == dict.fromkeys(names, RUNNING)
            assert events.summary(corral.ChildStopped) == [
                ("ChildStopped", f"/{n}") for n in reversed(names[1:])
            ]
            assert seen == [["/q4", "/q3"]]
            assert events.summary(corral.ChildStarted) == [("ChildStarted", f"/{n}") for n in names]
            # restarted, they work: queued messages and new ones reach the new incarnations
            assert await tree.lookup("/q2").call("again") == "again"


class StartsQuietly(corral.Actor):
    """Has on_start (every incarnation has a task from its start) and no on_stop (a group
    restart stops it in a batch); records the id of the task each incarnation runs in."""

    def __init__(self, tasks: list[int]) -> None:
        self.tasks = tasks

    async def on_start(self) -> None:
        self.tasks.append(anyio.get_current_task().id)

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise Boom(message)
        return message


@pytest.mark.parametrize(
    "strategy", [corral.Strategy.ONE_FOR_ALL, corral.Strategy.REST_FOR_ONE], ids=str
)
async def test_group_restart_starts_quiet_siblings_again_in_their_own_tasks(
    strategy: corral.Strategy,
) -> None:
    """A sibling with on_start stopped in a restart's batch comes back in the task it ran in
    (its runner waits for the restart instead of ending): on_start runs again, messages
    reach the new incarnation, and the tasks still end with the tree."""
    names = ["crasher", "a", "b"]
    tasks: dict[str, list[int]] = {name: [] for name in names}
    spec = corral.SupervisorSpec(
        [corral.ChildSpec(n, StartsQuietly, args={"tasks": tasks[n]}) for n in names],
        strategy=strategy,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            tree.lookup("/crasher").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/b", restarts=1)
            assert statuses(tree.supervisor()) == dict.fromkeys(names, RUNNING)
            assert events.summary(corral.ChildStopped) == [
                ("ChildStopped", "/b"),
                ("ChildStopped", "/a"),
            ]
            for name in names:
                first, again = tasks[name]  # on_start ran twice, in the same task
                assert first == again, name
            assert len({task for name in names for task in tasks[name]}) == 3
            assert await tree.lookup("/a").call("again") == "again"


async def test_quiet_sibling_waiting_for_a_restart_that_gives_up_ends() -> None:
    """A quiet sibling stopped by a group restart that never gets to start it (the restart
    fails and the supervisor gives up) is not started again, and nothing hangs."""
    starts: list[str] = []
    tasks: list[int] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("boot", StartsOnce, args={"starts": starts}),
            corral.ChildSpec("idle", StartsQuietly, args={"tasks": tasks}),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
        intensity=1,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD), pytest.raises(corral.SupervisorGaveUpError):
        await crash_until_cancelled(spec, "/boot", events)
    assert ("ChildStopped", "/idle") in events.summary(corral.ChildStopped)
    assert len(tasks) == 1  # started once, never again
    assert starts == ["start", "start"]  # boot's restart failed


async def test_one_for_all_restart_also_starts_a_stopped_sibling() -> None:
    """A one-for-all restart starts again a transient sibling that had returned (as OTP)."""
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("s", exits_on_request, restart=TRANSIENT),
            corral.ChildSpec("b", Worker, args={"name": "b"}),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/s").cast("return")
            await events.wait_for(corral.ChildExited, "/s")
            tree.lookup("/b").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/b", restarts=1)
            assert statuses(tree.supervisor()) == {"s": RUNNING, "b": RUNNING}
            assert events.summary(corral.ChildStarted) == [
                ("ChildStarted", "/s"),
                ("ChildStarted", "/b"),
            ]


async def test_child_stopped_by_its_supervisor_reports_no_exit() -> None:
    """A child stopped by its supervisor is reported ChildStopped, never ChildExited."""
    events = EventLog()
    spec = corral.SupervisorSpec([corral.ChildSpec("w", exits_on_request)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.supervisor().terminate_child("w")
            await anyio.wait_all_tasks_blocked()
    assert events.summary(corral.ChildExited, corral.ChildStopped) == [("ChildStopped", "/w")]


@pytest.mark.parametrize(
    ("restart", "request_", "kind", "restarted", "status"),
    [
        pytest.param(
            PERMANENT, "return", corral.ExitKind.NORMAL, True, RUNNING, id="permanent-normal"
        ),
        pytest.param(
            PERMANENT, "raise", corral.ExitKind.ERROR, True, RUNNING, id="permanent-error"
        ),
        pytest.param(
            TRANSIENT, "return", corral.ExitKind.NORMAL, False, STOPPED, id="transient-normal"
        ),
        pytest.param(
            TRANSIENT, "raise", corral.ExitKind.ERROR, True, RUNNING, id="transient-error"
        ),
        pytest.param(
            TEMPORARY, "return", corral.ExitKind.NORMAL, False, None, id="temporary-normal"
        ),
        pytest.param(TEMPORARY, "raise", corral.ExitKind.ERROR, False, None, id="temporary-error"),
    ],
)
async def test_restart_type_and_exit_kind_decide_restart(
    restart: corral.RestartType,
    request_: str,
    kind: corral.ExitKind,
    restarted: bool,
    status: corral.ChildStatus | None,
) -> None:
    """Permanent always restarts, transient only after an error, temporary never (removed)."""
    spec = corral.SupervisorSpec([corral.ChildSpec("w", exits_on_request, restart=restart)])
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/w").cast(request_)
            exited = await events.wait_for(corral.ChildExited, "/w")
            await anyio.wait_all_tasks_blocked()
            assert exited.kind is kind
            assert bool(events.find(corral.ChildStarted, "/w", restarts=1)) is restarted
            assert statuses(tree.supervisor()).get("w") is status


async def test_temporary_child_is_forgotten_after_exit() -> None:
    """A temporary child that exited is gone from which_children and from lookup."""
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("keep", Worker, args={"name": "keep"}),
            corral.ChildSpec("w", exits_on_request, restart=TEMPORARY),
        ]
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/w").cast("return")
            await events.wait_for(corral.ChildExited, "/w")
            await anyio.wait_all_tasks_blocked()
            assert [info.id for info in tree.supervisor().which_children()] == ["keep"]
            with pytest.raises(corral.UnknownPathError, match=r"^no actor at '/w'$"):
                tree.lookup("/w")


async def test_transient_child_that_returned_refuses_messages() -> None:
    """A transient child that returned normally stays stopped and refuses new messages."""
    spec = corral.SupervisorSpec([corral.ChildSpec("w", exits_on_request, restart=TRANSIENT)])
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/w")
            await ref.cast("return")
            await events.wait_for(corral.ChildExited, "/w")
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(corral.ActorNotRunningError, match=r"^actor /w is not running$"):
                await ref.cast("hello")


# -- restart intensity ---------------------------------------------------------------------


async def test_root_gives_up_past_its_intensity() -> None:
    """Over ``intensity`` restarts within ``period`` make open_tree raise SupervisorGaveUpError."""
    spec = corral.SupervisorSpec([corral.ChildSpec("a", Worker, args={"name": "a"})], intensity=1)
    events = EventLog()

    async def crash_twice(tree: corral.Tree) -> None:
        tree.events.subscribe(events)
        tree.lookup("/a").cast_nowait("crash")
        await events.wait_for(corral.ChildStarted, "/a", restarts=1)
        tree.lookup("/a").cast_nowait("crash")

    with (
        anyio.fail_after(HANG_GUARD),
        pytest.raises(
            corral.SupervisorGaveUpError,
            match=r"^supervisor '/' gave up: 2 restarts within 5\.0 s \(limit 1\), last of /a$",
        ) as caught,
    ):
        await open_until_cancelled(spec, crash_twice)
    assert (caught.value.supervisor, caught.value.restarts, caught.value.period) == ("/", 2, 5.0)


async def test_root_giving_up_publishes_supervisor_gave_up() -> None:
    """A root that exceeds its intensity publishes SupervisorGaveUp naming the crashing child."""
    spec = corral.SupervisorSpec([corral.ChildSpec("a", Worker, args={"name": "a"})], intensity=0)
    events = EventLog()
    with anyio.fail_after(HANG_GUARD), pytest.raises(corral.SupervisorGaveUpError):
        await crash_until_cancelled(spec, "/a", events)
    [gave_up] = events.find(corral.SupervisorGaveUp, "/")
    assert (gave_up.child, gave_up.restarts, gave_up.intensity, gave_up.period) == (
        "a",
        1,
        0,
        5.0,
    )


async def test_failing_restarts_count_against_intensity() -> None:
    """A child failing to restart is retried, each attempt counted, until the root gives up."""
    starts: list[str] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("a", StartsOnce, args={"starts": starts})], intensity=2
    )
    events = EventLog()
    with (
        anyio.fail_after(HANG_GUARD),
        pytest.raises(
            corral.SupervisorGaveUpError,
            match=r"^supervisor '/' gave up: 3 restarts within 5\.0 s \(limit 2\), last of /a$",
        ),
    ):
        await crash_until_cancelled(spec, "/a", events)
    assert len(starts) == 3  # the boot, then two failed restarts
    assert len(events.find(corral.StartFailed, "/a")) == 2


async def test_run_raises_gave_up_error() -> None:
    """``corral.run`` raises SupervisorGaveUpError when the root exceeds its intensity."""
    gate = anyio.Event()
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("a", crashes_when_let, args={"gate": gate})], intensity=0
    )

    async def run_tree() -> None:
        with pytest.raises(corral.SupervisorGaveUpError, match=r"^supervisor '/' gave up: "):
            await corral.run(spec)

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_tree)
            await anyio.wait_all_tasks_blocked()  # run() waits for its root to exit
            gate.set()


def nested(restart: corral.RestartType, root_intensity: int = 3) -> corral.SupervisorSpec:
    """Root with ``sub`` (intensity 0, one worker ``a``) and a worker ``other``."""
    sub = corral.SupervisorSpec([corral.ChildSpec("a", Worker, args={"name": "a"})], intensity=0)
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("sub", sub, restart=restart),
            corral.ChildSpec("other", Worker, args={"name": "other"}),
        ],
        intensity=root_intensity,
    )


async def test_nested_supervisor_giving_up_exits_shutdown_to_its_parent() -> None:
    """A sub-supervisor that gives up publishes SupervisorGaveUp, escalates and exits SHUTDOWN,
    saying why: the limit, and the child's exit that exceeded it as the cause."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(nested(TRANSIENT)) as tree:
            tree.events.subscribe(events)
            tree.lookup("/sub/a").cast_nowait("crash")
            exited = await events.wait_for(corral.ChildExited, "/sub")
    kinds = (corral.SupervisorGaveUp, corral.SupervisorEscalated, corral.ChildExited)
    assert events.summary(*kinds) == [
        ("ChildExited", "/sub/a"),
        ("SupervisorGaveUp", "/sub"),
        ("SupervisorEscalated", "/sub"),
        ("ChildExited", "/sub"),
    ]
    assert exited.kind is corral.ExitKind.SHUTDOWN
    error = exited.exception
    assert isinstance(error, corral.SupervisorGaveUpError)
    assert str(error) == (
        "supervisor '/sub' gave up: 1 restarts within 5.0 s (limit 0), last of /sub/a"
    )
    assert (error.supervisor, error.child, error.restarts, error.intensity) == (
        "/sub",
        "/sub/a",
        1,
        0,
    )
    assert repr(error.__cause__) == "Boom('a crashed')"


async def test_permanent_sub_supervisor_that_gave_up_is_restarted_and_counted() -> None:
    """A permanent sub-supervisor that gave up is restarted by its parent, counted as a restart."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(nested(PERMANENT)) as tree:
            tree.events.subscribe(events)
            tree.lookup("/sub/a").cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/sub", restarts=1)
            stats = {c.id: c for c in tree.statistics().children}
            assert (stats["sub"].restarts, stats["sub"].state) == (1, RUNNING)
            assert tree.statistics().restarts_remaining == 2
            assert await tree.lookup("/sub/a").call("again") == "again"


async def test_actor_ref_survives_its_parent_supervisors_restart() -> None:
    """An ActorRef taken before its parent supervisor was restarted reaches the new actor."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(nested(PERMANENT)) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/sub/a")
            ref.cast_nowait("crash")
            await events.wait_for(corral.ChildStarted, "/sub", restarts=1)
            assert await ref.call("same ref") == "same ref"


async def test_transient_sub_supervisor_that_gave_up_is_not_restarted() -> None:
    """A transient sub-supervisor that gave up stays stopped while its siblings run on."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(nested(TRANSIENT)) as tree:
            tree.events.subscribe(events)
            tree.lookup("/sub/a").cast_nowait("crash")
            await events.wait_for(corral.ChildExited, "/sub")
            await anyio.wait_all_tasks_blocked()
            assert statuses(tree.supervisor()) == {"sub": STOPPED, "other": RUNNING}
            assert events.find(corral.ChildStarted, "/sub") == []
            with pytest.raises(corral.UnknownPathError, match=r"^no running supervisor at '/sub'$"):
                tree.supervisor("/sub")
            assert await tree.lookup("/other").call("still here") == "still here"


async def test_escalation_reaches_the_root() -> None:
    """A sub-supervisor's give-up counts against the root, which gives up past its own intensity."""
    with (
        anyio.fail_after(HANG_GUARD),
        pytest.raises(
            corral.SupervisorGaveUpError,
            match=r"^supervisor '/' gave up: 1 restarts within 5\.0 s \(limit 0\), last of /sub$",
        ),
    ):
        await crash_until_cancelled(nested(PERMANENT, root_intensity=0), "/sub/a")


# -- auto-shutdown -------------------------------------------------------------------------


def significant_tree(auto_shutdown: corral.AutoShutdown, log: list[str]) -> corral.SupervisorSpec:
    """A plain ``keeper`` and two transient significant children ``s1`` and ``s2``."""
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("keeper", Lifecycle, args={"name": "keeper", "log": log}),
            corral.ChildSpec("s1", exits_on_request, restart=TRANSIENT, significant=True),
            corral.ChildSpec("s2", exits_on_request, restart=TRANSIENT, significant=True),
        ],
        auto_shutdown=auto_shutdown,
    )


async def test_any_significant_shuts_down_when_one_significant_child_returns() -> None:
    """With any-significant, one significant child returning normally shuts the tree down."""
    log: list[str] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            significant_tree(corral.AutoShutdown.ANY_SIGNIFICANT, log)
        ) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/s1").cast("return")
            await tree.wait()
    assert [e.child for e in events.find(corral.SupervisorAutoShutdown, "/")] == ["s1"]
    assert log == ["start keeper", "stop keeper"]


async def test_all_significant_waits_for_every_significant_child() -> None:
    """With all-significant, the tree shuts down only after the last significant child returns."""
    log: list[str] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            significant_tree(corral.AutoShutdown.ALL_SIGNIFICANT, log)
        ) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/s1").cast("return")
            await events.wait_for(corral.ChildExited, "/s1")
            await anyio.wait_all_tasks_blocked()
            assert events.find(corral.SupervisorAutoShutdown, "/") == []
            assert await tree.lookup("/keeper").call("alive") == "alive"
            await tree.lookup("/s2").cast("return")
            await tree.wait()
    assert [e.child for e in events.find(corral.SupervisorAutoShutdown, "/")] == ["s2"]


async def test_terminate_child_never_triggers_auto_shutdown() -> None:
    """Terminating a significant child does not shut its supervisor down."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            significant_tree(corral.AutoShutdown.ANY_SIGNIFICANT, [])
        ) as tree:
            tree.events.subscribe(events)
            await tree.supervisor().terminate_child("s1")
            await anyio.wait_all_tasks_blocked()
            assert events.find(corral.SupervisorAutoShutdown, "/") == []
            assert statuses(tree.supervisor())["s1"] is STOPPED
            assert await tree.lookup("/keeper").call("alive") == "alive"


async def test_significant_child_that_crashes_is_restarted_not_shut_down() -> None:
    """A transient significant child that raises is restarted; auto-shutdown is for normal exits."""
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            significant_tree(corral.AutoShutdown.ANY_SIGNIFICANT, [])
        ) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/s1").cast("raise")
            await events.wait_for(corral.ChildStarted, "/s1", restarts=1)
            assert events.find(corral.SupervisorAutoShutdown, "/") == []


@pytest.mark.parametrize(
    ("restart", "restarted"),
    [pytest.param(PERMANENT, True, id="permanent"), pytest.param(TRANSIENT, False, id="transient")],
)
async def test_nested_auto_shutdown_exits_shutdown_to_the_parent(
    restart: corral.RestartType, restarted: bool
) -> None:
    """A sub-supervisor's auto-shutdown is a SHUTDOWN exit: permanent restarts, transient not."""
    sub = corral.SupervisorSpec(
        [corral.ChildSpec("s", exits_on_request, restart=TRANSIENT, significant=True)],
        auto_shutdown=corral.AutoShutdown.ANY_SIGNIFICANT,
    )
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("sub", sub, restart=restart),
            corral.ChildSpec("other", Worker, args={"name": "other"}),
        ]
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            await tree.lookup("/sub/s").cast("return")
            exited = await events.wait_for(corral.ChildExited, "/sub")
            await anyio.wait_all_tasks_blocked()
            assert [e.child for e in events.find(corral.SupervisorAutoShutdown, "/sub")] == ["s"]
            assert exited.kind is corral.ExitKind.SHUTDOWN
            assert bool(events.find(corral.ChildStarted, "/sub", restarts=1)) is restarted
            assert await tree.lookup("/other").call("alive") == "alive"


async def test_run_returns_after_auto_shutdown() -> None:
    """``corral.run`` returns once its root shuts itself down."""
    log: list[str] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "once", returns_at_once, args={"log": log}, restart=TRANSIENT, significant=True
            )
        ],
        auto_shutdown=corral.AutoShutdown.ANY_SIGNIFICANT,
    )
    with anyio.fail_after(HANG_GUARD):
        await corral.run(spec)
    assert log == ["returned"]
