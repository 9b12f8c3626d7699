"""The demo tree that `make run` shows."""

from __future__ import annotations

import pytest

from corral import demo

pytestmark = pytest.mark.anyio


async def test_demo_runs_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo starts its tree, sends work, restarts the failing leader and stops cleanly."""
    await demo.main(rounds=8)
    out = capsys.readouterr().out
    assert "corral demo" in out
    assert "started     /group/leader (restarts: 1)" in out  # the 7th round fails the leader
    assert "stopped     /ticker" in out


def test_describe_renders_each_kind() -> None:
    """Every event kind renders as one readable line."""
    import corral

    line = demo.describe(corral.SupervisorEscalated("/g", "/", 1.0))
    assert line.startswith("SupervisorEscalated(")
    assert demo.describe(corral.ChildStopped("/a", "/", 1.0)) == "stopped     /a"
