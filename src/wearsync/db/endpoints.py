"""An application's webhook endpoints (migration 0023): where its events are sent. Secrets are
stored sealed (WEARSYNC_TOKEN_KEYS); callers seal and open them."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from wearsync.db import Executor, events

_COLUMNS = (
    "id, url, event_types, description, enabled, disabled_reason, failing_since, last_success_at,"
    " previous_secret_until, created_at, updated_at"
)


async def create_endpoint(
    db: Executor, app_id: UUID, url: str, event_types: Sequence[str] | None, description: str, secret: str
) -> asyncpg.Record:
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        INSERT INTO webhook_endpoints (application_id, url, event_types, description, secret)
        VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}
        """,
        app_id,
        url,
        list(event_types) if event_types is not None else None,
        description,
        secret,
    )
    assert row is not None
    return row


async def list_endpoints(db: Executor, app_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE application_id = $1 ORDER BY created_at, id", app_id
    )
    return rows


async def get_endpoint(db: Executor, app_id: UUID, endpoint_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND application_id = $2", endpoint_id, app_id
    )
    return row


async def update_endpoint(
    db: Executor, app_id: UUID, endpoint_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """Set the fields in `changes` (url, event_types, description, enabled); enabling an endpoint
    clears why it was disabled and its failures. None: not the application's endpoint."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE webhook_endpoints SET updated_at = now(),
            url = CASE WHEN $3 THEN $4 ELSE url END,
            event_types = CASE WHEN $5 THEN $6 ELSE event_types END,
            description = CASE WHEN $7 THEN $8 ELSE description END,
            enabled = coalesce($9, enabled),
            disabled_reason = CASE WHEN $9 THEN NULL WHEN NOT $9 THEN 'disabled by the application'
                                   ELSE disabled_reason END,
            failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END
        WHERE id = $1 AND application_id = $2
        RETURNING {_COLUMNS}
        """,
        endpoint_id,
        app_id,
        "url" in changes,
        changes.get("url"),
        "event_types" in changes,
        list(changes["event_types"]) if changes.get("event_types") is not None else None,
        "description" in changes,
        changes.get("description") or "",
        changes.get("enabled"),
    )
    return row


async def delete_endpoint(db: Executor, app_id: UUID, endpoint_id: UUID) -> bool:
    status: str = await db.execute(
        "DELETE FROM webhook_endpoints WHERE id = $1 AND application_id = $2", endpoint_id, app_id
    )
    return status != "DELETE 0"


async def rotate_secret(
    db: Executor, app_id: UUID, endpoint_id: UUID, secret: str, overlap_s: float
) -> asyncpg.Record | None:
    """The new secret signs from now on; the one it replaces also signs for `overlap_s` more."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE webhook_endpoints SET previous_secret = secret, secret = $3, updated_at = now(),
            previous_secret_until = now() + make_interval(secs => $4)
        WHERE id = $1 AND application_id = $2
        RETURNING {_COLUMNS}
        """,
        endpoint_id,
        app_id,
        secret,
        float(overlap_s),
    )
    return row


async def send_test_event(db: Executor, app_id: UUID, endpoint_id: UUID) -> str | None:
    """An endpoint.test event, delivered to this endpoint only; its id (None: no such endpoint)."""
    public_id: str | None = await db.fetchval(
        events.reporting(
            "SELECT id, application_id, url FROM webhook_endpoints WHERE id = $1 AND application_id = $2",
            "SELECT c.application_id, NULL::uuid, 'endpoint.test',"
            " jsonb_build_object('endpoint_id', c.id, 'url', c.url) FROM changed c",
            """, tested AS (
                INSERT INTO event_deliveries (event_id, endpoint_id) SELECT r.id, $1 FROM reported r
            ) SELECT public_id FROM reported""",
        ),
        endpoint_id,
        app_id,
    )
    return public_id
