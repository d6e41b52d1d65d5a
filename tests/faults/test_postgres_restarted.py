"""PostgreSQL restarted during a sync: the worker process reconnects and its job's retry finishes the
task with every record stored once; the API answers 503 with a clear detail, quickly, while the
database is down, refuses connections or does not answer, and works again after."""

import asyncio
import json
import os
import signal
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq import Retry

from tests.conftest import Factory, start_sync, stored_suunto_workouts_as_served, wait_for_task
from tests.faults.conftest import on_own_postgres
from tests.faults.servers import OwnPostgres, WorkerProcess
from tests.fuzzing import hook_path
from tests.helpers import wait_until
from tests.test_strava_webhooks import emit as strava_emit
from tests.test_strava_webhooks import subscribe
from wearsync import worker as jobs
from wearsync.api.app import create_app
from wearsync.deps import Deps
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
DOWN = {"detail": "Database unavailable, try again later"}
ACTIVITIES = 20  # announced by Strava's webhook


@pytest.fixture
def settings(settings: Settings, own_postgres: OwnPostgres) -> Settings:
    return on_own_postgres(settings, own_postgres)


async def answers(client: Client, method: str, path: str, key: str) -> tuple[int, object, float]:
    """(status, JSON body, seconds taken) of one API call. It must come within 30 s: half of what
    asyncpg waits for a connection by itself, 30 times the connect timeout the test sets (1 s)."""
    started = asyncio.get_running_loop().time()
    resp = await asyncio.wait_for(client.request(method, path, headers={"X-API-Key": key}), 30)
    return resp.status, await resp.json(), asyncio.get_running_loop().time() - started


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
async def test_a_sync_goes_on_after_postgres_restarts(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: object,
    own_postgres: OwnPostgres, stop_mode: str,
) -> None:  # fmt: skip
    suunto = sim_state.provider("suunto")
    suunto.latency_s, suunto.rate_limits = 0.05, [(100000, 900)]
    key, user_id, sim_user = await factory.connected_user("suunto")
    other_user = await factory.user(key)
    await factory.connect(key, other_user, "suunto", f"{sim_user}-other")
    suunto.user_history[sim_user] = {"workouts": 600}
    async with WorkerProcess(settings.model_copy(update={"job_max_pages": 0})) as worker:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")
        await wait_until(lambda: db.fetchval("SELECT count(*) >= 100 FROM workouts"), "first rows stored")
        suunto.latency_s = 5  # the sync cannot end before PostgreSQL is down
        await own_postgres.stop(stop_mode)

        # While PostgreSQL is down: 503 with a detail, at once, for any call that needs it.
        for method, path in [("POST", f"/api/v1/suunto/users/{other_user}/sync?data_type=workouts"),
                             ("GET", f"/api/v1/tasks/{task_id}"), ("GET", f"/api/v1/users/{user_id}")]:  # fmt: skip
            status, body, _ = await answers(client, method, path, key)
            assert (status, body) == (503, DOWN), (method, path)
        status, body, _ = await answers(client, "GET", "/health", key)
        assert status == 503
        assert body["detail"] == "Unavailable: postgres", body  # type: ignore[index]
        await wait_until(
            lambda: worker.logged("database unavailable, retrying the task"), "the job noticing", detail=worker.log
        )
        assert worker.alive, worker.log()

        await own_postgres.start()
        suunto.latency_s = 0.05
        task = await wait_for_task(client, key, task_id)
        assert task["status"] == "succeeded", task
        assert task["attempts"] >= 2, task  # the run cut by the restart, then the retry that finished
        # The API and the worker work as before.
        again = await start_sync(client, key, "suunto", other_user, "data_type=workouts&limit=10")
        assert (await wait_for_task(client, key, again))["status"] == "succeeded"
        assert worker.alive, worker.log()
    stored = await stored_suunto_workouts_as_served(db, sim_server, user_id, sim_user)  # type: ignore[arg-type]
    assert len(stored) == 600  # none lost, none twice
    assert task["progress"]["workouts"]["records"]["workouts"] >= 600


async def test_the_api_answers_503_quickly_while_postgres_refuses_or_does_not_answer(
    client: Client, factory: Factory, own_postgres: OwnPostgres, settings: Settings, aiohttp_client: Any
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    path = f"/api/v1/users/{user_id}"
    await own_postgres.stop()
    await own_postgres.start()  # the API's pooled connections are gone: each call must connect

    # Every connection slot taken: "sorry, too many clients already".
    held = []
    try:
        while True:
            held.append(await asyncpg.connect(own_postgres.admin_dsn))
    except asyncpg.TooManyConnectionsError:
        pass
    try:
        status, body, _ = await answers(client, "GET", path, key)
        assert (status, body) == (503, DOWN)
    finally:
        await asyncio.gather(*(conn.close() for conn in held))
    assert (await answers(client, "GET", path, key))[0] == 200

    # Accepting connections but never answering (a hung server): the connect timeout (1 s) ends the
    # wait, as nothing else would within `answers`' 30 s (a pool's wait for a connection: an hour).
    patient: Client = await aiohttp_client(create_app(settings.model_copy(update={"db_acquire_timeout_s": 3600})))
    await own_postgres.stop()
    await own_postgres.start()  # its pooled connections are gone too
    os.kill(own_postgres.pid(), signal.SIGSTOP)
    try:
        status, body, took = await answers(patient, "GET", path, key)
        assert (status, body) == (503, DOWN)
        assert took >= 1  # it did wait for the connection
    finally:
        os.kill(own_postgres.pid(), signal.SIGCONT)
    assert (await answers(client, "GET", path, key))[0] == 200


async def test_a_job_that_crashes_while_postgres_is_down_is_retried_and_its_rerun_records_the_failure(
    client: Client, factory: Factory, deps: Deps, own_postgres: OwnPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash the job cannot record (the database is gone too) must not leave its task running
    for good: the job is retried, and its rerun, with the database back, records the failure."""
    key, user_id, _ = await factory.connected_user("suunto")
    task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")  # no worker takes it

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an error no one expected, as the database went away")

    monkeypatch.setattr(jobs, "run_task", crash)
    await own_postgres.stop()
    with pytest.raises(Retry):
        await jobs.sync_task({"deps": deps, "job_try": 1}, task_id)
    await own_postgres.start()
    assert await jobs.sync_task({"deps": deps, "job_try": 2}, task_id) is None
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "failed", task
    assert "internal error: RuntimeError('an error no one expected" in task["error"], task


async def test_webhook_events_in_flight_survive_a_postgres_restart(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_server: TestServer,
    sim_state: SimState, own_postgres: OwnPostgres,
) -> None:  # fmt: skip
    """Strava announces activities; some are being fetched when PostgreSQL restarts. A delivery
    meanwhile is answered 503, so that Strava sends it again; the jobs that lost the database are
    retried: every activity stored, once."""
    retrying = settings.replace(webhook_retry_first_s=0, webhook_reap_after_s=5, strava_rate_limits="100000/900")
    strava = sim_state.provider("strava")
    strava.rate_limits = [(100000, 900)]
    await subscribe(client, retrying)
    _, _, sim_user = await factory.connected_user("strava")
    async with WorkerProcess(retrying) as worker:
        strava.latency_s = 0.5  # fetches still in flight when PostgreSQL goes
        emitted = [await strava_emit(sim_server, sim_user, {"kind": "create"}) for _ in range(ACTIVITIES)]
        assert {e["delivery_status"] for e in emitted} == {200}
        await wait_until(lambda: db.fetchval("SELECT count(*) >= 2 FROM workouts"), "first activities stored")
        await own_postgres.stop("fast")
        refused = await strava_emit(sim_server, sim_user, {"kind": "create"})
        assert refused["delivery_status"] == 503  # not acknowledged: Strava sends it again
        await own_postgres.start()
        strava.latency_s = 0
        resp = await client.post(hook_path("strava"), data=json.dumps(refused["event"]))  # Strava's retry
        assert await resp.json() == {"received": 1, "new": 1}

        async def all_processed() -> bool:
            statuses = await db.fetch("SELECT status FROM webhook_events")
            return len(statuses) == ACTIVITIES + 1 and all(s["status"] == "processed" for s in statuses)

        await wait_until(all_processed, "every event processed", detail=worker.log)
    rows = await db.fetch("SELECT provider_record_id FROM workouts WHERE provider = 'strava'")
    expected = [str(e["activity"]["id"]) for e in [*emitted, refused]]
    assert sorted(r["provider_record_id"] for r in rows) == sorted(expected)
