"""A worker killed with SIGKILL in the middle of a sync: another worker finishes the task, and the
stored rows are exactly the simulator's records (none lost, none twice)."""

import signal

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, run_queued, sim_records, start_sync, wait_for_task
from tests.faults.servers import WorkerProcess
from tests.helpers import wait_until
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


async def test_a_killed_workers_task_is_finished_by_another(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: object
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 600}
    # Ten pages come back at once; the eleventh is held until the worker is dead.
    held = Fault("suunto", "/v3/workouts", "hold", skip=10)
    sim_state.faults.append(held)
    # One job for the whole sync, with a short timeout, so that the killed worker's job is given to
    # another worker soon: arq keeps a started job from others for its timeout + 10 s.
    fast = settings.model_copy(update={"job_timeout_s": 5, "job_max_pages": 0, "schedule_interval_s": 0})
    async with WorkerProcess(fast) as victim:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=10")

        async def holding() -> bool:
            return held.count == 0

        await wait_until(holding, "a page held", detail=victim.log)
        victim.send_signal(signal.SIGKILL)
        assert await victim.exit_code() == -signal.SIGKILL
    held.released.set()
    stored_when_killed = await db.fetchval("SELECT count(*) FROM workouts")
    assert 0 < stored_when_killed < 600  # killed mid-sync
    await run_queued(fast)  # what is queued: the rest of the task
    task = await wait_for_task(client, key, task_id)
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2  # the killed run, then the one that finished
    served = await sim_records(sim_server, "suunto", sim_user)  # type: ignore[arg-type]
    stored = [r["provider_record_id"] for r in await db.fetch("SELECT provider_record_id FROM workouts")]
    assert sorted(stored) == sorted(w["workoutKey"] for w in served["workouts"])  # none lost, none twice
    assert task["progress"]["workouts"]["records"] == {"workouts": 600}
