"""The daemon in-process: ``Daemon.serve`` on a real Unix control socket, driven by JSON lines,
by ``cli.Client`` and by ``cli.main`` in a worker thread, on both backends."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import textwrap
import time
import warnings
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import corral
from corral.daemon import cli, config, protocol
from corral.daemon.commands import Killed
from corral.daemon.logging import EVENTS, JsonFormatter, current_sink, log_event, setup
from corral.daemon.main import Daemon, DaemonError, ExitCode
from corral.daemon.state import StateError, StateFile
from corral.supervisors.events import (
    BreakerChanged,
    ChildAbandoned,
    ChildExited,
    ChildGivenUp,
    ChildStarted,
    ChildStopped,
    MessageDeadLettered,
    RestartScheduled,
    StartFailed,
    SupervisorAutoShutdown,
    SupervisorEscalated,
    SupervisorGaveUp,
)
from corral.supervisors.spec import ExitKind
from tests.integration.support import HANG_GUARD, EventLog
from tests.limits import disk_full_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator, Iterator

pytestmark = pytest.mark.anyio

HERE = __name__  # the actors below are started by name from the configs
TREE = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "echo"
start = "corral.demo:Echo"

[[supervisor.children]]
id = "ticker"
start = "corral.demo:ticker"
args = { interval = 3600.0 }

[[supervisor.children]]
id = "group"
type = "supervisor"
strategy = "rest-for-one"
children = [
  { id = "leader", start = "corral.demo:Leader" },
  { id = "follower", start = "corral.demo:Follower" },
]

[[supervisor.children]]
id = "pool"
type = "supervisor"
max-children = 2
child = { id = "w", start = "corral.demo:Echo", restart = "temporary" }
"""
COMMANDS = (
    "breaker, breakers, call, cast, dead-letters, delete-child, events, kill, metrics, ping,"
    " reload, restart, shutdown, start, start-child, status, stop, terminate-child, why"
)


# -- actors started by the configs below -------------------------------------------------------


async def fails_to_start(ctx: corral.Context) -> None:
    """Raises before it is ready."""
    msg = "no database"
    raise RuntimeError(msg)


async def declines(ctx: corral.Context) -> None:
    """Declines to start (OTP's ignore)."""
    msg = "feature off"
    raise corral.Ignore(msg)


async def finishes(ctx: corral.Context) -> None:
    """Ready, then done: a normal exit."""
    ctx.started()


STOPPING: dict[str, anyio.Event] = {}  # name -> set when that SlowToStop's on_stop begins


class SlowToStop(corral.Actor):
    """Its cleanup never ends by itself: only a forced stop cuts it short."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def handle(self, message: object) -> object:
        return message

    async def on_stop(self) -> None:
        STOPPING[self.name].set()
        await anyio.sleep_forever()


# -- harness -----------------------------------------------------------------------------------


@pytest.fixture
def corral_logger() -> Iterator[logging.Logger]:
    """The "corral" logger; it and the root logger are restored after the test (``setup``
    puts its sink on the root logger and captures warnings)."""
    logger, root = logging.getLogger("corral"), logging.getLogger()
    saved = [(one, one.handlers[:], one.level, one.propagate) for one in (logger, root)]
    yield logger
    for one, handlers, level, propagate in saved:
        one.handlers[:] = handlers
        one.setLevel(level)
        one.propagate = propagate
    logging.captureWarnings(False)


def config_text(
    workdir: Path, tree: str = TREE, daemon: str = "", socket: Path | None = None
) -> str:
    """A config whose socket is in *workdir*; *daemon* holds more [daemon] keys."""
    socket = socket or workdir / "control.sock"
    head = f'[daemon]\ncontrol-socket = "{socket}"\n'
    if "metrics-listen" not in daemon:
        head += 'metrics-listen = ""\n'
    return head + textwrap.dedent(daemon) + "\n" + textwrap.dedent(tree)


def make_daemon(
    workdir: Path,
    backend: str,
    tree: str = TREE,
    *,
    daemon: str = "",
    socket: Path | None = None,
    from_file: bool = False,
) -> Daemon:
    """A daemon for *tree*; *from_file* writes the config to workdir/corral.toml first."""
    text = config_text(workdir, tree, daemon, socket)
    if from_file:
        path = workdir / "corral.toml"
        path.write_text(text)
        return Daemon(config.load(path), str(path), StateFile(workdir / "state"), backend)
    return Daemon(config.parse(text, "corral.toml"), None, StateFile(workdir / "state"), backend)


@contextmanager
def resource_warnings() -> Iterator[list[str]]:
    """The ResourceWarnings (unclosed sockets) of objects freed within the block."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield found
        gc.collect()
    found.extend(str(w.message) for w in caught if issubclass(w.category, ResourceWarning))


@final
class Connection:
    """One client connection: JSON lines out, JSON lines in."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    async def send(self, frame: bytes) -> None:
        await self.stream.send(frame)

    async def receive(self) -> Any:
        return json.loads(await self.reader.receive_until(b"\n", 64 * protocol.MAX_FRAME))

    async def request(self, command: str, **fields: object) -> Any:
        await self.send(json.dumps({"command": command, **fields}).encode() + b"\n")
        return await self.receive()

    async def ok(self, command: str, **fields: object) -> Any:
        """The result of a command that must succeed."""
        response = await self.request(command, **fields)
        assert response["ok"] is True, response
        return response["result"]

    async def error(self, command: str, **fields: object) -> tuple[str, str]:
        """The code and message of a command that must fail."""
        response = await self.request(command, **fields)
        assert response["ok"] is False, response
        return response["error"]["code"], response["error"]["message"]

    async def closed(self) -> bool:
        """Whether the daemon has closed this connection (reads what is left)."""
        try:
            await self.reader.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
        return False


@final
class Trigger:
    """``serve``'s shutdown trigger: once awaited the tree is up; ``stop`` stops the daemon.

    An awaitable object rather than a coroutine, so a daemon that never gets that far leaves
    no never-awaited coroutine behind."""

    def __init__(self) -> None:
        self.ready = anyio.Event()
        self.stop = anyio.Event()

    def __await__(self) -> Generator[Any, None, None]:
        self.ready.set()
        return self.stop.wait().__await__()


@final
class Serving:
    """A daemon serving in this test's task group."""

    def __init__(self, daemon: Daemon, trigger: Trigger) -> None:
        self.daemon = daemon
        self.trigger = trigger
        self.socket = daemon.settings.socket_path()
        self.log = EventLog()
        self.exit_code: ExitCode | None = None
        self.done = anyio.Event()
        self.connections: list[Connection] = []

    @property
    def tree(self) -> corral.Tree:
        assert self.daemon.tree is not None
        return self.daemon.tree

    async def connect(self) -> Connection:
        """A new connection, closed when the daemon's block ends."""
        connection = Connection(await anyio.connect_unix(self.socket))
        self.connections.append(connection)
        return connection

    async def exited(self) -> ExitCode:
        """Wait for serve to return; its exit code."""
        await self.done.wait()
        assert self.exit_code is not None
        return self.exit_code

    async def cli(self, *argv: str) -> int:
        """``corral --socket SOCKET *argv`` in a worker thread; its exit code."""
        return await anyio.to_thread.run_sync(cli.main, ["--socket", str(self.socket), *argv])


@asynccontextmanager
async def serving(
    daemon: Daemon, guard: float = HANG_GUARD, *, observe: bool = True
) -> AsyncIterator[Serving]:
    """Serve *daemon* until the block ends (or it stops by itself); yields once its tree runs.
    The whole block is a hang after *guard* seconds. *observe*: keep every event in
    ``Serving.log`` (a test that measures memory does not want that)."""
    trigger = Trigger()
    running = Serving(daemon, trigger)

    async def serve() -> None:
        try:
            running.exit_code = await daemon.serve(shutdown_trigger=trigger)
        finally:
            running.done.set()
            trigger.ready.set()

    with anyio.fail_after(guard):
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await trigger.ready.wait()
                if observe and daemon.tree is not None and not running.done.is_set():
                    daemon.tree.events.subscribe(running.log)
                yield running
                trigger.stop.set()
        finally:
            for connection in running.connections:
                await connection.stream.aclose()


# -- queries -----------------------------------------------------------------------------------


async def test_ping_status_and_why(workdir: Path, anyio_backend: str) -> None:
    """ping, status (of the tree, a subtree, a worker) and why answer from the running tree."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        pong = await conn.ok("ping")
        assert set(pong) == {"version", "pid", "backend", "uptime", "config"}
        assert (pong["pid"], pong["backend"], pong["config"]) == (
            os.getpid(),
            anyio_backend,
            "corral.toml",
        )
        root = await conn.ok("status")
        assert (root["path"], root["type"], root["state"], root["strategy"]) == (
            "/",
            "supervisor",
            "running",
            "one-for-one",
        )
        assert (root["intensity"], root["period"], root["restarts_remaining"]) == (10, 60.0, 10)
        assert [(c["path"], c["type"], c["state"]) for c in root["children"]] == [
            ("/echo", "worker", "running"),
            ("/ticker", "worker", "running"),
            ("/group", "supervisor", "running"),
            ("/pool", "supervisor", "running"),
        ]
        group = await conn.ok("status", path="/group")
        assert [c["path"] for c in group["children"]] == ["/group/leader", "/group/follower"]
        assert group["strategy"] == "rest-for-one"
        pool = await conn.ok("status", path="/pool")
        assert (pool["strategy"], pool["dynamic"], pool["children"]) == (
            "one-for-one (dynamic)",
            True,
            [],
        )
        leader = await conn.ok("status", path="group//leader/")  # normalized
        assert (leader["path"], leader["state"], leader["mailbox_capacity"]) == (
            "/group/leader",
            "running",
            1024,
        )
        assert "children" not in leader
        why = await conn.ok("why", path="/echo")
        assert why == {
            "path": "/echo",
            "state": "running",
            "restarts": 0,
            "held": False,
            "exits": [],
            "supervisor": "/",
            "strategy": "one-for-one",
            "intensity": 10,
            "period": 60.0,
            "restarts_remaining": 10,
        }


@pytest.mark.parametrize(
    ("command", "fields", "code", "message"),
    [
        pytest.param(
            "status",
            {"path": "/nope"},
            "not_found",
            "supervisor '/' has no child 'nope'",
            id="status-unknown",
        ),
        pytest.param(
            "status",
            {"path": "/group/nope/x"},
            "not_found",
            "supervisor '/group' has no child 'nope'",
            id="status-below-nothing",
        ),
        pytest.param(
            "status",
            {"path": "/echo/x"},
            "not_found",
            "/echo is a worker: it has no children",
            id="status-below-a-worker",
        ),
        pytest.param(
            "why",
            {"path": "/"},
            "not_found",
            "the root supervisor has no exits to explain: ask about a child, e.g. /name",
            id="why-root",
        ),
        pytest.param(
            "why",
            {"path": "/group/x"},
            "not_found",
            "supervisor '/group' has no child 'x'",
            id="why-unknown",
        ),
        pytest.param(
            "stop",
            {"path": "/"},
            "unsupported",
            "the root supervisor is not a child: use `corral shutdown` to stop the daemon",
            id="stop-root",
        ),
        pytest.param(
            "start",
            {"path": "/echo"},
            "running",
            "supervisor '/': child 'echo' is running (`corral restart /echo` stops and starts it)",
            id="start-running",
        ),
        pytest.param(
            "delete-child",
            {"path": "/ticker"},
            "running",
            "supervisor '/': child 'ticker' is running",
            id="delete-running",
        ),
        pytest.param(
            "restart",
            {"path": "/nope"},
            "not_found",
            "supervisor '/' has no child 'nope'",
            id="restart-unknown",
        ),
        pytest.param(
            "kill",
            {"path": "/nope"},
            "not_found",
            "supervisor '/' has no child 'nope'",
            id="kill-unknown",
        ),
        pytest.param(
            "start-child",
            {"supervisor": "/group"},
            "unsupported",
            "supervisor '/group' is not dynamic: its children come from the config"
            " (edit it and `corral reload`)",
            id="start-child-static",
        ),
        pytest.param(
            "start-child",
            {"supervisor": "/nope"},
            "not_found",
            "no running supervisor at '/nope'",
            id="start-child-nowhere",
        ),
        pytest.param(
            "start-child",
            {"supervisor": "/pool", "args": {"x": 1}},
            "bad_request",
            "args do not fit corral.demo:Echo(): got an unexpected keyword argument 'x'",
            id="start-child-bad-args",
        ),
        pytest.param(
            "start-child",
            {"supervisor": "/pool", "id": ".."},
            "bad_request",
            "child id '..' is not usable in a path: use 1 to 255 characters, no '/', no control"
            " characters, no blanks around it, not '.' or '..'",
            id="start-child-bad-id",
        ),
    ],
)
async def test_command_errors(
    workdir: Path,
    anyio_backend: str,
    command: str,
    fields: dict[str, object],
    code: str,
    message: str,
) -> None:
    """A command that cannot be carried out answers its stable code and a message."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.error(command, **fields) == (code, message)
        assert (await conn.ok("ping"))["pid"] == os.getpid()  # the connection goes on


# -- commands that change the tree -------------------------------------------------------------


async def test_kill_restarts_the_child_and_why_explains(workdir: Path, anyio_backend: str) -> None:
    """kill crashes a child with Killed; its supervisor restarts it; why shows the exit."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("kill", path="/echo", reason="drill") == {
            "path": "/echo",
            "done": "killed; its supervisor decides what comes next",
        }
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        (exited,) = running.log.find(ChildExited, "/echo")
        assert isinstance(exited.exception, Killed)
        why = await conn.ok("why", path="/echo")
        assert (why["state"], why["restarts"], why["restarts_remaining"]) == ("running", 1, 9)
        (exit_,) = why["exits"]
        assert (exit_["kind"], exit_["exception"]) == ("error", "Killed('drill')")
        assert exit_["traceback"] == "corral.daemon.commands.Killed: drill\n"
        assert abs(exit_["at"] - time.time()) < 60  # a Unix time, not a monotonic one
        status = await conn.ok("status", path="/echo")
        assert (status["restarts"], status["last_exit"], status["last_error"]) == (
            1,
            "error",
            "Killed('drill')",
        )


async def test_kill_of_a_supervisor_restarts_its_subtree(workdir: Path, anyio_backend: str) -> None:
    """Killing a supervisor child stops its children; it is restarted with them."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/group")
        await running.log.wait_for(ChildStarted, "/group", restarts=1)
        assert running.log.summary(ChildStopped, ChildStarted) == [
            ("ChildStopped", "/group/follower"),
            ("ChildStopped", "/group/leader"),
            ("ChildStarted", "/group/leader"),
            ("ChildStarted", "/group/follower"),
            ("ChildStarted", "/group"),
        ]


async def test_stop_start_restart_keep_the_operator_hold(workdir: Path, anyio_backend: str) -> None:
    """stop holds a child (saved in held.json); start releases it; restart cycles it."""
    held = workdir / "state" / "held.json"
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("stop", path="/ticker") == {
            "path": "/ticker",
            "done": "stopped; it stays stopped until `corral start`",
        }
        assert json.loads(held.read_text()) == {"version": 1, "held": ["/ticker"]}
        ticker = await conn.ok("status", path="/ticker")
        assert (ticker["state"], ticker["held"], ticker.get("last_exit")) == ("stopped", True, None)
        assert (await conn.ok("why", path="/ticker"))["held"] is True
        assert await conn.error("kill", path="/ticker") == (
            "not_running",
            "/ticker is not running (stopped): nothing to kill (`corral start /ticker` starts it)",
        )
        assert (await conn.ok("stop", path="/ticker"))["done"].startswith("stopped")  # again
        assert await conn.ok("start", path="/ticker") == {"path": "/ticker", "done": "started"}
        assert json.loads(held.read_text()) == {"version": 1, "held": []}
        assert await conn.ok("restart", path="/ticker") == {"path": "/ticker", "done": "restarted"}
        # `start` is a start, `restart` is a restart: one in all
        await running.log.wait_for(ChildStarted, "/ticker", restarts=1, restart=True)
        assert running.log.summary(ChildStopped, ChildStarted) == [
            ("ChildStopped", "/ticker"),
            ("ChildStarted", "/ticker"),
            ("ChildStopped", "/ticker"),
            ("ChildStarted", "/ticker"),
        ]
        assert (await conn.ok("status", path="/ticker"))["state"] == "running"


async def test_terminate_and_delete_a_static_child(workdir: Path, anyio_backend: str) -> None:
    """terminate-child stops a child and keeps its spec; delete-child then forgets it."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("terminate-child", path="/echo") == {
            "path": "/echo",
            "done": "terminated",
        }
        echo = await conn.ok("status", path="/echo")
        assert (echo["state"], echo.get("held", False)) == ("stopped", False)
        assert await conn.ok("delete-child", path="/echo") == {"path": "/echo", "done": "deleted"}
        assert await conn.error("status", path="/echo") == (
            "not_found",
            "supervisor '/' has no child 'echo'",
        )


async def test_stopping_a_supervisor_stops_its_subtree(workdir: Path, anyio_backend: str) -> None:
    """A stopped supervisor shows no children; paths below it are not found until it starts."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/group")
        group = await conn.ok("status", path="/group")
        assert (group["state"], group["held"], group["children"]) == ("stopped", True, [])
        assert await conn.error("status", path="/group/leader") == (
            "not_found",
            "supervisor /group is stopped, so its children are not running (`corral start /group`)",
        )
        assert await conn.error("kill", path="/group/leader") == (
            "not_found",
            "supervisor /group is stopped, so its children are not running (`corral start /group`)",
        )
        await conn.ok("start", path="/group")
        group = await conn.ok("status", path="/group")
        assert [c["state"] for c in group["children"]] == ["running", "running"]


async def test_dynamic_supervisor_commands(workdir: Path, anyio_backend: str) -> None:
    """start-child fills a dynamic supervisor up to max-children; its children are
    terminated (and so gone), never restarted by hand."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("start-child", supervisor="/pool") == {
            "path": "/pool/1",
            "done": "started",
        }
        assert await conn.ok("start-child", supervisor="pool", id="b") == {
            "path": "/pool/b",
            "done": "started",
        }
        assert await conn.error("start-child", supervisor="/pool", id="c") == (
            "max_children",
            "supervisor '/pool' already has max_children=2",
        )
        assert await conn.error("start-child", supervisor="/pool", id="b") == (
            "already_started",
            "supervisor '/pool': child 'b' is already started",
        )
        pool = await conn.ok("status", path="/pool")
        assert [(c["path"], c["state"]) for c in pool["children"]] == [
            ("/pool/1", "running"),
            ("/pool/b", "running"),
        ]
        assert await conn.error("restart", path="/pool/1") == (
            "unsupported",
            "/pool/1 belongs to a dynamic supervisor, whose children cannot be restarted by hand"
            " (OTP's rule): `corral kill` crashes it, and its supervisor restarts it unless it is"
            " temporary; or terminate-child, then start-child",
        )
        assert await conn.ok("terminate-child", path="/pool/1") == {
            "path": "/pool/1",
            "done": "terminated",
        }
        assert await conn.error("delete-child", path="/pool/1") == (
            "not_found",
            "supervisor '/pool' has no child '1'",
        )
        assert [c["path"] for c in (await conn.ok("status", path="/pool"))["children"]] == [
            "/pool/b"
        ]


async def test_a_pool_of_supervisors_starts_them_without_args(
    workdir: Path, anyio_backend: str
) -> None:
    """start-child on a pool whose template is a supervisor starts one, and refuses args."""
    tree = """
        [supervisor]
        [[supervisor.children]]
        id = "teams"
        type = "supervisor"
        [supervisor.children.child]
        id = "team"
        type = "supervisor"
        children = [{ id = "w", start = "corral.demo:Echo" }]
    """
    async with serving(make_daemon(workdir, anyio_backend, tree)) as running:
        conn = await running.connect()
        assert await conn.ok("start-child", supervisor="/teams") == {
            "path": "/teams/1",
            "done": "started",
        }
        team = await conn.ok("status", path="/teams/1")
        assert [(c["path"], c["state"]) for c in team["children"]] == [("/teams/1/w", "running")]
        assert await conn.error("start-child", supervisor="/teams", args={"x": 1}) == (
            "bad_request",
            "supervisor '/teams' starts supervisors, which take no args",
        )


async def test_dead_letters_are_listed(workdir: Path, anyio_backend: str) -> None:
    """A message that crashed an actor is a dead letter, listed by path and limit; the
    crash restarts the leader and, under rest-for-one, its follower."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("dead-letters") == []
        with pytest.raises(corral.ActorCrashedError):
            await running.tree.lookup("/group/leader").call("fail")
        await running.log.wait_for(ChildStarted, "/group/follower", restarts=1)
        assert running.log.summary(ChildStopped, ChildStarted) == [
            ("ChildStopped", "/group/follower"),
            ("ChildStarted", "/group/leader"),
            ("ChildStarted", "/group/follower"),
        ]
        (letter,) = await conn.ok("dead-letters")
        assert {k: v for k, v in letter.items() if k != "at"} == {
            "path": "/group/leader",
            "reason": "crashed",
            "message": "'fail'",
            "exception": "RuntimeError('leader failed on purpose')",
        }
        assert await conn.ok("dead-letters", path="/group/leader", limit=1) == [letter]
        assert await conn.ok("dead-letters", path="/echo") == []
        assert (await conn.ok("why", path="/group/leader"))["dead_letters"] == 1
        assert (await conn.ok("status", path="/group/leader"))["dead_letters"] == 1


async def test_dead_letters_of_a_subtree(workdir: Path, anyio_backend: str) -> None:
    """dead-letters PATH lists those of PATH "or below it" (the CLI's help): a supervisor's
    path lists its children's."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        with pytest.raises(corral.ActorCrashedError):
            await running.tree.lookup("/group/leader").call("fail")
        await running.log.wait_for(ChildStarted, "/group/follower", restarts=1)
        (letter,) = await conn.ok("dead-letters")
        assert letter["path"] == "/group/leader"
        assert await conn.ok("dead-letters", path="/group") == [letter]


async def test_operator_stops_are_kept_across_daemon_starts(
    workdir: Path, anyio_backend: str
) -> None:
    """Held paths in held.json stay stopped at start; those not in the config are dropped."""
    held = workdir / "state" / "held.json"
    held.parent.mkdir()
    with StateFile(held.parent) as state:
        state.save({"/ticker", "/gone", "/group/gone"})
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        ticker = await conn.ok("status", path="/ticker")
        assert (ticker["state"], ticker["held"]) == ("stopped", True)
        assert json.loads(held.read_text()) == {"version": 1, "held": ["/ticker"]}


async def test_a_state_that_cannot_be_saved_is_a_warning(workdir: Path, anyio_backend: str) -> None:
    """A command that was carried out says so, with a warning that the hold is not kept."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        state = workdir / "state"
        conn = await running.connect()
        with disk_full_after(10):
            answer = await conn.ok("stop", path="/ticker")
        assert answer == {
            "path": "/ticker",
            "done": "stopped; it stays stopped until `corral start`",
            "warning": f"state {state / 'held.json'} was not saved: File too large:"
            " the operator's stops are not kept across restarts",
        }


async def test_a_lost_state_directory_is_a_warning(workdir: Path, anyio_backend: str) -> None:
    """The state directory replaced by a file: stop is carried out and answered with a
    warning, not reported as an internal error."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        state = workdir / "state"
        shutil.rmtree(state)
        state.write_text("")
        conn = await running.connect()
        assert await conn.ok("stop", path="/ticker") == {
            "path": "/ticker",
            "done": "stopped; it stays stopped until `corral start`",
            "warning": f"state {state / 'held.json'} was not saved: No such file or directory:"
            " the operator's stops are not kept across restarts",
        }


# -- reload ------------------------------------------------------------------------------------

EXTRA = """
[[supervisor.children]]
id = "extra"
start = "corral.demo:Echo"
"""


async def test_a_reload_stuck_importing_gives_up_and_the_next_one_works(
    workdir: Path, anyio_backend: str
) -> None:
    """A reload whose module never finishes importing is answered invalid_config after the
    load timeout (the import left behind), and the lock is free: the next reload, of a fixed
    file, is applied."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    daemon.load_timeout = 0.5
    path = workdir / "corral.toml"
    good = path.read_text()
    async with serving(daemon) as running:
        conn = await running.connect()
        path.write_text(
            good
            + '\n[[supervisor.children]]\nid = "stuck"\nstart = "tests.e2e.importers.blocks:X"\n'
        )
        assert await conn.error("reload") == (
            "invalid_config",
            f"{path}: reading and importing it took over 0.5 s: a module that blocks at"
            " import? It is left importing, and importing it again waits for it: restart the"
            " daemon once the module is fixed",
        )
        path.write_text(good + EXTRA)
        assert (await conn.ok("reload"))["changes"] == ["start /extra (new)"]


async def test_reload_dry_run_then_apply(workdir: Path, anyio_backend: str) -> None:
    """reload re-reads the file: a dry run only describes the changes, a reload applies them;
    [daemon] changes are noted, not applied."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    path = workdir / "corral.toml"
    async with serving(daemon) as running:
        conn = await running.connect()
        assert await conn.ok("reload", dry_run=True) == {
            "source": str(path),
            "dry_run": True,
            "changes": [],
            "notes": [],
            "failures": [],
        }
        path.write_text(config_text(workdir, TREE + EXTRA, "dead-letters = 5\n"))
        plan = {
            "source": str(path),
            "dry_run": True,
            "changes": ["start /extra (new)"],
            "notes": ["[daemon] dead-letters changed: applied when the daemon restarts"],
            "failures": [],
        }
        assert await conn.ok("reload", dry_run=True) == plan
        assert await conn.error("status", path="/extra") == (
            "not_found",
            "supervisor '/' has no child 'extra'",
        )
        assert await conn.ok("reload") == {**plan, "dry_run": False}
        assert (await conn.ok("status", path="/extra"))["state"] == "running"
        assert daemon.loaded is not None
        assert daemon.loaded.daemon.dead_letters == 5
        assert await conn.ok("reload", dry_run=True) == {  # still: [daemon] is read at start
            "source": str(path),
            "dry_run": True,
            "changes": [],
            "notes": ["[daemon] dead-letters changed: applied when the daemon restarts"],
            "failures": [],
        }


async def test_reload_notes_a_supervisor_that_is_not_running(
    workdir: Path, anyio_backend: str
) -> None:
    """A changed supervisor that an operator stopped keeps its new spec for its next start."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    path = workdir / "corral.toml"
    async with serving(daemon) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/group")
        follower = '{ id = "follower", start = "corral.demo:Follower" },'
        third = '{ id = "third", start = "corral.demo:Echo" },'
        changed = TREE.replace(follower, f"{follower}\n  {third}")
        path.write_text(config_text(workdir, changed))
        assert await conn.ok("reload") == {
            "source": str(path),
            "dry_run": False,
            "changes": [],
            "notes": [
                "/group is not running: its new spec applies when it starts"
                " (start /group/third (new))"
            ],
            "failures": [],
        }
        await conn.ok("start", path="/group")
        group = await conn.ok("status", path="/group")
        assert [c["path"] for c in group["children"]] == [
            "/group/leader",
            "/group/follower",
            "/group/third",
        ]


async def test_reload_of_an_invalid_file_changes_nothing(workdir: Path, anyio_backend: str) -> None:
    """An invalid file is rejected with invalid_config and its error; the tree runs on."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    path = workdir / "corral.toml"
    async with serving(daemon) as running:
        conn = await running.connect()
        path.write_text(config_text(workdir, TREE + EXTRA.replace("Echo", "Nope")))
        assert await conn.error("reload") == (
            "invalid_config",
            f"{path}: cannot import 'corral.demo:Nope': AttributeError: module 'corral.demo'"
            " has no attribute 'Nope' at $.supervisor.children[4].start",
        )
        path.unlink()
        assert await conn.error("reload", dry_run=True) == (
            "invalid_config",
            f"{path}: cannot read the config: No such file or directory",
        )
        root = await conn.ok("status")
        assert [c["path"] for c in root["children"]] == ["/echo", "/ticker", "/group", "/pool"]


async def test_reload_when_the_state_cannot_be_saved(workdir: Path, anyio_backend: str) -> None:
    """A reload that was applied is answered as applied (not as an internal error) when the
    held paths it changed cannot be saved."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    path = workdir / "corral.toml"
    async with serving(daemon) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/ticker")  # held: removing /ticker changes the state
        path.write_text(config_text(workdir, TREE.replace('id = "ticker"', 'id = "gone"')))
        (workdir / "state" / f".held.json.{os.getpid()}.tmp").symlink_to("/dev/full")
        result = await conn.ok("reload")
        assert result["changes"][0] == "stop and remove /ticker"
        assert await conn.error("status", path="/ticker") == (
            "not_found",
            "supervisor '/' has no child 'ticker'",
        )


async def test_the_demo_daemon_reloads_the_demo(
    workdir: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon on the embedded demo (no file) serves ./run/control.sock, which the CLI
    finds by default, and reloads the demo: nothing changes."""
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv(cli.SOCKET_ENV, raising=False)
    assert cli.default_socket() == Path("/run/corral/control.sock")  # nothing here yet
    daemon = Daemon(config.load_demo(), None, StateFile(workdir / "state"), anyio_backend)
    async with serving(daemon) as running:
        assert running.socket == Path("run/control.sock")
        assert cli.default_socket() == Path("run/control.sock")
        monkeypatch.setenv(cli.SOCKET_ENV, str(workdir / "elsewhere.sock"))
        assert cli.default_socket() == workdir / "elsewhere.sock"
        conn = await running.connect()
        assert await conn.ok("reload") == {
            "source": "corral:demo.toml",
            "dry_run": False,
            "changes": [],
            "notes": [],
            "failures": [],
        }
        assert (await conn.ok("ping"))["config"] == "corral:demo.toml"


# -- the connection ----------------------------------------------------------------------------


async def test_malformed_frames_get_bad_request(workdir: Path, anyio_backend: str) -> None:
    """Bad frames are answered with bad_request and the connection goes on; blank lines are
    skipped."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        frames = [
            (b"not json\n", "invalid request: JSON is malformed: invalid character (byte 4)"),
            (
                b'{"command": "nope"}\n',
                "unknown or missing command (Invalid value 'nope' - at `$.command`);"
                f" commands: {COMMANDS}",
            ),
            (
                b'{"path": "/"}\n',
                "unknown or missing command (Object missing required field `command`);"
                f" commands: {COMMANDS}",
            ),
            (b'{"command": "stop"}\n', "invalid request: Object missing required field `path`"),
            (
                b'{"command": "stop", "path": 1}\n',
                "invalid request: Expected `str`, got `int` - at `$.path`",
            ),
            (
                b'{"command": "status", "colour": true}\n',
                "invalid request: Object contains unknown field `colour`",
            ),
        ]
        for frame, message in frames:
            await conn.send(b"\n  \n" + frame)
            assert await conn.receive() == {
                "ok": False,
                "error": {"code": "bad_request", "message": message},
            }
        assert (await conn.ok("status", path="/echo"))["state"] == "running"


async def test_oversized_frame_closes_the_connection(workdir: Path, anyio_backend: str) -> None:
    """A line over MAX_FRAME bytes gets bad_request and the connection is closed."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.send, b"x" * (protocol.MAX_FRAME + 1))
            assert await conn.receive() == {
                "ok": False,
                "error": {
                    "code": "bad_request",
                    "message": f"frame over {protocol.MAX_FRAME} bytes without a newline:"
                    " closing (one JSON request per line)",
                },
            }
        assert await conn.closed()
        assert (await (await running.connect()).ok("ping"))["pid"] == os.getpid()


async def test_busy_and_idle_connections(workdir: Path, anyio_backend: str) -> None:
    """Past max-connections a client gets busy; a silent one is closed after idle-timeout."""
    daemon = make_daemon(workdir, anyio_backend, daemon="max-connections = 1\nidle-timeout = 0.2")
    async with serving(daemon) as running:
        first = await running.connect()
        await first.ok("ping")
        second = await running.connect()
        assert await second.receive() == {
            "ok": False,
            "error": {
                "code": "busy",
                "message": "the daemon serves at most 1 connections (max-connections): try again",
            },
        }
        assert await second.closed()
        assert await first.receive() == {
            "ok": False,
            "error": {"code": "bad_request", "message": "idle for 0.2 s (idle-timeout): closing"},
        }
        assert await first.closed()
        assert (await (await running.connect()).ok("ping"))["pid"] == os.getpid()


def without_at(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*events* without their Unix times (each answer converts them with a fresh clock
    reading, so the same event's ``at`` may differ by microseconds)."""
    return [{k: v for k, v in e.items() if k != "at"} for e in events]


async def test_events_recent_and_follow(workdir: Path, anyio_backend: str) -> None:
    """events answers the recent events, then streams new ones until the client leaves."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        boot = await conn.ok("events", recent=100, follow=False)
        assert boot
        assert {e["event"] for e in boot} == {"child-started"}
        await conn.ok("kill", path="/echo")
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        recent = await conn.ok("events", recent=3, follow=False)
        assert [(e["event"], e["path"]) for e in recent] == [
            ("child-exited", "/echo"),
            ("restart-scheduled", "/echo"),
            ("child-started", "/echo"),
        ]
        assert without_at(await conn.ok("events", recent=1, follow=False)) == without_at(
            recent[-1:]
        )
        assert await conn.ok("events", follow=False) == []

        follower = await running.connect()
        assert without_at(await follower.ok("events", recent=1)) == without_at(recent[-1:])
        await anyio.wait_all_tasks_blocked()  # the daemon now streams to the follower
        await conn.ok("kill", path="/ticker", reason="drill")
        event = await follower.receive()
        assert abs(event.pop("at") - time.time()) < 60
        assert event == {
            "event": "child-exited",
            "path": "/ticker",
            "supervisor": "/",
            "exit": "error",
            "exception": "Killed('drill')",
        }
        assert (await follower.receive())["event"] == "restart-scheduled"
        assert (await follower.receive())["event"] == "child-started"
        await follower.send(b'{"command": "ping"}\n')  # ignored while streaming
        await follower.stream.aclose()
        await anyio.wait_all_tasks_blocked()  # the daemon has seen the follower go
        assert (await conn.ok("ping"))["pid"] == os.getpid()


async def test_client_and_cli_against_the_daemon(
    workdir: Path, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """cli.Client and the corral commands talk to the daemon over its socket."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    async with serving(daemon) as running:

        def client_calls() -> tuple[Any, str]:
            with cli.Client(running.socket) as client:
                pong = client.call(protocol.Ping())
                with pytest.raises(cli.Failed) as info:
                    client.call(protocol.Status(path="/nope"))
            return pong, str(info.value)

        pong, failed = await anyio.to_thread.run_sync(client_calls)
        assert pong["backend"] == anyio_backend
        assert failed == "supervisor '/' has no child 'nope'"

        async def run(*argv: str) -> tuple[int, str, str]:
            code = await running.cli(*argv)
            out, err = capsys.readouterr()
            return code, out, err

        code, out, err = await run("status")
        assert (code, err) == (0, "")
        assert out.splitlines()[0].startswith("● /  running   one-for-one, budget 10/10 per 60s")
        code, out, _ = await run("status", "/echo", "--json")
        assert (code, json.loads(out)["path"]) == (0, "/echo")
        assert await run("stop", "/ticker") == (
            0,
            "/ticker: stopped; it stays stopped until `corral start`\n",
            "",
        )
        code, out, _ = await run("status", "/ticker")
        assert code == cli.Exit.NOT_RUNNING
        assert out.startswith("● /ticker  stopped   stopped by operator")
        assert await run("start", "/ticker") == (0, "/ticker: started\n", "")
        assert await run("kill", "/echo", "--reason", "cli drill") == (
            0,
            "/echo: killed; its supervisor decides what comes next\n",
            "",
        )
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        code, out, _ = await run("why", "/echo")
        assert code == 0
        assert out.splitlines()[:2] == ["/echo: running", "  restarts: 1"]
        assert "corral.daemon.commands.Killed: cli drill" in out
        code, out, _ = await run("why", "/echo", "--json")
        assert json.loads(out)["exits"][0]["exception"] == "Killed('cli drill')"
        code, out, _ = await run("events", "--recent", "3")
        assert [line.split()[2:4] for line in out.splitlines()] == [
            ["child-exited", "/echo"],
            ["restart-scheduled", "/echo"],
            ["child-started", "/echo"],
        ]
        code, out, _ = await run("events", "--recent", "1", "--json")
        assert json.loads(out)["event"] == "child-started"
        assert await run("dead-letters") == (0, "no dead letters\n", "")
        assert await run("dead-letters", "--json") == (0, "[]\n", "")
        assert await run("start-child", "/pool", "--id", "w1", "--args", "{}") == (
            0,
            "/pool/w1: started\n",
            "",
        )
        assert await run("terminate-child", "/pool/w1") == (0, "/pool/w1: terminated\n", "")
        code, out, err = await run("reload", "--dry-run")
        assert (code, out, err) == (
            0,
            f"reload of {workdir / 'corral.toml'}: would apply 0 change(s)\n",
            "",
        )
        code, out, _ = await run("version")
        assert out.splitlines()[0].startswith("corral ")
        assert f"(pid {os.getpid()}, {anyio_backend}, up " in out
        assert await run("start", "/nope") == (
            1,
            "",
            "corral: /nope: ERROR (not_found) supervisor '/' has no child 'nope'\n",
        )
        assert await run("shutdown") == (
            0,
            "stopping: children stop in reverse start order\n",
            "",
        )
        assert await running.exited() == ExitCode.OK


def test_cli_cannot_reach_a_missing_daemon(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a daemon at the socket the CLI exits 4 and says how to start one."""
    path = workdir / "control.sock"
    code = cli.main(["--socket", str(path), "status"])
    assert code == cli.Exit.UNREACHABLE
    assert capsys.readouterr().err == (
        f"corral: the daemon is not running at {path} (start it with `corral run` or"
        " `systemctl start corral`, or pick another with --socket)\n"
    )


async def test_client_reports_a_daemon_that_does_not_answer(
    workdir: Path, anyio_backend: str
) -> None:
    """cli.Client turns a silent daemon, a closed connection and unusable paths into
    Unreachable with a message that says what happened."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        socket_path = running.socket

        def silent() -> str:
            with (
                cli.Client(socket_path, timeout=0.05) as client,
                pytest.raises(cli.Unreachable) as info,
            ):
                client.receive()
            return str(info.value)

        assert await anyio.to_thread.run_sync(silent) == (
            f"the daemon at {socket_path} did not answer within 0.05 s"
        )

        def shut_down() -> tuple[Any, str]:
            with cli.Client(socket_path) as client:
                done = client.call(protocol.Shutdown())
                with pytest.raises(cli.Unreachable) as info:
                    client.receive()
            return done, str(info.value)

        done, closed = await anyio.to_thread.run_sync(shut_down)
        assert done["path"] == "/"
        assert closed == (
            f"the daemon at {socket_path} closed the connection before it answered: it is"
            " stopping, or it exited (see `journalctl -u corral` or its log)"
        )
        assert await running.exited() == ExitCode.OK

    not_a_socket = workdir / "file"
    not_a_socket.write_text("")
    with pytest.raises(cli.Unreachable) as info:
        cli.Client(not_a_socket)
    assert str(info.value) == (
        f"{not_a_socket} is not a socket: pick the daemon's control socket with --socket"
    )
    too_long = workdir / ("x" * 120)
    with pytest.raises(cli.Unreachable) as info:
        cli.Client(too_long)
    assert str(info.value) == f"cannot connect to {too_long}: AF_UNIX path too long"


async def test_client_streams_events(workdir: Path, anyio_backend: str) -> None:
    """cli.Client.stream yields the events the daemon sends after an events request."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        client = cli.Client(running.socket)
        try:
            recent = await anyio.to_thread.run_sync(client.call, protocol.Events(recent=0))
            assert recent == []
            await anyio.wait_all_tasks_blocked()  # the daemon now streams to the client
            conn = await running.connect()
            await conn.ok("kill", path="/echo")
            await running.log.wait_for(ChildStarted, "/echo", restarts=1)
            stream = client.stream()
            events = [await anyio.to_thread.run_sync(next, stream) for _ in range(3)]
            assert [(e["event"], e["path"]) for e in events] == [
                ("child-exited", "/echo"),
                ("restart-scheduled", "/echo"),
                ("child-started", "/echo"),
            ]
        finally:
            client.close()
        await anyio.wait_all_tasks_blocked()  # the daemon has seen the client go


async def test_a_follower_that_stops_reading_does_not_stop_the_daemon(
    workdir: Path, anyio_backend: str
) -> None:
    """An events client that goes away while an event is sent to it is dropped; the daemon
    and its other clients carry on."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        follower = await running.connect()
        assert await follower.ok("events") == []
        # The client stops reading but keeps its sending side open: the daemon learns of it
        # only when it sends the next event (as when a client dies while an event is sent).
        raw = follower.stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610  # anyio
        raw.shutdown(socket.SHUT_RD)
        await anyio.wait_all_tasks_blocked()
        conn = await running.connect()
        await conn.ok("kill", path="/echo")
        await running.log.wait_for(ChildStarted, "/echo", restarts=1)
        assert (await conn.ok("ping"))["pid"] == os.getpid()
    assert running.exit_code == ExitCode.OK


def test_cli_check_and_usage(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """corral check validates a file (0 or 1); start-child with bad --args is a usage error."""
    valid = workdir / "valid.toml"
    valid.write_text(config_text(workdir))
    assert cli.main(["check", str(valid)]) == cli.Exit.OK
    assert capsys.readouterr().out == f"{valid}: valid (4 children under the root)\n"
    invalid = workdir / "invalid.toml"
    invalid.write_text("[supervisor]\nintensity = -1\n")
    assert cli.main(["check", str(invalid)]) == cli.Exit.ERROR
    assert capsys.readouterr().err == (
        f"corral: {invalid}: expected `int` >= 0 at $.supervisor.intensity\n"
    )
    for bad, message in (
        (
            "{",
            "--args must be a JSON object: Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1)",
        ),
        ("[1]", "--args must be a JSON object, e.g. '{\"port\": 8080}'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--socket", str(workdir / "none"), "start-child", "/pool", "--args", bad])
        assert exit_info.value.code == cli.Exit.USAGE
        assert capsys.readouterr().err == f"corral: {message}\n"


async def test_cli_lists_dead_letters_and_reload_notes(
    workdir: Path, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """dead-letters prints one line per letter; reload prints its changes and notes."""
    daemon = make_daemon(workdir, anyio_backend, from_file=True)
    async with serving(daemon) as running:
        with pytest.raises(corral.ActorCrashedError):
            await running.tree.lookup("/group/leader").call("fail")
        await running.log.wait_for(ChildStarted, "/group/follower", restarts=1)
        assert await running.cli("dead-letters", "/group/leader") == 0
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} /group/leader crashed"
            r" RuntimeError\('leader failed on purpose'\): 'fail'\n",
            capsys.readouterr().out,
        )
        (workdir / "corral.toml").write_text(
            config_text(workdir, TREE + EXTRA, "dead-letters = 5\n")
        )
        assert await running.cli("reload") == 0
        assert capsys.readouterr().out == (
            f"reload of {workdir / 'corral.toml'}: did apply 1 change(s)\n"
            "  start /extra (new)\n"
            "  note: [daemon] dead-letters changed: applied when the daemon restarts\n"
        )


# -- life and exit codes -----------------------------------------------------------------------


async def test_shutdown_command_stops_the_tree_in_reverse_order(
    workdir: Path, anyio_backend: str
) -> None:
    """shutdown is answered, then the tree stops in reverse start order and serve returns OK;
    the socket file is removed."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        assert await conn.ok("shutdown") == {
            "path": "/",
            "done": "stopping: children stop in reverse start order",
        }
        assert await running.exited() == ExitCode.OK
        assert running.log.summary(ChildStopped) == [
            ("ChildStopped", "/pool"),
            ("ChildStopped", "/group/follower"),
            ("ChildStopped", "/group/leader"),
            ("ChildStopped", "/group"),
            ("ChildStopped", "/ticker"),
            ("ChildStopped", "/echo"),
        ]
        assert not running.socket.exists()


async def test_shutdown_trigger_stops_the_daemon(workdir: Path, anyio_backend: str) -> None:
    """The injected shutdown trigger stops the daemon like a signal: exit code OK."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        running.trigger.stop.set()
        assert await running.exited() == ExitCode.OK
    assert not running.socket.exists()


BOOT_FAILS = f"""
[supervisor]
[[supervisor.children]]
id = "echo"
start = "corral.demo:Echo"
[[supervisor.children]]
id = "db"
start = "{HERE}:fails_to_start"
"""


async def test_a_child_failing_at_boot_is_tree_failed(workdir: Path, anyio_backend: str) -> None:
    """A child that fails to start at boot makes serve return TREE_FAILED, socket removed."""
    daemon = make_daemon(workdir, anyio_backend, BOOT_FAILS)
    with resource_warnings(), anyio.fail_after(HANG_GUARD):
        assert await daemon.serve() == ExitCode.TREE_FAILED
    assert not (workdir / "control.sock").exists()


async def test_a_failed_boot_closes_the_control_socket(workdir: Path, anyio_backend: str) -> None:
    """After a boot failure the listening socket is closed, not left to the garbage collector."""
    daemon = make_daemon(workdir, anyio_backend, BOOT_FAILS)
    with resource_warnings() as unclosed:
        with anyio.fail_after(HANG_GUARD):
            assert await daemon.serve() == ExitCode.TREE_FAILED
        del daemon
    assert unclosed == []


async def test_root_giving_up_is_tree_failed(workdir: Path, anyio_backend: str) -> None:
    """A root that exceeds its restart intensity ends the daemon with TREE_FAILED."""
    tree = """
    [supervisor]
    intensity = 0
    [[supervisor.children]]
    id = "echo"
    start = "corral.demo:Echo"
    """
    async with serving(make_daemon(workdir, anyio_backend, tree)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/echo")
        assert await running.exited() == ExitCode.TREE_FAILED
    assert not running.socket.exists()


async def test_root_auto_shutdown_exits_ok(workdir: Path, anyio_backend: str) -> None:
    """The root shutting down by itself (a significant child finished) ends the daemon: OK."""
    tree = f"""
    [supervisor]
    auto-shutdown = "any-significant"
    [[supervisor.children]]
    id = "echo"
    start = "corral.demo:Echo"
    [[supervisor.children]]
    id = "job"
    start = "{HERE}:finishes"
    restart = "transient"
    significant = true
    """
    async with serving(make_daemon(workdir, anyio_backend, tree)) as running:
        assert await running.exited() == ExitCode.OK
    assert not running.socket.exists()


async def test_signals_reload_and_stop(workdir: Path, anyio_backend: str) -> None:
    """SIGHUP reloads; SIGTERM stops gracefully; a second SIGTERM forces the stop."""
    tree = f"""
    [supervisor]
    [[supervisor.children]]
    id = "slow"
    start = "{HERE}:SlowToStop"
    args = {{ name = "{anyio_backend}" }}
    shutdown = "infinity"
    """
    STOPPING[anyio_backend] = anyio.Event()
    daemon = make_daemon(workdir, anyio_backend, tree, from_file=True)
    path = workdir / "corral.toml"
    async with serving(daemon) as running:
        path.write_text(config_text(workdir, tree + EXTRA, "dead-letters = 5\n"))
        await anyio.wait_all_tasks_blocked()  # the signal receiver is open
        os.kill(os.getpid(), signal.SIGHUP)
        await running.log.wait_for(ChildStarted, "/extra")
        path.write_text("not toml")
        await anyio.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGHUP)  # rejected: logged, the tree runs on
        await anyio.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGTERM)
        await STOPPING[anyio_backend].wait()
        await anyio.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGTERM)
        assert await running.exited() == ExitCode.OK
        assert running.log.summary(ChildStopped) == [
            ("ChildStopped", "/extra"),
            ("ChildStopped", "/slow"),
        ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("daemon", "tree", "code", "logged"),
    [
        pytest.param(
            "",
            "[supervisor]\nintensity = -1\n",
            ExitCode.CONFIG,
            "{config}: expected `int` >= 0 at $.supervisor.intensity",
            id="invalid-config",
        ),
        pytest.param(
            'state-directory = "{workdir}/file/state"',
            TREE,
            ExitCode.CONFIG,
            "state directory {workdir}/file/state: {workdir}/file is not a directory",
            id="unusable-state-directory",
        ),
        pytest.param(
            'state-directory = "{workdir}/state"',
            TREE,
            ExitCode.INTERNAL,
            "{workdir}/control.sock exists and is not a socket: remove it or choose another"
            " control-socket",
            id="socket-path-taken",
        ),
        pytest.param(
            'state-directory = "{workdir}/state"',
            BOOT_FAILS,
            ExitCode.TREE_FAILED,
            "the tree did not start: supervisor '/': child 'db' failed to start:"
            " RuntimeError('no database')",
            id="boot-failure",
        ),
    ],
)
def test_run_exit_codes(
    workdir: Path,
    corral_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    daemon: str,
    tree: str,
    code: ExitCode,
    logged: str,
) -> None:
    """`corral run` exits 6 for a bad config or state directory, 1 when the socket cannot be
    served and 69 when the tree fails to start, and logs why."""
    (workdir / "file").write_text("")  # a state directory below it cannot exist
    if code == ExitCode.INTERNAL:
        (workdir / "control.sock").write_text("")  # not a socket: the daemon must not serve
    config_path = workdir / "corral.toml"
    config_path.write_text(config_text(workdir, tree, daemon.format(workdir=workdir)))
    with resource_warnings():
        assert cli.main(["run", str(config_path), "--backend", backend]) == code
    err = capsys.readouterr().err
    assert logged.format(workdir=workdir, config=config_path) in err


# -- the socket file ---------------------------------------------------------------------------


async def test_socket_is_private_by_default(workdir: Path, anyio_backend: str) -> None:
    """The socket is created mode 0600 (its directory made if missing)."""
    daemon = make_daemon(workdir, anyio_backend, socket=workdir / "sub" / "c.sock")
    async with serving(daemon) as running:
        mode = running.socket.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600


async def test_socket_group_gets_mode_0660(workdir: Path, anyio_backend: str) -> None:
    """With socket-group the socket is 0660 and owned by that group."""
    daemon = make_daemon(
        workdir, anyio_backend, daemon='socket-group = "root"\nsocket-mode = 0o660'
    )
    async with serving(daemon) as running:
        st = running.socket.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 0)
        assert (await (await running.connect()).ok("ping"))["pid"] == os.getpid()


async def test_unknown_socket_group_is_a_config_error(workdir: Path, anyio_backend: str) -> None:
    """A socket-group that does not exist is found with the config (exit 6), not at bind."""
    with pytest.raises(config.ConfigError) as info:
        make_daemon(
            workdir, anyio_backend, daemon='socket-group = "no-such-group"\nsocket-mode = 0o660'
        )
    assert str(info.value).endswith(
        "group 'no-such-group' does not exist: create it (groupadd no-such-group) or name"
        " another at $.daemon.socket-group"
    )


async def test_a_socket_path_too_long_is_a_config_error(workdir: Path, anyio_backend: str) -> None:
    """A socket path the kernel would refuse (over 107 bytes) is found with the config."""
    path = workdir / ("x" * 120) / "c.sock"
    with pytest.raises(config.ConfigError) as info:
        make_daemon(workdir, anyio_backend, socket=path)
    assert str(info.value) == (
        f"corral.toml: a Unix socket path must be at most 107 bytes; got"
        f" {len(str(path))} bytes: choose a shorter one at $.daemon.control-socket"
    )


async def test_a_socket_that_cannot_be_bound_is_closed(workdir: Path, anyio_backend: str) -> None:
    """When bind fails the socket made for it is closed, not left to the garbage collector."""
    daemon = make_daemon(workdir, anyio_backend, socket=Path("/proc/corral-test.sock"))
    with resource_warnings() as unclosed:
        with pytest.raises(DaemonError, match=r"^cannot serve the control socket /proc/"):
            await daemon.serve()
        del daemon
    assert unclosed == []


async def test_a_file_at_the_socket_path_is_a_daemon_error(
    workdir: Path, anyio_backend: str
) -> None:
    """A regular file where the socket goes is left alone and reported."""
    path = workdir / "control.sock"
    path.write_text("mine")
    with pytest.raises(DaemonError) as info:
        await make_daemon(workdir, anyio_backend).serve()
    assert str(info.value) == (
        f"{path} exists and is not a socket: remove it or choose another control-socket"
    )
    assert path.read_text() == "mine"


async def test_a_stale_socket_is_replaced(workdir: Path, anyio_backend: str) -> None:
    """A socket file nobody listens on (a daemon died) is removed and served again."""
    path = workdir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        assert (await (await running.connect()).ok("ping"))["pid"] == os.getpid()


async def test_a_second_daemon_on_the_same_socket_is_refused(
    workdir: Path, anyio_backend: str
) -> None:
    """A daemon whose socket another one serves refuses to start and leaves it alone."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        second = make_daemon(workdir, anyio_backend)
        with pytest.raises(DaemonError) as info:
            await second.serve()
        assert str(info.value) == (
            f"another daemon already serves {running.socket}: stop it, or choose another"
            " control-socket"
        )
        assert (await (await running.connect()).ok("ping"))["pid"] == os.getpid()


# -- logging -----------------------------------------------------------------------------------


async def test_json_log_lines_carry_event_fields(
    corral_logger: logging.Logger, anyio_backend: str
) -> None:
    """setup("json") logs one JSON object per line; a lifecycle event's fields are keys."""
    stream = io.StringIO()
    sink = setup("json", "info", stream)
    assert (logging.getLogger().level, corral_logger.propagate) == (logging.INFO, True)
    assert (sink, sink.format) == (current_sink(), "json")
    now = anyio.current_time()
    log_event(ChildExited("/a", "/", ExitKind.ERROR, RuntimeError("boom"), now))
    line = json.loads(stream.getvalue())
    assert abs(line.pop("time") - time.time()) < 60
    assert abs(line.pop("at") - time.time()) < 60
    assert line == {
        "level": "warning",
        "logger": "corral.events",
        "message": "/a exited (error): RuntimeError('boom')",
        "event": "child-exited",
        "path": "/a",
        "supervisor": "/",
        "exit": "error",
        "exception": "RuntimeError('boom')",
        "exception_type": "RuntimeError",
    }


@pytest.mark.parametrize(
    ("make", "level", "message"),
    [
        pytest.param(
            lambda t: ChildStarted("/a", "/", 2, t), "info", "started /a (restarts: 2)", id="start"
        ),
        pytest.param(
            lambda t: ChildExited("/a", "/", ExitKind.NORMAL, None, t),
            "info",
            "/a exited (normal)",
            id="exited-normal",
        ),
        pytest.param(lambda t: ChildStopped("/a", "/", t), "info", "stopped /a", id="stopped"),
        pytest.param(
            lambda t: ChildAbandoned("/a", "/", 5.0, t),
            "error",
            "/a did not stop within 5.0 s: abandoned (still cancelled)",
            id="abandoned",
        ),
        pytest.param(
            lambda t: StartFailed("/a", "/", ValueError("x"), t),
            "error",
            "/a failed to start: ValueError('x')",
            id="start-failed",
        ),
        pytest.param(
            lambda t: RestartScheduled("/a", "/", 0.25, t),
            "info",
            "restarting /a in 0.250 s",
            id="scheduled",
        ),
        pytest.param(
            lambda t: SupervisorGaveUp("/g", "a", 4, 3, 5.0, t),
            "error",
            "supervisor /g gave up: 4 restarts within 5.0 s (limit 3), last of /g/a",
            id="gave-up",
        ),
        pytest.param(
            lambda t: SupervisorAutoShutdown("/g", "a", t),
            "warning",
            "supervisor /g shut down: significant child /g/a exited",
            id="auto-shutdown",
        ),
        pytest.param(
            lambda t: SupervisorEscalated("/g", "/", t),
            "warning",
            "supervisor /g exited; escalated to /",
            id="escalated",
        ),
        pytest.param(
            lambda t: SupervisorEscalated("/", None, t),
            "warning",
            "supervisor / exited; escalated to the daemon",
            id="root-escalated",
        ),
        pytest.param(
            lambda t: MessageDeadLettered("/a", "rejected", None, t, {"order": 7}),
            "warning",
            "dead letter at /a (rejected): {'order': 7}",
            id="dead-letter",
        ),
        pytest.param(
            lambda t: MessageDeadLettered("/a", "dropped", None, t, "x" * 300),
            "warning",
            f"dead letter at /a (dropped): '{'x' * 196}...",
            id="dead-letter-long",
        ),
        pytest.param(
            lambda t: BreakerChanged("/a", "db", "open", "closed", "5 failures in a row", 5.0, t),
            "warning",
            "breaker db of /a is open: 5 failures in a row",
            id="breaker-open",
        ),
        pytest.param(
            lambda t: BreakerChanged("/a", "db", "closed", "half-open", "1 trial call", 0.0, t),
            "info",
            "breaker db of /a is closed: 1 trial call",
            id="breaker-closed",
        ),
        pytest.param(
            lambda t: ChildGivenUp("/p/j", "/p", 3, 2, 60.0, t),
            "error",
            "gave up /p/j: 3 exits within 60.0 s (its max_restarts 2); /p goes on",
            id="child-given-up",
        ),
    ],
)
async def test_every_event_kind_is_logged(
    corral_logger: logging.Logger,
    anyio_backend: str,
    make: Callable[[float], Any],
    level: str,
    message: str,
) -> None:
    """Each lifecycle event is one log record at its level, with a readable message."""
    stream = io.StringIO()
    setup("auto", "debug", stream)  # not a terminal: JSON
    log_event(make(anyio.current_time()))
    line = json.loads(stream.getvalue())
    assert (line["level"], line["message"]) == (level, message)


async def test_events_below_the_level_are_not_logged(
    corral_logger: logging.Logger, anyio_backend: str
) -> None:
    """Records under the configured level are not even built."""
    stream = io.StringIO()
    setup("text", "error", stream)
    log_event(ChildStarted("/a", "/", 0, anyio.current_time()))
    EVENTS.error("%s", "shown")
    assert stream.getvalue().endswith(" ERROR   corral.events: shown\n")
    assert "started" not in stream.getvalue()


async def test_json_formatter_adds_the_traceback(
    corral_logger: logging.Logger, anyio_backend: str
) -> None:
    """An exception logged in JSON carries its traceback as a field."""
    stream = io.StringIO()
    setup("json", "info", stream)
    try:
        raise ValueError("bad")  # noqa: TRY301, EM101  # a real traceback to log
    except ValueError:
        logging.getLogger("corral.test").exception("it failed")
    line = json.loads(stream.getvalue())
    assert line["message"] == "it failed"
    assert line["traceback"].endswith("ValueError: bad")
    sink = current_sink()
    assert sink is not None
    assert isinstance(sink.handler.formatter, JsonFormatter)


async def test_commands_are_audited_in_the_log(
    workdir: Path, anyio_backend: str, corral_logger: logging.Logger
) -> None:
    """A state-changing command is logged with who asked, what and the result."""
    stream = io.StringIO()
    setup("json", "info", stream)
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/ticker")
        await conn.error("start-child", supervisor="/group")
        await conn.ok("reload", dry_run=True)  # not a change: not audited
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    audits = [
        {k: line[k] for k in ("message", "uid", "pid", "command", "path", "result")}
        for line in lines
        if line.get("event") == "audit"
    ]
    assert audits == [
        {
            "message": f"audit: uid {os.getuid()} (pid {os.getpid()}) stop path='/ticker': ok",
            "uid": os.getuid(),
            "pid": os.getpid(),
            "command": "stop",
            "path": "/ticker",
            "result": "ok",
        },
        {
            "message": f"audit: uid {os.getuid()} (pid {os.getpid()}) start-child"
            " supervisor='/group' id=None args={} wait=0.0: error unsupported",
            "uid": os.getuid(),
            "pid": os.getpid(),
            "command": "start-child",
            "path": "/group",
            "result": "error unsupported",
        },
    ]
    messages = [line["message"] for line in lines if line["logger"] == "corral.daemon"]
    assert messages[0].startswith("corral ")
    assert messages[0].endswith(
        f"ready: 4 children under / from corral.toml, control socket {running.socket}"
    )
    assert messages[-2:] == ["stopping: children stop in reverse start order", "stopped"]


# -- regressions found in review ---------------------------------------------------------------


async def test_a_refused_client_that_already_left_does_not_stop_the_daemon(
    workdir: Path, anyio_backend: str
) -> None:
    """A client past max-connections that closes before its `busy` answer is sent costs the
    daemon nothing: it goes on serving."""
    daemon = make_daemon(workdir, anyio_backend, daemon="max-connections = 1")
    async with serving(daemon) as running:
        holder = await running.connect()
        assert (await holder.ok("ping"))["pid"] == os.getpid()
        for _ in range(5):
            gone = await anyio.connect_unix(running.socket)
            await gone.aclose()  # before the daemon answers `busy`
        await anyio.wait_all_tasks_blocked()
        assert (await holder.ok("ping"))["pid"] == os.getpid()
        assert not running.done.is_set()


async def test_shutdown_from_a_client_that_does_not_wait_for_the_answer(
    workdir: Path, anyio_backend: str
) -> None:
    """`shutdown` sent and the connection closed at once (`nc -q0`) still stops the daemon."""
    async with serving(make_daemon(workdir, anyio_backend)) as running:
        client = await anyio.connect_unix(running.socket)
        await client.send(b'{"command": "shutdown"}\n')
        await client.aclose()
        assert await running.exited() == ExitCode.OK


async def test_an_operator_stop_is_saved_before_the_stop_ends(
    workdir: Path, anyio_backend: str
) -> None:
    """The hold is written to the state file when it is placed, so a stop cut short (a
    forced daemon stop, a crash) still leaves the child stopped at the next start."""
    tree = TREE + '\n[[supervisor.children]]\nid = "slow"\nstart = "' + __name__ + ':SlowToStop"\n'
    tree += 'args = { name = "held" }\nshutdown = "infinity"\n'
    STOPPING["held"] = anyio.Event()
    async with serving(make_daemon(workdir, anyio_backend, tree)) as running:
        conn = await running.connect()
        await conn.send(b'{"command": "stop", "path": "/slow"}\n')
        await STOPPING["held"].wait()  # its on_stop runs, and never ends by itself
        saved = json.loads((workdir / "state" / "held.json").read_text())
        assert saved == {"version": 1, "held": ["/slow"]}
        running.tree.stop(anyio.current_time())  # forced: the stop is cut short


async def test_a_reload_that_changes_a_held_childs_type_keeps_the_hold(
    workdir: Path, anyio_backend: str
) -> None:
    """A held worker that becomes a supervisor in the new file stays held (and saved)."""
    path = workdir / "corral.toml"
    async with serving(make_daemon(workdir, anyio_backend, from_file=True)) as running:
        conn = await running.connect()
        await conn.ok("stop", path="/echo")
        path.write_text(
            path.read_text().replace(
                'id = "echo"\nstart = "corral.demo:Echo"',
                'id = "echo"\ntype = "supervisor"\nchildren = []',
            )
        )
        result = await conn.ok("reload")
        assert result["failures"] == []
        assert running.tree.held == {"/echo"}
        assert json.loads((workdir / "state" / "held.json").read_text())["held"] == ["/echo"]
        echo = await conn.ok("status", path="/echo")
        assert (echo["type"], echo["state"], echo["held"]) == ("supervisor", "stopped", True)


async def test_a_reload_brings_back_a_declared_child_deleted_at_run_time(
    workdir: Path, anyio_backend: str
) -> None:
    """The file is the truth: a child removed with delete-child is planned as new and started
    again by the next reload, even when the file did not change."""
    async with serving(make_daemon(workdir, anyio_backend, from_file=True)) as running:
        conn = await running.connect()
        await conn.ok("terminate-child", path="/echo")
        await conn.ok("delete-child", path="/echo")
        plan = await conn.ok("reload", dry_run=True)
        assert plan["changes"] == ["start /echo (new)"]
        await conn.ok("reload")
        assert (await conn.ok("status", path="/echo"))["state"] == "running"


async def test_an_unwritable_state_directory_stops_the_start(
    workdir: Path, anyio_backend: str
) -> None:
    """The state directory is written once before anything starts: if it cannot be, the
    daemon does not start (exit 6 from `corral run`), and its socket is gone."""
    (workdir / "state").write_text("a file where the directory should be")
    daemon = make_daemon(workdir, anyio_backend)
    with pytest.raises(StateError, match=r"^state directory .*/state: .*/state is not a dir"):
        await daemon.serve()
    assert daemon.tree is None
    assert not (workdir / "control.sock").exists()


def test_configs_that_cannot_be_read_are_config_errors(workdir: Path) -> None:
    """Nesting too deep to read, and a socket path with a NUL, are ConfigErrors (exit 6)."""
    deep = "[supervisor]\nx = " + "{ a = " * 2000 + "1" + " }" * 2000 + "\n"
    with pytest.raises(config.ConfigError, match=r"^deep\.toml: "):
        config.parse(deep, "deep.toml")
    with pytest.raises(config.ConfigError) as info:
        config.parse('[daemon]\ncontrol-socket = "a\\u0000b"\n[supervisor]\n', "nul.toml")
    assert str(info.value) == (
        "nul.toml: a path cannot contain a NUL character at $.daemon.control-socket"
    )


async def test_a_child_that_failed_to_start_says_why(
    workdir: Path, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A child added by a reload that fails to start shows the failure in status and why
    (with its traceback), and the audit record says the reload was not whole."""
    path = workdir / "corral.toml"
    broken = f'\n[[supervisor.children]]\nid = "broken"\nstart = "{__name__}:fails_to_start"\n'
    async with serving(make_daemon(workdir, anyio_backend, from_file=True)) as running:
        conn = await running.connect()
        path.write_text(path.read_text() + broken)
        with caplog.at_level(logging.INFO, logger="corral.audit"):
            result = await conn.ok("reload")
        assert result["failures"] == [
            "supervisor '/': child 'broken' failed to start: RuntimeError('no database')"
        ]
        audit = [r for r in caplog.records if r.name == "corral.audit"]
        assert audit[-1].getMessage().endswith(": ok, 1 failed to start")
        node = await conn.ok("status", path="/broken")
        assert (node["state"], node["start_error"]) == ("failed", "RuntimeError('no database')")
        why = await conn.ok("why", path="/broken")
        assert why["start_error"] == "RuntimeError('no database')"
        assert why["start_traceback"].endswith("RuntimeError: no database\n")
        lines = cli.render_why(why)
        assert "  last start failed: RuntimeError('no database')" in lines
        assert cli.render_status(node, colour=False)[0].endswith(
            "failed to start: RuntimeError('no database')"
        )


async def test_readyz_names_the_failed_children(workdir: Path, anyio_backend: str) -> None:
    """While essential children are failed the daemon is not ready (its service level is
    minimal), and says which (the first five)."""
    path = workdir / "corral.toml"
    broken = "".join(
        f'\n[[supervisor.children]]\nid = "b{n}"\nstart = "{__name__}:fails_to_start"\n'
        for n in range(6)
    )
    async with serving(make_daemon(workdir, anyio_backend, from_file=True)) as running:
        conn = await running.connect()
        assert running.daemon.unready() is None
        path.write_text(path.read_text() + broken)
        result = await conn.ok("reload")
        assert len(result["not_applied"]) == len(result["failures"]) == 6
        assert running.daemon.unready() == (
            "service minimal: essential down: /b0 failed, /b1 failed, /b2 failed, /b3 failed,"
            " /b4 failed and 1 more (ready-when = 'degraded'); see corral status"
        )
        for n in range(6):
            await conn.ok("delete-child", path=f"/b{n}")
        assert running.daemon.unready() is None


FRAGILE = """
[supervisor]
intensity = 10
period = 60

[[supervisor.children]]
id = "fragile"
type = "supervisor"
intensity = 1
period = 60
children = [
  { id = "crasher", start = "corral.demo:Echo" },
  { id = "calm", start = "corral.demo:Echo" },
]

[[supervisor.children]]
id = "pool"
type = "supervisor"
intensity = 100
child = { id = "w", start = "corral.demo:Echo" }
"""


async def test_why_tells_how_a_supervisor_gave_up_and_keeps_the_exits_that_led_there(
    workdir: Path, anyio_backend: str
) -> None:
    """/fragile gives up after /fragile/crasher's second crash: `why /fragile` says when, the
    restarts within the period against the limit, and the child's last exit with its
    traceback; `why /fragile/crasher` still shows its exits after /fragile was restarted; and
    the give-up is /fragile's own restart reason."""
    async with serving(make_daemon(workdir, anyio_backend, FRAGILE)) as running:
        conn = await running.connect()
        await conn.ok("kill", path="/fragile/crasher", reason="first")
        await running.log.wait_for(ChildStarted, "/fragile/crasher", restarts=1)
        await conn.ok("kill", path="/fragile/crasher", reason="second")
        await running.log.wait_for(ChildStarted, "/fragile", restarts=1, restart=True)
        why = await conn.ok("why", path="/fragile")
        (exit_,) = why["exits"]
        assert exit_["kind"] == "shutdown"
        assert exit_["reason"] == (
            "supervisor '/fragile' gave up: 2 restarts within 60.0 s (limit 1),"
            " last of /fragile/crasher"
        )
        assert exit_["traceback"].splitlines()[0] == "corral.daemon.commands.Killed: second"
        assert exit_["traceback"].endswith(f"SupervisorGaveUpError: {exit_['reason']}\n")
        lines = cli.render_why(why)
        assert f"  last exit: {cli._when(exit_['at'])} shutdown: {exit_['reason']}" in lines
        assert "    corral.daemon.commands.Killed: second" in lines
        crasher = await conn.ok("why", path="/fragile/crasher")
        assert [(e["kind"], e["exception"]) for e in crasher["exits"]] == [
            ("error", "Killed('first')"),
            ("error", "Killed('second')"),
        ]
        assert crasher["restarts"] == 0  # a new incarnation of /fragile started it afresh
        metrics = running.daemon.metrics()
        assert 'corral_child_restarts_total{path="/fragile",reason="gave_up"} 1' in metrics
        assert 'corral_child_restarts_total{path="/fragile",reason="exit"}' not in metrics


async def test_exit_histories_are_bounded_and_go_with_their_child(
    workdir: Path, anyio_backend: str
) -> None:
    """At most the last ten exits per child are kept, and a child removed for good (a pool's
    terminated child) leaves none behind."""
    async with serving(make_daemon(workdir, anyio_backend, FRAGILE)) as running:
        conn = await running.connect()
        path = (await conn.ok("start-child", supervisor="/pool", args={}))["path"]
        for n in range(12):
            await conn.ok("kill", path=path, reason=str(n))
            await running.log.wait_for(ChildStarted, path, restarts=n + 1)
        why = await conn.ok("why", path=path)
        assert [e["exception"] for e in why["exits"]] == [f"Killed('{n}')" for n in range(2, 12)]
        assert path in running.tree.services.exits
        await conn.ok("terminate-child", path=path)
        assert path not in running.tree.services.exits


async def test_a_child_that_declines_is_stopped_and_says_why(
    workdir: Path, anyio_backend: str
) -> None:
    """A child that declines at boot does not stop the boot; status shows it stopped (not
    failed: /readyz stays 200), `why` says it declined and why, `start` says it declined
    again, and a pool child that declines is not kept."""
    tree = TREE + f'\n[[supervisor.children]]\nid = "off"\nstart = "{__name__}:declines"\n'
    tree = tree.replace(
        'child = { id = "w", start = "corral.demo:Echo", restart = "temporary" }',
        f'child = {{ id = "w", start = "{__name__}:declines" }}',
    )
    async with serving(make_daemon(workdir, anyio_backend, tree)) as running:
        conn = await running.connect()
        assert (await conn.ok("status", path="/off"))["state"] == "stopped"
        assert running.daemon.unready() is None
        why = await conn.ok("why", path="/off")
        assert (why["declined"], why.get("start_error")) == ("feature off", None)
        assert "  declined to start (corral.Ignore): feature off" in cli.render_why(why)
        assert await conn.ok("start", path="/off") == {
            "path": "/off",
            "done": "declined to start (corral.Ignore): not running; `corral why` says why",
        }
        assert await conn.ok("start-child", supervisor="/pool", id="p1", args={}) == {
            "path": "/pool/p1",
            "done": "declined to start (corral.Ignore): not kept",
        }
        assert (await conn.ok("status", path="/pool")).get("children") == []
