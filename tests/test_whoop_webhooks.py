"""Whoop webhooks end to end: the simulator changes a record and notifies our receiver over a
socket, the worker fetches the record from the simulator and writes PostgreSQL; rows are compared
with what the simulator then serves, field by field. Plus the signature rules and unit tests of
verify/parse."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory, sim_records
from tests.helpers import settled
from tests.test_whoop import SPORTS, at, minutes, secs
from wearsync.dev import SIM_CLIENT_SECRET
from wearsync.providers import whoop
from wearsync.providers.errors import MalformedPayload, WebhookRejected
from wearsync.providers.http import HttpClient
from wearsync.settings import Settings
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]
URL = "/api/v1/webhooks/whoop"
WORKOUT_DETAIL = "/developer/v2/activity/workout/"


async def connect(factory: Factory, client: Client, key: str | None = None) -> tuple[str, str, str]:
    """(user id, simulated user, Whoop user id) of a user connected as a client would (with `key`,
    or a new API key): the connection's provider_user_id is Whoop's numeric id, asked from the
    profile endpoint."""
    key = key or await factory.api_key()
    user_id = await factory.user(key)
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    tokens = await factory.sim_tokens("whoop", sim_user)
    async with aiohttp.ClientSession() as session:
        whoop_id = await whoop.user_id(
            HttpClient(session, retries=0), whoop.PROVIDER.settings(factory.settings), tokens.access_token
        )
    resp = await client.put(
        f"/api/v1/users/{user_id}/connections/whoop",
        json={"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
              "expires_at": "2099-01-01T00:00:00Z", "provider_user_id": whoop_id, "scopes": tokens.scopes},
        headers={"X-API-Key": key},
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    return user_id, sim_user, whoop_id


async def emit(sim_server: TestServer, user: str, body: dict[str, Any]) -> dict[str, Any]:
    url = sim_server.make_url(f"/_sim/whoop/users/{user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        emitted: dict[str, Any] = await resp.json()
    assert [e["delivery_status"] for e in emitted["events"]] == [200] * len(emitted["events"])
    return emitted


def signed(
    payload: dict[str, Any], secret: str = SIM_CLIENT_SECRET, at_ms: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return body, {"X-WHOOP-Signature": base64.b64encode(digest).decode(), "X-WHOOP-Signature-Timestamp": stamp}


def event(
    user_id: int | str, record_id: str | int, kind: str = "workout.updated", trace: str = "t-1"
) -> dict[str, Any]:
    return {"user_id": user_id, "id": record_id, "type": kind, "trace_id": trace}


async def rows(db: asyncpg.Pool, table: str, user_id: str) -> dict[str, asyncpg.Record]:
    found = await db.fetch(f"SELECT * FROM {table} WHERE user_id = $1 AND provider = 'whoop'", uuid.UUID(user_id))
    return {r["provider_record_id"]: r for r in found}


def by(records: list[dict[str, Any]], field: str, value: Any) -> dict[str, Any]:
    (record,) = [r for r in records if r[field] == value]
    return record


def assert_workout(row: asyncpg.Record, w: dict[str, Any]) -> None:
    score, start, end = w.get("score", {}), at(w["start"]), at(w["end"])
    assert row["raw"] == w
    assert (row["sport"], row["provider_sport"]) == (SPORTS.get(w["sport_name"], "other"), w["sport_name"])
    assert (row["start_time"], row["end_time"], row["duration_s"]) == (start, end, (end - start).total_seconds())
    assert row["utc_offset_minutes"] == minutes(w["timezone_offset"])
    assert row["energy_kcal"] == (score["kilojoule"] / 4.184 if score else None)
    assert (row["distance_m"], row["ascent_m"]) == (score.get("distance_meter"), score.get("altitude_gain_meter"))
    assert (row["avg_hr"], row["max_hr"]) == (score.get("average_heart_rate"), score.get("max_heart_rate"))


def assert_sleep(row: asyncpg.Record, s: dict[str, Any]) -> None:
    stages = s.get("score", {}).get("stage_summary", {})
    assert row["raw"] == s
    assert (row["start_time"], row["end_time"]) == (at(s["start"]), at(s["end"]))
    assert (row["is_nap"], row["utc_offset_minutes"]) == (s["nap"], minutes(s["timezone_offset"]))
    assert (row["deep_s"], row["light_s"], row["rem_s"], row["awake_s"]) == (
        secs(stages.get("total_slow_wave_sleep_time_milli")), secs(stages.get("total_light_sleep_time_milli")),
        secs(stages.get("total_rem_sleep_time_milli")), secs(stages.get("total_awake_time_milli")),
    )  # fmt: skip
    assert row["score"] == s["score"]["sleep_performance_percentage"]
    assert row["respiratory_rate"] == s["score"].get("respiratory_rate")


def assert_recovery(row: asyncpg.Record, r: dict[str, Any]) -> None:
    score = r["score"]
    assert row["raw"] == r
    assert row["recorded_at"] == at(r["created_at"])
    assert (row["score"], row["resting_hr"], row["hrv_rmssd_ms"], row["spo2_percent"], row["skin_temp_c"]) == (
        score["recovery_score"], score["resting_heart_rate"], score["hrv_rmssd_milli"],
        score.get("spo2_percentage"), score.get("skin_temp_celsius"),
    )  # fmt: skip


@pytest.fixture
def target(client: Client, sim_state: SimState) -> None:
    sim_state.webhook_targets["whoop"] = WebhookTarget(str(client.make_url(URL)), SIM_CLIENT_SECRET)


@pytest.mark.usefixtures("target")
async def test_a_workout_created_changed_and_deleted_upstream_follows_by_webhook(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    user_id, sim_user, whoop_id = await connect(factory, client)
    assert whoop_id == str((await sim_records(sim_server, "whoop", sim_user))["user_id"])
    sim_state.requests.clear()

    (created,) = (await emit(sim_server, sim_user, {"kind": "workout.updated"}))["events"]
    assert (created["user_id"], created["type"]) == (int(whoop_id), "workout.updated")
    new_id = created["id"]
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["kind"], stored["provider_user_id"]) == ("processed", "workout.updated", whoop_id)
    served = await sim_records(sim_server, "whoop", sim_user)
    new = by(served["workout"], "id", new_id)
    assert new["score_state"] == "SCORED"
    assert list(await rows(db, "workouts", user_id)) == [new_id]
    assert_workout((await rows(db, "workouts", user_id))[new_id], new)

    changes = {"sport_name": "spikeball", "score": {"kilojoule": 1234.5, "average_heart_rate": 101}}
    await emit(sim_server, sim_user, {"kind": "workout.updated", "id": new_id, "changes": changes})
    await settled(db, 2)
    changed = by((await sim_records(sim_server, "whoop", sim_user))["workout"], "id", new_id)
    assert (changed["sport_name"], changed["score"]["kilojoule"], changed["score"]["max_heart_rate"]) == (
        "spikeball", 1234.5, new["score"]["max_heart_rate"],
    )  # fmt: skip
    assert_workout((await rows(db, "workouts", user_id))[new_id], changed)

    # A workout of the history is stored by its update; the new one is deleted (twice: harmless).
    old_id = served["workout"][7]["id"]
    await emit(sim_server, sim_user, {"kind": "workout.updated", "id": old_id})
    await emit(sim_server, sim_user, {"kind": "workout.deleted", "id": new_id})
    events = await settled(db, 4)
    assert [e["status"] for e in events] == ["processed"] * 4
    served = await sim_records(sim_server, "whoop", sim_user)
    assert new_id not in {w["id"] for w in served["workout"]}
    stored_rows = await rows(db, "workouts", user_id)
    assert list(stored_rows) == [old_id]
    assert_workout(stored_rows[old_id], by(served["workout"], "id", old_id))
    # One detail call per update, none for the deletion, no listing.
    assert sorted(r["path"] for r in sim_state.requests if r["provider"] == "whoop") == sorted(
        [WORKOUT_DETAIL + new_id] * 2 + [WORKOUT_DETAIL + old_id]
    )


@pytest.mark.usefixtures("target")
async def test_a_new_night_lands_its_sleep_and_recovery_and_their_deletion_removes_them(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer
) -> None:
    user_id, sim_user, _ = await connect(factory, client)
    before = await sim_records(sim_server, "whoop", sim_user)
    emitted = await emit(sim_server, sim_user, {"kind": "sleep.updated"})
    sleep_id = emitted["events"][0]["id"]
    assert [(e["type"], e["id"]) for e in emitted["events"]] == [
        ("sleep.updated", sleep_id),
        ("recovery.updated", sleep_id),
    ]
    assert [e["status"] for e in await settled(db, 2)] == ["processed", "processed"]

    served = await sim_records(sim_server, "whoop", sim_user)
    sleep, recovery = by(served["sleep"], "id", sleep_id), by(served["recovery"], "sleep_id", sleep_id)
    assert recovery["cycle_id"] == sleep["cycle_id"] == max(c["id"] for c in before["cycle"]) + 1
    # The night closed the cycle that was open; the new one is open now.
    (was_open,) = [c for c in before["cycle"] if "end" not in c]
    assert by(served["cycle"], "id", was_open["id"])["end"] == sleep["start"]
    assert [c["id"] for c in served["cycle"] if "end" not in c] == [sleep["cycle_id"]]
    assert list(await rows(db, "sleep_sessions", user_id)) == [sleep_id]
    assert_sleep((await rows(db, "sleep_sessions", user_id))[sleep_id], sleep)
    recovery_key = str(recovery["cycle_id"])
    assert list(await rows(db, "recoveries", user_id)) == [recovery_key]
    assert_recovery((await rows(db, "recoveries", user_id))[recovery_key], recovery)

    # A recovery's events name its sleep.
    changes = {"score": {"recovery_score": 3, "hrv_rmssd_milli": 11.5}}
    await emit(sim_server, sim_user, {"kind": "recovery.updated", "id": sleep_id, "changes": changes})
    await settled(db, 3)
    changed = by((await sim_records(sim_server, "whoop", sim_user))["recovery"], "sleep_id", sleep_id)
    assert (changed["score"]["recovery_score"], changed["score"]["hrv_rmssd_milli"]) == (3, 11.5)
    assert_recovery((await rows(db, "recoveries", user_id))[recovery_key], changed)

    await emit(sim_server, sim_user, {"kind": "recovery.deleted", "id": sleep_id})
    await settled(db, 4)
    assert await rows(db, "recoveries", user_id) == {}
    assert list(await rows(db, "sleep_sessions", user_id)) == [sleep_id]
    await emit(sim_server, sim_user, {"kind": "sleep.deleted", "id": sleep_id})
    events = await settled(db, 5)
    assert [e["status"] for e in events] == ["processed"] * 5
    assert await rows(db, "sleep_sessions", user_id) == {}
    served = await sim_records(sim_server, "whoop", sim_user)
    assert sleep_id not in {s["id"] for s in served["sleep"]} | {r["sleep_id"] for r in served["recovery"]}


async def test_a_recovery_deletion_finds_the_row_by_the_sleep_its_raw_or_our_sleep_row_names_or_by_its_cycle(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    user_id, _, whoop_id = await connect(factory, client)
    uid = uuid.UUID(user_id)
    sleep_1, sleep_2, sleep_3 = (str(uuid.uuid4()) for _ in range(3))
    await db.execute(
        """INSERT INTO sleep_sessions (user_id, provider, provider_record_id, start_time, end_time, raw)
           VALUES ($1, 'whoop', $2, now() - interval '8 hours', now(), '{"cycle_id": 42}')""",
        uid, sleep_1,
    )  # fmt: skip
    for cycle, raw in (("42", {}), ("43", {"sleep_id": sleep_2}), ("44", {"sleep_id": sleep_3}), ("45", {})):
        await db.execute(
            "INSERT INTO recoveries (user_id, provider, provider_record_id, recorded_at, raw)"
            " VALUES ($1, 'whoop', $2, now(), $3)",
            uid, cycle, raw,
        )  # fmt: skip
    for record_id in (sleep_1, sleep_2, 45):  # two sleeps' UUIDs, a cycle's integer
        body, headers = signed(event(int(whoop_id), record_id, "recovery.deleted", trace=str(record_id)))
        assert (await client.post(URL, data=body, headers=headers)).status == 200
    assert [e["status"] for e in await settled(db, 3)] == ["processed"] * 3
    assert list(await rows(db, "recoveries", user_id)) == ["44"]


@pytest.mark.usefixtures("target")
async def test_a_recovery_event_naming_its_cycle_fetches_the_cycles_recovery(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    """Sources disagree whether a v2 recovery event names the sleep (UUID) or the cycle (integer):
    with the cycle, the recovery is fetched by it directly, without a sleep."""
    user_id, sim_user, _ = await connect(factory, client)
    sim_state.requests.clear()
    emitted = await emit(sim_server, sim_user, {"kind": "sleep.updated", "recovery_id": "cycle"})
    (sleep_event, recovery_event) = emitted["events"]
    cycle_id = emitted["records"][1]["cycle_id"]
    assert (recovery_event["type"], recovery_event["id"]) == ("recovery.updated", cycle_id)
    assert isinstance(cycle_id, int)
    assert [e["status"] for e in await settled(db, 2)] == ["processed", "processed"]
    served = by((await sim_records(sim_server, "whoop", sim_user))["recovery"], "cycle_id", cycle_id)
    assert_recovery((await rows(db, "recoveries", user_id))[str(cycle_id)], served)
    # The sleep's own event fetched the sleep; the recovery's went to the cycle's recovery alone.
    assert sorted(r["path"] for r in sim_state.requests if r["provider"] == "whoop") == sorted(
        [f"/developer/v2/activity/sleep/{sleep_event['id']}", f"/developer/v2/cycle/{cycle_id}/recovery"]
    )

    changes = {"score": {"recovery_score": 7}}
    await emit(sim_server, sim_user, {"kind": "recovery.updated", "id": cycle_id, "changes": changes})
    await settled(db, 3)
    changed = by((await sim_records(sim_server, "whoop", sim_user))["recovery"], "cycle_id", cycle_id)
    assert changed["score"]["recovery_score"] == 7
    assert_recovery((await rows(db, "recoveries", user_id))[str(cycle_id)], changed)

    await emit(sim_server, sim_user, {"kind": "recovery.deleted", "id": cycle_id})
    assert [e["status"] for e in await settled(db, 4)] == ["processed"] * 4
    assert await rows(db, "recoveries", user_id) == {}


async def test_a_recovery_event_naming_neither_a_sleep_nor_a_cycle_fails_clearly(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState
) -> None:
    _, _, whoop_id = await connect(factory, client)
    sim_state.requests.clear()
    body, headers = signed(event(int(whoop_id), "sleep-1", "recovery.updated"))
    assert (await client.post(URL, data=body, headers=headers)).status == 200
    (stored,) = await settled(db, 1)
    assert stored["status"] == "failed"
    assert "names a sleep (UUID) or a cycle (integer), not 'sleep-1'" in stored["detail"]
    assert sim_state.requests == []


async def test_bad_missing_or_stale_signatures_are_refused_and_nothing_is_stored(
    client: Client, db: asyncpg.Pool, settings: Settings
) -> None:
    payload = event(1234, "w-1")
    body, headers = signed(payload)
    now_ms, max_age_ms = int(time.time() * 1000), settings.webhook_max_age_s * 1000
    refused = [
        {},
        {"X-WHOOP-Signature": headers["X-WHOOP-Signature"]},
        {"X-WHOOP-Signature-Timestamp": headers["X-WHOOP-Signature-Timestamp"]},
        headers | {"X-WHOOP-Signature": base64.b64encode(b"0" * 32).decode()},
        signed(payload, "other-secret")[1],
        signed(payload, at_ms=now_ms - max_age_ms - 10_000)[1],  # stale: a replay
        signed(payload, at_ms=now_ms + max_age_ms + 10_000)[1],  # from the future
        headers | {"X-WHOOP-Signature-Timestamp": str(now_ms + 1)},  # not the signed timestamp
        headers | {"X-WHOOP-Signature-Timestamp": "soon"},
    ]
    for bad in refused:
        resp = await client.post(URL, data=body, headers=bad)
        assert resp.status == 401, bad
        assert (await resp.json())["detail"].startswith("Invalid webhook signature")
    tampered = body.replace(b"1234", b"4321")
    assert (await client.post(URL, data=tampered, headers=headers)).status == 401
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    # The same delivery, properly signed a moment ago, is taken.
    ok = signed(payload, at_ms=now_ms - max_age_ms + 10_000)[1]
    resp = await client.post(URL, data=body, headers=ok)
    assert await resp.json() == {"received": 1, "new": 0}  # taken (and, for a user we do not know, dropped)


async def test_the_same_event_delivered_twice_is_processed_once(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_server: TestServer, sim_state: SimState
) -> None:
    user_id, sim_user, whoop_id = await connect(factory, client)
    workout = (await sim_records(sim_server, "whoop", sim_user))["workout"][3]
    sim_state.requests.clear()
    body, headers = signed(event(int(whoop_id), workout["id"], trace="trace-a"))
    first = await client.post(URL, data=body, headers=headers)
    second = await client.post(URL, data=body, headers=signed(event(int(whoop_id), workout["id"], trace="trace-a"))[1])
    assert (await first.json(), await second.json()) == ({"received": 1, "new": 1}, {"received": 1, "new": 0})
    (stored,) = await settled(db, 1)
    assert (stored["status"], stored["attempts"]) == ("processed", 1)
    assert [r["path"] for r in sim_state.requests] == [WORKOUT_DETAIL + workout["id"]]
    assert_workout((await rows(db, "workouts", user_id))[workout["id"]], workout)
    # Another event about the same workout (its own trace id) is processed again.
    body, headers = signed(event(int(whoop_id), workout["id"], trace="trace-b"))
    assert (await (await client.post(URL, data=body, headers=headers)).json())["new"] == 1
    assert [e["status"] for e in await settled(db, 2)] == ["processed", "processed"]
    assert len(sim_state.requests) == 2


async def test_an_event_naming_a_record_whoop_does_not_have_fails_clearly(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool
) -> None:
    _, _, whoop_id = await connect(factory, client)
    body, headers = signed(event(int(whoop_id), "00000000-0000-4000-8000-000000000000"))
    assert (await client.post(URL, data=body, headers=headers)).status == 200
    (stored,) = await settled(db, 1)
    assert stored["status"] == "failed"
    assert f"{WORKOUT_DETAIL}00000000-0000-4000-8000-000000000000 failed: HTTP 404" in stored["detail"]
    assert await db.fetchval("SELECT count(*) FROM workouts") == 0


# ---- unit tests ---------------------------------------------------------------------------------


def test_verify_takes_a_fresh_signature_and_refuses_the_rest() -> None:
    settings = Settings(whoop_client_secret="s3cret", webhook_max_age_s=60)
    config = whoop.PROVIDER.settings(settings)
    body = b'{"user_id": 1, "id": "x", "type": "workout.updated"}'
    now_ms = int(time.time() * 1000)
    good = {"X-WHOOP-Signature": whoop.signature("s3cret", str(now_ms), body),
            "X-WHOOP-Signature-Timestamp": str(now_ms)}  # fmt: skip
    whoop.verify_webhook(good, body, config, settings)
    stale = {"X-WHOOP-Signature": whoop.signature("s3cret", str(now_ms - 61_000), body),
             "X-WHOOP-Signature-Timestamp": str(now_ms - 61_000)}  # fmt: skip
    cases = [
        (stale, settings, "away from now"),
        (good | {"X-WHOOP-Signature": "é" * 44}, settings, "bad X-WHOOP-Signature"),
        ({"X-WHOOP-Signature": good["X-WHOOP-Signature"]}, settings, "missing"),
        (good | {"X-WHOOP-Signature-Timestamp": "١٢٣"}, settings, "not milliseconds"),  # non-ASCII digits
        (good, Settings(webhook_max_age_s=60), "WEARSYNC_WHOOP_CLIENT_SECRET is not set"),
    ]
    for headers, s, reason in cases:
        with pytest.raises(WebhookRejected, match=reason):
            whoop.verify_webhook(headers, body, whoop.PROVIDER.settings(s), s)


def test_parse_makes_one_event_keyed_by_type_record_and_trace() -> None:
    (e,) = whoop.parse_webhook(event(10129, "ecfc6a15-4661-442f-a9a4-f160dd7afae8", trace="d3c2"))
    assert (e.kind, e.provider_user_id, e.dedupe_key) == (
        "workout.updated", "10129", "workout.updated:ecfc6a15-4661-442f-a9a4-f160dd7afae8:d3c2",
    )  # fmt: skip
    assert e.payload["trace_id"] == "d3c2"
    # Without a trace id, the same body is the same event and another body another.
    untraced = {"user_id": 1, "id": 2, "type": "sleep.deleted"}
    keys = {whoop.parse_webhook(p)[0].dedupe_key for p in (untraced, dict(untraced), untraced | {"x": 1})}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "JSON object"),
        ({"id": "a", "type": "workout.updated"}, "numeric user_id"),
        ({"user_id": "10129", "id": "a", "type": "workout.updated"}, "numeric user_id"),
        ({"user_id": True, "id": "a", "type": "workout.updated"}, "numeric user_id"),
        ({"user_id": 1, "type": "workout.updated"}, "record id"),
        ({"user_id": 1, "id": "", "type": "workout.updated"}, "record id"),
        ({"user_id": 1, "id": "a"}, "type like workout.updated"),
        ({"user_id": 1, "id": "a", "type": "workout"}, "type like workout.updated"),
    ],
)
def test_parse_refuses_unreadable_notifications(payload: Any, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        whoop.parse_webhook(payload)
