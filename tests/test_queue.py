"""The one-round-trip enqueue writes the job exactly as arq's own enqueue_job would."""

from uuid import uuid4

from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus

from wearsync.queue import enqueue_task
from wearsync.settings import Settings


async def test_a_task_job_is_what_arq_would_enqueue_and_is_never_queued_twice(settings: Settings) -> None:
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    try:
        ours, theirs = str(uuid4()), str(uuid4())
        assert await enqueue_task(redis, ours) is True
        assert await redis.enqueue_job("sync_task", theirs, _job_id=theirs) is not None
        mine = await Job(ours, redis, _queue_name=settings.queue_name).info()
        arqs = await Job(theirs, redis, _queue_name=settings.queue_name).info()
        assert mine is not None
        assert arqs is not None
        assert (mine.function, mine.args, mine.kwargs) == ("sync_task", (ours,), {})
        assert (arqs.function, arqs.kwargs, arqs.job_try) == (mine.function, mine.kwargs, mine.job_try)
        assert await Job(ours, redis, _queue_name=settings.queue_name).status() == JobStatus.queued
        ttl_mine, ttl_arqs = await redis.pttl(f"arq:job:{ours}"), await redis.pttl(f"arq:job:{theirs}")
        assert abs(ttl_mine - ttl_arqs) < 5_000
        assert await enqueue_task(redis, ours) is False  # the same id again: refused
        assert await redis.zcard(settings.queue_name) == 2
    finally:
        await redis.delete(settings.queue_name, f"arq:job:{ours}", f"arq:job:{theirs}")
        await redis.aclose()
