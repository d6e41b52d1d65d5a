"""The worker class `wearsync worker` (and the tests) run: arq's, made to outlive a Redis outage and
to stop cleanly.

arq's worker ends, and the process with it, on the first Redis error of its polling loop (and when
Redis is not up within a few seconds of its start). This one waits for Redis with a growing pause
instead, and the jobs it is running carry on (a job that needs Redis meanwhile waits for it: see
`worker.sync_task`). Redis may come back empty (restarted without persistence): a marker key
tells, and the worker then runs `on_lost_contents` (it looks for lost tasks and webhook events at
once instead of at the reapers' next minute).

It stops between two poll iterations: arq cancels its main task wherever it is, and cancelled
inside an iteration (in start_jobs' WATCH pipeline) that iteration can leave a Redis connection
that no one closes (a ResourceWarning when it is collected), or a job claimed and never run. The
iteration under way is finished first, for at most STOP_WAIT_S (Redis may hang meanwhile)."""

import asyncio
import contextlib
import math
import signal
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any

import redis.exceptions
import structlog
from arq.worker import Worker
from redis.asyncio import Redis

from wearsync.deps import Deps
from wearsync.queue import QUEUE_UNAVAILABLE, wait_for_redis
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

PAUSE_S, MAX_PAUSE_S = 0.5, 4.0
# What starting a job may raise when Redis goes away: redis-py says WatchError for a connection lost
# under the job's WATCH.
LOST_AT_START: tuple[type[Exception], ...] = (*QUEUE_UNAVAILABLE, redis.exceptions.WatchError)
# How long stopping waits for the poll iteration under way, and then for the jobs recording their
# end, and for Redis to forget the worker's health check: a Redis that hangs answers none of them.
STOP_WAIT_S = 5.0


class WearsyncWorker(Worker):
    """arq's worker, which

    - waits for a Redis that is not up yet at its start, and its polling survives Redis errors (and
      any other error of a poll iteration, logged: arq's loop would end on it);
    - with `on_lost_contents`, notices a Redis that lost its keys and runs it;
    - drains on SIGTERM: it picks no new job, its running jobs stop after the page in hand (their
      tasks go on in new jobs, for other workers), and a job still running when
      WEARSYNC_SHUTDOWN_GRACE_S ends is cancelled, which puts it back in the queue (arq runs it
      again; its task resumes from its progress); the worker in `ctx["webhook_worker"]` with it;
    - stops between poll iterations (`close`)."""

    def __init__(
        self, *args: Any, on_lost_contents: Callable[[dict[str, Any]], Awaitable[None]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_lost_contents = on_lost_contents
        self.outage_pause_s: float | None = None  # while Redis is down: the next pause
        # Set once and never expiring: only a Redis that lost its contents lacks it.
        self.marker_key = f"{self.queue_name}:contents-marker"
        self.polling = True
        self.iteration: asyncio.Task[None] | None = None  # the poll iteration under way, or the last
        self._stopping = asyncio.Event()  # ends an outage pause

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
        """One iteration, in a task of its own: cancelling the main task (a signal, `close`) leaves
        it to end by itself, and `close` waits for it."""
        if not self.polling:
            return
        self.iteration = asyncio.ensure_future(self._iterate())
        await asyncio.shield(self.iteration)

    async def _iterate(self) -> None:
        try:
            await self._check_marker()
            await super()._poll_iteration()
        except QUEUE_UNAVAILABLE as e:
            pause = self._next_pause()
            log.warning("queue unavailable, the worker waits for it", error=repr(e), retry_in_s=pause)
            await self._pause(pause)
            return
        except Exception:
            # arq's loop ends on any other error, and the worker with it: the webhook worker's end
            # went unheard (its process and main worker went on), its queue no longer polled.
            pause = self._next_pause()
            log.exception("poll iteration failed, the worker polls on", retry_in_s=pause)
            await self._pause(pause)
            return
        if self.outage_pause_s is not None:
            self.outage_pause_s = None
            log.info("queue available again")

    def _next_pause(self) -> float:
        pause = self.outage_pause_s or PAUSE_S
        self.outage_pause_s = min(2 * pause, MAX_PAUSE_S)
        return pause

    async def _pause(self, pause: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), pause)

    async def _check_marker(self) -> None:
        if self.on_lost_contents is None or await self.pool.exists(self.marker_key):
            return
        log.info("the queue is new or lost its contents, looking for lost tasks and webhook events")
        try:
            await self.on_lost_contents(self.ctx)
        except QUEUE_UNAVAILABLE:
            raise
        except Exception:  # the reapers' minute tries again
            log.exception("looking for lost tasks and webhook events failed")
        await self.pool.set(self.marker_key, b"1")

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            if not self.allow_pick_jobs:  # stopping: the rest stay queued for another worker
                return
            try:
                await super().start_jobs([job_id])
            except LOST_AT_START as e:
                # arq takes a job slot before its Redis calls and gives it back only on the errors it
                # expects: without this, each outage would cost the worker slots for good.
                self.job_counter -= 1
                self.sem.release()
                if isinstance(e, redis.exceptions.WatchError):
                    # Only a connection lost under the job's WATCH gets here (arq handles a watched
                    # key that changed): the queue is away, not a crash of the process.
                    raise redis.exceptions.ConnectionError(str(e)) from e
                raise

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        deps = self.ctx.get("deps")
        if isinstance(deps, Deps):
            deps.stopping.set()
        if isinstance(webhook_worker := self.ctx.get("webhook_worker"), Worker):
            webhook_worker.handle_sig_wait_for_completion(signum)
        super().handle_sig_wait_for_completion(signum)

    async def close(self) -> None:
        """Stop: no poll iteration starts, the one under way ends, the jobs recording their end in
        Redis finish (each wait at most STOP_WAIT_S: Redis may hang), the other jobs are cancelled
        (a cancelled job stays in the queue); then the shutdown hook, and the pool closes."""
        self.allow_pick_jobs = False
        self.polling = False
        self._stopping.set()
        if self.iteration is not None:
            await asyncio.wait([self.iteration], timeout=STOP_WAIT_S)
        # A job whose function returned records its end in Redis: cut off there, it would be run
        # again, and leave its pipeline open.
        recording = [t for job_id, t in self.tasks.items() if job_id not in self.job_tasks and not t.done()]
        if recording:
            await asyncio.wait(recording, timeout=STOP_WAIT_S)
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)  # cancels the jobs and the main task, as arq's close
        # Handling signals, its jobs were cancelled by SIGINT or after SIGTERM's grace; if it ended
        # otherwise, they are waited for, as arq does.
        polling = [t for t in (self.main_task, self.iteration) if t is not None]
        for task in polling:
            task.cancel()
        await asyncio.gather(*polling, *self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        if self._pool is None:
            return
        with contextlib.suppress(*QUEUE_UNAVAILABLE, TimeoutError):
            async with asyncio.timeout(STOP_WAIT_S):
                await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None
