"""Typed references: ``Actor[Req, Rep]`` and ``ActorRef[Req, Rep]`` type ``call`` and
``cast`` under mypy strict, with no ``cast``; an untyped actor keeps working as before.

The type checks are static: ``make lint`` runs mypy on this file, ``assert_type`` fails it if
a type is not the one stated, and each ``type: ignore[arg-type]`` fails it (mypy strict
warns of an unused ignore) if the call it marks were accepted. At run time these tests check
that a typed lookup gives the same reference, at no cost."""

from __future__ import annotations

from typing import assert_type

import anyio
import attrs
import pytest

import corral
from tests.integration.support import HANG_GUARD

pytestmark = pytest.mark.anyio


@attrs.frozen
class Get:
    key: str


@attrs.frozen
class Put:
    key: str
    value: int


class Store(corral.Actor[Get | Put, int | None]):
    """Takes Get and Put; answers an int (or None)."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    async def handle(self, message: Get | Put) -> int | None:
        if isinstance(message, Put):
            self.data[message.key] = message.value
            return message.value
        return self.data.get(message.key)


class Untyped(corral.Actor):
    """As before: takes anything, answers object."""

    async def handle(self, message: object) -> object:
        return message


async def doubler(ctx: corral.Context) -> None:
    """A function actor: its type is said at the lookup, ``ActorRef[int, int]``."""
    async for message in ctx:
        assert isinstance(message, int)
        ctx.reply(2 * message)


def tree() -> corral.SupervisorSpec:
    return corral.SupervisorSpec(
        [
            corral.ChildSpec("store", Store),
            corral.ChildSpec("untyped", Untyped),
            corral.ChildSpec("doubler", doubler),
        ]
    )


def takes_any_ref(ref: corral.ActorRef) -> str:
    """A helper written for any reference accepts a typed one."""
    return ref.path


async def test_a_lookup_by_actor_class_types_call_and_cast() -> None:
    """lookup(path, Store) is an ActorRef[Get | Put, int | None]: call answers int | None."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree()) as running:
            store = running.lookup("/store", Store)
            assert_type(store, corral.ActorRef[Get | Put, int | None])
            put = await store.call(Put("a", 1))
            assert_type(put, int | None)
            await store.cast(Put("b", 2))
            store.cast_nowait(Put("c", 3))
            got = await store.call(Get("b"))
            assert_type(got, int | None)
            assert (put, got) == (1, 2)
            assert store is running.lookup("/store")  # the same reference, typed or not
            assert takes_any_ref(store) == "/store"
            # a fallback joins the answer's type: a value as it is, a callable by its result
            fell = await store.call(Get("b"), fallback=-1)
            assert_type(fell, int | None)
            said = await store.call(Get("b"), fallback=unavailable)
            assert_type(said, int | str | None)
            assert (fell, said) == (2, 2)
            # the type checker refuses it; sent anyway, it crashes Store
            with pytest.raises(corral.ActorCrashedError):
                await store.call("a")  # type: ignore[call-overload]


def unavailable(error: corral.CorralError) -> str:
    return f"unavailable: {error}"


async def test_a_function_actor_is_typed_at_the_lookup() -> None:
    """lookup(path, ActorRef[int, int]) for an actor that has no class."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree()) as running:
            doubled = running.lookup("/doubler", corral.ActorRef[int, int])
            answer = await doubled.call(21)
            assert_type(answer, int)
            assert answer == 42


async def test_an_untyped_lookup_is_as_before() -> None:
    """Without a type, a reference takes anything and answers object."""
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(tree()) as running:
            ref = running.lookup("/untyped")
            answer = await ref.call({"any": "thing"})
            assert_type(answer, object)
            assert answer == {"any": "thing"}


class Asker(corral.Actor[str, int | None]):
    """Looks the store up from inside, typed, as another actor would."""

    async def handle(self, message: str) -> int | None:
        store = self.ctx.lookup("/store", Store)
        assert_type(store, corral.ActorRef[Get | Put, int | None])
        return await store.call(Get(message))


async def test_a_lookup_from_inside_an_actor_is_typed_too() -> None:
    """ctx.lookup takes the expected type as the tree's does."""
    spec = corral.SupervisorSpec([*tree().children, corral.ChildSpec("asker", Asker)])
    with anyio.fail_after(HANG_GUARD):
        async with corral.open_tree(spec) as running:
            await running.lookup("/store", Store).call(Put("k", 7))
            asker = running.lookup("/asker", Asker)
            assert await asker.call("k") == 7
