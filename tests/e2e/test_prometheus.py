"""A real Prometheus (``with-prometheus``) scrapes a real ``corral run`` and sees its restarts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.support import ROOT, Daemon, write_config

if TYPE_CHECKING:
    from collections.abc import Iterator

TOOLS = Path(os.environ.get("CORRAL_SHARED_TOOLS", "/work/shared/tools"))
DEADLINE = 60.0  # Prometheus' discovery takes 5-7 s; a passing test never waits this long
BODY = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "worker"
start = "tests.e2e.actors:Echo"
"""


class Prometheus:
    """A private Prometheus whose file_sd directory takes new targets at run time."""

    def __init__(self, url: str, sd_dir: Path) -> None:
        self.url = url
        self.sd_dir = sd_dir

    def add_target(self, address: str, job: str) -> None:
        temporary = self.sd_dir / f".{job}.json"
        temporary.write_text(json.dumps([{"targets": [address], "labels": {"job": job}}]))
        temporary.rename(self.sd_dir / f"{job}.json")

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310  # loopback http
            body = json.load(answer)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, value: str) -> list[dict[str, Any]]:
        """Poll *promql* until a sample has *value* (discovery and scrapes are periodic)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            result = self.query(promql)
            if any(r["value"][1] == value for r in result):
                return result
            if time.monotonic() > deadline:
                msg = f"{promql} never gave {value} within {DEADLINE} s; last: {result}"
                raise AssertionError(msg)
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    """One Prometheus for the module, loading the shipped alert rules too."""
    tool = TOOLS / "with-prometheus"
    if not tool.exists():
        pytest.fail(f"{tool} is missing (set CORRAL_SHARED_TOOLS to the tools' directory)")
    state = Path(tempfile.mkdtemp(prefix="corral-prom-"))
    port = _free_port()
    process = subprocess.Popen(  # a fixed tool
        [
            str(tool),
            "--port",
            str(port),
            "--dir",
            str(state),
            "--scrape-interval",
            "1s",
            "--rules",
            str(ROOT / "monitoring" / "corral.rules.yml"),
            "--",
            "sleep",
            "3600",
        ],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while not _ready(url):
            assert process.poll() is None, f"with-prometheus exited with {process.returncode}"
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield Prometheus(url, state / "sd")
    finally:
        process.send_signal(signal.SIGTERM)  # the tool stops Prometheus and cleans up
        process.wait(timeout=DEADLINE)
        shutil.rmtree(state, ignore_errors=True)


def test_prometheus_sees_the_restart_of_a_killed_child(
    prometheus: Prometheus, workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """After `corral kill`, Prometheus' query API returns the restart counter at 1."""
    config = write_config(workdir, BODY)
    text = config.read_text().replace('metrics-listen = ""', 'metrics-listen = "127.0.0.1:0"')
    config.write_text(text)
    daemon = Daemon.start(config, backend, wait_ready=False)
    daemons.append(daemon)
    url = daemon.wait_for(lambda r: r.get("event") == "metrics-listening")["url"]
    daemon.wait_for(lambda r: "ready" in r.get("message", ""))
    job = f"corral-{backend}"
    prometheus.add_target(url.removeprefix("http://"), job)
    prometheus.wait_for(f'up{{job="{job}"}}', "1")
    restarts = f'corral_child_restarts_total{{job="{job}",path="/worker",reason="error"}}'
    prometheus.wait_for(restarts, "0")  # seen before the crash too: rate() sees the first
    assert daemon.cli("kill", "/worker").rc == 0
    daemon.event("child-started", "/worker")
    (sample,) = prometheus.wait_for(restarts, "1")
    assert sample["metric"]["instance"] == url.removeprefix("http://")
    (up,) = prometheus.query(f'corral_child_up{{job="{job}",path="/worker"}}')
    assert up["value"][1] == "1"
    (ready,) = prometheus.query(f'corral_ready{{job="{job}"}}')
    assert ready["value"][1] == "1"


POLLER = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "poller"
start = "tests.e2e.actors:Poller"
breakers = { upstream = { failures = 1, wait = 3600, wait-cap = 3600 } }
"""


def test_an_open_breaker_is_seen_by_prometheus_and_its_alert_rule(
    prometheus: Prometheus, workdir: Path, backend: str, daemons: list[Daemon]
) -> None:
    """The poller's breaker opens; Prometheus scrapes corral_breaker_state at 1 for "open",
    and the shipped CorralBreakerOpen rule is pending (it fires after 10 minutes). After
    `corral breaker reset` the state is closed and the alert is gone. The CLI tells the
    same story meanwhile."""
    config = write_config(workdir, POLLER)
    text = config.read_text().replace('metrics-listen = ""', 'metrics-listen = "127.0.0.1:0"')
    config.write_text(text)
    daemon = Daemon.start(config, backend, wait_ready=False)
    daemons.append(daemon)
    url = daemon.wait_for(lambda r: r.get("event") == "metrics-listening")["url"]
    daemon.event("breaker-changed", "/poller")
    job = f"corral-breaker-{backend}"
    prometheus.add_target(url.removeprefix("http://"), job)
    state = f'corral_breaker_state{{job="{job}",path="/poller",breaker="upstream",state="%s"}}'
    prometheus.wait_for(state % "open", "1")
    alert = f'ALERTS{{alertname="CorralBreakerOpen",job="{job}"}}'
    (pending,) = prometheus.wait_for(alert, "1")
    assert pending["metric"]["alertstate"] == "pending"
    assert (pending["metric"]["path"], pending["metric"]["breaker"]) == ("/poller", "upstream")

    status = daemon.cli("status")
    assert status.rc == 0
    assert status.out.splitlines()[-1] == (
        "1 breaker(s) not closed: /poller upstream (see corral breakers)"
    )
    listed = daemon.cli("breakers")
    assert listed.rc == 0
    assert re.fullmatch(
        r"/poller upstream: open \(next trial in \d+m \d+s\) for \d+\.\ds;"
        r" 1 failure in a row, window 1/1 failed; totals 0 ok, 1 failed, 0 rejected,"
        r" 0 ignored; last failure: ConnectionRefusedError\('upstream refused the connection'\)\n",
        listed.out,
    ), listed.out

    reset = daemon.cli("breaker", "reset", "/poller", "upstream")
    assert (reset.rc, reset.out) == (
        0,
        "/poller: breaker 'upstream' closed, its window and run of failures emptied\n",
    )
    prometheus.wait_for(state % "closed", "1")
    deadline = time.monotonic() + DEADLINE
    while prometheus.query(alert):  # the next rule evaluation drops it
        assert time.monotonic() < deadline, prometheus.query(alert)
        time.sleep(0.5)
    unknown = daemon.cli("breaker", "open", "/poller", "nope")
    assert unknown.rc == 1
    assert unknown.err == (
        "corral: /poller: ERROR (not_found) /poller has no breaker 'nope' (declared: upstream)\n"
    )
