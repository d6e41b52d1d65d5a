"""Fixtures of the fault tests."""

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.faults.servers import OwnPostgres, OwnRedis
from wearsync.db.migrate import migrate
from wearsync.settings import Settings


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    """A Redis of the test's own, started, for the test to break."""
    redis = OwnRedis()
    await redis.start()
    yield redis
    await redis.stop()


@pytest.fixture
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL of the test's own, started, with a migrated database `wearsync`."""
    folder = Path(tempfile.mkdtemp(prefix="wearsync-pg-"))
    pg = OwnPostgres(folder, max_connections=40)
    try:
        await pg.init()
        await pg.start()
        admin = await asyncpg.connect(pg.admin_dsn)
        await admin.execute("CREATE DATABASE wearsync")
        await admin.close()
        conn = await asyncpg.connect(pg.dsn("wearsync"))
        await migrate(conn)
        await conn.close()
        yield pg
    finally:
        await pg.stop("immediate", missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def on_own_postgres(settings: Settings, pg: OwnPostgres) -> Settings:
    """The usual test settings, with the data in the test's own PostgreSQL; small pools (the
    cluster takes 40 connections) that connect only when asked (asyncpg otherwise restores a
    pool's floor in the background); a connection attempt given up after a second."""
    return settings.replace(
        database_url=pg.dsn("wearsync"), db_pool_min=0, db_pool_max=4, api_db_pool_max=4, db_connect_timeout_s=1,
        schedule_interval_s=0, suunto_rate_limits="100000/900",
    )  # fmt: skip
