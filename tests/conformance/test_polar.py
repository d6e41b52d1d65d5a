"""Polar's own AccessLink spec (polar/swagger.yaml) judges our Polar client and simulator.

The real client runs against the simulator over sockets (a sync with samples, zones and route,
one without, a webhook-announced exercise, a disconnect); every call it makes must be an
operation of the spec with its parameters, and every answer of the simulator must validate
against that operation's response schema (with the two corrections specs.py names, where the
spec's own example and description contradict its schema). The operations seen must be exactly
OPERATIONS, the calls providers/polar.py can make, listed here by hand from its code: a new call
fails the suite until it is listed (and so exercised and judged).

Not judged: the OAuth token endpoint (`POST https://polarremote.com/v2/oauth2/token`): the spec
names it (`securitySchemes.OAuth2`) but gives it no schema; webhook deliveries are judged by their
payload schemas (webhookPayloadExercise, webhookPayloadSleep, webhookPing) below."""

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from tests.conformance.specs import UpstreamSpec, example_instance, judge_all, load
from tests.conftest import Factory
from tests.helpers import settled
from tests.test_polar_webhooks import URL, emit
from wearsync.db.records import upsert_records
from wearsync.dev import SIM_WEBHOOK_SECRET
from wearsync.providers import polar
from wearsync.providers.core import map_page
from wearsync.records import Sample, Workout
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]

OPERATIONS = {
    # a sync: the registration (once per Polar account), then the 30-day list
    "registerUser", "listExercisesWithoutTransaction",
    # a webhook's EXERCISE: the exercise it names; disconnecting: the de-registration
    "getExerciseWithoutTransaction", "deleteUser",
    # connecting with a token handed to us: whose it is
    "getUserInformation",
    # a 24/7 sync: three 28-day lists, then continuous heart rate day by day (no operationId: named
    # by method and path)
    "listNights", "listNightlyRecharge", "listActivitiesWithoutTransaction",
    "GET /v3/users/continuous-heart-rate/{date}",
    # the 24/7 webhook events: SLEEP (the sleep and the recharge of its date), ACTIVITY_SUMMARY
    "GET /v3/users/sleep/{date}", "GET /v3/users/nightly-recharge/{date}", "getActivityWithoutTransaction",
}  # fmt: skip
EXPECTED_REFUSALS = {
    ("registerUser", 409),  # the sync's registration finds the user registered when connected
    ("GET /v3/users/continuous-heart-rate/{date}", 404),  # today: nothing yet
}


async def test_every_call_of_the_polar_client_and_every_answer_of_the_simulator_follow_the_spec(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, recording: SimState, sim_server: TestServer
) -> None:
    spec = load("polar")
    # A fixed user: the simulator's data is deterministic per user, and this one's shows every
    # optional part of an exercise (checked below), so each is judged.
    key, user_id, sim_user = await factory.connected_user("polar", "conformance")
    for query in ("samples=true&zones=true&route=true", "samples=false"):
        resp = await client.post(f"/api/v1/polar/users/{user_id}/sync?async=false&{query}", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["success"] is True
    assert await db.fetchval("SELECT count(*) FROM samples") > 0
    resp = await client.post(f"/api/v1/polar/users/{user_id}/sync?async=false&data_type=247",
                             headers={"X-API-Key": key})  # fmt: skip
    assert (await resp.json())["success"] is True, await resp.text()

    recording.webhook_targets["polar"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)
    kinds = ("exercise", "sleep", "activity_summary", "continuous_heart_rate")
    for kind in kinds:
        await emit(sim_server, sim_user, {"kind": kind})
    events = await settled(db, len(kinds))
    assert [e["status"] for e in events] == ["processed"] * len(kinds), [dict(e) for e in events]

    resp = await client.delete(f"/api/v1/users/{user_id}/connections/polar", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()

    judged = judge_all(spec, recording.requests)
    assert {j.operation_id for j in judged} == OPERATIONS
    unexpected = [j for j in judged if j.status >= 300 and (j.operation_id, j.status) not in EXPECTED_REFUSALS]
    assert unexpected == []
    served = [json.loads(r["response"]["body"]) for r in recording.requests if r["path"] == "/v3/exercises"]
    exercises = [e for answer in served for e in answer]
    series = [s for e in exercises for s in e.get("samples", [])]
    assert {s["sample-type"] for s in series} >= {"0", "11"}, "heart rate and RR series were judged"
    optional = {"running-index", "training_load_pro", "club_id", "heart_rate_zones", "route"}
    assert {field for e in exercises for field in e} >= optional, "every optional field was judged"


def example(spec: UpstreamSpec, schema: str) -> Any:
    return example_instance(spec, {"$ref": f"#/components/schemas/{schema}"})


async def test_the_specs_example_exercise_is_stored_with_its_heart_rate(factory: Factory, db: asyncpg.Pool) -> None:
    """The exercise built from the spec's own field examples, its example series read as heart rate
    (the spec's is type "1", speed, which stays in the raw JSON), maps to rows PostgreSQL stores."""
    spec = load("polar")
    exercise = example(spec, "exerciseHashId")
    assert exercise["samples"][0]["sample-type"] == "1"
    assert exercise["heart_rate_zones"][0]["lower-limit"] == 110
    assert exercise["route"][0]["time"] == "PT210.026S"
    heart_rate = exercise["samples"][0] | {"sample-type": polar.HEART_RATE}
    exercise["samples"].append(heart_rate)
    rows = map_page([exercise], polar.map_exercise)
    user_id = uuid.UUID(await factory.user(await factory.api_key()))
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "polar", rows)

    workout = await db.fetchrow("SELECT * FROM workouts WHERE user_id = $1", user_id)
    assert workout is not None
    assert workout["raw"] == exercise
    assert (workout["provider_record_id"], workout["duration_s"]) == ("2AC312F", 2 * 3600 + 44 * 60)
    start = next(r for r in rows if isinstance(r, Workout)).start_time
    assert start.isoformat() == "2008-10-13T07:40:02+00:00"  # 10:40:02 local at UTC+3 (offset 180)
    samples = await db.fetch("SELECT recorded_at, value FROM samples WHERE user_id = $1 ORDER BY 1", user_id)
    values = heart_rate["data"].split(",")
    assert len(samples) == len(values) == len([r for r in rows if isinstance(r, Sample)])
    assert [(r["recorded_at"] - start).total_seconds() for r in samples] == [5.0 * i for i in range(len(values))]
    assert [r["value"] for r in samples] == [float(v) for v in values]


async def test_the_specs_example_sleep_recharge_activity_and_heart_rate_are_stored(
    factory: Factory, db: asyncpg.Pool
) -> None:
    """The spec's own examples (field examples; continuous-heartrate's whole example) map to rows
    PostgreSQL stores, with their units."""
    spec = load("polar")
    night, recharge = example(spec, "sleep"), example(spec, "nightly-recharge")
    activity, heart_rate = example(spec, "activity-summary-with-all-samples"), example(spec, "continuous-heartrate")
    rows = [
        *map_page([night], polar.map_sleep),
        *map_page([recharge], polar.map_recharge),
        *map_page([activity], polar.map_activity),
        *map_page([heart_rate], lambda d: polar.map_heart_rate(d, 180)),
    ]
    user_id = uuid.UUID(await factory.user(await factory.api_key()))
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "polar", rows)
    sleep = await db.fetchrow("SELECT * FROM sleep_sessions WHERE user_id = $1", user_id)
    assert sleep is not None
    assert (sleep["provider_record_id"], sleep["utc_offset_minutes"], sleep["score"]) == ("2020-01-01", 180, 80)
    assert sleep["start_time"].isoformat() == "2019-12-31T21:39:07+00:00"  # 00:39:07+03:00
    assert (sleep["duration_s"], sleep["deep_s"], sleep["awake_s"]) == (8 * 3600 + 40 * 60 + 30, 1000, 1000)
    recovery = await db.fetchrow("SELECT * FROM recoveries WHERE user_id = $1", user_id)
    assert recovery is not None
    assert (recovery["resting_hr"], recovery["hrv_rmssd_ms"], recovery["raw"]) == (70, 28, recharge)
    daily = await db.fetchrow("SELECT * FROM daily_activity WHERE user_id = $1", user_id)
    assert daily is not None
    assert (str(daily["day"]), daily["steps"], daily["energy_kcal"], daily["distance_m"]) == (
        "2025-08-13", 8823, 2500, 4590.53,
    )  # fmt: skip
    samples = await db.fetch("SELECT recorded_at, value FROM samples WHERE user_id = $1 ORDER BY 1", user_id)
    assert [(r["recorded_at"].isoformat(), r["value"]) for r in samples] == [
        ("2022-09-11T21:02:08+00:00", 63), ("2022-09-11T21:07:08+00:00", 62),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "kind"),
    [("webhookPayloadExercise", "EXERCISE"), ("webhookPayloadSleep", "SLEEP"),
     ("webhookPayloadActivitySummary", "ACTIVITY_SUMMARY"),
     ("webhookPayloadContinuousHeartRate", "CONTINUOUS_HEART_RATE"), ("webhookPing", None)],
)  # fmt: skip
def test_the_specs_example_webhook_payloads_are_read(schema: str, kind: str | None) -> None:
    spec = load("polar")
    payload = example(spec, schema)
    if kind is None:
        payload["event"] = "PING"  # the schema gives an enum, not an example
        assert polar.parse_webhook(payload) == []
        return
    (event,) = polar.parse_webhook(payload)
    assert (event.kind, event.provider_user_id, event.payload) == (kind, "475", payload)


async def test_the_simulators_webhook_payloads_follow_the_spec(
    client: Client, factory: Factory, recording: SimState, sim_server: TestServer
) -> None:
    spec = load("polar")
    recording.webhook_targets["polar"] = WebhookTarget(str(client.make_url(URL)), SIM_WEBHOOK_SECRET)
    _, _, sim_user = await factory.connected_user("polar")
    recording.registered[("polar", sim_user)] = f"member-{sim_user}"
    for kind, schema in (("exercise", "webhookPayloadExercise"), ("sleep", "webhookPayloadSleep"),
                         ("activity_summary", "webhookPayloadActivitySummary"),
                         ("continuous_heart_rate", "webhookPayloadContinuousHeartRate"),
                         ("ping", "webhookPing")):  # fmt: skip
        sent = (await emit(sim_server, sim_user, {"kind": kind}))["event"]
        validator = OAS30Validator(spec.schema(schema), format_checker=oas30_format_checker)
        errors = [e.message for e in validator.iter_errors(sent)]
        assert not errors, (kind, errors)
        assert set(sent) == set(spec.schema(schema)["properties"]), kind
