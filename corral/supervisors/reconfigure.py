"""What changing a running tree's spec means: a pure plan, like OTP's release handling.

OTP upgrades a running supervisor in ``code_change``: it takes the new flags and child specs
and restarts nothing; the release handler's script then adds, removes and restarts children
by hand. corral does both from one rule, applied to each supervisor from the root down:

* flags (strategy, intensity, period, auto_shutdown) take effect in place, as OTP's
  ``code_change``; restart history is kept;
* a child whose id is gone is stopped (reverse start order) and deleted;
* a new child is started; the restarted children (below) and the new ones start together
  in the new file order, after every stop, since a child may depend on those before it;
  across the whole tree (``Tree.reconfigure``), the file order is one order over every
  level: every stop first, in reverse order of the running tree (the last child first, at
  any depth), then every start in the new file's order, so that a child starts only after
  every new or restarted child before it in the file, at any depth, has started;
* a child whose spec changed is restarted with the new spec the way its supervisor restarts
  a crashed child: alone (one-for-one), with the children after it (rest-for-one), or with
  all its siblings (one-for-all). Only children that were running (or waiting to restart)
  are started again; a stopped one keeps its new spec for when it is started;
* a child whose spec differs only in what applies in place (``IN_PLACE``: a worker's
  breakers, whether it is essential, its own restart limit and boot retries) keeps running:
  breakers take the new thresholds and keep their state (``Breaker.retune``);
* a static sub-supervisor whose own child-level fields (restart, shutdown, ...) are unchanged
  is not restarted: its new spec is adopted and the same rule is applied inside it;
* the children take the new order: later restarts and the final stop follow the file.

Changing a dynamic supervisor's template or limits counts as a change: it is restarted, and
the children it had started at run time are stopped with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from corral.actors.registry import join_path
from corral.supervisors.plan import affected
from corral.supervisors.spec import ChildSpec, ChildType, SupervisorSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from corral.errors import StartError

__all__ = (
    "IN_PLACE",
    "Change",
    "Reconfiguration",
    "Reconfigured",
    "declared_paths",
    "file_order",
    "plan_reconfiguration",
    "plan_tree",
)


@attrs.frozen
class Change:
    """One line of a plan, and the child whose start completes it (None: it takes effect
    with the new specs, nothing to start)."""

    line: str
    starts: str | None = None


@attrs.frozen
class Reconfiguration:
    """The changes to one static supervisor at ``path``; ids in start order."""

    path: str
    spec: SupervisorSpec  # the new spec
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # spec differs: restarted with the new spec
    restarted: tuple[str, ...] = ()  # changed ones plus the siblings restarted with them
    adopted: tuple[str, ...] = ()  # sub-supervisors reconfigured in place
    # children whose IN_PLACE fields alone changed: updated in place (restarted only with a
    # sibling), each with the names of those fields
    retuned: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] = ()  # names of the flags that changed
    reordered: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.removed
            or self.added
            or self.restarted
            or self.adopted
            or self.retuned
            or self.flags
            or self.reordered
        )

    def describe(self) -> Iterator[str]:
        """One line per change, for people (``corral reload --dry-run``)."""
        return (change.line for change in self.changes())

    def changes(self) -> Iterator[Change]:
        """The changes, each with the child whose start completes it, if any."""
        at = self.path
        for name in self.flags:
            yield Change(f"update {at}: {name} = {_flag(self.spec, name)}")
        for child_id in self.removed:
            yield Change(f"stop and remove {join_path(at, child_id)}")
        for child_id in self.restarted:
            why = "spec changed" if child_id in self.changed else "restarted with a changed sibling"
            path = join_path(at, child_id)
            yield Change(f"restart {path} ({why}, {self.spec.strategy.value})", path)
        for child_id in self.added:
            path = join_path(at, child_id)
            yield Change(f"start {path} (new)", path)
        for child_id, fields in self.retuned:
            if child_id not in self.restarted:
                what = ", ".join(fields)
                yield Change(f"update {join_path(at, child_id)}: {what} (in place, running on)")
        if self.reordered:
            children = ", ".join(c.id for c in self.spec.children)
            yield Change(f"reorder the children of {at}: {children}")


@attrs.frozen
class Reconfigured:
    """What ``Tree.reconfigure`` did: the plan's lines that took effect; those that did not,
    each with why; the children that failed to start (left FAILED); and the supervisors that
    were not running (their new spec applies when they start)."""

    applied: tuple[str, ...]
    not_applied: tuple[str, ...] = ()
    failures: tuple[StartError, ...] = ()
    notes: tuple[str, ...] = ()


def _flag(spec: SupervisorSpec, name: str) -> str:
    value = getattr(spec, name)
    return str(getattr(value, "value", value))


_FLAGS = ("strategy", "intensity", "period", "auto_shutdown")
IN_PLACE: Final = (
    "breakers",
    "essential",
    "max_restarts",
    "max_restarts_period",
    "start_retries",
)
"""A child's fields that a reload changes without restarting it."""


def plan_reconfiguration(path: str, old: SupervisorSpec, new: SupervisorSpec) -> Reconfiguration:
    """The changes that turn supervisor *path* running *old* into *new* (its own level only)."""
    old_by_id = {c.id: c for c in old.children}
    new_by_id = {c.id: c for c in new.children}
    removed = tuple(c.id for c in old.children if c.id not in new_by_id)
    added = tuple(c.id for c in new.children if c.id not in old_by_id)
    kept = tuple(c.id for c in new.children if c.id in old_by_id)
    changed: list[str] = []
    adopted: list[str] = []
    retuned: list[tuple[str, tuple[str, ...]]] = []
    for child_id in kept:
        before, after = old_by_id[child_id], new_by_id[child_id]
        if before == after:
            continue
        if _adoptable(before, after):
            adopted.append(child_id)
        elif attrs.evolve(before, **{f: getattr(after, f) for f in IN_PLACE}) == after:
            fields = tuple(f for f in IN_PLACE if getattr(before, f) != getattr(after, f))
            retuned.append((child_id, fields))
        else:
            changed.append(child_id)
    restart: set[str] = set()
    for child_id in changed:
        restart.update(affected(new.strategy, kept, child_id))
    kept_old_order = tuple(c.id for c in old.children if c.id in new_by_id)
    return Reconfiguration(
        path=path,
        spec=new,
        removed=removed,
        added=added,
        changed=tuple(changed),
        restarted=tuple(c for c in kept if c in restart),
        adopted=tuple(adopted),
        retuned=tuple(retuned),
        flags=tuple(f for f in _FLAGS if getattr(old, f) != getattr(new, f)),
        reordered=kept != kept_old_order,
    )


def _adoptable(before: ChildSpec, after: ChildSpec) -> bool:
    """Two static supervisor children that differ only below themselves."""
    return (
        isinstance(before.start, SupervisorSpec)
        and isinstance(after.start, SupervisorSpec)
        and attrs.evolve(before, start=after.start, **{f: getattr(after, f) for f in IN_PLACE})
        == after
    )


def declared_paths(start: object, path: str, *, workers: bool = False) -> Iterator[str]:
    """The paths of every child (only the workers, with *workers*) that a static supervisor
    spec *start* at *path* declares, at every depth; none for a worker or a dynamic one."""
    if isinstance(start, SupervisorSpec):
        for child in start.children:
            child_path = join_path(path, child.id)
            if not workers or child.type is ChildType.WORKER:
                yield child_path
            yield from declared_paths(child.start, child_path, workers=workers)


def file_order(spec: SupervisorSpec, path: str = "/") -> dict[str, int]:
    """Every path *spec* declares, at any depth, numbered in file order (a supervisor before
    its children, its children before its next sibling)."""
    return {child: index for index, child in enumerate(declared_paths(spec, path))}


def plan_tree(old: SupervisorSpec, new: SupervisorSpec, path: str = "/") -> list[Reconfiguration]:
    """Every supervisor's changes, parents before their children; unchanged ones left out."""
    plans: list[Reconfiguration] = []
    here = plan_reconfiguration(path, old, new)
    if not here.empty:
        plans.append(here)
    old_by_id = {c.id: c for c in old.children}
    new_by_id = {c.id: c for c in new.children}
    for child_id in here.adopted:
        if child_id in here.restarted:
            continue  # restarted whole with its new spec, with a changed sibling
        before, after = old_by_id[child_id].start, new_by_id[child_id].start
        assert isinstance(before, SupervisorSpec)
        assert isinstance(after, SupervisorSpec)
        plans.extend(plan_tree(before, after, join_path(path, child_id)))
    return plans
