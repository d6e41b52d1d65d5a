"""Deliveries of events to webhook endpoints (migration 0023): claimed by a worker for a while
(`due_at` is pushed past the time one attempt may take, so a worker that dies leaves them due
again), then recorded in batches: each attempt, then the delivery done, tried again later with
backoff, or given up; an endpoint failing throughout a delivery's retries is disabled, telling
the application (endpoint.disabled)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.db import Executor, events, readable


async def claim_due(
    db: Executor, limit: int, in_flight: Mapping[UUID, int], per_endpoint: int, hold_s: float
) -> list[asyncpg.Record]:
    """Up to `limit` due deliveries of enabled endpoints, at most `per_endpoint` in flight per
    endpoint counting `in_flight`, held for `hold_s`; oldest first per endpoint, endpoints in a
    random order (none waits behind another). Each with its event's body and its endpoint's url
    and sealed secrets, ordered by endpoint, user and event."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        WITH due AS (
            SELECT x.event_id, x.endpoint_id FROM (
                SELECT p.id, greatest($2 - coalesce(f.n, 0), 0) AS room
                FROM webhook_endpoints p LEFT JOIN unnest($3::uuid[], $4::int[]) AS f(id, n) ON f.id = p.id
                WHERE p.enabled ORDER BY random()
            ) p CROSS JOIN LATERAL (
                SELECT d.event_id, d.endpoint_id FROM event_deliveries d
                WHERE d.endpoint_id = p.id AND d.status = 'pending' AND d.due_at <= now()
                ORDER BY d.due_at, d.event_id LIMIT p.room FOR UPDATE SKIP LOCKED
            ) x
            LIMIT $1
        ), claimed AS (
            UPDATE event_deliveries d SET due_at = now() + make_interval(secs => $5), attempts = d.attempts + 1,
                claims = d.claims + 1
            FROM due WHERE d.event_id = due.event_id AND d.endpoint_id = due.endpoint_id
            RETURNING d.event_id, d.endpoint_id, d.user_id, d.attempts, d.claims
        )
        SELECT c.event_id, c.endpoint_id, c.user_id, c.attempts, c.claims, e.public_id, e.created_at,
               jsonb_build_object('type', e.type, 'timestamp', e.created_at,
                                  'data', jsonb_build_object('user_id', e.user_id) || e.payload)::text AS body,
               p.url, p.secret, CASE WHEN p.previous_secret_until > now() THEN p.previous_secret END AS previous_secret
        FROM claimed c JOIN events e ON e.id = c.event_id JOIN webhook_endpoints p ON p.id = c.endpoint_id
        ORDER BY c.endpoint_id, c.user_id, c.event_id
        """,
        limit,
        per_endpoint,
        list(in_flight),
        list(in_flight.values()),
        float(hold_s),
    )
    return rows


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try to deliver an event to an endpoint (in its claim number `claim`): its answer's status
    (None: none came, `error` says why), and whether it counts as delivered (2xx)."""

    event_id: int
    endpoint_id: UUID
    claim: int
    attempted_at: datetime
    latency_ms: float
    status_code: int | None = None
    response: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Backoff:
    first_s: float
    longest_s: float
    for_s: float


DISABLED = "every delivery failed for as long as it was retried"


async def record(
    conn: asyncpg.Connection | PoolConnectionProxy,
    attempts: Sequence[Attempt],
    put_back: Sequence[tuple[int, UUID, int]],
    backoff: Backoff,
) -> int:
    """Record attempts in one transaction: each attempt; each delivery done, or due again after a
    pause (doubling per attempt, a quarter of it at random) or given up once it is `for_s` old; the
    endpoints' health; and `put_back`, deliveries claimed but not tried (after the failure of an
    earlier event of the same user: event, endpoint, claim), due again after the first pause. A
    delivery replayed or claimed again since is left alone. How many endpoints were disabled,
    failing throughout a delivery's retries."""
    ok = [a for a in attempts if a.delivered]
    failed = [a for a in attempts if not a.delivered]
    async with conn.transaction():
        # The endpoints first, as deleting one does (then its deliveries): no deadlock with it, and
        # the deliveries of an endpoint deleted meanwhile are gone before the attempts are written.
        await conn.execute(
            "SELECT 1 FROM webhook_endpoints WHERE id = ANY($1::uuid[]) ORDER BY id FOR KEY SHARE",
            list({a.endpoint_id for a in attempts} | {p for _, p, _ in put_back}),
        )
        await conn.execute(
            """
            INSERT INTO delivery_attempts
                (event_id, endpoint_id, attempted_at, latency_ms, status_code, response, error)
            SELECT u.* FROM unnest(
                $1::bigint[], $2::uuid[], $3::timestamptz[], $4::float8[], $5::int[], $6::text[], $7::text[]
            ) AS u(event_id, endpoint_id, attempted_at, latency_ms, status_code, response, error)
            WHERE EXISTS (SELECT 1 FROM event_deliveries d
                          WHERE d.event_id = u.event_id AND d.endpoint_id = u.endpoint_id)
            """,
            [a.event_id for a in attempts],
            [a.endpoint_id for a in attempts],
            [a.attempted_at for a in attempts],
            [a.latency_ms for a in attempts],
            [a.status_code for a in attempts],
            [readable(a.response) for a in attempts],
            [readable(a.error) for a in attempts],
        )
        if ok:
            await conn.execute(
                """
                UPDATE event_deliveries d SET status = 'succeeded', finished_at = now()
                FROM unnest($1::bigint[], $2::uuid[], $3::int[]) AS f(event_id, endpoint_id, claim)
                WHERE d.event_id = f.event_id AND d.endpoint_id = f.endpoint_id AND d.claims = f.claim
                  AND d.status = 'pending'
                """,
                [a.event_id for a in ok],
                [a.endpoint_id for a in ok],
                [a.claim for a in ok],
            )
            await conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL, last_success_at = now() WHERE id = ANY($1::uuid[])",
                list({a.endpoint_id for a in ok}),
            )
        if put_back:
            await conn.execute(
                """
                UPDATE event_deliveries d SET due_at = now() + make_interval(secs => $4), attempts = d.attempts - 1
                FROM unnest($1::bigint[], $2::uuid[], $3::int[]) AS f(event_id, endpoint_id, claim)
                WHERE d.event_id = f.event_id AND d.endpoint_id = f.endpoint_id AND d.claims = f.claim
                  AND d.status = 'pending'
                """,
                [e for e, _, _ in put_back],
                [p for _, p, _ in put_back],
                [c for _, _, c in put_back],
                float(backoff.first_s),
            )
        if not failed:
            return 0
        given_up = await conn.fetch(
            """
            UPDATE event_deliveries d SET
                status = CASE WHEN now() >= d.created_at + make_interval(secs => $5) THEN 'failed' ELSE 'pending' END,
                finished_at = CASE WHEN now() >= d.created_at + make_interval(secs => $5) THEN now() END,
                due_at = least(d.created_at + make_interval(secs => $5), now() + make_interval(
                    secs => least($4, $3 * 2 ^ greatest(d.attempts - 1, 0)) * (0.75 + random() / 4)))
            FROM unnest($1::bigint[], $2::uuid[], $6::int[]) AS f(event_id, endpoint_id, claim)
            WHERE d.event_id = f.event_id AND d.endpoint_id = f.endpoint_id AND d.claims = f.claim
              AND d.status = 'pending'
            RETURNING d.endpoint_id, d.created_at, d.status
            """,
            [a.event_id for a in failed],
            [a.endpoint_id for a in failed],
            float(backoff.first_s),
            float(backoff.longest_s),
            float(backoff.for_s),
            [a.claim for a in failed],
        )
        await conn.execute(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())"
            " WHERE id = ANY($1::uuid[]) AND NOT id = ANY($2::uuid[])",
            list({a.endpoint_id for a in failed}),
            list({a.endpoint_id for a in ok}),
        )
        oldest: dict[UUID, datetime] = {}
        for row in given_up:
            if row["status"] == "failed":
                since = oldest.get(row["endpoint_id"])
                oldest[row["endpoint_id"]] = min(since, row["created_at"]) if since else row["created_at"]
        if not oldest:
            return 0
        disabled: int = await conn.fetchval(
            events.reporting(
                """
                UPDATE webhook_endpoints p SET enabled = false, disabled_reason = $3, updated_at = now()
                FROM unnest($1::uuid[], $2::timestamptz[]) AS g(id, since)
                WHERE p.id = g.id AND p.enabled AND (p.last_success_at IS NULL OR p.last_success_at < g.since)
                RETURNING p.id, p.application_id, p.url, p.disabled_reason, p.failing_since
                """,
                """
                SELECT c.application_id, NULL::uuid, 'endpoint.disabled', jsonb_build_object(
                    'endpoint_id', c.id, 'url', c.url, 'reason', c.disabled_reason, 'failing_since', c.failing_since)
                FROM changed c""",
            ),
            list(oldest),
            list(oldest.values()),
            DISABLED,
        )
        return disabled


async def replay(
    db: Executor,
    app_id: UUID,
    endpoint_id: UUID,
    event_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> int:
    """Deliver again to the endpoint one event (by its public id, whatever its type) or the events
    of a time range it takes (at most `limit`, oldest first), each with a fresh retry period; how
    many deliveries were made due."""
    replayed: int = await db.fetchval(
        """
        WITH chosen AS (
            SELECT e.id, e.user_id, p.id AS endpoint_id FROM webhook_endpoints p
            JOIN events e ON e.application_id = p.application_id
            WHERE p.id = $1 AND p.application_id = $2
              AND ($3::text IS NULL OR e.public_id = $3)
              AND ($4::timestamptz IS NULL OR e.created_at >= $4) AND ($5::timestamptz IS NULL OR e.created_at < $5)
              AND ($3::text IS NOT NULL OR (e.type <> 'endpoint.test'
                                            AND (p.event_types IS NULL OR e.type = ANY(p.event_types))))
            ORDER BY e.id LIMIT $6
        ), made AS (
            INSERT INTO event_deliveries (event_id, endpoint_id, user_id)
            SELECT id, endpoint_id, user_id FROM chosen
            ON CONFLICT (event_id, endpoint_id) DO UPDATE SET
                status = 'pending', attempts = 0, due_at = now(), created_at = now(), finished_at = NULL,
                claims = event_deliveries.claims + 1  -- an answer to an earlier claim is not this one's
            RETURNING 1
        )
        SELECT count(*) FROM made
        """,
        endpoint_id,
        app_id,
        event_id,
        since,
        until,
        limit,
    )
    return replayed


async def event_deliveries(db: Executor, app_id: UUID, event_id: str) -> asyncpg.Record | None:
    """The application's event (by its public id) with its deliveries, each with its attempts."""
    row: asyncpg.Record | None = await db.fetchrow(
        """
        SELECT e.public_id, e.type, e.created_at, coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'endpoint_id', d.endpoint_id, 'status', d.status, 'attempts', coalesce((
                    SELECT jsonb_agg(jsonb_build_object(
                        'attempted_at', a.attempted_at, 'status_code', a.status_code, 'latency_ms', a.latency_ms,
                        'response', a.response, 'error', a.error) ORDER BY a.attempted_at, a.id)
                    FROM delivery_attempts a WHERE a.event_id = d.event_id AND a.endpoint_id = d.endpoint_id), '[]'),
                'next_attempt_at', CASE WHEN d.status = 'pending' THEN d.due_at END,
                'finished_at', d.finished_at) ORDER BY d.created_at, d.endpoint_id)
            FROM event_deliveries d WHERE d.event_id = e.id), '[]') AS deliveries
        FROM events e WHERE e.public_id = $1 AND e.application_id = $2
        """,
        event_id,
        app_id,
    )
    return row
