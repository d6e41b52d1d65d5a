"""PostgreSQL refusing new connections (too many clients, SQLSTATE 53300) passes, like a restart:
a task whose worker cannot get a connection is retried, not failed. Found by `make soak` on a
machine whose PostgreSQL had reached max_connections (its tasks failed as internal errors).

"Full" here is a role allowed one connection that a test holds: PostgreSQL refuses the next one
with the same error as at max_connections."""

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq import Retry

from tests.conftest import Factory, start_sync
from wearsync.db import create_pool
from wearsync.deps import Deps
from wearsync.worker import sync_task

Client = TestClient[web.Request, web.Application]


@contextlib.asynccontextmanager
async def one_connection_role(database_url: str) -> AsyncIterator[str]:
    """The DSN of a new role that may hold one connection, with rights on the test database's
    tables; the role is dropped at the end."""
    name = f"wearsync_one_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 1')
        await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
        await admin.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{name}"')
        parts = urlsplit(database_url)
        where = parts.netloc.rpartition("@")[2]  # host:port, or nothing (a socket given in the query)
        yield urlunsplit(parts._replace(netloc=f"{name}@{where}"))
    finally:
        await admin.execute(f'DROP OWNED BY "{name}"')  # its rights in this database
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


@contextlib.asynccontextmanager
async def full_database(deps: Deps) -> AsyncIterator[tuple[Deps, asyncpg.Connection]]:
    """Deps whose pool can open no connection while the returned one (the role's only) is held."""
    async with one_connection_role(deps.settings.database_url) as dsn:
        held = await asyncpg.connect(dsn)
        pool = await create_pool(dsn, min_size=0, max_size=2)
        try:
            yield dataclasses.replace(deps, db=pool), held
        finally:
            if not held.is_closed():
                await held.close()
            await pool.close()


async def status(db: asyncpg.Pool, task_id: str) -> tuple[str, str | None]:
    row = await db.fetchrow("SELECT status::text, error FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    assert row is not None
    return row["status"], row["error"]


async def test_a_task_whose_worker_is_refused_a_connection_is_retried(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")
    async with full_database(deps) as (refused, held):
        with pytest.raises(asyncpg.TooManyConnectionsError):  # what the worker meets
            await refused.db.fetchval("SELECT 1")
        with pytest.raises(Retry):
            await sync_task({"deps": refused, "job_try": 1}, task_id)
        assert await status(db, task_id) == ("queued", None)  # not failed: nothing went wrong with it
        await held.close()  # a connection frees up; arq runs the job again
        assert await sync_task({"deps": refused, "job_try": 2}, task_id) == {"workouts": True}
    assert await status(db, task_id) == ("succeeded", None)
    assert await db.fetchval("SELECT count(*) FROM workouts") > 0
