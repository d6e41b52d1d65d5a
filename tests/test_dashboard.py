"""The dashboard's read endpoints over real sockets: the application's users with their connections'
health (last sync, last error, token state, a rate-limit wait), its tasks and the webhook events
received for its users; another application's key sees none of it. And the page itself: served
from the package, public (it signs in with a key itself), with a strict Content-Security-Policy.
The page in a browser: tests/test_browser.py."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_sync, start_worker
from tests.sink import Sink, running_sink
from tests.test_event_delivery import register
from tests.test_waiting import task_when
from tests.test_webhooks import notification, signed
from wearsync.api.responses import DashboardDeliveries, DashboardTasks, DashboardUsers, DashboardWebhookEvents
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


async def get(client: Client, key: str, path: str) -> Any:
    resp = await client.get(f"/api/v1/dashboard/{path}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def by_provider(user: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["provider"]: c for c in user["connections"]}


async def test_users_show_each_connections_health_to_their_application_only(
    client: Client, factory: Factory, settings: Settings, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    await factory.connect(key, user_id, "strava", f"s{uuid.uuid4().hex[:10]}")
    await factory.connect(key, user_id, "whoop", f"w{uuid.uuid4().hex[:10]}")
    quiet = await factory.user(key, external_id="quiet")
    # Suunto: a sync that stored, then one that failed.
    await start_sync(client, key, "suunto", user_id, "data_type=workouts&async=false")
    synced = await get(client, key, "users")
    sim_state.faults.append(Fault("suunto", "/v3/workouts", kind="status", status=403, count=-1))
    failed = await client.post(
        f"/api/v1/suunto/users/{user_id}/sync?data_type=workouts&async=false", headers={"X-API-Key": key}
    )
    assert (await failed.json())["success"] is False
    # Strava: a sync waiting for the minute's rate-limit window (as tests/test_waiting.py makes one).
    limited = settings.model_copy(
        update={"strava_rate_limits": "2/60", "rate_limit_max_wait_s": 0.2, "strava_page_concurrency": 1}
    )
    async with start_worker(limited):
        waiting_task = await start_sync(client, key, "strava", user_id)
        waiting = await task_when(client, key, waiting_task, "waiting")
    # Whoop: disconnected, so inactive with its reason.
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()

    shown = await get(client, key, "users")
    DashboardUsers.model_validate(shown)  # as the OpenAPI document describes it
    assert shown["total"] == 2
    assert [u["id"] for u in shown["data"]] == [quiet, user_id]  # newest first
    assert shown["data"][0] == {**shown["data"][0], "external_id": "quiet", "connections": []}
    health = by_provider(shown["data"][1])
    assert sorted(health) == ["strava", "suunto", "whoop"]
    suunto = health["suunto"]
    first_sync_at = by_provider(synced["data"][1])["suunto"]["last_sync_at"]
    assert (suunto["active"], suunto["last_sync_status"], suunto["last_sync_at"]) == (True, "succeeded", first_sync_at)
    assert suunto["last_error_at"] > suunto["last_sync_at"]
    assert "403" in suunto["last_error"], suunto
    assert (suunto["open_task_id"], suunto["waiting_until"]) == (None, None)
    strava = health["strava"]
    assert (strava["open_task_id"], strava["open_task_status"]) == (waiting_task, "running")
    waits = datetime.fromisoformat(strava["waiting_until"])
    assert waits == datetime.fromisoformat(waiting["progress"]["workouts"]["resumes_at"])
    assert datetime.now(UTC) < waits <= datetime.now(UTC) + timedelta(seconds=61)
    assert (strava["last_sync_at"], strava["last_error"]) == (None, None)
    whoop = health["whoop"]
    assert (whoop["active"], bool(whoop["inactive_reason"])) == (False, True)
    assert whoop["expires_at"] is not None
    assert all("token" not in name for c in health.values() for name in c if name != "provider_user_id")

    other = await factory.api_key("another-app")
    assert await get(client, other, "users") == {"total": 0, "data": []}
    assert await get(client, other, "tasks") == {"data": []}


async def test_tasks_newest_first_with_progress_and_a_status_filter(
    client: Client, factory: Factory, sim_state: SimState, db: asyncpg.Pool
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    succeeded = await start_sync(client, key, "suunto", user_id, "data_type=workouts&async=false")
    sim_state.faults.append(Fault("suunto", "/v3/workouts", kind="status", status=403, count=-1))
    failed = await start_sync(client, key, "suunto", user_id, "data_type=workouts&async=false&since=0")
    queued = await start_sync(client, key, "suunto", user_id, "data_type=247")  # no worker: stays queued

    everything = await get(client, key, "tasks")
    DashboardTasks.model_validate(everything)
    assert [t["task_id"] for t in everything["data"]] == [queued, failed, succeeded]
    done = everything["data"][2]
    assert (done["user_id"], done["provider"], done["status"]) == (user_id, "suunto", "succeeded")
    stored = await db.fetchval("SELECT count(*) FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert done["progress"]["workouts"]["records"] == {"workouts": stored}
    assert all("done" not in p for t in everything["data"] for p in t["progress"].values())  # bookkeeping
    only_failed = await get(client, key, "tasks?status=failed")
    assert [(t["task_id"], t["status"]) for t in only_failed["data"]] == [(failed, "failed")]
    assert "403" in only_failed["data"][0]["progress"]["workouts"]["error"]
    assert [t["task_id"] for t in (await get(client, key, "tasks?limit=1"))["data"]] == [queued]
    resp = await client.get("/api/v1/dashboard/tasks?status=lost", headers={"X-API-Key": key})
    assert resp.status == 422
    assert "status" in (await resp.json())["detail"]


async def test_webhook_events_received_for_the_applications_users_only(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    other_key, other_user, other_sim_user = await factory.connected_user("suunto", application="another-app")
    for who, workout in ((sim_user, "mine-1"), (other_sim_user, "theirs-1"), (sim_user, "mine-2")):
        body, headers = signed(notification(who, workout))
        resp = await client.post("/api/v1/webhooks/suunto", data=body, headers=headers)
        assert resp.status == 200, await resp.text()

    mine = await get(client, key, "webhook-events")
    DashboardWebhookEvents.model_validate(mine)
    assert [(e["user_id"], e["provider"], e["provider_user_id"]) for e in mine["data"]] == [
        (user_id, "suunto", sim_user)
    ] * 2
    ids = [e["id"] for e in mine["data"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert all(e["kind"] == "workout.workout_created" for e in mine["data"]), mine
    assert "payload" not in mine["data"][0]
    theirs = await get(client, other_key, "webhook-events")
    assert [e["user_id"] for e in theirs["data"]] == [other_user]
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 3


async def test_deliveries_of_the_applications_events_with_their_last_answer(
    client: Client, factory: Factory, settings: Settings
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    other_key, other_user, _ = await factory.connected_user("suunto", application="another-app")
    fast = settings.model_copy(update={"events_poll_s": 0.05})
    async with running_sink(Sink(secrets=[])) as sink:
        endpoint = await register(client, key, sink.url, event_types=["sync.succeeded"])
        await register(client, other_key, sink.url, event_types=["sync.succeeded"])
        await start_sync(client, key, "suunto", user_id, "data_type=workouts&async=false")
        await start_sync(client, other_key, "suunto", other_user, "data_type=workouts&async=false")
        (pending,) = (await get(client, key, "deliveries"))["data"]
        assert (pending["type"], pending["endpoint_id"], pending["url"]) == ("sync.succeeded", endpoint["id"], sink.url)
        assert (pending["status"], pending["attempts"], pending["last_attempt_at"]) == ("pending", 0, None)
        async with start_worker(fast):
            await sink.wait_for(lambda s: len(s.delivered()) == 2)
        shown = await get(client, key, "deliveries")
        theirs = await get(client, other_key, "deliveries")
    DashboardDeliveries.model_validate(shown)
    (sent,) = shown["data"]
    assert sent["event_id"] == pending["event_id"]
    assert [r.webhook_id for r in sink.receipts if r.webhook_id == sent["event_id"]] == [sent["event_id"]]
    assert (sent["status"], sent["attempts"], sent["status_code"], sent["error"]) == (
        "succeeded",
        1,
        204,
        None,
    )  # the sink answers 204
    assert sent["finished_at"] is not None
    (their_delivery,) = theirs["data"]  # each application sees its own events' deliveries only
    assert their_delivery["event_id"] != sent["event_id"]
    assert their_delivery["endpoint_id"] != endpoint["id"]


@pytest.mark.parametrize("path", ["users", "tasks", "webhook-events", "deliveries"])
async def test_the_lists_need_a_key(client: Client, path: str) -> None:
    resp = await client.get(f"/api/v1/dashboard/{path}")
    assert (resp.status, await resp.json()) == (401, {"detail": "Invalid or missing API key"})


async def test_the_page_and_its_files_come_from_the_package_with_a_strict_policy(client: Client) -> None:
    resp = await client.get("/dashboard")  # public: the page signs in itself
    assert (resp.status, resp.content_type) == (200, "text/html")
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    page = await resp.text()
    assets = sorted(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert assets == [f"/dashboard/static/{name}" for name in ("dashboard.js", "favicon.svg", "wearsync.css")]
    for asset in assets:
        got = await client.get(asset)
        assert got.status == 200, asset
        assert got.content_type in ("text/css", "text/javascript", "application/javascript", "image/svg+xml"), asset
    script = await (await client.get("/dashboard/static/dashboard.js")).text()
    assert "sessionStorage" in script
    assert "innerHTML" not in script  # data is shown with textContent only
    resp = await client.get("/dashboard/static/../dashboard.html")
    assert resp.status in (403, 404)


async def test_the_users_list_pages_and_finds_one_by_external_id(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    made = [await factory.user(key) for _ in range(5)]
    first = await get(client, key, "users?limit=2")
    second = await get(client, key, "users?limit=2&offset=2")
    rest = await get(client, key, "users?limit=2&offset=4")
    shown = [u["id"] for page in (first, second, rest) for u in page["data"]]
    assert shown == made[::-1]
    assert (first["total"], len(rest["data"])) == (5, 1)
    named = await factory.user(key, external_id="crm-42")
    found = await get(client, key, "users?external_id=crm-42")
    assert (found["total"], [u["id"] for u in found["data"]]) == (1, [named])
    assert await get(client, key, "users?external_id=crm-4") == {"total": 0, "data": []}  # exact, not a prefix
