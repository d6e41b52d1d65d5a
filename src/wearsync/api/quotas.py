"""The API's limits per application and per caller, counted in Redis so that they hold across every
API process on one queue (WEARSYNC_QUEUE_NAME), not once per process: the webhook routes' rate
limit (WEARSYNC_WEBHOOK_RATE_LIMIT) and the sync calls (async=false) an application may have
running at once (WEARSYNC_SYNC_CALLS_PER_APP)."""

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import structlog
from redis.asyncio import Redis

from wearsync.queue import QUEUE_UNAVAILABLE

log = structlog.get_logger(__name__)

# KEYS: the counter. ARGV: limit, window ms. A fixed window opened by its first hit: 0 when this
# hit is within the limit, else the ms until the window ends.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count <= tonumber(ARGV[1]) then return 0 end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""

# KEYS: the set of running calls (member: call id, score: its lease's end). ARGV: limit, the
# call's id, lease ms. 1 when the call got a place, else 0. Leases (renewed while the call runs)
# free the places of a process that died mid-call; the time is Redis's, shared by every process.
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class OverLimit(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"over the limit, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class DeliveryLimit:
    """WEARSYNC_WEBHOOK_RATE_LIMIT: deliveries one address may make to one provider's webhook in a
    window, across every API process."""

    redis: Redis
    prefix: str
    count: int  # 0: no limit
    seconds: int = 0

    @classmethod
    def from_setting(cls, redis: Redis, queue_name: str, setting: str) -> "DeliveryLimit":
        count, _, seconds = setting.partition("/")
        return cls(redis, f"{queue_name}:webhook-deliveries", int(count or 0), int(seconds or 0))

    async def take(self, provider: str, address: str) -> None:
        """Count one delivery; OverLimit past the limit. With Redis away the delivery is taken
        (it is stored in PostgreSQL, and its events queued once Redis is back): a limit that
        cannot be counted must not lose a provider's deliveries."""
        if not self.count:
            return
        key = f"{self.prefix}:{provider}:{address}"
        try:
            wait_ms = int(await self.redis.eval(_HIT, 1, key, str(self.count), str(self.seconds * 1000)))  # type: ignore[misc]  # redis-py's stubs type eval as sync
        except QUEUE_UNAVAILABLE as e:
            log.warning("webhook rate limit not counted: queue unavailable", provider=provider, error=repr(e))
            return
        if wait_ms:
            log.warning("webhook deliveries over the rate limit", provider=provider, address=address)
            raise OverLimit(math.ceil(wait_ms / 1000))


# A sync call's place is held this long past its last renewal; renewed every third of it.
SYNC_CALL_LEASE_S = 60.0


@contextlib.asynccontextmanager
async def sync_call_place(redis: Redis, queue_name: str, app_id: UUID, limit: int) -> AsyncIterator[None]:
    """One of the application's `limit` sync calls running at once across every API process, held
    while the block runs; OverLimit when all are taken. Redis away: its errors (a sync call needs
    Redis anyway, for the providers' rate limits)."""
    key, call = f"{queue_name}:sync-calls:{app_id}", uuid4().hex
    lease_ms = int(SYNC_CALL_LEASE_S * 1000)
    if not await redis.eval(_ENTER, 1, key, str(limit), call, str(lease_ms)):  # type: ignore[misc]  # stubs: sync
        raise OverLimit(0)

    async def renew() -> None:
        while True:
            await asyncio.sleep(SYNC_CALL_LEASE_S / 3)
            with contextlib.suppress(*QUEUE_UNAVAILABLE):  # the lease outlasts a short outage
                await redis.eval(_RENEW, 1, key, call, str(lease_ms))  # type: ignore[misc]  # stubs: sync

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        with contextlib.suppress(*QUEUE_UNAVAILABLE):  # else its lease ends by itself
            await redis.zrem(key, call)
