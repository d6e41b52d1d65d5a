"""Queries of the dashboard's read endpoints (api/dashboard.py): one application's users with the
health of their connections, its recent tasks, the webhook events received for its users and the
deliveries of its own events to its webhook endpoints.
Users are shown by their API id (`public_id`); no token is ever read."""

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from wearsync.db import Executor


async def users_page(
    db: Executor, app_id: UUID, limit: int, offset: int, external_id: str | None = None
) -> list[asyncpg.Record]:
    """The application's users (only the one with `external_id`, if given), newest first: (id: the
    key in every table, public_id, external_id, created_at)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT id, public_id, external_id, created_at FROM users
        WHERE application_id = $1 AND ($4::text IS NULL OR external_id = $4)
        ORDER BY created_at DESC, id LIMIT $2 OFFSET $3
        """,
        app_id,
        limit,
        offset,
        external_id,
    )
    return rows


async def count_users(db: Executor, app_id: UUID, external_id: str | None = None) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM users WHERE application_id = $1 AND ($2::text IS NULL OR external_id = $2)",
        app_id,
        external_id,
    )
    return count


# Per connection: its last sync that stored something, its last failure (a failed or partial
# task: the task's error, else the first failed type's), and the latest open task with the time
# a rate-limit wait resumes it, if it waits for one. Each reads the user's tasks of the provider
# by sync_tasks_user_idx (user_id, provider, created_at DESC).
CONNECTIONS_HEALTH_SQL = """
SELECT c.user_id, c.provider, c.provider_user_id, c.active, c.inactive_reason, c.expires_at, c.scopes,
       c.created_at, c.updated_at,
       ok.finished_at AS last_sync_at, ok.status AS last_sync_status,
       bad.finished_at AS last_error_at, bad.error AS last_error,
       open.id AS open_task_id, open.status AS open_task_status, open.resumes_at AS waiting_until
FROM provider_connections c
LEFT JOIN LATERAL (
    SELECT t.finished_at, t.status::text AS status FROM sync_tasks t
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.status IN ('succeeded', 'partial')
    ORDER BY t.created_at DESC LIMIT 1
) ok ON true
LEFT JOIN LATERAL (
    SELECT t.finished_at, coalesce(t.error, (
        SELECT p.value ->> 'error' FROM jsonb_each(t.progress) p
        WHERE p.value ->> 'status' = 'failed' ORDER BY p.key LIMIT 1)) AS error
    FROM sync_tasks t
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.status IN ('failed', 'partial')
    ORDER BY t.created_at DESC LIMIT 1
) bad ON true
LEFT JOIN LATERAL (
    SELECT t.id, t.status::text AS status, (
        SELECT max(p.value ->> 'resumes_at') FROM jsonb_each(t.progress) p
        WHERE p.value ->> 'status' = 'waiting') AS resumes_at
    FROM sync_tasks t
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.status IN ('queued', 'running')
    ORDER BY t.created_at DESC LIMIT 1
) open ON true
WHERE c.user_id = ANY($1::uuid[])
ORDER BY c.user_id, c.provider
"""


async def connections_health(db: Executor, user_ids: Sequence[UUID]) -> list[asyncpg.Record]:
    """The connections of these users (by their key), each with its health (see above)."""
    rows: list[asyncpg.Record] = await db.fetch(CONNECTIONS_HEALTH_SQL, list(user_ids))
    return rows


async def recent_tasks(db: Executor, app_id: UUID, status: str | None, limit: int) -> list[asyncpg.Record]:
    """The application's latest tasks (of one status, if given), newest first, their users by API
    id; from sync_tasks_created_idx, the application checked on each entry."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT t.id AS task_id, u.public_id AS user_id, t.provider, t.status::text AS status, t.data_types,
               t.progress, t.error, t.attempts, t.created_at, t.started_at, t.finished_at
        FROM sync_tasks t JOIN users u ON u.id = t.user_id
        WHERE t.application_id = $1 AND ($2::task_status IS NULL OR t.status = $2::task_status)
        ORDER BY t.created_at DESC, t.id
        LIMIT $3
        """,
        app_id,
        status,
        limit,
    )
    return rows


async def webhook_events(db: Executor, app_id: UUID, limit: int) -> list[asyncpg.Record]:
    """The latest webhook events received for the application's users (those with a connection to
    the account an event names, active or not), newest first, without their payloads."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT e.id, e.provider, e.kind, e.provider_user_id, who.public_id AS user_id, e.status, e.detail,
               e.attempts, e.received_at, e.processed_at
        FROM webhook_events e
        CROSS JOIN LATERAL (
            SELECT u.public_id FROM provider_connections c JOIN users u ON u.id = c.user_id
            WHERE c.application_id = $1 AND c.provider = e.provider AND c.provider_user_id = e.provider_user_id
            ORDER BY c.active DESC, c.updated_at DESC LIMIT 1
        ) who
        ORDER BY e.received_at DESC, e.id DESC
        LIMIT $2
        """,
        app_id,
        limit,
    )
    return rows


async def recent_deliveries(db: Executor, app_id: UUID, limit: int) -> list[asyncpg.Record]:
    """The deliveries of the application's latest events to its endpoints, newest event first,
    each with its last attempt's answer; from the application's events by events_application_idx."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT e.public_id AS event_id, e.type, e.created_at, p.id AS endpoint_id, p.url, d.status, d.attempts,
               d.due_at, d.finished_at, last.attempted_at AS last_attempt_at, last.status_code, last.error
        FROM events e
        JOIN event_deliveries d ON d.event_id = e.id
        JOIN webhook_endpoints p ON p.id = d.endpoint_id
        LEFT JOIN LATERAL (
            SELECT a.attempted_at, a.status_code, a.error FROM delivery_attempts a
            WHERE a.event_id = d.event_id AND a.endpoint_id = d.endpoint_id
            ORDER BY a.attempted_at DESC LIMIT 1
        ) last ON true
        WHERE e.application_id = $1
        ORDER BY e.id DESC, p.created_at, p.id
        LIMIT $2
        """,
        app_id,
        limit,
    )
    return rows
