"""The application's users as a paged list, changing a user, and a user's tasks (issue 16, API
completeness)."""

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, run_queued, start_sync
from wearsync.db.tasks import CANCELLED
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


async def _get(client: Client, key: str, url: str, status: int = 200) -> Any:
    resp = await client.get(url, headers={"X-API-Key": key})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_users_are_listed_a_page_at_a_time_and_found_by_external_id(client: Client, factory: Factory) -> None:
    key = await factory.api_key(f"app-{uuid.uuid4().hex[:8]}")
    made = [await factory.user(key, external_id=f"customer-{n}") for n in range(5)]
    other_key = await factory.api_key(f"app-{uuid.uuid4().hex[:8]}")
    await factory.user(other_key, external_id="customer-1")  # another application's: never listed here
    seen: list[str] = []
    url = "/api/v1/users?limit=2"
    pages = 0
    while True:
        page = await _get(client, key, url)
        pages += 1
        assert len(page["data"]) <= 2
        seen += [u["id"] for u in page["data"]]
        if page["next_cursor"] is None:
            break
        url = f"/api/v1/users?limit=2&cursor={page['next_cursor']}"
    assert (seen, pages) == (made, 3)  # oldest first, none repeated or skipped
    found = await _get(client, key, "/api/v1/users?external_id=customer-1")
    assert [u["id"] for u in found["data"]] == [made[1]]
    assert found["data"][0]["external_id"] == "customer-1"
    assert found["next_cursor"] is None
    assert (await _get(client, key, "/api/v1/users?external_id=nobody"))["data"] == []
    bad = await _get(client, key, "/api/v1/users?cursor=nope", 422)
    assert "cursor" in bad["detail"]
    tasks_cursor = "WyJ0YXNrcyIsMSwiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIl0"  # another list's
    assert "cursor" in (await _get(client, key, f"/api/v1/users?cursor={tasks_cursor}", 422))["detail"]
    assert "limit" in (await _get(client, key, "/api/v1/users?limit=0", 422))["detail"]
    assert "colour" in (await _get(client, key, "/api/v1/users?colour=red", 422))["detail"]
    assert (await client.get("/api/v1/users")).status == 401


async def test_a_user_is_updated_and_its_external_id_stays_unique(client: Client, factory: Factory) -> None:
    key = await factory.api_key(f"app-{uuid.uuid4().hex[:8]}")
    headers = {"X-API-Key": key}
    user, other = await factory.user(key, external_id="old"), await factory.user(key, external_id="taken")
    resp = await client.patch(f"/api/v1/users/{user}", json={"external_id": "new"}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["external_id"] == "new"
    assert (await _get(client, key, f"/api/v1/users/{user}"))["external_id"] == "new"
    assert [u["id"] for u in (await _get(client, key, "/api/v1/users?external_id=new"))["data"]] == [user]
    resp = await client.patch(f"/api/v1/users/{user}", json={"external_id": "taken"}, headers=headers)
    assert resp.status == 409
    assert "external_id" in (await resp.json())["detail"]
    assert (await _get(client, key, f"/api/v1/users/{other}"))["external_id"] == "taken"
    resp = await client.patch(f"/api/v1/users/{user}", json={"external_id": None}, headers=headers)
    assert (resp.status, (await resp.json())["external_id"]) == (200, None)
    for body in ({}, {"external_id": ""}, {"id": str(uuid.uuid4()), "external_id": "x"}):
        resp = await client.patch(f"/api/v1/users/{user}", json=body, headers=headers)
        assert resp.status == 422, body
    resp = await client.patch(f"/api/v1/users/{uuid.uuid4()}", json={"external_id": "x"}, headers=headers)
    assert (resp.status, await resp.json()) == (404, {"detail": "User not found"})


async def test_a_users_tasks_newest_first_a_page_at_a_time(client: Client, factory: Factory) -> None:
    key, user, _ = await factory.connected_user("suunto", application=f"app-{uuid.uuid4().hex[:8]}")
    # Distinct parameters: three tasks, not one coalesced.
    made = [await start_sync(client, key, "suunto", user, f"data_type=workouts&since={n}") for n in (1, 2, 3)]
    other_key, other_user, _ = await factory.connected_user("suunto")
    await start_sync(client, key, "suunto", user, "data_type=247&since=5")
    await start_sync(client, other_key, "suunto", other_user, "data_type=workouts&since=1")  # not this user's
    everything = await _get(client, key, f"/api/v1/users/{user}/tasks")
    assert (len(everything["data"]), everything["next_cursor"]) == (4, None)
    seen: list[str] = []
    url = f"/api/v1/users/{user}/tasks?limit=2&provider=suunto&status=queued"
    while url:
        page = await _get(client, key, url)
        seen += [t["task_id"] for t in page["data"] if t["data_types"] == ["workouts"]]
        assert all(t["user_id"] == user and t["status"] == "queued" for t in page["data"])
        assert all("done" not in p for t in page["data"] for p in t["progress"].values())
        cursor = page["next_cursor"]
        url = f"/api/v1/users/{user}/tasks?limit=2&provider=suunto&status=queued&cursor={cursor}" if cursor else ""
    assert seen == made[::-1]  # newest first
    assert (await _get(client, key, f"/api/v1/users/{user}/tasks?status=failed"))["data"] == []
    assert (await _get(client, key, f"/api/v1/users/{user}/tasks?provider=polar"))["data"] == []
    assert "status" in (await _get(client, key, f"/api/v1/users/{user}/tasks?status=lost", 422))["detail"]
    assert (await _get(client, key, f"/api/v1/users/{uuid.uuid4()}/tasks", 404)) == {"detail": "User not found"}


async def test_a_queued_task_is_cancelled_and_an_ended_one_retried(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings
) -> None:
    key, user, _ = await factory.connected_user("suunto")
    headers = {"X-API-Key": key}
    queued = await start_sync(client, key, "suunto", user, "data_type=workouts&since=0")
    resp = await client.post(f"/api/v1/tasks/{queued}/retry", headers=headers)
    assert resp.status == 409, await resp.text()
    assert "queued" in (await resp.json())["detail"]
    resp = await client.post(f"/api/v1/tasks/{queued}/cancel", headers=headers)
    assert resp.status == 200, await resp.text()
    cancelled = await resp.json()
    assert (cancelled["task_id"], cancelled["status"], cancelled["error"]) == (queued, "failed", CANCELLED)
    assert cancelled["result"] == {"workouts": False}
    event = await db.fetchrow("SELECT type, payload FROM events WHERE payload ->> 'task_id' = $1", queued)
    assert event is not None
    assert event["type"] == "sync.failed"
    await run_queued(settings)  # its job comes, finds it ended, and does nothing
    assert (await _get(client, key, f"/api/v1/tasks/{queued}"))["status"] == "failed"
    assert await db.fetchval("SELECT count(*) FROM workouts WHERE user_id = $1", uuid.UUID(user)) == 0
    resp = await client.post(f"/api/v1/tasks/{queued}/cancel", headers=headers)
    assert resp.status == 409
    assert "failed" in (await resp.json())["detail"]

    resp = await client.post(f"/api/v1/tasks/{queued}/retry", headers=headers)
    assert resp.status == 202, await resp.text()
    again = (await resp.json())["task_id"]
    assert again != queued
    first, second = (
        await _get(client, key, f"/api/v1/tasks/{queued}"),
        await _get(client, key, f"/api/v1/tasks/{again}"),
    )
    assert (second["data_types"], second["params"], second["status"]) == (
        first["data_types"],
        first["params"],
        "queued",
    )
    await run_queued(settings)
    assert (await _get(client, key, f"/api/v1/tasks/{again}"))["status"] == "succeeded"
    assert await db.fetchval("SELECT count(*) FROM workouts WHERE user_id = $1", uuid.UUID(user)) > 0
    for action in ("retry", "cancel"):
        resp = await client.post(f"/api/v1/tasks/{uuid.uuid4()}/{action}", headers=headers)
        assert (resp.status, await resp.json()) == (404, {"detail": "Task not found"})
        assert (await client.post(f"/api/v1/tasks/nope/{action}", headers=headers)).status == 422
