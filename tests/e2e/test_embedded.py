"""A library program's tree, seen as an operator sees the daemon's: a real program (its own
`python app.py`, in its own directory) opens its tree with a control socket and a metrics
address, and the real `corral` command and a real HTTP client read and steer it; `corral
call` and `corral cast` work against `corral run` just the same."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.e2e.support import ROOT, TIMEOUT, Daemon, run_cli, write_config
from tests.integration.support import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

README = ROOT / "README.md"


def readme_app(backend: str, port: int) -> str:
    """The README's program (its ``# app.py`` block), on *backend*, metrics on *port*."""
    found: list[str] = re.findall(
        r"```python\n(# app\.py.*?)```", README.read_text(), flags=re.DOTALL
    )
    (app,) = found
    assert '"127.0.0.1:9811"' in app
    assert app.rstrip().endswith("anyio.run(main)")
    app = app.replace('"127.0.0.1:9811"', f'"127.0.0.1:{port}"')
    return app.replace("anyio.run(main)", f"anyio.run(main, backend={backend!r})")


@pytest.fixture
def app(workdir: Path, backend: str) -> Iterator[tuple[Path, int]]:
    """The program running in *workdir*: its socket and its metrics port."""
    port = free_port()
    (workdir / "app.py").write_text(readme_app(backend, port))
    (workdir / "run").mkdir(mode=0o700)
    with subprocess.Popen(  # the program as its author runs it, from its own directory
        [sys.executable, "app.py"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "up\n", proc.stderr.read() if proc.stderr else ""
            yield workdir / "run" / "app.sock", port
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=TIMEOUT)
            assert "KeyboardInterrupt" in err  # Ctrl-C ended it, as anyio.run ends
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not (workdir / "run" / "app.sock").exists()  # removed as the program ended


def test_the_cli_reads_and_steers_a_library_programs_tree(app: tuple[Path, int]) -> None:
    """The README's program: status, call, cast, restart, why, events and metrics answer as
    against `corral run`; reload and shutdown are refused (the program owns its tree)."""
    sock, _ = app

    def corral(*args: str) -> str:
        result = run_cli("--socket", str(sock), *args)
        assert (result.rc, result.err) == (0, ""), result
        return result.out

    assert corral("status").splitlines()[0].startswith("● /  running   one-for-one")
    assert corral("call", "/store", '{"put": ["colour", "green"]}') == '"ok"\n'
    assert corral("cast", "/store", '{"put": ["shape", "round"]}') == "/store: queued\n"
    assert corral("call", "/store", '{"get": "shape"}') == '"round"\n'  # queued before it
    assert corral("restart", "/store") == "/store: restarted\n"
    assert corral("call", "/store", '{"get": "colour"}') == "null\n"  # a new incarnation
    why = json.loads(corral("why", "/store", "--json"))
    assert (why["state"], why["restarts"]) == ("running", 1)
    events = [json.loads(line) for line in corral("events", "--json").splitlines()]
    assert [(e["event"], e["path"]) for e in events] == [
        ("child-started", "/store"),
        ("child-stopped", "/store"),
        ("child-started", "/store"),
    ]
    assert "corral_child_restarts_total" in corral("metrics")
    for command in ("reload", "shutdown"):
        refused = run_cli("--socket", str(sock), command)
        assert refused.rc == 1
        assert "ERROR (unsupported) this tree is embedded in a program" in refused.err
    assert corral("status", "/store").startswith("● /store  running")


def test_prometheus_scrapes_a_library_programs_tree(app: tuple[Path, int]) -> None:
    """/metrics, /healthz and /readyz over real HTTP, as the daemon's listener serves them."""
    _, port = app
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as page:
        body = page.read().decode()
    assert 'corral_children{supervisor="/",state="running"} 1' in body
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=TIMEOUT) as page:
        assert (page.status, page.read()) == (200, b"ready\n")


def test_call_and_cast_against_corral_run(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """The shipped demo's echo takes socket messages; a worker that does not say so refuses."""
    config = write_config(
        workdir,
        """
[supervisor]
[[supervisor.children]]
id = "echo"
start = "corral.demo:Echo"
[[supervisor.children]]
id = "plain"
start = "tests.e2e.actors:Echo"
""",
    )
    daemons.append(d := Daemon.start(config, backend))
    answered = d.cli("call", "/echo", '{"a": [1, 2.5, null, true]}')
    assert (answered.rc, answered.out) == (0, '{"a": [1, 2.5, null, true]}\n')
    assert d.cli("cast", "/echo", '"x"').out == "/echo: queued\n"
    refused = d.cli("call", "/plain", '"x"')
    assert (refused.rc, refused.out) == (1, "")
    assert refused.err.startswith(
        "corral: /plain: ERROR (unsupported) /plain (tests.e2e.actors:Echo) does not take"
        " messages from the socket"
    )
    bad = d.cli("call", "/echo", "{nope")
    assert bad.rc == 2
    assert bad.err.startswith("corral: MESSAGE must be JSON (")
    slow = d.cli("call", "/echo", '"x"', "--timeout", "0")
    assert slow.rc == 2
    assert "expected seconds above 0, at most 3600, got '0'" in slow.err
