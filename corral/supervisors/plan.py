"""OTP's restart tables, as plain functions.

``should_restart`` is ``supervisor:do_restart/3``: restart type x exit kind. ``affected``
is the strategy part of ``supervisor:restart/3``: which children take part in a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.supervisors.spec import ExitKind, RestartType, Strategy

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("affected", "should_restart")


def should_restart(restart: RestartType, kind: ExitKind) -> bool:
    """Whether a child of this restart type is restarted after an exit of this kind.

    =========  ======  ========  =====
    type       normal  shutdown  error
    =========  ======  ========  =====
    permanent  yes     yes       yes
    transient  no      no        yes
    temporary  no      no        no
    =========  ======  ========  =====
    """
    if restart is RestartType.PERMANENT:
        return True
    if restart is RestartType.TRANSIENT:
        return kind is ExitKind.ERROR
    return False


def affected(strategy: Strategy, order: Sequence[str], failed: str) -> Sequence[str]:
    """The children that take part in restarting *failed*, in start order.

    one-for-one: the failed child alone; one-for-all: every child; rest-for-one: the failed
    child and every child started after it. They are stopped in reverse of this order and
    started in this order.
    """
    if strategy is Strategy.ONE_FOR_ONE:
        return (failed,)
    if strategy is Strategy.ONE_FOR_ALL:
        return order
    return order[list(order).index(failed) :]
