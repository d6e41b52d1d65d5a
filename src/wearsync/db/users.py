"""Users of an application as the API lists and changes them (creating and reading one by id:
db/connections.py). Users are shown by their API id (`public_id`)."""

from datetime import datetime
from uuid import UUID

import asyncpg

from wearsync.db import Executor

# (created_at, public_id) of the last user of the previous page.
UserPosition = tuple[datetime, UUID]


async def users_page(
    db: Executor, app_id: UUID, external_id: str | None, after: UserPosition | None, limit: int
) -> list[asyncpg.Record]:
    """The application's users, oldest first, after `after`; only the one with `external_id` when
    given (unique in the application)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT id, public_id, external_id, created_at FROM users
        WHERE application_id = $1 AND ($2::text IS NULL OR external_id = $2)
          AND ($3::timestamptz IS NULL OR (created_at, public_id) > ($3, $4::uuid))
        ORDER BY created_at, public_id LIMIT $5
        """,
        app_id,
        external_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def set_external_id(
    db: Executor, app_id: UUID, public_id: UUID, external_id: str | None
) -> asyncpg.Record | None:
    """The application's user with its external id changed (None: cleared); None for no such user;
    UniqueViolationError if another user of the application has this external id."""
    row: asyncpg.Record | None = await db.fetchrow(
        "UPDATE users SET external_id = $3 WHERE public_id = $2 AND application_id = $1"
        " RETURNING id, public_id, external_id, created_at",
        app_id,
        public_id,
        external_id,
    )
    return row
