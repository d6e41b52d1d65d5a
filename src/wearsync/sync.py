"""Running one sync task: the same code for an arq job and for a sync-mode request.

A task's data types run concurrently; a provider failure of one (ProviderError) fails that type
and the task ends `partial`. A provider whose sync only asks for data that comes later by webhook
(Garmin) leaves the task running after its requests, for its deliveries to end it. Anything else
propagates: a lost database connection is retried by the job, a bug fails the task in one place
(the job wrapper).
"""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from redis.asyncio import Redis

from wearsync import metrics
from wearsync.db import connections, tasks
from wearsync.models import DataType, SyncParams, TaskStatus
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, PageBudget, Provider, SyncContext
from wearsync.providers.errors import NotSupported, ProviderError, RateLimited
from wearsync.providers.http import HttpClient
from wearsync.providers.ratelimit import RateLimiter
from wearsync.providers.tokens import Credentials
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

NO_CONNECTION = "No active connection found for provider"


@dataclass
class Deps:
    """What a sync needs from its process; built in aiohttp cleanup_ctx or arq on_startup."""

    settings: Settings
    db: asyncpg.Pool
    http: HttpClient
    # Set when the worker is told to stop (SIGTERM): its jobs stop after the page in hand.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Hand-overs of work to a new job under way (queue.continue_in_new_job), and the API's sync
    # calls, which hand their task over when cancelled: awaited before the pools close.
    handovers: set[asyncio.Task[Any]] = field(default_factory=set)


def create_http_client(settings: Settings, redis: Redis) -> HttpClient:
    """The process's one upstream session (call inside a running loop; close `.session` after),
    counting calls against rate limits shared with every other process through `redis`."""
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
        # Keyed under the queue name: one deployment (one queue) shares one set of limits.
        limiter=RateLimiter(
            redis,
            prefix=f"{settings.queue_name}:ratelimit",
            max_wait_s=settings.rate_limit_max_wait_s,
            max_call_s=settings.http_timeout_s,
        ),
    )


def credentials_for(deps: Deps, provider: Provider, connection: Connection) -> Credentials:
    """The connection's tokens for one task or event, refreshed as needed."""
    return Credentials(
        provider=provider,
        config=deps.settings.provider(provider.name),
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
    config = deps.settings.provider(provider.name)
    return SyncContext(
        task_id=task_id,
        started_at=started_at,
        data_type=data_type,
        params=params,
        connection=connection,
        config=config,
        http=deps.http,
        db=deps.db,
        settings=deps.settings,
        credentials=credentials,
        bucket=provider.bucket(deps.settings, connection.application_id),
        headers=provider.api_headers(config),
        done=done or {},
        cursor=cursor,
        page_budget=page_budget,
    )


def connection_context(deps: Deps, provider: Provider, connection: Connection) -> SyncContext:
    """A context outside any sync task: a webhook event, connecting or disconnecting a user."""
    return context_for(
        deps, provider, connection, credentials_for(deps, provider, connection),
        task_id=None, started_at=datetime.now(UTC), data_type=DataType.WORKOUTS, params=SyncParams(),
    )  # fmt: skip


def overall_status(details: dict[str, bool]) -> TaskStatus:
    if all(details.values()):
        return TaskStatus.SUCCEEDED
    return TaskStatus.PARTIAL if any(details.values()) else TaskStatus.FAILED


async def run_task(deps: Deps, task_id: UUID, *, defer_rate_limits: bool = False) -> dict[str, bool] | None:
    """Run a queued (or interrupted) task to its end; returns per-type success, or None if the
    task is unknown or already finished (a duplicate delivery of the job).

    With `defer_rate_limits` (a job), a long rate-limit wait raises RateLimited for the job to be
    deferred; otherwise (a sync call) it fails the data type like any provider error."""
    task = await tasks.start_task(deps.db, task_id)
    if task is None:
        log.info("task already finished or unknown, nothing to do")
        return None
    with metrics.task_run(task["provider"]) as run:
        details, run.outcome = await _run_started(deps, task, defer_rate_limits)
    return details


async def _run_started(deps: Deps, task: asyncpg.Record, defer_rate_limits: bool) -> tuple[dict[str, bool], str]:
    """Per-type success, and how the run ended: the task's final status, or `awaiting_delivery`
    (its data comes by webhook: the task goes on running until it has come)."""
    task_id: UUID = task["id"]
    provider = PROVIDERS[task["provider"]]
    data_types = [DataType(t) for t in task["data_types"]]
    row = await connections.get_active_connection(deps.db, task["user_id"], provider.name)
    if row is None:
        details = {t.value: False for t in data_types}
        await tasks.finish_task(deps.db, task_id, TaskStatus.FAILED, details, NO_CONNECTION)
        return details, TaskStatus.FAILED.value
    connection = Connection.from_row(row, deps.settings.cipher())
    credentials = credentials_for(deps, provider, connection)
    params = SyncParams.model_validate(task["params"])
    log.info("sync started", provider=provider.name, user_id=str(connection.user_id), data_types=data_types)
    progress: dict[str, Any] = task["progress"]
    # A job stores a bounded number of pages (or, its worker stopping, the page in hand), then the
    # rest of the task queues up behind others.
    budget = (
        PageBudget(deps.settings.job_max_pages or None, stopping=deps.stopping.is_set) if defer_rate_limits else None
    )
    # A rerun (deferred or crashed job) skips what an earlier run finished.
    to_run = [t for t in data_types if progress.get(t.value, {}).get("status") != "succeeded"]
    try:
        async with asyncio.TaskGroup() as group:
            runs = {
                t: group.create_task(
                    _sync_data_type(
                        deps, task, provider, t, params, connection, credentials, defer_rate_limits,
                        done=progress.get(t.value, {}).get("done") or {}, page_budget=budget,
                    )
                )
                for t in to_run
            }  # fmt: skip
    except BaseExceptionGroup as failures:
        raise _most_telling(failures) from None
    outcomes = {t: runs[t].result() if t in runs else None for t in data_types}
    # A type that must wait for a rate limit let the others finish; the job is then deferred,
    # and its rerun resumes only what is not done.
    waits = [o for o in outcomes.values() if isinstance(o, RateLimited)]
    if waits and defer_rate_limits:
        raise max(waits, key=lambda e: e.retry_after_s)
    errors = {t.value: str(o) if o is not None else None for t, o in outcomes.items()}
    details = {t: error is None for t, error in errors.items()}
    if provider.await_deliveries is not None and any(details.values()):
        # Asked for, not yet stored: the task ends when the provider has delivered (or not).
        await provider.await_deliveries(deps.db, deps.settings, task_id, connection.user_id)
        log.info("sync asked for its data, which comes by webhook", details=details)
        return details, "awaiting_delivery"
    status = overall_status(details)
    error = "; ".join(f"{t}: {e}" for t, e in errors.items() if e is not None) or None
    await tasks.finish_task(deps.db, task_id, status, details, error)
    log.info("sync finished", status=status.value, details=details, refreshes=credentials.refreshes)
    return details, status.value


def _most_telling(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception of a failed task group the caller should handle. Provider errors and
    rate limits come back as results, so these are unexpected ones (a lost database connection, a
    bug); the first that is not the cancellation of a sibling."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


async def _sync_data_type(
    deps: Deps,
    task: asyncpg.Record,
    provider: Provider,
    data_type: DataType,
    params: SyncParams,
    connection: Connection,
    credentials: Credentials,
    defer_rate_limits: bool,
    done: dict[str, int],
    page_budget: PageBudget | None,
) -> ProviderError | None:
    """Sync one data type; returns None on success, or the provider error that failed it (or,
    deferring, the RateLimited it must wait for)."""
    task_id = task["id"]
    cursor = await connections.get_cursor(deps.db, connection.user_id, provider.name, data_type.value)
    ctx = context_for(
        deps, provider, connection, credentials,
        task_id=task_id, started_at=task["started_at"], data_type=data_type, params=params, done=done, cursor=cursor,
        page_budget=page_budget,
    )  # fmt: skip
    sync = provider.sync.get(data_type)
    try:
        if sync is None:
            raise NotSupported(f"the {provider.name} client does not sync {data_type.value} yet")
        await sync(ctx)
    except RateLimited as e:
        if not defer_rate_limits:
            return await _fail_type(deps, task_id, data_type, e)
        resumes_at = datetime.now(UTC) + timedelta(seconds=e.retry_after_s)  # the job is deferred as long
        await tasks.update_type_progress(
            deps.db, task_id, data_type, status="waiting", error=str(e), resumes_at=resumes_at.isoformat()
        )
        return e
    except ProviderError as e:
        return await _fail_type(deps, task_id, data_type, e)
    if ctx.new_cursor is not None:
        await connections.save_cursor(deps.db, connection.user_id, provider.name, data_type.value, ctx.new_cursor)
    await tasks.update_type_progress(deps.db, task_id, data_type, status="succeeded", resumes_at=None)
    return None


async def _fail_type(deps: Deps, task_id: UUID, data_type: DataType, error: ProviderError) -> ProviderError:
    log.warning("data type failed", data_type=data_type.value, error=str(error))
    await tasks.update_type_progress(deps.db, task_id, data_type, status="failed", error=str(error), resumes_at=None)
    return error
