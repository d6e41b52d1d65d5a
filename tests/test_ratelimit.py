"""The Redis rate limiter and the reading of providers' rate-limit headers."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from email.utils import formatdate

import pytest
from redis.asyncio import Redis

from wearsync.providers.errors import RateLimited
from wearsync.providers.http import retry_after_seconds
from wearsync.providers.ratelimit import RateLimit, RateLimiter, parse_rate_limits


@pytest.fixture
async def redis(servers: tuple[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(servers[1])
    yield client
    await client.aclose()


def limiter(redis: Redis, max_wait_s: float = 5.0) -> RateLimiter:
    return RateLimiter(redis, prefix=f"test:{uuid.uuid4().hex}", max_wait_s=max_wait_s)


def test_parse_rate_limits() -> None:
    assert parse_rate_limits("100/900, 1000/86400") == (RateLimit(100, 900), RateLimit(1000, 86400))
    assert parse_rate_limits("") == ()
    for bad in ("100", "0/60", "10/-1", "x/60"):
        with pytest.raises(ValueError, match=r"."):
            parse_rate_limits(bad)


async def test_slots_within_the_limit_are_granted_at_once_and_counted(redis: Redis) -> None:
    rl = limiter(redis)
    limits = (RateLimit(5, 3600), RateLimit(50, 86400))
    started = time.monotonic()
    for _ in range(5):
        await rl.acquire("p", limits)
    assert time.monotonic() - started < 1
    assert await rl.usage("p", limits[0]) == 5
    assert await rl.usage("p", limits[1]) == 5
    assert await rl.usage("other", limits[0]) == 0  # buckets are separate


async def test_a_full_window_raises_with_the_time_until_it_ends(redis: Redis) -> None:
    rl = limiter(redis, max_wait_s=1.0)
    limits = (RateLimit(2, 3600),)
    await rl.acquire("p", limits)
    await rl.acquire("p", limits)
    with pytest.raises(RateLimited) as raised:
        await rl.acquire("p", limits)
    seconds_left = 3600 - time.time() % 3600
    assert abs(raised.value.retry_after_s - seconds_left) < 2
    assert await rl.usage("p", limits[0]) == 2  # a refused call takes no slot


async def test_a_full_long_window_blocks_even_when_the_short_one_is_free(redis: Redis) -> None:
    rl = limiter(redis, max_wait_s=0.5)
    limits = (RateLimit(100, 1), RateLimit(3, 86400))
    for _ in range(3):
        await rl.acquire("p", limits)
    with pytest.raises(RateLimited):
        await rl.acquire("p", limits)


async def test_a_short_wait_is_slept_through_and_concurrent_callers_share_the_limit(redis: Redis) -> None:
    rl = limiter(redis, max_wait_s=3.0)
    limits = (RateLimit(4, 1),)
    # Start just after a window boundary so the 10 calls span exactly three windows.
    await asyncio.sleep(1 - time.time() % 1 + 0.01)
    stamps: list[float] = []

    async def call() -> None:
        await rl.acquire("p", limits)
        stamps.append(time.time())

    await asyncio.gather(*(call() for _ in range(10)))
    per_second: dict[int, int] = {}
    for stamp in stamps:
        per_second[int(stamp)] = per_second.get(int(stamp), 0) + 1
    assert max(per_second.values()) <= 4
    assert len(per_second) >= 3


def test_retry_after_seconds_reads_each_providers_headers() -> None:
    assert retry_after_seconds({"Retry-After": "12"}, 60) == 12
    in_30s = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"Retry-After": in_30s}, 60) <= 31
    assert retry_after_seconds({"Retry-After": "soon"}, 60) == 60
    assert retry_after_seconds({"X-RateLimit-Reset": "7"}, 60) == 7  # Whoop: seconds to go
    assert 9 <= retry_after_seconds({"X-RateLimit-Reset": str(int(time.time()) + 10)}, 60) <= 10  # an epoch
    # Strava: the 15-minute window is used up -> until the next quarter hour.
    quarter = retry_after_seconds({"X-RateLimit-Limit": "100,1000", "X-RateLimit-Usage": "100,400"}, 60)
    assert abs(quarter - (900 - time.time() % 900)) < 2
    # ... the daily one -> until midnight UTC.
    day = retry_after_seconds({"X-RateLimit-Limit": "100,1000", "X-RateLimit-Usage": "12,1000"}, 60)
    assert abs(day - (86400 - time.time() % 86400)) < 2
    assert retry_after_seconds({}, 45) == 45
