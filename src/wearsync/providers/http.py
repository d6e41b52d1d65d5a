"""The shared HTTP core: one aiohttp session per process, bounded retries with exponential
backoff and full jitter on timeouts, connection errors, 5xx and unreadable bodies, and 429s
waited out as the provider says when the wait is short."""

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import aiohttp
import structlog

from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError, UpstreamError

log = structlog.get_logger(__name__)

Params = Mapping[str, str | int | float]


def retry_after_seconds(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return default


class _Transient(Exception):
    def __init__(self, reason: str, status: int | None = None, body: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.body = reason, status, body


@dataclass
class HttpClient:
    session: aiohttp.ClientSession
    retries: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 20.0
    # A 429 asking for a longer wait than this is raised (RateLimited) instead of slept through.
    max_inline_wait_s: float = 30.0

    async def get_json(self, url: str, *, params: Params | None = None, headers: Mapping[str, str]) -> Any:
        return await self.request_json("GET", url, params=params, headers=headers)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None = None,
    ) -> Any:
        last: _Transient | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt)))
            try:
                return await self._once(method, url, params, headers, data)
            except _Transient as e:
                last = e
                log.warning("upstream call failed, retrying", method=method, url=url, reason=e.reason,
                            attempt=attempt + 1)  # fmt: skip
            except RateLimited as e:
                if e.retry_after_s > self.max_inline_wait_s:
                    raise
                log.info("upstream rate limited, waiting", url=url, seconds=e.retry_after_s)
                await asyncio.sleep(e.retry_after_s)
        assert last is not None
        if last.reason == "malformed JSON":
            raise MalformedPayload(f"{method} {url} returned malformed JSON: {last.body[:200]}")
        raise UpstreamError(method, url, last.status, last.body, reason=last.reason)

    async def _once(
        self,
        method: str,
        url: str,
        params: Params | None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
    ) -> Any:
        try:
            async with self.session.request(method, url, params=params, headers=headers, data=data) as resp:
                body = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _Transient(type(e).__name__) from e
        text = body.decode("utf-8", "replace")
        if status == 429:
            raise RateLimited(method, url, retry_after_seconds(resp_headers, 60.0), text)
        if status >= 500:
            raise _Transient(f"HTTP {status}", status, text)
        if status in (401, 403):
            raise UpstreamAuthError(method, url, status, text)
        if status >= 400:
            raise UpstreamError(method, url, status, text)
        try:
            return json.loads(body) if body else None
        except ValueError as e:
            raise _Transient("malformed JSON", status, text) from e
