"""Revocations to try again (pending_revocations, migration 0018): the tokens a failed withdrawal
of our access upstream needs, copied as stored (encrypted) from the connection."""

from uuid import UUID

import asyncpg

from wearsync.db import Executor


async def keep(db: Executor, user_id: UUID, provider: str, error: str, retry_in_s: float) -> None:
    """Keep the connection's tokens for a revocation tried again in `retry_in_s`."""
    await db.execute(
        """
        INSERT INTO pending_revocations (provider, user_id, application_id, provider_user_id, access_token,
                                         refresh_token, expires_at, scopes, tries, retry_at, last_error)
        SELECT provider, user_id, application_id, provider_user_id, access_token, refresh_token, expires_at,
               scopes, 1, now() + make_interval(secs => $3), $4
        FROM provider_connections WHERE user_id = $1 AND provider = $2
        """,
        user_id,
        provider,
        retry_in_s,
        error,
    )


async def claim_due(db: Executor, hold_s: float, limit: int = 20) -> list[asyncpg.Record]:
    """Revocations whose next try is due, each put off by `hold_s` so that no other worker takes it
    meanwhile (and a worker that dies with it leaves it to be tried again then)."""
    rows: list[asyncpg.Record] = await db.fetch(
        """
        UPDATE pending_revocations SET retry_at = now() + make_interval(secs => $1)
        WHERE id IN (
            SELECT id FROM pending_revocations WHERE retry_at <= now() ORDER BY retry_at LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
        """,
        hold_s,
        limit,
    )
    return rows


async def reconnected_since(db: Executor, row: asyncpg.Record) -> bool:
    """Whether the account was connected again in the same application after the revocation was
    asked for: revoking with the old tokens could then cut the new grant (Strava revokes them all)."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM provider_connections WHERE provider = $1 AND provider_user_id = $2"
            " AND application_id = $3 AND active AND updated_at > $4)",
            row["provider"],
            row["provider_user_id"],
            row["application_id"],
            row["created_at"],
        )
    )


async def retry_later(db: Executor, revocation_id: int, error: str, retry_in_s: float) -> None:
    await db.execute(
        "UPDATE pending_revocations SET tries = tries + 1, last_error = $2,"
        " retry_at = now() + make_interval(secs => $3) WHERE id = $1",
        revocation_id,
        error,
        retry_in_s,
    )


async def drop(db: Executor, revocation_id: int) -> None:
    """Forget a revocation, and with it the tokens (done, given up or no longer wanted)."""
    await db.execute("DELETE FROM pending_revocations WHERE id = $1", revocation_id)
