"""A task deferred for a rate limit says so: its data type is `waiting`, with the time it goes on
(the task itself stays `running`, as the contract's statuses are), in the API and in the CLI."""

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_sync, start_worker
from tests.helpers import wait_until
from wearsync.operate import progress_line
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


async def task_when(client: Client, key: str, task_id: str, status: str) -> dict[str, Any]:
    """Poll the task endpoint until its workouts' progress has `status`."""

    async def there() -> dict[str, Any] | None:
        resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
        task: dict[str, Any] = await resp.json()
        return task if task["progress"].get("workouts", {}).get("status") == status else None

    return await wait_until(there, f"the task's workouts {status}")


async def test_a_task_deferred_for_a_rate_limit_says_when_it_goes_on(
    client: Client, factory: Factory, settings: Settings
) -> None:
    # Our share of Strava: 2 calls a minute, waited out in the job for at most 0.2 s: the third
    # page's call defers the job until the minute's window ends.
    settings = settings.model_copy(
        update={"strava_rate_limits": "2/60", "rate_limit_max_wait_s": 0.2, "strava_page_concurrency": 1}
    )
    async with start_worker(settings):
        key, user_id, _ = await factory.connected_user("strava")
        started = datetime.now(UTC)
        task = await task_when(client, key, await start_sync(client, key, "strava", user_id), "waiting")
    progress = task["progress"]["workouts"]
    resumes_at = datetime.fromisoformat(progress["resumes_at"])
    assert task["status"] == "running"
    assert started < resumes_at <= started + timedelta(seconds=61), (started, progress)
    assert "retry in" in progress["error"]
    assert f"resumes at {resumes_at:%H:%M:%S} UTC" in progress_line("workouts", progress)


def test_progress_that_is_not_waiting_names_no_resumption() -> None:
    done = {"status": "succeeded", "pages": 3, "records": {"workouts": 450}, "error": None, "resumes_at": None}
    assert "resumes" not in progress_line("workouts", done)
