"""The application's users as a paged list, changing a user, and a user's tasks (issue 16, API
completeness)."""

import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_sync

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
