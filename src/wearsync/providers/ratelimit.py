"""A rate limiter shared by every process through Redis: fixed windows aligned to the epoch, as
providers count them (Strava's windows reset at 0, 15, 30 and 45 minutes past the hour and at
midnight UTC). One Lua script checks every window of a provider and takes a slot in all of them
atomically, on Redis's clock, so workers on different machines agree."""

import asyncio
import random
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from wearsync import metrics
from wearsync.providers.errors import RateLimited

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_seconds: int

    def __str__(self) -> str:
        return f"{self.requests}/{self.per_seconds}s"


def parse_rate_limits(text: str) -> tuple[RateLimit, ...]:
    """`"100/900,1000/86400"` -> limits; an empty string means no limit."""
    limits = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        requests, _, seconds = part.partition("/")
        limit = RateLimit(int(requests), int(seconds))
        if limit.requests < 1 or limit.per_seconds < 1:
            raise ValueError(f"rate limit {part!r}: both numbers must be positive")
        limits.append(limit)
    return tuple(limits)


# KEYS: one prefix per limit. ARGV: limit, window ms, limit, window ms, ...
# Returns 0 when a slot was taken in every window, else the ms until the blocking window ends.
# A call made in the last moments of a window may reach the provider in the next one, so it is
# counted in both (the guard: the last quarter of a window, at most 1 s, wide enough for a call
# delayed by a loaded machine): the provider's next window then never sees more than the limit.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local keys, spans, late = {}, {}, {}
for i = 1, #KEYS do
  local limit, span = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local window = math.floor(now / span)
  local left = (window + 1) * span - now
  keys[i], spans[i] = KEYS[i] .. ':' .. window, span
  late[i] = left < math.min(1000, span / 4) and (KEYS[i] .. ':' .. (window + 1)) or false
  if tonumber(redis.call('GET', keys[i]) or '0') >= limit then
    wait = math.max(wait, left)
  elseif late[i] and tonumber(redis.call('GET', late[i]) or '0') >= limit then
    wait = math.max(wait, left + span)
  end
end
if wait > 0 then return wait end
for i = 1, #KEYS do
  for _, key in ipairs({keys[i], late[i]}) do
    if key and redis.call('INCR', key) == 1 then
      redis.call('PEXPIRE', key, 2 * spans[i] + 60000)
    end
  end
end
return 0
"""


@dataclass
class RateLimiter:
    redis: Redis
    prefix: str = "wearsync:ratelimit"
    # A wait longer than this is not slept through: RateLimited lets the job be deferred.
    max_wait_s: float = 30.0

    async def acquire(self, bucket: str, limits: tuple[RateLimit, ...]) -> None:
        """Take one request slot in every window of `limits`, waiting while a window is full."""
        if not limits:
            return
        keys = [f"{self.prefix}:{bucket}:{limit.per_seconds}" for limit in limits]
        args = [str(n) for limit in limits for n in (limit.requests, limit.per_seconds * 1000)]
        while True:
            wait_ms = int(await self.redis.eval(_TAKE, len(keys), *keys, *args))  # type: ignore[misc]  # redis-py's stubs type eval as sync
            if wait_ms == 0:
                return
            wait_s = wait_ms / 1000
            if wait_s > self.max_wait_s:
                raise RateLimited(f"{bucket}'s rate limit is used up", wait_s, provider=bucket)
            log.info("rate limit reached, waiting", bucket=bucket, seconds=round(wait_s, 3))
            metrics.rate_limit_wait(bucket, "limiter", wait_s)
            # Jitter, so that waiting workers do not all retry at the same instant.
            await asyncio.sleep(wait_s + random.uniform(0, min(1.0, wait_s / 10)))

    async def usage(self, bucket: str, limit: RateLimit) -> int:
        """Requests counted in the current window of one limit (for tests and operators)."""
        seconds, micros = await self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        window = now_ms // (limit.per_seconds * 1000)
        value = await self.redis.get(f"{self.prefix}:{bucket}:{limit.per_seconds}:{window}")
        return int(value or 0)
