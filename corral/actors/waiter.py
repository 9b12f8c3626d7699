"""A one-shot wake-up for one task, native to each backend.

The hot paths (a message arriving in an empty mailbox, a call's reply, a child's readiness)
only need "park this task until someone wakes it". ``anyio.Event`` does that through a
wrapper, an ``asyncio.Event`` and a deque of waiters; a bare future (asyncio) or
``wait_task_rescheduled`` (trio) does it in a fraction of the time and memory. Cancellation
works as everywhere in anyio: a cancelled wait raises the backend's cancellation exception.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol, final

import sniffio
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

__all__ = ("Waiter", "new_waiter", "scheduler_yield", "waiter_factory")


class Waiter(Protocol):
    """Park one task until ``wake``; a wake before the wait makes the wait return at once."""

    @property
    def woken(self) -> bool: ...

    def wake(self) -> None: ...

    def wait(self) -> Awaitable[object]:
        """Await this: returns once woken (at once if already)."""
        ...

    async def wait_for(self, seconds: float) -> None:
        """Wait at most *seconds* (finite); the caller checks what happened."""
        ...


_TIMED_OUT: object = object()


@final
class _AsyncioWaiter:
    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    @property
    def woken(self) -> bool:
        future = self._future
        return future.done() and not future.cancelled() and future.result() is None

    def wake(self) -> None:
        future = self._future
        if not future.done():
            future.set_result(None)

    def wait(self) -> Awaitable[object]:
        return self._future  # awaited directly: no coroutine frame for an idle actor

    def _expire(self) -> None:
        future = self._future
        if not future.done():
            future.set_result(_TIMED_OUT)  # ends the wait without counting as woken

    async def wait_for(self, seconds: float) -> None:
        future = self._future
        if future.done():
            return
        timer = future.get_loop().call_later(seconds, self._expire)
        try:
            await future
        finally:
            timer.cancel()


@final
class _Done:
    """An awaitable that is done at once (reusable: each await iterates anew)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


_DONE: Final = _Done()


@final
class _TrioWaiter:
    __slots__ = ("_task", "woken")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self.woken = False

    def wake(self) -> None:
        if not self.woken:
            self.woken = True
            task = self._task
            if task is not None:
                self._task = None
                trio.lowlevel.reschedule(task)

    def __call__(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        """The wait's abort function (the waiter itself: no bound method to keep)."""
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wait(self) -> Awaitable[object]:
        # Awaited at once by every caller, so the task is taken now, and an idle actor waits
        # in trio's own coroutine, without one of the waiter's around it.
        if self.woken:
            return _DONE  # returns at once, as a woken future's await does: no checkpoint
        self._task = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self)  # noqa: ASYNC105  # the caller awaits it

    async def wait_for(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.wait()


def waiter_factory() -> Callable[[], Waiter]:
    """The waiter class of the running backend: look it up once, create many."""
    if sniffio.current_async_library() == "trio":
        return _TrioWaiter
    return _AsyncioWaiter


async def _asyncio_yield() -> None:
    await asyncio.sleep(0)


def scheduler_yield() -> Callable[[], Awaitable[None]]:
    """The running backend's cheapest checkpoint: yield to other tasks once.

    Cancellation is delivered there as at any anyio checkpoint.
    """
    if sniffio.current_async_library() == "trio":
        return trio.lowlevel.checkpoint
    return _asyncio_yield


def new_waiter() -> Waiter:
    """A waiter for the running backend (asyncio or trio)."""
    return waiter_factory()()
