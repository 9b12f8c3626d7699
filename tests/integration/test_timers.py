"""Timers (``ctx.send_after``, ``ctx.send_interval``) and ``receive(timeout=)``: what they
deliver, to which incarnation, and what a cancel or a restart leaves behind."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import corral
from tests.integration.support import HANG_GUARD, Boom, EventLog

pytestmark = pytest.mark.anyio

PERIOD = 0.005  # short: the tests wait on what arrives, never on how long it took


class Ticker(corral.Actor):
    """Arms an interval in on_start (or a one-shot with *once*); records what each
    incarnation receives as (incarnation, message); "crash" raises; "cancel" cancels."""

    incarnations = 0

    def __init__(
        self, seen: list[tuple[int, object]], arrived: list[anyio.Event], once: bool = False
    ) -> None:
        self.seen = seen
        self.arrived = arrived
        self.once = once

    async def on_start(self) -> None:
        Ticker.incarnations += 1
        self.me = Ticker.incarnations
        if self.once:
            self.timer = self.ctx.send_after(PERIOD, ("once", self.me))
        else:
            self.timer = self.ctx.send_interval(PERIOD, ("tick", self.me))

    async def handle(self, message: object) -> object:
        self.seen.append((self.me, message))
        for event in self.arrived:
            event.set()
        match message:
            case "crash":
                raise Boom(message)
            case "cancel":
                self.timer.cancel()
                self.ctx.send_after(PERIOD * 5, "fence")  # every tick would come before it
            case ("hold", anyio.Event() as gate):
                await gate.wait()
        return None


async def arrival(arrived: list[anyio.Event]) -> None:
    event = anyio.Event()
    arrived[:] = [event]
    await event.wait()


async def test_send_after_delivers_once_and_send_interval_until_cancelled() -> None:
    """A one-shot timer delivers its message once; an interval ticks until cancelled, and
    after the cancel no tick comes (a later one-shot fence arrives, alone)."""
    seen: list[tuple[int, object]] = []
    arrived: list[anyio.Event] = []
    Ticker.incarnations = 0
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("once", Ticker, args={"seen": seen, "arrived": arrived, "once": True}),
        ]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec):
            while not seen:
                await arrival(arrived)
            await anyio.sleep(PERIOD * 5)  # a load: room for a second delivery, if any
    assert seen == [(1, ("once", 1))]

    seen.clear()
    Ticker.incarnations = 0
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("ticker", Ticker, args={"seen": seen, "arrived": arrived})]
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            while len(seen) < 3:
                await arrival(arrived)
            tree.lookup("/ticker").cast_nowait("cancel")
            while not seen or seen[-1][1] != "fence":
                await arrival(arrived)
    cancel = seen.index((1, "cancel"))
    assert set(seen[:cancel]) == {(1, ("tick", 1))}
    assert seen[cancel + 1 :] == [(1, "fence")]  # no tick after the cancel


async def test_timers_die_with_their_incarnation() -> None:
    """After a crash, the new incarnation gets only its own ticks, also when a tick of the
    old one was still queued in the mailbox (which survives the restart)."""
    seen: list[tuple[int, object]] = []
    arrived: list[anyio.Event] = []
    Ticker.incarnations = 0
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("ticker", Ticker, args={"seen": seen, "arrived": arrived})],
        intensity=5,
    )
    events = EventLog()
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            ref = tree.lookup("/ticker")
            gate = anyio.Event()
            ref.cast_nowait(("hold", gate))
            while (1, ("hold", gate)) not in seen:
                await arrival(arrived)
            ref.cast_nowait("crash")  # queued before any tick
            while tree.statistics().children[0].mailbox_depth < 2:  # noqa: ASYNC110  # then a tick of 1, seen only in the mailbox: polled at its period
                await anyio.sleep(PERIOD)
            await anyio.sleep(PERIOD * 5)  # a load: more ticks fall due while it is busy
            assert tree.statistics().children[0].mailbox_depth == 2  # one tick pending, at most
            gate.set()  # it crashes; the tick of incarnation 1 is still queued behind
            await events.wait_for(corral.ChildStarted, "/ticker", restarts=1)
            while not any(me == 2 for me, _ in seen):
                await arrival(arrived)
    first = [m for me, m in seen if me == 1]
    second = [m for me, m in seen if me == 2]
    assert first == [("hold", gate), "crash"]
    assert second  # never the queued tick of incarnation 1, only its own
    assert set(second) == {("tick", 2)}


async def test_timer_arguments_are_checked() -> None:
    """A negative, infinite or non-numeric delay, or a zero period, is refused at once."""
    errors: list[str] = []

    async def arms(ctx: corral.Context) -> None:
        for arm, value in (
            (ctx.send_after, -1),
            (ctx.send_after, float("inf")),
            (ctx.send_interval, 0),
            (ctx.send_after, "soon"),
        ):
            try:
                arm(value, "x")  # type: ignore[arg-type]  # wrong types on purpose
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        ctx.started()
        await anyio.sleep_forever()

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(corral.SupervisorSpec([corral.ChildSpec("a", arms)])):
            pass
    assert errors == [
        "delay must be finite seconds >= 0, got -1",
        "delay must be finite seconds >= 0, got inf",
        "period must be finite seconds > 0, got 0",
        "delay must be a number of seconds, got 'soon'",
    ]


async def test_receive_with_a_timeout_and_cancelled_receives_lose_nothing() -> None:
    """receive(timeout=) raises TimeoutError when nothing comes; a receive cancelled just as
    a message arrives either returns it or leaves it queued: it is received exactly once."""
    got: list[object] = []
    scopes: list[anyio.CancelScope] = []
    waiting, fenced = anyio.Event(), anyio.Event()

    async def receiver(ctx: corral.Context) -> None:
        ctx.started()
        with pytest.raises(TimeoutError):
            await ctx.receive(timeout=PERIOD)
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            waiting.set()
            got.append(await ctx.receive())  # cancelled as the message arrives
        while not got or got[-1] != "fence":
            got.append(await ctx.receive(timeout=HANG_GUARD))
        fenced.set()
        await anyio.sleep_forever()

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(corral.SupervisorSpec([corral.ChildSpec("r", receiver)])) as t:
            await waiting.wait()
            await anyio.wait_all_tasks_blocked()  # it waits in receive
            t.lookup("/r").cast_nowait("precious")  # wakes the receive...
            scopes[0].cancel()  # ...which is cancelled before it runs again
            t.lookup("/r").cast_nowait("fence")
            await fenced.wait()
    # taken by the cancelled receive (it had completed) or by the next one: never lost
    assert got == ["precious", "fence"]


class Quiet(corral.Actor):
    """Neither on_start nor on_stop: dormant until its first message; "arm" arms a timer."""

    def __init__(self, seen: list[object], done: anyio.Event) -> None:
        self.seen = seen
        self.done = done

    async def handle(self, message: object) -> object:
        self.seen.append(message)
        if message != "arm":
            self.done.set()
        else:
            self.ctx.send_after(PERIOD, "woken by its timer")
        return None


async def test_a_dormant_actor_stays_dormant_until_a_message_and_its_timer_reaches_it() -> None:
    """Timers cost a dormant actor nothing; armed from handle, the tick reaches it."""
    seen: list[object] = []
    done = anyio.Event()
    args: dict[str, Any] = {"seen": seen, "done": done}
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(
            corral.SupervisorSpec([corral.ChildSpec("q", Quiet, args=args)])
        ) as t:
            assert t.statistics().children[0].state is corral.ChildStatus.RUNNING
            t.lookup("/q").cast_nowait("arm")
            await done.wait()
    assert seen == ["arm", "woken by its timer"]
