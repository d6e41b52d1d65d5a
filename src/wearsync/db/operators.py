"""Queries of the operators' CLI: they see across applications (operators are trusted), and
never read a token."""

from uuid import UUID

import asyncpg

from wearsync.db import Executor


async def find_user(db: Executor, user_id: UUID, application: str | None = None) -> asyncpg.Record | None:
    """The user (id, external_id, application_id, application), in any application or only in
    the one named."""
    row: asyncpg.Record | None = await db.fetchrow(
        """
        SELECT u.id, u.external_id, u.application_id, a.name AS application
        FROM users u JOIN applications a ON a.id = u.application_id
        WHERE u.id = $1 AND ($2::text IS NULL OR a.name = $2)
        """,
        user_id,
        application,
    )
    return row


async def application_of_user(db: Executor, application: str, public_id: UUID) -> UUID | None:
    """The id of the named application if it has a user with this (API) id."""
    app_id: UUID | None = await db.fetchval(
        "SELECT a.id FROM applications a JOIN users u ON u.application_id = a.id"
        " WHERE a.name = $1 AND u.public_id = $2",
        application,
        public_id,
    )
    return app_id


# Newest first: the first entries of sync_tasks_created_idx, on which --status and --provider are
# checked (--user takes the user's own index). A command runs it once, so as a custom plan, in
# which a filter not given drops out.
RECENT_TASKS_SQL = """
SELECT t.id, t.provider, t.user_id, t.status::text AS status, t.data_types, t.created_at,
       t.started_at, t.finished_at, t.error
FROM sync_tasks t
WHERE ($1::task_status IS NULL OR t.status = $1::task_status)
  AND ($2::text IS NULL OR t.provider = $2)
  AND ($3::uuid IS NULL OR t.user_id = $3)
  AND ($4::text IS NULL OR t.application_id = (SELECT id FROM applications WHERE name = $4))
ORDER BY t.created_at DESC, t.id
LIMIT $5
"""


async def recent_tasks(
    db: Executor,
    *,
    status: str | None = None,
    provider: str | None = None,
    user_id: UUID | None = None,
    application: str | None = None,
    limit: int = 20,
) -> list[asyncpg.Record]:
    """The latest tasks, newest first, matching every filter given."""
    rows: list[asyncpg.Record] = await db.fetch(RECENT_TASKS_SQL, status, provider, user_id, application, limit)
    return rows


async def connections_overview(db: Executor, user_id: UUID) -> list[asyncpg.Record]:
    """A user's connections without their tokens, each with its latest finished task."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT c.provider, c.provider_user_id, c.active, c.inactive_reason, c.scopes, c.expires_at,
               last.finished_at AS last_sync_at, last.status AS last_sync_status
        FROM provider_connections c
        LEFT JOIN LATERAL (
            SELECT t.finished_at, t.status::text AS status FROM sync_tasks t
            WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.finished_at IS NOT NULL
            ORDER BY t.finished_at DESC LIMIT 1
        ) last ON true
        WHERE c.user_id = $1
        ORDER BY c.provider
        """,
        user_id,
    )
    return rows
