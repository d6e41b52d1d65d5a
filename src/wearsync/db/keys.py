"""Applications and their API keys."""

import hashlib
import secrets
from uuid import UUID

import asyncpg

from wearsync.db import Executor


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(db: Executor, application_name: str, key_name: str, *, operator: bool = False) -> str:
    """Create the application if needed and a key for it; returns the key (only its hash is kept)."""
    app_id = await db.fetchval(
        "INSERT INTO applications (name) VALUES ($1)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        application_name,
    )
    key, _ = await add_key(db, app_id, key_name, operator=operator)
    return key


async def add_key(db: Executor, app_id: UUID, key_name: str, *, operator: bool = False) -> tuple[str, asyncpg.Record]:
    """A new key of the application: (the key, shown once; its row as list_keys shows it)."""
    key = "ws_" + secrets.token_urlsafe(32)
    row = await db.fetchrow(
        f"INSERT INTO api_keys (application_id, name, prefix, key_hash, operator) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_KEY_COLUMNS}",
        app_id,
        key_name,
        key[:10],
        hash_api_key(key),
        operator,
    )
    assert row is not None
    return key, row


_KEY_COLUMNS = "prefix, name, operator, created_at, last_used_at, revoked_at"


async def list_keys(db: Executor, app_id: UUID) -> list[asyncpg.Record]:
    """The application's keys, oldest first (revoked ones too), without their hashes."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE application_id = $1 ORDER BY created_at, prefix", app_id
    )
    return rows


async def is_operator_key(db: Executor, key: str) -> bool:
    """Whether this is a valid (unrevoked) operator key."""
    return bool(
        await db.fetchval("SELECT operator FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_api_key(key))
    )


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


async def revoke_api_key(db: Executor, prefix: str, app_id: UUID | None = None) -> int:
    """Revoke the one active key with this prefix (of application `app_id` when given); how many
    matched (0, 1, or more: then none is revoked, the prefix is ambiguous)."""
    matches: int = await db.fetchval(
        """
        WITH matching AS (
            SELECT id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL
              AND ($2::uuid IS NULL OR application_id = $2)
        ),
        revoked AS (
            UPDATE api_keys SET revoked_at = now()
            WHERE id IN (SELECT id FROM matching) AND (SELECT count(*) FROM matching) = 1
            RETURNING id
        )
        SELECT count(*) FROM matching
        """,
        prefix,
        app_id,
    )
    return matches
