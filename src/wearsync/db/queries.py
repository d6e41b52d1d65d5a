"""Query functions for tenants, users, connections and sync tasks."""

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.models import TaskStatus

R = TypeVar("R")
Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy

# ---- applications and API keys ------------------------------------------------------------


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(db: Executor, application_name: str, key_name: str) -> str:
    """Create the application if needed and a key for it; returns the key (only its hash is kept)."""
    key = "ws_" + secrets.token_urlsafe(32)
    app_id = await db.fetchval(
        "INSERT INTO applications (name) VALUES ($1)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        application_name,
    )
    await db.execute(
        "INSERT INTO api_keys (application_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)",
        app_id,
        key_name,
        key[:10],
        hash_api_key(key),
    )
    return key


async def application_for_key(db: Executor, key: str) -> UUID | None:
    """The application of a valid key, noting that it was used. The key is looked up by its
    SHA-256 (an index lookup of a digest: nothing about the key leaks through timing)."""
    app_id: UUID | None = await db.fetchval(
        "UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 AND revoked_at IS NULL RETURNING application_id",
        hash_api_key(key),
    )
    return app_id


async def list_api_keys(db: Executor, application_name: str | None = None) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT k.prefix, k.name, a.name AS application, k.created_at, k.last_used_at, k.revoked_at
        FROM api_keys k JOIN applications a ON a.id = k.application_id
        WHERE $1::text IS NULL OR a.name = $1
        ORDER BY a.name, k.created_at
        """,
        application_name,
    )
    return rows


async def revoke_api_key(db: Executor, prefix: str) -> int:
    """Revoke the one active key with this prefix; how many matched (0, 1, or more: then none is
    revoked, the prefix is ambiguous)."""
    matches: int = await db.fetchval(
        """
        WITH matching AS (SELECT id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL),
        revoked AS (
            UPDATE api_keys SET revoked_at = now()
            WHERE id IN (SELECT id FROM matching) AND (SELECT count(*) FROM matching) = 1
            RETURNING id
        )
        SELECT count(*) FROM matching
        """,
        prefix,
    )
    return matches


# ---- users and connections ----------------------------------------------------------------


async def _again_after_race(constraint: str, write: Callable[[], Awaitable[R]]) -> R:
    """`write`, done once more where a concurrent write took the unique `constraint` first (the
    second try sees that row and acts on it)."""
    try:
        return await write()
    except asyncpg.UniqueViolationError as e:
        if e.constraint_name != constraint:
            raise
    return await write()


async def create_user(db: Executor, app_id: UUID, public_id: UUID, external_id: str | None) -> asyncpg.Record:
    """Insert a user of the application (`id`: its key in every table; `public_id`: the API's id);
    UniqueViolationError if the application has a user with this id or external id already."""

    async def insert() -> asyncpg.Record:
        # The key: the public id, unless another user has it as key (then, a random one).
        row: asyncpg.Record | None = await db.fetchrow(
            """
            INSERT INTO users (id, public_id, application_id, external_id)
            VALUES (CASE WHEN EXISTS (SELECT 1 FROM users WHERE id = $1) THEN gen_random_uuid() ELSE $1 END,
                    $1, $2, $3)
            RETURNING id, public_id, external_id, created_at
            """,
            public_id,
            app_id,
            external_id,
        )
        assert row is not None
        return row

    return await _again_after_race("users_pkey", insert)


async def get_user(db: Executor, app_id: UUID, public_id: UUID) -> asyncpg.Record | None:
    """The application's user with this (API) id: its key `id`, `public_id`, ..."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT id, public_id, external_id, created_at FROM users WHERE public_id = $1 AND application_id = $2",
        public_id,
        app_id,
    )
    return row


async def public_user_id(db: Executor, user_id: UUID) -> UUID | None:
    """The API's id of the user with this key."""
    public_id: UUID | None = await db.fetchval("SELECT public_id FROM users WHERE id = $1", user_id)
    return public_id


_CONNECTION_COLUMNS = (
    "c.user_id, c.provider, c.provider_user_id, c.access_token, c.refresh_token, c.expires_at,"
    " c.scopes, c.active, c.inactive_reason, c.created_at, c.updated_at, c.application_id"
)


class AccountTaken(Exception):
    """The upstream account is actively connected to another user of the same application."""

    def __init__(self, user_id: UUID) -> None:
        super().__init__(f"connected to user {user_id}")
        self.user_id = user_id


async def upsert_connection(
    db: asyncpg.Pool,
    user_id: UUID,
    provider: str,
    *,
    provider_user_id: str,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime | None,
    scopes: Sequence[str],
    move: bool = False,
) -> asyncpg.Record:
    """Store (or replace) the user's active connection. AccountTaken when the upstream account is
    actively connected to another user of the same application, unless `move`: then that
    connection is deactivated ("moved to user ...") and this one stored, in one transaction."""

    async def store() -> asyncpg.Record:
        async with db.acquire() as conn, conn.transaction():
            other: UUID | None = await conn.fetchval(
                """
                SELECT c.user_id FROM provider_connections c JOIN users u ON u.id = $1
                WHERE c.application_id = u.application_id AND c.provider = $2
                  AND c.provider_user_id = $3 AND c.active AND c.user_id <> $1
                FOR UPDATE OF c
                """,
                user_id,
                provider,
                provider_user_id,
            )
            if other is not None:
                if not move:
                    raise AccountTaken(other)
                moved_to = await conn.fetchval("SELECT public_id FROM users WHERE id = $1", user_id)
                await deactivate_connection(conn, other, provider, f"moved to user {moved_to}")
            row: asyncpg.Record | None = await conn.fetchrow(
                f"""
                INSERT INTO provider_connections AS c
                    (user_id, application_id, provider, provider_user_id, access_token, refresh_token,
                     expires_at, scopes, active)
                SELECT $1, u.application_id, $2, $3, $4, $5, $6, $7, true FROM users u WHERE u.id = $1
                ON CONFLICT (user_id, provider) DO UPDATE SET
                    provider_user_id = EXCLUDED.provider_user_id, access_token = EXCLUDED.access_token,
                    refresh_token = EXCLUDED.refresh_token, expires_at = EXCLUDED.expires_at,
                    scopes = EXCLUDED.scopes, active = true, inactive_reason = NULL, updated_at = now()
                RETURNING {_CONNECTION_COLUMNS}
                """,
                user_id,
                provider,
                provider_user_id,
                access_token,
                refresh_token,
                expires_at,
                list(scopes),
            )
            assert row is not None
            return row

    # Another user of the application may connect the account at the same moment: look again then.
    return await _again_after_race("provider_connections_account_idx", store)


async def list_connections(db: Executor, user_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_CONNECTION_COLUMNS} FROM provider_connections c WHERE c.user_id = $1 ORDER BY c.provider",
        user_id,
    )
    return rows


async def get_active_connection(
    db: Executor, user_id: UUID, provider: str, app_id: UUID | None = None
) -> asyncpg.Record | None:
    """The user's active connection to a provider; with app_id, only if the user belongs to it."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        SELECT {_CONNECTION_COLUMNS} FROM provider_connections c JOIN users u ON u.id = c.user_id
        WHERE c.user_id = $1 AND c.provider = $2 AND c.active
          AND ($3::uuid IS NULL OR u.application_id = $3)
        """,
        user_id,
        provider,
        app_id,
    )
    return row


async def deactivate_connection(
    db: Executor, user_id: UUID, provider: str, reason: str = "disconnected", *, only_active: bool = True
) -> bool:
    """Deactivate the connection with the reason (`only_active=False`: also replace the reason of an
    inactive one); whether a row changed."""
    status: str = await db.execute(
        "UPDATE provider_connections SET active = false, inactive_reason = $3, updated_at = now()"
        " WHERE user_id = $1 AND provider = $2 AND (active OR NOT $4)",
        user_id,
        provider,
        reason,
        only_active,
    )
    return status != "UPDATE 0"


async def take_refresh_lease(
    db: Executor, user_id: UUID, provider: str, lease: UUID, lease_s: float
) -> asyncpg.Record | None:
    """The connection row, with `leased`: whether `lease` now holds the right to refresh its tokens
    for `lease_s` (it does unless another lease holds it, and then `refresh_lease_until` says till
    when). An inactive connection is never leased. None: no such connection."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE provider_connections c
        SET refresh_lease = CASE WHEN f.free THEN $3 ELSE c.refresh_lease END,
            refresh_lease_until = CASE WHEN f.free THEN now() + make_interval(secs => $4) ELSE c.refresh_lease_until END
        FROM (
            SELECT user_id, provider, active AND (
                refresh_lease_until IS NULL OR refresh_lease_until <= now() OR refresh_lease = $3
            ) AS free
            FROM provider_connections WHERE user_id = $1 AND provider = $2 FOR UPDATE
        ) f
        WHERE c.user_id = f.user_id AND c.provider = f.provider
        RETURNING {_CONNECTION_COLUMNS}, c.refresh_lease_until, c.refresh_lease IS NOT DISTINCT FROM $3 AS leased
        """,
        user_id,
        provider,
        lease,
        lease_s,
    )
    return row


async def release_refresh_lease(db: Executor, user_id: UUID, provider: str, lease: UUID) -> None:
    await db.execute(
        "UPDATE provider_connections SET refresh_lease = NULL, refresh_lease_until = NULL"
        " WHERE user_id = $1 AND provider = $2 AND refresh_lease = $3",
        user_id,
        provider,
        lease,
    )


async def save_tokens(
    db: Executor,
    user_id: UUID,
    provider: str,
    *,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime | None,
    lease: UUID | None = None,
) -> asyncpg.Record:
    """Store a connection's new tokens (and end `lease`, the refresh that got them)."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE provider_connections c
        SET access_token = $3, refresh_token = $4, expires_at = $5, updated_at = now(),
            refresh_lease = CASE WHEN c.refresh_lease = $6 THEN NULL ELSE c.refresh_lease END,
            refresh_lease_until = CASE WHEN c.refresh_lease = $6 THEN NULL ELSE c.refresh_lease_until END
        WHERE c.user_id = $1 AND c.provider = $2
        RETURNING {_CONNECTION_COLUMNS}
        """,
        user_id,
        provider,
        access_token,
        refresh_token,
        expires_at,
        lease,
    )
    assert row is not None
    return row


# ---- sync tasks ---------------------------------------------------------------------------

_TASK_COLUMNS = (
    "id, user_id, provider, mode, data_types, params, status::text AS status, progress, result, error,"
    " attempts, created_at, started_at, finished_at, updated_at"
)
# A task as the API shows it: its user by the API's id.
_TASK_API_COLUMNS = (
    "t.id, u.public_id AS user_id, t.provider, t.mode, t.data_types, t.params, t.status::text AS status, t.progress,"
    " t.result, t.error, t.attempts, t.created_at, t.started_at, t.finished_at, t.updated_at"
)


_TYPE_PROGRESS: dict[str, Any] = {
    "status": "queued",
    "pages": 0,
    "pages_total": None,
    "records": {},
    "done": {},
    "error": None,
}


def initial_progress(data_types: Sequence[str]) -> dict[str, Any]:
    return {t: dict(_TYPE_PROGRESS) for t in data_types}


class TooManyOpenTasks(Exception):
    """A new task would take the user's or the application's open tasks past their cap."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"the {scope} already has {limit} syncs queued or running")
        self.scope, self.limit = scope, limit


async def create_task(
    db: Executor,
    *,
    task_id: UUID,
    app_id: UUID,
    user_id: UUID,
    provider: str,
    mode: str,
    data_types: Sequence[str],
    params: Mapping[str, Any],
    max_open_per_user: int | None = None,
    max_open_per_app: int | None = None,
) -> tuple[UUID | None, bool]:
    """A task for this sync, if the user (of this application) has an active connection to the
    provider: (task_id, True) when created; (the id of the identical task that is queued or
    running, False): the same sync is never run twice at once (coalescing); (None, False) without
    an active connection. One round trip in the common case. A new task that would take the user's
    or the application's open tasks past `max_open_per_user` / `max_open_per_app` (None: no cap)
    raises TooManyOpenTasks; the identical open task is still found (coalescing adds none)."""
    for _ in range(3):  # the open task may finish between the insert and the lookup
        row = await db.fetchrow(
            """
            WITH connected AS (
                SELECT EXISTS (
                    SELECT 1 FROM provider_connections c JOIN users u ON u.id = c.user_id
                    WHERE c.user_id = $3 AND c.provider = $4 AND c.active AND u.application_id = $2
                ) AS ok
            ), open AS (
                SELECT
                    (SELECT count(*) FROM sync_tasks WHERE user_id = $3 AND status IN ('queued', 'running'))
                        < coalesce($9, 2147483647) AS user_ok,
                    (SELECT count(*) FROM sync_tasks WHERE application_id = $2 AND status IN ('queued', 'running'))
                        < coalesce($10, 2147483647) AS app_ok
            ), created AS (
                INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, progress)
                SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM connected, open WHERE ok AND user_ok AND app_ok
                ON CONFLICT (user_id, provider, data_types, params) WHERE status IN ('queued', 'running') DO NOTHING
                RETURNING id
            )
            SELECT (SELECT ok FROM connected) AS connected, (SELECT id FROM created) AS id, open.* FROM open
            """,
            task_id,
            app_id,
            user_id,
            provider,
            mode,
            list(data_types),
            dict(params),
            initial_progress(data_types),
            max_open_per_user,
            max_open_per_app,
        )
        assert row is not None
        if not row["connected"]:
            return None, False
        if row["id"] is not None:
            return row["id"], True
        existing = await db.fetchval(
            "SELECT id FROM sync_tasks WHERE user_id = $1 AND provider = $2 AND data_types = $3 AND params = $4"
            " AND status IN ('queued', 'running')",
            user_id,
            provider,
            list(data_types),
            dict(params),
        )
        if existing is not None:
            return existing, False
        if not row["user_ok"]:
            raise TooManyOpenTasks("user", max_open_per_user or 0)
        if not row["app_ok"]:
            raise TooManyOpenTasks("application", max_open_per_app or 0)
    raise RuntimeError("could not create or find the sync task")


async def get_task(db: Executor, task_id: UUID, app_id: UUID | None = None) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_TASK_COLUMNS} FROM sync_tasks WHERE id = $1 AND ($2::uuid IS NULL OR application_id = $2)",
        task_id,
        app_id,
    )
    return row


async def get_task_shown(db: Executor, task_id: UUID, app_id: UUID) -> asyncpg.Record | None:
    """The application's task as the API shows it (its user by the API's id)."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {_TASK_API_COLUMNS} FROM sync_tasks t JOIN users u ON u.id = t.user_id"
        " WHERE t.id = $1 AND t.application_id = $2",
        task_id,
        app_id,
    )
    return row


async def start_task(db: Executor, task_id: UUID) -> asyncpg.Record | None:
    """Mark a queued or interrupted task running. Progress is kept: a rerun (a deferred or crashed
    job) skips the data types that succeeded and the pages already stored (`done`), and redoes
    the rest; the upserts make a redone page harmless. None if the task is unknown or final."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"""
        UPDATE sync_tasks SET status = 'running', attempts = attempts + 1,
            started_at = coalesce(started_at, now()), updated_at = now(),
            progress = (
                SELECT jsonb_object_agg(t, CASE WHEN progress -> t ->> 'status' = 'succeeded' THEN progress -> t
                    ELSE $2::jsonb || coalesce(progress -> t, '{{}}') || '{{"status": "running", "error": null}}'
                    END)
                FROM unnest(data_types) AS t)
        WHERE id = $1 AND status IN ('queued', 'running')
        RETURNING {_TASK_COLUMNS}
        """,
        task_id,
        _TYPE_PROGRESS,
    )
    return row


async def possibly_lost_tasks(db: Executor, queued_for_s: float, idle_for_s: float) -> list[asyncpg.Record]:
    """Tasks whose job may be lost: queued for longer than `queued_for_s`, or running with no
    progress for longer than `idle_for_s`; (id, status, job_id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT id, status::text AS status, coalesce(job_id, id::text) AS job_id FROM sync_tasks
        WHERE (status = 'queued' AND created_at < now() - make_interval(secs => $1))
           OR (status = 'running' AND updated_at < now() - make_interval(secs => $2)
               AND deliveries_due_at IS NULL)  -- its job ended: it waits for webhook deliveries
        ORDER BY created_at LIMIT 1000
        """,
        float(queued_for_s),
        float(idle_for_s),
    )
    return rows


async def open_task_counts(db: Executor) -> dict[tuple[str, str], int]:
    """Tasks queued or running, per (provider, status): the partial index of open tasks answers it."""
    rows = await db.fetch(
        "SELECT provider, status::text AS status, count(*) AS n FROM sync_tasks"
        " WHERE status IN ('queued', 'running') GROUP BY provider, status"
    )
    return {(r["provider"], r["status"]): r["n"] for r in rows}


async def set_task_job(db: Executor, task_id: UUID, job_id: str, replacing: str | None = None) -> bool:
    """Name the open task's new job; with `replacing`, only if its job is still that one (of two
    reapers, or a reaper and the job itself, one wins). Whether it was named."""
    claimed = await db.fetchval(
        """
        UPDATE sync_tasks SET job_id = $2, updated_at = now()
        WHERE id = $1 AND status IN ('queued', 'running') AND ($3::text IS NULL OR coalesce(job_id, id::text) = $3)
        RETURNING true
        """,
        task_id,
        job_id,
        replacing,
    )
    return bool(claimed)


async def requeue_task(db: Executor, task_id: UUID) -> None:
    """A running task whose job could not go on is queued again, for the reaper to give it a job."""
    await db.execute(
        "UPDATE sync_tasks SET status = 'queued', updated_at = now() WHERE id = $1 AND status = 'running'", task_id
    )


def readable(text: str | None) -> str | None:
    """An error message as PostgreSQL stores it: upstream data quoted in it may hold NUL characters
    or lone surrogates, which text and jsonb refuse; they are written as escapes instead."""
    if text is None:
        return None
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


async def update_type_progress(
    db: Executor,
    task_id: UUID,
    data_type: str,
    *,
    pages: int = 0,
    records: Mapping[str, int] | None = None,
    done: Mapping[str, int] | None = None,
    **fields: Any,
) -> None:
    """Atomically add pages and per-kind record counts to one data type's progress, mark pages
    `done` (page key -> items, for a rerun to skip), and set any other fields given (status,
    error, pages_total)."""
    kinds = list(records or {})
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(), progress = jsonb_set(progress, ARRAY[$2::text],
            coalesce(progress -> $2, '{}') || $5::jsonb || jsonb_build_object(
                'done', coalesce(progress -> $2 -> 'done', '{}') || $7::jsonb,
                'pages', coalesce((progress -> $2 ->> 'pages')::int, 0) + $3,
                'records', coalesce(progress -> $2 -> 'records', '{}') || (
                    SELECT coalesce(jsonb_object_agg(k, coalesce((progress -> $2 -> 'records' ->> k)::int, 0) + n),
                                    '{}')
                    FROM unnest($4::text[], $6::int[]) AS d(k, n))))
        WHERE id = $1
        """,
        task_id,
        data_type,
        pages,
        kinds,
        {k: readable(v) if isinstance(v, str) else v for k, v in fields.items()},
        [records[k] for k in kinds] if records else [],
        dict(done or {}),
    )


async def restart_type_progress(db: Executor, task_id: UUID, data_type: str) -> None:
    """One data type's pages are read again from the start: no page counts as done, and the pages
    and records it counts are those of the new reading."""
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(), progress = jsonb_set(progress, ARRAY[$2::text],
            coalesce(progress -> $2, '{}') || '{"done": {}, "pages": 0, "records": {}}'::jsonb)
        WHERE id = $1
        """,
        task_id,
        data_type,
    )


async def finish_task(
    db: Executor, task_id: UUID, status: TaskStatus, result: Mapping[str, bool] | None, error: str | None
) -> None:
    await db.execute(
        "UPDATE sync_tasks SET status = $2::task_status, result = $3, error = $4, finished_at = now(),"
        " updated_at = now() WHERE id = $1",
        task_id,
        status.value,
        dict(result) if result is not None else None,
        readable(error),
    )


# ---- webhook events ---------------------------------------------------------------------


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


async def connected_upstream_users(db: Executor, provider: str, provider_user_ids: Sequence[str]) -> set[str]:
    """Of these provider user ids, the ones an active connection names."""
    rows = await db.fetch(
        """
        SELECT DISTINCT provider_user_id FROM provider_connections
        WHERE provider = $1 AND provider_user_id = ANY($2::text[]) AND active
        """,
        provider,
        list(set(provider_user_ids)),
    )
    return {r["provider_user_id"] for r in rows}


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


async def connections_by_upstream_user(db: Executor, provider: str, provider_user_id: str) -> list[asyncpg.Record]:
    """The active connections a provider's webhook names by the provider's own user id: one per
    application that connected the account (provider_connections_account_idx)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"""
        SELECT {_CONNECTION_COLUMNS} FROM provider_connections c
        WHERE c.provider = $1 AND c.provider_user_id = $2 AND c.active
        ORDER BY c.application_id
        """,
        provider,
        provider_user_id,
    )
    return rows


# ---- sync cursors -------------------------------------------------------------------------


async def get_cursor(db: Executor, user_id: UUID, provider: str, data_type: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = await db.fetchval(
        "SELECT value FROM sync_cursors WHERE user_id = $1 AND provider = $2 AND data_type = $3",
        user_id,
        provider,
        data_type,
    )
    return value


async def save_cursor(db: Executor, user_id: UUID, provider: str, data_type: str, value: Mapping[str, Any]) -> None:
    await db.execute(
        """
        INSERT INTO sync_cursors (user_id, provider, data_type, value) VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_id, provider, data_type) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
        """,
        user_id,
        provider,
        data_type,
        dict(value),
    )


# ---- garmin backfills


async def insert_garmin_backfill(
    db: Executor,
    task_id: UUID,
    user_id: UUID,
    summary_type: str,
    start: datetime,
    end: datetime,
    status: str,
) -> None:
    """Record one backfill request of a sync task; a rerun asking again keeps the first record."""
    await db.execute(
        """
        INSERT INTO garmin_backfills (task_id, user_id, summary_type, start_time, end_time, status)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (task_id, summary_type, start_time) DO NOTHING
        """,
        task_id,
        user_id,
        summary_type,
        start,
        end,
        status,
    )


async def mark_garmin_backfills_delivered(
    db: Executor, user_id: UUID, summary_type: str, starts: Sequence[datetime]
) -> int:
    """Count delivered summaries (by start time) on every backfill window of the user and type
    that holds them; how many windows were touched."""
    status: str = await db.execute(
        """
        UPDATE garmin_backfills b
        SET delivered_records = b.delivered_records + d.n, last_delivery_at = now()
        FROM (SELECT w.task_id, w.start_time, count(*)::int AS n
              FROM garmin_backfills w JOIN unnest($3::timestamptz[]) AS s(at)
                ON s.at >= w.start_time AND s.at < w.end_time
              WHERE w.user_id = $1 AND w.summary_type = $2
              GROUP BY w.task_id, w.start_time) d
        WHERE b.task_id = d.task_id AND b.summary_type = $2 AND b.start_time = d.start_time
        """,
        user_id,
        summary_type,
        list(starts),
    )
    return int(status.split()[-1])


async def await_deliveries(db: Executor, task_id: UUID, wait_s: float, awaiting: Sequence[str]) -> None:
    """The running task's job is done but its data comes later by webhook: its data types
    `awaiting` say so, and it stays running until its deliveries arrived or `wait_s` passed (from
    the first time it got here: a rerun of the job keeps that time)."""
    await db.execute(
        """
        UPDATE sync_tasks SET updated_at = now(),
            deliveries_due_at = coalesce(deliveries_due_at, now() + make_interval(secs => $2)),
            progress = progress || (
                SELECT coalesce(jsonb_object_agg(t, progress -> t || '{"status": "awaiting_delivery"}'), '{}')
                FROM unnest($3::text[]) AS t)
        WHERE id = $1 AND status = 'running'
        """,
        task_id,
        float(wait_s),
        list(awaiting),
    )


def _stored_between(table: str, start: str, condition: str = "") -> str:
    return (
        f"EXISTS (SELECT 1 FROM {table} r WHERE r.user_id = b.user_id AND r.provider = 'garmin'{condition}"
        f" AND {start} >= b.start_time AND {start} < b.end_time)"
    )


_RAW_START = "to_timestamp((r.raw ->> 'startTimeInSeconds')::bigint)"
# A backfill window `b` has what Garmin would deliver into it once something was delivered into it
# since it was asked for, or we already hold a Garmin row starting in it: Garmin sends a window
# asked for again as it sent it before, and such a delivery, the same as the one stored, is
# dropped as a duplicate when it arrives.
_WINDOW_HELD = f"""(b.delivered_records > 0 OR CASE b.summary_type
    WHEN 'activities' THEN {_stored_between("workouts", "r.start_time")}
    WHEN 'sleeps' THEN {_stored_between("sleep_sessions", "r.start_time")}
    WHEN 'hrv' THEN {_stored_between("recoveries", _RAW_START)}
    WHEN 'dailies' THEN {_stored_between("daily_activity", _RAW_START)}
    WHEN 'epochs' THEN {_stored_between("samples", "r.recorded_at", " AND r.sample_type IN ('steps', 'energy')")}
    ELSE false END)"""


async def garmin_tasks_awaiting_deliveries(db: Executor, user_id: UUID | None = None) -> list[asyncpg.Record]:
    """The running tasks waiting for Garmin's deliveries (of one user, or all): (id, data_types,
    progress, overdue, missing: the windows nothing was delivered into yet, as JSON objects)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"""
        SELECT t.id, t.data_types, t.progress, t.deliveries_due_at <= now() AS overdue,
               coalesce(jsonb_agg(jsonb_build_object(
                   'type', b.summary_type, 'start', extract(epoch FROM b.start_time)::bigint,
                   'end', extract(epoch FROM b.end_time)::bigint) ORDER BY b.summary_type, b.start_time)
                   FILTER (WHERE b.task_id IS NOT NULL AND NOT {_WINDOW_HELD}), '[]') AS missing
        FROM sync_tasks t LEFT JOIN garmin_backfills b ON b.task_id = t.id
        WHERE t.status = 'running' AND t.deliveries_due_at IS NOT NULL AND t.provider = 'garmin'
          AND ($1::uuid IS NULL OR t.user_id = $1)
        GROUP BY t.id
        ORDER BY t.deliveries_due_at
        """,
        user_id,
    )
    return rows


async def finish_awaiting_task(
    db: Executor, task_id: UUID, status: TaskStatus, result: Mapping[str, bool], error: str | None,
    progress: Mapping[str, Any],
) -> bool:  # fmt: skip
    """Finish a task that waited for deliveries, unless another settler (or a rerun) did first."""
    done: str = await db.execute(
        """
        UPDATE sync_tasks SET status = $2::task_status, result = $3, error = $4, progress = $5,
            finished_at = now(), updated_at = now()
        WHERE id = $1 AND status = 'running' AND deliveries_due_at IS NOT NULL
        """,
        task_id,
        status.value,
        dict(result),
        readable(error),
        dict(progress),
    )
    return done == "UPDATE 1"


async def garmin_backfill_summary(db: Executor, task_id: UUID) -> dict[str, Any]:
    """What a sync task asked Garmin for and what has been delivered of it since: windows
    requested, windows with at least one summary delivered, windows still awaited and until when
    (while the task waits for them), and each window (Unix seconds)."""
    due = await db.fetchval("SELECT deliveries_due_at FROM sync_tasks WHERE id = $1 AND status = 'running'", task_id)
    rows = await db.fetch(
        f"""
        SELECT summary_type, extract(epoch FROM start_time)::bigint AS start,
               extract(epoch FROM end_time)::bigint AS "end", status, delivered_records, last_delivery_at,
               {_WINDOW_HELD} AS held
        FROM garmin_backfills b WHERE task_id = $1 ORDER BY summary_type, start_time
        """,
        task_id,
    )
    windows = [
        {"type": r["summary_type"], "start": r["start"], "end": r["end"], "status": r["status"],
         "delivered_records": r["delivered_records"], "last_delivery_at": r["last_delivery_at"]}
        for r in rows
    ]  # fmt: skip
    delivered = sum(1 for w in windows if w["delivered_records"] > 0)
    return {
        "requested": len(windows),
        "delivered": delivered,
        "awaiting": sum(1 for r in rows if not r["held"]) if due is not None else 0,
        "deliveries_due_at": due,
        "windows": windows,
    }


# ---- scheduled syncs ----------------------------------------------------------------------


async def count_active_connections(db: Executor, provider: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM provider_connections WHERE provider = $1 AND active", provider)
    return count


async def stalest_connections(db: Executor, provider: str, older_than_s: float, limit: int) -> list[asyncpg.Record]:
    """Active connections whose last task (if any) was created more than `older_than_s` ago and
    none is open, never-synced first, then the longest unsynced: (user_id, application_id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        SELECT c.user_id, u.application_id, last.created_at AS last_sync
        FROM provider_connections c
        JOIN users u ON u.id = c.user_id
        LEFT JOIN LATERAL (
            SELECT t.created_at, t.status FROM sync_tasks t
            WHERE t.user_id = c.user_id AND t.provider = c.provider
            ORDER BY t.created_at DESC LIMIT 1
        ) last ON true
        WHERE c.provider = $1 AND c.active
          AND (last.created_at IS NULL
               OR (last.created_at < now() - make_interval(secs => $2) AND last.status NOT IN ('queued', 'running')))
        ORDER BY last.created_at NULLS FIRST
        LIMIT $3
        """,
        provider,
        float(older_than_s),
        limit,
    )
    return rows


async def reseal_tokens(
    conn: asyncpg.Connection | PoolConnectionProxy, reseal: Callable[[str | None], str | None]
) -> int:
    """Re-encrypt every connection's tokens (key rotation), and the PKCE verifiers of authorizations
    under way, in one transaction; the number of connections."""
    async with conn.transaction():
        states = await conn.fetch("SELECT state_hash, code_verifier FROM oauth_states WHERE code_verifier IS NOT NULL")
        await conn.executemany(
            "UPDATE oauth_states SET code_verifier = $2 WHERE state_hash = $1",
            [(r["state_hash"], reseal(r["code_verifier"])) for r in states],
        )
        rows = await conn.fetch(
            "SELECT user_id, provider, access_token, refresh_token FROM provider_connections FOR UPDATE"
        )
        await conn.executemany(
            "UPDATE provider_connections SET access_token = $3, refresh_token = $4"
            " WHERE user_id = $1 AND provider = $2",
            [(r["user_id"], r["provider"], reseal(r["access_token"]), reseal(r["refresh_token"])) for r in rows],
        )
    return len(rows)
