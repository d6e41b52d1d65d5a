"""Webhook follow-up work under faults: Garmin ping callbacks failing for minutes. Every record the
simulator delivered ends stored, exactly once. (Redis and PostgreSQL restarted with webhook events
in flight: test_redis_restarted.py, test_postgres_restarted.py.)

"Minutes" are time control, not waiting: `webhook_retry_first_s=0` makes a failed event due again
at once, and the test runs the reaper each round."""

import functools
import uuid

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq import create_pool
from arq.connections import RedisSettings

from tests.conftest import Factory, sim_records, start_sync, start_worker, wait_for_task
from tests.helpers import wait_until
from tests.test_garmin import assert_stored, wait_for_task_state
from tests.test_garmin_webhooks import TYPES, connect, emit, in_window, set_target
from wearsync.settings import Settings
from wearsync.sim import garmin as garmin_sim
from wearsync.sim.common import Fault, SimState
from wearsync.worker import reap_webhook_events

Client = TestClient[web.Request, web.Application]
ACTIVITIES = 20


async def all_events(db: asyncpg.Pool, count: int, status: str, attempts: int | None = None) -> bool:
    """Whether there are `count` events, each `status` (after `attempts` tries, if given)."""
    rows = await db.fetch("SELECT status, attempts FROM webhook_events")
    wanted = [r for r in rows if r["status"] == status and attempts in (None, r["attempts"])]
    return len(rows) == len(wanted) == count


async def test_garmin_pings_whose_callbacks_fail_for_minutes_land_once_they_answer(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer,
    sim_state: SimState,
) -> None:  # fmt: skip
    retrying = settings.replace(webhook_retry_first_s=0, garmin_rate_limits="100000/60")
    sim_state.provider("garmin").rate_limits = [(100000, 60)]
    key, user_id, sim_user, _ = await connect(factory, retrying, sim_state)
    assert await emit(sim_server, sim_user, {"kind": "delivery_mode", "mode": "ping"}) == {"mode": "ping"}
    set_target(sim_state, client)
    # Every callback answers 503 until the test clears the faults: four rounds of tries.
    sim_state.faults.extend(Fault("garmin", f"/wellness-api/rest/{t}", "status", 503, count=-1) for t in TYPES)
    redis = await create_pool(RedisSettings.from_dsn(retrying.redis_url), default_queue_name=retrying.queue_name)
    try:
        async with start_worker(retrying) as worker:
            task_id = await start_sync(client, key, "garmin", user_id)

            async def requested() -> bool:  # every backfill asked for: the simulator's pings are on their way
                backfill = (await wait_for_task_state(client, key, task_id)).get("backfill") or {}
                return bool(backfill.get("requested") == len(TYPES))

            await wait_until(requested, "every backfill requested")
            await garmin_sim.deliveries_sent(sim_server.app)
            pings = await db.fetchval("SELECT count(*) FROM webhook_events")
            assert pings > 0
            for attempt in (1, 2, 3, 4):
                failed = functools.partial(all_events, db, pings, "failed", attempt)
                await wait_until(failed, f"every ping failed {attempt} times", 60)
                assert await reap_webhook_events({"deps": worker.ctx["deps"], "redis": redis}) == pings
            # Still waiting for what it asked for, not done with a record missing.
            assert (await wait_for_task_state(client, key, task_id))["status"] == "running"
            sim_state.faults.clear()
            await wait_until(lambda: all_events(db, pings, "processed", 5), "every ping processed")
            task = await wait_for_task(client, key, task_id)
            assert task["status"] == "succeeded", task
    finally:
        await redis.aclose()
    (start, end), *_ = {(w["start"], w["end"]) for w in task["backfill"]["windows"]}
    served = await sim_records(sim_server, "garmin", sim_user)
    await assert_stored(db, uuid.UUID(user_id), in_window(served, start, end), served["offset_seconds"] // 60)
