"""Running one sync task: the same code for an arq job and for a sync-mode request.

A task's data types run concurrently; a provider failure of one (ProviderError) fails that type
and the task ends `partial`. Anything else propagates: a lost database connection is retried by
the job, a bug fails the task in one place (the job wrapper).
"""

import asyncio
from dataclasses import dataclass
from uuid import UUID

import aiohttp
import asyncpg
import structlog

from wearsync.db import queries
from wearsync.models import DataType, SyncParams, TaskStatus
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, Provider, SyncContext
from wearsync.providers.errors import NotSupported, ProviderError
from wearsync.providers.http import HttpClient
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

NO_CONNECTION = "No active connection found for provider"


@dataclass
class Deps:
    """What a sync needs from its process; built in aiohttp cleanup_ctx or arq on_startup."""

    settings: Settings
    db: asyncpg.Pool
    http: HttpClient


def create_http_client(settings: Settings) -> HttpClient:
    """The process's one upstream session (call inside a running loop; close `.session` after)."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_s),
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
        headers={"User-Agent": "wearsync"},
    )
    return HttpClient(session, settings.http_retries, settings.http_backoff_s, settings.http_backoff_max_s)


def overall_status(details: dict[str, bool]) -> TaskStatus:
    if all(details.values()):
        return TaskStatus.SUCCEEDED
    return TaskStatus.PARTIAL if any(details.values()) else TaskStatus.FAILED


async def run_task(deps: Deps, task_id: UUID) -> dict[str, bool] | None:
    """Run a queued (or interrupted) task to its end; returns per-type success, or None if the
    task is unknown or already finished (a duplicate delivery of the job)."""
    task = await queries.start_task(deps.db, task_id)
    if task is None:
        log.info("task already finished or unknown, nothing to do")
        return None
    provider = PROVIDERS[task["provider"]]
    data_types = [DataType(t) for t in task["data_types"]]
    row = await queries.get_active_connection(deps.db, task["user_id"], provider.name)
    if row is None:
        details = {t.value: False for t in data_types}
        await queries.finish_task(deps.db, task_id, TaskStatus.FAILED, details, NO_CONNECTION)
        return details
    connection = Connection.from_row(row)
    params = SyncParams.model_validate(task["params"])
    log.info("sync started", provider=provider.name, user_id=str(connection.user_id), data_types=data_types)
    async with asyncio.TaskGroup() as group:
        runs = {
            t: group.create_task(_sync_data_type(deps, task_id, provider, t, params, connection)) for t in data_types
        }
    errors = {t.value: run.result() for t, run in runs.items()}
    details = {t: error is None for t, error in errors.items()}
    status = overall_status(details)
    error = "; ".join(f"{t}: {e}" for t, e in errors.items() if e is not None) or None
    await queries.finish_task(deps.db, task_id, status, details, error)
    log.info("sync finished", status=status.value, details=details)
    return details


async def _sync_data_type(
    deps: Deps,
    task_id: UUID,
    provider: Provider,
    data_type: DataType,
    params: SyncParams,
    connection: Connection,
) -> str | None:
    """Sync one data type; returns None on success or the provider error that failed it."""
    ctx = SyncContext(
        task_id=task_id,
        data_type=data_type,
        params=params,
        connection=connection,
        config=deps.settings.provider(provider.name),
        http=deps.http,
        db=deps.db,
        settings=deps.settings,
    )
    sync = provider.sync.get(data_type)
    try:
        if sync is None:
            raise NotSupported(f"the {provider.name} client does not sync {data_type.value} yet")
        await sync(ctx)
    except ProviderError as e:
        log.warning("data type failed", data_type=data_type.value, error=str(e))
        await queries.update_type_progress(deps.db, task_id, data_type, status="failed", error=str(e))
        return str(e)
    await queries.update_type_progress(deps.db, task_id, data_type, status="succeeded")
    return None
