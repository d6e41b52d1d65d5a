"""One delivery cannot flood the queue: events for users nobody connected are dropped at receipt
(counted), a delivery carrying more than its provider ever sends is refused whole, and the events
kept are queued in one round trip. Before, a Garmin delivery of 86,000 summaries for made-up
users stored and queued 86,000 events ahead of every tenant's syncs. And the webhook routes have
a rate limit, and webhook jobs have a queue (and job slots) of their own."""

import io
import json
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, start_sync, start_worker, wait_for_task
from tests.fuzzing import hook_path, signed_headers
from tests.test_strava_webhooks import emit as strava_emit
from tests.test_strava_webhooks import subscribe
from tests.test_webhooks import dropped, queue_length
from wearsync.api.app import create_app
from wearsync.providers import garmin
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
HOOK = hook_path("garmin")
FROM_GARMIN = signed_headers("garmin", b"")  # its garmin-client-id header


def epoch(user: str, n: int) -> dict[str, Any]:
    return {"userId": user, "summaryId": f"{user}-e{n}", "startTimeInSeconds": 1_790_000_000 + 900 * n,
            "durationInSeconds": 900, "activityType": "WALKING", "steps": n}  # fmt: skip


async def test_summaries_for_users_nobody_connected_are_dropped_and_counted(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    known = sorted([await factory.connect(key, await factory.user(key), "garmin", name) for name in ("k-1", "k-2")])
    before = dropped("garmin")
    # 3,000 made-up users, one summary each, around two real users' summaries.
    delivery = {"epochs": [epoch(f"stranger-{i}", i) for i in range(3000)] + [epoch(u, 1) for u in known]}
    resp = await client.post(HOOK, json=delivery, headers=FROM_GARMIN)
    assert (resp.status, await resp.json()) == (200, {"received": 3002, "new": 2})
    assert dropped("garmin") - before == 3000
    stored = await db.fetch("SELECT provider_user_id FROM webhook_events ORDER BY provider_user_id")
    assert [r["provider_user_id"] for r in stored] == known
    assert await queue_length(client) == 2


async def test_a_delivery_over_the_providers_item_cap_is_413_and_stores_nothing(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    known = await factory.connect(key, await factory.user(key), "garmin", "known-1")
    cap = garmin.PROVIDER.webhook.max_items if garmin.PROVIDER.webhook else 0
    over = {"epochs": [epoch(known, n) for n in range(cap + 1)]}
    resp = await client.post(HOOK, data=io.BytesIO(json.dumps(over).encode()), headers=FROM_GARMIN)
    assert resp.status == 413
    assert await resp.json() == {
        "detail": f"Webhook payload too large: {cap + 1} records or notifications in one delivery, at most {cap}"
    }
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    at_cap = {"epochs": [epoch(known, n) for n in range(cap)]}
    resp = await client.post(HOOK, data=io.BytesIO(json.dumps(at_cap).encode()), headers=FROM_GARMIN)
    assert (resp.status, await resp.json()) == (200, {"received": 1, "new": 1})  # one user: one event


async def test_many_events_of_one_delivery_are_all_queued(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key = await factory.api_key()
    users = [await factory.connect(key, await factory.user(key), "garmin", f"pinged-{i}") for i in range(40)]
    pings = {"dailies": [{"userId": u, "callbackURL": f"https://apis.garmin.com/x?u={u}"} for u in users]}
    resp = await client.post(HOOK, json=pings, headers=FROM_GARMIN)
    assert (resp.status, await resp.json()) == (200, {"received": 40, "new": 40})
    assert await queue_length(client) == 40
    # Delivered again: stored once, queued once.
    resp = await client.post(HOOK, json=pings, headers=FROM_GARMIN)
    assert (resp.status, await resp.json()) == (200, {"received": 40, "new": 0})
    assert await queue_length(client) == 40


async def test_deliveries_past_the_rate_limit_are_429_with_retry_after_and_store_nothing(
    aiohttp_client: Any, factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    """The limit holds across API processes (two apps on one Redis): counted in Redis, not in each."""
    key = await factory.api_key()
    known = await factory.connect(key, await factory.user(key), "garmin", "known-1")
    limited = settings.model_copy(update={"webhook_rate_limit": "3/60"})
    apis: list[Client] = [await aiohttp_client(create_app(limited)) for _ in range(2)]
    for n, api in enumerate([apis[0], apis[1], apis[0]]):
        resp = await api.post(HOOK, json={"epochs": [epoch(known, n)]}, headers=FROM_GARMIN)
        assert (resp.status, await resp.json()) == (200, {"received": 1, "new": 1})
    for api in apis:
        resp = await api.post(HOOK, json={"epochs": [epoch(known, 3)]}, headers=FROM_GARMIN)
        assert (resp.status, await resp.json()) == (429, {"detail": "Too many webhook deliveries, retry later"})
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 3
    # Each provider has a budget of its own.
    body = b'{"type": "WORKOUT_CREATED", "username": "nobody", "workoutid": "w1"}'
    resp = await apis[1].post(hook_path("suunto"), data=body, headers=signed_headers("suunto", body))
    assert resp.status == 200


async def test_a_sync_never_waits_behind_webhook_jobs(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer,
    sim_state: SimState,
) -> None:  # fmt: skip
    """One job slot for syncs, one for webhook jobs, and 30 Strava events whose activity fetches
    hang (the simulator answers after a minute): on one queue, the sync would wait behind all
    of them; on their own, it runs at once."""
    one_slot_each = settings.model_copy(update={"worker_max_jobs": 1, "webhook_worker_max_jobs": 1})
    await subscribe(client, one_slot_each)
    _, _, athlete = await factory.connected_user("strava")
    key, user_id, _ = await factory.connected_user("suunto")
    sim_state.provider("strava").latency_s = 60
    emitted = [await strava_emit(sim_server, athlete, {"kind": "create"}) for _ in range(30)]
    assert {e["delivery_status"] for e in emitted} == {200}
    async with start_worker(one_slot_each):
        task = await wait_for_task(client, key, await start_sync(client, key, "suunto", user_id, "data_type=workouts"))
        assert task["status"] == "succeeded", task
        assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'pending'") == 30
