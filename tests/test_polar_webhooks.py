"""Polar webhooks end to end: the simulator records an exercise and notifies our receiver over a
socket, the worker fetches the announced exercise from the simulator and writes PostgreSQL; rows
are compared with what the simulator then serves, field by field. Plus PING and SleepWise events
(left alone), the signature rules, the refusal of URLs that are not our Polar API's, and unit tests
of verify/parse. The 24/7 events: tests/test_polar_247.py."""

import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records
from tests.helpers import settled
from tests.test_polar import SPORTS, as_served, seconds, utc_start
from wearsync.dev import SIM_WEBHOOK_SECRET
from wearsync.providers import polar
from wearsync.providers.errors import MalformedPayload, ProviderError, WebhookRejected
from wearsync.settings import Settings
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]
URL = "/api/v1/webhooks/polar"
NO_FLAGS = {"samples": "false", "zones": "false", "route": "false"}


def signed(payload: dict[str, Any], secret: str = SIM_WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {"Polar-Webhook-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def exercise_event(user_id: int, entity_id: str, url: str, timestamp: str = "2026-05-15T14:22:24Z") -> dict[str, Any]:
    return {"event": "EXERCISE", "user_id": user_id, "entity_id": entity_id, "timestamp": timestamp, "url": url}


async def emit(sim_server: TestServer, user: str, body: dict[str, Any]) -> dict[str, Any]:
    url = sim_server.make_url(f"/_sim/polar/users/{user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        emitted: dict[str, Any] = await resp.json()
        return emitted


async def registered_user(factory: Factory, sim_state: SimState) -> tuple[str, str, int]:
    """(user id, simulated user, Polar user id) of a connected user the app has registered with
    Polar (AccessLink notifies only about those)."""
    _, user_id, sim_user = await factory.connected_user("polar")
    sim_state.registered[("polar", sim_user)] = f"member-{sim_user}"
    polar_id = int(await factory.db.fetchval("SELECT provider_user_id FROM provider_connections"))
    sim_state.requests.clear()
    return user_id, sim_user, polar_id


def polar_calls(sim_state: SimState) -> list[tuple[str, str, dict[str, str]]]:
    return [(r["method"], r["path"], r["query"]) for r in sim_state.requests if r["provider"] == "polar"]


def assert_exercise(row: asyncpg.Record, e: dict[str, Any]) -> None:
    """A row as a sync without flags stores the exercise."""
    start, hr = utc_start(e), e.get("heart_rate") or {}
    assert row["raw"] == as_served(e, set())
    assert (row["sport"], row["provider_sport"]) == (SPORTS.get(e["detailed_sport_info"], "other"),
                                                     e["detailed_sport_info"])  # fmt: skip
    assert (row["start_time"], row["duration_s"]) == (start, seconds(e["duration"]))
    assert row["end_time"] == start + timedelta(seconds=seconds(e["duration"]))
    assert row["utc_offset_minutes"] == e["start_time_utc_offset"]
    assert (row["energy_kcal"], row["distance_m"]) == (e["calories"], e.get("distance"))
    assert (row["avg_hr"], row["max_hr"], row["device_name"]) == (hr.get("average"), hr.get("maximum"), e["device"])


@pytest.fixture
def target(client: Client, sim_state: SimState) -> None:
    sim_state.webhook_targets["polar"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)


@pytest.mark.usefixtures("target")
async def test_an_exercise_announced_by_webhook_lands_like_synced_ones(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("polar")
    resp = await client.post(
        f"/api/v1/polar/users/{user_id}/sync?async=false&data_type=workouts", headers={"X-API-Key": key}
    )
    assert (await resp.json())["success"] is True  # registers the user with Polar, stores 40
    sim_state.requests.clear()

    emitted = await emit(sim_server, sim_user, {"kind": "exercise"})
    new_id = emitted["exercise"]["id"]
    assert emitted["delivery_status"] == 200
    api = polar.PROVIDER.settings(factory.settings).api_url
    assert emitted["event"] == {"event": "EXERCISE", "user_id": emitted["event"]["user_id"], "entity_id": new_id,
                                "timestamp": emitted["event"]["timestamp"],
                                "url": f"{api}/v3/exercises/{new_id}"}  # fmt: skip
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"], stored["provider_user_id"]) == (
        "processed", "EXERCISE", str(emitted["event"]["user_id"]),
    )  # fmt: skip
    assert polar_calls(sim_state) == [("GET", f"/v3/exercises/{new_id}", NO_FLAGS)]

    served = (await sim_records(sim_server, "polar", sim_user))["exercises"]
    assert len(served) == 41
    assert served[-1]["id"] == new_id
    rows = {r["provider_record_id"]: r for r in await db.fetch("SELECT * FROM workouts WHERE user_id = $1",
                                                               uuid.UUID(user_id))}  # fmt: skip
    assert set(rows) == {e["id"] for e in served}
    for e in served:
        assert_exercise(rows[e["id"]], e)
    assert await db.fetchval("SELECT count(*) FROM samples") == 0


@pytest.mark.usefixtures("target")
async def test_a_ping_stores_nothing_and_a_sleepwise_event_is_acknowledged_and_left_alone(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    _, sim_user, polar_id = await registered_user(factory, sim_state)
    ping = await emit(sim_server, sim_user, {"kind": "ping"})
    assert (ping["delivery_status"], set(ping["event"])) == (200, {"event", "timestamp"})
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    body, headers = signed({"event": "PING", "timestamp": "2026-05-15T14:22:24Z"})
    for sent in (headers, {}, {"Polar-Webhook-Signature": "0" * 64}):  # the secret may not be known yet
        resp = await client.post(URL, data=body, headers=sent)
        assert (resp.status, await resp.json()) == (200, {"received": 0, "new": 0})

    alertness = {"event": "SLEEP_WISE_ALERTNESS", "user_id": polar_id, "from": "2022-09-30", "to": "2022-10-02",
                 "timestamp": "2022-10-02T14:22:24Z",
                 "url": "https://www.polaraccesslink.com/v3/users/sleepwise/alertness/date"}  # fmt: skip
    body, headers = signed(alertness)
    assert (await client.post(URL, data=body, headers=headers)).status == 200
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"], stored["provider_user_id"]) == (
        "processed", "SLEEP_WISE_ALERTNESS", str(polar_id),
    )  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0
    assert polar_calls(sim_state) == []


async def test_bad_or_missing_signatures_are_refused_and_nothing_is_stored(client: Client, db: asyncpg.Pool) -> None:
    payload = exercise_event(475, "aQlC83", "https://www.polaraccesslink.com/v3/exercises/aQlC83")
    body, headers = signed(payload)
    for bad in (
        {},
        {"Polar-Webhook-Signature": "0" * 64},
        {"Polar-Webhook-Signature": ""},
        signed(payload, "other")[1],
    ):
        resp = await client.post(URL, data=body, headers=bad)
        assert resp.status == 401, bad
        assert (await resp.json())["detail"].startswith("Invalid webhook signature")
    assert (await client.post(URL, data=body.replace(b"475", b"476"), headers=headers)).status == 401
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    upper = {"Polar-Webhook-Signature": headers["Polar-Webhook-Signature"].upper()}  # hex is hex
    resp = await client.post(URL, data=body, headers=upper)
    assert await resp.json() == {"received": 1, "new": 0}  # taken (and, for a user we do not know, dropped)


async def test_the_same_event_delivered_twice_is_processed_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    user_id, sim_user, polar_id = await registered_user(factory, sim_state)
    exercise = (await sim_records(sim_server, "polar", sim_user))["exercises"][5]
    url = f"{polar.PROVIDER.settings(factory.settings).api_url}/v3/exercises/{exercise['id']}"
    body, headers = signed(exercise_event(polar_id, exercise["id"], url))
    first = await client.post(URL, data=body, headers=headers)
    second = await client.post(URL, data=body, headers=headers)
    assert (await first.json(), await second.json()) == ({"received": 1, "new": 1}, {"received": 1, "new": 0})
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["attempts"]) == ("processed", 1)
    assert polar_calls(sim_state) == [("GET", f"/v3/exercises/{exercise['id']}", NO_FLAGS)]
    (row,) = await db.fetch("SELECT * FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert_exercise(row, exercise)


async def test_an_exercise_url_that_is_not_our_polar_api_is_refused_without_a_request(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    _, sim_user, polar_id = await registered_user(factory, sim_state)
    exercise_id = (await sim_records(sim_server, "polar", sim_user))["exercises"][0]["id"]
    api = polar.PROVIDER.settings(factory.settings).api_url  # http://127.0.0.1:<port>/polar/api
    exercise = f"/v3/exercises/{exercise_id}"
    urls = [
        api.replace("127.0.0.1", "localhost") + exercise,  # the same simulator under another host name
        api.replace("http://", "https://") + exercise,
        api.replace("/polar/api", "/strava/api") + exercise,
        f"{api}{exercise}/../../users",
        f"{api}{exercise}?samples=true",
        f"{api}/v3/exercises/OTHER1",  # not the entity announced
        "http://169.254.169.254/latest/meta-data",
    ]
    for i, url in enumerate(urls):
        body, headers = signed(exercise_event(polar_id, exercise_id, url, timestamp=f"2026-05-15T14:22:{i:02d}Z"))
        assert (await client.post(URL, data=body, headers=headers)).status == 200
    events = await settled(db, len(urls))
    assert [e["status"] for e in events] == ["failed"] * len(urls)
    for event, url in zip(events, urls, strict=True):
        assert event["detail"] == f"refused to fetch {url!r}: not exercise {exercise_id!r} on {api}"
    assert sim_state.requests == []  # no simulated provider was called
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


async def test_an_exercise_polar_no_longer_has_is_processed_with_nothing_stored(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    _, _, polar_id = await registered_user(factory, sim_state)
    url = f"{polar.PROVIDER.settings(factory.settings).api_url}/v3/exercises/GONE42"  # deleted, or past its 30 days
    body, headers = signed(exercise_event(polar_id, "GONE42", url))
    assert (await client.post(URL, data=body, headers=headers)).status == 200
    (event,) = await settled(db, 1)
    assert event["status"] == "processed"
    assert event["detail"] == "exercise GONE42 is no longer at Polar (404): nothing stored"
    assert polar_calls(sim_state) == [("GET", "/v3/exercises/GONE42", NO_FLAGS)]
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


# ---- unit tests ---------------------------------------------------------------------------------


def test_verify_takes_the_hex_hmac_of_the_body_and_refuses_the_rest() -> None:
    settings = Settings(polar_webhook_secret="s3cret")
    config = polar.PROVIDER.settings(settings)
    body = json.dumps(exercise_event(475, "aQlC83", "https://www.polaraccesslink.com/v3/exercises/aQlC83")).encode()
    good = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    polar.verify_webhook({"Polar-Webhook-Signature": good}, body, config, settings)
    for headers, s, reason in [
        ({"Polar-Webhook-Signature": good}, Settings(), "WEARSYNC_POLAR_WEBHOOK_SECRET is not set"),
        ({}, settings, "bad or missing"),
        ({"Polar-Webhook-Signature": good[:-1] + "é"}, settings, "bad or missing"),
        ({"Polar-Webhook-Signature": hmac.new(b"s3cret", body + b" ", hashlib.sha256).hexdigest()}, settings, "bad"),
    ]:
        with pytest.raises(WebhookRejected, match=reason):
            polar.verify_webhook(headers, body, polar.PROVIDER.settings(s), s)


def test_a_ping_passes_unsigned_as_polar_sends_it_before_we_can_know_the_secret() -> None:
    body = b'{"event": "PING", "timestamp": "2018-05-15T14:22:24Z"}'  # the spec's webhookPing example
    for settings in (Settings(), Settings(polar_webhook_secret="s3cret")):
        for headers in ({}, {"Polar-Webhook-Signature": "0" * 64}):
            polar.verify_webhook(headers, body, polar.PROVIDER.settings(settings), settings)
    settings = Settings(polar_webhook_secret="s3cret")
    for not_a_ping in (b'{"event": "EXERCISE"}', b'{"event": "ping"}', b'["PING"]', b"PING", b"\xff"):
        with pytest.raises(WebhookRejected, match="bad or missing"):
            polar.verify_webhook({}, not_a_ping, polar.PROVIDER.settings(settings), settings)


def test_parse_makes_one_event_per_delivery_and_none_for_a_ping() -> None:
    assert polar.parse_webhook({"event": "PING", "timestamp": "2018-05-15T14:22:24Z"}) == []
    payload = exercise_event(475, "aQlC83", "https://www.polaraccesslink.com/v3/exercises/aQlC83")
    (e,) = polar.parse_webhook(payload)
    assert (e.kind, e.provider_user_id, e.dedupe_key, e.payload) == (
        "EXERCISE", "475", "EXERCISE:475:aQlC83:2026-05-15T14:22:24Z", payload,
    )  # fmt: skip
    (sleep,) = polar.parse_webhook({"event": "SLEEP", "user_id": 475, "date": "2026-05-14",
                                  "timestamp": "2026-05-15T06:00:00Z"})  # fmt: skip
    assert (sleep.kind, sleep.dedupe_key) == ("SLEEP", "SLEEP:475:2026-05-14:2026-05-15T06:00:00Z")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "event name"),
        ({"user_id": 475}, "event name"),
        ({"event": "EXERCISE", "entity_id": "a", "url": "u"}, "numeric user_id"),
        ({"event": "EXERCISE", "user_id": True, "entity_id": "a", "url": "u"}, "numeric user_id"),
        ({"event": "EXERCISE", "user_id": "abc", "entity_id": "a", "url": "u"}, "numeric user_id"),
        ({"event": "EXERCISE", "user_id": 475, "url": "u"}, "entity_id and url"),
        ({"event": "EXERCISE", "user_id": 475, "entity_id": "a"}, "entity_id and url"),
    ],
)
def test_parse_refuses_unreadable_events(payload: Any, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        polar.parse_webhook(payload)


def test_only_the_configured_api_exercise_url_is_fetched() -> None:
    config = polar.PROVIDER.settings(Settings())  # https://www.polaraccesslink.com
    url = "https://www.polaraccesslink.com/v3/exercises/aQlC83"
    assert polar.exercise_url(config, "aQlC83", url) == url
    assert polar.exercise_url(config, "aQlC83", "HTTPS://WWW.polaraccesslink.com/v3/exercises/aQlC83") == url
    for bad, entity in [
        ("https://www.polaraccesslink.com.evil.test/v3/exercises/aQlC83", "aQlC83"),
        ("https://user@www.polaraccesslink.com/v3/exercises/aQlC83", "aQlC83"),
        ("https://www.polaraccesslink.com:8443/v3/exercises/aQlC83", "aQlC83"),
        ("https://www.polaraccesslink.com/v3/exercises/aQlC83#x", "aQlC83"),
        ("https://www.polaraccesslink.com/v3/exercises/../users/1", "../users/1"),
        ("https://www.polaraccesslink.com/v3/exercises/", ""),
        ("/v3/exercises/aQlC83", "aQlC83"),
    ]:
        with pytest.raises(ProviderError, match="refused to fetch"):
            polar.exercise_url(config, entity, bad)
