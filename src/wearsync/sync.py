"""Running one sync task: the same code for an arq job and for a sync-mode request.

A task's data types run concurrently; a provider failure of one (ProviderError) fails that type
and the task ends `partial`. A provider whose sync only asks for data that comes later by webhook
(Garmin) leaves the task running after its requests, for its deliveries to end it. Anything else
propagates: a lost database connection is retried by the job, a bug fails the task in one place
(the job wrapper).
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from wearsync import backfills, metrics
from wearsync.credentials import Credentials
from wearsync.db import connections, tasks
from wearsync.deps import Deps, context_for, credentials_for
from wearsync.imports.jobs import IMPORTERS, run_import
from wearsync.models import DataType, SyncParams, TaskStatus
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, PageBudget, Provider
from wearsync.providers.errors import JobSliceDone, NotSupported, ProviderError, RateLimited

log = structlog.get_logger(__name__)

NO_CONNECTION = "No active connection found for provider"


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
        try:
            if task["provider"] in IMPORTERS:  # a file uploaded to import, not a provider's API to sync
                details, run.outcome = await run_import(deps.db, deps.settings, task, deps.stopping)
            else:
                details, run.outcome = await _run_started(deps, task, defer_rate_limits)
        except JobSliceDone:
            run.outcome = "continued"
            raise
        except RateLimited:
            run.outcome = "deferred"
            raise
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
    if provider.deliveries is not None and any(details.values()):
        # Asked for, not yet stored: the task ends when the provider has delivered (or not).
        await backfills.await_deliveries(
            deps.db, provider, provider.settings(deps.settings), task_id, connection.user_id
        )
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
