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
