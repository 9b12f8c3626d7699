"""The operations files: alert rules pass promtool and link runbooks, the dashboard is sound.

The rules file is read with promtool (its syntax and unit tests) and with a few regular
expressions here (alert names, runbook links): the number of alerts found here is checked
against the number of rules promtool found, so the two readings cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
MONITORING: Final = ROOT / "monitoring"
RUNBOOKS: Final = ROOT / "runbooks"
RULES: Final = MONITORING / "corral.rules.yml"
RULE_TESTS: Final = MONITORING / "corral.rules.test.yml"
DASHBOARD: Final = MONITORING / "grafana-dashboard.json"

RUNBOOK_URL: Final = re.compile(
    r"^https://github\.com/corral-project/corral/blob/main/runbooks/([a-z0-9-]+\.md)$"
)
SECTIONS: Final = ("Symptom", "Impact", "Diagnose", "Mitigate", "Follow up")
GUIDES: Final = frozenset({"README.md", "deployment.md", "troubleshooting.md"})
ALERT_PAGES: Final = sorted(p for p in RUNBOOKS.glob("*.md") if p.name not in GUIDES)

# Every series the daemon exports (corral/daemon/metrics.py), with the suffixes Prometheus
# gives counters and histograms.
METRICS: Final = frozenset(
    {
        "corral_build_info",
        "corral_ready",
        "corral_control_commands_total",
        "corral_event_loop_lag_seconds_bucket",
        "corral_event_loop_lag_seconds_sum",
        "corral_event_loop_lag_seconds_count",
        "corral_event_loop_stalls_total",
        "corral_child_up",
        "corral_mailbox_depth",
        "corral_mailbox_capacity",
        "corral_messages_handled_total",
        "corral_child_backoff_seconds",
        "corral_child_restarts_total",
        "corral_child_exits_total",
        "corral_dead_letters_total",
        "corral_breaker_state",
        "corral_breaker_calls_total",
        "corral_breaker_transitions_total",
        "corral_call_fallbacks_total",
        "corral_service_level",
        "corral_child_given_up_total",
        "corral_children",
        "corral_supervisor_restarts_remaining",
        "corral_supervisor_intensity",
        "corral_supervisor_escalations_total",
        "corral_supervisor_gave_up_total",
        "corral_message_handling_seconds_bucket",
        "corral_call_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_threads",
        "process_start_time_seconds",
    }
)

_RULE_START: Final = re.compile(r"^\s*- (?:alert|record):", re.MULTILINE)
_ALERT_NAME: Final = re.compile(r"^\s*- alert:\s*(\S+)\s*$", re.MULTILINE)
_RUNBOOK: Final = re.compile(r"^\s*runbook_url:\s*(\S+)\s*$", re.MULTILINE)

# PromQL, taken apart just enough to find the metric names in an expression.
_STRINGS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS: Final = re.compile(r"\{[^}]*\}")
_RANGES: Final = re.compile(r"\[[^\]]*\]")
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLES: Final = re.compile(r"\$\{?\w+\}?")
_NUMBERS: Final = re.compile(r"(?<![\w:])\.?\d[\w.]*")  # 0.99, 1e3, 5m
_IDENTIFIER: Final = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; its absence fails the tests, as the rules would go unchecked."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap")
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and capture its output."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def alerts() -> dict[str, str]:
    """Each alert's name and its rule's text (up to the next rule)."""
    text = RULES.read_text(encoding="utf-8")
    starts = [m.start() for m in _RULE_START.finditer(text)]
    blocks = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    found: dict[str, str] = {}
    for block in blocks:
        name = _ALERT_NAME.search(block)
        assert name is not None, f"not an alert rule:\n{block}"
        assert name.group(1) not in found, f"alert {name.group(1)} is defined twice"
        found[name.group(1)] = block
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are no function or keyword."""
    text = _STRINGS.sub('""', expr)  # first: a string may hold braces or brackets
    for pattern in (_MATCHERS, _RANGES, _GROUPING, _VARIABLES, _NUMBERS):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or an operator
        names.add(word)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets (in rows too) and variables."""
    queries: list[str] = []
    panels: list[dict[str, Any]] = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        queries.extend(target["expr"] for target in panel.get("targets", []))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules` accepts the rules file, and every rule in it is an alert."""
    result = run(promtool, "check", "rules", RULES.name, cwd=MONITORING)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    count = re.search(r"SUCCESS: (\d+) rules found", output)
    assert count is not None, output
    assert int(count.group(1)) == len(alerts()), output


def test_rule_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules` passes every case of the rules' unit tests."""
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_tests() -> None:
    """Every alert is evaluated by the unit tests, in a case that fires and one that does not."""
    tests = RULE_TESTS.read_text(encoding="utf-8")
    for name in alerts():
        cases = re.findall(
            rf"^\s*alertname: {name}\s*\n\s*exp_alerts:(.*)$", tests, flags=re.MULTILINE
        )
        assert "" in [c.strip() for c in cases], f"{name}: no case where it fires"
        assert "[]" in [c.strip() for c in cases], f"{name}: no case where it does not fire"


def test_every_alert_links_an_existing_runbook() -> None:
    """Every alert has a severity and a runbook_url naming a page that exists in runbooks/."""
    found = alerts()
    assert found
    for name, block in found.items():
        assert re.search(r"^\s*severity: (critical|warning)\s*$", block, re.MULTILINE), name
        url = _RUNBOOK.search(block)
        assert url is not None, f"{name} has no runbook_url"
        page = RUNBOOK_URL.match(url.group(1))
        assert page is not None, f"{name}: {url.group(1)} is not a runbooks/ page on main"
        assert (RUNBOOKS / page.group(1)).is_file(), f"{name}: runbooks/{page.group(1)} missing"


@pytest.mark.parametrize("page", ALERT_PAGES, ids=lambda p: p.name)
def test_runbook_page_has_the_five_sections(page: Path) -> None:
    """An alert's runbook page has exactly Symptom, Impact, Diagnose, Mitigate, Follow up."""
    text = page.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+?)\s*$", text, flags=re.MULTILINE)
    assert tuple(headings) == SECTIONS


def test_runbook_index_links_every_page() -> None:
    """runbooks/README.md links every other page in runbooks/."""
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+\.md)", index))
    pages = {p.name for p in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert pages
    assert pages <= linked, sorted(pages - linked)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('corral_ready{instance=~"$instance"} == 0', {"corral_ready"}),
        (
            "histogram_quantile(0.99, sum by (supervisor, le) "
            "(rate(corral_call_duration_seconds_bucket[$__rate_interval])))",
            {"corral_call_duration_seconds_bucket"},
        ),
        (
            "rate(a_sum[5m]) / on (instance) group_left (version) b_info offset 1h > bool 1e3",
            {"a_sum", "b_info"},
        ),
        ('time() - process_start_time_seconds{job="x{y}"}', {"process_start_time_seconds"}),
    ],
    ids=["selector", "histogram", "operators", "string-with-braces"],
)
def test_metric_names_finds_the_selected_metrics(expr: str, names: set[str]) -> None:
    """The PromQL reader finds metric names and skips functions, labels, numbers, keywords."""
    assert metric_names(expr) == names


def test_dashboard_uses_only_exported_metrics() -> None:
    """The dashboard parses, and every metric its queries name is one corral exports."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    queries = dashboard_queries(dashboard)
    assert queries
    for query in queries:
        # label_values(metric, label): the second argument is a label name
        expr = re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", query)
        names = metric_names(expr)
        assert names, f"no metric in {query!r}"
        assert names <= METRICS, f"{query!r} uses {sorted(names - METRICS)}"
