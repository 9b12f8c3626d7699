"""Health probes of actors and the handling timeout, on both backends: failed probes in a
row crash the actor with UnhealthyError (and it is restarted), a passing probe resets the
count, probes never overlap and end with their incarnation; a message handled past
handle_timeout is cut short, kept as a dead letter (timeout) and crashes the actor."""

from __future__ import annotations

import anyio
import msgspec
import pytest

import corral
from corral.daemon import cli, config, view
from tests.integration.support import HANG_GUARD, EventLog

pytestmark = pytest.mark.anyio

FAST = 0.001  # seconds between probes: the tests wait for events, never for time


class Probed(corral.Actor):
    """Answers its probes from *answers* ("ok", "false", "raise", "hang", "slow") in turn,
    then "ok"; logs (incarnation, answer) of each probe, and the most at once."""

    incarnations = 0

    def __init__(self, answers: list[str], log: list[tuple[int, str]], busy: list[int]) -> None:
        self.answers, self.log, self.busy = answers, log, busy
        self.running = 0

    async def on_start(self) -> None:
        Probed.incarnations += 1
        self.me = Probed.incarnations

    async def handle(self, message: object) -> object:
        if message == "hang":
            await anyio.sleep_forever()
        return message

    async def health(self) -> bool | None:
        answer = self.answers.pop(0) if self.answers else "ok"
        self.log.append((self.me, answer))
        self.running += 1
        self.busy.append(self.running)
        try:
            if answer == "raise":
                msg = "database unreachable"
                raise ConnectionError(msg)
            if answer == "hang":
                await anyio.sleep_forever()
            if answer == "slow":
                await anyio.sleep(0.01)  # longer than the interval, within the timeout
            return answer != "false"
        finally:
            self.running -= 1


def probed_tree(
    answers: list[str],
    log: list[tuple[int, str]],
    busy: list[int] | None = None,
    **health: float,
) -> corral.SupervisorSpec:
    spec = corral.HealthSpec(**{"interval": FAST, "timeout": 1.0, "failures": 2, **health})  # type: ignore[arg-type]  # floats and an int
    args = {"answers": answers, "log": log, "busy": [] if busy is None else busy}
    return corral.SupervisorSpec(
        [corral.ChildSpec("db", Probed, args=args, health=spec)], intensity=10
    )


async def test_failed_probes_in_a_row_crash_the_actor_and_it_restarts() -> None:
    """false, ok, raise, false: the pass in between resets the count, so the crash comes at
    the fourth probe, with UnhealthyError naming the last failure."""
    log: list[tuple[int, str]] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(probed_tree(["false", "ok", "raise", "false"], log)) as tree:
            tree.events.subscribe(events)
            exited = await events.wait_for(corral.ChildExited, "/db")
            await events.wait_for(corral.ChildStarted, "/db", restarts=1)
    assert isinstance(exited.exception, corral.UnhealthyError)
    assert str(exited.exception) == (
        "actor /db is unhealthy: 2 probes failed in a row, last: health() returned False"
    )
    first = [answer for incarnation, answer in log if incarnation == log[0][0]]
    assert first == ["false", "ok", "raise", "false"]


async def test_a_probe_that_does_not_return_in_time_fails() -> None:
    log: list[tuple[int, str]] = []
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(probed_tree(["hang"], log, timeout=0.01, failures=1)) as tree:
            tree.events.subscribe(events)
            exited = await events.wait_for(corral.ChildExited, "/db")
    assert str(exited.exception) == (
        "actor /db is unhealthy: 1 probe failed in a row, last: health() did not return"
        " within 0.01 s"
    )


async def test_probes_never_overlap_and_end_with_their_incarnation() -> None:
    """Slow probes (longer than the interval) run one at a time; after a crash, no probe of
    the old incarnation comes once the new one's have begun."""
    log: list[tuple[int, str]] = []
    busy: list[int] = []
    answers = ["slow"] * 5 + ["raise", "raise"] + ["slow"] * 5
    twelve = anyio.Event()

    class Counted(Probed):
        async def health(self) -> bool | None:
            try:
                return await super().health()
            finally:
                if len(log) == 12:  # the new incarnation's slow probes are done
                    twelve.set()

    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "db",
                Counted,
                args={"answers": answers, "log": log, "busy": busy},
                health=corral.HealthSpec(interval=FAST, timeout=1.0, failures=2),
            )
        ],
        intensity=10,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec):
            await twelve.wait()
    assert max(busy) == 1
    incarnations = [incarnation for incarnation, _ in log]
    assert incarnations == sorted(incarnations)


async def test_why_tells_the_failing_probes() -> None:
    log: list[tuple[int, str]] = []
    seen = anyio.Event()

    class Watched(Probed):
        async def health(self) -> bool | None:
            if len(log) == 1:
                seen.set()  # the first probe has failed: its count is on the cell
            return await super().health()

    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "db",
                Watched,
                args={"answers": ["raise", "hang"], "log": log, "busy": []},
                health=corral.HealthSpec(interval=FAST, timeout=3600, failures=3),
            )
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            await seen.wait()
            [child] = tree.statistics().children
            why = msgspec.to_builtins(view.why(tree, "/db"))
    assert child.probe_failure == (1, "ConnectionError: database unreachable")
    said = "failed probes in a row: 1, last: ConnectionError: database unreachable"
    assert why["health"] == said
    assert f"  health: {said}" in cli.render_why(why)


async def test_an_actor_with_probes_runs_from_its_start() -> None:
    """Without on_start it would wait dormant for a message; probed, it runs at once."""
    log: list[tuple[int, str]] = []
    probed = anyio.Event()

    class Plain(corral.Actor):
        async def handle(self, message: object) -> object:
            return message

        async def health(self) -> bool | None:
            log.append((0, "ok"))
            probed.set()
            return True

    spec = corral.SupervisorSpec(
        [corral.ChildSpec("p", Plain, health=corral.HealthSpec(interval=FAST))]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec):
            await probed.wait()
    assert log[0] == (0, "ok")


async def test_a_message_past_handle_timeout_is_a_dead_letter_and_a_crash() -> None:
    events = EventLog()
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "db",
                Probed,
                args={"answers": [], "log": [], "busy": []},
                handle_timeout=0.01,
            )
        ],
        intensity=10,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/db")
            assert await ref.call("quick") == "quick"
            with pytest.raises(corral.ActorCrashedError) as caught:
                await ref.call("hang")
            await events.wait_for(corral.ChildStarted, "/db", restarts=1)
            assert await ref.call("again") == "again"
            [letter] = tree.dead_letters("/db")
    assert isinstance(caught.value.__cause__, corral.HandleTimeoutError)
    assert (letter.message, letter.reason) == ("hang", "timeout")
    assert str(letter.exception) == (
        "actor /db took longer than its handle_timeout (0.01 s) to handle a message"
    )
    [exited] = events.find(corral.ChildExited, "/db")
    assert isinstance(exited.exception, corral.HandleTimeoutError)


async def function_actor(ctx: corral.Context) -> None:
    ctx.started()


class NoProbe(corral.Actor):
    async def handle(self, message: object) -> object:
        return message


@pytest.mark.parametrize(
    ("start", "options", "message"),
    [
        (
            NoProbe,
            {"health": corral.HealthSpec()},
            "child 'x': health probes an Actor's health() method, and 'NoProbe' defines none",
        ),
        (
            function_actor,
            {"health": corral.HealthSpec()},
            "child 'x': health probes an Actor's health() method, and 'function_actor'"
            " defines none",
        ),
        (
            function_actor,
            {"handle_timeout": 1.0},
            "child 'x': handle_timeout applies to an Actor class (a function actor has no"
            " handler to time)",
        ),
        (NoProbe, {"handle_timeout": 0}, "child 'x': handle_timeout must be > 0, got 0"),
        (NoProbe, {"health": 3}, "child 'x': health must be a HealthSpec, got 3"),
    ],
)
def test_spec_errors(start: object, options: dict[str, object], message: str) -> None:
    with pytest.raises(corral.SpecError) as caught:
        corral.ChildSpec("x", start, **options)  # type: ignore[arg-type]  # wrong on purpose
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "health interval must be a finite number of seconds > 0, got 0"),
        ({"timeout": float("inf")}, "health timeout must be a finite number of seconds > 0"),
        ({"failures": 0}, "health failures must be an integer >= 1, got 0"),
    ],
)
def test_health_spec_errors(options: dict[str, float], message: str) -> None:
    with pytest.raises(corral.SpecError, match=message.replace("(", r"\(")):
        corral.HealthSpec(**options)  # type: ignore[arg-type]  # wrong on purpose


def test_config_declares_probes_and_a_handle_timeout() -> None:
    text = f"""
    [[supervisor.children]]
    id = "db"
    start = "{__name__}:Probed"
    args = {{ answers = [], log = [], busy = [] }}
    health = {{ interval = 5, timeout = 1, failures = 2 }}
    handle-timeout = 30
    """
    [child] = config.parse(text.replace("\n    ", "\n"), "corral.toml").spec.children
    assert (child.health, child.handle_timeout) == (corral.HealthSpec(5, 1, 2), 30)
    wrong = """
[[supervisor.children]]
id = "sup"
type = "supervisor"
health = { interval = 5 }
"""
    with pytest.raises(config.ConfigError, match="key 'health' does not apply to a supervisor"):
        config.parse(wrong, "corral.toml")
