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

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conformance.specs import judge_all, load
from tests.conftest import Factory
from tests.test_strava_webhooks import URL, emit
from tests.test_webhooks import settled
from wearsync.db.records import upsert_records
from wearsync.dev import SIM_VERIFY_TOKEN
from wearsync.providers import strava
from wearsync.providers.core import map_page
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]

OPERATIONS = {
    "getLoggedInAthleteActivities",  # a sync: the activity list, pages of 200
    "getActivityById",  # webhooks: the detail of a created or updated activity
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
    events = await settled(db, 3)
    assert [e["status"] for e in events] == ["processed"] * 3, [dict(e) for e in events]

    resp = await client.delete(f"/api/v1/users/{user_id}/connections/strava", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    assert any(r["path"] == "/oauth/deauthorize" for r in recording.requests)

    judged = judge_all(spec, recording.requests)
    assert {j.operation_id for j in judged} == OPERATIONS
    assert all(j.status == 200 for j in judged), [j for j in judged if j.status != 200]


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
