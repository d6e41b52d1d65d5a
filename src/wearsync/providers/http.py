"""The shared HTTP core: one aiohttp session per process, bounded retries with exponential
backoff and full jitter on timeouts, connection errors, 5xx and unreadable bodies, and 429s
waited out as the provider says when the wait is short.

Redirects are never followed by aiohttp (it would follow one to any host, re-sending a token
request's form with our client secret on a 307): a GET is followed within its own origin (scheme,
host and port: the provider's host its credentials are meant for), at most MAX_REDIRECTS times;
any other redirect is an UpstreamError naming where it pointed, and nothing is sent there."""

import asyncio
import contextlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import perf_counter, time
from typing import Any

import aiohttp
import redis.exceptions
import structlog
from yarl import URL

from wearsync import metrics
from wearsync.models import RateLimit
from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError, UpstreamError
from wearsync.providers.ratelimit import Call, RateLimiter

log = structlog.get_logger(__name__)

Params = Mapping[str, str | int | float]

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def redirect_target(method: str, url: URL, status: int, location: str | None) -> URL | None:
    """Where a redirect of `method url` may be followed, or None when it may not: only a GET, only
    to the same origin (a body, or a bearer token, is never sent anywhere else)."""
    if status not in REDIRECT_STATUSES or not location:
        return None
    target = url.join(URL(location))
    if method != "GET" or target.origin() != url.origin():
        return None
    return target


def _strava_wait(headers: Mapping[str, str]) -> float | None:
    """Until the end of the window Strava's usage headers show used up: its overall limit
    (`X-RateLimit-Limit`/`-Usage`) and its read ("non-upload") limit (`X-ReadRateLimit-*`), each
    "15-minute,daily"; windows end every quarter hour and at midnight UTC
    (developers.strava.com/docs/rate-limits). None when there are no such headers; the next quarter
    hour when they show nothing used up."""
    now, wait, seen = time(), 0.0, False
    for prefix in ("X-RateLimit", "X-ReadRateLimit"):
        usage, limit = headers.get(f"{prefix}-Usage"), headers.get(f"{prefix}-Limit")
        if not usage or not limit:
            continue
        try:
            used, allowed = [int(n) for n in usage.split(",")], [int(n) for n in limit.split(",")]
        except ValueError:
            continue
        seen = True
        if len(used) > 1 and len(allowed) > 1 and used[1] >= allowed[1]:
            wait = max(wait, 86400 - now % 86400)
        elif used and allowed and used[0] >= allowed[0]:
            wait = max(wait, 900 - now % 900)
    if not seen:
        return None
    return wait or 900 - now % 900


def retry_after_seconds(headers: Mapping[str, str], default: float) -> float:
    """How long a 429 asks us to wait: `Retry-After` (seconds or a date), `X-RateLimit-Reset`
    (Whoop: seconds to go), or Strava's usage headers (see `_strava_wait`)."""
    value = headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time())
            except (TypeError, ValueError):
                return default
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        with contextlib.suppress(ValueError):
            seconds = float(reset)
            return max(0.0, seconds - time() if seconds > 1e9 else seconds)  # an epoch, or seconds to go
    strava = _strava_wait(headers)
    return default if strava is None else strava


class _Transient(Exception):
    def __init__(self, reason: str, status: int | None = None, body: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.body = reason, status, body


@dataclass(frozen=True)
class Bucket:
    """Where a request counts against a rate limit shared by every worker: a provider's name and
    its limits, and whose share it takes (an application's id; '' for none)."""

    name: str
    limits: tuple[RateLimit, ...]
    tenant: str = ""
    user: str = ""  # the user within the tenant whose share of the tenant's it takes ('' for none)


@dataclass
class HttpClient:
    session: aiohttp.ClientSession
    retries: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 20.0
    # A 429 asking for a longer wait than this is raised (RateLimited) instead of slept through.
    max_inline_wait_s: float = 30.0
    limiter: RateLimiter | None = None
    max_429_waits: int = 10

    async def get_json(
        self,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str],
        bucket: Bucket | None = None,
        provider: str | None = None,
    ) -> Any:
        return await self.request_json("GET", url, params=params, headers=headers, bucket=bucket, provider=provider)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        bucket: Bucket | None = None,
        provider: str | None = None,
        empty_ok: bool = False,
    ) -> Any:
        """One call, retried on transient failures; every attempt takes a slot of `bucket`.
        `provider` names a call outside any bucket (token grants) in the metrics. `empty_ok`: a 200
        without a body is the answer (an endpoint that acknowledges with nothing), not one cut short."""
        label = bucket.name if bucket is not None else provider or "unknown"
        last: _Transient | None = None
        attempt = waits_429 = 0
        while attempt <= self.retries:
            call = None
            if self.limiter is not None and bucket is not None:
                call = await self.limiter.start_call(bucket.name, bucket.limits, bucket.tenant, bucket.user)
            try:
                try:
                    return await self._once(method, url, label, params, headers, data, json_body, empty_ok)
                finally:
                    if call is not None:
                        await self._end_call(call)
            except _Transient as e:
                last, attempt = e, attempt + 1
                log.warning("upstream call failed", method=method, url=url, reason=e.reason, attempt=attempt)
                if attempt <= self.retries:
                    await asyncio.sleep(random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt)))
            except RateLimited as e:
                waits_429 += 1
                if e.retry_after_s > self.max_inline_wait_s or waits_429 > self.max_429_waits:
                    raise
                log.info("upstream rate limited, waiting", url=url, seconds=e.retry_after_s)
                metrics.rate_limit_wait(label, "upstream_429", e.retry_after_s)
                await asyncio.sleep(e.retry_after_s + random.uniform(0, 0.1))
        assert last is not None
        if last.reason == "malformed JSON":
            raise MalformedPayload(f"{method} {url} returned malformed JSON: {last.body[:200]}")
        if last.reason == "empty body":
            raise MalformedPayload(f"{method} {url} returned an empty body (HTTP 200)")
        raise UpstreamError(method, url, last.status, last.body, reason=last.reason)

    async def _end_call(self, call: Call) -> None:
        assert self.limiter is not None
        # Redis unreachable: the call's answer still counts; its slots are freed at its deadline.
        with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            await self.limiter.end_call(call)

    async def _once(
        self,
        method: str,
        url: str,
        provider: str,
        params: Params | None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        json_body: Any,
        empty_ok: bool,
    ) -> Any:
        target: str | URL = url
        for _ in range(MAX_REDIRECTS + 1):
            status, resp_headers, body, asked = await self._exchange(
                method, target, provider, params, headers, data, json_body
            )
            if status not in REDIRECT_STATUSES:
                break
            location = resp_headers.get("Location")
            next_target = redirect_target(method, asked, status, location)
            if next_target is None:
                raise UpstreamError(
                    method, url, status, f"a redirect to {location!r}, not followed (off the host, or not a GET)"
                )
            target, params = next_target, None  # the redirect names the whole URL, query included
        else:
            raise UpstreamError(method, url, status, f"more than {MAX_REDIRECTS} redirects")
        text = body.decode("utf-8", "replace")
        if status == 429:
            wait = retry_after_seconds(resp_headers, 60.0)
            raise RateLimited(f"{method} {url} was rate limited (HTTP 429: {text[:200]})", wait, provider=provider)
        if status >= 500:
            raise _Transient(f"HTTP {status}", status, text)
        if status in (401, 403):
            raise UpstreamAuthError(method, url, status, text)
        if status >= 400:
            raise UpstreamError(method, url, status, text)
        if not body:
            # "No content" is a 204 (or a 201/202 acknowledgement); a 200 whose body is missing is
            # an answer cut short, not an empty list: taking it as one would be a silent gap.
            if status == 200 and not empty_ok:
                raise _Transient("empty body", status)
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise _Transient("malformed JSON", status, text) from e

    async def _exchange(
        self,
        method: str,
        url: str | URL,
        provider: str,
        params: Params | None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        json_body: Any,
    ) -> tuple[int, Mapping[str, str], bytes, URL]:
        """One request and its whole answer (status, headers, body, the URL asked), nothing followed."""
        started, outcome = perf_counter(), "error"
        try:
            async with self.session.request(
                method, url, params=params, headers=headers, data=data, json=json_body, allow_redirects=False
            ) as resp:
                body = await resp.read()
                outcome = str(resp.status)
                return resp.status, resp.headers, body, resp.url
        except (aiohttp.ClientError, TimeoutError) as e:
            outcome = "timeout" if isinstance(e, TimeoutError) else "error"
            raise _Transient(type(e).__name__) from e
        finally:
            metrics.upstream_call(provider, outcome, perf_counter() - started)
