"""Reconfiguration plans: what turning a running tree's spec into a new one restarts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from corral.supervisors import reconfigure as reconfigure_module
from corral.supervisors.reconfigure import Reconfiguration, plan_reconfiguration, plan_tree
from corral.supervisors.spec import (
    AutoShutdown,
    ChildSpec,
    DynamicSupervisorSpec,
    RestartType,
    Strategy,
    SupervisorSpec,
)

ONE, ALL, REST = Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE


async def work(ctx: object, **args: object) -> None:
    """What every worker child in these specs runs; only its args tell them apart."""


def w(child_id: str, version: int = 1, restart: RestartType = RestartType.PERMANENT) -> ChildSpec:
    """A worker child; a different *version* is a changed spec."""
    return ChildSpec(child_id, work, args={"v": version}, restart=restart)


def sup(
    *children: ChildSpec,
    strategy: Strategy = ONE,
    intensity: int = 1,
    period: float = 5.0,
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER,
) -> SupervisorSpec:
    return SupervisorSpec(children, strategy, intensity, period, auto_shutdown)


def test_all_is_pinned() -> None:
    """The reconfigure module exports exactly its plan and result types, two planners, and
    the paths a spec declares (in file order)."""
    assert reconfigure_module.__all__ == (
        "IN_PLACE",
        "Change",
        "Reconfiguration",
        "Reconfigured",
        "declared_paths",
        "file_order",
        "plan_reconfiguration",
        "plan_tree",
    )


PLAN_CASES = [
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("a"), w("c")),
        {"removed": ("b",)},
        id="removed",
    ),
    pytest.param(
        sup(w("a"), w("c")),
        sup(w("a"), w("b"), w("c")),
        {"added": ("b",)},
        id="added-in-the-middle-is-no-reorder",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("a"), w("b", 2), w("c")),
        {"changed": ("b",), "restarted": ("b",)},
        id="changed-one-for-one-alone",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c"), strategy=REST),
        sup(w("a"), w("b", 2), w("c"), strategy=REST),
        {"changed": ("b",), "restarted": ("b", "c")},
        id="changed-rest-for-one-with-those-after",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c"), strategy=ALL),
        sup(w("a"), w("b", 2), w("c"), strategy=ALL),
        {"changed": ("b",), "restarted": ("a", "b", "c")},
        id="changed-one-for-all-with-everyone",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c"), w("d"), strategy=REST),
        sup(w("a"), w("b"), w("c", 2), w("d", 2), strategy=REST),
        {"changed": ("c", "d"), "restarted": ("c", "d")},
        id="two-changed-rest-for-one",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("a"), w("b", 2), w("c"), strategy=REST),
        {"changed": ("b",), "restarted": ("b", "c"), "flags": ("strategy",)},
        id="the-new-strategy-decides",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("a"), w("b", restart=RestartType.TRANSIENT), w("c")),
        {"changed": ("b",), "restarted": ("b",)},
        id="child-level-field-changed",
    ),
    pytest.param(
        sup(w("a")),
        sup(w("a"), intensity=3, period=2.5),
        {"flags": ("intensity", "period")},
        id="flags",
    ),
    pytest.param(
        sup(w("a")),
        sup(w("a"), strategy=ALL, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT),
        {"flags": ("strategy", "auto_shutdown")},
        id="flags-strategy-and-auto-shutdown",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("c"), w("a"), w("b")),
        {"reordered": True},
        id="reordered",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c")),
        sup(w("a"), w("c")),
        {"removed": ("b",)},
        id="removal-is-no-reorder",
    ),
    pytest.param(
        sup(w("a"), w("b"), w("c"), strategy=REST),
        sup(w("b"), w("a", 2), w("c"), strategy=REST),
        {"changed": ("a",), "restarted": ("a", "c"), "reordered": True},
        id="rest-for-one-follows-the-new-order",
    ),
    pytest.param(
        sup(w("a"), ChildSpec("g", sup(w("x")))),
        sup(w("a"), ChildSpec("g", sup(w("x", 2)))),
        {"adopted": ("g",)},
        id="sub-supervisor-changed-below-is-adopted",
    ),
    pytest.param(
        sup(w("a"), ChildSpec("g", sup(w("x")))),
        sup(w("a"), ChildSpec("g", sup(w("x", 2)), restart=RestartType.TRANSIENT)),
        {"changed": ("g",), "restarted": ("g",)},
        id="sub-supervisor-changed-itself-is-restarted",
    ),
    pytest.param(
        sup(ChildSpec("d", DynamicSupervisorSpec(w("t")))),
        sup(ChildSpec("d", DynamicSupervisorSpec(w("t", 2)))),
        {"changed": ("d",), "restarted": ("d",)},
        id="dynamic-template-changed",
    ),
    pytest.param(
        sup(ChildSpec("d", DynamicSupervisorSpec(w("t")))),
        sup(ChildSpec("d", DynamicSupervisorSpec(w("t"), max_children=3))),
        {"changed": ("d",), "restarted": ("d",)},
        id="dynamic-limits-changed",
    ),
    pytest.param(
        sup(w("a"), w("x")),
        sup(w("a"), ChildSpec("x", sup(w("y")))),
        {"changed": ("x",), "restarted": ("x",)},
        id="worker-became-supervisor",
    ),
    pytest.param(
        sup(w("a"), ChildSpec("x", sup(w("y")))),
        sup(w("a"), w("x")),
        {"changed": ("x",), "restarted": ("x",)},
        id="supervisor-became-worker",
    ),
    pytest.param(
        sup(w("a"), w("b")),
        sup(w("a"), w("b")),
        {},
        id="identical",
    ),
]


@pytest.mark.parametrize(("old", "new", "fields"), PLAN_CASES)
def test_plan_reconfiguration(
    old: SupervisorSpec, new: SupervisorSpec, fields: dict[str, Any]
) -> None:
    """The plan lists exactly the removed, added, changed, restarted, adopted and flags."""
    plan = plan_reconfiguration("/", old, new)
    assert plan == attrs.evolve(Reconfiguration("/", new), **fields)
    assert plan.empty is (not fields)


def test_plan_tree_of_identical_specs_is_empty() -> None:
    """Identical trees, nested ones included, need no plan at all."""
    spec = sup(w("a"), ChildSpec("g", sup(w("x"), ChildSpec("h", sup(w("y"))))))
    assert plan_tree(spec, sup(*spec.children)) == []


def test_plan_tree_descends_into_adopted_supervisors() -> None:
    """A grandchild's change adopts its supervisor: parent plan first, then the child's."""
    inner_old, inner_new = sup(w("x"), w("y")), sup(w("x", 2), w("y"))
    old = sup(w("a"), ChildSpec("group", inner_old))
    new = sup(w("a"), ChildSpec("group", inner_new))
    assert plan_tree(old, new) == [
        Reconfiguration("/", new, adopted=("group",)),
        Reconfiguration("/group", inner_new, changed=("x",), restarted=("x",)),
    ]


def test_plan_tree_leaves_out_unchanged_levels() -> None:
    """Only supervisors with a change get a plan; paths join at every depth."""
    deep_old, deep_new = sup(w("z")), sup(w("z"), w("new"))
    old = sup(w("a"), ChildSpec("g", sup(w("x"), ChildSpec("h", deep_old))))
    new = sup(w("a"), ChildSpec("g", sup(w("x"), ChildSpec("h", deep_new))))
    plans = plan_tree(old, new)
    assert [p.path for p in plans] == ["/", "/g", "/g/h"]
    assert [(p.adopted, p.added) for p in plans] == [(("g",), ()), (("h",), ()), ((), ("new",))]


def test_plan_tree_does_not_descend_into_a_restarted_supervisor() -> None:
    """A sub-supervisor restarted as a whole gets no plan of its own."""
    old = sup(ChildSpec("g", sup(w("x"))))
    new = sup(ChildSpec("g", sup(w("x", 2)), shutdown=1.0))
    assert [p.path for p in plan_tree(old, new)] == ["/"]


def test_plan_tree_does_not_descend_into_an_adopted_supervisor_restarted_with_a_sibling() -> None:
    """Under one-for-all, an adopted sub-supervisor restarted with a changed sibling starts
    with its whole new spec: a plan of its own would apply the change a second time."""
    old = sup(w("a"), ChildSpec("g", sup(w("x"))), strategy=ALL)
    new = sup(w("a", 2), ChildSpec("g", sup(w("x"), w("y"))), strategy=ALL)
    plans = plan_tree(old, new)
    assert [p.path for p in plans] == ["/"]
    assert (plans[0].changed, plans[0].adopted, plans[0].restarted) == (
        ("a",),
        ("g",),
        ("a", "g"),
    )


DESCRIBE_CASES = [
    pytest.param(
        "/",
        sup(w("a"), w("b"), w("c"), w("e"), strategy=REST),
        sup(w("e"), w("b", 2), w("c"), w("d"), strategy=REST, intensity=3),
        [
            "update /: intensity = 3",
            "stop and remove /a",
            "restart /b (spec changed, rest-for-one)",
            "restart /c (restarted with a changed sibling, rest-for-one)",
            "start /d (new)",
            "reorder the children of /: e, b, c, d",
        ],
        id="everything-at-the-root",
    ),
    pytest.param(
        "/group",
        sup(w("x")),
        sup(
            w("x", 2),
            strategy=ALL,
            period=2.5,
            auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
        ),
        [
            "update /group: strategy = one-for-all",
            "update /group: period = 2.5",
            "update /group: auto_shutdown = all-significant",
            "restart /group/x (spec changed, one-for-all)",
        ],
        id="flags-of-a-nested-supervisor",
    ),
    pytest.param(
        "/",
        sup(ChildSpec("g", sup(w("x")))),
        sup(ChildSpec("g", sup(w("x", 2)))),
        [],
        id="an-adopted-child-is-described-by-its-own-plan",
    ),
]


@pytest.mark.parametrize(("path", "old", "new", "lines"), DESCRIBE_CASES)
def test_describe(path: str, old: SupervisorSpec, new: SupervisorSpec, lines: list[str]) -> None:
    """describe() gives one line per change: flags, removals, restarts, starts, order."""
    assert list(plan_reconfiguration(path, old, new).describe()) == lines
