"""Webhook events: stored at receipt, claimed and finished by their jobs, retried."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from wearsync.db import Executor, readable


async def insert_webhook_events(db: Executor, provider: str, events: Sequence[Any]) -> list[int]:
    """Store events (kind, provider_user_id, dedupe_key, payload); the ids of those not seen before,
    whether their event is still stored or only its key's digest is (webhook_digests)."""
    if not events:
        return []
    rows = await db.fetch(
        """
        WITH e AS (
            SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[]) AS e(kind, uid, key, payload)
        ), fresh AS (
            INSERT INTO webhook_digests (provider, digest)
            SELECT $1, sha256(convert_to(key, 'UTF8')) FROM e
            ON CONFLICT DO NOTHING
            RETURNING digest
        )
        INSERT INTO webhook_events (provider, kind, provider_user_id, dedupe_key, payload)
        SELECT $1, e.kind, e.uid, e.key, e.payload FROM e
        WHERE sha256(convert_to(e.key, 'UTF8')) IN (SELECT digest FROM fresh)
        ON CONFLICT (provider, dedupe_key) DO NOTHING
        RETURNING id
        """,
        provider,
        [e.kind for e in events],
        [e.provider_user_id for e in events],
        [e.dedupe_key for e in events],
        [e.payload for e in events],
    )
    return [r["id"] for r in rows]


async def claim_webhook_event(db: Executor, event_id: int) -> asyncpg.Record | None:
    """The event, counted as one more attempt, unless it is already done."""
    row: asyncpg.Record | None = await db.fetchrow(
        """
        UPDATE webhook_events SET attempts = attempts + 1 WHERE id = $1 AND status IN ('pending', 'failed')
        RETURNING id, provider, kind, provider_user_id, dedupe_key, payload, attempts
        """,
        event_id,
    )
    return row


async def stale_webhook_events(db: Executor, older_than_s: float) -> list[int]:
    """The events whose job is due again, oldest first: pending ones that arrived (or were last
    enqueued) more than `older_than_s` ago, their job lost, and failed ones whose retry is due.
    Each is marked pending and enqueued now, so that the next sweep leaves it to the job about
    to run."""
    rows = await db.fetch(
        """
        UPDATE webhook_events SET status = 'pending', retry_at = NULL, enqueued_at = now()
        WHERE id IN (SELECT id FROM webhook_events
                     WHERE status = 'pending' AND coalesce(enqueued_at, received_at) < now() - make_interval(secs => $1)
                     ORDER BY received_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
           OR id IN (SELECT id FROM webhook_events
                     WHERE status = 'failed' AND retry_at <= now()
                     ORDER BY retry_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        float(older_than_s),
    )
    return [r["id"] for r in rows]


async def postpone_webhook_event(db: Executor, event_id: int, seconds: float) -> None:
    """The event's job was deferred by `seconds`: the reaper counts its wait from then."""
    await db.execute(
        "UPDATE webhook_events SET enqueued_at = now() + make_interval(secs => $2) WHERE id = $1",
        event_id,
        float(seconds),
    )


async def finish_webhook_event(db: Executor, event_id: int, status: str, detail: str | None = None) -> None:
    await db.execute(
        "UPDATE webhook_events SET status = $2, detail = $3, processed_at = now(), retry_at = NULL WHERE id = $1",
        event_id,
        status,
        readable(detail),
    )


async def fail_webhook_event(
    db: Executor, event_id: int, detail: str, retry_first_s: float, retry_longest_s: float, retry_for_s: float
) -> datetime | None:
    """Mark the event failed; when it may be tried again: a pause of `retry_first_s` doubling with
    each attempt up to `retry_longest_s` (a quarter of it at random, so that events failed together
    come back apart), while it arrived less than `retry_for_s` ago. None: failed for good."""
    retry_at: datetime | None = await db.fetchval(
        """
        UPDATE webhook_events SET status = 'failed', detail = $2, processed_at = now(),
            retry_at = CASE WHEN received_at > now() - make_interval(secs => $5) THEN
                now() + make_interval(secs => least($4, $3 * 2 ^ greatest(attempts - 1, 0)) * (0.75 + random() / 4))
            END
        WHERE id = $1
        RETURNING retry_at
        """,
        event_id,
        readable(detail),
        float(retry_first_s),
        float(retry_longest_s),
        float(retry_for_s),
    )
    return retry_at
