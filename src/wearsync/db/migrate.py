"""Numbered SQL migrations, applied in order in one transaction under an advisory lock."""

from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every process that migrates.
_LOCK_ID = 0x77656172


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("wearsync.db") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    applied_now = []
    async with conn.transaction():
        # No statement limit, whatever the session brings (DATABASE_URL options, a role's
        # setting): an index build on a big table may take long. The services' limits are theirs.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
            log.info("migration applied", migration=name)
    return applied_now
