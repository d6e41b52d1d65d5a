"""DELETE /api/v1/users/{id}: access withdrawn at every provider, then every row about the user
gone (data, tasks, connections, cursors), in bounded statements; nobody else's rows touched."""

from uuid import UUID

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import Worker

from tests.conftest import Factory, start_sync, wait_for_task
from tests.helpers import wait_until
from wearsync.api.responses import UserDeleted
from wearsync.db import retention
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
# What a deletion reports, by the name it reports it under (the API's contract).
REPORTED = {
    "workouts": "workouts", "sleep": "sleep_sessions", "recovery": "recoveries", "daily": "daily_activity",
    "samples": "samples",
}  # fmt: skip
# The tables a synced user has rows in.
FILLED_BY_A_SYNC = {*REPORTED.values(), "provider_connections", "sync_tasks", "sync_cursors"}


async def rows_of(db: asyncpg.Pool, user_id: str) -> dict[str, int]:
    """The user's rows in every table with a foreign key to users, as PostgreSQL's catalog has them
    (not a list kept by the code under test: a new table is checked by construction)."""
    links = await db.fetch(
        """
        SELECT c.conrelid::regclass::text AS table_name, a.attname AS column_name
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass
        """
    )
    assert {link["table_name"] for link in links} >= FILLED_BY_A_SYNC
    return {
        link["table_name"]: await db.fetchval(
            f"SELECT count(*) FROM {link['table_name']} WHERE {link['column_name']} = $1", UUID(user_id)
        )
        for link in links
    }


async def synced_user(client: Client, factory: Factory, sim_state: SimState, key: str | None = None) -> tuple[str, str]:
    """(key, user id) of a user connected to Suunto and Whoop, both synced."""
    key = key or await factory.api_key()
    user_id = await factory.user(key)
    for provider in ("suunto", "whoop"):
        sim_user = f"{provider}-{user_id[:8]}"
        sim_state.provider(provider).user_history[sim_user] = {"workouts": 30, "days_247": 5}
        await factory.connect(key, user_id, provider, sim_user)
        task = await wait_for_task(client, key, await start_sync(client, key, provider, user_id))
        assert task["status"] == "succeeded", task
    return key, user_id


async def test_deleting_a_user_revokes_upstream_and_deletes_every_row(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id = await synced_user(client, factory, sim_state)
    _, other_user = await synced_user(client, factory, sim_state, key=key)  # same application
    before, others_before = await rows_of(db, user_id), await rows_of(db, other_user)
    assert all(before[table] for table in FILLED_BY_A_SYNC), before
    sim_state.revocations.clear()

    resp = await client.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})

    assert resp.status == 200, await resp.text()
    body = UserDeleted.model_validate(await resp.json())
    assert body.deleted.model_dump() == {name: before[table] for name, table in REPORTED.items()}
    assert [(c.provider, c.upstream_revoked, c.upstream_error) for c in body.connections] == [
        ("suunto", True, None), ("whoop", True, None),
    ]  # fmt: skip
    assert sorted(p for p, _ in sim_state.revocations) == ["suunto", "whoop"]
    assert set((await rows_of(db, user_id)).values()) == {0}
    assert await rows_of(db, other_user) == others_before
    resp = await client.get(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})
    assert resp.status == 404
    resp = await client.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})
    assert (resp.status, await resp.json()) == (404, {"detail": "User not found"})


async def test_a_provider_refusing_the_revocation_does_not_keep_the_data(
    client: Client, factory: Factory, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("whoop")
    sim_state.faults.append(Fault("whoop", "/developer/v2/user/access", "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    (connection,) = (await resp.json())["connections"]
    assert (connection["provider"], connection["upstream_revoked"]) == ("whoop", False)
    assert "HTTP 502" in connection["upstream_error"]
    assert set((await rows_of(db, user_id)).values()) == {0}


async def test_a_large_history_is_deleted_a_batch_at_a_time(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    _, user_id = await synced_user(client, factory, sim_state)
    before = await rows_of(db, user_id)
    assert before["samples"] > 7
    deleted = await retention.delete_user(db, UUID(user_id), batch=7)
    assert deleted == {name: before[table] for name, table in REPORTED.items()}
    assert set((await rows_of(db, user_id)).values()) == {0}


async def test_a_sync_running_when_its_user_is_deleted_stops_quietly(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState,
    settings: Settings, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 400}
    sim_state.provider("suunto").latency_s = 0.1
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM workouts"), "under way: some pages stored")
    # Deleted while the provider still answers (no revocation): the next page's write is refused.
    await retention.delete_user(db, UUID(user_id))
    redis = ArqRedis.from_url(settings.redis_url)
    try:
        assert await Job(task_id, redis, _queue_name=settings.queue_name).result(timeout=30) is None
    finally:
        await redis.aclose()
    assert set((await rows_of(db, user_id)).values()) == {0}
    logged = capfd.readouterr().out
    assert "the task's user was deleted" in logged
    assert "sync task crashed" not in logged
