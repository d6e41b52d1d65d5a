"""Applications and their API keys."""

import hashlib
import secrets
from uuid import UUID

import asyncpg

from wearsync.db import Executor


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
