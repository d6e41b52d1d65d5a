"""The Redis rate limiter and the reading of providers' rate-limit headers."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from wearsync.models import RateLimit, parse_rate_limits
from wearsync.providers.errors import RateLimited
from wearsync.providers.http import retry_after_seconds
from wearsync.providers.ratelimit import ACTIVE_TENANT_MS, RateLimiter


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


@dataclass
class Clock:
    """The limiter's time, in ms, set by the test: where each call falls is then exact."""

    now_ms: int = 0

    def __call__(self) -> int:
        return self.now_ms


def pinned(redis: Redis, clock: Clock, max_wait_s: float = 0.0) -> RateLimiter:
    return RateLimiter(redis, prefix=f"test:{uuid.uuid4().hex}", max_wait_s=max_wait_s, clock_ms=clock)


WINDOW_MS = 10_000
LIMIT = (RateLimit(3, WINDOW_MS // 1000),)
START = 1_700_000_000_000 // WINDOW_MS * WINDOW_MS  # the start of some window


async def refused_wait_s(rl: RateLimiter, tenant: str = "") -> float:
    with pytest.raises(RateLimited) as raised:
        await rl.acquire("p", LIMIT, tenant)
    return raised.value.retry_after_s


async def test_a_call_late_in_a_window_also_counts_in_the_next(redis: Redis) -> None:
    clock = Clock(START + WINDOW_MS - 500)  # the last second (at most a quarter) of a window
    rl = pinned(redis, clock)
    await rl.acquire("p", LIMIT)
    clock.now_ms = START + WINDOW_MS + 100  # the next window: it holds the late call already
    assert await rl.usage("p", LIMIT[0]) == 1
    await rl.acquire("p", LIMIT)
    await rl.acquire("p", LIMIT)
    # ... so the limit is reached one call early, and the wait is until this window ends.
    assert await refused_wait_s(rl) == (WINDOW_MS - 100) / 1000


async def test_a_call_before_the_last_second_counts_in_its_window_only(redis: Redis) -> None:
    clock = Clock(START + WINDOW_MS - 1000)  # exactly 1 s left: not late yet
    rl = pinned(redis, clock)
    for _ in range(3):
        await rl.acquire("p", LIMIT)
    assert await refused_wait_s(rl) == 1.0  # full until its end
    clock.now_ms = START + WINDOW_MS
    for _ in range(3):  # the next window starts empty
        await rl.acquire("p", LIMIT)


async def test_a_call_on_its_way_holds_a_slot_in_each_window_it_lasts_into(redis: Redis) -> None:
    """The provider counts a call when it arrives: a call a loaded machine delays past its
    window's end may land in the next one, and takes a slot there until it is done."""
    clock = Clock(START + 100)  # early in a window: not late
    rl = pinned(redis, clock)
    call = await rl.start_call("p", LIMIT)
    clock.now_ms = START + WINDOW_MS + 100  # the next window, the call still on its way
    assert await rl.usage("p", LIMIT[0]) == 0
    await rl.acquire("p", LIMIT)
    await rl.acquire("p", LIMIT)
    assert await refused_wait_s(rl) == (WINDOW_MS - 100) / 1000  # the third slot is the call's
    await rl.end_call(call)  # answered in this window: it may have arrived here, so it counts here
    assert await rl.usage("p", LIMIT[0]) == 3
    clock.now_ms = START + 2 * WINDOW_MS  # done: it holds nothing in later windows
    for _ in range(3):
        await rl.acquire("p", LIMIT)


async def test_a_call_done_in_its_own_window_counts_once(redis: Redis) -> None:
    clock = Clock(START + 100)
    rl = pinned(redis, clock)
    await rl.end_call(await rl.start_call("p", LIMIT))
    await rl.acquire("p", LIMIT)
    assert await rl.usage("p", LIMIT[0]) == 2
    clock.now_ms = START + WINDOW_MS
    for _ in range(3):
        await rl.acquire("p", LIMIT)


async def test_a_call_never_reported_done_holds_slots_until_its_deadline(redis: Redis) -> None:
    """Its process died mid-call: its slot is free again once the call cannot be running."""
    clock = Clock(START + 100)
    rl = RateLimiter(redis, prefix=f"test:{uuid.uuid4().hex}", max_wait_s=0, clock_ms=clock, max_call_s=5)
    await rl.start_call("p", LIMIT)
    clock.now_ms = START + 60_100  # a window starting before its 5 s and a minute of slack end
    await rl.acquire("p", LIMIT)
    await rl.acquire("p", LIMIT)
    assert await refused_wait_s(rl) > 0
    clock.now_ms = START + 100 + 65_000 + 1  # the same window, past the deadline
    await rl.acquire("p", LIMIT)


async def test_a_short_windows_late_part_is_its_last_quarter(redis: Redis) -> None:
    limit = (RateLimit(1, 2),)  # 2 s: late in its last 0.5 s, not its last 1 s
    clock = Clock(START + 1400)
    rl = pinned(redis, clock)
    await rl.acquire("p", limit)
    clock.now_ms = START + 2000
    await rl.acquire("p", limit)  # not counted in this window before: granted
    clock.now_ms = START + 3600  # late in this one: its next window is taken too
    with pytest.raises(RateLimited):
        await rl.acquire("p", limit)
    clock.now_ms = START + 4000
    await rl.acquire("p", limit)


async def test_the_limiters_keys_expire_after_two_windows_and_a_minute(redis: Redis) -> None:
    clock = Clock(START + WINDOW_MS - 500)
    rl = pinned(redis, clock)
    await rl.acquire("p", LIMIT, "tenant-a")
    keys = sorted(k.decode() for k in await redis.keys(f"{rl.prefix}:*"))
    window = START // WINDOW_MS
    counted = [f"{rl.prefix}:p:10:{w}" for w in (window, window + 1)] + [f"{rl.prefix}:p:10:{window}:tenant-a"]
    assert keys == sorted([*counted, f"{rl.prefix}:p:tenants"])
    for key in counted:
        assert 2 * WINDOW_MS < await redis.pttl(key) <= 2 * WINDOW_MS + 60_000
    assert 0 < await redis.pttl(f"{rl.prefix}:p:tenants") <= 2 * WINDOW_MS + ACTIVE_TENANT_MS + 60_000


async def test_a_lone_tenant_gets_the_whole_window(redis: Redis) -> None:
    rl = pinned(redis, Clock(START + 100))
    for _ in range(3):
        await rl.acquire("p", LIMIT, "flood")
    assert await rl.usage("p", LIMIT[0], "flood") == 3


async def test_a_flooding_tenant_leaves_the_others_their_share(redis: Redis) -> None:
    limits = (RateLimit(10, WINDOW_MS // 1000),)
    clock = Clock(START + 100)
    rl = pinned(redis, clock)
    await rl.acquire("p", limits, "quiet")  # the other tenant has asked: it is active
    clock.now_ms += 1
    for _ in range(5):  # its share: half the window ...
        await rl.acquire("p", limits, "flood")
    with pytest.raises(RateLimited) as raised:
        await rl.acquire("p", limits, "flood")
    assert raised.value.retry_after_s == (WINDOW_MS - 101) / 1000  # ... then a wait until the window ends
    for _ in range(4):  # the quiet tenant's share is there for it
        await rl.acquire("p", limits, "quiet")
    assert await rl.usage("p", limits[0]) == 10
    clock.now_ms = START + 101 + ACTIVE_TENANT_MS  # the quiet tenant asked nothing for a while
    for _ in range(10):
        await rl.acquire("p", limits, "flood")


async def test_a_tenant_told_to_wait_keeps_its_share_of_the_next_window(redis: Redis) -> None:
    window_ms = 100_000  # longer than the activity time
    limits = (RateLimit(10, window_ms // 1000),)
    clock = Clock(START // window_ms * window_ms + 100)
    rl = pinned(redis, clock)
    for _ in range(10):  # alone: the whole window
        await rl.acquire("p", limits, "flood")
    with pytest.raises(RateLimited):
        await rl.acquire("p", limits, "late-comer")
    # The next window opens, longer after the late-comer's ask than the activity time, and the
    # flood asks first ...
    clock.now_ms += window_ms
    assert window_ms > ACTIVE_TENANT_MS
    for _ in range(5):
        await rl.acquire("p", limits, "flood")
    with pytest.raises(RateLimited):  # ... and gets half: the other was told to wait for this window
        await rl.acquire("p", limits, "flood")


async def test_a_tenants_users_share_its_share(redis: Redis) -> None:
    """Within a tenant alone, its users share the whole limit; with another tenant active, its
    share; a user past its part waits while another user of the tenant still has some."""
    limits = (RateLimit(12, WINDOW_MS // 1000),)
    clock = Clock(START + 100)
    rl = pinned(redis, clock)
    await rl.acquire("p", limits, "app", "quiet")
    for _ in range(5):  # half of the app's whole limit (12), less the quiet user's one
        await rl.acquire("p", limits, "app", "flood")
    await rl.acquire("p", limits, "app", "flood")
    with pytest.raises(RateLimited):
        await rl.acquire("p", limits, "app", "flood")
    assert await rl.usage("p", limits[0], "app", "flood") == 6
    for _ in range(5):
        await rl.acquire("p", limits, "app", "quiet")
    assert await rl.usage("p", limits[0], "app") == 12
    # Another tenant: the app's users now share the app's half.
    clock.now_ms += WINDOW_MS
    await rl.acquire("p", limits, "other")
    for _ in range(3):
        await rl.acquire("p", limits, "app", "flood")
    with pytest.raises(RateLimited):
        await rl.acquire("p", limits, "app", "flood")
    for _ in range(3):
        await rl.acquire("p", limits, "app", "quiet")
    with pytest.raises(RateLimited):  # the app's share is used up too
        await rl.acquire("p", limits, "app", "quiet")
    for _ in range(5):
        await rl.acquire("p", limits, "other")


async def test_an_announced_tenant_has_its_share_before_it_asks(redis: Redis) -> None:
    limits = (RateLimit(10, WINDOW_MS // 1000),)
    clock = Clock(START + 100)
    rl = pinned(redis, clock)
    await rl.announce("p", limits, "queued", "someone")
    for _ in range(5):
        await rl.acquire("p", limits, "flood")
    with pytest.raises(RateLimited):
        await rl.acquire("p", limits, "flood")
    for _ in range(5):
        await rl.acquire("p", limits, "queued", "someone")
    clock.now_ms += ACTIVE_TENANT_MS + WINDOW_MS  # announced, then never asked: no longer active
    for _ in range(10):
        await rl.acquire("p", limits, "flood")


async def test_a_wait_for_a_fair_share_is_yielded_when_asked_and_slept_otherwise(redis: Redis) -> None:
    """In jobs (yield_fair_waits) a wait that only the tenant's share imposes raises at once, so
    that the job gives its worker slot up; elsewhere (a sync call) it is slept as before."""
    limits = (RateLimit(4, 1),)  # a 1 s window: a wait shorter than max_wait_s
    clock = Clock(START + 100)
    prefix = f"test:{uuid.uuid4().hex}"
    jobs = RateLimiter(redis, prefix=prefix, max_wait_s=5.0, clock_ms=clock, yield_fair_waits=True)
    calls = RateLimiter(redis, prefix=prefix, max_wait_s=5.0, clock_ms=clock)
    await jobs.announce("p", limits, "other")
    for _ in range(2):
        await jobs.acquire("p", limits, "flood")
    with pytest.raises(RateLimited) as raised:
        await jobs.acquire("p", limits, "flood")
    assert raised.value.retry_after_s == 0.9
    assert "share" in str(raised.value)
    waits = REGISTRY.get_sample_value("wearsync_rate_limit_waits_total", {"provider": "p", "reason": "limiter"}) or 0
    asking = asyncio.create_task(calls.acquire("p", limits, "flood"))
    while (
        REGISTRY.get_sample_value("wearsync_rate_limit_waits_total", {"provider": "p", "reason": "limiter"}) or 0
    ) == waits:
        assert not asking.done()  # neither granted nor refused: it waits for the window to end
        await asyncio.sleep(0.01)
    clock.now_ms += 1000
    await asking
    assert await calls.usage("p", limits[0], "flood") == 1
