"""journald: the daemon's entries in a real journal (``with-journald``), `corral logs`, secrets
kept out of it, and the message catalog under ``journalctl -x``.

One recorded run per backend (``recorded``): the daemon logs to a private journald while a
scenario produces every kind of entry, then stops. The tests read the journal files it left
behind: journald writes every entry queued before it is stopped (it handles SIGTERM after its
sockets), so once ``with-journald`` has exited the files are complete and nothing is polled.
While the scenario runs, a ``journalctl --follow`` tells when an asynchronous entry arrived.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from corral.daemon.journal import MESSAGE_IDS
from tests.e2e.support import (
    ROOT,
    TIMEOUT,
    Daemon,
    Result,
    run_cli,
    shared_tool,
    write_config,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SECRETS = ("hunter2", "s3cret")

TREE = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "steady"
start = "tests.e2e.actors:Steady"

[[supervisor.children]]
id = "drop"
start = "tests.e2e.actors:Dropper"
mailbox = { capacity = 1, overflow = "drop-newest" }

[[supervisor.children]]
id = "app"
type = "supervisor"
children = [
  { id = "db", start = "tests.e2e.actors:Echo" },
  { id = "cache", start = "tests.e2e.actors:Steady" },
  { id = "chatty", start = "tests.e2e.actors:Chatty" },
]

[[supervisor.children]]
id = "apple"  # a sibling whose path starts like /app's: not of /app
start = "tests.e2e.actors:Echo"

[[supervisor.children]]
id = "vault"
type = "supervisor"

[[supervisor.children.children]]
id = "login"  # crashes at boot with its secrets in the exception; restarted in an hour
start = "tests.e2e.actors:secretive"
args = { password = "hunter2", url = "postgres://u:s3cret@db/x" }
backoff = { initial = 3600.0, cap = 3600.0 }

[[supervisor.children]]
id = "poller"  # after /vault (its entries come later): its breaker opens at once
start = "tests.e2e.actors:Poller"
breakers = { upstream = { failures = 1, wait = 3600, wait-cap = 3600 } }

[[supervisor.children]]
id = "flaky"  # crash-loops once asked to: gives up, escalates, and is not restarted
type = "supervisor"
restart = "temporary"
intensity = 1
period = 60
child = { id = "c", start = "tests.e2e.actors:crash_on_start", backoff = { initial = 0.0 } }

[[supervisor.children]]
id = "pool"
type = "supervisor"
child = { id = "w", start = "tests.e2e.actors:FailsToStart", restart = "temporary" }

[[supervisor.children]]
id = "stallers"
type = "supervisor"
[supervisor.children.child]  # blocks the loop for 2 s once started
id = "b"
start = "tests.e2e.actors:Blocker"
restart = "temporary"
args = { seconds = 2.0 }
"""


def journalctl() -> str:
    path = shutil.which("journalctl")
    if path is None:
        pytest.fail("journalctl is missing (apt-get install systemd)")
    return path


class Follower:
    """``journalctl --follow`` over the journal files: each corral entry as it is written."""

    def __init__(self, journal: Path) -> None:
        self.proc = subprocess.Popen(
            [
                *(journalctl(), "--directory", str(journal), "--output", "json"),
                *("--follow", "--lines", "all", "--no-pager", "SYSLOG_IDENTIFIER=corral"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.entries: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.entries.put(json.loads(line))
        self.entries.put(None)

    def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first entry (from the journal's start) for which *match* is true."""
        for entry in self.seen:
            if match(entry):
                return entry
        while True:
            try:
                new = self.entries.get(timeout=TIMEOUT)
            except queue.Empty:
                msg = f"no matching journal entry within {TIMEOUT} s; last: {self.seen[-10:]}"
                raise AssertionError(msg) from None
            assert new is not None, f"journalctl --follow ended ({self.proc.wait()})"
            self.seen.append(new)
            if match(new):
                return new

    def event(self, kind: str, path: str) -> dict[str, Any]:
        return self.wait_for(
            lambda e: e.get("CORRAL_EVENT") == kind and e.get("CHILD_PATH") == path
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def wait_served(d: Daemon) -> None:
    """Until the daemon answers on its socket (its log goes to journald, not to stderr)."""
    deadline = time.monotonic() + TIMEOUT
    while (result := d.cli("status")).rc != 0:
        assert d.proc.poll() is None, f"the daemon exited ({d.wait()}): {d.seen[-10:]}"
        assert time.monotonic() < deadline, f"not served within {TIMEOUT} s: {result}"
        time.sleep(0.05)


def journal_entries(journal: Path, *matches: str) -> list[dict[str, Any]]:
    """The entries of the journal files in *journal* that have every ``FIELD=value``."""
    result = subprocess.run(
        [journalctl(), "--directory", str(journal), "--output", "json", "--no-pager", *matches],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


@attrs.frozen
class Recorded:
    """A finished daemon run: its journal files and what commands said while it ran."""

    journal: Path
    said: dict[str, Result]

    def entries(self, *matches: str) -> list[dict[str, Any]]:
        return journal_entries(self.journal, *matches)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """As conftest's, once per module: the `recorded` run is shared by this module's tests."""
    return str(request.param)


@pytest.fixture(scope="module")
def recorded(backend: str) -> Iterator[Recorded]:
    """The scenario, once per backend: every kind of entry, secrets in a crash, then a stop."""
    directory = Path(tempfile.mkdtemp(prefix="corral-"))
    try:
        config = write_config(
            directory, TREE, daemon="loop-stall-timeout = 0.5", log_format="journal"
        )
        prefix = (shared_tool("with-journald"), "--dir", str(directory / "jd"), "--")
        d = Daemon.start(config, backend, wait_ready=False, prefix=prefix)
        try:
            wait_served(d)
            follower = Follower(directory / "jd" / "journal")
            try:
                yield Recorded(directory / "jd" / "journal", scenario(d, follower))
            finally:
                follower.close()
        finally:
            if d.proc.poll() is None:
                d.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def scenario(d: Daemon, follower: Follower) -> dict[str, Result]:
    """Drive the daemon through every kind of entry; returns the outputs of the commands that
    show the secret child, captured while it ran. Ends with the daemon stopped (exit 0)."""
    follower.event("restart-scheduled", "/vault/login")  # crashed at boot, back in an hour
    follower.event("breaker-changed", "/poller")  # opened by its first poll
    assert d.cli("breaker", "reset", "/poller", "upstream").rc == 0
    follower.wait_for(lambda e: e.get("BREAKER_STATE") == "closed")
    assert d.cli("start-child", "/flaky", "--id", "c1").rc == 0
    follower.event("supervisor-escalated", "/flaky")
    failed = d.cli("start-child", "/pool", "--id", "w1")
    assert failed.rc == 1, failed
    assert "child 'w1' failed to start" in failed.err
    assert d.cli("stop", "/steady").rc == 0
    assert d.cli("kill", "/app/db").rc == 0
    follower.wait_for(lambda e: e.get("CHILD_PATH") == "/app/db" and e.get("RESTARTS") == "1")
    assert d.cli("start-child", "/stallers", "--id", "b1").rc == 0
    follower.wait_for(
        lambda e: e.get("CORRAL_EVENT") == "loop-recovered" and float(e["DELAY"]) >= 1.5
    )
    said = {
        " ".join(args): d.cli(*args)
        for args in (
            ("why", "/vault/login"),
            ("why", "/vault/login", "--json"),
            ("status", "--json"),
            ("events", "--recent", "100"),
            ("events", "--recent", "100", "--json"),
        )
    }
    assert d.stop() == 0
    return said


# (event kind, CHILD_PATH or None, fields one of the entries has)
KINDS: list[tuple[str, str | None, dict[str, str]]] = [
    ("child-started", "/app/db", {"SUPERVISOR": "/app", "RESTARTS": "1", "PRIORITY": "6"}),
    (
        "child-exited",
        "/flaky/c1",
        {
            "SUPERVISOR": "/flaky",
            "EXIT_KIND": "error",
            "EXCEPTION_TYPE": "RuntimeError",
            "EXCEPTION": "RuntimeError('crash loop')",
            "PRIORITY": "4",
        },
    ),
    ("child-exited", "/flaky", {"SUPERVISOR": "/", "EXIT_KIND": "shutdown", "PRIORITY": "6"}),
    (
        "child-exited",
        "/app/db",
        {"EXIT_KIND": "error", "EXCEPTION_TYPE": "Killed", "PRIORITY": "4"},
    ),
    ("restart-scheduled", "/flaky/c1", {"SUPERVISOR": "/flaky", "DELAY": "0.0", "PRIORITY": "6"}),
    ("child-stopped", "/steady", {"SUPERVISOR": "/", "PRIORITY": "6"}),
    (
        "start-failed",
        "/pool/w1",
        {"SUPERVISOR": "/pool", "EXCEPTION_TYPE": "RuntimeError", "PRIORITY": "3"},
    ),
    (
        "supervisor-gave-up",
        "/flaky",
        {
            "RESTARTS": "2",
            "REASON": "2 restarts within 60.0 s (limit 1), last of /flaky/c1",
            "PRIORITY": "3",
        },
    ),
    ("supervisor-escalated", "/flaky", {"SUPERVISOR": "/", "PRIORITY": "4"}),
    ("dead-letter", "/drop", {"REASON": "dropped", "PRIORITY": "4"}),
    (
        "audit",
        "/steady",
        {"COMMAND": "stop", "RESULT": "ok", "PEER_UID": "0", "PRIORITY": "6"},
    ),
    ("audit", "/app/db", {"COMMAND": "kill", "RESULT": "ok", "PRIORITY": "6"}),
    ("audit", "/pool", {"COMMAND": "start-child", "RESULT": "error start_failed"}),
    (
        "breaker-changed",
        "/poller",
        {
            "BREAKER": "upstream",
            "BREAKER_STATE": "open",
            "REASON": "1 failure in a row, last: ConnectionRefusedError: upstream refused the"
            " connection",
            "PRIORITY": "4",
        },
    ),
    (
        "breaker-changed",
        "/poller",
        {
            "BREAKER": "upstream",
            "BREAKER_STATE": "closed",
            "REASON": "reset by an operator (`corral breaker reset`)",
            "PRIORITY": "6",
        },
    ),
    ("audit", "/poller", {"COMMAND": "breaker", "RESULT": "ok"}),
    ("loop-stall", "/stallers/b1", {"PRIORITY": "3"}),
    ("loop-recovered", None, {"PRIORITY": "4"}),
    ("daemon-ready", None, {"PRIORITY": "6"}),
    ("daemon-stopping", None, {"PRIORITY": "6"}),
]


@pytest.mark.parametrize(
    ("kind", "path", "fields"),
    KINDS,
    ids=[f"{kind}:{path or '-'}:{fields.get('EXIT_KIND', '')}" for kind, path, fields in KINDS],
)
def test_each_event_kind_is_found_by_its_message_id(
    recorded: Recorded, kind: str, path: str | None, fields: dict[str, str]
) -> None:
    """journalctl MESSAGE_ID=<the kind's id> CHILD_PATH=<path> finds the entry, with its fields."""
    matches = [f"MESSAGE_ID={MESSAGE_IDS[kind]}"] + ([f"CHILD_PATH={path}"] if path else [])
    found = recorded.entries(*matches)
    assert found, f"no entry for {matches}"
    for entry in found:
        assert (entry["SYSLOG_IDENTIFIER"], entry["CORRAL_EVENT"]) == ("corral", kind)
    assert any(fields.items() <= entry.items() for entry in found), found


def test_a_loop_stall_names_the_actor_and_its_stack(recorded: Recorded) -> None:
    """The loop-stall entry names the blocking actor (CHILD_PATH) and its stack (STACK)."""
    [stall] = recorded.entries(f"MESSAGE_ID={MESSAGE_IDS['loop-stall']}", "CHILD_PATH=/stallers/b1")
    assert "blocked by actor /stallers/b1" in stall["MESSAGE"]
    innermost = stall["STACK"].rstrip().splitlines()[-2:]
    assert re.fullmatch(
        r'  File ".*/tests/e2e/actors\.py", line \d+, in block_the_loop', innermost[0]
    )
    assert innermost[1].strip() == "time.sleep(seconds)"
    recovered = recorded.entries(f"MESSAGE_ID={MESSAGE_IDS['loop-recovered']}")
    assert [e for e in recovered if 1.5 <= float(e["DELAY"]) < TIMEOUT]  # it blocks for 2 s


def messages(output: str) -> list[str]:
    """The messages of `corral logs` lines ("Nov 22 19:20:35 MESSAGE")."""
    return [line.split(" ", 3)[3] for line in output.splitlines() if not line.startswith(" ")]


def of_app(entry: dict[str, Any]) -> bool:
    """Whether the entry is about /app or below it (what `corral logs /app` keeps)."""
    path = entry.get("CHILD_PATH") or entry.get("SUPERVISOR") or ""
    return path == "/app" or path.startswith("/app/")


def test_logs_of_a_path_show_only_that_subtree(recorded: Recorded) -> None:
    """`corral logs /app` shows the entries of /app and its children, and no one else's."""
    result = run_cli("logs", "/app", "--directory", str(recorded.journal))
    assert (result.rc, result.err) == (0, "")
    everything = recorded.entries("SYSLOG_IDENTIFIER=corral")
    firsts = [e["MESSAGE"].splitlines()[0] for e in everything if of_app(e)]
    assert messages(result.out) == firsts  # a multi-line message: its first line, then indented
    shown = set(messages(result.out))
    assert {"started /app/db (restarts: 0)", "started /app/cache (restarts: 0)"} <= shown
    assert {"started /app (restarts: 0)", "stopped /app"} <= shown
    assert "/app/db exited (error): Killed('killed by an operator')" in shown
    assert not [m for m in shown if "/apple" in m or "/steady" in m]


def test_logs_without_a_path_show_every_entry(recorded: Recorded) -> None:
    """`corral logs` shows every corral entry, in the journal's order."""
    result = run_cli("logs", "--directory", str(recorded.journal), "--json")
    assert (result.rc, result.err) == (0, "")
    shown = [json.loads(line) for line in result.out.splitlines()]
    everything = recorded.entries("SYSLOG_IDENTIFIER=corral")
    assert [e["__CURSOR"] for e in shown] == [e["__CURSOR"] for e in everything]
    text = run_cli("logs", "--directory", str(recorded.journal)).out
    for entry in everything:
        assert entry["MESSAGE"].splitlines()[0] in text
    assert "started /steady (restarts: 0)" in text
    assert text.splitlines()[-1].endswith(" stopped")  # the daemon's last word


def test_logs_json_gives_entries_with_their_fields(recorded: Recorded) -> None:
    """`corral logs PATH --json` gives journalctl's entries, with CHILD_PATH at or below PATH."""
    result = run_cli("logs", "/flaky", "--directory", str(recorded.journal), "--json")
    assert (result.rc, result.err) == (0, "")
    shown = [json.loads(line) for line in result.out.splitlines()]
    assert {e["CHILD_PATH"] for e in shown} == {"/flaky", "/flaky/c1"}
    assert {e["CORRAL_EVENT"] for e in shown} >= {
        "child-started",
        "child-exited",
        "restart-scheduled",
        "supervisor-gave-up",
        "supervisor-escalated",
        "audit",
    }


def test_secrets_never_reach_the_journal(recorded: Recorded) -> None:
    """Neither the password nor the URL's password is in any field of any journal entry."""
    everything = recorded.entries()
    dumped = json.dumps(everything)
    assert [s for s in SECRETS if s in dumped] == []
    crash = recorded.entries(f"MESSAGE_ID={MESSAGE_IDS['child-exited']}", "CHILD_PATH=/vault/login")
    assert crash[0]["EXCEPTION"] == (
        "RuntimeError('login failed for postgres://u:<redacted>@db/x with password=<redacted>')"
    )
    assert "<redacted>" in crash[0]["MESSAGE"]


@pytest.mark.parametrize(
    "command",
    [
        "why /vault/login",
        "why /vault/login --json",
        "status --json",
        "events --recent 100",
        "events --recent 100 --json",
    ],
)
def test_secrets_are_redacted_in_command_output(recorded: Recorded, command: str) -> None:
    """What `corral why`, `status --json` and `events` said of the crash has no secret in it."""
    said = recorded.said[command]
    assert said.rc == 0, said
    assert [s for s in SECRETS if s in said.out + said.err] == []
    assert "postgres://u:<redacted>@db/x with password=<redacted>" in said.out


# -- the catalog ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_root() -> Iterator[Path]:
    """A private root with systemd/corral.catalog compiled into its catalog database."""
    source = ROOT / "systemd" / "corral.catalog"
    if not source.is_file():
        pytest.fail(f"{source} is missing")
    root = Path(tempfile.mkdtemp(prefix="corral-catalog-"))
    try:
        (root / "usr/lib/systemd/catalog").mkdir(parents=True)
        shutil.copy(source, root / "usr/lib/systemd/catalog")
        result = subprocess.run(
            [journalctl(), f"--root={root}", "--update-catalog"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), result
        assert (root / "var/lib/systemd/catalog/database").is_file()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_catalog_explains_every_message_id(catalog_root: Path) -> None:
    """systemd/corral.catalog compiles cleanly and has an entry for every MESSAGE_ID."""
    listed = subprocess.run(
        [journalctl(), f"--root={catalog_root}", "--list-catalog", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    ids = {line.split(" ", 1)[0] for line in listed.splitlines()}
    assert sorted(set(MESSAGE_IDS.values()) - ids) == []


def explained(catalog_root: Path, journal: Path, *matches: str) -> str:
    """``journalctl -x`` over *journal* with the catalog of *catalog_root*.

    journalctl reads the catalog only from /var/lib/systemd/catalog/database, whatever
    ``--root`` or ``--directory`` say (systemd 252's sd_journal_get_catalog), so it runs in a
    private mount namespace in which the root's /var/lib/systemd hides the host's: the
    host's catalog is neither read nor touched.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is missing: it mounts the private catalog")
    script = 'mount --bind "$1" /var/lib/systemd && shift && exec "$@"'
    result = subprocess.run(
        [
            *(unshare, "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"),
            str(catalog_root / "var/lib/systemd"),
            *(journalctl(), "--directory", str(journal), "-x", "--no-pager", *matches),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def catalog_subject(catalog_root: Path, message_id: str, entry: dict[str, Any]) -> str:
    """The catalog's Subject for *message_id*, with the entry's @FIELD@s filled in."""
    dumped = subprocess.run(
        [journalctl(), f"--root={catalog_root}", "--dump-catalog", message_id, "--no-pager"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    [subject] = [line for line in dumped.splitlines() if line.startswith("Subject: ")]
    return re.sub(r"@(\w+)@", lambda m: str(entry.get(m.group(1), m.group(0))), subject)


def test_journalctl_x_shows_the_catalog_text(catalog_root: Path, recorded: Recorded) -> None:
    """`journalctl -x` on a child-exited entry shows the catalog's text, with its fields."""
    message_id = MESSAGE_IDS["child-exited"]
    matches = (f"MESSAGE_ID={message_id}", "CHILD_PATH=/app/db")
    [entry] = recorded.entries(*matches)
    subject = catalog_subject(catalog_root, message_id, entry)
    assert "/app/db" in subject
    text = explained(catalog_root, recorded.journal, *matches)
    lines = text.splitlines()
    assert lines[0].endswith(entry["MESSAGE"])
    assert [line for line in lines if line.endswith(subject)], text
    assert "Defined-By: corral" in text
    assert "@CHILD_PATH@" not in text


def test_an_actors_own_records_are_entries_of_its_path(recorded: Recorded) -> None:
    """An actor's records (its module's logger, its own logger, a warning) are native
    entries with its CHILD_PATH, their logger and priority, and `corral logs PATH` shows
    them beside the lifecycle entries."""
    (info,) = recorded.entries("LOGGER=jobsvc")
    assert (info["MESSAGE"], info["CHILD_PATH"], info["PRIORITY"]) == (
        "jobsvc: pricing ready",
        "/app/chatty",
        "6",
    )
    (warning,) = recorded.entries("LOGGER=tests.e2e.actors")
    assert (warning["MESSAGE"], warning["CHILD_PATH"], warning["PRIORITY"]) == (
        "chatty: rate is 1.2",
        "/app/chatty",
        "4",
    )
    (warned,) = recorded.entries("LOGGER=py.warnings")
    assert "chatty: the rate is deprecated" in warned["MESSAGE"]
    assert warned["CHILD_PATH"] == "/app/chatty"
    shown = messages(run_cli("logs", "/app/chatty", "--directory", str(recorded.journal)).out)
    assert "jobsvc: pricing ready" in shown
    assert "started /app/chatty (restarts: 0)" in shown


def test_a_metrics_port_in_use_at_start_is_an_error_entry(workdir: Path, backend: str) -> None:
    """`corral run` whose metrics port is taken exits, and says why in a native journal entry
    of priority err with the daemon-failed MESSAGE_ID (`journalctl -p err` shows it)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(workdir, "[supervisor]\n", log_format="journal")
        config.write_text(
            config.read_text().replace(
                'metrics-listen = ""', f'metrics-listen = "127.0.0.1:{port}"'
            )
        )
        prefix = (shared_tool("with-journald"), "--dir", str(workdir / "jd"), "--")
        d = Daemon.start(config, backend, wait_ready=False, prefix=prefix)
        assert d.wait() == 1  # the daemon cannot run as configured (see the log)
    failed = MESSAGE_IDS["daemon-failed"]
    (entry,) = journal_entries(workdir / "jd" / "journal", "PRIORITY=3", f"MESSAGE_ID={failed}")
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in entry["MESSAGE"]
    assert entry["CORRAL_EVENT"] == "daemon-failed"
