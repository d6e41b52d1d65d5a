"""Strava webhooks end to end: the simulator's push subscription validates our callback over a real
socket, its events reach the API, the worker fetches what they announce from the simulator and the
rows are compared with what the simulator serves, field by field.

Plus the validation GET on its own and the parsing of event bodies."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records, start_worker
from tests.fuzzing import hook_path
from tests.helpers import settled
from tests.test_strava import SPORTS, refresh_grant
from wearsync.dev import SIM_VERIFY_TOKEN
from wearsync.providers import strava
from wearsync.providers.errors import MalformedPayload
from wearsync.settings import Settings
from wearsync.sim.common import SimState, WebhookTarget
from wearsync.sim.strava import FIRST_SUBSCRIPTION_ID

Client = TestClient[web.Request, web.Application]
URL = hook_path("strava")
SUBSCRIPTIONS = "/api/v3/push_subscriptions"


async def emit(sim_server: TestServer, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Make something happen at the simulated Strava; what it says it sent."""
    url = sim_server.make_url(f"/_sim/strava/users/{user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        emitted: dict[str, Any] = await resp.json()
        return emitted


async def subscriptions(settings: Settings, method: str, path: str = SUBSCRIPTIONS, **fields: str) -> tuple[int, Any]:
    """A call to the simulated Strava's push subscription API with our app's credentials."""
    config = strava.PROVIDER.settings(settings)
    auth = {"client_id": config.client_id, "client_secret": config.client_secret}
    form = auth | fields
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{config.api_url}{path}",
            data=form if method == "POST" else None,
            params=None if method == "POST" else form,
        ) as resp,
    ):
        return resp.status, (await resp.json() if resp.status != 204 else None)


async def subscribe(client: Client, settings: Settings) -> int:
    """Subscribe as an operator would, with our callback URL and verify token."""
    status, body = await subscriptions(
        settings, "POST", callback_url=str(client.make_url(URL)), verify_token=SIM_VERIFY_TOKEN
    )
    assert status == 201, body
    subscription_id: int = body["id"]
    return subscription_id


async def served_detail(factory: Factory, settings: Settings, sim_user: str, activity_id: int) -> dict[str, Any]:
    """The activity's detail as the simulator serves it, asked with a token of the athlete."""
    tokens = await factory.sim_tokens("strava", sim_user)
    url = f"{settings.providers['strava'].api_url}/api/v3/activities/{activity_id}"
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200
        detail: dict[str, Any] = await resp.json()
        return detail


def assert_row_is(row: asyncpg.Record, user_id: str, detail: dict[str, Any]) -> None:
    """A stored row against the activity detail it came from, computed here independently."""
    start = datetime.strptime(detail["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (str(row["user_id"]), row["provider"], row["provider_record_id"]) == (user_id, "strava", str(detail["id"]))
    assert row["raw"] == detail
    assert (row["sport"], row["provider_sport"]) == (SPORTS.get(detail["sport_type"], "other"), detail["sport_type"])
    assert row["name"] == detail["name"]
    assert (row["start_time"], row["end_time"]) == (start, start + timedelta(seconds=detail["elapsed_time"]))
    assert row["duration_s"] == detail["elapsed_time"]
    assert row["utc_offset_minutes"] * 60 == detail["utc_offset"]
    assert (row["distance_m"], row["ascent_m"]) == (detail["distance"], detail["total_elevation_gain"])
    assert (row["avg_speed_mps"], row["max_speed_mps"]) == (detail["average_speed"], detail["max_speed"])
    assert (row["avg_hr"], row["max_hr"]) == (detail.get("average_heartrate"), detail.get("max_heartrate"))
    # The detail's calorie estimate where it has one (a manual entry may say 0), else the work done.
    expected_kcal = detail["calories"] or detail.get("kilojoules")
    assert row["energy_kcal"] == expected_kcal
    assert (row["avg_power_w"], row["max_power_w"]) == (detail.get("average_watts"), detail.get("max_watts"))
    assert (row["max_altitude_m"], row["min_altitude_m"]) == (detail.get("elev_high"), detail.get("elev_low"))
    assert row["avg_cadence"] == detail.get("average_cadence")
    assert row["device_name"] == detail.get("device_name")


def event(owner_id: int, object_id: int, aspect: str = "create", **fields: Any) -> dict[str, Any]:
    return {"object_type": "activity", "object_id": object_id, "aspect_type": aspect, "owner_id": owner_id,
            "subscription_id": FIRST_SUBSCRIPTION_ID, "event_time": 1_790_000_000, "updates": {}} | fields  # fmt: skip


# ---- subscription validation ------------------------------------------------------------------


async def test_the_validation_get_echoes_the_challenge_only_for_our_verify_token(
    client: Client, settings: Settings
) -> None:
    assert strava.PROVIDER.settings(settings).verify_token == SIM_VERIFY_TOKEN
    ok = {"hub.mode": "subscribe", "hub.verify_token": SIM_VERIFY_TOKEN, "hub.challenge": "15f7d1a91c1f40"}
    resp = await client.get(URL, params=ok)
    assert (resp.status, await resp.json()) == (200, {"hub.challenge": "15f7d1a91c1f40"})
    for params, status in (
        (ok | {"hub.verify_token": "not-ours"}, 403),
        ({k: v for k, v in ok.items() if k != "hub.verify_token"}, 403),
        ({k: v for k, v in ok.items() if k != "hub.challenge"}, 400),
        (ok | {"hub.mode": "unsubscribe"}, 400),
        ({}, 400),
    ):
        resp = await client.get(URL, params=params)
        assert resp.status == status, params
        assert "hub.challenge" not in await resp.json()


async def test_a_subscription_validates_our_callback_then_is_listed_unique_and_deleted(
    client: Client, settings: Settings, sim_state: SimState
) -> None:
    callback = str(client.make_url(URL))
    refused = {"message": "Bad Request", "errors": [{"resource": "PushSubscription", "field": "callback url",
                                                     "code": "GET to callback URL does not return 200"}]}  # fmt: skip
    # Our API answers the wrong verify token 403, a callback that does not echo 200 without it.
    for url, token in ((callback, "not-ours"), (str(client.make_url("/health")), SIM_VERIFY_TOKEN)):
        assert await subscriptions(settings, "POST", callback_url=url, verify_token=token) == (400, refused)
    assert "strava" not in sim_state.webhook_targets
    status, body = await subscriptions(
        settings, "POST", callback_url=callback, verify_token=SIM_VERIFY_TOKEN, client_secret="wrong"
    )
    assert (status, body["message"]) == (401, "Authorization Error")

    subscription_id = await subscribe(client, settings)
    target = sim_state.webhook_targets["strava"]
    assert (target.url, target.verify_token) == (callback, SIM_VERIFY_TOKEN)
    challenges = [r for r in sim_state.requests if r["path"] == SUBSCRIPTIONS and r["method"] == "POST"]
    assert [r["status"] for r in challenges] == [400, 400, 401, 201]
    status, listed = await subscriptions(settings, "GET")
    assert status == 200
    assert [(s["id"], s["callback_url"], s["resource_state"]) for s in listed] == [(subscription_id, callback, 2)]
    # One subscription per app, as Strava allows.
    status, body = await subscriptions(settings, "POST", callback_url=callback, verify_token=SIM_VERIFY_TOKEN)
    assert (status, body["errors"][0]["code"]) == (400, "already exists")

    assert (await subscriptions(settings, "DELETE", f"{SUBSCRIPTIONS}/{subscription_id + 1}"))[0] == 404
    assert await subscriptions(settings, "DELETE", f"{SUBSCRIPTIONS}/{subscription_id}") == (204, None)
    assert await subscriptions(settings, "GET") == (200, [])
    assert "strava" not in sim_state.webhook_targets
    assert await subscribe(client, settings) > subscription_id  # and a new one can be made


async def test_a_callback_slower_than_two_seconds_is_not_accepted(
    aiohttp_server: Any, settings: Settings, sim_state: SimState
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2.5)
        return web.json_response({"hub.challenge": request.query["hub.challenge"]})

    app = web.Application()
    app.router.add_get("/hook", slow)
    server = await aiohttp_server(app)
    status, _ = await subscriptions(
        settings, "POST", callback_url=str(server.make_url("/hook")), verify_token=SIM_VERIFY_TOKEN
    )
    assert status == 400
    assert "strava" not in sim_state.webhook_targets


# ---- events, end to end -----------------------------------------------------------------------


async def test_a_created_activity_is_fetched_and_stored_as_its_detail_serves_it(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings, sim_server: TestServer
) -> None:
    subscription_id = await subscribe(client, settings)
    _, user_id, sim_user = await factory.connected_user("strava")
    athlete_id = (await sim_records(sim_server, "strava", sim_user))["athlete"]["id"]
    emitted = await emit(sim_server, sim_user, {"kind": "create"})
    activity_id = emitted["activity"]["id"]
    assert emitted["delivery_status"] == 200
    assert emitted["event"] == {"object_type": "activity", "object_id": activity_id, "aspect_type": "create",
                                "owner_id": athlete_id, "subscription_id": subscription_id, "updates": {},
                                "event_time": emitted["event"]["event_time"]}  # fmt: skip
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"], stored["provider_user_id"]) == (
        "processed",
        "activity.create",
        str(athlete_id),
    )
    (row,) = await db.fetch("SELECT * FROM workouts")
    assert_row_is(row, user_id, await served_detail(factory, settings, sim_user, activity_id))
    # The list serves it too (newest), so a sync finds the same activity.
    served = (await sim_records(sim_server, "strava", sim_user))["activities"]
    assert (len(served), served[-1]["id"]) == (451, activity_id)


async def test_an_update_changes_the_stored_name_and_sport(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings, sim_server: TestServer
) -> None:
    await subscribe(client, settings)
    _, user_id, sim_user = await factory.connected_user("strava")
    activity = (await sim_records(sim_server, "strava", sim_user))["activities"][-10]
    changes = {"name": f"Renamed {activity['id']}", "sport_type": "MountainBikeRide"}
    emitted = await emit(sim_server, sim_user, {"kind": "update", "id": activity["id"], "changes": changes})
    assert emitted["delivery_status"] == 200
    assert emitted["event"]["updates"] == {"title": changes["name"], "type": "MountainBikeRide"}
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"]) == ("processed", "activity.update")
    (row,) = await db.fetch("SELECT * FROM workouts")
    detail = await served_detail(factory, settings, sim_user, activity["id"])
    assert (detail["name"], detail["sport_type"], detail["type"]) == (changes["name"], "MountainBikeRide", "Ride")
    assert_row_is(row, user_id, detail)
    assert (row["name"], row["sport"]) == (changes["name"], "mountain_biking")
    served = {a["id"]: a for a in (await sim_records(sim_server, "strava", sim_user))["activities"]}
    assert served[activity["id"]]["name"] == changes["name"]  # the list serves the change too
    # Renamed again: a new event, and the row follows.
    await emit(sim_server, sim_user, {"kind": "update", "id": activity["id"], "changes": {"name": "Third name"}})
    await settled(db, 2)
    assert await db.fetchval("SELECT name FROM workouts") == "Third name"


async def test_a_deleted_activity_is_removed(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    # A target set by hand (not through the subscription API) counts as the app's subscription.
    sim_state.webhook_targets["strava"] = WebhookTarget(str(client.make_url(URL)), verify_token=SIM_VERIFY_TOKEN)
    _, user_id, sim_user = await factory.connected_user("strava")
    _, other_user_id, other_sim_user = await factory.connected_user("strava")
    first = await emit(sim_server, sim_user, {"kind": "create"})
    assert first["event"]["subscription_id"] == FIRST_SUBSCRIPTION_ID
    created = first["activity"]
    other = (await emit(sim_server, other_sim_user, {"kind": "create"}))["activity"]
    await settled(db, 2)
    assert await db.fetchval("SELECT count(*) FROM workouts") == 2
    emitted = await emit(sim_server, sim_user, {"kind": "delete", "id": created["id"]})
    assert (emitted["delivery_status"], emitted["activity"]) == (200, None)  # the detail is gone
    assert emitted["event"]["aspect_type"] == "delete"
    events = await settled(db, 3)
    assert (events[-1]["status"], events[-1]["kind"]) == ("processed", "activity.delete")
    rows = await db.fetch("SELECT user_id, provider_record_id FROM workouts")
    assert [(str(r["user_id"]), r["provider_record_id"]) for r in rows] == [(other_user_id, str(other["id"]))]
    served = (await sim_records(sim_server, "strava", sim_user))["activities"]
    assert created["id"] not in {a["id"] for a in served}
    assert len(served) == 450
    assert user_id != other_user_id


async def test_a_deauthorization_deactivates_the_connection_and_upstream_refuses_its_tokens(
    client: Client,
    factory: Factory,
    worker: Worker,
    db: asyncpg.Pool,
    settings: Settings,
    sim_server: TestServer,
    sim_state: SimState,
) -> None:
    await subscribe(client, settings)
    key, user_id, sim_user = await factory.connected_user("strava")
    connection = await db.fetchrow("SELECT * FROM provider_connections")
    assert connection is not None
    emitted = await emit(sim_server, sim_user, {"kind": "deauthorize"})
    assert emitted["delivery_status"] == 200
    assert (emitted["event"]["object_type"], emitted["event"]["object_id"]) == (
        "athlete",
        int(connection["provider_user_id"]),
    )
    assert emitted["event"]["updates"] == {"authorized": "false"}
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"]) == ("processed", "athlete.update")
    row = await db.fetchrow("SELECT active, inactive_reason FROM provider_connections")
    assert row is not None
    assert (row["active"], row["inactive_reason"]) == (False, "deauthorized by the athlete at Strava")
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync", headers={"X-API-Key": key})
    assert resp.status == 404
    # Strava refuses the revoked tokens from now on.
    api = strava.PROVIDER.settings(settings).api_url
    headers = {"Authorization": f"Bearer {connection['access_token']}"}
    async with aiohttp.ClientSession() as session, session.get(f"{api}/api/v3/athlete", headers=headers) as answer:
        assert answer.status == 401
    assert (await refresh_grant(settings, connection["refresh_token"]))[0] == 400
    # And sends no more events about this athlete.
    assert (await emit(sim_server, sim_user, {"kind": "create"}))["delivery_status"] is None
    assert len(sim_state.deliveries) == 1


# ---- delivery rules -----------------------------------------------------------------------------


async def test_the_same_event_delivered_twice_is_processed_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    _, _, sim_user = await factory.connected_user("strava")
    served = await sim_records(sim_server, "strava", sim_user)
    activity_id = served["activities"][-1]["id"]
    body = json.dumps(event(served["athlete"]["id"], activity_id)).encode()
    first, second = await client.post(URL, data=body), await client.post(URL, data=body)
    assert (await first.json(), await second.json()) == ({"received": 1, "new": 1}, {"received": 1, "new": 0})
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["attempts"]) == ("processed", 1)
    assert await db.fetchval("SELECT count(*) FROM workouts") == 1
    detail_path = f"/api/v3/activities/{activity_id}"
    assert [r["status"] for r in sim_state.requests if r["path"] == detail_path] == [200]  # fetched once
    # The same activity renamed later is another event.
    later = event(served["athlete"]["id"], activity_id, "update", event_time=1_790_000_100, updates={"title": "x"})
    assert (await (await client.post(URL, json=later)).json())["new"] == 1
    await settled(db, 2)
    assert len([r for r in sim_state.requests if r["path"] == detail_path]) == 2


async def test_unknown_owners_and_unreadable_activities_are_acknowledged_without_rows(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    _, _, sim_user = await factory.connected_user("strava")
    athlete_id = (await sim_records(sim_server, "strava", sim_user))["athlete"]["id"]
    for body, new in ((event(1, 123456), 0), (event(athlete_id, 1), 1)):  # nobody we know; an activity Strava 404s
        resp = await client.post(URL, json=body)
        assert (resp.status, await resp.json()) == (200, {"received": 1, "new": new})
    (gone,) = await settled(db, 1)
    assert (gone["status"], gone["detail"], gone["provider_user_id"]) == ("processed", None, str(athlete_id))
    assert [r["status"] for r in sim_state.requests if r["path"].startswith("/api/v3/activities/")] == [404]
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


async def test_unreadable_events_are_refused_and_nothing_is_stored(client: Client, db: asyncpg.Pool) -> None:
    for body in (b'{"object_type": "activity"', b"[]", json.dumps(event(1, 2) | {"owner_id": None}).encode()):
        resp = await client.post(URL, data=body)
        assert resp.status == 400, body
        assert (await resp.json())["detail"].startswith("Unreadable webhook payload")
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_burst_of_200_created_activities_is_all_stored(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, sim_server: TestServer, sim_state: SimState
) -> None:
    # 200 detail calls: more than Strava's 100 per 15 minutes, which is not what this is about.
    sim_state.provider("strava").rate_limits = [(1000, 900), (10000, 86400)]
    sim_state.provider("strava").read_rate_limits = [(1000, 900), (10000, 86400)]
    settings = settings.replace(strava_rate_limits="1000/900")
    await subscribe(client, settings)
    _, user_id, sim_user = await factory.connected_user("strava")
    emitted = await asyncio.gather(*(emit(sim_server, sim_user, {"kind": "create"}) for _ in range(200)))
    assert [e["delivery_status"] for e in emitted] == [200] * 200
    async with start_worker(settings):
        events = await settled(db, 200)
    assert {e["status"] for e in events} == {"processed"}
    served = (await sim_records(sim_server, "strava", sim_user))["activities"]
    created = {a["id"] for a in served[450:]}
    assert created == {e["activity"]["id"] for e in emitted}
    rows = await db.fetch("SELECT provider_record_id, raw FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    assert len(rows) == 200
    details = {e["activity"]["id"]: e["activity"] for e in emitted}
    assert {int(r["provider_record_id"]): r["raw"] for r in rows} == details  # as the detail served them


# ---- parsing ----------------------------------------------------------------------------------------


def test_one_event_per_delivery_keyed_by_what_happened_when() -> None:
    body = event(134815, 1360128428, "update", updates={"title": "Messy"})
    (parsed,) = strava.parse_webhook(body)
    assert (parsed.kind, parsed.provider_user_id, parsed.payload) == ("activity.update", "134815", body)
    assert strava.parse_webhook(json.loads(json.dumps(body)))[0].dedupe_key == parsed.dedupe_key
    others = [body | {"updates": {"title": "Tidy"}}, body | {"event_time": 1_790_000_001},
              body | {"aspect_type": "create"}, body | {"object_id": 1360128429}]  # fmt: skip
    assert len({parsed.dedupe_key, *(strava.parse_webhook(b)[0].dedupe_key for b in others)}) == 5
    deauth = {"object_type": "athlete", "object_id": 134815, "aspect_type": "update", "owner_id": 134815,
              "subscription_id": 120475, "event_time": 1516126040, "updates": {"authorized": "false"}}  # fmt: skip
    assert strava.parse_webhook(deauth)[0].kind == "athlete.update"


@pytest.mark.parametrize(
    "payload",
    [[], "event", {}, event(1, 2) | {"owner_id": None}, event(1, 2) | {"object_id": True},
     event(1, 2) | {"aspect_type": ""}, event(1, 2) | {"object_type": 3}, event(1, 2) | {"updates": ["title"]}],
)  # fmt: skip
def test_unreadable_events_are_malformed(payload: Any) -> None:
    with pytest.raises(MalformedPayload):
        strava.parse_webhook(payload)
