"""What every pull provider must do, written once and run for each: a provider added to PROVIDERS
gets these tests by adding a line to CONTRACTS (how to fault its calls, where its simulator lists
the workouts it serves). Garmin pushes its data (a sync asks for backfills, webhooks deliver
them): its bursts are tested on the backfill requests in tests/test_garmin.py."""

from collections import Counter
from dataclasses import dataclass

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, run_queued, sim_records, start_sync, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Contract:
    provider: str
    listing: str  # a path of the calls that list workouts
    other: str  # a path of another call a sync makes (or the same)
    served: str  # the key of the simulator's records that holds the workouts it serves
    query: str = ""  # a sync's parameters that ask for all there is


CONTRACTS = [
    Contract("suunto", "/v3/workouts", "/247samples/activity", "workouts"),
    Contract("polar", "/v3/exercises", "/v3/users", "exercises", "samples=true&zones=true&route=true"),
    Contract("strava", "/api/v3/athlete", "/api/v3/athlete", "activities"),
    Contract("whoop", "/developer/v2/activity/workout", "/developer/v2/cycle", "workout"),
]
RECORD_TABLES = ("workouts", "sleep_sessions", "recoveries", "daily_activity", "samples")


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.provider)
async def test_a_429_burst_and_a_5xx_burst_are_survived(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState,
    sim_server: TestServer, contract: Contract,
) -> None:  # fmt: skip
    """Three of the provider's own 429s on its listing, then two 503s on another call: the sync
    waits and retries, succeeds, and stores every workout the simulator serves."""
    key, user_id, sim_user = await factory.connected_user(contract.provider)
    sim_state.faults.append(Fault(contract.provider, contract.listing, "ratelimit", count=3))
    sim_state.faults.append(Fault(contract.provider, contract.other, "status", status=503, count=2))
    task_id = await start_sync(client, key, contract.provider, user_id)
    await run_queued(settings)
    task = await wait_for_task(client, key, task_id)

    assert task["status"] == "succeeded", task
    faults = Counter(r["status"] for r in sim_state.requests if r["provider"] == contract.provider)
    assert (faults["fault:ratelimit"], faults["fault:status"]) == (3, 2)
    served = (await sim_records(sim_server, contract.provider, sim_user))[contract.served]
    assert await db.fetchval("SELECT count(*) FROM workouts WHERE provider = $1", contract.provider) == len(served) > 0


async def record_rows(db: asyncpg.Pool) -> dict[str, list[tuple[str, str]]]:
    """Every row of the record tables as (where it is, the transaction that wrote it): a row added,
    deleted or rewritten (even with the same values) changes it."""
    return {
        t: sorted(tuple(r) for r in await db.fetch(f"SELECT ctid::text, xmin::text FROM {t}")) for t in RECORD_TABLES
    }


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.provider)
async def test_a_second_sync_adds_nothing_and_rewrites_nothing(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, contract: Contract
) -> None:
    key, user_id, _ = await factory.connected_user(contract.provider)
    first = await start_sync(client, key, contract.provider, user_id, contract.query)
    await run_queued(settings)
    assert (await wait_for_task(client, key, first))["status"] == "succeeded"
    before = await record_rows(db)
    assert before["workouts"]

    second = await start_sync(client, key, contract.provider, user_id, contract.query)
    await run_queued(settings)
    task = await wait_for_task(client, key, second)
    assert task["status"] == "succeeded", task
    assert await record_rows(db) == before
