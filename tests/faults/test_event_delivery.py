"""Outgoing webhooks through a worker's death and a Redis restart: every event arrives, with its
one id, exactly as often as the faults explain (a delivery cut off by the kill arrives again)."""

import asyncio
import signal

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_worker
from tests.faults.servers import OwnRedis, WorkerProcess
from tests.helpers import wait_until
from tests.sink import Sink, running_sink
from tests.test_event_delivery import event_ids, register, write_workouts
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"events_retry_first_s": 0.05, "events_retry_longest_s": 0.2, "events_timeout_s": 1.0,
                "events_poll_s": 0.05, "schedule_interval_s": 0}
    )  # fmt: skip


async def test_a_delivery_cut_off_by_a_killed_worker_is_made_again_with_its_id(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings
) -> None:
    async with running_sink(Sink(secrets=[], hold=asyncio.Event())) as sink:
        key, user_id, _ = await factory.connected_user("suunto")
        endpoint = await register(client, key, sink.url, event_types=["data.created"])
        sink.secrets.append(endpoint["secret"])
        for i in range(5):  # one user's: sent one after the other
            await write_workouts(db, user_id, [f"w{i}"])
        expected = await event_ids(db)
        async with WorkerProcess(fast) as victim:
            await sink.wait_for(lambda s: len(s.receipts) == 1)  # the first, held unanswered
            assert victim.process is not None
            victim.process.send_signal(signal.SIGKILL)
            await victim.process.wait()
        assert sink.hold is not None
        sink.hold.set()
        async with start_worker(fast):  # once the dead worker's claim lapses, this one sends it again
            await sink.wait_for(lambda s: s.delivered() == set(expected))
        assert sink.counts() == {expected[0]: 2, **dict.fromkeys(expected[1:], 1)}
        assert all(r.verified for r in sink.receipts)
        assert len(sink.bodies(expected[0])) == 1
        assert [r.webhook_id for r in sink.receipts] == [expected[0], *expected]  # in order


async def test_deliveries_go_on_while_redis_restarts(
    client: Client, factory: Factory, db: asyncpg.Pool, fast: Settings, own_redis: OwnRedis
) -> None:
    """Deliveries need PostgreSQL only: while the queue's Redis is down, and after it came back
    empty, every event arrives once."""
    on_own = fast.model_copy(update={"redis_url": own_redis.url})
    async with running_sink(Sink(secrets=[])) as sink:
        key, user_id, _ = await factory.connected_user("suunto")
        endpoint = await register(client, key, sink.url, event_types=["data.created"])
        sink.secrets.append(endpoint["secret"])
        async with WorkerProcess(on_own) as worker:
            for i in range(5):
                await write_workouts(db, user_id, [f"before{i}"])
            await sink.wait_for(lambda s: len(s.delivered()) == 5)
            await own_redis.stop()
            await wait_until(lambda: worker.logged("the worker waits for it"), "the outage noticed", detail=worker.log)
            for i in range(5):
                await write_workouts(db, user_id, [f"during{i}"])
            await sink.wait_for(lambda s: len(s.delivered()) == 10, detail=worker.log)
            await own_redis.start()
            for i in range(5):
                await write_workouts(db, user_id, [f"after{i}"])
            await sink.wait_for(lambda s: len(s.delivered()) == 15, detail=worker.log)
            assert worker.alive, worker.log()
        expected = await event_ids(db)
        assert sink.counts() == dict.fromkeys(expected, 1)
        assert all(r.verified for r in sink.receipts)
