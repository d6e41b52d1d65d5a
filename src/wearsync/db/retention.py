"""Deleting what is no longer to be kept, in bounded batches: history past its retention
(finished sync tasks, each connection keeping its latest, and webhook events already handled) and
a deleted user's data. Each batch is one short statement, so a large backlog or a user with years
of samples never holds locks or a transaction open for long."""

from uuid import UUID

from wearsync.db import Executor

# A user's data tables, by the name the read API gives them.
USER_DATA = {
    "workouts": "workouts",
    "sleep": "sleep_sessions",
    "recovery": "recoveries",
    "daily": "daily_activity",
    "samples": "samples",
}


def _deleted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "DELETE 123"


async def prune_tasks(db: Executor, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` finished tasks created more than `older_than_days` ago, but not the
    latest task of a connection (user and provider): scheduling and `wearsync connections` read it."""
    status: str = await db.execute(
        """
        DELETE FROM sync_tasks WHERE id IN (
            SELECT old.id FROM sync_tasks old
            WHERE old.created_at < now() - make_interval(days => $1)
              AND old.status NOT IN ('queued', 'running')
              AND EXISTS (SELECT 1 FROM sync_tasks newer
                          WHERE newer.user_id = old.user_id AND newer.provider = old.provider
                            AND newer.created_at > old.created_at)
            LIMIT $2
        )
        """,
        older_than_days,
        batch,
    )
    return _deleted(status)


async def prune_webhook_events(db: Executor, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` webhook events received more than `older_than_days` ago and no longer
    pending (processed, ignored or failed, and not to be tried again)."""
    status: str = await db.execute(
        """
        DELETE FROM webhook_events WHERE id IN (
            SELECT id FROM webhook_events
            WHERE received_at < now() - make_interval(days => $1) AND status <> 'pending' AND retry_at IS NULL
            LIMIT $2
        )
        """,
        older_than_days,
        batch,
    )
    return _deleted(status)


async def prune_webhook_digests(db: Executor, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` webhook event digests received more than `older_than_days` ago."""
    status: str = await db.execute(
        """
        DELETE FROM webhook_digests WHERE (provider, digest) IN (
            SELECT provider, digest FROM webhook_digests
            WHERE received_at < now() - make_interval(days => $1)
            LIMIT $2
        )
        """,
        older_than_days,
        batch,
    )
    return _deleted(status)


async def delete_user(db: Executor, user_id: UUID, batch: int = 10_000) -> dict[str, int]:
    """Delete a user's data rows table by table, `batch` rows a statement, then the user, and with it
    (cascaded) its connections, tasks and cursors, and any row a sync still running wrote since.
    Cut off, it leaves the user in place, to be deleted again. Rows deleted, by read API name."""
    deleted = dict.fromkeys(USER_DATA, 0)
    for name, table in USER_DATA.items():
        while True:
            rows = f"SELECT ctid FROM {table} WHERE user_id = $1 LIMIT $2"
            count = _deleted(await db.execute(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY({rows}))", user_id, batch))
            deleted[name] += count
            if count < batch:
                break
    await db.execute("DELETE FROM users WHERE id = $1", user_id)
    return deleted


async def prune_events(db: Executor, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` events made more than `older_than_days` ago, oldest first, with their
    deliveries and attempts, but none with a delivery still pending (a replay, say)."""
    status: str = await db.execute(
        """
        DELETE FROM events WHERE id IN (
            SELECT e.id FROM events e
            WHERE e.created_at < now() - make_interval(days => $1)
              AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
            ORDER BY e.id LIMIT $2
        )
        """,
        older_than_days,
        batch,
    )
    return _deleted(status)
