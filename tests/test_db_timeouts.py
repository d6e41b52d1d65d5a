"""PostgreSQL's statement and lock timeouts on the API's and workers' pools: a query stuck behind a
lock held elsewhere is cancelled by the server; the API answers 503, a worker retries the job, and
once the lock is gone the same work succeeds. Migrations and the wait for a token refresh under
way are not cut short."""

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.jobs import Job, JobStatus
from structlog.testing import capture_logs

from tests.conftest import Factory, refreshes, run_queued, start_sync, wait_for_task, with_database
from tests.helpers import wait_until
from wearsync.api.app import create_app
from wearsync.api.common import DEPS, QUEUE
from wearsync.db import connections, service_pool
from wearsync.db import migrate as migrations
from wearsync.deps import Deps, credentials_for
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]

# A lock wait given up by lock_timeout (LockNotAvailableError), and by statement_timeout with no
# lock_timeout (QueryCanceledError): both must end the same way. A second: long enough for any
# statement that waits for no lock, on a machine as loaded as a test's may be.
LIMITS = [
    pytest.param({"db_lock_timeout_s": 1, "db_statement_timeout_s": 60}, id="lock_timeout"),
    pytest.param({"db_lock_timeout_s": 0, "db_statement_timeout_s": 1}, id="statement_timeout"),
]
BUSY = {"detail": "Database busy: a query timed out, try again later"}


@contextlib.asynccontextmanager
async def row_locked(database_url: str, sql: str, *args: Any) -> AsyncIterator[asyncpg.Connection]:
    """A transaction elsewhere holding the row lock `sql` (a SELECT ... FOR UPDATE) takes, until
    the block ends; the connection is yielded to change the row before it commits."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            assert await conn.fetchval(sql, *args) is not None
            yield conn
    finally:
        await conn.close()


async def waiting_for_lock(db: asyncpg.Pool) -> bool:
    """Whether a session of the test database is waiting for a lock now."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def test_the_api_and_worker_pools_carry_the_limits(settings: Settings) -> None:
    limited = settings.model_copy(update={"db_statement_timeout_s": 2.5, "db_lock_timeout_s": 0.0001})
    pool = await service_pool(limited, 1)
    try:
        assert await pool.fetchval("SHOW statement_timeout") == "2500ms"
        assert await pool.fetchval("SHOW lock_timeout") == "1ms"  # rounded up, not down to 0 (none)
    finally:
        await pool.close()
    unlimited = settings.model_copy(update={"db_statement_timeout_s": 0, "db_lock_timeout_s": 0})
    pool = await service_pool(unlimited, 1)
    try:
        assert [await pool.fetchval(f"SHOW {name}") for name in ("statement_timeout", "lock_timeout")] == ["0", "0"]
    finally:
        await pool.close()


@pytest.mark.parametrize("limits", LIMITS)
async def test_an_api_query_stuck_on_a_lock_answers_503_then_succeeds(
    aiohttp_client: Any, factory: Factory, settings: Settings, limits: dict[str, float]
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    api: Client = await aiohttp_client(create_app(settings.model_copy(update=limits)))
    tokens = await factory.sim_tokens("suunto", sim_user)
    body: dict[str, Any] = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token, "scopes": []}
    url, headers = f"/api/v1/users/{user_id}/connections/suunto", {"X-API-Key": key}
    lock = "SELECT 1 FROM provider_connections WHERE user_id = $1 FOR UPDATE"
    async with row_locked(settings.database_url, lock, uuid.UUID(user_id)):
        resp = await api.put(url, json=body, headers=headers)
        assert (resp.status, await resp.json()) == (503, BUSY)
    resp = await api.put(url, json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    # The connection that waited was given back in working order.
    assert await api.app[DEPS].db.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("limits", LIMITS)
async def test_a_worker_query_stuck_on_a_lock_retries_the_job_then_succeeds(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, limits: dict[str, float]
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")  # queued; no worker yet
    job = Job(task_id, client.app[QUEUE], _queue_name=settings.queue_name)
    lock = "SELECT 1 FROM sync_tasks WHERE id = $1 FOR UPDATE"
    async with row_locked(settings.database_url, lock, uuid.UUID(task_id)):
        # The job's one run, while the lock is held: the server gives its query up, the job is deferred.
        with capture_logs() as lines:
            limited = await run_queued(settings.model_copy(update=limits), max_jobs=1)
        assert (limited.jobs_complete, limited.jobs_retried, limited.jobs_failed) == (0, 1, 0)
        (retrying,) = [line for line in lines if line["event"] == "database unavailable, retrying the task"]
        assert any(error in retrying["error"] for error in ("LockNotAvailableError", "QueryCanceledError")), retrying
        assert await job.status() == JobStatus.deferred
        status = await db.fetchval("SELECT status::text FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
        assert status == "queued"  # not failed: nothing is wrong with the task itself
    # The lock gone, its retry succeeds (run without limits this short, which a loaded machine's
    # ordinary statements could meet).
    await run_queued(settings)
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    result = await job.result_info()
    assert result is not None
    assert result.success
    assert result.job_try == 2  # retried
    assert await db.fetchval("SELECT count(*) FROM workouts") == 300  # the simulator's default history


async def test_a_refresh_under_way_elsewhere_is_waited_for_past_the_lock_timeout(
    deps: Deps, factory: Factory, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """The wait for another process's token refresh (which holds the lease on the connection's row
    while it asks the provider) is by design, and holds no lock: the lock timeout does not cut it
    short, and the waiter then uses the tokens that refresh saved instead of refreshing again."""
    _, user_id, _ = await factory.connected_user("suunto")
    connected = refreshes(sim_state, "suunto")  # connecting redeemed the refresh token once (Suunto)
    settings = deps.settings.model_copy(update={"db_lock_timeout_s": 0.1, "db_statement_timeout_s": 30})
    pool = await service_pool(settings, 2)
    try:
        limited = dataclasses.replace(deps, settings=settings, db=pool)
        row = await connections.get_active_connection(db, uuid.UUID(user_id), "suunto")
        assert row is not None
        connection = Connection.from_row(row, settings.cipher())
        credentials = credentials_for(limited, PROVIDERS["suunto"], connection)
        elsewhere = uuid.uuid4()  # another process's lease, taken as it starts refreshing
        taken = await connections.take_refresh_lease(db, uuid.UUID(user_id), "suunto", elsewhere, 60)
        assert taken is not None
        assert taken["leased"]
        with capture_logs() as lines:
            refresh = asyncio.create_task(credentials.refresh(connection.access_token))
            await wait_until(lambda: found(lines, "token refresh under way elsewhere"), "the refresh waiting")
        assert not await waiting_for_lock(db)
        assert not refresh.done()
        await connections.save_tokens(
            db, uuid.UUID(user_id), "suunto", access_token=settings.cipher().seal("refreshed-elsewhere") or "",
            refresh_token=None, expires_at=None, lease=elsewhere,
        )  # fmt: skip
        await refresh
        assert credentials.access_token == "refreshed-elsewhere"
        assert refreshes(sim_state, "suunto") == connected
    finally:
        await pool.close()


async def found(lines: list[MutableMapping[str, Any]], event: str) -> bool:
    return any(line["event"].startswith(event) for line in lines)


async def test_migrations_have_no_statement_timeout(servers: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Even on a session that brings one (DATABASE_URL options, a role's setting): a migration may
    build an index on a big table."""
    files = [*migrations.migration_files(), ("9999_slow", "SELECT pg_sleep(0.5)")]
    monkeypatch.setattr(migrations, "migration_files", lambda: files)
    name = f"wearsync_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers[0])
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(with_database(servers[0], name), server_settings={"statement_timeout": "100"})
        try:
            assert (await migrations.migrate(conn))[-1] == "9999_slow"
            assert await conn.fetchval("SHOW statement_timeout") == "100ms"  # the session's own, after
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("limits", LIMITS)
async def test_a_sync_call_cut_off_by_the_database_is_finished_by_a_worker(
    aiohttp_client: Any, factory: Factory, settings: Settings, db: asyncpg.Pool, limits: dict[str, float]
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    api: Client = await aiohttp_client(create_app(settings.model_copy(update=limits)))
    url = f"/api/v1/suunto/users/{user_id}/sync?async=false&data_type=workouts"
    blocker = await asyncpg.connect(settings.database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE workouts IN EXCLUSIVE MODE")  # its pages cannot be stored
            resp = await api.post(url, headers={"X-API-Key": key})
            assert (resp.status, await resp.json()) == (503, BUSY)
    finally:
        await blocker.close()
    row = await db.fetchrow("SELECT id, status::text, job_id FROM sync_tasks")
    assert row is not None
    assert str(row["job_id"]).startswith(f"{row['id']}:"), "handed to a worker in a job of its own"
    await run_queued(settings)  # what is queued: the rest of the task
    task = await wait_for_task(api, key, str(row["id"]))
    assert task["status"] == "succeeded", task
    assert await db.fetchval("SELECT count(*) FROM workouts") == 300
