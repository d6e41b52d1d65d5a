"""The operators' commands (`wearsync sync|tasks|connections`), run as real processes against
PostgreSQL, Redis, the real worker and the simulators."""

import asyncio
import fcntl
import io
import os
import pty
import re
import signal
import struct
import sys
import termios
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker
from redis.asyncio import Redis

from tests.conftest import Factory, process_env, sim_records, start_sync, start_worker
from tests.test_read_api import explain
from wearsync.cli import parser
from wearsync.db.operators import RECENT_TASKS_SQL
from wearsync.deps import Deps
from wearsync.operate import ProgressView, progress_line
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState
from wearsync.sync import run_task

Client = TestClient[web.Request, web.Application]
TIMEOUT_S = 120  # a guard against a hang, not a margin: a loaded machine may be slow


async def wearsync(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run `wearsync ARGS` with the test's settings: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=process_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def cli(settings: Settings, *argv: str) -> tuple[int, str, str]:
    """`wearsync ARGV` in this process (as `main` runs it, with the test's settings and without
    configuring logging), in a thread of its own: (exit code, stdout, stderr)."""
    args = parser().parse_args(argv)

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
            args.run(settings, args)
        assert isinstance(exited.value.code, int)
        return exited.value.code, out.getvalue(), err.getvalue()

    return await asyncio.wait_for(asyncio.to_thread(run), TIMEOUT_S)


def rows_of(table: str) -> list[list[str]]:
    """A table the CLI printed, as cells (columns are two or more spaces apart), header first."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines() if line.strip()]


async def counts(db: asyncpg.Pool, user_id: str) -> dict[str, int]:
    tables = {"workouts": "workouts", "sleep": "sleep_sessions", "recovery": "recoveries",
              "daily_activity": "daily_activity", "samples": "samples"}  # fmt: skip
    uid = uuid.UUID(user_id)
    return {kind: await db.fetchval(f"SELECT count(*) FROM {t} WHERE user_id = $1", uid) for kind, t in tables.items()}


async def test_sync_wait_follows_the_task_until_it_succeeds(
    factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    """Without a worker the task stays queued, so the first update is seen for sure; then a worker
    runs it and the command reports every data type's pages and records, and exits 0."""
    _, user_id, sim_user = await factory.connected_user("suunto")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", "sync", "suunto", user_id, "--wait", "--limit", "20",
        env=process_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    task_id = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)).decode().strip()
    first = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)).decode()
    assert first == f"task {task_id} (suunto): queued\n"
    async with start_worker(settings):
        rest, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    out = rest.decode()
    assert process.returncode == 0, (out, err.decode())
    assert "Sync task queued for suunto (application acme)." in err.decode()
    assert "\x1b[" not in out  # not a terminal: plain lines

    task = await db.fetchrow("SELECT * FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    assert task is not None
    assert (task["status"], task["mode"], task["data_types"]) == ("succeeded", "async", ["workouts", "data_247"])
    assert task["params"] == {"since": None, "limit": 20, "offset": 0, "filter_by_modification_time": True}
    assert task["application_id"] == await db.fetchval("SELECT id FROM applications WHERE name = 'acme'")
    stored = await counts(db, user_id)
    served = await sim_records(sim_server, "suunto", sim_user)
    assert stored["workouts"] == len(served["workouts"]) > 20  # more than one page
    lines = out.splitlines()
    assert f"task {task_id} (suunto): running" in lines
    assert f"task {task_id} (suunto): succeeded" in lines
    assert re.fullmatch(r"succeeded in \d+\.\d+s", lines[-1])
    workouts = [line for line in lines if line.startswith("workouts ")]
    assert len(workouts) >= 2  # queued, ..., succeeded: one line per change
    pages = task["progress"]["workouts"]["pages"]
    assert task["progress"]["workouts"]["pages_total"] is None  # Suunto does not say how many there are
    assert workouts[-1] == f"workouts  [{'#' * 24}] succeeded {pages:>5} pages  {stored['workouts']} records"
    last_247 = [line for line in lines if line.startswith("data_247 ")][-1]
    assert " succeeded " in last_247
    kinds = sorted(k for k in stored if k != "workouts" and stored[k])
    total = sum(stored[k] for k in kinds)
    assert last_247.endswith(f"{total} records (" + ", ".join(f"{k} {stored[k]}" for k in kinds) + ")")


async def test_ctrl_c_stops_waiting_and_the_task_goes_on(
    factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    _, user_id, _ = await factory.connected_user("suunto")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", "sync", "suunto", user_id, "--wait",
        env=process_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    task_id = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)).decode().strip()
    assert (await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)).decode().endswith(": queued\n")
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 130, err.decode()
    assert err.decode().endswith(f"Stopped waiting; task {task_id} goes on (wearsync tasks --user {user_id}).\n"), err
    assert await db.fetchval("SELECT status::text FROM sync_tasks WHERE id = $1", uuid.UUID(task_id)) == "queued"


async def test_sync_wait_of_garmin_reports_the_backfill_it_asked_for(
    factory: Factory, settings: Settings, db: asyncpg.Pool, worker: Worker, sim_server: TestServer
) -> None:
    """Garmin's data comes by webhook: waiting ends when the backfill is asked for, and says the
    task waits for its deliveries (ISO dates are read as the API reads them)."""
    _, user_id, _ = await factory.connected_user("garmin")
    code, out, err = await wearsync(
        settings, "sync", "garmin", user_id, "--wait", "--summary-start-time", "2026-08-01",
        "--summary-end-time", "2026-10-15",
    )  # fmt: skip
    assert code == 0, (out, err)
    last_247 = [line for line in out.splitlines() if line.startswith("data_247 ")][-1]
    assert last_247 == f"data_247  [{'#' * 24}] awaiting_delivery 12/12 pages  0 records"  # all asked
    *_, status, backfill, waits = out.splitlines()
    assert (status, backfill) == (
        "running", "Garmin backfill: 15 window(s) requested, 0 delivered so far (the data arrives by webhook)"
    )  # fmt: skip
    assert waits.startswith("The task stays running until every window has had a delivery, or until ")
    assert waits.endswith(f" UTC: wearsync tasks --user {user_id}")
    params = await db.fetchval("SELECT params FROM sync_tasks")
    assert params == {"summary_start_time": 1785542400, "summary_end_time": 1792022400}


@asynccontextmanager
async def in_terminal(settings: Settings, *args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`wearsync ARGS` with its stdout on a pseudo-terminal of 160 columns: (process, pty master)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=process_env(settings),
        stdout=slave, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        yield process, master
    finally:
        os.close(master)


def read_until(master: int, seen: bytearray, marker: bytes) -> None:
    """Read the terminal into `seen` until `marker` shows up, or the other side closes it."""
    while marker not in seen:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process is gone
            return
        if not chunk:
            return
        seen.extend(chunk)


async def test_sync_wait_on_a_terminal_redraws_the_bars_in_place(
    factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    _, user_id, _ = await factory.connected_user("suunto")
    seen = bytearray()
    async with in_terminal(settings, "sync", "suunto", user_id, "--wait", "--data-type", "workouts") as (process, pty):
        await asyncio.wait_for(asyncio.to_thread(read_until, pty, seen, b"queued"), TIMEOUT_S)
        assert b"(suunto): queued" in seen
        async with start_worker(settings):
            await asyncio.wait_for(asyncio.to_thread(read_until, pty, seen, b"\nsucceeded in "), TIMEOUT_S)
            await asyncio.wait_for(process.wait(), TIMEOUT_S)
    assert process.returncode == 0
    text = seen.decode()
    # Every redraw goes back up over the two lines (task, workouts) and clears what it rewrites.
    frames = text.split("\x1b[2F")
    assert len(frames) >= 2, text
    assert "workouts  [" + "#" * 24 + "] succeeded" in frames[-1]
    assert all(line.endswith("\x1b[K") for line in frames[-1].splitlines()[:2])
    task_id = text.splitlines()[0].strip()
    assert await db.fetchval("SELECT status::text FROM sync_tasks WHERE id = $1", uuid.UUID(task_id)) == "succeeded"


async def test_sync_wait_exits_non_zero_when_a_data_type_fails(
    factory: Factory, settings: Settings, db: asyncpg.Pool, worker: Worker, sim_state: SimState
) -> None:
    _, user_id, _ = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/247samples/sleep", "status", 500, count=-1))
    code, out, err = await wearsync(settings, "sync", "suunto", user_id, "--wait")
    assert code == 1, (out, err)
    last_247 = [line for line in out.splitlines() if line.startswith("data_247 ")][-1]
    assert " failed " in last_247
    assert "error: GET " in last_247
    assert "/247samples/sleep failed: HTTP 500" in last_247
    assert out.splitlines()[-1].startswith("partial in ")
    assert "data_247: GET " in out.splitlines()[-1]


async def test_sync_queues_the_apis_task_and_coalesces(
    factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    """Without --wait: the task id, at once; the same sync again is the same task; parameters are
    the API's (and one that does not apply to the provider is pointed out)."""
    _, user_id, _ = await factory.connected_user("suunto")
    args = ["sync", "suunto", user_id, "--data-type", "workouts", "--since", "2024-01-01", "--limit", "7",
            "--no-filter-by-modification-time", "--samples"]  # fmt: skip
    code, out, err = await wearsync(settings, *args)
    assert code == 2, (out, err)  # --since is a Unix time, as the API's `since` is
    assert (
        err
        == "error: Invalid parameter 'since': Input should be a valid integer, unable to parse string as an integer\n"
    )
    args[6] = "1704067200"
    code, out, err = await wearsync(settings, *args)
    assert code == 0, err
    task_id = out.strip()
    assert "note: --samples does not apply to suunto; ignored" in err
    assert "Sync task queued for suunto" in err
    task = await db.fetchrow("SELECT * FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    assert task is not None
    assert (task["status"], task["data_types"]) == ("queued", ["workouts"])
    assert task["params"] == {"since": 1704067200, "limit": 7, "offset": 0, "filter_by_modification_time": False}
    redis = Redis.from_url(settings.redis_url)
    try:
        assert [j.decode() for j in await redis.zrange(settings.queue_name, 0, -1)] == [task_id]
    finally:
        await redis.aclose()

    code, again, err = await wearsync(settings, *args)
    assert code == 0, err
    assert again.strip() == task_id
    assert "already queued or running" in err
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 1


async def test_bad_input_is_refused_with_a_clear_message_and_nothing_queued(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    nobody = str(uuid.uuid4())
    cases = {
        ("sync", "fitbit", user_id): "Invalid parameter 'provider': Input should be 'garmin', 'strava', 'polar', "
        "'suunto' or 'whoop'",
        ("sync", "suunto", "42"): "Invalid parameter 'user_id': Input should be a valid UUID",
        ("sync", "suunto", nobody): "User not found",
        ("sync", "suunto", user_id, "--limit", "500"): "Invalid parameter 'limit': Input should be less than or "
        "equal to 100",
        ("sync", "suunto", user_id, "--offset", "-1"): "Invalid parameter 'offset': Input should be greater than or "
        "equal to 0",
        ("sync", "suunto", user_id, "--data-type", "steps"): "Invalid parameter 'data_type': Input should be "
        "'workouts', '247' or 'all'",
        ("sync", "garmin", user_id, "--summary-start-time", "2025-02-01", "--summary-end-time", "2025-01-01"):
            "summary_start_time must not be after summary_end_time",
        ("sync", "garmin", user_id, "--summary-start-time", "yesterday"): "Invalid parameter 'summary_start_time': "
        "Value error, must be a Unix timestamp or an ISO 8601 date",
        ("sync", "strava", user_id, "--data-type", "247"): "Provider 'strava' does not support 247 data "
        "(sleep/recovery/activity)",
        ("sync", "strava", user_id): "No active connection found for provider",
        ("sync", "suunto", user_id, "--application", "globex"): "User not found in application 'globex'",
        ("tasks", "--status", "done"): "Invalid parameter 'status': Input should be 'queued', 'running', "
        "'succeeded', 'partial' or 'failed'",
        ("tasks", "--provider", "fitbit"): "Invalid parameter 'provider'",
        ("tasks", "--user", "bob"): "Invalid parameter 'user_id': Input should be a valid UUID",
        ("tasks", "--limit", "0"): "Invalid parameter 'limit': Input should be greater than or equal to 1",
        ("connections", "bob"): "Invalid parameter 'user_id': Input should be a valid UUID",
        ("connections", nobody): "User not found",
    }  # fmt: skip
    for args, message in cases.items():
        code, out, err = await cli(settings, *args)
        assert (code, out) == (2, ""), (args, out, err)
        assert err.startswith(f"error: {message}"), (args, err)
        assert len(err.splitlines()) == 1, (args, err)  # a message, not a traceback
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 0
    assert await wearsync(settings, "sync", "suunto", nobody) == (2, "", "error: User not found\n")  # the real process
    # The API says the same about the same input.
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?data_type=247", headers={"X-API-Key": key})
    assert (await resp.json())["detail"] == cases[("sync", "strava", user_id, "--data-type", "247")]


async def test_tasks_lists_recent_tasks_newest_first_with_filters(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, deps: Deps, sim_state: SimState
) -> None:
    key, suunto_user, _ = await factory.connected_user("suunto")
    ok = await start_sync(client, key, "suunto", suunto_user, "data_type=workouts")
    await run_task(deps, uuid.UUID(ok))
    other_key = await factory.api_key("globex")
    strava_user = await factory.user(other_key)
    await factory.connect(other_key, strava_user, "strava", "bob")
    sim_state.faults.append(Fault("strava", "/api/v3/athlete/activities", "status", 500, count=-1))
    failed = await start_sync(client, other_key, "strava", strava_user)
    await run_task(deps, uuid.UUID(failed))
    queued = await start_sync(client, key, "suunto", suunto_user, "data_type=247")

    code, out, err = await wearsync(settings, "tasks")
    assert code == 0, err
    header, *rows = rows_of(out)
    assert header == ["id", "provider", "user", "status", "data types", "created (UTC)", "duration", "error"]
    assert [r[0] for r in rows] == [queued, failed, ok]
    by_id = {r[0]: r for r in rows}
    assert by_id[queued][1:5] == ["suunto", suunto_user, "queued", "data_247"]
    assert by_id[queued][6:] == ["-", "-"]
    assert by_id[ok][1:5] == ["suunto", suunto_user, "succeeded", "workouts"]
    assert re.fullmatch(r"\d+\.\ds", by_id[ok][6])
    assert by_id[ok][7] == "-"
    assert by_id[failed][1:5] == ["strava", strava_user, "failed", "workouts"]
    assert by_id[failed][7].startswith("workouts: GET ")
    assert "HTTP 500" in by_id[failed][7]
    created = await db.fetchval("SELECT created_at FROM sync_tasks WHERE id = $1", uuid.UUID(ok))
    assert by_id[ok][5] == created.strftime("%Y-%m-%d %H:%M:%S")  # asyncpg gives UTC

    filtered = {
        ("--status", "failed"): [failed],
        ("--provider", "suunto"): [queued, ok],
        ("--user", strava_user): [failed],
        ("--application", "acme"): [queued, ok],
        ("--application", "initech"): [],
        ("--limit", "1"): [queued],
        ("--status", "succeeded", "--user", suunto_user): [ok],
    }
    for args, expected in filtered.items():
        code, out, err = await cli(settings, "tasks", *args)
        assert code == 0, (args, err)
        assert [r[0] for r in rows_of(out)[1:]] == expected, args


async def test_tasks_reads_only_the_newest_matching_tasks(factory: Factory, db: asyncpg.Pool) -> None:
    """`wearsync tasks` without --user, on a table of many users' tasks: the first entries of one
    index in the list's order, no sort and no sequential scan; with --status / --provider checked
    in the index, so only the tasks listed are read from the table."""
    key = await factory.api_key()
    users = [uuid.UUID(await factory.user(key)) for _ in range(20)]
    await db.execute(
        """
        INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, status, created_at)
        SELECT gen_random_uuid(), u.application_id, u.id,
               (ARRAY['garmin', 'strava', 'polar', 'suunto', 'whoop'])[g % 5 + 1], 'async', ARRAY['workouts'], '{}',
               (CASE WHEN g % 47 = 0 THEN 'failed' WHEN g % 13 = 0 THEN 'partial' ELSE 'succeeded' END)::task_status,
               now() - g * interval '1 minute'
        FROM generate_series(1, 30000) g JOIN users u ON u.id = ($1::uuid[])[g % 20 + 1]
        """,
        users,
    )
    await db.execute("ANALYZE sync_tasks")
    limit = 20
    filters = [("NULL", "NULL"), ("'failed'", "NULL"), ("NULL", "'strava'"), ("'failed'", "'strava'")]
    async with db.acquire() as conn:
        await conn.execute(f"PREPARE tasks AS {RECENT_TASKS_SQL}")
        for status, provider in filters:
            nodes = await explain(conn, "tasks", f"{status}, {provider}, NULL, NULL, {limit}")
            scans = [n for n in nodes if "Scan" in n["Node Type"]]
            assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [("Index Scan", "sync_tasks_created_idx")]
            assert not [n for n in nodes if "Sort" in n["Node Type"]], nodes  # incremental sorts too
            assert nodes[0]["Actual Rows"] == limit
            assert scans[0]["Actual Rows"] == limit  # every task read from the table is listed
            assert "Rows Removed by Filter" not in scans[0], scans[0]
        await conn.execute("DEALLOCATE tasks")


async def test_connections_shows_state_scopes_expiry_and_last_sync_but_never_tokens(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, deps: Deps
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    strava_tokens = await factory.sim_tokens("strava", "cli-athlete")
    strava = {"access_token": strava_tokens.access_token, "refresh_token": strava_tokens.refresh_token,
              "expires_at": "2030-05-06T07:08:09+02:00", "scopes": ["read", "activity:read"]}  # fmt: skip
    resp = await client.put(f"/api/v1/users/{user_id}/connections/strava", json=strava, headers={"X-API-Key": key})
    assert resp.status == 200
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/strava", headers={"X-API-Key": key})
    assert resp.status == 200
    task_id = uuid.UUID(await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
    await run_task(deps, task_id)
    finished = await db.fetchval("SELECT finished_at FROM sync_tasks WHERE id = $1", task_id)
    suunto = await db.fetchrow("SELECT provider_user_id, scopes FROM provider_connections WHERE provider = 'suunto'")
    assert suunto is not None

    code, out, err = await wearsync(settings, "connections", user_id)
    assert code == 0, err
    first, *table = out.splitlines()
    assert first == f"user {user_id}  application acme  external id -"
    header, *rows = rows_of("\n".join(table))
    assert header == ["provider", "provider user", "state", "scopes", "token expires (UTC)", "last sync (UTC)"]
    assert rows == [
        ["strava", strava_tokens.provider_user_id, "inactive (disconnected)", "read,activity:read",
         "2030-05-06 05:08:09", "never"],
        ["suunto", suunto["provider_user_id"], "active", ",".join(suunto["scopes"]) or "-", "2099-01-01 00:00:00",
         f"{finished.strftime('%Y-%m-%d %H:%M:%S')} succeeded"],
    ]  # fmt: skip
    for provider in ("suunto", "strava"):
        tokens = await stored_tokens_of(db, settings, provider)
        for token in tokens:
            assert token not in out
    assert "TOKEN" not in out


async def stored_tokens_of(db: asyncpg.Pool, settings: Settings, provider: str) -> list[str]:
    """A connection's tokens, decrypted and as stored."""
    row = await db.fetchrow(
        "SELECT access_token, refresh_token FROM provider_connections WHERE provider = $1", provider
    )
    assert row is not None
    cipher = settings.cipher()
    stored = [t for t in (row["access_token"], row["refresh_token"]) if t]
    return stored + [cipher.open(t) for t in stored]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def task_view(status: str, pages: int, records: dict[str, int]) -> dict[str, Any]:
    progress = {"status": status, "pages": pages, "pages_total": 4, "records": records, "error": None}
    return {"task_id": "t1", "provider": "suunto", "status": status, "progress": {"workouts": progress}}


def test_progress_lines_fill_the_bar_by_pages_and_say_what_is_unknown() -> None:
    half = {"status": "running", "pages": 2, "pages_total": 4, "records": {"workouts": 100}, "error": None}
    assert progress_line("workouts", half) == f"workouts  [{'#' * 12}{'-' * 12}] running     2/4 pages  100 records"
    unknown = {"status": "running", "pages": 1, "pages_total": None, "records": {"sleep": 3, "samples": 40}}
    assert progress_line("data_247", unknown, bar_width=8) == (
        "data_247  [........] running        1 page  43 records (samples 40, sleep 3)"
    )
    failed = {"status": "failed", "pages": 0, "pages_total": None, "records": {}, "error": "GET x failed: HTTP 500"}
    assert progress_line("workouts", failed, bar_width=4).endswith("0 records  error: GET x failed: HTTP 500")


def test_progress_view_redraws_in_place_on_a_terminal_and_prints_changes_otherwise() -> None:
    terminal = Terminal()
    view = ProgressView(terminal)
    view.show(task_view("running", 1, {"workouts": 50}))
    view.show(task_view("running", 2, {"workouts": 100}))
    first, second = terminal.getvalue().split("\x1b[2F")
    assert first.count("\x1b[K\n") == second.count("\x1b[K\n") == 2
    assert "1/4 pages" in first
    assert "2/4 pages" in second

    pipe = io.StringIO()
    view = ProgressView(pipe)
    for update in (task_view("running", 1, {"workouts": 50}), task_view("running", 1, {"workouts": 50}),
                   task_view("running", 2, {"workouts": 100})):  # fmt: skip
        view.show(update)
    assert pipe.getvalue().splitlines() == [
        "task t1 (suunto): running",
        progress_line("workouts", task_view("running", 1, {"workouts": 50})["progress"]["workouts"]),
        progress_line("workouts", task_view("running", 2, {"workouts": 100})["progress"]["workouts"]),
    ]
