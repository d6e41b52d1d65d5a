"""The service commands as a newcomer meets them, run as real processes: `wearsync api` and `sim`
say where they listen, a busy port is named with how to choose another (in `wearsync dev` too,
before anything starts), `wearsync migrate` on a missing database says so in one line, the
`api-key` commands spell --application as the others do, and `make run` installs no dev tools."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import process_env, with_database
from wearsync.settings import Settings

TIMEOUT_S = 120  # a guard against a hang, not a margin: a loaded machine may be slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def run(env: dict[str, str], *args: str) -> tuple[int, list[str], list[str]]:
    """`wearsync ARGS` to its end: (exit code, stdout's lines, stderr's lines)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines(), err.decode().splitlines()


@pytest.mark.parametrize("command", ["api", "sim"])
async def test_a_service_logs_where_it_listens_once_it_does(settings: Settings, command: str) -> None:
    """Also the port the system chose, with --port 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", command, "--port", "0", env=process_env(settings, log_format="console"),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), TIMEOUT_S)).decode()
        assert "listening" in line, line
        url = re.search(r"url=http://127\.0\.0\.1:([0-9]+)", line)
        assert url, line
        port = int(url.group(1))
        assert port != 0, line
        with socket.create_connection(("127.0.0.1", port)):  # it does listen there
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), TIMEOUT_S)


@pytest.mark.parametrize("command", ["api", "sim"])
async def test_a_service_on_a_busy_port_names_it_without_a_traceback(
    settings: Settings, busy_port: int, command: str
) -> None:
    code, _, lines = await run(process_env(settings), command, "--port", str(busy_port))
    assert (code, lines[-1:]) == (
        1, [f"error: port {busy_port} on 127.0.0.1 is in use by another program: choose another with --port"]
    )  # fmt: skip


@pytest.mark.parametrize("which", ["the API", "the simulators", "the webhook sink"])
async def test_dev_on_a_busy_port_names_it_and_how_to_choose_others_before_starting_anything(
    busy_port: int, which: str, tmp_path: str
) -> None:
    ports = {name: str(busy_port if name == which else 0) for name in ("the API", "the simulators", "the webhook sink")}
    env = {"PATH": "", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
    options = (
        "--port",
        ports["the API"],
        "--sim-port",
        ports["the simulators"],
        "--sink-port",
        ports["the webhook sink"],
    )
    code, _, lines = await run(env, "dev", "--data-dir", str(tmp_path), *options)
    assert (code, lines[-2:]) == (1, [
        f"error: port {busy_port} ({which}) is not free: Address already in use.",
        "Choose others: make run PORT=8180 SIM_PORT=8190 SINK_PORT=8170"
        " (or wearsync dev --port 8180 --sim-port 8190 --sink-port 8170)",
    ])  # fmt: skip


async def test_migrate_on_a_missing_database_says_so_in_one_line(servers: tuple[str, str]) -> None:
    missing = with_database(servers[0], "wearsync_never_created")
    code, _, lines = await run(os.environ | {"DATABASE_URL": missing}, "migrate")
    assert (code, lines[-1:]) == (1, [
        'error: cannot connect to PostgreSQL (DATABASE_URL): database "wearsync_never_created" does not exist:'
        " create it first (createdb), or point DATABASE_URL at another"
    ])  # fmt: skip


async def test_api_key_commands_take_application_as_sync_and_tasks_do_and_app_still(settings: Settings) -> None:
    env, application = process_env(settings), f"app-{uuid.uuid4().hex[:8]}"  # other keys may be there
    code, created, err = await run(env, "api-key", "create", "--name", "ci", "--application", application)
    assert code == 0, err
    for spelling in ("--application", "--app"):
        code, listed, err = await run(env, "api-key", "list", spelling, application)
        assert code == 0, err
        rows = [line.split()[:3] for line in listed[1:]]
        assert [row[1:] for row in rows] == [[application, "ci"]], listed
        assert created[0].startswith(rows[0][0]), (created, listed)


def test_make_run_installs_what_running_needs_and_make_test_the_dev_toolchain(tmp_path: Path) -> None:
    def planned(target: str) -> str:
        done = subprocess.run(["make", "-n", target, f"VENV={tmp_path}/venv"], cwd=ROOT, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout

    run_plan, test_plan = planned("run"), planned("test")
    assert "pip install -q -e '.[embedded]'" in run_plan, run_plan
    assert "[dev]" not in run_plan, run_plan
    assert "wearsync dev --port 8080 --sim-port 8090" in run_plan, run_plan
    assert "pip install -q -e '.[dev]'" in test_plan, test_plan
