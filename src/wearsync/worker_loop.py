"""The loop `wearsync worker` runs: arq's, made to outlive a Redis outage.

arq's worker ends, and the process with it, on the first Redis error of its polling loop (and when
Redis is not up within a few seconds of its start). This one waits for Redis with a growing pause
instead, and the jobs it is running carry on (a job that needs Redis meanwhile waits for it: see
`sync_task`). Redis may come back empty (restarted without persistence): a marker key tells, and
the worker then looks for lost tasks and webhook events at once instead of at the reapers' next
minute."""

import asyncio
import contextlib
import math
import signal
from typing import Any

import structlog
from arq.worker import func, get_kwargs
from redis.asyncio import Redis

from wearsync.deps import Deps
from wearsync.queue import QUEUE_UNAVAILABLE, wait_for_redis
from wearsync.settings import Settings, webhook_queue_name
from wearsync.worker import (
    DrainingWorker,
    WorkerSettings,
    health_check_key,
    process_webhook,
    reap_lost_tasks,
    reap_webhook_events,
    worker_options,
)

log = structlog.get_logger(__name__)

PAUSE_S, MAX_PAUSE_S = 0.5, 4.0


class OutlastingWorker(DrainingWorker):
    finds_lost_work = True  # a Redis that lost its keys: look for lost tasks and webhook events

    """The worker `wearsync worker` runs: it drains on SIGTERM (DrainingWorker), waits for a Redis
    that is not up yet at its start, its polling loop survives Redis errors, and it notices a Redis
    that lost its keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage_pause_s: float | None = None  # while Redis is down: the next pause
        # Set once and never expiring: only a Redis that lost its contents lacks it.
        self.marker_key = f"{self.queue_name}:contents-marker"

    async def main(self) -> None:
        if self._pool is None:
            await self._wait_for_queue()
        await super().main()  # arq connects, starts up and polls

    async def _wait_for_queue(self) -> None:
        """arq gives up on a Redis that does not answer at start after a few tries, and the process
        ends; a worker started before Redis (a deploy, a restart of everything) waits for it. A
        SIGTERM meanwhile cancels the wait, as it cancels arq's main task."""
        settings: Settings = self.ctx["settings"]
        redis_settings = self.redis_settings
        assert redis_settings is not None  # a worker without a pool of its own has them
        where = redis_settings.unix_socket_path or f"{redis_settings.host}:{redis_settings.port}"
        address = f"{where}/{redis_settings.database}"  # without credentials
        failed = 0

        def waiting(error: Exception, pause: float) -> None:
            nonlocal failed
            failed += 1
            log.warning(
                "queue unavailable at start, the worker waits for it",
                redis=address,
                error=repr(error),
                retry_in_s=pause,
            )

        timeout = redis_settings.conn_timeout  # also for a Redis that takes connections and does not answer
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            await wait_for_redis(redis, math.inf, asyncio.Event(), waiting)
        finally:
            await redis.aclose()
        if failed:
            log.info("queue available, the worker starts", redis=address)

    async def _poll_iteration(self) -> None:
        try:
            await self._check_marker()
            await super()._poll_iteration()
        except QUEUE_UNAVAILABLE as e:
            pause = self.outage_pause_s or PAUSE_S
            log.warning("queue unavailable, the worker waits for it", error=repr(e), retry_in_s=pause)
            self.outage_pause_s = min(2 * pause, MAX_PAUSE_S)
            await asyncio.sleep(pause)
            return
        if self.outage_pause_s is not None:
            self.outage_pause_s = None
            log.info("queue available again")

    async def _check_marker(self) -> None:
        if not self.finds_lost_work or await self.pool.exists(self.marker_key):
            return
        log.info("the queue is new or lost its contents, looking for lost tasks and webhook events")
        try:
            await reap_lost_tasks(self.ctx)
            # Every job is gone: each pending event is lost, however recent (the few the API
            # queued since Redis came back run twice, which is harmless).
            await reap_webhook_events(self.ctx, older_than_s=0)
        except QUEUE_UNAVAILABLE:
            raise
        except Exception:  # the reapers' minute tries again
            log.exception("looking for lost tasks and webhook events failed")
        await self.pool.set(self.marker_key, b"1")

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except QUEUE_UNAVAILABLE:
                # arq takes a job slot before its Redis calls and gives it back only on the errors it
                # expects: without this, each outage would cost the worker slots for good.
                self.job_counter -= 1
                self.sem.release()
                raise


class WebhookWorker(OutlastingWorker):
    """The webhook jobs' worker, in each worker process beside its main one: its own queue and job
    slots (WEARSYNC_WEBHOOK_WORKER_MAX_JOBS), the main worker's database pool and HTTP client. The
    main worker starts it once up, drains it with itself on SIGTERM, and stops it before closing
    the pools."""

    finds_lost_work = False  # the main worker's


def start_webhook_worker(settings: Settings, deps: Deps) -> WebhookWorker:
    options = worker_options(settings) | {
        "queue_name": webhook_queue_name(settings),
        "max_jobs": settings.webhook_worker_max_jobs,
        "ctx": {"settings": settings, "deps": deps},
        "health_check_key": f"{health_check_key(settings)}:webhooks",
    }
    worker = WebhookWorker(functions=[func(process_webhook, name="process_webhook")], handle_signals=False, **options)
    worker.main_task = asyncio.create_task(worker.main())
    return worker


async def stop_webhook_worker(worker: WebhookWorker) -> None:
    """Cancel what it still runs (a cancelled job's event stays pending, for the reaper), then close."""
    worker.handle_sig(signal.SIGUSR1)
    await asyncio.gather(*filter(None, [worker.main_task, *worker.tasks.values()]), return_exceptions=True)
    if worker._pool is not None:
        with contextlib.suppress(*QUEUE_UNAVAILABLE):
            await worker.pool.delete(worker.health_check_key)
        await worker.pool.close(close_connection_pool=True)
        worker._pool = None


def create_worker(settings: Settings, **overrides: Any) -> OutlastingWorker:
    return OutlastingWorker(**get_kwargs(dict(vars(WorkerSettings))) | worker_options(settings) | overrides)


def run_worker(settings: Settings) -> None:
    """`wearsync worker`: run until told to stop."""
    create_worker(settings).run()
