"""The event log as an outbox: every change that reports an event writes it in its own statement,
so both are stored or neither; the events say what changed (ids, counts, reasons)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync import backfills
from wearsync.db import connections, tasks
from wearsync.db.records import delete_records, upsert_records
from wearsync.models import TaskStatus
from wearsync.providers import garmin
from wearsync.records import Sample, Workout
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]
T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


async def events_of(db: asyncpg.Pool, types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT public_id, application_id, user_id, type, payload FROM events"
        " WHERE $1::text[] IS NULL OR type = ANY($1) ORDER BY id",
        list(types) if types else None,
    )
    return [dict(r) for r in rows]


def workout(record_id: str, raw: dict[str, Any] | None = None) -> Workout:
    return Workout(record_id, "running", None, T0, T0 + timedelta(hours=1), raw or {"id": record_id})


async def a_user(factory: Factory, provider: str = "suunto") -> tuple[str, uuid.UUID]:
    key, user_id, _ = await factory.connected_user(provider)
    return key, uuid.UUID(user_id)


async def test_a_sync_reports_its_pages_and_its_end(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id = await a_user(factory)
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    task_id = (await resp.json())["task_id"]
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    task = await resp.json()
    assert task["status"] == "succeeded"
    events = await events_of(db)
    assert events[0]["type"] == "connection.created"
    assert all(e["user_id"] == user_id and e["public_id"].startswith("evt_") for e in events)
    app_id = await db.fetchval("SELECT application_id FROM users WHERE id = $1", user_id)
    assert {e["application_id"] for e in events} == {app_id}
    # Every stored workout is named by exactly one data.created of this task.
    created = [e["payload"] for e in events if e["type"] == "data.created"]
    assert created
    assert all(p["task_id"] == task["task_id"] and p["provider"] == "suunto" for p in created)
    named = [r for p in created if p["kind"] == "workouts" for r in p["records"]]
    stored = await db.fetch("SELECT id, provider_record_id FROM workouts WHERE user_id = $1", user_id)
    assert sorted((r["id"], r["provider_record_id"]) for r in named) == sorted(tuple(r) for r in stored)
    # Samples as ranges: as many as stored, per type.
    sample_counts: dict[str, int] = {}
    for p in created:
        for r in p.get("ranges") or []:
            sample_counts[r["sample_type"]] = sample_counts.get(r["sample_type"], 0) + r["count"]
    stored_samples = await db.fetch(
        "SELECT sample_type, count(*) AS n FROM samples WHERE user_id = $1 GROUP BY sample_type", user_id
    )
    assert sample_counts == {r["sample_type"]: r["n"] for r in stored_samples} != {}
    (end,) = [e for e in events if e["type"].startswith("sync.")]
    assert end["type"] == "sync.succeeded"
    assert events[-1] == end  # the end comes after every page
    counts: dict[str, int] = {}
    for progress in task["progress"].values():
        for kind, n in progress["records"].items():
            counts[kind] = counts.get(kind, 0) + n
    assert end["payload"]["task_id"] == task["task_id"]
    assert end["payload"]["counts"] == counts
    assert set(end["payload"]["data_types"]) == set(task["progress"])

    # Syncing the unchanged account again writes no data events, and ends with its own event.
    before = len(events)
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?async=false&since=0", headers={"X-API-Key": key})
    assert resp.status == 200
    again = (await events_of(db))[before:]
    assert [e["type"] for e in again] == ["sync.succeeded"]


async def test_records_inserted_changed_and_deleted_are_named(factory: Factory, db: asyncpg.Pool) -> None:
    _, user_id = await a_user(factory)
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "suunto", [workout("a"), workout("b")])
        await upsert_records(conn, user_id, "suunto", [workout("a"), workout("b", {"id": "b", "v": 2}), workout("c")])
        await upsert_records(conn, user_id, "suunto", [workout("a")])  # unchanged: nothing to tell
    rows = await db.fetch("SELECT id, provider_record_id FROM workouts WHERE user_id = $1", user_id)
    ids = {r["provider_record_id"]: r["id"] for r in rows}
    assert await delete_records(db, user_id, "suunto", "workouts", "r.provider_record_id = ANY($3)", ["a", "x"]) == 1
    events = await events_of(db, ("data.created", "data.updated", "data.deleted"))
    told = [(e["type"], [r["provider_record_id"] for r in e["payload"]["records"]]) for e in events]
    assert told == [
        ("data.created", ["a", "b"]), ("data.updated", ["b"]), ("data.created", ["c"]), ("data.deleted", ["a"])
    ]  # fmt: skip
    assert events[0]["payload"]["records"][0] == {"id": ids["a"], "provider_record_id": "a"}
    assert all(e["payload"]["kind"] == "workouts" and e["payload"]["task_id"] is None for e in events)


async def test_samples_are_told_as_ranges(factory: Factory, db: asyncpg.Pool) -> None:
    _, user_id = await a_user(factory)
    samples = [Sample("heart_rate", T0 + timedelta(minutes=i), 60 + i, {"i": i}) for i in range(100)]
    samples.append(Sample("steps", T0, 5, {"s": 1}))
    task_id = uuid.uuid4()
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "suunto", samples, task_id)
    (event,) = await events_of(db, ("data.created",))
    assert event["payload"]["task_id"] == str(task_id)
    assert event["payload"]["ranges"] == [
        {"sample_type": "heart_rate", "start": T0.isoformat(), "end": (T0 + timedelta(minutes=99)).isoformat(),
         "count": 100},
        {"sample_type": "steps", "start": T0.isoformat(), "end": T0.isoformat(), "count": 1},
    ]  # fmt: skip


async def test_a_change_whose_event_cannot_be_written_is_not_stored(factory: Factory, db: asyncpg.Pool) -> None:
    """Atomic, also where the caller holds no transaction: no data without its event."""
    _, user_id = await a_user(factory)
    task_id, _ = await tasks.create_task(
        db, task_id=uuid.uuid4(), app_id=await db.fetchval("SELECT application_id FROM users WHERE id = $1", user_id),
        user_id=user_id, provider="suunto", mode="async", data_types=["workouts"], params={},
    )  # fmt: skip
    assert task_id is not None
    await db.execute("ALTER TABLE events ADD CONSTRAINT refuse CHECK (false) NOT VALID")
    try:
        async with db.acquire() as conn:
            with pytest.raises(asyncpg.CheckViolationError):
                await upsert_records(conn, user_id, "suunto", [workout("a")])
        with pytest.raises(asyncpg.CheckViolationError):
            await tasks.finish_task(db, task_id, TaskStatus.FAILED, None, "boom")
        with pytest.raises(asyncpg.CheckViolationError):
            await connections.deactivate_connection(db, user_id, "suunto", "disconnected")
    finally:
        await db.execute("ALTER TABLE events DROP CONSTRAINT refuse")
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0
    assert await db.fetchval("SELECT status::text FROM sync_tasks WHERE id = $1", task_id) == "queued"
    assert await db.fetchval("SELECT active FROM provider_connections WHERE user_id = $1", user_id) is True


async def test_a_task_ends_once(factory: Factory, db: asyncpg.Pool) -> None:
    _, user_id = await a_user(factory)
    app_id = await db.fetchval("SELECT application_id FROM users WHERE id = $1", user_id)
    task_id, _ = await tasks.create_task(
        db, task_id=uuid.uuid4(), app_id=app_id, user_id=user_id, provider="suunto", mode="async",
        data_types=["workouts"], params={},
    )  # fmt: skip
    assert task_id is not None
    await tasks.finish_task(db, task_id, TaskStatus.FAILED, {"workouts": False}, "it broke")
    await tasks.finish_task(db, task_id, TaskStatus.FAILED, {"workouts": False}, "it broke again")
    (event,) = await events_of(db, ("sync.failed", "sync.succeeded", "sync.partial"))
    assert event["payload"] | {"data_types": None} == {
        "task_id": str(task_id), "provider": "suunto", "status": "failed", "error": "it broke", "counts": {},
        "data_types": None,
    }  # fmt: skip
    assert event["payload"]["data_types"]["workouts"]["status"] == "queued"


async def test_connections_made_and_lost_are_told_once(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id = await a_user(factory)
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/suunto", headers={"X-API-Key": key})
    assert resp.status in (200, 204), await resp.text()
    assert not await connections.deactivate_connection(db, user_id, "suunto", "refused")  # inactive already
    await connections.deactivate_connection(db, user_id, "suunto", "replaced reason", only_active=False)
    await factory.connect(key, str(user_id), "suunto", "someone")
    await factory.connect(key, str(user_id), "suunto", "someone")  # tokens replaced: no new connection
    events = await events_of(db, ("connection.created", "connection.deactivated"))
    assert [(e["type"], e["payload"]["provider"], e["payload"].get("reason")) for e in events] == [
        ("connection.created", "suunto", None),
        ("connection.deactivated", "suunto", "disconnected"),
        ("connection.created", "suunto", None),
    ]


async def test_a_garmin_sync_ended_by_its_deliveries_tells_its_backfill(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings
) -> None:
    key, user_id = await a_user(factory, "garmin")
    resp = await client.post(f"/api/v1/garmin/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    task_id = (await resp.json())["task_id"]
    assert await events_of(db, ("sync.succeeded", "sync.partial", "sync.failed", "backfill.completed")) == []
    await db.execute("UPDATE sync_tasks SET deliveries_due_at = now() WHERE id = $1", uuid.UUID(task_id))
    assert (
        await backfills.settle_tasks(db, garmin.PROVIDER, garmin.PROVIDER.settings(settings)) == 1
    )  # nothing delivered in time
    end, backfill = await events_of(db, ("sync.succeeded", "sync.partial", "sync.failed", "backfill.completed"))
    assert (end["type"], end["payload"]["task_id"]) == ("sync.partial", task_id)
    assert backfill["type"] == "backfill.completed"
    assert backfill["payload"] | {"error": None} == {
        "task_id": task_id, "provider": "garmin", "status": "partial", "error": None,
        "windows_requested": 5, "windows_delivered": 0,
    }  # fmt: skip
