"""Deleting history past its retention, in bounded batches: finished sync tasks (each connection
keeps its latest, its last sync) and webhook events already handled. Each batch is one short
statement, so a large backlog never holds locks or a transaction open for long."""

from wearsync.db.queries import Executor


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
    pending (processed, ignored or failed)."""
    status: str = await db.execute(
        """
        DELETE FROM webhook_events WHERE id IN (
            SELECT id FROM webhook_events
            WHERE received_at < now() - make_interval(days => $1) AND status <> 'pending'
            LIMIT $2
        )
        """,
        older_than_days,
        batch,
    )
    return _deleted(status)
