"""The public names of every module are pinned: adding or removing one is a visible change."""

from __future__ import annotations

import importlib

import pytest

import corral

MODULES = {
    "corral.errors": 24,
    "corral.supervisors.spec": 18,
    "corral.supervisors.intensity": 1,
    "corral.supervisors.plan": 2,
    "corral.supervisors.core": 12,
    "corral.supervisors.events": 14,
    "corral.supervisors.statistics": 2,
    "corral.supervisors.levels": 4,
    "corral.supervisors.slots": 16,
    "corral.supervisors.children": 1,
    "corral.supervisors.requests": 1,
    "corral.supervisors.supervisor": 1,
    "corral.supervisors.services": 5,
    "corral.supervisors.runners": 3,
    "corral.supervisors.tree": 5,
    "corral.actors.mailbox": 10,
    "corral.actors.waiter": 4,
    "corral.actors.actor": 12,
    "corral.actors.breaker": 11,
    "corral.actors.health": 2,
    "corral.actors.cell": 7,
    "corral.actors.registry": 3,
    "corral.actors.deadletter": 3,
    "corral.actors.timing": 5,
    "corral.daemon.metrics": 9,
    "corral.daemon.endpoint": 3,
    "corral.daemon.loop": 3,
    "corral.daemon.systemd": 4,
    "corral.daemon.journal": 10,
    "corral.daemon.directory": 2,
    "corral.daemon.listener": 2,
    "corral.daemon.redact": 3,
}


@pytest.mark.parametrize(("name", "count"), MODULES.items(), ids=list(MODULES))
def test_module_all_is_a_tuple_of_existing_names(name: str, count: int) -> None:
    """Each module's __all__ is a tuple of names it defines, of the pinned size."""
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, tuple)
    assert len(exported) == count
    assert all(hasattr(module, n) for n in exported)


def test_package_reexports_resolve() -> None:
    """Every name corral re-exports is importable from the package root."""
    assert isinstance(corral.__all__, tuple)
    assert len(corral.__all__) == 78
    missing = [n for n in corral.__all__ if not hasattr(corral, n)]
    assert missing == []
