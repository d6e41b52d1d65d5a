"""Serving `/metrics`: the numbers read at scrape time (queue depth, open tasks), the bearer
token check, and a worker's own metrics server. The metrics themselves are in wearsync.metrics."""

import asyncio
import hmac
import time

import asyncpg
import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from redis.asyncio import Redis

from wearsync.db import tasks
from wearsync.metrics import OPEN_TASKS, QUEUE_JOBS, WEBHOOK_QUEUE_JOBS
from wearsync.settings import DATA_SOURCES

log = structlog.get_logger(__name__)

OPEN_STATUSES = ("queued", "running")
INVALID_TOKEN = "Invalid or missing metrics token"
_expose = make_aiohttp_handler()


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
    for provider in DATA_SOURCES:  # the providers' syncs and the imports
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
