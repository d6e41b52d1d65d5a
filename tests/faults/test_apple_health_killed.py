"""A worker killed with SIGKILL in the middle of an Apple Health import: nothing of it is stored
(its transaction dies with it), the upload stays on disk, and another worker imports it again from
the top, storing every row once."""

import asyncio
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, process_env, start_worker, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.apple_health import write_export

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"import_dir": tmp_path / "imports"})


async def test_a_killed_workers_import_is_done_again_by_another(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, tmp_path: Path
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    export = tmp_path / "export.zip"
    summary = write_export(export, days=40)  # about 45,000 rows: a few batches of 10,000
    imports = settings.import_dir
    # arq keeps a started job from other workers for its timeout + 10 s.
    fast = settings.model_copy(update={"job_timeout_s": 20, "schedule_interval_s": 0})
    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", "worker", env=process_env(fast),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        resp = await client.post(
            f"/api/v1/users/{user_id}/imports/apple-health", data=export.read_bytes(), headers={"X-API-Key": key}
        )
        assert resp.status == 202, await resp.text()
        task_id = (await resp.json())["task_id"]
        for _ in range(1200):  # until it has written a batch (not committed)
            pages = await db.fetchval("SELECT (progress -> 'import' ->> 'pages')::int FROM sync_tasks")
            if pages:
                break
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        assert await db.fetchval("SELECT status::text FROM sync_tasks") == "running"
        assert await db.fetchval("SELECT count(*) FROM samples") == 0  # rolled back with its connection
        assert [p.name for p in imports.iterdir()] == [f"{task_id}.zip"]  # kept for the rerun
        async with start_worker(fast):
            task = await wait_for_task(client, key, task_id, timeout_s=120)
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 2  # the killed run, then the one that finished
    assert task["progress"]["import"]["records"]["samples"] == sum(summary.samples.values())  # counted once
    rows = await db.fetch("SELECT sample_type, count(*) AS n FROM samples GROUP BY 1")
    assert {r["sample_type"]: r["n"] for r in rows} == dict(summary.samples)
    assert await db.fetchval("SELECT count(*) FROM workouts") == summary.workouts
    assert await db.fetchval("SELECT count(*) FROM sleep_sessions") == summary.sleep
    assert not list(imports.iterdir())
