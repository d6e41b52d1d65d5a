"""Prometheus metrics: all defined here, recorded by one-line calls where things happen, served at
`/metrics` by the API and, with WEARSYNC_WORKER_METRICS_PORT, by each worker on a port of its own.

Labels stay bounded: route names (never paths), provider names, HTTP statuses, outcomes. No metric
carries a user, a task, a URL or a secret."""

import asyncio
import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from redis.asyncio import Redis

from wearsync.db import tasks
from wearsync.providers.errors import JobSliceDone, RateLimited
from wearsync.settings import PROVIDER_NAMES

log = structlog.get_logger(__name__)

HTTP_REQUESTS = Counter("wearsync_http_requests", "API requests by route name and status", ["route", "status"])
HTTP_SECONDS = Histogram("wearsync_http_request_duration_seconds", "API request latency by route name", ["route"])
TASK_RUN_SECONDS = Histogram(
    "wearsync_task_run_duration_seconds",
    "Runs of sync tasks (one worker job, or one sync call) by provider and outcome",
    ["provider", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf")),
)
UPSTREAM_REQUESTS = Counter(
    "wearsync_upstream_requests", "Provider API calls (every attempt) by provider and status", ["provider", "status"]
)
UPSTREAM_SECONDS = Histogram("wearsync_upstream_request_duration_seconds", "Provider API call latency", ["provider"])
RATE_LIMIT_WAITS = Counter("wearsync_rate_limit_waits", "Waits for a provider's rate limit", ["provider", "reason"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "wearsync_rate_limit_wait_seconds", "Seconds waited (or deferred) for rate limits", ["provider", "reason"]
)
WEBHOOK_EVENTS_DROPPED = Counter(
    "wearsync_webhook_events_dropped",
    "Webhook events dropped at receipt, as no active connection names their user",
    ["provider"],
)
QUEUE_JOBS = Gauge("wearsync_queue_jobs", "Jobs in the arq queue: ready to run, or deferred to later", ["state"])
WEBHOOK_QUEUE_JOBS = Gauge(
    "wearsync_webhook_queue_jobs", "Jobs in the webhook jobs' queue: ready to run, or deferred to later", ["state"]
)
OPEN_TASKS = Gauge("wearsync_open_tasks", "Sync tasks queued or running, from PostgreSQL", ["provider", "status"])

UNMATCHED = "unmatched"  # every request that matched no route: one label, whatever its path
OPEN_STATUSES = ("queued", "running")
INVALID_TOKEN = "Invalid or missing metrics token"
_expose = make_aiohttp_handler()


def observe_request(request: web.Request, status: int, seconds: float) -> None:
    route = request.match_info.route
    resource = route.resource
    name = route.name or (resource.canonical if resource is not None else UNMATCHED)
    HTTP_REQUESTS.labels(name, str(status)).inc()
    HTTP_SECONDS.labels(name).observe(seconds)


def upstream_call(provider: str, status: int | str, seconds: float) -> None:
    """`status`: the HTTP status, or "timeout" / "error" when no answer came."""
    UPSTREAM_REQUESTS.labels(provider, str(status)).inc()
    UPSTREAM_SECONDS.labels(provider).observe(seconds)


def rate_limit_wait(provider: str, reason: str, seconds: float) -> None:
    """`reason`: "limiter" (our shared limiter), "upstream_429" (the provider said so) or
    "deferred" (the job was put back in the queue for that long)."""
    RATE_LIMIT_WAITS.labels(provider or "unknown", reason).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(provider or "unknown", reason).inc(seconds)


@dataclass
class TaskRun:
    provider: str
    outcome: str = "error"  # unless the run ends otherwise: it crashed, timed out or was cancelled


@contextmanager
def task_run(provider: str) -> Iterator[TaskRun]:
    """Times one run of a task; the caller sets `outcome` to the task's status when it ends, and
    a rate limit that escapes makes it "deferred" ("continued" when the job's page share is used)."""
    run, started = TaskRun(provider), time.perf_counter()
    try:
        yield run
    except JobSliceDone:
        run.outcome = "continued"
        raise
    except RateLimited:
        run.outcome = "deferred"
        raise
    finally:
        TASK_RUN_SECONDS.labels(provider, run.outcome).observe(time.perf_counter() - started)


# KEYS: queue, webhook queue. ARGV: now (ms). Jobs that may run now, and all jobs, of each: read at
# once, so ready <= total.
_QUEUE_DEPTH = """
return {redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]), redis.call('ZCARD', KEYS[1]),
        redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1]), redis.call('ZCARD', KEYS[2])}
"""


async def count_open_work(
    db: asyncpg.Pool, redis: Redis, queue_name: str, webhook_queue_name: str, timeout_s: float = 2
) -> None:
    """Queue depth and open tasks, read at scrape time (arq scores each job by when it may run, in
    ms). When Redis or PostgreSQL does not answer within `timeout_s`, they are left out and the rest
    is still served.

    One Redis command rather than a pipeline: cut off by the timeout or failed, redis-py closes the
    command's connection (a reply may still be on its way) and gives it back to the pool, and there is
    no pipeline object left holding one."""
    now_ms = int(time.time() * 1000)
    try:
        async with asyncio.timeout(timeout_s):
            ready, total, hooks_ready, hooks_total = await redis.eval(  # type: ignore[misc]  # stubs: sync
                _QUEUE_DEPTH, 2, queue_name, webhook_queue_name, str(now_ms)
            )
            counts = await tasks.open_task_counts(db)
    except Exception as e:
        log.warning("queue depth unavailable for metrics", error=repr(e))
        QUEUE_JOBS.clear()
        WEBHOOK_QUEUE_JOBS.clear()
        OPEN_TASKS.clear()
        return
    QUEUE_JOBS.labels("ready").set(ready)
    QUEUE_JOBS.labels("deferred").set(total - ready)
    WEBHOOK_QUEUE_JOBS.labels("ready").set(hooks_ready)
    WEBHOOK_QUEUE_JOBS.labels("deferred").set(hooks_total - hooks_ready)
    for provider in PROVIDER_NAMES:
        for status in OPEN_STATUSES:
            OPEN_TASKS.labels(provider, status).set(counts.get((provider, status), 0))


def authorized(request: web.Request, token: str) -> bool:
    """Without a token anyone may scrape; with one, only `Authorization: Bearer <token>`."""
    if not token:
        return True
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")  # a header may not be UTF-8
    return hmac.compare_digest(given, f"Bearer {token}".encode())


async def expose(request: web.Request) -> web.StreamResponse:
    """This process's metrics, in the format the scraper asks for (Prometheus text or OpenMetrics)."""
    return await _expose(request)


async def start_server(host: str, port: int, token: str) -> web.AppRunner:
    """A worker's own `/metrics` endpoint on the worker's event loop; `cleanup()` stops it."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        if not authorized(request, token):
            return web.json_response({"detail": INVALID_TOKEN}, status=401, headers={"WWW-Authenticate": "Bearer"})
        return await expose(request)

    app = web.Application()
    app.router.add_get("/metrics", metrics, name="metrics")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
