"""Enqueueing a sync task's job in one Redis round trip, and webhook events' jobs in bulk.

arq's `enqueue_job` takes three round trips (WATCH, EXISTS, MULTI/EXEC) to make sure a job id is
not used twice. A task's job id is the task's own new UUID, so that cannot happen; one atomic
script writes the job exactly as arq would (its serialized form, its expiry) and queues it, and
still refuses an id that exists. This is the API's hottest path (`POST .../sync`)."""

import asyncio
from collections.abc import Callable, Sequence
from uuid import UUID, uuid4

import redis.exceptions
import structlog
from arq import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from wearsync.db import tasks
from wearsync.deps import Deps

log = structlog.get_logger(__name__)

# Redis is unreachable (refused, reset, timed out, loading after a restart): the same command can
# succeed once it is back.
QUEUE_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# KEYS: job key, result key, queue. ARGV: serialized job, expiry ms, score, job id.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


async def enqueue_task(
    queue: ArqRedis, task_id: str, queue_name: str | None = None, job_id: str | None = None, defer_s: float = 0
) -> bool:
    """Queue `sync_task(task_id)` with job id `job_id` (default: the task id), to run `defer_s`
    from now at the earliest; False if that job id exists already."""
    job_id = job_id or task_id
    keys, args = _job("sync_task", task_id, queue, queue_name, job_id, defer_s)
    created = await queue.eval(_ENQUEUE, 3, *keys, *args)  # type: ignore[misc, arg-type]  # stubs: sync, str only
    return bool(created)


async def enqueue_webhook_events(queue: ArqRedis, event_ids: Sequence[int], queue_name: str | None = None) -> None:
    """Queue `process_webhook(event_id)` for each event, in one round trip (a delivery may carry
    thousands). Each job gets an id of its own: arq's job keys are global to the Redis server,
    while event ids are only unique per database."""
    async with queue.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            keys, args = _job("process_webhook", event_id, queue, queue_name, uuid4().hex)
            pipe.eval(_ENQUEUE, 3, *keys, *args)  # type: ignore[arg-type]  # stubs: str only
        await pipe.execute()


def _job(
    function: str, arg: str | int, queue: ArqRedis, queue_name: str | None, job_id: str, defer_s: float = 0
) -> tuple[tuple[str, str, str], tuple[bytes, str, str, str]]:
    """The keys and arguments of _ENQUEUE for the job `function(arg)`, as arq would write it."""
    enqueue_time_ms = timestamp_ms()
    defer_ms = int(defer_s * 1000)
    job = serialize_job(function, (arg,), {}, None, enqueue_time_ms, serializer=queue.job_serializer)
    keys = (job_key_prefix + job_id, result_key_prefix + job_id, queue_name or queue.default_queue_name)
    return keys, (job, str(queue.expires_extra_ms + defer_ms), str(enqueue_time_ms + defer_ms), job_id)


async def continue_in_new_job(
    deps: Deps, queue: ArqRedis, task_id: str, replacing: str | None = None, defer_s: float = 0
) -> bool:
    """The task goes on in a new job (its own id, so arq counts its tries afresh) at the back of
    the queue (`defer_s` from now at the earliest); the task row names it, for the reaper to check
    on. Only if the task's job is still `replacing` (None: whatever it is): whether it was enqueued.

    Carried through even when the caller is cancelled (a stopping process hands its work over
    this way): cut between its update and its enqueue, the task would name a job Redis never got
    and wait for the reaper. The process awaits `finish_handovers` before closing its pools."""
    handover = asyncio.ensure_future(_continue_in_new_job(deps, queue, task_id, replacing, defer_s))
    deps.handovers.add(handover)
    handover.add_done_callback(deps.handovers.discard)
    return await asyncio.shield(handover)


async def _continue_in_new_job(
    deps: Deps, queue: ArqRedis, task_id: str, replacing: str | None, defer_s: float
) -> bool:
    job_id = f"{task_id}:{uuid4().hex[:8]}"
    if not await tasks.set_task_job(deps.db, UUID(task_id), job_id, replacing):
        return False
    await enqueue_task(queue, task_id, deps.settings.queue_name, job_id=job_id, defer_s=defer_s)
    return True


async def finish_handovers(deps: Deps, timeout_s: float = 10) -> None:
    """Wait (a bounded time) for the hand-overs still under way, and for those that what is still
    ending starts meanwhile (a sync call cancelled at shutdown starts its own on its way out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while deps.handovers and loop.time() < deadline:
        done, _ = await asyncio.wait(set(deps.handovers), timeout=deadline - loop.time())
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.warning("handing a task over failed", error=repr(error))  # its caller may be gone


async def wait_for_redis(
    redis: Redis, timeout_s: float, stop: asyncio.Event, waiting: Callable[[Exception, float], None] | None = None
) -> bool:
    """Whether Redis answers again within `timeout_s` (pinged with a growing pause), unless
    `stop` is set first. `waiting(error, pause)` hears of each ping that failed."""
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + timeout_s, 0.2
    while not stop.is_set():
        try:
            await redis.ping()
            return True
        except QUEUE_UNAVAILABLE as e:
            if loop.time() + pause > deadline:
                return False
            if waiting is not None:
                waiting(e, pause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 2.0)
    return False
