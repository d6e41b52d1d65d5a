"""PostgreSQL access: the pool, migrations and a few query modules. SQL lives next to its caller."""

import json

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("json", "jsonb"):
        await conn.set_type_codec(pg_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool. We never leave session state behind
    (no SET, LISTEN, cursors or session advisory locks on pooled connections), so asyncpg's full
    reset (one more round trip per query) is not needed; only a transaction left open is closed."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10, connect_timeout_s: float = 60) -> asyncpg.Pool:
    """`connect_timeout_s` bounds each new connection (asyncpg's default: 60 s): a server that
    accepts but does not answer must not hold a request that long."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_release, timeout=connect_timeout_s
    )
    assert pool is not None
    return pool


# Errors after which the same work can succeed once the database is back.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,  # every slot taken, as when all clients reconnect at once
    asyncpg.InterfaceError,  # connection closed underneath us
    asyncpg.exceptions.InternalClientError,  # the same, found by the protocol mid-operation (as in a COMMIT)
    OSError,  # refused, reset
    TimeoutError,
)
