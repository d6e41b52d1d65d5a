"""Applications (tenants), as operators manage them over the API (api/admin.py)."""

from uuid import UUID

import asyncpg

from wearsync.db import Executor

_COLUMNS = "id, name, created_at"


async def list_applications(db: Executor) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(f"SELECT {_COLUMNS} FROM applications ORDER BY created_at, name")
    return rows


async def create_application(db: Executor, name: str) -> asyncpg.Record:
    """A new application; UniqueViolationError if one has this name."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"INSERT INTO applications (name) VALUES ($1) RETURNING {_COLUMNS}", name
    )
    assert row is not None
    return row


async def get_application(db: Executor, app_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(f"SELECT {_COLUMNS} FROM applications WHERE id = $1", app_id)
    return row


async def get_settings(db: Executor, app_id: UUID) -> asyncpg.Record | None:
    """(redirect_allowlist, providers) of the application, each NULL when not set."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT redirect_allowlist, providers FROM applications WHERE id = $1", app_id
    )
    return row


async def set_settings(db: Executor, app_id: UUID, changes: dict[str, list[str] | None]) -> asyncpg.Record | None:
    """Change the settings named in `changes` (redirect_allowlist, providers; None: unset); the
    settings after, or None for no such application."""
    row: asyncpg.Record | None = await db.fetchrow(
        """
        UPDATE applications SET
            redirect_allowlist = CASE WHEN $2 THEN $3::text[] ELSE redirect_allowlist END,
            providers = CASE WHEN $4 THEN $5::text[] ELSE providers END
        WHERE id = $1 RETURNING redirect_allowlist, providers
        """,
        app_id,
        "redirect_allowlist" in changes,
        changes.get("redirect_allowlist"),
        "providers" in changes,
        changes.get("providers"),
    )
    return row
