"""The tasks that run a supervisor's children, spawned below anyio's task group.

A child's runner is the task its incarnations run in. A supervisor spawns one per child it
starts, so a tree of 100,000 actors spawns 100,000 of them: anyio's ``TaskGroup.start_soon``
wraps each task in a handle, a cancel scope, two events and a closure (about a dozen
objects the garbage collector must walk, for as long as the task lives), which made a large
tree start 2-3x slower than spawning the same tasks by hand.

So runners are spawned on the backend itself: ``loop.create_task`` on asyncio, a trio
nursery's ``start_soon`` on trio. Each runner still enters a cancel scope of its own (the
handle the supervisor stops it with), so cancelling it follows anyio's rules: a shielded
scope inside the actor's code is respected. On asyncio that is an anyio ``CancelScope``,
whose delivery is what honours anyio's shields; on trio it is trio's own ``CancelScope``,
which anyio's wraps (one object fewer per runner, the same rules). What the task group gave, the
supervisor keeps: ``open_runners`` is entered inside the supervisor's task group and does
not exit before every runner has ended; an exception that escapes a runner (it catches
``Exception`` itself, so only a ``BaseException`` such as ``KeyboardInterrupt``) is raised
in the task group, as from any of its tasks; ``cancel_all`` cancels the abandoned ones'
scopes, as cancelling the task group did.
"""

from __future__ import annotations

import asyncio
import contextvars
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, Protocol, final

import anyio
import sniffio
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from types import TracebackType

    from anyio.abc import TaskGroup

__all__ = ("RunnerScope", "Runners", "open_runners")


class RunnerScope(Protocol):
    """A runner's cancel scope: what the supervisor stops it with (anyio's or trio's)."""

    deadline: float

    def cancel(self) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...


class Runners(Protocol):
    """Where a supervisor spawns its children's runner tasks."""

    def scope(self, deadline: float) -> RunnerScope:
        """A new cancel scope for a runner, cancelled at *deadline* at the latest."""
        ...

    def spawn(
        self,
        scope: RunnerScope,
        fn: Callable[..., Coroutine[object, object, None]],
        *args: object,
    ) -> None:
        """Run ``fn(*args)`` in a new task that runs inside *scope* (``fn`` enters it: it is
        the handle the supervisor stops the runner with)."""
        ...

    def cancel_all(self) -> None:
        """Cancel every runner still running (the abandoned ones, at the end)."""
        ...


async def _reraise(error: BaseException) -> NoReturn:
    raise error


@final
class _AsyncioRunners:
    __slots__ = ("_all_done", "_context", "_create_task", "_on_done", "_scope", "_tasks", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._tasks: dict[asyncio.Task[None], RunnerScope] = {}
        self._create_task = asyncio.get_running_loop().create_task
        self._on_done = self._done  # one bound method for every task
        # ...run in one context: add_done_callback would copy the context for each task (an
        # object per actor for the collector to walk), and _done reads no context variable
        self._context = contextvars.copy_context()
        self._all_done: asyncio.Future[None] | None = None
        # anyio's asyncio scope class itself: ``anyio.CancelScope(...)`` looks the backend up
        # for every scope it makes
        self._scope: Callable[..., RunnerScope] = type(anyio.CancelScope())

    def scope(self, deadline: float) -> RunnerScope:
        return self._scope(deadline=deadline)

    def spawn(
        self,
        scope: RunnerScope,
        fn: Callable[..., Coroutine[object, object, None]],
        *args: object,
    ) -> None:
        task = self._create_task(fn(*args))
        self._tasks[task] = scope
        task.add_done_callback(self._on_done, context=self._context)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self._tasks[task]
        if not task.cancelled():
            error = task.exception()
            if error is not None:  # a BaseException its runner does not catch
                self._tg.start_soon(_reraise, error)
        all_done = self._all_done
        if all_done is not None and not self._tasks and not all_done.done():
            all_done.set_result(None)

    def cancel_all(self) -> None:
        for scope in self._tasks.values():
            scope.cancel()

    async def wait(self) -> None:
        while self._tasks:
            self._all_done = asyncio.get_running_loop().create_future()
            await self._all_done


@final
class _TrioRunners:
    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def scope(self, deadline: float) -> RunnerScope:
        return trio.CancelScope(deadline=deadline)

    def spawn(
        self,
        scope: RunnerScope,
        fn: Callable[..., Coroutine[object, object, None]],
        *args: object,
    ) -> None:
        self._nursery.start_soon(fn, *args)

    def cancel_all(self) -> None:
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_runners(tg: TaskGroup) -> AsyncIterator[Runners]:
    """Runners for one supervisor's run, inside its task group *tg*: exits once all ended."""
    if sniffio.current_async_library() == "trio":
        async with trio.open_nursery() as nursery:
            yield _TrioRunners(nursery)
        return
    runners = _AsyncioRunners(tg)
    try:
        yield runners
    finally:
        with anyio.CancelScope(shield=True):  # as a task group's exit: they all end first
            await runners.wait()
