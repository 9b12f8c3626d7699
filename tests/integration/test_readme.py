"""The README's examples run as written, on both backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _text() -> str:
    """The README but its "Your code" section (tests/e2e/test_your_code.py runs that one)."""
    before, _, rest = README.read_text().partition("\n## Your code\n")
    return before + "\n## " + rest.split("\n## ", 1)[1]


def python_blocks() -> list[str]:
    """The examples run here; a program of its own (``# app.py``, it serves a socket) is run
    as a program by tests/e2e/test_embedded.py."""
    blocks = re.findall(r"```python\n(.*?)```", _text(), flags=re.DOTALL)
    return [block for block in blocks if not block.startswith("# app.py")]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_readme_examples_run(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The actor, driving-from-inside and tree examples define, start, message and stop real
    trees."""
    blocks = python_blocks()
    assert len(blocks) == 7
    namespace: dict[str, object] = {}
    exec(blocks[0], namespace)  # noqa: S102  # the README's own code, on purpose
    for program in blocks[1:]:
        program = program.replace("anyio.run(main)", f"anyio.run(main, backend={backend!r})")
        exec(program, namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "fetched: 3" in out  # the cache's deferred replies, one task each
    assert "doubled: [0, 2, 4]" in out  # the dispatcher's jobs, one child each
    assert "> hello" in out  # the logger actor printed the call it answered
    assert "SupervisorStatistics(path='/'" in out
    assert "exited: actor /db is unhealthy: 2 probes failed in a row" in out  # health probes
    assert "rows for users" in out
    assert "ACME: price on request" in out  # the caller's fallback for a slow callee
    assert "degraded: non-essential down: /prices stopped" in out
    # the breaker, open: 30 s less up to 10% of jitter
    assert re.search(r"^ACME: price unavailable, next try in (2[7-9]|30) s$", out, re.MULTILINE)
    assert callable(namespace["main"])


def test_readme_config_example_is_valid_up_to_its_imports() -> None:
    """The README's reference config decodes key by key; only its example app is missing."""
    import msgspec

    from corral.daemon import config

    blocks = re.findall(r"```toml\n(.*?)```", _text(), flags=re.DOTALL)
    assert len(blocks) == 1
    decoded = msgspec.toml.decode(blocks[0], type=config.Config)
    assert [c.id for c in decoded.supervisor.children] == ["api", "pipeline", "sessions"]
    expected = (
        "README.md: cannot import 'myapp.api:Server': ModuleNotFoundError: No module named"
        " 'myapp' at $.supervisor.children[0].start"
    )
    with pytest.raises(config.ConfigError) as caught:
        config.parse(blocks[0], "README.md")
    assert str(caught.value) == expected
