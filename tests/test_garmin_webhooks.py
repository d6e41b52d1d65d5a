"""Garmin's data arriving by webhook, end to end: a sync asks for backfills, the simulator
delivers each window a day at a time (push, or ping whose callback the worker fetches) to our
webhook over a socket, the worker stores the summaries and counts them on the task's windows.
Rows are compared with the simulator's records field by field (helpers of test_garmin.py).
Plus deregistrations, permission changes, and unit tests of verify/parse."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker
from yarl import URL

from tests.conftest import Factory, refreshes, sim_records, start_sync, wait_for_task
from tests.fuzzing import hook_path, signed_headers
from tests.helpers import wait_until
from tests.test_garmin import (
    DAY,
    assert_awaiting,
    assert_stored,
    snapshot,
    wait_for_requests,
    wait_for_task_state,
    wait_out,
)
from wearsync import backfills
from wearsync.db import garmin_backfills, keys, tasks
from wearsync.providers import garmin
from wearsync.providers.errors import MalformedPayload, WebhookRejected
from wearsync.settings import Settings
from wearsync.sim import garmin as garmin_sim
from wearsync.sim.common import SimState, WebhookTarget, fixture

Client = TestClient[web.Request, web.Application]
HOOK = hook_path("garmin")
FROM_GARMIN = signed_headers("garmin", b"")  # its garmin-client-id header
TYPES = ("activities", "dailies", "epochs", "sleeps", "hrv")


@pytest.fixture(autouse=True)
async def no_delivery_left_behind(sim_server: TestServer) -> AsyncIterator[None]:
    """Backfill deliveries run in the simulator's background: none may outlive its test."""
    yield
    async with asyncio.timeout(60):
        await garmin_sim.deliveries_sent(sim_server.app)


async def connect(
    factory: Factory, settings: Settings, sim_state: SimState, history: dict[str, int] | None = None
) -> tuple[str, str, str, str]:
    """(key, user id, simulated user, Garmin userId) of a user connected as a client would: with
    the userId Garmin's `GET /wellness-api/rest/user/id` answers, which webhooks name users by."""
    sim_user = f"g{uuid.uuid4().hex[:10]}"
    if history:
        sim_state.provider("garmin").user_history[sim_user] = history
    key = await factory.api_key()
    user_id = await factory.user(key)
    tokens = await factory.sim_tokens("garmin", sim_user)
    bearer = {"Authorization": f"Bearer {tokens.access_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{garmin.PROVIDER.settings(settings).api_url}/wellness-api/rest/user/id", headers=bearer) as resp,
    ):
        garmin_id: str = (await resp.json())["userId"]
    body = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
            "expires_at": "2099-01-01T00:00:00Z", "provider_user_id": garmin_id, "scopes": tokens.scopes}  # fmt: skip
    resp = await factory.client.put(
        f"/api/v1/users/{user_id}/connections/garmin", json=body, headers={"X-API-Key": key}
    )
    assert resp.status == 200, await resp.text()
    return key, user_id, sim_user, garmin_id


def set_target(sim_state: SimState, client: Client) -> None:
    sim_state.webhook_targets["garmin"] = WebhookTarget(str(client.make_url(HOOK)))


async def settled(sim_server: TestServer, db: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every webhook event, once the simulator has sent all it meant to and none is pending."""
    await asyncio.wait_for(garmin_sim.deliveries_sent(sim_server.app), 60)

    async def none_pending() -> bool:
        return not await db.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'pending'")

    await wait_until(none_pending, "no webhook event pending")
    return await db.fetch("SELECT * FROM webhook_events ORDER BY id")


async def emit(sim_server: TestServer, sim_user: str, body: dict[str, Any]) -> dict[str, Any]:
    url = sim_server.make_url(f"/_sim/garmin/users/{sim_user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


def in_window(served: dict[str, Any], start: int, end: int) -> dict[str, list[dict[str, Any]]]:
    """The simulated summaries of each type that start in [start, end): what a backfill brings."""
    return {t: [s for s in served[t] if start <= s["startTimeInSeconds"] < end] for t in TYPES}


def days_with_data(summaries: list[dict[str, Any]], start: int, end: int) -> int:
    """How many deliveries a window makes: one per day (from its start) holding summaries."""
    return len({(s["startTimeInSeconds"] - start) // DAY for s in summaries if start <= s["startTimeInSeconds"] < end})


async def assert_backfill_delivered(
    client: Client, key: str, task_id: str, expected: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The task endpoint counts on each window exactly the summaries delivered into it."""
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    backfill: dict[str, Any] = (await resp.json())["backfill"]
    delivered = {w["type"]: w["delivered_records"] for w in backfill["windows"]}
    assert delivered == {t: len(expected[t]) for t in TYPES}
    assert all(w["last_delivery_at"] is not None for w in backfill["windows"])
    assert (backfill["requested"], backfill["delivered"]) == (5, 5)
    return backfill


# ---- a 30-day sync, delivered by push and by ping -------------------------------------------


async def test_a_30_day_sync_is_delivered_by_push(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, garmin_id = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    task_id = await start_sync(client, key, "garmin", user_id)
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    events = await settled(sim_server, db)

    (start, end), *others = {(w["start"], w["end"]) for w in task["backfill"]["windows"]}
    assert (others, end - start) == ([], 30 * DAY)
    served = await sim_records(sim_server, "garmin", sim_user)
    expected = in_window(served, start, end)
    assert 25 <= len(expected["dailies"]) < len(served["dailies"])  # the history reaches further back
    assert 0 < len(expected["activities"]) < len(served["activities"])
    await assert_stored(db, uuid.UUID(user_id), expected, served["offset_seconds"] // 60)

    deliveries = sum(days_with_data(served[t], start, end) for t in TYPES)
    assert Counter(status for provider, _, status in sim_state.deliveries if provider == "garmin") == {200: deliveries}
    assert Counter(e["kind"] for e in events) == {f"{t}.push": days_with_data(served[t], start, end) for t in TYPES}
    assert {(e["status"], e["provider_user_id"]) for e in events} == {("processed", garmin_id)}
    await assert_backfill_delivered(client, key, task_id, expected)
    assert served["reuploads"] == {}  # pushed: nothing to pull

    # Asked again, Garmin sends what it sent before, dropped as duplicates: what we hold counts.
    again = await wait_for_task(client, key, await start_sync(client, key, "garmin", user_id))
    assert (again["status"], again["backfill"]["delivered"]) == ("succeeded", 0), again
    await settled(sim_server, db)


async def test_a_30_day_sync_is_delivered_by_ping(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    # About 140 callbacks: more than Garmin's evaluation limit of 100 calls a minute allows at once.
    # The client and the worker hold these settings: changed in place.
    settings.providers["garmin"] = settings.replace(garmin_rate_limits="1000/60").providers["garmin"]
    sim_state.provider("garmin").rate_limits = [(1000, 60)]
    key, user_id, sim_user, garmin_id = await connect(factory, settings, sim_state)
    assert await emit(sim_server, sim_user, {"kind": "delivery_mode", "mode": "ping"}) == {"mode": "ping"}
    set_target(sim_state, client)
    task_id = await start_sync(client, key, "garmin", user_id)
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    events = await settled(sim_server, db)

    (start, end), *_ = {(w["start"], w["end"]) for w in task["backfill"]["windows"]}
    served = await sim_records(sim_server, "garmin", sim_user)
    expected = in_window(served, start, end)
    await assert_stored(db, uuid.UUID(user_id), expected, served["offset_seconds"] // 60)

    pings = {t: days_with_data(served[t], start, end) for t in TYPES}
    assert Counter(e["kind"] for e in events) == {f"{t}.ping": n for t, n in pings.items()}
    assert {(e["status"], e["provider_user_id"]) for e in events} == {("processed", garmin_id)}
    callbacks = [e["payload"]["callbackURL"] for e in events]
    assert all(url.startswith(f"{garmin.PROVIDER.settings(settings).api_url}/wellness-api/rest/") for url in callbacks)
    pulls = [r for r in sim_state.requests if r["path"] in {f"/wellness-api/rest/{t}" for t in TYPES}]
    assert Counter((r["path"].rsplit("/", 1)[1], r["status"]) for r in pulls) == {(t, 200): n for t, n in pings.items()}
    await assert_backfill_delivered(client, key, task_id, expected)


@pytest.mark.parametrize("as_iso", [True, False], ids=["iso-dates", "timestamps"])
async def test_a_range_is_delivered_whether_given_as_iso_dates_or_timestamps(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState, as_iso: bool,
) -> None:  # fmt: skip
    key, user_id, sim_user, _ = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    start, end = int(sim_state.anchor.timestamp()) - 10 * DAY, int(sim_state.anchor.timestamp()) - 3 * DAY
    if as_iso:
        iso = [datetime.fromtimestamp(t, UTC).date().isoformat() for t in (start, end)]
        query = f"summary_start_time={iso[0]}&summary_end_time={iso[1]}"
    else:
        query = f"summary_start_time={start}&summary_end_time={end}"
    task_id = await start_sync(client, key, "garmin", user_id, query)
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    assert task["params"] == {"summary_start_time": start, "summary_end_time": end}
    assert sorted((w["type"], w["start"], w["end"]) for w in task["backfill"]["windows"]) == [
        (t, start, end) for t in sorted(TYPES)
    ]
    await settled(sim_server, db)

    served = await sim_records(sim_server, "garmin", sim_user)
    expected = in_window(served, start, end)
    assert len(expected["dailies"]) == 7
    await assert_stored(db, uuid.UUID(user_id), expected, served["offset_seconds"] // 60)
    await assert_backfill_delivered(client, key, task_id, expected)


async def test_a_sync_waits_for_its_deliveries_and_ends_partial_naming_what_never_came(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    # 60 days of history, two 30-day windows per type: Garmin delivers the recent one and
    # withholds the older, which lies before its reach (30 days before the user first connected).
    key, user_id, sim_user, _ = await connect(factory, settings, sim_state, {"workouts": 40, "days_247": 60})
    set_target(sim_state, client)
    end = int(sim_state.anchor.timestamp())
    older, recent = end - 60 * DAY, end - 30 * DAY
    assert garmin_sim.history_reach(sim_state) == recent
    task_id = await start_sync(client, key, "garmin", user_id, f"summary_start_time={older}&summary_end_time={end}")
    assert_awaiting(await wait_for_requests(client, key, task_id))
    await settled(sim_server, db)

    served = await sim_records(sim_server, "garmin", sim_user)
    assert all(any(s["startTimeInSeconds"] < recent for s in served[t]) for t in TYPES)  # it has older data
    task = await wait_for_task_state(client, key, task_id)
    assert_awaiting(task)  # still waiting, for the 5 older windows
    assert (task["backfill"]["requested"], task["backfill"]["delivered"], task["backfill"]["awaiting"]) == (10, 5, 5)
    assert sorted((w["type"], w["start"], w["delivered_records"]) for w in task["backfill"]["windows"]) == sorted(
        [(t, older, 0) for t in TYPES] + [(t, recent, len(in_window(served, recent, end)[t])) for t in TYPES]
    )
    await assert_stored(db, uuid.UUID(user_id), in_window(served, recent, end), served["offset_seconds"] // 60)

    await wait_out(db, settings, task_id)
    task = await wait_for_task(client, key, task_id)
    assert (task["status"], task["result"]) == ("partial", {"workouts": False, "data_247": False})
    first_day = datetime.fromtimestamp(older, UTC).strftime("%Y-%m-%dT%H:%MZ")
    for t in TYPES:
        assert f"{t} {first_day}.." in task["error"]
    assert task["progress"]["data_247"]["error"].startswith("Garmin delivered nothing within 86400 s into dailies ")
    assert (task["backfill"]["awaiting"], task["backfill"]["deliveries_due_at"]) == (0, None)


async def test_a_sync_succeeds_once_every_window_had_a_delivery(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, _ = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    await emit(sim_server, sim_user, {"kind": "on_hold", "on": True})  # the portal's On Hold: deliveries wait
    task_id = await start_sync(client, key, "garmin", user_id, "data_type=workouts")
    assert_awaiting(await wait_for_requests(client, key, task_id))
    assert (
        await backfills.settle_tasks(db, garmin.PROVIDER, garmin.PROVIDER.settings(settings)) == 0
    )  # not due: nothing ends it yet
    assert (await wait_for_task_state(client, key, task_id))["backfill"]["awaiting"] == 1
    await emit(sim_server, sim_user, {"kind": "on_hold", "on": False})
    task = await wait_for_task(client, key, task_id)
    assert (task["status"], task["result"], task["error"]) == ("succeeded", {"workouts": True}, None)
    assert task["progress"]["workouts"]["status"] == "succeeded"


# ---- delivery rules -------------------------------------------------------------------------


async def test_a_duplicate_delivery_stores_nothing_new(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, garmin_id = await connect(factory, settings, sim_state)
    end = int(sim_state.anchor.timestamp())
    query = f"data_type=247&summary_start_time={end - 5 * DAY}&summary_end_time={end}"  # no target: nothing sent
    task_id = await start_sync(client, key, "garmin", user_id, query)
    assert_awaiting(await wait_for_requests(client, key, task_id))
    served = await sim_records(sim_server, "garmin", sim_user)
    day = in_window(served, end - 2 * DAY, end - DAY)
    push = {"dailies": day["dailies"], "epochs": day["epochs"]}

    first = await client.post(HOOK, json=push, headers=FROM_GARMIN)
    assert await first.json() == {"received": 2, "new": 2}
    await settled(sim_server, db)
    stored = await snapshot(db)
    assert stored["daily_activity"][0] == 1
    again = await client.post(HOOK, json=push, headers=FROM_GARMIN)
    assert await again.json() == {"received": 2, "new": 0}
    await settled(sim_server, db)
    assert await snapshot(db) == stored
    await assert_stored(db, uuid.UUID(user_id), day | {"activities": [], "sleeps": [], "hrv": []},
                        served["offset_seconds"] // 60)  # fmt: skip
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
    counted = {w["type"]: w["delivered_records"] for w in (await resp.json())["backfill"]["windows"]}
    assert counted == {"dailies": 1, "epochs": len(day["epochs"]), "sleeps": 0, "hrv": 0}  # counted once
    events = await db.fetch("SELECT kind, status, attempts, provider_user_id FROM webhook_events ORDER BY kind")
    assert [tuple(e) for e in events] == [("dailies.push", "processed", 1, garmin_id),
                                          ("epochs.push", "processed", 1, garmin_id)]  # fmt: skip


@pytest.mark.parametrize(
    "callback",
    [
        "https://evil.example/wellness-api/rest/dailies?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=86400",
        "http://localhost:{port}{path}/wellness-api/rest/dailies?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=1",
        "{origin}/strava/api/wellness-api/rest/dailies?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=1",
        "{api}/wellness-api/rest/sleeps?uploadStartTimeInSeconds=0&uploadEndTimeInSeconds=1",  # not a dailies URL
    ],
)
async def test_a_ping_whose_callback_points_elsewhere_is_refused(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState, callback: str,
) -> None:  # fmt: skip
    _, _, _, garmin_id = await connect(factory, settings, sim_state)
    api = URL(garmin.PROVIDER.settings(settings).api_url)
    url = callback.format(api=api, origin=api.origin(), path=api.path, port=api.port)
    sim_state.requests.clear()
    resp = await client.post(HOOK, json={"dailies": [{"userId": garmin_id, "callbackURL": url}]}, headers=FROM_GARMIN)
    assert await resp.json() == {"received": 1, "new": 1}
    (event,) = await settled(sim_server, db)
    assert (event["kind"], event["status"]) == ("dailies.ping", "failed")
    assert event["detail"].startswith(f"refusing Garmin callback URL {url}")
    assert sim_state.requests == []  # nothing fetched: the token went nowhere
    assert await db.fetchval("SELECT count(*) FROM daily_activity") == 0


async def test_a_ping_for_a_user_we_do_not_know_is_acknowledged_and_dropped(
    client: Client, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    sim_state.requests.clear()
    ping = {"userId": "nobody", "callbackURL": "https://evil.example/wellness-api/rest/dailies"}
    resp = await client.post(HOOK, json={"dailies": [ping]}, headers=FROM_GARMIN)
    assert await resp.json() == {"received": 1, "new": 0}
    assert await settled(sim_server, db) == []
    assert sim_state.requests == []


async def test_unreadable_deliveries_are_refused_and_unstored_types_dropped(client: Client, db: asyncpg.Pool) -> None:
    for body in (b"[]", b'{"dailies": {"userId": "u"}}', b'{"dailies": [{"summaryId": "s"}]}', b"not json"):
        resp = await client.post(HOOK, data=body, headers=FROM_GARMIN)
        assert resp.status == 400, body
        assert (await resp.json())["detail"].startswith("Unreadable webhook payload")
    resp = await client.post(HOOK, json={"stressDetails": [{"userId": "u", "summaryId": "s"}]}, headers=FROM_GARMIN)
    assert (resp.status, await resp.json()) == (200, {"received": 0, "new": 0})
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


# ---- deregistration and permission changes --------------------------------------------------


async def connection(client: Client, key: str, user_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers={"X-API-Key": key})
    (garmin_connection,) = await resp.json()
    assert isinstance(garmin_connection, dict)
    return garmin_connection


async def test_a_deregistration_deactivates_the_connection(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, garmin_id = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    sent = await emit(sim_server, sim_user, {"kind": "deregistration"})
    assert set(sent["notification"]) == set(fixture("garmin", "deregistrations"))  # the documented shape
    (documented,) = fixture("garmin", "deregistrations")["deregistrations"]
    assert set(sent["notification"]["deregistrations"][0]) == set(documented)
    assert sent["delivery_status"] == 200
    assert [d["userId"] for d in sent["notification"]["deregistrations"]] == [garmin_id]
    (event,) = await settled(sim_server, db)
    assert (event["kind"], event["status"]) == ("deregistration", "processed")
    found = await connection(client, key, user_id)
    assert (found["active"], found["inactive_reason"]) == (False, "deregistered by the user at Garmin")
    resp = await client.post(f"/api/v1/garmin/users/{user_id}/sync", headers={"X-API-Key": key})
    assert resp.status == 404
    # Delivered again: acknowledged, and dropped, as the connection is no longer active.
    await emit(sim_server, sim_user, {"kind": "deregistration"})
    assert [e["status"] for e in await settled(sim_server, db)] == ["processed"]


async def test_permission_changes_update_the_scopes_and_none_left_deactivates(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, _ = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    await emit(sim_server, sim_user, {"kind": "permissions", "permissions": ["ACTIVITY_EXPORT", "HEALTH_EXPORT"]})
    await settled(sim_server, db)  # one at a time: the worker may run events side by side
    await emit(sim_server, sim_user, {"kind": "permissions", "permissions": ["ACTIVITY_EXPORT"]})
    assert [e["status"] for e in await settled(sim_server, db)] == ["processed", "processed"]
    found = await connection(client, key, user_id)
    assert (found["active"], found["scopes"]) == (True, ["ACTIVITY_EXPORT"])
    await emit(sim_server, sim_user, {"kind": "permissions", "permissions": []})
    await settled(sim_server, db)
    found = await connection(client, key, user_id)
    assert (found["active"], found["inactive_reason"]) == (False, "the user withdrew every permission at Garmin")


async def test_without_historical_permission_a_sync_says_so_and_later_pushes_still_land(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_server: TestServer, sim_state: SimState,
) -> None:  # fmt: skip
    key, user_id, sim_user, garmin_id = await connect(factory, settings, sim_state)
    set_target(sim_state, client)
    sent = await emit(
        sim_server, sim_user, {"kind": "permissions", "permissions": ["ACTIVITY_EXPORT", "HEALTH_EXPORT"]}
    )
    (documented,) = fixture("garmin", "user_permissions_change")["userPermissionsChange"]
    assert set(sent["notification"]["userPermissionsChange"][0]) == set(documented)  # the documented shape
    await settled(sim_server, db)
    task = await wait_for_task(client, key, await start_sync(client, key, "garmin", user_id))

    assert (task["status"], task["result"]) == ("failed", {"workouts": False, "data_247": False})
    for data_type in ("workouts", "data_247"):
        assert task["progress"][data_type]["error"].startswith(
            "the user gave no permission for historical data at Garmin (HISTORICAL_DATA_EXPORT)"
        )
    assert (await sim_records(sim_server, "garmin", sim_user))["backfills"] == []
    assert refreshes(sim_state, "garmin") == 0  # not taken for a refused token
    found = await connection(client, key, user_id)
    assert (found["active"], found["scopes"]) == (True, ["ACTIVITY_EXPORT", "HEALTH_EXPORT"])

    pushed = {"userId": garmin_id, "summaryId": "a-after", "activityType": "RUNNING",
              "startTimeInSeconds": 1_790_000_000, "durationInSeconds": 1800}  # fmt: skip
    resp = await client.post(HOOK, json={"activities": [pushed]}, headers=FROM_GARMIN)
    assert await resp.json() == {"received": 1, "new": 1}
    assert [e["status"] for e in await settled(sim_server, db)][-1] == "processed"
    assert await db.fetchval("SELECT provider_record_id FROM workouts WHERE user_id = $1", uuid.UUID(user_id)) == (
        "a-after"
    )


# ---- bookkeeping ----------------------------------------------------------------------------


async def test_a_backfill_recorded_twice_keeps_its_first_record(factory: Factory, db: asyncpg.Pool) -> None:
    key, user, _ = await factory.connected_user("garmin")  # tasks exist only for connected users
    user_id = uuid.UUID(user)
    app_id = await keys.application_for_key(db, key)
    assert app_id is not None
    task_id = uuid.uuid4()
    assert await tasks.create_task(db, task_id=task_id, app_id=app_id, user_id=user_id, provider="garmin",
                                     mode="async", data_types=["workouts"], params={}) == (task_id, True)  # fmt: skip
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)
    for status in ("accepted", "duplicate"):  # a rerun asking again is told 409
        await garmin_backfills.insert_garmin_backfill(db, task_id, user_id, "activities", start, end, status)
    inside, outside = datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)
    assert (
        await garmin_backfills.mark_garmin_backfills_delivered(db, user_id, "activities", [inside, inside, outside])
        == 1
    )
    assert await garmin_backfills.mark_garmin_backfills_delivered(db, user_id, "dailies", [inside]) == 0
    summary = await garmin_backfills.garmin_backfill_summary(db, task_id)
    assert (summary["requested"], summary["delivered"]) == (1, 1)
    (window,) = summary["windows"]
    assert (window["type"], window["start"], window["end"], window["status"], window["delivered_records"]) == (
        "activities", int(start.timestamp()), int(end.timestamp()), "accepted", 2,
    )  # fmt: skip


# ---- verify and parse -----------------------------------------------------------------------


def test_only_a_delivery_naming_our_client_id_is_taken(settings: Settings) -> None:
    config = garmin.PROVIDER.settings(settings)
    garmin.verify_webhook({"garmin-client-id": config.client_id}, b"anything", config, settings)  # raises nothing
    for headers, reason in (
        ({}, "no garmin-client-id header"),
        ({"garmin-client-id": config.client_id + "x"}, "the garmin-client-id header is not our client id"),
        ({"garmin-client-id": "é"}, "the garmin-client-id header is not our client id"),
    ):
        with pytest.raises(WebhookRejected, match=reason):
            garmin.verify_webhook(headers, b"anything", config, settings)
    unset = config.model_copy(update={"client_id": ""})
    with pytest.raises(WebhookRejected, match="WEARSYNC_GARMIN_CLIENT_ID is not set"):
        garmin.verify_webhook({"garmin-client-id": ""}, b"anything", unset, settings)


async def test_a_delivery_without_our_client_id_is_401_and_stores_nothing(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings, sim_state: SimState
) -> None:
    key, user_id, _, garmin_id = await connect(factory, settings, sim_state)
    deregistration = {"deregistrations": [{"userId": garmin_id}]}
    for headers in ({}, {"garmin-client-id": "another-app"}):
        resp = await client.post(HOOK, json=deregistration, headers=headers)
        assert resp.status == 401
        assert (await resp.json())["detail"].startswith("Invalid webhook signature: ")
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert (await connection(client, key, user_id))["active"] is True


def activity(user: str, summary_id: str, **fields: Any) -> dict[str, Any]:
    return {"userId": user, "summaryId": summary_id, "startTimeInSeconds": 1_790_000_000} | fields


def test_a_push_is_one_event_per_summary_type_and_user() -> None:
    body = {"activities": [activity("u1", "a"), activity("u2", "b"), activity("u1", "c")],
            "sleeps": [activity("u1", "s")]}  # fmt: skip
    events = garmin.parse_webhook(body)
    assert [(e.kind, e.provider_user_id, [s["summaryId"] for s in e.payload["summaries"]]) for e in events] == [
        ("activities.push", "u1", ["a", "c"]),
        ("activities.push", "u2", ["b"]),
        ("sleeps.push", "u1", ["s"]),
    ]
    assert events[0].payload["summaryType"] == "activities"
    # The same delivery again has the same keys; a changed summary is a new event.
    assert [e.dedupe_key for e in garmin.parse_webhook(body)] == [e.dedupe_key for e in events]
    changed = garmin.parse_webhook({"activities": [activity("u1", "a", activityName="x"), activity("u1", "c")]})
    assert changed[0].dedupe_key != events[0].dedupe_key
    assert len({e.dedupe_key for e in events}) == 3


def test_a_ping_is_one_event_per_callback() -> None:
    url = "https://apis.garmin.com/wellness-api/rest/dailies?uploadStartTimeInSeconds=1&uploadEndTimeInSeconds=2"
    body = {"dailies": [{"userId": "u1", "callbackURL": url}, {"userId": "u1", "callbackURL": url + "0"}]}
    first, second = garmin.parse_webhook(body)
    assert (first.kind, first.provider_user_id, first.payload) == (
        "dailies.ping", "u1", {"summaryType": "dailies", "userId": "u1", "callbackURL": url},
    )  # fmt: skip
    assert first.dedupe_key != second.dedupe_key
    assert garmin.parse_webhook({"dailies": [body["dailies"][0]]})[0].dedupe_key == first.dedupe_key
    # The same URL for another summary type is another event.
    assert garmin.parse_webhook({"epochs": [body["dailies"][0]]})[0].dedupe_key != first.dedupe_key


def test_deregistrations_and_permission_changes() -> None:
    change = {"userId": "u1", "summaryId": "p1", "permissions": ["HEALTH_EXPORT"], "changeTimeInSeconds": 5}
    leaving = {"userId": "u1", "userAccessToken": "t"}
    body = {"deregistrations": [leaving], "userPermissionsChange": [change]}
    dereg, permissions = garmin.parse_webhook(body)
    assert (dereg.kind, dereg.provider_user_id, dereg.payload) == ("deregistration", "u1", leaving)
    assert (permissions.kind, permissions.payload) == ("permissions", change)
    again = garmin.parse_webhook(body)
    assert again[1].dedupe_key == permissions.dedupe_key
    assert again[0].dedupe_key != dereg.dedupe_key  # deregistrations are not deduplicated (idempotent)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([{"userId": "u"}], "an object of lists"),
        ({"userId": "u"}, "an object of lists"),
        ({}, "an object of lists"),
        ({"dailies": [{"summaryId": "s"}]}, "every entry needs a userId"),
        ({"dailies": ["s"]}, "every entry needs a userId"),
        ({"deregistrations": [{"userId": ""}]}, "every entry needs a userId"),
        ({"dailies": [{"userId": "u", "callbackURL": 7}]}, "callbackURL is not a string"),
        ({"sleeps": [], "userPermissionsChange": {"userId": "u"}}, "expected a list"),
    ],
)
def test_malformed_deliveries_are_refused(body: Any, error: str) -> None:
    with pytest.raises(MalformedPayload, match=error):
        garmin.parse_webhook(body)


def test_summary_types_we_do_not_store_are_dropped() -> None:
    body = {"bodyComps": [{"userId": "u"}], "stressDetails": "anything", "hrv": [activity("u", "h")]}
    assert [e.kind for e in garmin.parse_webhook(body)] == ["hrv.push"]
