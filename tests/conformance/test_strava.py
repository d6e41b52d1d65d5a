"""Strava's own Swagger document (strava/swagger.bundled.json, converted to OpenAPI 3) judges our
Strava client and simulator.

The real client runs against the simulator over sockets (a full sync over several pages, the
detail fetched for webhook events, a disconnect); every call of the data API must be an operation
of the spec with its parameters, and every answer must validate against that operation's
response schema. The operations seen must be exactly OPERATIONS, the calls providers/strava.py
can make, listed here by hand from its code.

Not judged, as the spec has none of them: the OAuth token endpoint and `POST /oauth/deauthorize`
(the spec names only `securityDefinitions.strava_oauth`, without schemas), and the push
subscription API (`/push_subscriptions`, documented in prose only), which only the demo calls."""

import inspect
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conformance.specs import judge_all, load, paths_named_in_source
from tests.conftest import Factory, sim_records
from tests.helpers import settled
from tests.test_strava_webhooks import URL, emit, event
from wearsync.db.records import upsert_records
from wearsync.dev import SIM_VERIFY_TOKEN
from wearsync.providers import strava
from wearsync.providers.core import map_page
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]

OPERATIONS = {
    "getLoggedInAthleteActivities",  # a sync: the activity list, pages of 200
    "getActivityById",  # webhooks: the detail of a created or updated activity
    "getLoggedInAthlete",  # connecting with tokens handed to us: whose they are
}


async def test_every_call_of_the_strava_client_and_every_answer_of_the_simulator_follow_the_spec(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, recording: SimState, sim_server: TestServer
) -> None:
    spec = load("strava")
    key, user_id, sim_user = await factory.connected_user("strava")
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["success"] is True
    assert len({r["query"].get("page") for r in recording.requests if r["app"] == "api"}) >= 3  # 450 in pages of 200

    recording.webhook_targets["strava"] = WebhookTarget(str(client.make_url(URL)), verify_token=SIM_VERIFY_TOKEN)
    created = (await emit(sim_server, sim_user, {"kind": "create"}))["event"]["object_id"]
    await settled(db, 1)  # each event handled before the next happens: the detail is there to fetch
    await emit(sim_server, sim_user, {"kind": "update", "id": created, "changes": {"name": "Renamed"}})
    await settled(db, 2)
    await emit(sim_server, sim_user, {"kind": "delete", "id": created})
    athlete_id = (await sim_records(sim_server, "strava", sim_user))["athlete"]["id"]
    resp = await client.post(URL, json=event(athlete_id, 1, "update"))  # an activity Strava does not have: 404
    assert resp.status == 200, await resp.text()
    events = await settled(db, 4)
    assert [e["status"] for e in events] == ["processed"] * 4, [dict(e) for e in events]

    # The read limit spent: Strava's 429 (its body is a Fault, as the spec's default answer).
    recording.provider("strava").read_rate_limits = [(1, 900)]
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert (resp.status, (await resp.json())["success"]) == (200, False)
    recording.provider("strava").read_rate_limits = None

    resp = await client.delete(f"/api/v1/users/{user_id}/connections/strava", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    assert any(r["path"] == "/oauth/deauthorize" for r in recording.requests)

    judged = judge_all(spec, recording.requests)
    assert {j.operation_id for j in judged} == OPERATIONS
    assert {j.status for j in judged} == {200, 404, 429}  # answers and both errors judged


@pytest.mark.parametrize(
    ("path", "method"), [("/athlete/activities", "get"), ("/activities/{id}", "get")], ids=["summary", "detail"]
)
async def test_the_specs_example_activities_are_stored(
    factory: Factory, db: asyncpg.Pool, path: str, method: str
) -> None:
    """The spec's response examples (a summary list, a detailed activity) map to rows PostgreSQL
    stores, with what the client reads from them."""
    spec = load("strava")
    example: Any = spec.document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["example"]
    activities = example if isinstance(example, list) else [example]
    user_id = uuid.UUID(await factory.user(await factory.api_key()))
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "strava", map_page(activities, strava.map_activity))
    rows = await db.fetch("SELECT * FROM workouts WHERE user_id = $1 ORDER BY start_time", user_id)
    assert sorted(r["provider_record_id"] for r in rows) == sorted(str(a["id"]) for a in activities)
    by_id = {r["provider_record_id"]: r for r in rows}
    for activity in activities:
        row = by_id[str(activity["id"])]
        assert row["raw"] == activity
        assert (row["provider_sport"], row["duration_s"]) == (activity["sport_type"], activity["elapsed_time"])
        assert row["distance_m"] == activity["distance"]


def test_every_data_api_path_the_client_names_is_one_of_the_operations_listed() -> None:
    """A call the client's code could make but no test exercises still shows up: its path."""
    spec = load("strava")
    assert paths_named_in_source(spec, inspect.getsource(strava)) <= {spec.operation(o)[1] for o in OPERATIONS}
