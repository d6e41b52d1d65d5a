"""The arq worker: its job functions and WorkerSettings. `wearsync worker` runs it."""

import asyncio
import contextlib
import random
import socket
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from arq import Retry
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.cron import cron
from arq.worker import func, get_kwargs

from wearsync import backfills, metrics, metrics_server
from wearsync.db import TRANSIENT_DB_ERRORS, retention, service_pool_when_up, tasks, webhooks
from wearsync.deps import Deps, create_http_client
from wearsync.imports.jobs import sweep_uploads
from wearsync.models import TaskStatus
from wearsync.outbox import start_dispatcher, stop_dispatcher
from wearsync.providers import PROVIDERS
from wearsync.providers.errors import JobSliceDone, RateLimited
from wearsync.queue import (
    QUEUE_UNAVAILABLE,
    continue_in_new_job,
    enqueue_webhook_events,
    finish_handovers,
    wait_for_redis,
)
from wearsync.revocation import retry_revocations
from wearsync.schedule import schedule_syncs
from wearsync.settings import Settings, webhook_queue_name
from wearsync.sync import run_task
from wearsync.webhooks import fail_event, process_event
from wearsync.worker_loop import WearsyncWorker

log = structlog.get_logger(__name__)


def _may_defer(deps: Deps, job_try: int) -> bool:
    """Whether a rate-limited job may be deferred once more (arq's max_tries covers both budgets)."""
    return job_try < deps.settings.job_max_tries + deps.settings.rate_limit_max_deferrals


def _wait_out(e: RateLimited) -> Retry:
    """Defer the job until the provider's window reopens, without holding a worker slot; jitter
    keeps the deferred jobs from all coming back at the same instant."""
    defer = e.retry_after_s + random.uniform(0, min(5, 0.5 + e.retry_after_s / 10))
    metrics.rate_limit_wait(e.provider, "deferred", defer)
    return Retry(defer=defer)


async def sync_task(ctx: dict[str, Any], task_id: str) -> dict[str, bool] | None:
    deps: Deps = ctx["deps"]
    job_try: int = ctx["job_try"]
    structlog.contextvars.bind_contextvars(task_id=task_id, job_try=job_try)
    try:
        try:
            return await run_task(deps, UUID(task_id), defer_rate_limits=True)
        except JobSliceDone as e:
            # A new job (a job id of its own, so job_try starts again) at the back of the queue.
            await continue_in_new_job(deps, ctx["redis"], task_id, ctx.get("job_id"))
            log.info("task continues in a new job", reason=str(e))
            return None
        except RateLimited as e:
            if not e.fair_share:
                raise
            # Its share of the window is used: on in a new job once the window ends, without
            # holding this worker slot meanwhile (a share comes every window: no budget needed).
            defer_s = (_wait_out(e).defer_score or 0) / 1000
            await continue_in_new_job(deps, ctx["redis"], task_id, ctx.get("job_id"), defer_s=defer_s)
            log.info("rate limit share used, the task continues in a new job", seconds=round(e.retry_after_s))
            return None
    except QUEUE_UNAVAILABLE as e:
        await _after_redis_outage(ctx, deps, task_id, e)
        return None
    except RateLimited as e:
        # Wait for the provider's window to reopen without holding this worker slot.
        if _may_defer(deps, job_try):
            log.info("rate limited, deferring the task", seconds=round(e.retry_after_s), error=str(e))
            raise _wait_out(e) from e
        await tasks.finish_task(deps.db, UUID(task_id), TaskStatus.FAILED, None, f"gave up waiting: {e}")
        return None
    except TRANSIENT_DB_ERRORS as e:
        # The pool does not retry a query that died with its connection; the job does.
        if retry := _retry_for_database(deps, job_try, e):
            raise retry from e
        # Its tries are spent: failed, where the database takes that (a query that always times
        # out); where it is still away, the task stays running until the reaper gives it a new job.
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            error = f"database errors in {job_try} tries, the last: {e!r}"
            await tasks.finish_task(deps.db, UUID(task_id), TaskStatus.FAILED, None, error)
        raise
    except Exception as e:
        if isinstance(e, asyncpg.ForeignKeyViolationError) and await tasks.get_task(deps.db, UUID(task_id)) is None:
            # Its user was deleted meanwhile (DELETE /users/{id}), the task with it: nothing to finish.
            log.info("the task's user was deleted, the task stops")
            return None
        log.exception("sync task crashed")
        try:
            await tasks.finish_task(deps.db, UUID(task_id), TaskStatus.FAILED, None, f"internal error: {e!r}")
        except TRANSIENT_DB_ERRORS as lost:
            # The database is gone too (and may have caused the crash): unrecorded, the task
            # would stay running; the retry tells.
            if retry := _retry_for_database(deps, job_try, lost):
                raise retry from e
            raise
        return None
    finally:
        structlog.contextvars.unbind_contextvars("task_id", "job_try")


def _retry_for_database(deps: Deps, job_try: int, error: BaseException) -> Retry | None:
    """The retry of a job whose database went away; None once its tries are spent."""
    if job_try < deps.settings.job_max_tries:
        log.warning("database unavailable, retrying the task", error=repr(error))
        return Retry(defer=min(60, 2**job_try))
    log.error("database unavailable, giving up", error=repr(error))
    return None


async def process_webhook(ctx: dict[str, Any], event_id: int) -> str | None:
    """Process one stored webhook event (see wearsync.webhooks): its status, "retrying" when it
    failed for a reason that may pass and the reaper enqueues it again later."""
    deps: Deps = ctx["deps"]
    job_try: int = ctx["job_try"]
    structlog.contextvars.bind_contextvars(event_id=event_id, job_try=job_try)
    try:
        return await process_event(deps, event_id)
    except RateLimited as e:
        if _may_defer(deps, job_try):
            deferred = _wait_out(e)
            await webhooks.postpone_webhook_event(deps.db, event_id, (deferred.defer_score or 0) / 1000)
            raise deferred from e
        return await fail_event(deps, event_id, f"gave up waiting: {e}", may_pass=True)
    except QUEUE_UNAVAILABLE as e:  # the rate limiter's Redis
        return await fail_event(deps, event_id, f"queue unavailable: {e!r}", may_pass=True)
    except TRANSIENT_DB_ERRORS as e:
        if retry := _retry_for_database(deps, job_try, e):
            raise retry from e
        raise  # still pending: the reaper enqueues it again
    except Exception as e:
        log.exception("webhook event crashed")
        try:
            await webhooks.finish_webhook_event(deps.db, event_id, "failed", f"internal error: {e!r}")
        except TRANSIENT_DB_ERRORS as lost:
            if retry := _retry_for_database(deps, job_try, lost):
                raise retry from e
            raise
        return "failed"
    finally:
        structlog.contextvars.unbind_contextvars("event_id", "job_try")


async def reap_webhook_events(ctx: dict[str, Any], older_than_s: float | None = None) -> int:
    """Enqueue again the webhook events still pending well after they arrived (their job was
    lost: Redis restarted, or the enqueue failed after the event was stored, or the database
    failed it past its tries) and the failed ones whose next try is due. `older_than_s`: pending
    for at least that long (default WEARSYNC_WEBHOOK_REAP_AFTER_S)."""
    deps: Deps = ctx["deps"]
    if older_than_s is None:
        older_than_s = deps.settings.webhook_reap_after_s
    event_ids = await webhooks.stale_webhook_events(deps.db, older_than_s=older_than_s)
    await enqueue_webhook_events(ctx["redis"], event_ids, webhook_queue_name(deps.settings))
    if event_ids:
        log.warning("re-enqueued webhook events", count=len(event_ids))
    return len(event_ids)


async def _after_redis_outage(ctx: dict[str, Any], deps: Deps, task_id: str, error: Exception) -> None:
    """Redis failed the job (the rate limiter, the enqueue of its next job) and may come back empty.
    The pages stored so far stay done: once Redis answers again the task goes on in a new job; if
    it stays down (or the worker is stopping), the task is left queued, and a reaper gives it a job
    when Redis is back."""
    log.warning("queue unavailable, the task waits for it", error=repr(error))
    if await wait_for_redis(ctx["redis"], deps.settings.redis_outage_wait_s, stop=deps.stopping):
        try:
            if await continue_in_new_job(deps, ctx["redis"], task_id, ctx.get("job_id")):
                log.info("queue back, the task continues in a new job")
            return
        except QUEUE_UNAVAILABLE:
            pass  # down again
    await tasks.requeue_task(deps.db, UUID(task_id))
    log.warning("queue still unavailable, the task is left queued for the reaper")


async def reap_lost_tasks(ctx: dict[str, Any]) -> int:
    """Enqueue again the tasks PostgreSQL says are waiting or running whose job Redis no longer
    has (Redis restarted and lost its contents, or the enqueue failed): queued for a while, or
    running with no progress for longer than a job may take, with their job neither queued nor in
    progress."""
    deps: Deps = ctx["deps"]
    redis = ctx["redis"]
    settings = deps.settings
    lost = 0
    idle = settings.job_timeout_s + 60
    for task in await tasks.possibly_lost_tasks(deps.db, settings.task_reap_after_s, idle):
        job_id = task["job_id"]
        if await redis.exists(f"{job_key_prefix}{job_id}", f"{in_progress_key_prefix}{job_id}"):
            continue  # its job is queued or running
        if await continue_in_new_job(deps, redis, str(task["id"]), replacing=job_id):
            lost += 1
    if lost:
        log.warning("re-enqueued tasks whose job was lost", count=lost)
    return lost


# Rows one statement deletes, and statements one run may take: bounded work per run, while a
# run every hour still clears far more history than a day makes.
PRUNE_BATCH, PRUNE_MAX_BATCHES = 2000, 50


async def find_lost_work(ctx: dict[str, Any]) -> None:
    """Redis lost its contents (or is new): every job is gone, so each task waiting for one and
    each pending webhook event is lost, however recent (the few events the API queued since Redis
    came back run twice, which is harmless)."""
    await reap_lost_tasks(ctx)
    await reap_webhook_events(ctx, older_than_s=0)


async def settle_garmin_syncs(ctx: dict[str, Any]) -> int:
    """Every minute: end the syncs whose wait for their deliveries has passed (Garmin's backfills)."""
    deps: Deps = ctx["deps"]
    ended = 0
    for provider in PROVIDERS.values():
        if provider.deliveries is not None:
            ended += await backfills.settle_tasks(deps.db, provider, provider.settings(deps.settings))
    return ended


async def prune_history(ctx: dict[str, Any]) -> dict[str, int]:
    """Every hour: delete finished tasks, handled webhook events, webhook event digests and events
    past their retention."""
    deps: Deps = ctx["deps"]
    settings = deps.settings
    deleted = {"tasks": 0, "webhook_events": 0, "webhook_digests": 0, "events": 0}
    for kind, days, prune in (
        ("tasks", settings.task_retention_days, retention.prune_tasks),
        ("webhook_events", settings.webhook_event_retention_days, retention.prune_webhook_events),
        ("webhook_digests", settings.webhook_digest_retention_days, retention.prune_webhook_digests),
        ("events", settings.event_retention_days, retention.prune_events),
    ):
        if not days:
            continue
        for _ in range(PRUNE_MAX_BATCHES):
            count = await prune(deps.db, days, PRUNE_BATCH)
            deleted[kind] += count
            if count < PRUNE_BATCH:
                break
    if any(deleted.values()):
        log.info("pruned history", **deleted)
    return deleted


async def sweep_import_uploads(ctx: dict[str, Any]) -> int:
    """Every hour: delete uploaded exports no import will read (see imports.jobs.sweep_uploads)."""
    deps: Deps = ctx["deps"]
    return await sweep_uploads(deps.db, deps.settings)


async def scheduled_syncs(ctx: dict[str, Any]) -> dict[str, int]:
    """Every minute: start the incremental syncs that are due (see wearsync.schedule)."""
    return await schedule_syncs(ctx["deps"], ctx["redis"])


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings()
    ctx["settings"] = settings
    settings.cipher()  # no key, no start: tokens are never stored in clear
    if settings.worker_metrics_port:  # several workers on one host need a port each
        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        ctx["metrics"] = await metrics_server.start_server(host, port, settings.metrics_token)
        log.info("serving metrics", url=f"http://{host}:{port}/metrics")
    db = await service_pool_when_up(settings, settings.db_pool_max + settings.webhook_worker_max_jobs)
    ctx["deps"] = Deps(settings=settings, db=db, http=create_http_client(settings, ctx["redis"], jobs=True))
    if settings.events_max_in_flight:  # outgoing webhooks, beside the jobs (see wearsync.outbox)
        ctx["dispatcher"] = await start_dispatcher(settings)
    if settings.webhook_worker_max_jobs:
        ctx["webhook_worker"] = start_webhook_worker(settings, ctx["deps"])


async def shutdown(ctx: dict[str, Any]) -> None:
    if "metrics" in ctx:
        await ctx["metrics"].cleanup()
    if "dispatcher" in ctx:
        settings: Settings = ctx["settings"]
        dispatcher, task = ctx["dispatcher"]
        await stop_dispatcher(dispatcher, task, min(settings.shutdown_grace_s, settings.events_timeout_s))
    if "webhook_worker" in ctx:
        await ctx["webhook_worker"].close()
    deps: Deps | None = ctx.get("deps")
    if deps is not None:
        await finish_handovers(deps)
        await deps.http.session.close()
        await deps.db.close()


class WorkerSettings:
    """Data only; process-specific values (Redis, queue, limits) are passed by `worker_options`."""

    # process_webhook here too: the jobs an API of an earlier release queued before an upgrade.
    functions = [func(sync_task, name="sync_task"), func(process_webhook, name="process_webhook")]
    on_startup = startup
    on_shutdown = shutdown
    cron_jobs = [
        cron(reap_webhook_events, minute=set(range(60)), run_at_startup=True),
        cron(reap_lost_tasks, minute=set(range(60)), second=15, run_at_startup=True),
        cron(scheduled_syncs, second=30, unique=True),
        cron(settle_garmin_syncs, second=45, unique=True),  # every minute; one run at a time across workers
        cron(prune_history, minute=41, second=45, unique=True),
        cron(sweep_import_uploads, minute=43, second=15, unique=True),
        cron(retry_revocations, second=50, unique=True),  # every minute
    ]
    keep_result = 3600
    health_check_interval = 30


def worker_options(settings: Settings) -> dict[str, Any]:
    return {
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_delay_s,
        "job_timeout": settings.job_timeout_s,
        # Our own budgets (database retries, rate-limit deferrals) are checked in the job.
        "max_tries": settings.job_max_tries + settings.rate_limit_max_deferrals,
        "ctx": {"settings": settings},
        "health_check_key": health_check_key(settings),
        # On SIGTERM: how long running jobs get to stop by themselves (0: cancelled at once).
        "job_completion_wait": settings.shutdown_grace_s,
    }


def health_check_key(settings: Settings) -> str:
    """Per host, so that `wearsync worker --check` in a container vouches for that container's worker."""
    return f"{settings.queue_name}:health-check:{socket.gethostname()}"


def create_worker(settings: Settings, **overrides: Any) -> WearsyncWorker:
    """The worker `wearsync worker` runs: every job and cron job, and a look for lost work when
    Redis lost its contents."""
    options = get_kwargs(dict(vars(WorkerSettings))) | worker_options(settings) | overrides
    return WearsyncWorker(on_lost_contents=find_lost_work, **options)


def run_worker(settings: Settings) -> None:
    """`wearsync worker`: run until told to stop."""
    create_worker(settings).run()


def start_webhook_worker(settings: Settings, deps: Deps) -> WearsyncWorker:
    """The webhook jobs' worker, in each worker process beside its main one: its own queue and job
    slots (WEARSYNC_WEBHOOK_WORKER_MAX_JOBS), the main worker's database pool and HTTP client. The
    main worker starts it once up, drains it with itself on SIGTERM, and closes it (cancelling what
    it still runs: a cancelled job's event stays pending, for the reaper) before closing the pools."""
    options = worker_options(settings) | {
        "queue_name": webhook_queue_name(settings),
        "max_jobs": settings.webhook_worker_max_jobs,
        "ctx": {"settings": settings, "deps": deps},
        "health_check_key": f"{health_check_key(settings)}:webhooks",
    }
    worker = WearsyncWorker(functions=[func(process_webhook, name="process_webhook")], handle_signals=False, **options)
    worker.main_task = asyncio.create_task(worker.main())
    return worker
