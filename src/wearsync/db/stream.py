"""The event log read in commit order, for the live stream (`GET /api/v1/events/stream`).

An event's position is (tx, id): the transaction that wrote it (xid8) and its id. The stream
lists an application's events after a position in that order, and only those of transactions older
than the oldest one still running (`pg_snapshot_xmin` of the statement's own snapshot), exactly as
the change feed does (db/changes.py): those have ended, so the statement sees all they wrote, and
an event whose transaction took its id early and commits late comes after every position given out
before; it holds the stream back until it ends, and is never skipped.
"""

from uuid import UUID

import asyncpg

from wearsync.db import Executor

# A stream's position: the last event's (tx, id); (0, 0) is before every event.
StreamPosition = tuple[int, int]
START: StreamPosition = (0, 0)

# Each event as a webhook's body carries it (the Standard Webhooks layout), plus its id.
_READ = """
    SELECT tx::text::bigint AS tx, id, type,
           jsonb_build_object('id', public_id, 'type', type, 'timestamp', created_at,
                              'data', jsonb_build_object('user_id', user_id) || payload)::text AS body
    FROM events
    WHERE application_id = $1
      AND (tx, id) > ($2::bigint::text::xid8, $3::bigint)
      AND tx < pg_snapshot_xmin(pg_current_snapshot())
      AND ($4::uuid IS NULL OR user_id = $4)
      AND ($5::text[] IS NULL OR type = ANY($5))
    ORDER BY tx, id
    LIMIT $6
"""


async def head(db: Executor) -> StreamPosition:
    """The position after every event settled now: a stream from here gets the events of the
    transactions still running and of those to come."""
    xmin: int = await db.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return xmin, 0


async def read_events(
    db: Executor,
    application_id: UUID,
    after: StreamPosition,
    user_id: UUID | None,
    types: list[str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` of the application's events after the position, in commit order, each with
    its position (tx, id), type and body (JSON text)."""
    rows: list[asyncpg.Record] = await db.fetch(_READ, application_id, *after, user_id, types, limit)
    return rows
