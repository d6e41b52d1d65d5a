"""A rate limiter shared by every process through Redis: fixed windows aligned to the epoch, as
providers count them (Strava's windows reset at 0, 15, 30 and 45 minutes past the hour and at
midnight UTC). One Lua script checks every window of a provider and takes a slot in all of them
atomically, on Redis's clock, so workers on different machines agree; while several tenants
(applications) ask, each gets a fair share of every window."""

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from uuid import uuid4

import structlog
from redis.asyncio import Redis

from wearsync import metrics
from wearsync.models import RateLimit
from wearsync.providers.errors import RateLimited

log = structlog.get_logger(__name__)


# The time in ms: ARGV[n], or Redis's own clock for '' (tests pin it).
_NOW = """
local function clock(pinned)
  local now = tonumber(pinned)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: one prefix per limit, then the roster of the bucket's tenants. ARGV: the tenant ('' for
# none), the user within the tenant ('' for none), how long a tenant counts as active after its
# last ask (ms), the time in ms ('': Redis's own clock), the call's id ('': not followed until
# done), how long a followed call may last (ms), then limit, window ms, ...
# Returns 0 when a slot was taken in every window; else the ms until the blocking window ends,
# negative when only the tenant's (or user's) fair share blocks (a job may give its worker slot
# to another tenant's meanwhile).
#
# The provider counts a call when it arrives, at some moment between our taking its slot and its
# answer, which a loaded machine may delay past the window's end. So a call followed until done
# (in `<prefix>:flight`, scored by the last window it is counted in) also holds a slot in every
# window that starts while it is on its way, and is counted in the window it ends in: no window
# the provider counts it in gets more than the limit, however late it arrives. A followed call
# whose process died stops holding slots at its deadline (`<prefix>:flight:until`).
#
# A call made in the last moments of a window is counted in the next one too (the last quarter of
# a window, at most 1 s): the provider's clock may run a little ahead of Redis's.
#
# Fair shares, at two levels: the bucket's tenants, and each tenant's users. Every ask puts its
# tenant on the bucket's roster and its user on the tenant's, active until `active_ms` after it,
# or after the wait it is told to make (it asks again then); a queued sync announces them before
# its job starts (_ANNOUNCE). While n tenants are active, a tenant past its share, ceil(limit /
# n), of a window gets a slot only if the slots the others have not yet used of their shares stay
# free (slack there is only where another went past its share before it had company); else it
# waits for the window to end. Within the tenant its users share its own share (the whole limit
# while it is alone) the same way. A lone tenant (user) gets the whole limit (share); one that
# floods cannot starve another that asks, also not at the next window's start.
_SHARES = """
local function count(key) return tonumber(redis.call('GET', key) or '0') end
-- Whether `me`, one of the active `members` (counted under `prefix`), is past its share of
-- `allowance` with `used` of it used, and the others' unused shares leave it nothing.
local function over_share(members, me, prefix, allowance, used)
  if #members < 2 then return false end
  local share = math.ceil(allowance / #members)
  if count(prefix .. me) < share then return false end
  local unclaimed = 0
  for _, other in ipairs(members) do
    if other ~= me then unclaimed = unclaimed + math.max(0, share - count(prefix .. other)) end
  end
  return used + 1 + unclaimed > allowance
end
-- Put the tenant (and its user) on the rosters until `until_ms`; `ttl_ms` (0: unchanged): the
-- rosters' lifetime.
local function join(roster, tenant, user, until_ms, ttl_ms)
  local rosters = {{roster, tenant}, {roster .. ':' .. tenant, user}}
  for _, r in ipairs(rosters) do
    if r[2] ~= '' then
      redis.call('ZADD', r[1], 'GT', until_ms, r[2])
      if ttl_ms > 0 then redis.call('PEXPIRE', r[1], ttl_ms) end
    end
  end
end
"""

_TAKE = (
    _NOW
    + _SHARES
    + """
local now = clock(ARGV[4])
local tenant, user, active_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local call, call_ms = ARGV[5], tonumber(ARGV[6])
local roster = KEYS[#KEYS]
local users = roster .. ':' .. tenant
local wait, fair, longest = 0, 0, 0
local keys, spans, late, flights = {}, {}, {}, {}
if tenant ~= '' then
  redis.call('ZREMRANGEBYSCORE', roster, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', users, '-inf', now)
  join(roster, tenant, user, now + active_ms, 0)
end
for i = 1, #KEYS - 1 do
  local limit, span = tonumber(ARGV[2 * i + 5]), tonumber(ARGV[2 * i + 6])
  local window = math.floor(now / span)
  local left = (window + 1) * span - now
  longest = math.max(longest, span)
  keys[i], spans[i], flights[i] = KEYS[i] .. ':' .. window, span, KEYS[i] .. ':flight'
  late[i] = left < math.min(1000, span / 4) and (KEYS[i] .. ':' .. (window + 1)) or false
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', flights[i] .. ':until', '-inf', now)) do
    redis.call('ZREM', flights[i], gone)
    redis.call('ZREM', flights[i] .. ':until', gone)
  end
  -- Calls still on their way from earlier windows may arrive in this one.
  local used = count(keys[i]) + redis.call('ZCOUNT', flights[i], '-inf', window - 1)
  if used >= limit then
    wait = math.max(wait, left)
  elseif late[i] and count(late[i]) + redis.call('ZCOUNT', flights[i], '-inf', window) >= limit then
    wait = math.max(wait, left + span)
  elseif tenant ~= '' then
    local tenants = redis.call('ZRANGEBYSCORE', roster, now, '+inf')
    local own = keys[i] .. ':' .. tenant
    if over_share(tenants, tenant, keys[i] .. ':', limit, used) then
      fair = math.max(fair, left)
    elseif user ~= '' then
      local allowance = #tenants > 1 and math.ceil(limit / #tenants) or limit
      if over_share(redis.call('ZRANGEBYSCORE', users, now, '+inf'), user, own .. ':', allowance, count(own)) then
        fair = math.max(fair, left)
      end
    end
  end
end
if tenant ~= '' then
  join(roster, tenant, user, now + math.max(wait, fair) + active_ms, 2 * longest + active_ms + 60000)
end
if wait > 0 or fair > 0 then return fair > wait and -fair or wait end
for i = 1, #KEYS - 1 do
  local counted = {keys[i], late[i], false, false}
  if tenant ~= '' then counted[3] = keys[i] .. ':' .. tenant end
  if tenant ~= '' and user ~= '' then counted[4] = keys[i] .. ':' .. tenant .. ':' .. user end
  for j = 1, 4 do
    local key = counted[j]
    if key and redis.call('INCR', key) == 1 then
      redis.call('PEXPIRE', key, 2 * spans[i] + 60000)
    end
  end
  if call ~= '' then
    redis.call('ZADD', flights[i], math.floor(now / spans[i]) + (late[i] and 1 or 0), call)
    redis.call('ZADD', flights[i] .. ':until', now + call_ms, call)
    redis.call('PEXPIRE', flights[i], call_ms + 60000)
    redis.call('PEXPIRE', flights[i] .. ':until', call_ms + 60000)
  end
end
return 0
"""
)

# KEYS: the roster of the bucket's tenants. ARGV: the tenant, the user ('' for none), how long
# it counts as active (ms), the time in ms ('': Redis's clock), the roster's lifetime (ms).
_ANNOUNCE = (
    _NOW
    + _SHARES
    + """
join(KEYS[1], ARGV[1], ARGV[2], clock(ARGV[4]) + tonumber(ARGV[3]), tonumber(ARGV[5]))
return 0
"""
)

# KEYS: one prefix per limit. ARGV: the call's id, the time in ms ('': Redis's clock), then each
# limit's window ms. The call is done: counted in the window it ends in, if not counted there yet
# (it may have arrived there), and no longer held in the windows to come.
_DONE = (
    _NOW
    + """
local now = clock(ARGV[2])
for i = 1, #KEYS do
  local flight = KEYS[i] .. ':flight'
  local counted = redis.call('ZSCORE', flight, ARGV[1])
  if counted then
    local span = tonumber(ARGV[i + 2])
    local window = math.floor(now / span)
    if window > tonumber(counted) then
      local key = KEYS[i] .. ':' .. window
      if redis.call('INCR', key) == 1 then
        redis.call('PEXPIRE', key, 2 * span + 60000)
      end
    end
    redis.call('ZREM', flight, ARGV[1])
    redis.call('ZREM', flight .. ':until', ARGV[1])
  end
end
return 0
"""
)


@dataclass(frozen=True)
class Call:
    """A call that holds rate limit slots until it is done (RateLimiter.start_call)."""

    bucket: str
    limits: tuple[RateLimit, ...]
    id: str


# A tenant counts as active, for fair shares, this long after its last ask for a slot (or after
# the wait it was told to make): a sync in progress asks every few seconds.
ACTIVE_TENANT_MS = 60_000


@dataclass
class RateLimiter:
    redis: Redis
    prefix: str = "wearsync:ratelimit"
    # A wait longer than this is not slept through: RateLimited lets the job be deferred.
    max_wait_s: float = 30.0
    # The time in ms the limiter counts at; None: Redis's clock (shared by every process). Tests
    # pin it to check where a call falls.
    clock_ms: Callable[[], int] | None = None

    # How long a call followed until done may last (its HTTP timeout): a call its process never
    # reported done (the process died) holds slots until then, and a minute more.
    max_call_s: float = 300.0
    # A wait for the window to end that only the tenant's (or user's) fair share imposes is not
    # slept through either (in jobs: the job is deferred, and its worker slot goes to the others,
    # whose jobs would otherwise not start while the flood's slept).
    yield_fair_waits: bool = False

    async def acquire(self, bucket: str, limits: tuple[RateLimit, ...], tenant: str = "", user: str = "") -> None:
        """Take one request slot in every window of `limits`, waiting while a window is full, or
        while `tenant` (an application; '' for none) has its fair share of a contended one, or
        `user` (of the tenant) its share of the tenant's."""
        await self._take(bucket, limits, tenant, user, call="")

    async def start_call(self, bucket: str, limits: tuple[RateLimit, ...], tenant: str = "", user: str = "") -> Call:
        """Take a slot as `acquire` does, for a call that also holds one in each window starting
        before `end_call`: the provider counts it wherever it arrives in between."""
        call = Call(bucket, limits, uuid4().hex)
        await self._take(bucket, limits, tenant, user, call=call.id)
        return call

    async def announce(self, bucket: str, limits: tuple[RateLimit, ...], tenant: str, user: str = "") -> None:
        """`tenant` (and its `user`) will ask soon, a sync of theirs being queued: they count as
        active for fair shares from now on, so that the tenants already asking keep to their
        shares (and, in jobs, give their worker slots up) before its job even starts."""
        if not limits or not tenant:
            return
        longest = max(limit.per_seconds for limit in limits) * 1000
        now = "" if self.clock_ms is None else str(self.clock_ms())
        args = [tenant, user, str(ACTIVE_TENANT_MS), now, str(2 * longest + ACTIVE_TENANT_MS + 60_000)]
        await self.redis.eval(_ANNOUNCE, 1, f"{self.prefix}:{bucket}:tenants", *args)  # type: ignore[misc]  # redis-py's stubs type eval as sync

    async def end_call(self, call: Call) -> None:
        """The call has its answer (or failed): counted in this window if it was not yet, and no
        longer held in the next ones."""
        if not call.limits:
            return
        keys = [f"{self.prefix}:{call.bucket}:{limit.per_seconds}" for limit in call.limits]
        now = "" if self.clock_ms is None else str(self.clock_ms())
        args = [call.id, now] + [str(limit.per_seconds * 1000) for limit in call.limits]
        await self.redis.eval(_DONE, len(keys), *keys, *args)  # type: ignore[misc]  # redis-py's stubs type eval as sync

    async def _take(self, bucket: str, limits: tuple[RateLimit, ...], tenant: str, user: str, call: str) -> None:
        if not limits:
            return
        keys = [f"{self.prefix}:{bucket}:{limit.per_seconds}" for limit in limits] + [f"{self.prefix}:{bucket}:tenants"]
        call_ms = str(int((self.max_call_s + 60) * 1000))
        while True:
            now = "" if self.clock_ms is None else str(self.clock_ms())
            args = [tenant, user, str(ACTIVE_TENANT_MS), now, call, call_ms] + [
                str(n) for limit in limits for n in (limit.requests, limit.per_seconds * 1000)
            ]
            wait_ms = int(await self.redis.eval(_TAKE, len(keys), *keys, *args))  # type: ignore[misc]  # redis-py's stubs type eval as sync
            if wait_ms == 0:
                return
            wait_s = abs(wait_ms) / 1000
            if wait_s > self.max_wait_s or (wait_ms < 0 and self.yield_fair_waits):
                what = "share of the rate limit is used up" if wait_ms < 0 else "rate limit is used up"
                raise RateLimited(f"{bucket}'s {what}", wait_s, provider=bucket, fair_share=wait_ms < 0)
            log.info("rate limit reached, waiting", bucket=bucket, seconds=round(wait_s, 3))
            metrics.rate_limit_wait(bucket, "limiter", wait_s)
            # Jitter, so that waiting workers do not all retry at the same instant.
            await asyncio.sleep(wait_s + random.uniform(0, min(1.0, wait_s / 10)))

    async def usage(self, bucket: str, limit: RateLimit, tenant: str = "", user: str = "") -> int:
        """Requests counted in the current window of one limit, of everyone, of one tenant or of
        one user of a tenant (for tests and operators)."""
        if self.clock_ms is not None:
            now_ms = self.clock_ms()
        else:
            seconds, micros = await self.redis.time()
            now_ms = seconds * 1000 + micros // 1000
        window = now_ms // (limit.per_seconds * 1000)
        key = f"{self.prefix}:{bucket}:{limit.per_seconds}:{window}" + "".join(f":{t}" for t in (tenant, user) if t)
        value = await self.redis.get(key)
        return int(value or 0)
