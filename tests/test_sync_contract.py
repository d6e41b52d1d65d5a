"""The sync endpoint against ../shared/spec/sync-api.md: every documented response."""

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync.api.common import QUEUE
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


def sync_url(provider: str, user_id: str) -> str:
    return f"/api/v1/{provider}/users/{user_id}/sync"


async def queued_jobs(client: Client, settings: Settings) -> int:
    count: int = await client.app[QUEUE].zcard(settings.queue_name)
    return count


async def test_missing_or_wrong_key_is_401(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    for headers in ({}, {"X-API-Key": "ws_not-a-key"}, {"X-API-Key": ""}):
        resp = await client.post(sync_url("suunto", user_id), headers=headers)
        assert resp.status == 401
        assert await resp.json() == {"detail": "Invalid or missing API key"}


async def test_key_is_checked_before_parameters(client: Client) -> None:
    resp = await client.post(sync_url("nope", "not-a-uuid") + "?limit=1000")
    assert resp.status == 401


@pytest.mark.parametrize(
    ("provider", "user_id", "query", "parameter"),
    [
        ("suunto", "not-a-uuid", "", "user_id"),
        ("fitbit", None, "", "provider"),
        ("suunto", None, "data_type=sleep", "data_type"),
        ("suunto", None, "limit=101", "limit"),
        ("suunto", None, "limit=0", "limit"),
        ("suunto", None, "limit=ten", "limit"),
        ("suunto", None, "offset=-1", "offset"),
        ("suunto", None, "since=-5", "since"),
        ("suunto", None, "async=maybe", "async"),
        ("suunto", None, "async=yes", "async"),
        ("suunto", None, "filter_by_modification_time=2", "filter_by_modification_time"),
        ("polar", None, "samples=nope", "samples"),
        ("polar", None, "zones=TRUEISH", "zones"),
        ("polar", None, "route=-1", "route"),
        ("garmin", None, "summary_start_time=yesterday", "summary_start_time"),
        ("garmin", None, "summary_end_time=2024-13-45", "summary_end_time"),
        ("garmin", None, "summary_start_time=2024-02-01&summary_end_time=2024-01-01", "summary_start_time"),
        ("garmin", None, "summary_start_time=1706745600&summary_end_time=1704067200", "summary_end_time"),
    ],
)
async def test_malformed_parameter_is_422_naming_it_and_enqueues_nothing(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool,
    provider: str, user_id: str | None, query: str, parameter: str,
) -> None:  # fmt: skip
    key, connected_user, _ = await factory.connected_user("suunto")
    resp = await client.post(f"{sync_url(provider, user_id or connected_user)}?{query}", headers={"X-API-Key": key})
    assert resp.status == 422, await resp.text()
    detail = (await resp.json())["detail"]
    assert isinstance(detail, str)
    assert parameter in detail
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 0
    assert await queued_jobs(client, settings) == 0


@pytest.mark.parametrize("provider", ["strava"])
async def test_247_from_a_provider_without_it_is_501(client: Client, factory: Factory, provider: str) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)  # no connection: 501 is checked before 404
    resp = await client.post(f"{sync_url(provider, user_id)}?data_type=247", headers={"X-API-Key": key})
    assert resp.status == 501
    assert await resp.json() == {"detail": f"Provider '{provider}' does not support 247 data (sleep/recovery/activity)"}


@pytest.mark.parametrize("provider", ["garmin", "strava", "polar", "suunto", "whoop"])
async def test_no_active_connection_is_404(client: Client, factory: Factory, provider: str) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    resp = await client.post(sync_url(provider, user_id), headers={"X-API-Key": key})
    assert resp.status == 404
    assert await resp.json() == {"detail": "No active connection found for provider"}


async def test_unknown_user_and_another_applications_user_are_404(client: Client, factory: Factory) -> None:
    _, their_user, _ = await factory.connected_user("suunto")
    my_key = await factory.api_key("another-app")
    for user_id in (their_user, str(uuid.uuid4())):
        resp = await client.post(sync_url("suunto", user_id), headers={"X-API-Key": my_key})
        assert resp.status == 404
        assert await resp.json() == {"detail": "No active connection found for provider"}


async def test_disconnected_user_is_404(client: Client, factory: Factory) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/suunto", headers={"X-API-Key": key})
    assert resp.status == 200
    resp = await client.post(sync_url("suunto", user_id), headers={"X-API-Key": key})
    assert resp.status == 404


async def test_async_sync_queues_a_task_with_its_parameters(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    resp = await client.post(
        f"{sync_url('suunto', user_id)}?since=1700000000&limit=100&offset=20&filter_by_modification_time=false",
        headers={"X-API-Key": key},
    )
    assert resp.status == 200
    body = await resp.json()
    task_id = body["task_id"]
    assert body == {
        "success": True,
        "async": True,
        "task_id": task_id,
        "message": "Sync task queued for suunto. Check task status for results.",
    }
    job = await client.app[QUEUE].zscore(settings.queue_name, f"arq:job:{task_id}".removeprefix("arq:job:"))
    assert job is not None, "the arq job id is the task id"
    task = await db.fetchrow("SELECT * FROM sync_tasks WHERE id = $1", uuid.UUID(task_id))
    assert task is not None
    assert task["status"] == "queued"
    assert task["mode"] == "async"
    assert task["data_types"] == ["workouts", "data_247"]
    assert task["params"] == {"since": 1700000000, "limit": 100, "offset": 20, "filter_by_modification_time": False}


async def test_task_parameters_are_the_providers_own(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    await db.execute(
        "INSERT INTO provider_connections (user_id, application_id, provider, provider_user_id, access_token)"
        " SELECT $1, application_id, p, p || '1', 't' FROM users, unnest(ARRAY['garmin', 'polar']) p WHERE id = $1",
        uuid.UUID(user_id),
    )
    resp = await client.post(
        f"{sync_url('garmin', user_id)}?summary_start_time=2024-01-01&summary_end_time=1704153600&limit=7",
        headers={"X-API-Key": key},
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"{sync_url('polar', user_id)}?samples=1&route=true", headers={"X-API-Key": key})
    assert resp.status == 200
    rows = await db.fetch("SELECT provider, data_types, params FROM sync_tasks ORDER BY provider")
    assert [dict(r) for r in rows] == [
        {
            "provider": "garmin",
            "data_types": ["workouts", "data_247"],
            "params": {"summary_start_time": 1704067200, "summary_end_time": 1704153600},
        },
        {
            "provider": "polar",
            "data_types": ["workouts", "data_247"],
            "params": {"samples": True, "zones": False, "route": True},
        },
    ]


async def test_sync_mode_full_success(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    resp = await client.post(f"{sync_url('suunto', user_id)}?async=false", headers={"X-API-Key": key})
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True
    assert body["details"] == {"workouts": True, "data_247": True}
    assert await db.fetchval("SELECT count(*) FROM workouts") > 0
    assert await db.fetchval("SELECT status::text FROM sync_tasks") == "succeeded"


async def test_sync_mode_partial_success(
    client: Client, factory: Factory, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/247samples/recovery", "status", 503, count=-1))
    resp = await client.post(f"{sync_url('suunto', user_id)}?async=false", headers={"X-API-Key": key})
    assert resp.status == 200
    assert await resp.json() == {
        "success": False,
        "details": {"workouts": True, "data_247": False},
        "task_id": (await resp.json())["task_id"],
    }
    assert await db.fetchval("SELECT count(*) FROM workouts") > 0


async def test_sync_mode_only_the_requested_type(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    resp = await client.post(f"{sync_url('suunto', user_id)}?async=0&data_type=workouts", headers={"X-API-Key": key})
    body: dict[str, Any] = await resp.json()
    assert body["details"] == {"workouts": True}
    assert await db.fetchval("SELECT count(*) FROM samples") == 0
