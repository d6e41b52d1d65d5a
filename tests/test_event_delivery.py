"""Events reach the endpoints: signed per Standard Webhooks (verified here with standardwebhooks),
at least once whatever the receiver does, the same id and body on every attempt, none lost; with
exact counts of what the receiver got per event."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_worker
from tests.helpers import wait_until
from tests.sink import FAULTS, Sink, body_of, running_sink
from wearsync.db.events import EVENT_TYPES
from wearsync.db.records import upsert_records
from wearsync.records import Workout
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]
T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Retries within moments, an answer waited for half a second."""
    return settings.model_copy(
        update={"events_retry_first_s": 0.05, "events_retry_longest_s": 0.2, "events_timeout_s": 0.5,
                "events_poll_s": 0.05}
    )  # fmt: skip


async def register(client: Client, key: str, url: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/webhook-endpoints", json={"url": url, **body}, headers={"X-API-Key": key})
    assert resp.status == 201, await resp.text()
    endpoint: dict[str, Any] = await resp.json()
    return endpoint


async def write_workouts(db: asyncpg.Pool, user_id: str, names: list[str]) -> None:
    """One page of workouts: one data.created event naming them."""
    rows = [Workout(n, "running", None, T0, T0 + timedelta(hours=1), {"id": n}) for n in names]
    async with db.acquire() as conn:
        await upsert_records(conn, uuid.UUID(user_id), "suunto", rows)


async def event_ids(db: asyncpg.Pool, types: tuple[str, ...] = ("data.created",)) -> list[str]:
    return [r["public_id"] for r in await db.fetch("SELECT public_id FROM events WHERE type = ANY($1) ORDER BY id",
                                                    list(types))]  # fmt: skip


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink(Sink(secrets=[])) as running:
        yield running


async def test_events_arrive_signed_in_order_once_each(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    endpoint = await register(client, key, sink.url, event_types=["data.created", "sync.succeeded"])
    assert endpoint["secret"].startswith("whsec_")
    sink.secrets.append(endpoint["secret"])
    for i in range(20):
        await write_workouts(db, user_id, [f"w{i}a", f"w{i}b"])
    expected = await event_ids(db)
    async with start_worker(fast):
        await sink.wait_for(lambda s: s.delivered() >= set(expected))
    assert [r.webhook_id for r in sink.receipts] == expected  # one user's events in order
    assert all(r.verified for r in sink.receipts)
    assert sink.counts() == dict.fromkeys(expected, 1)
    first = body_of(sink.receipts[0])
    assert set(first) == {"type", "timestamp", "data"}
    assert first["type"] == "data.created"
    assert first["data"]["user_id"] == user_id
    assert [r["provider_record_id"] for r in first["data"]["records"]] == ["w0a", "w0b"]
    # The connection.created of before the endpoint, and types it does not take, are not sent.
    assert await db.fetchval("SELECT count(*) FROM event_deliveries") == len(expected)


async def test_every_fault_of_the_receiver_is_retried_until_delivered_exactly(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    """4xx, 5xx, a redirect (never followed), no answer in time, a closed connection: each event
    arrives once per fault planned for it, then once more, delivered; all with its one id and body."""
    plans = [(), *((f,) for f in FAULTS), FAULTS, ("close", "500", "hang")]
    sink.plan = lambda n: plans[n % len(plans)]
    sink.hang_s = 2.0  # past the sender's 0.5 s
    users = [await factory.connected_user("suunto") for _ in range(3)]
    endpoint = await register(client, users[0][0], sink.url, event_types=["data.created"])
    sink.secrets.append(endpoint["secret"])
    for i in range(10):
        for _, user_id, _ in users:
            if user_id == users[0][1]:
                await write_workouts(db, user_id, [f"w{i}"])
    expected = await event_ids(db)
    assert len(expected) == 10
    async with start_worker(fast):
        await sink.wait_for(lambda s: s.delivered() >= set(expected))
    assert sink.strays == 0  # no redirect followed
    assert all(r.verified for r in sink.receipts)
    assert sink.counts() == {webhook_id: len(plans[sink.order[webhook_id] % len(plans)]) + 1 for webhook_id in expected}
    assert all(len(sink.bodies(webhook_id)) == 1 for webhook_id in expected)
    # Every attempt is recorded, and shown with the event.
    attempts = await db.fetchval("SELECT count(*) FROM delivery_attempts")
    assert attempts == len(sink.receipts)
    plan = {w: plans[sink.order[w] % len(plans)] for w in expected}
    shown = next(w for w in expected if plan[w] == FAULTS)
    resp = await client.get(f"/api/v1/events/{shown}/deliveries", headers={"X-API-Key": users[0][0]})
    assert resp.status == 200, await resp.text()
    (delivery,) = (await resp.json())["deliveries"]
    assert delivery["status"] == "succeeded"
    tried = [(a["status_code"], a["response"], a["error"] is not None) for a in delivery["attempts"]]
    assert tried == [(500, "sink broke", False), (404, "no such hook", False), (302, tried[2][1], False),
                     (None, None, True), (None, None, True), (204, "", False)]  # fmt: skip
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])


async def test_an_endpoint_failing_throughout_is_disabled_and_that_is_told(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    brief = fast.model_copy(update={"events_retry_for_s": 1.0})
    key, user_id, _ = await factory.connected_user("suunto")
    dead = await register(client, key, sink.url.replace("/hook", "/gone"), event_types=["data.created"])
    watcher = await register(client, key, sink.url, event_types=["endpoint.disabled"])
    sink.secrets.append(watcher["secret"])
    await write_workouts(db, user_id, ["w1"])
    async with start_worker(brief):
        await sink.wait_for(lambda s: len(s.delivered()) == 1)
    (told,) = sink.receipts
    body = body_of(told)
    assert body["type"] == "endpoint.disabled"
    assert body["data"]["endpoint_id"] == dead["id"]
    resp = await client.get(f"/api/v1/webhook-endpoints/{dead['id']}", headers={"X-API-Key": key})
    shown = await resp.json()
    assert (shown["enabled"], shown["disabled_reason"]) == (
        False,
        "every delivery failed for as long as it was retried",
    )
    status = await db.fetchval("SELECT status FROM event_deliveries WHERE endpoint_id = $1", uuid.UUID(dead["id"]))
    assert status == "failed"
    assert await db.fetchval("SELECT count(*) FROM delivery_attempts WHERE endpoint_id = $1", uuid.UUID(dead["id"])) > 1


async def test_a_rotated_secret_and_the_old_one_both_sign_during_the_overlap(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    endpoint = await register(client, key, sink.url, event_types=["data.created"])
    resp = await client.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    assert rotated["secret"] != endpoint["secret"]
    await write_workouts(db, user_id, ["w1"])
    async with start_worker(fast):
        await sink.wait_for(lambda s: len(s.delivered()) == 1)
    (receipt,) = sink.receipts
    assert len(receipt.headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated["secret"]):  # a receiver knowing either verifies it
        assert Sink(secrets=[secret]).verified(receipt.body, receipt.headers)
    assert not Sink(secrets=["whsec_" + "A" * 43 + "="]).verified(receipt.body, receipt.headers)


async def test_test_events_and_replays(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    headers = {"X-API-Key": key}
    endpoint = await register(client, key, sink.url, event_types=["data.created"])
    sink.secrets.append(endpoint["secret"])
    await write_workouts(db, user_id, ["w1"])
    await write_workouts(db, user_id, ["w2"])
    first, second = await event_ids(db)
    resp = await client.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test", headers=headers)
    assert resp.status == 202, await resp.text()
    test_id = (await resp.json())["event_id"]
    async with start_worker(fast):
        await sink.wait_for(lambda s: s.delivered() == {first, second, test_id})
        url = f"/api/v1/webhook-endpoints/{endpoint['id']}/replay"
        resp = await client.post(url, json={"event_id": first}, headers=headers)
        assert (resp.status, await resp.json()) == (202, {"replayed": 1})
        await sink.wait_for(lambda s: s.counts()[first] == 2)
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        resp = await client.post(url, json={"since": since}, headers=headers)
        assert (resp.status, await resp.json()) == (202, {"replayed": 2})  # the test event is not in a range
        await sink.wait_for(lambda s: s.counts()[second] == 2 and s.counts()[first] == 3)
    assert sink.counts() == {first: 3, second: 2, test_id: 1}
    assert len(sink.bodies(first)) == 1  # a replay is the same event
    test_body = body_of(next(r for r in sink.receipts if r.webhook_id == test_id))
    assert test_body["type"] == "endpoint.test"
    assert test_body["data"]["endpoint_id"] == endpoint["id"]
    resp = await client.post(url, json={"event_id": "evt_" + "0" * 32}, headers=headers)
    assert resp.status == 404
    for bad in ({}, {"event_id": first, "since": since}, {"until": since}, {"event_id": "x"}):
        resp = await client.post(url, json=bad, headers=headers)
        assert resp.status == 422, (bad, await resp.text())


async def test_a_dead_endpoint_does_not_hold_up_another_applications(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    """An endpoint that does not answer takes at most its share of a worker's slots: another
    application's events all arrive while its requests hang."""
    narrow = fast.model_copy(update={"events_max_in_flight": 8, "events_max_in_flight_per_endpoint": 2,
                                     "events_timeout_s": 60.0})  # fmt: skip
    async with running_sink(Sink(secrets=[], plan=lambda n: ("500",) * 100)) as dead:
        dead.hold = asyncio.Event()  # no answer until the test is done
        slow = await register(client, await factory.api_key("slow"), dead.url, event_types=["data.created"])
        for _ in range(5):
            _, slow_user, _ = await factory.connected_user("suunto", application="slow")
            for i in range(4):
                await write_workouts(db, slow_user, [f"s{i}"])
        key, user_id, _ = await factory.connected_user("suunto", application="quick")
        endpoint = await register(client, key, sink.url, event_types=["data.created"])
        sink.secrets.append(endpoint["secret"])
        async with start_worker(narrow):
            await dead.wait_for(lambda s: len(s.receipts) >= 1)
            for i in range(20):
                await write_workouts(db, user_id, [f"q{i}"])
            await sink.wait_for(lambda s: len(s.delivered()) == 20)
            # Still hanging, and no more of its deliveries taken than its share.
            claimed = "SELECT count(*) FROM event_deliveries WHERE endpoint_id = $1 AND claims > 0"
            assert await db.fetchval(claimed, uuid.UUID(slow["id"])) == 2
            assert 1 <= len(dead.receipts) <= 2
            assert dead.delivered() == set()
            dead.hold.set()


async def test_an_endpoint_deleted_mid_delivery_leaves_the_worker_delivering(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, sink: Sink
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    headers = {"X-API-Key": key}
    sink.hold = asyncio.Event()
    doomed = await register(client, key, sink.url, event_types=["data.created"])
    await write_workouts(db, user_id, ["w1"])
    async with start_worker(fast):
        await sink.wait_for(lambda s: len(s.receipts) == 1)  # held unanswered
        resp = await client.delete(f"/api/v1/webhook-endpoints/{doomed['id']}", headers=headers)
        assert resp.status == 204
        sink.hold.set()  # its answer comes for a delivery no longer there
        endpoint = await register(client, key, sink.url, event_types=["data.created"])
        sink.secrets.append(endpoint["secret"])
        await write_workouts(db, user_id, ["w2"])
        await sink.wait_for(lambda s: len(s.delivered()) == 2)
        last = (await event_ids(db))[-1]

        async def recorded() -> bool:  # the worker still records what it sends
            resp = await client.get(f"/api/v1/events/{last}/deliveries", headers=headers)
            (delivery,) = (await resp.json())["deliveries"]
            return bool(delivery["endpoint_id"] == endpoint["id"] and delivery["status"] == "succeeded")

        await wait_until(recorded, "the new endpoint's delivery recorded")
    # The deleted endpoint's delivery went with it, its late answer recorded nowhere.
    assert await db.fetchval("SELECT count(*) FROM delivery_attempts") == 1


async def test_the_openapi_document_has_every_event_types_body(client: Client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert set(doc["webhooks"]) == set(EVENT_TYPES)
    body = doc["webhooks"]["data.created"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    assert set(doc["components"]["schemas"][name]["properties"]) == {"type", "timestamp", "data"}
    headers = {p["name"] for p in doc["webhooks"]["sync.failed"]["post"]["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
