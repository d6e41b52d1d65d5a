"""The delivery rules every webhook receiver follows, shown with Suunto's workout notifications:
verified before anything is stored, stored before the 2xx, processed once by the worker, unknown
users acknowledged and ignored, bursts all processed."""

import asyncio
import hashlib
import hmac
import io
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from prometheus_client import REGISTRY

from tests.conftest import Factory
from tests.helpers import settled
from wearsync.api.common import DEPS, QUEUE
from wearsync.deps import Deps
from wearsync.dev import SIM_WEBHOOK_SECRET
from wearsync.settings import Settings, webhook_queue_name
from wearsync.sim.common import SimState, WebhookTarget
from wearsync.worker import process_webhook, prune_history, reap_webhook_events

Client = TestClient[web.Request, web.Application]
URL = "/api/v1/webhooks/suunto"
STORED_ALREADY = "the workout is stored already: a notification of its creation does not replace it"


def signed(payload: dict[str, Any], secret: str = SIM_WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-HMAC-SHA256-Signature": signature, "Content-Type": "application/json"}


def notification(user: str, key: str, **workout: Any) -> dict[str, Any]:
    w = {"workoutKey": key, "activityId": 1, "startTime": 1_790_000_000_000, "totalTime": 1800.0} | workout
    return {"type": "WORKOUT_CREATED", "username": user, "workout": w}  # as documented: no workoutid


def dropped(provider: str) -> float:
    """Events dropped at receipt so far, as /metrics counts them."""
    return REGISTRY.get_sample_value("wearsync_webhook_events_dropped_total", {"provider": provider}) or 0.0


async def queue_length(client: Client) -> int:
    """Jobs in the test API's webhook queue."""
    length: int = await client.app[QUEUE].zcard(webhook_queue_name(client.app[DEPS].settings))
    return length


async def test_a_simulated_notification_lands_the_workout(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    _, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.webhook_targets["suunto"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)
    events_url = sim_server.make_url(f"/_sim/suunto/users/{sim_user}/events")
    async with aiohttp.ClientSession() as session, session.post(events_url, json={}) as resp:
        emitted = await resp.json()
    assert emitted["delivery_status"] == 200
    (event,) = await settled(db, 1)
    assert (event["status"], event["kind"], event["provider_user_id"]) == (
        "processed",
        "workout.workout_created",
        sim_user,
    )
    row = await db.fetchrow("SELECT * FROM workouts")
    assert row is not None
    assert (str(row["user_id"]), row["provider_record_id"]) == (user_id, emitted["workout"]["workoutKey"])
    assert row["raw"] == emitted["workout"]
    # The simulator now serves it too: a sync finds the same row, not a second one.
    served = [w["workoutKey"] for w in (await _records(sim_server, sim_user))["workouts"]]
    assert emitted["workout"]["workoutKey"] in served


async def _records(sim_server: TestServer, user: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sim_server.make_url(f"/_sim/suunto/users/{user}/records")) as resp,
    ):
        records: dict[str, Any] = await resp.json()
        return records


async def test_a_bad_or_missing_signature_is_refused_and_nothing_is_stored(client: Client, db: asyncpg.Pool) -> None:
    body, headers = signed(notification("alice", "k1"))
    for bad in ({}, {"X-HMAC-SHA256-Signature": "0" * 64}, signed(notification("alice", "k1"), "other-secret")[1]):
        resp = await client.post(URL, data=body, headers=bad)
        assert resp.status == 401
        assert (await resp.json())["detail"].startswith("Invalid webhook signature")
    tampered = body.replace(b"alice", b"mallory")
    assert (await client.post(URL, data=tampered, headers=headers)).status == 401
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_the_same_event_delivered_twice_is_processed_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    _, _, sim_user = await factory.connected_user("suunto")
    body, headers = signed(notification(sim_user, "dup-1"))
    first = await client.post(URL, data=body, headers=headers)
    second = await client.post(URL, data=body, headers=headers)
    assert (await first.json(), await second.json()) == ({"received": 1, "new": 1}, {"received": 1, "new": 0})
    (event,) = await settled(db, 1)
    assert event["attempts"] == 1
    assert await db.fetchval("SELECT count(*) FROM workouts") == 1
    # Another notification of the same workout's creation is a new event; it does not replace the
    # stored workout (Suunto notifies creations only: changes come by syncs).
    body, headers = signed(notification(sim_user, "dup-1", totalTime=2400.0))
    assert (await (await client.post(URL, data=body, headers=headers)).json())["new"] == 1
    assert (await settled(db, 2))[1]["detail"] == STORED_ALREADY
    assert await db.fetchval("SELECT duration_s FROM workouts WHERE provider_record_id = 'dup-1'") == 1800.0


async def test_a_delivery_replayed_after_its_event_was_pruned_stores_nothing(
    client: Client, factory: Factory, worker: Worker, deps: Deps, db: asyncpg.Pool
) -> None:
    """Suunto's signature has no timestamp: the notification of a workout's creation, replayed
    once its event is past retention, and once its digest is too, must not revert the workout to
    what it was when created."""
    _, user_id, sim_user = await factory.connected_user("suunto")
    older = signed(notification(sim_user, "w-replayed", totalTime=1800.0))
    assert await (await client.post(URL, data=older[0], headers=older[1])).json() == {"received": 1, "new": 1}
    await settled(db, 1)
    # The workout changes upstream, and a sync stores the change.
    changed = "UPDATE workouts SET duration_s = 2400, raw = jsonb_set(raw, '{totalTime}', '2400') WHERE user_id = $1"
    await db.execute(changed, uuid.UUID(user_id))
    await age(db, days=31)
    assert (await prune_history({"deps": deps}))["webhook_events"] == 1
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    resp = await client.post(URL, data=older[0], headers=older[1])
    assert await resp.json() == {"received": 1, "new": 0}
    assert await db.fetchval("SELECT duration_s FROM workouts WHERE provider_record_id = 'w-replayed'") == 2400.0
    # The digests go too, once past their own retention ...
    await age(db, days=deps.settings.webhook_digest_retention_days)
    assert (await prune_history({"deps": deps}))["webhook_digests"] == 1
    assert await db.fetchval("SELECT count(*) FROM webhook_digests") == 0
    # ... and the replay is taken as new, yet the stored workout stays as it is.
    resp = await client.post(URL, data=older[0], headers=older[1])
    assert await resp.json() == {"received": 1, "new": 1}
    (event,) = await settled(db, 1)
    assert (event["status"], event["detail"]) == ("processed", STORED_ALREADY)
    row = await db.fetchrow("SELECT duration_s, raw FROM workouts WHERE provider_record_id = 'w-replayed'")
    assert row is not None
    assert (row["duration_s"], row["raw"]["totalTime"]) == (2400.0, 2400)


async def age(db: asyncpg.Pool, days: int) -> None:
    """As if `days` passed since the events and their digests arrived."""
    for table in ("webhook_events", "webhook_digests"):
        await db.execute(f"UPDATE {table} SET received_at = received_at - make_interval(days => $1)", days)


async def test_events_for_unknown_users_or_inactive_connections_are_acknowledged_and_dropped_at_receipt(
    client: Client, factory: Factory, db: asyncpg.Pool
) -> None:
    """Nobody to do them for: neither stored nor queued, only counted."""
    key, user_id, sim_user = await factory.connected_user("suunto")
    await client.delete(f"/api/v1/users/{user_id}/connections/suunto", headers={"X-API-Key": key})
    before = dropped("suunto")
    for user in ("nobody-we-know", sim_user):
        body, headers = signed(notification(user, f"w-{user}"))
        resp = await client.post(URL, data=body, headers=headers)
        assert (resp.status, await resp.json()) == (200, {"received": 1, "new": 0})
    assert dropped("suunto") - before == 2
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await queue_length(client) == 0


async def test_an_event_whose_connection_went_inactive_after_receipt_is_ignored(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    body, headers = signed(notification(sim_user, "w-late"))
    assert await (await client.post(URL, data=body, headers=headers)).json() == {"received": 1, "new": 1}
    await client.delete(f"/api/v1/users/{user_id}/connections/suunto", headers={"X-API-Key": key})
    event_id = await db.fetchval("SELECT id FROM webhook_events")
    assert await process_webhook({"deps": deps, "job_try": 1}, event_id) == "ignored"
    event = await db.fetchrow("SELECT * FROM webhook_events")
    assert event is not None
    assert (event["status"], event["attempts"]) == ("ignored", 1)
    assert event["detail"] == f"no active suunto connection for provider user {sim_user}"
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


async def test_unreadable_or_oversized_deliveries_are_refused(client: Client, db: asyncpg.Pool) -> None:
    body = b'{"username": "alice"'
    signature = hmac.new(SIM_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    resp = await client.post(URL, data=body, headers={"X-HMAC-SHA256-Signature": signature})
    assert resp.status == 400
    assert (await resp.json())["detail"].startswith("Unreadable webhook payload")
    huge = b"x" * (1024 * 1024 + 1)
    assert (await client.post(URL, data=io.BytesIO(huge))).status == 413
    resp = await client.post("/api/v1/webhooks/nowhere", data=b"{}")
    assert (resp.status, (await resp.json())["detail"]) == (404, "No webhook for provider 'nowhere'")
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_burst_of_200_deliveries_is_all_processed(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    _, _, sim_user = await factory.connected_user("suunto")
    deliveries = [signed(notification(sim_user, f"burst-{i}", startTime=1_790_000_000_000 + i)) for i in range(200)]
    statuses = await asyncio.gather(*(client.post(URL, data=b, headers=h) for b, h in deliveries))
    assert [r.status for r in statuses] == [200] * 200
    events = await settled(db, 200)
    assert {e["status"] for e in events} == {"processed"}
    assert await db.fetchval("SELECT count(*) FROM workouts") == 200


async def test_an_event_whose_job_was_lost_is_enqueued_again_by_the_reaper(
    factory: Factory, worker: Worker, deps: Deps, db: asyncpg.Pool, settings: Settings
) -> None:
    """Stored but never processed (Redis lost the job): the worker's periodic sweep finds it."""
    _, _, sim_user = await factory.connected_user("suunto")
    payload = notification(sim_user, "lost-1")
    await db.execute(
        "INSERT INTO webhook_events (provider, kind, provider_user_id, dedupe_key, payload, received_at)"
        " VALUES ('suunto', 'workout.workout_created', $1, 'lost-1', $2, now() - interval '10 minutes')",
        sim_user,
        payload,
    )
    await db.execute(
        "INSERT INTO webhook_events (provider, kind, provider_user_id, dedupe_key, payload)"
        " VALUES ('suunto', 'workout.workout_created', $1, 'fresh-1', $2)",
        sim_user,
        notification(sim_user, "fresh-1"),
    )
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    try:
        assert await reap_webhook_events({"deps": deps, "redis": redis}) == 1  # the fresh one may still be in flight
        assert await reap_webhook_events({"deps": deps, "redis": redis}) == 0
    finally:
        await redis.aclose()
    events = await settled(db, 1)
    assert [(e["dedupe_key"], e["status"]) for e in events] == [("lost-1", "processed"), ("fresh-1", "pending")]
    assert await db.fetchval("SELECT provider_record_id FROM workouts") == "lost-1"
