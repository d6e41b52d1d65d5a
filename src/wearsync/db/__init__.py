"""PostgreSQL access: the pool, and beside it the query modules, one per table or concern (keys,
connections, tasks, webhooks, garmin_backfills, reads, records, retention, ...)."""

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from wearsync.settings import Settings

log = structlog.get_logger(__name__)

# What a query runs on: a connection, or the pool (one connection for the one statement).
Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy


def readable(text: str | None) -> str | None:
    """An error message as PostgreSQL stores it: upstream data quoted in it may hold NUL characters
    or lone surrogates, which text and jsonb refuse; they are written as escapes instead."""
    if text is None:
        return None
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


T = TypeVar("T")


class DatabaseUnreachable(Exception):
    """PostgreSQL could not be reached (not up, the database missing, refused); the message says
    so in one line, for a command to print."""


async def with_connection(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work(connection)` on a connection of its own, closed after: a command's one piece of work
    (migrations, an API key). DatabaseUnreachable when it cannot connect."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as e:
        hint = ": create it first (createdb), or point DATABASE_URL at another" if isinstance(
            e, asyncpg.InvalidCatalogNameError) else ""  # fmt: skip
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL (DATABASE_URL): {e}{hint}") from e
    try:
        return await work(conn)
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("json", "jsonb"):
        await conn.set_type_codec(pg_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool. We never leave session state behind
    (no SET, LISTEN, cursors or session advisory locks on pooled connections), so asyncpg's full
    reset (one more round trip per query) is not needed; only a transaction left open is closed."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _milliseconds(seconds: float) -> str:
    """A PostgreSQL timeout setting: whole milliseconds, never rounded down to 0 (which means none)."""
    return str(math.ceil(seconds * 1000))


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire, also the one inside `pool.fetch()` and its kin, waits at most
    `acquire_timeout_s` for a free connection, then raises TimeoutError (a 503 in the API, a retry
    in a worker): a pool that some slow caller keeps full never makes everyone else wait without end."""

    def __init__(self, *args: Any, acquire_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=timeout if timeout is not None else self.acquire_timeout_s)


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout_s: float = 60,
    acquire_timeout_s: float | None = None,
    **server_settings: str,
) -> asyncpg.Pool:
    """`connect_timeout_s` bounds each new connection (asyncpg's default: 60 s): a server that
    accepts but does not answer must not hold a request that long; `acquire_timeout_s` (None:
    none) the wait for a free one. `server_settings`: PostgreSQL settings every connection starts
    with (see service_pool)."""
    pool = BoundedPool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_release, timeout=connect_timeout_s,
        server_settings=server_settings, acquire_timeout_s=acquire_timeout_s, max_queries=50000,
        max_inactive_connection_lifetime=300.0, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
        loop=None,
    )  # fmt: skip
    return await pool


async def service_pool(settings: Settings, max_size: int) -> asyncpg.Pool:
    """The pool of the API or a worker. PostgreSQL cancels any of its statements that runs past
    the statement timeout or waits for a lock past the lock timeout (0: none), so a stuck query
    gives its connection back; the connection stays usable. Migrations connect on their own,
    without these limits (index builds on big tables)."""
    limits = {"statement_timeout": settings.db_statement_timeout_s, "lock_timeout": settings.db_lock_timeout_s}
    in_ms = {name: _milliseconds(seconds) for name, seconds in limits.items() if seconds > 0}
    return await create_pool(
        settings.database_url,
        settings.db_pool_min,
        max_size,
        settings.db_connect_timeout_s,
        settings.db_acquire_timeout_s,
        **in_ms,
    )


# A statement the server cancelled: past the pool's statement_timeout (QueryCanceledError, 57014,
# also what an operator's pg_cancel_backend raises; a kind of OperatorInterventionError) or a lock
# wait past its lock_timeout (LockNotAvailableError, 55P03). Transient: the statement's transaction
# is rolled back, nothing is half done, and what made it that slow (a lock held elsewhere, a busy
# server) usually passes; one that is always too slow still fails its job once the job's tries
# (WEARSYNC_JOB_MAX_TRIES) are spent.
DB_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
)

# Errors after which the same work can succeed once the database is back (or less busy).
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,  # every slot taken, as when all clients reconnect at once
    asyncpg.InterfaceError,  # connection closed underneath us
    asyncpg.exceptions.InternalClientError,  # the same, found by the protocol mid-operation (as in a COMMIT)
    OSError,  # refused, reset
    TimeoutError,
    *DB_TIMEOUT_ERRORS,
)


def _where(dsn: str) -> str:
    """host:port/database of a DSN, without its credentials (or the socket folder it names)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2] or dict(parse_qsl(parts.query)).get("host", "")
    return f"{host}{parts.path}"


async def service_pool_when_up(settings: Settings, max_size: int) -> asyncpg.Pool:
    """`service_pool`, once PostgreSQL answers: a process started before its database (a deploy,
    a restart of everything) waits for it, asking again with a growing pause and logging each try,
    instead of ending. Only what can pass is waited out (refused, starting up, out of slots); a
    wrong password or database name ends the process at once. A SIGTERM meanwhile cancels the wait."""
    pause = 0.2
    while True:
        pool: asyncpg.Pool | None = None
        try:
            pool = await service_pool(settings, max_size)
            await pool.fetchval("SELECT 1")  # a pool without a floor (min 0) connects only when asked
            if pause > 0.2:
                log.info("database available", database=_where(settings.database_url))
            return pool
        except TRANSIENT_DB_ERRORS as e:
            if pool is not None:
                pool.terminate()
            log.warning(
                "database unavailable at start, waiting for it",
                database=_where(settings.database_url), error=repr(e), retry_in_s=pause,
            )  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(2 * pause, 2.0)
