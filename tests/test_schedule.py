"""Scheduled syncs: due connections, stalest first, spread over the interval, within rate limits."""

from collections.abc import AsyncIterator

import asyncpg
import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings

from tests.conftest import Factory
from wearsync.deps import Deps
from wearsync.providers import PROVIDERS
from wearsync.schedule import schedule_syncs, syncs_per_run
from wearsync.settings import Settings


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    yield redis
    await redis.aclose()


def with_settings(deps: Deps, **changes: object) -> Deps:
    return Deps(settings=deps.settings.replace(**changes), db=deps.db, http=deps.http)


async def test_due_connections_are_synced_stalest_first_and_only_once(
    factory: Factory, deps: Deps, db: asyncpg.Pool, queue: ArqRedis
) -> None:
    users = [(await factory.connected_user("suunto"))[1] for _ in range(4)]
    recent, stale = users[0], users[1]
    # users[0] synced a minute ago; users[1] a day ago; the others never.
    for user_id, age in ((recent, "1 minute"), (stale, "1 day")):
        await db.execute(
            "INSERT INTO sync_tasks (id, application_id, user_id, provider, mode, data_types, params, status,"
            " created_at) SELECT gen_random_uuid(), application_id, id, 'suunto', 'async', '{workouts}', '{}',"
            f" 'succeeded', now() - interval '{age}' FROM users WHERE id = $1",
            user_id,
        )
    # An interval of 4 minutes: each run takes a quarter of the connections; no rate limit in the way.
    hurry = with_settings(deps, schedule_interval_s=240, suunto_rate_limits="100000/60")
    started = await schedule_syncs(hurry, queue)
    assert started == {"suunto": 1}
    first = await db.fetch("SELECT user_id, mode, data_types, params FROM sync_tasks WHERE mode = 'scheduled'")
    assert [str(r["user_id"]) for r in first] in ([str(users[2])], [str(users[3])])  # never synced come first
    assert first[0]["data_types"] == ["data_247", "workouts"]
    assert first[0]["params"]["since"] is None  # incremental
    await schedule_syncs(hurry, queue)
    await schedule_syncs(hurry, queue)
    scheduled = {str(r["user_id"]) for r in await db.fetch("SELECT user_id FROM sync_tasks WHERE mode = 'scheduled'")}
    assert scheduled == {str(u) for u in users[1:]}  # the recently synced one is not due
    # Nothing more is due while those are open (or recent).
    assert await schedule_syncs(hurry, queue) == {}
    assert await queue.zcard(deps.settings.queue_name) == 3


async def test_the_rate_limit_caps_each_run(deps: Deps) -> None:
    suunto = PROVIDERS["suunto"]
    # Suunto: 100 calls per 15 min, half of it for the scheduler, 5 calls a sync: 2 syncs every 3 minutes.
    per_run = [syncs_per_run(suunto, deps, connections=10_000, run=run) for run in range(30)]
    assert sum(per_run) == 20
    assert max(per_run) == 1
    # Few connections over a long interval: the spread, not the limit, decides.
    assert syncs_per_run(suunto, with_settings(deps, schedule_interval_s=86400), connections=10, run=1) == 1
    disabled = with_settings(deps, schedule_interval_s=0)
    assert await schedule_syncs(disabled, None) == {}  # type: ignore[arg-type]
