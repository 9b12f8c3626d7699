"""Regressions: races found in review, each pinned by the scenario that exposed it."""

from __future__ import annotations

from typing import Literal

import anyio
import anyio.lowlevel
import pytest

import corral
from tests.integration.support import HANG_GUARD, EventLog, Worker

pytestmark = pytest.mark.anyio


class Idle(corral.Actor):
    """An idle class actor with neither on_start nor on_stop."""

    async def handle(self, message: object) -> object:
        return message


class StopsOnGate(corral.Actor):
    """An on_stop that sets *began*, then waits for *gate* (logging if it is cut off)."""

    def __init__(self, began: anyio.Event, gate: anyio.Event, log: list[str]) -> None:
        self.began = began
        self.gate = gate
        self.log = log

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        self.log.append("on_stop began")
        self.began.set()
        try:
            await self.gate.wait()
        except anyio.get_cancelled_exc_class():
            self.log.append("on_stop cut off")
            raise
        self.log.append("on_stop finished")


class Holder(corral.Actor):
    """Records ``(tag, message)``; ``"hold"`` waits for *gate*, ``"crash"`` raises."""

    def __init__(self, gate: anyio.Event, seen: list[tuple[str, object]], tag: str) -> None:
        self.gate = gate
        self.seen = seen
        self.tag = tag

    async def handle(self, message: object) -> object:
        if message == "crash":
            msg = f"{self.tag} crashed"
            raise RuntimeError(msg)
        self.seen.append((self.tag, message))
        if message == "hold":
            await self.gate.wait()
        return message


async def outcome_of(
    request: corral.SupervisorRef, spec: corral.ChildSpec, results: list[object]
) -> None:
    """Run ``start_child(spec)`` and record its path, or the CorralError it raised."""
    try:
        results.append(await request.start_child(spec))
    except corral.CorralError as exc:
        results.append(exc)


# -- 1: requests to a supervisor that left its loop ------------------------------------------


def giving_up_tree(began: anyio.Event, gate: anyio.Event) -> corral.SupervisorSpec:
    """``/s`` (intensity 0) holds ``slow``, whose on_stop waits for *gate*, and ``w``."""
    sub = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "slow",
                StopsOnGate,
                args={"began": began, "gate": gate, "log": []},
                shutdown=corral.INFINITY,
            ),
            corral.ChildSpec("w", Worker),
        ],
        intensity=0,
    )
    return corral.SupervisorSpec([corral.ChildSpec("s", sub)])


async def test_start_child_queued_behind_the_exit_that_makes_a_supervisor_give_up() -> None:
    """A start_child queued behind the exit a supervisor gives up on fails with UnknownPathError."""
    began, gate = anyio.Event(), anyio.Event()
    results: list[object] = []
    events = EventLog()
    extra = corral.ChildSpec("x", Worker, restart=corral.RestartType.TEMPORARY)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(giving_up_tree(began, gate)) as tree:
            tree.events.subscribe(events)
            sub = tree.supervisor("/s")
            async with anyio.create_task_group() as tg:
                tg.start_soon(sub.terminate_child, "slow")  # /s is busy until gate is set
                await began.wait()
                tree.lookup("/s/w").cast_nowait("crash")
                await anyio.wait_all_tasks_blocked()  # the exit of /s/w waits in /s's inbox
                tg.start_soon(outcome_of, sub, extra, results)
                await anyio.wait_all_tasks_blocked()  # queued behind it
                gate.set()
            await events.wait_for(corral.ChildStarted, "/s", restarts=1)
            assert [c.id for c in tree.supervisor("/s").which_children()] == ["slow", "w"]
    [result] = results
    assert isinstance(result, corral.UnknownPathError)
    assert events.find(corral.SupervisorGaveUp, "/s")


async def test_start_child_sent_while_a_supervisor_that_gave_up_is_stopping() -> None:
    """A start_child sent while a supervisor that gave up stops its children raises at once."""
    began, gate = anyio.Event(), anyio.Event()
    extra = corral.ChildSpec("x", Worker, restart=corral.RestartType.TEMPORARY)
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(giving_up_tree(began, gate)) as tree:
            sub = tree.supervisor("/s")
            tree.lookup("/s/w").cast_nowait("crash")
            await began.wait()  # /s gave up and is stopping /s/slow
            try:
                with pytest.raises(corral.UnknownPathError):
                    await sub.start_child(extra)
            finally:
                gate.set()  # else a hung start_child would leave the tree's exit hung too


# -- 2: a restarted dynamic supervisor forgets its children ---------------------------------


async def test_restarted_dynamic_supervisor_forgets_its_old_children() -> None:
    """A dynamic supervisor restarted after giving up frees its old children's paths and
    mailboxes: a new child with a reused id gets none of the messages sent to the old one."""
    gate = anyio.Event()
    seen: list[tuple[str, object]] = []
    events = EventLog()
    pool = corral.DynamicSupervisorSpec(
        corral.ChildSpec("t", Holder, args={"gate": gate, "seen": seen, "tag": "?"}),
        intensity=0,
    )
    spec = corral.SupervisorSpec([corral.ChildSpec("d", pool)])
    refused: list[object] = []
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            d = tree.supervisor("/d")
            first = await d.start_child(args={"tag": "old-1"})
            second = await d.start_child(args={"tag": "old-2"})
            assert first is not None  # it started
            assert second is not None
            old = tree.lookup(second)
            old.cast_nowait("hold")
            await anyio.wait_all_tasks_blocked()  # old-2 is handling "hold"
            old.cast_nowait("queued")
            tree.lookup(first).cast_nowait("crash")  # /d gives up; the root restarts it
            await events.wait_for(corral.ChildStarted, "/d", restarts=1)

            with pytest.raises(corral.UnknownPathError):
                tree.lookup(second)
            try:
                old.cast_nowait("late")
            except corral.ActorNotRunningError as exc:
                refused.append(exc)
            assert await d.start_child(args={"tag": "new-1"}) == first
            assert await d.start_child(args={"tag": "new-2"}) == second
            assert await tree.lookup(second).call("ping") == "ping"  # after anything queued

    assert seen == [("old-2", "hold"), ("new-2", "ping")]
    letters = [(letter.message, letter.reason) for letter in tree.dead_letters(second)]
    assert ("hold", "stopped") in letters
    assert ("queued", "undelivered") in letters
    assert refused or ("late", "undelivered") in letters


# -- 3: a receiver cancelled while parked ----------------------------------------------------


@pytest.mark.parametrize("shutdown", [0.2, corral.INFINITY])
async def test_restart_of_a_terminated_idle_actor_then_leaving_abandons_nothing(
    shutdown: float | Literal["infinity"],
) -> None:
    """terminate_child then restart_child of an idle class actor, then leaving the tree:
    nothing is abandoned and the exit does not hang (also with shutdown infinity)."""
    began, gate = anyio.Event(), anyio.Event()
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "slow",
                StopsOnGate,
                args={"began": began, "gate": gate, "log": []},
                shutdown=corral.INFINITY,
            ),
            corral.ChildSpec("a", Idle, shutdown=shutdown),
        ]
    )
    events = EventLog()
    restarted: list[object] = []

    async def restart(sup: corral.SupervisorRef) -> None:
        try:
            restarted.append(await sup.restart_child("a"))
        except corral.UnknownPathError as exc:  # the tree was already stopping
            restarted.append(exc)

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg, corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            sup = tree.supervisor()
            assert await tree.lookup("/a").call("hi") == "hi"
            await anyio.wait_all_tasks_blocked()  # /a waits in its mailbox
            await sup.terminate_child("a")
            tg.start_soon(sup.terminate_child, "slow")  # the root is busy until gate is set
            await began.wait()
            tg.start_soon(restart, sup)
            await anyio.wait_all_tasks_blocked()  # the restart waits in the root's inbox
            gate.set()
            # leaving now: the stop request is queued right behind the restart
    assert not events.find(corral.ChildAbandoned, "/a")
    [result] = restarted  # restarted, or refused as the tree was stopping: either way settled
    assert result == "/a" or isinstance(result, corral.UnknownPathError)


# -- 4: blocked casts under contention -------------------------------------------------------


class Sink(corral.Actor):
    """Records each message; yields to the scheduler every third one."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    async def handle(self, message: object) -> object:
        self.seen.append(message)
        if len(self.seen) % 3 == 0:
            await anyio.lowlevel.checkpoint()
        return None


async def test_concurrent_casts_into_a_small_blocking_mailbox() -> None:
    """Producers casting into a full capacity-2 BLOCK mailbox never see an exception and
    every message is handled exactly once."""
    producers, count = 4, 5000
    seen: list[object] = []
    errors: list[BaseException] = []
    spec = corral.SupervisorSpec(
        [corral.ChildSpec("k", Sink, args={"seen": seen}, mailbox=corral.MailboxSpec(capacity=2))]
    )

    async def produce(ref: corral.ActorRef, producer: int) -> None:
        for i in range(count):
            try:
                await ref.cast((producer, i))
            except Exception as exc:  # any exception at all is the failure
                errors.append(exc)

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/k")
            async with anyio.create_task_group() as tg:
                for producer in range(producers):
                    tg.start_soon(produce, ref, producer)
            await ref.call("last")
    assert errors == []
    expected = [(p, i) for p in range(producers) for i in range(count)]
    assert seen[-1] == "last"
    assert sorted(m for m in seen if isinstance(m, tuple)) == expected
    assert len(seen) == len(expected) + 1
    assert tree.dead_letters() == ()


# -- 5: brutal stop of a supervisor child ----------------------------------------------------


class Grandchild(corral.Actor):
    """Logs ``start <n>``; its on_stop waits on an event nobody sets, logging if cut off."""

    def __init__(self, log: list[str], never: anyio.Event) -> None:
        self.log = log
        self.never = never
        self.n = 0

    async def on_start(self) -> None:
        self.n = sum(entry.startswith("start") for entry in self.log) + 1
        self.log.append(f"start {self.n}")

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.n} began")
        try:
            await self.never.wait()
        except anyio.get_cancelled_exc_class():
            self.log.append(f"stop {self.n} cut off")
            raise


async def test_brutal_stop_of_a_sub_supervisor_cuts_its_subtree_cleanup_off() -> None:
    """A sub-supervisor stopped brutally for a restart has its grandchild's on_stop cut off
    before the next incarnation starts, and nothing is abandoned."""
    log: list[str] = []
    events = EventLog()
    sub = corral.SupervisorSpec(
        [corral.ChildSpec("g", Grandchild, args={"log": log, "never": anyio.Event()})]
    )
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec("s", sub, shutdown=corral.BRUTAL),
            corral.ChildSpec("c", Worker, args={"name": "c"}),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
        intensity=5,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            tree.lookup("/c").cast_nowait("crash")  # one-for-all: /s is stopped and restarted
            await events.wait_for(corral.ChildStarted, "/c", restarts=1)
            assert log == ["start 1", "stop 1 began", "stop 1 cut off", "start 2"]
            assert events.find(corral.ChildStarted, "/s", restarts=1)
    assert not [e for e in events.events if isinstance(e, corral.ChildAbandoned)]


# -- 6: a stop requested during a restart plan -----------------------------------------------


class CountsStarts(corral.Actor):
    """Counts its starts; its on_stop sets *began*, then waits for *gate*."""

    def __init__(self, starts: list[str], began: anyio.Event, gate: anyio.Event) -> None:
        self.starts = starts
        self.began = began
        self.gate = gate

    async def on_start(self) -> None:
        self.starts.append("b")

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        self.began.set()
        await self.gate.wait()


async def test_stop_during_a_restart_plan_skips_the_remaining_starts() -> None:
    """Leaving the tree while a one-for-all restart is stopping siblings starts nobody again."""
    starts: list[str] = []
    began, gate = anyio.Event(), anyio.Event()
    events = EventLog()
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "b", CountsStarts, args={"starts": starts, "began": began, "gate": gate}
            ),
            corral.ChildSpec("a", Worker, args={"name": "a"}),
        ],
        strategy=corral.Strategy.ONE_FOR_ALL,
        intensity=5,
    )
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            tree.events.subscribe(events)
            tree.lookup("/a").cast_nowait("crash")
            await began.wait()  # the restart plan is stopping /b
            gate.set()
            # leaving now: the stop is requested before /b's on_stop returns
    assert starts == ["b"]
    assert events.summary(corral.ChildStarted) == []
    assert not events.find(corral.ChildAbandoned, "/b")


# -- 7: a cast blocked on a full mailbox when its actor is removed ---------------------------


async def test_cast_blocked_on_a_full_mailbox_of_a_removed_actor() -> None:
    """A cast blocked on a full BLOCK mailbox when its temporary actor is terminated raises
    ActorNotRunningError; the messages queued before are dead letters, none vanish."""
    seen: list[tuple[str, object]] = []
    spec = corral.SupervisorSpec(
        [
            corral.ChildSpec(
                "b",
                Holder,
                args={"gate": anyio.Event(), "seen": seen, "tag": "b"},
                restart=corral.RestartType.TEMPORARY,
                mailbox=corral.MailboxSpec(capacity=1),
            )
        ]
    )
    outcome: list[object] = []

    async def blocked_cast(ref: corral.ActorRef) -> None:
        try:
            await ref.cast(3)
            outcome.append("returned")
        except corral.ActorNotRunningError as exc:
            outcome.append(exc)

    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as tree:
            ref = tree.lookup("/b")
            ref.cast_nowait("hold")
            await anyio.wait_all_tasks_blocked()  # being handled
            ref.cast_nowait(2)  # fills the mailbox
            async with anyio.create_task_group() as tg:
                tg.start_soon(blocked_cast, ref)
                await anyio.wait_all_tasks_blocked()  # waiting for room
                await tree.supervisor().terminate_child("b")
    [result] = outcome
    assert isinstance(result, corral.ActorNotRunningError)
    assert seen == [("b", "hold")]
    letters = [(letter.message, letter.reason) for letter in tree.dead_letters("/b")]
    assert letters == [("hold", "stopped"), (2, "undelivered")]
