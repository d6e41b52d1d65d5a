"""The worker stops between two poll iterations: one under way when it is told to stop ends first
(cut off inside arq's start_jobs pipeline, it would leave a Redis connection no one closes), and
while Redis hangs, that wait is bounded."""

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq.worker import func

from tests.faults.servers import OwnRedis, nothing_left_open
from tests.helpers import wait_until
from wearsync.settings import Settings
from wearsync.worker import worker_options
from wearsync.worker_loop import WearsyncWorker


async def nothing(ctx: dict[str, Any]) -> None:
    """A job function: arq runs no worker without one."""


@asynccontextmanager
async def stuck_iteration(
    settings: Settings, own_redis: OwnRedis
) -> AsyncIterator[tuple[WearsyncWorker, asyncio.Task[Any]]]:
    """A worker polling `own_redis`, and its poll iteration waiting for a Redis that hangs."""
    options = worker_options(settings.model_copy(update={"redis_url": own_redis.url}))
    worker = WearsyncWorker(functions=[func(nothing, name="nothing")], handle_signals=False, **options)
    running = asyncio.create_task(worker.async_run())

    async def polled_once() -> bool:
        return worker.iteration is not None and worker.iteration.done()

    await wait_until(polled_once, "a first poll iteration")
    before = worker.iteration
    own_redis.pause()

    async def waiting() -> bool:
        return worker.iteration is not before  # begun after Redis stopped answering: it waits

    try:
        await wait_until(waiting, "a poll iteration while Redis hangs")
        assert worker.iteration is not None
        yield worker, worker.iteration
    finally:
        own_redis.resume()
        await worker.close()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_worker_told_to_stop_finishes_its_poll_iteration_first(settings: Settings, own_redis: OwnRedis) -> None:
    with nothing_left_open():
        async with stuck_iteration(settings, own_redis) as (worker, iteration):
            closing = asyncio.create_task(worker.close())

            async def stopping() -> bool:
                return not worker.polling

            await wait_until(stopping, "the worker stopping")
            assert not iteration.done()  # close waits for it
            own_redis.resume()
            await closing
            assert iteration.done()
            assert not iteration.cancelled()
            assert iteration.exception() is None


async def test_a_worker_stops_while_redis_hangs(settings: Settings, own_redis: OwnRedis) -> None:
    with warnings.catch_warnings(record=True):  # the iteration cut off may leave its connection
        warnings.simplefilter("always")
        async with stuck_iteration(settings, own_redis) as (worker, iteration):
            await worker.close()  # returns, Redis still hanging
            assert iteration.cancelled()  # cut off once the wait for it was over
            assert worker.main_task is not None
            assert worker.main_task.done()
        gc.collect()
