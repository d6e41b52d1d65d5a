"""Redis hangs (it takes connections and commands and answers nothing), or answers an error: a
metrics scrape leaves the queue depth out, within its bound, and leaves nothing behind: no
connection kept in use, none with a reply still to come, no unclosed pipeline or connection to warn
about."""

import time

import asyncpg
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tests.faults.servers import OwnRedis, nothing_left_open
from wearsync import metrics_server
from wearsync.settings import Settings


def queue_jobs(state: str) -> float | None:
    return REGISTRY.get_sample_value("wearsync_queue_jobs", {"state": state})


async def test_a_scrape_cut_off_by_a_hung_redis_or_failed_releases_its_connection(
    settings: Settings, db: asyncpg.Pool, own_redis: OwnRedis
) -> None:
    queue = settings.queue_name
    # One connection at most: one kept in use by the scrape that was cut off fails the next command.
    redis = Redis.from_url(own_redis.url, max_connections=1)
    with nothing_left_open():
        try:
            await redis.zadd(queue, {"ready-job": 0})
            await metrics_server.count_open_work(db, redis, queue, f"{queue}:webhooks")
            assert (queue_jobs("ready"), queue_jobs("deferred")) == (1, 0)

            own_redis.pause()
            try:
                await metrics_server.count_open_work(db, redis, queue, f"{queue}:webhooks", timeout_s=0.2)
                assert queue_jobs("ready") is None  # left out of the scrape
            finally:
                own_redis.resume()

            broken = f"{queue}:broken"
            await redis.set(broken, "not a sorted set")
            await metrics_server.count_open_work(db, redis, broken, f"{queue}:webhooks")  # Redis answers WRONGTYPE
            assert queue_jobs("ready") is None

            await redis.zadd(queue, {"deferred-job": time.time() * 1000 + 600_000})
            await metrics_server.count_open_work(db, redis, queue, f"{queue}:webhooks")
            # This scrape's answer, not the one still due to the scrape that was cut off.
            assert (queue_jobs("ready"), queue_jobs("deferred")) == (1, 1)
        finally:
            await redis.aclose()
        del redis
