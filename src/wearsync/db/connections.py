"""Users, their provider connections and tokens, and the sync cursors of a connection."""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from wearsync.db import Executor, events

R = TypeVar("R")


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
                events.reporting(
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
                    events.CONNECTION_CREATED,
                    "SELECT * FROM changed",
                    before="before AS (SELECT active FROM provider_connections WHERE user_id = $1 AND provider = $2)",
                ),
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
    inactive one), telling the application (connection.deactivated) if it was active; whether a
    row changed."""
    changed: int = await db.fetchval(
        events.reporting(
            """
            UPDATE provider_connections c SET active = false, inactive_reason = $3, updated_at = now()
            FROM (SELECT user_id, provider, active AS was_active FROM provider_connections
                  WHERE user_id = $1 AND provider = $2 FOR UPDATE) o
            WHERE c.user_id = o.user_id AND c.provider = o.provider AND (o.was_active OR NOT $4)
            RETURNING c.user_id, c.application_id, c.provider, c.inactive_reason, o.was_active
            """,
            events.CONNECTION_DEACTIVATED,
        ),
        user_id,
        provider,
        reason,
        only_active,
    )
    return changed > 0


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


async def get_cursor(db: Executor, user_id: UUID, provider: str, data_type: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = await db.fetchval(
        "SELECT value FROM sync_cursors WHERE user_id = $1 AND provider = $2 AND data_type = $3",
        user_id,
        provider,
        data_type,
    )
    return value


async def set_scopes(db: Executor, user_id: UUID, provider: str, scopes: Sequence[str]) -> None:
    await db.execute(
        "UPDATE provider_connections SET scopes = $3, updated_at = now() WHERE user_id = $1 AND provider = $2",
        user_id, provider, list(scopes),
    )  # fmt: skip


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
    """Re-encrypt every connection's tokens (key rotation), the PKCE verifiers of authorizations
    under way and the webhook endpoints' signing secrets, in one transaction; the number of
    connections."""
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
        endpoints = await conn.fetch("SELECT id, secret, previous_secret FROM webhook_endpoints FOR UPDATE")
        await conn.executemany(
            "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
            [(r["id"], reseal(r["secret"]), reseal(r["previous_secret"])) for r in endpoints],
        )
    return len(rows)
