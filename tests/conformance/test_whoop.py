"""Whoop's own OpenAPI document (whoop/openapi.json) judges our Whoop client and simulator.

The real client runs against the simulator over sockets (a connection asking for the user id, a
full sync of every data type, webhook-triggered fetches of each kind, a disconnect); every call it
makes must be an operation of the spec with its parameters, and every answer of the simulator
must validate against that operation's response schema. The operations seen must be exactly
OPERATIONS, the calls providers/whoop.py can make, listed here by hand from its code: a new call
fails the suite until it is listed (and so exercised and judged).

Not judged: the OAuth token endpoint (`POST /oauth/oauth2/token`): the spec names it
(`securitySchemes.OAuth`) but gives it no schema."""

import inspect
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conformance.specs import example_instance, judge_all, load, paths_named_in_source
from tests.conftest import Factory
from tests.helpers import settled
from tests.test_whoop_webhooks import connect, emit
from wearsync.db.records import upsert_records
from wearsync.dev import SIM_CLIENT_SECRET
from wearsync.providers import whoop
from wearsync.providers.core import map_page
from wearsync.settings import Settings
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]

OPERATIONS = {
    # a sync: each collection, paged by nextToken
    "getWorkoutCollection", "getSleepCollection", "getRecoveryCollection", "getCycleCollection",
    # webhooks: the record an update names; a recovery through its sleep's cycle, or its cycle
    "getWorkoutById", "getSleepById", "getRecoveryForCycle",
    # connecting: the user id webhooks name the user by; disconnecting
    "getProfileBasic", "revokeUserOAuthAccess",
}  # fmt: skip


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    # A month in one sub-range: more than a page (25) of each collection, so nextToken is used.
    return settings.replace(whoop_history_days=30, whoop_range_days=60)


async def test_every_call_of_the_whoop_client_and_every_answer_of_the_simulator_follow_the_spec(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, recording: SimState, sim_server: TestServer
) -> None:
    spec = load("whoop")
    key = await factory.api_key()
    user_id, sim_user, _ = await connect(factory, client, key)  # asks the profile for the user id
    recording.provider("whoop").user_history[sim_user] = {"workouts": 60, "days_247": 35}

    resp = await client.post(f"/api/v1/whoop/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["success"] is True
    assert any("nextToken" in r["query"] for r in recording.requests), "no collection was paged"

    receiver = str(client.make_url("/api/v1/webhooks/whoop"))
    recording.webhook_targets["whoop"] = WebhookTarget(receiver, SIM_CLIENT_SECRET)
    await emit(sim_server, sim_user, {"kind": "workout.updated"})
    night = await emit(sim_server, sim_user, {"kind": "sleep.updated"})  # sleep.updated, recovery.updated (sleep id)
    cycle_id = night["records"][1]["cycle_id"]
    await emit(sim_server, sim_user, {"kind": "recovery.updated", "id": cycle_id, "changes": {"score_state": "SCORED"}})
    events = await settled(db, 4)
    assert [e["status"] for e in events] == ["processed"] * 4, [dict(e) for e in events]

    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()

    judged = judge_all(spec, recording.requests)
    assert {j.operation_id for j in judged} == OPERATIONS
    assert all(200 <= j.status < 300 for j in judged), [j for j in judged if j.status >= 300]


@pytest.mark.parametrize(
    ("schema", "mapper", "table"),
    [("WorkoutV2", whoop.map_workout, "workouts"), ("Sleep", whoop.map_sleep, "sleep_sessions"),
     ("Recovery", whoop.map_recovery, "recoveries"), ("Cycle", whoop.map_cycle, "daily_activity")],
)  # fmt: skip
async def test_the_specs_example_records_are_stored(
    factory: Factory, db: asyncpg.Pool, schema: str, mapper: Any, table: str
) -> None:
    """Each record built from the spec's own field examples maps to a row PostgreSQL stores."""
    spec = load("whoop")
    example = example_instance(spec, {"$ref": f"#/components/schemas/{schema}"})
    assert set(spec.schema(schema).get("required", [])) <= set(example), "the spec's examples miss a field"
    user_id = uuid.UUID(await factory.user(await factory.api_key()))
    async with db.acquire() as conn:
        await upsert_records(conn, user_id, "whoop", map_page([example], mapper))
    row = await db.fetchrow(f"SELECT * FROM {table} WHERE user_id = $1", user_id)
    assert row is not None
    assert row["raw"] == example


def test_every_data_api_path_the_client_names_is_one_of_the_operations_listed() -> None:
    """A call the client's code could make but no test exercises still shows up: its path."""
    spec = load("whoop")
    assert paths_named_in_source(spec, inspect.getsource(whoop)) <= {spec.operation(o)[1] for o in OPERATIONS}
