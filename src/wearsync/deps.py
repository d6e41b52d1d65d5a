"""The process's dependencies (settings, the PostgreSQL pool, the upstream HTTP client) and what a
provider call is built from: a connection's credentials and a SyncContext. Built once in aiohttp's
cleanup_ctx or arq's on_startup, and passed to every job, request handler and sync."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
from redis.asyncio import Redis

from wearsync.credentials import Credentials
from wearsync.models import DataType, SyncParams
from wearsync.providers.core import Connection, PageBudget, Provider, SyncContext
from wearsync.providers.http import HttpClient
from wearsync.providers.ratelimit import RateLimiter
from wearsync.settings import Settings
from wearsync.store import StoredContext


@dataclass
class Deps:
    """What jobs, request handlers and syncs need from their process."""

    settings: Settings
    db: asyncpg.Pool
    http: HttpClient
    # Set when the worker is told to stop (SIGTERM): its jobs stop after the page in hand.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Hand-overs of work to a new job under way (queue.continue_in_new_job), and the API's sync
    # calls, which hand their task over when cancelled: awaited before the pools close.
    handovers: set[asyncio.Task[Any]] = field(default_factory=set)


def create_http_client(settings: Settings, redis: Redis, jobs: bool = False) -> HttpClient:
    """The process's one upstream session (call inside a running loop; close `.session` after),
    counting calls against rate limits shared with every other process through `redis`. `jobs`:
    its calls are made by jobs, which a wait for a fair share defers (see RateLimiter)."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_s),
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
        headers={"User-Agent": "wearsync"},
    )
    return HttpClient(
        session,
        retries=settings.http_retries,
        backoff_s=settings.http_backoff_s,
        backoff_max_s=settings.http_backoff_max_s,
        max_inline_wait_s=settings.rate_limit_max_wait_s,
        limiter=RateLimiter(
            redis,
            prefix=rate_limit_prefix(settings),
            max_wait_s=settings.rate_limit_max_wait_s,
            max_call_s=settings.http_timeout_s,
            yield_fair_waits=jobs,
        ),
    )


def rate_limit_prefix(settings: Settings) -> str:
    """Keyed under the queue name: one deployment (one queue) shares one set of limits."""
    return f"{settings.queue_name}:ratelimit"


def credentials_for(deps: Deps, provider: Provider, connection: Connection) -> Credentials:
    """The connection's tokens for one task or event, refreshed as needed."""
    return Credentials(
        provider=provider,
        config=deps.settings.providers[provider.name],
        user_id=connection.user_id,
        access_token=connection.access_token,
        refresh_token=connection.refresh_token,
        expires_at=connection.expires_at,
        db=deps.db,
        http=deps.http,
        refresh_margin=timedelta(seconds=deps.settings.token_refresh_margin_s),
        cipher=deps.settings.cipher(),
        lease_s=refresh_lease_s(deps.settings),
    )


def refresh_lease_s(settings: Settings) -> float:
    """The longest one token refresh may take: every try of the token request, the pauses between
    them, and a margin for storing the tokens."""
    tries = settings.http_retries + 1
    return settings.http_timeout_s * tries + settings.http_backoff_max_s * settings.http_retries + 10


def context_for(
    deps: Deps,
    provider: Provider,
    connection: Connection,
    credentials: Credentials,
    *,
    task_id: UUID | None,
    started_at: datetime,
    data_type: DataType,
    params: SyncParams,
    done: dict[str, int] | None = None,
    cursor: dict[str, Any] | None = None,
    page_budget: PageBudget | None = None,
) -> SyncContext:
    config = deps.settings.providers[provider.name]
    return StoredContext(
        provider=provider,
        task_id=task_id,
        started_at=started_at,
        data_type=data_type,
        params=params,
        connection=connection,
        config=config,
        http=deps.http,
        db=deps.db,
        credentials=credentials,
        bucket=provider.bucket(deps.settings, connection.application_id, connection.user_id),
        headers=provider.api_headers(config),
        done=done or {},
        cursor=cursor,
        page_budget=page_budget,
    )


def connection_context(
    deps: Deps, provider: Provider, connection: Connection, credentials: Credentials | None = None
) -> SyncContext:
    """A context outside any sync task: a webhook event, connecting or disconnecting a user."""
    return context_for(
        deps, provider, connection, credentials or credentials_for(deps, provider, connection),
        task_id=None, started_at=datetime.now(UTC), data_type=DataType.WORKOUTS, params=SyncParams(),
    )  # fmt: skip
