"""The README's "Your code" section, as written: a service directory with its own package
and config, checked and run from that directory by real processes, with nothing on
PYTHONPATH; and python-path for a src/ layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.support import ROOT, TIMEOUT, Daemon

SECTION = (ROOT / "README.md").read_text().split("\n## Your code\n", 1)[1].split("\n## ", 1)[0]


def block_after(label: str, language: str) -> str:
    """The code block right after the line *label* in the README's "Your code"."""
    match = re.search(re.escape(label) + rf"\n\n```{language}\n(.*?)```", SECTION, re.DOTALL)
    assert match is not None, f"no {language} block after {label!r} in README.md"
    return match.group(1)


def corral(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`corral ARGS` in *cwd*, as a person runs it: the installed command (`python -m` would
    put the current directory on the path itself), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(  # the venv's own entry point
        [str(Path(sys.executable).parent / "corral"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def service(workdir: Path, package_root: str = "") -> Path:
    """The README's service directory (its package under *package_root*)."""
    home = workdir / "jobsvc-service"
    package = home / package_root / "jobsvc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "actors.py").write_text(block_after("`jobsvc/actors.py`:", "python"))
    (home / "app.toml").write_text(block_after("`app.toml`:", "toml"))
    return home


def test_the_service_in_the_readme_checks_and_runs_from_its_directory(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """`corral check app.toml` and `corral run app.toml` in the service's directory import
    its package (it is not installed, and not on PYTHONPATH)."""
    home = service(workdir)
    checked = corral(home, "check", "app.toml")
    assert (checked.returncode, checked.stdout, checked.stderr) == (
        0,
        "app.toml: valid (1 children under the root)\n",
        "",
    )
    # Run from elsewhere, so that only the config's directory can make the package importable
    # (Daemon runs `python -m corral`, which would add its own current directory).
    d = Daemon.start(home / "app.toml", backend, cwd=workdir)
    daemons.append(d)
    shown = corral(workdir, "status", "/pricing")  # ./run/control.sock, the default
    assert shown.returncode == 0, shown
    assert shown.stdout.startswith("● /pricing  running")


def test_a_src_layout_names_its_directory_in_python_path(workdir: Path) -> None:
    """With the package under src/, python-path = ["src"] makes it importable; without it,
    the error names the module."""
    home = service(workdir, "src")
    missing = corral(home, "check", "app.toml")
    assert missing.returncode == 1
    assert "cannot import 'jobsvc.actors:Pricing': ModuleNotFoundError" in missing.stderr
    config = home / "app.toml"
    config.write_text(config.read_text().replace("[daemon]", '[daemon]\npython-path = ["src"]'))
    assert corral(workdir, "check", str(config)).returncode == 0  # from any directory


def test_a_reload_with_new_code_says_the_code_was_not_reloaded(
    workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """A keyword added to the actor's __init__ and to the config: the reload fails, saying
    the module changed since it was imported and that a restart runs the new code; a change
    the old code accepts is applied, with a note that the code was not reloaded."""
    home = service(workdir)
    d = Daemon.start(home / "app.toml", backend, cwd=workdir)
    daemons.append(d)
    actors = home / "jobsvc" / "actors.py"
    actors.write_text(
        actors.read_text().replace(
            "def __init__(self, rate: float) -> None:",
            "def __init__(self, rate: float, currency: str = 'EUR') -> None:",
        )
    )
    config = home / "app.toml"
    original = config.read_text()
    config.write_text(
        original.replace("args = { rate = 1.2 }", 'args = { rate = 1.2, currency = "USD" }')
    )
    refused = corral(workdir, "reload")
    assert refused.returncode == 1
    assert "args do not fit jobsvc.actors:Pricing(rate)" in refused.stderr
    assert (
        f"{actors} has changed since it was imported: the daemon keeps running the code it imported"
        in refused.stderr
    )
    assert "restart the daemon to run the new code" in refused.stderr
    config.write_text(original.replace("rate = 1.2", "rate = 1.5"))
    applied = corral(workdir, "reload")
    assert applied.returncode == 0, applied
    assert "  restart /pricing (spec changed" in applied.stdout
    assert f"note: {actors} has changed since it was imported" in applied.stdout
