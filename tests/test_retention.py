"""History past its retention is deleted by the worker's hourly job, in batches: finished tasks
(each connection keeps its latest) and webhook events already handled; nothing open or pending,
nothing recent."""

import json
import uuid
from uuid import UUID

import asyncpg
import pytest

from tests.conftest import Factory
from wearsync import worker
from wearsync.deps import Deps


async def add_task(db: asyncpg.Pool, user_id: str, days_ago: float, status: str, provider: str = "suunto") -> UUID:
    task_id = uuid.uuid4()
    await db.execute(
        """
        INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, status, created_at)
        SELECT $1, application_id, id, $3, 'async', '{workouts}', $4::jsonb, $5::task_status,
               now() - make_interval(days => $6)
        FROM users WHERE id = $2
        """,
        task_id, UUID(user_id), provider, json.dumps({"n": str(task_id)}), status, days_ago,
    )  # fmt: skip
    return task_id


async def add_event(db: asyncpg.Pool, days_ago: float, status: str) -> int:
    event_id: int = await db.fetchval(
        """
        INSERT INTO webhook_events (provider, kind, provider_user_id, dedupe_key, payload, status, received_at)
        VALUES ('suunto', 'workout', 'someone', $1, '{}', $2, now() - make_interval(days => $3))
        RETURNING id
        """,
        uuid.uuid4().hex, status, days_ago,
    )  # fmt: skip
    return event_id


async def add_outgoing(db: asyncpg.Pool, user_id: str, days_ago: tuple[int, ...]) -> list[int]:
    """Events of the user's application made `days_ago`, each with a pending delivery."""
    app_id = await db.fetchval("SELECT application_id FROM users WHERE id = $1", UUID(user_id))
    endpoint = await db.fetchval(
        "INSERT INTO webhook_endpoints (application_id, url, secret) VALUES ($1, 'https://example.com/', 'x')"
        " RETURNING id",
        app_id,
    )
    ids = []
    for days in days_ago:
        event_id = await db.fetchval(
            "INSERT INTO events (application_id, user_id, type, payload, created_at)"
            " VALUES ($1, $2, 'data.deleted', '{}', now() - make_interval(days => $3)) RETURNING id",
            app_id, UUID(user_id), days,
        )  # fmt: skip
        await db.execute("INSERT INTO event_deliveries (event_id, endpoint_id) VALUES ($1, $2)", event_id, endpoint)
        ids.append(event_id)
    return ids


NOTHING = {"tasks": 0, "webhook_events": 0, "webhook_digests": 0, "events": 0}


async def test_history_past_its_retention_is_deleted_in_batches(
    deps: Deps, db: asyncpg.Pool, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "PRUNE_BATCH", 2)  # several batches for a few rows
    _, user_id, _ = await factory.connected_user("suunto")
    settings = deps.settings
    assert (settings.task_retention_days, settings.webhook_event_retention_days) == (90, 30)
    old = [await add_task(db, user_id, 100 + i, "succeeded") for i in range(4)]
    old += [await add_task(db, user_id, 91, "failed"), await add_task(db, user_id, 95, "partial")]
    kept = {
        await add_task(db, user_id, 120, "running"),  # still open
        await add_task(db, user_id, 89, "succeeded"),  # within retention
        await add_task(db, user_id, 200, "failed", provider="strava"),  # that connection's latest task
    }
    gone_events = [await add_event(db, 31, "processed"), await add_event(db, 40, "ignored"),
                   await add_event(db, 60, "failed")]  # fmt: skip
    kept_events = {await add_event(db, 60, "pending"), await add_event(db, 29, "processed")}
    # Outgoing events: the connection's (new) stays; old ones go, but one whose delivery is pending.
    outgoing = await add_outgoing(db, user_id, (31, 40, 45))
    finished = "UPDATE event_deliveries SET status = 'succeeded' WHERE event_id = ANY($1::bigint[])"
    await db.execute(finished, outgoing[:2])
    recent = {r["id"] for r in await db.fetch("SELECT id FROM events WHERE type = 'connection.created'")}

    deleted = await worker.prune_history({"deps": deps})

    assert deleted == {"tasks": len(old), "webhook_events": len(gone_events), "webhook_digests": 0, "events": 2}
    assert {r["id"] for r in await db.fetch("SELECT id FROM sync_tasks")} == kept
    assert {r["id"] for r in await db.fetch("SELECT id FROM webhook_events")} == kept_events
    assert {r["id"] for r in await db.fetch("SELECT id FROM events")} == recent | {outgoing[2]}
    assert await db.fetchval("SELECT count(*) FROM event_deliveries") == 1  # went with their events
    assert await worker.prune_history({"deps": deps}) == NOTHING


async def test_a_retention_of_zero_keeps_everything(deps: Deps, db: asyncpg.Pool, factory: Factory) -> None:
    _, user_id, _ = await factory.connected_user("suunto")
    for days_ago in (400, 300):
        await add_task(db, user_id, days_ago, "succeeded")
    await add_event(db, 400, "processed")
    forever = Deps(
        settings=deps.settings.model_copy(
            update={"task_retention_days": 0, "webhook_event_retention_days": 0, "event_retention_days": 0}
        ),
        db=deps.db,
        http=deps.http,
    )
    assert await worker.prune_history({"deps": forever}) == NOTHING
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 2
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_pruning_reads_an_index_not_the_whole_table(deps: Deps, db: asyncpg.Pool, factory: Factory) -> None:
    _, user_id, _ = await factory.connected_user("suunto")
    for i in range(300):
        await add_task(db, user_id, i / 10, "succeeded")
        await add_event(db, i / 10, "processed")
    async with db.acquire() as conn:
        await conn.execute("ANALYZE sync_tasks; ANALYZE webhook_events")
        await conn.execute("SET enable_seqscan = off")  # what the planner picks on a big table
        for index, query in (
            ("sync_tasks_created_idx", "SELECT id FROM sync_tasks WHERE created_at < now() - interval '90 days'"
             " AND status NOT IN ('queued', 'running') LIMIT 10"),
            ("webhook_events_handled_idx", "SELECT id FROM webhook_events"
             " WHERE received_at < now() - interval '30 days' AND status <> 'pending' LIMIT 10"),
        ):  # fmt: skip
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}"))
            assert index in plan, plan
