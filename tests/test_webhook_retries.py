"""Webhook follow-up work that fails: a failure that may pass (the provider answering 5xx, its
rate limit past our deferrals, Redis or PostgreSQL away) is tried again later, with growing
pauses, until the record lands; anything else (an answer that says no, a crash) fails for good.

Shown with Strava's events (each one fetches the activity it announces) against the simulator,
the pauses driven by time control: `webhook_retry_first_s=0` makes a failed event due at once,
and the test runs the worker's reaper itself."""

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis, Retry, create_pool
from arq.connections import RedisSettings
from redis.asyncio import Redis

from tests.conftest import Factory, start_worker
from tests.helpers import refused_port, wait_until
from tests.test_strava_webhooks import emit, subscribe
from wearsync.api.common import DEPS
from wearsync.db import create_pool as create_db_pool
from wearsync.db import webhooks
from wearsync.deps import Deps, create_http_client
from wearsync.providers import PROVIDERS
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState
from wearsync.worker import process_webhook, reap_webhook_events

Client = TestClient[web.Request, web.Application]
ACTIVITY = "/api/v3/activities/"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Failed events are due again at once, and pending ones are reaped at once: the test decides
    when the reaper runs."""
    return settings.model_copy(update={"webhook_retry_first_s": 0, "webhook_reap_after_s": 0})


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    yield redis
    await redis.aclose()


async def until(db: asyncpg.Pool, check: Callable[[asyncpg.Record], bool]) -> asyncpg.Record:
    """The only webhook event, once `check` holds for it."""

    async def there() -> asyncpg.Record | None:
        row = await the_event(db)
        return row if row is not None and check(row) else None

    return await wait_until(there, "the webhook event there")


async def the_event(db: asyncpg.Pool, event_id: int | None = None) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM webhook_events WHERE id = $1 OR $1 IS NULL", event_id)
    assert row is not None
    return row


def failed_after(attempts: int) -> Callable[[asyncpg.Record], bool]:
    return lambda event: event["status"] == "failed" and event["attempts"] == attempts


async def stored_unprocessed(
    client: Client, factory: Factory, settings: Settings, sim_server: TestServer
) -> tuple[int, str]:
    """(event id, activity id) of a created activity announced while no worker runs: the event
    stays pending, for the test to process."""
    activity_id = await created_activity(client, factory, settings, sim_server)
    event_id: int = await client.app[DEPS].db.fetchval("SELECT id FROM webhook_events")
    return event_id, activity_id


async def reaped_and_processed(deps: Deps, queue: ArqRedis, event_id: int, activity_id: str) -> None:
    """The reaper enqueues the event again, and its next job stores the activity, once."""
    assert await reap_webhook_events({"deps": deps, "redis": queue}) == 1
    assert await process_webhook({"deps": deps, "job_try": 1}, event_id) == "processed"
    assert await deps.db.fetchval("SELECT array_agg(provider_record_id) FROM workouts") == [activity_id]


async def created_activity(client: Client, factory: Factory, settings: Settings, sim_server: TestServer) -> str:
    """A Strava athlete connected, and the id of an activity the simulator announced to our webhook."""
    await subscribe(client, settings)
    _, _, sim_user = await factory.connected_user("strava")
    emitted = await emit(sim_server, sim_user, {"kind": "create"})
    assert emitted["delivery_status"] == 200
    return str(emitted["activity"]["id"])


async def test_an_event_whose_fetch_keeps_failing_is_tried_again_until_the_record_lands(
    client: Client, factory: Factory, settings: Settings, deps: Deps, queue: ArqRedis,
    db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer,
) -> None:  # fmt: skip
    # Each attempt makes 3 calls (2 retries): the first two attempts fail, the third gets through.
    sim_state.faults.append(Fault("strava", ACTIVITY, "status", 503, count=6))
    async with start_worker(settings):
        activity_id = await created_activity(client, factory, settings, sim_server)
        for attempt in (1, 2):
            failed = await until(db, failed_after(attempt))
            assert failed["retry_at"] is not None
            assert "HTTP 503" in failed["detail"]
            assert await reap_webhook_events({"deps": deps, "redis": queue}) == 1
        processed = await until(db, lambda e: e["status"] == "processed")
    assert (processed["attempts"], processed["retry_at"]) == (3, None)
    assert await db.fetchval("SELECT array_agg(provider_record_id) FROM workouts") == [activity_id]


async def insert_event(db: asyncpg.Pool, key: str, attempts: int = 0, age_s: float = 0, user: str = "1") -> int:
    event_id: int = await db.fetchval(
        "INSERT INTO webhook_events (provider, kind, provider_user_id, dedupe_key, payload, attempts, received_at)"
        " VALUES ('strava', 'activity.create', $1, $2, $3, $4, now() - make_interval(secs => $5)) RETURNING id",
        user, key, {"object_type": "activity", "object_id": 1, "aspect_type": "create", "owner_id": int(user)},
        attempts, float(age_s),
    )  # fmt: skip
    return event_id


async def test_the_pause_between_tries_doubles_up_to_the_longest_while_the_event_is_worth_it(
    db: asyncpg.Pool,
) -> None:
    for attempts, full in ((1, 60), (2, 120), (3, 200), (9, 200)):
        event_id = await insert_event(db, f"a{attempts}", attempts)
        await webhooks.fail_webhook_event(db, event_id, "HTTP 503", 60, 200, 3600)
        row = await the_event(db, event_id)
        assert (row["status"], row["detail"]) == ("failed", "HTTP 503")
        pause = (row["retry_at"] - row["processed_at"]).total_seconds()
        # A quarter of each pause is random, so that events failed together come back apart.
        assert 0.75 * full <= pause <= full, (attempts, pause)
    too_old = await insert_event(db, "old", 1, age_s=3601)
    assert await webhooks.fail_webhook_event(db, too_old, "HTTP 503", 60, 200, 3600) is None
    assert await db.fetchval("SELECT status FROM webhook_events WHERE id = $1", too_old) == "failed"


@pytest.mark.parametrize(
    ("fault", "retry_for_s", "detail"),
    [
        # Strava says no: trying again changes nothing.
        (Fault("strava", ACTIVITY, "status", 400, count=-1), 3600, "HTTP 400"),
        # Tried for long enough.
        (Fault("strava", ACTIVITY, "status", 503, count=-1), 0, "HTTP 503"),
    ],
)
async def test_an_event_fails_for_good_when_trying_again_cannot_help(
    client: Client, factory: Factory, settings: Settings, deps: Deps, queue: ArqRedis,
    db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer, fault: Fault, retry_for_s: int, detail: str,
) -> None:  # fmt: skip
    sim_state.faults.append(fault)
    settings = settings.model_copy(update={"webhook_retry_for_s": retry_for_s})
    async with start_worker(settings):
        await created_activity(client, factory, settings, sim_server)
        failed = await until(db, lambda e: e["status"] == "failed")
    assert (failed["retry_at"], failed["attempts"]) == (None, 1)
    assert detail in failed["detail"]
    assert await reap_webhook_events({"deps": deps, "redis": queue}) == 0


async def test_a_crash_fails_the_event_for_good(
    client: Client, factory: Factory, settings: Settings, deps: Deps, queue: ArqRedis,
    db: asyncpg.Pool, sim_server: TestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    strava = PROVIDERS["strava"]
    assert strava.webhook is not None
    monkeypatch.setitem(
        PROVIDERS, "strava", dataclasses.replace(strava, webhook=dataclasses.replace(strava.webhook, process=broken))
    )
    async with start_worker(settings):
        await created_activity(client, factory, settings, sim_server)
        failed = await until(db, lambda e: e["status"] == "failed")
    assert (failed["retry_at"], failed["detail"]) == (None, "internal error: RuntimeError('a bug')")
    assert await reap_webhook_events({"deps": deps, "redis": queue}) == 0


async def test_a_rate_limited_event_is_deferred_then_given_up_and_tried_again_later(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, queue: ArqRedis,
    sim_state: SimState, sim_server: TestServer,
) -> None:  # fmt: skip
    # Every 429 is longer than a worker slot may wait: the job is deferred, not slept through.
    settings = settings.model_copy(update={"rate_limit_max_wait_s": 0, "rate_limit_max_deferrals": 2})
    redis = Redis.from_url(settings.redis_url)
    deps = Deps(settings=settings, db=db, http=create_http_client(settings, redis))
    try:
        event_id, activity_id = await stored_unprocessed(client, factory, settings, sim_server)
        sim_state.faults.append(Fault("strava", ACTIVITY, "ratelimit", count=-1))
        last_try = settings.job_max_tries + settings.rate_limit_max_deferrals
        with pytest.raises(Retry):
            await process_webhook({"deps": deps, "job_try": last_try - 1}, event_id)
        deferred = await the_event(db)
        # Pending, and the reaper leaves it to its deferred job.
        assert deferred["status"] == "pending"
        assert deferred["enqueued_at"] > deferred["received_at"]
        assert await reap_webhook_events({"deps": deps, "redis": queue}) == 0
        assert await process_webhook({"deps": deps, "job_try": last_try}, event_id) == "retrying"
        given_up = await the_event(db)
        assert given_up["status"] == "failed"
        assert given_up["retry_at"] is not None
        assert given_up["detail"].startswith("gave up waiting")
        sim_state.faults.clear()  # the window reopens
        await reaped_and_processed(deps, queue, event_id, activity_id)
    finally:
        await deps.http.session.close()
        await redis.aclose()


async def test_a_database_error_retries_the_job_then_leaves_the_event_to_the_reaper(
    client: Client, factory: Factory, settings: Settings, deps: Deps, queue: ArqRedis,
    db: asyncpg.Pool, sim_server: TestServer,
) -> None:  # fmt: skip
    event_id, activity_id = await stored_unprocessed(client, factory, settings, sim_server)
    # A pool of a PostgreSQL that is not there: every query is refused.
    with refused_port() as port:
        gone = await create_db_pool(f"postgresql://postgres@127.0.0.1:{port}/wearsync", min_size=0)
        down = dataclasses.replace(deps, db=gone)
        try:
            with pytest.raises(Retry):
                await process_webhook({"deps": down, "job_try": 1}, event_id)
            with pytest.raises(OSError, match=r"Connect call failed|refused"):
                await process_webhook({"deps": down, "job_try": settings.job_max_tries}, event_id)
        finally:
            await gone.close()
    assert await db.fetchval("SELECT status FROM webhook_events") == "pending"
    await reaped_and_processed(deps, queue, event_id, activity_id)


async def test_a_redis_outage_fails_the_event_to_be_tried_again(
    client: Client, factory: Factory, settings: Settings, deps: Deps, queue: ArqRedis,
    db: asyncpg.Pool, sim_server: TestServer,
) -> None:  # fmt: skip
    event_id, activity_id = await stored_unprocessed(client, factory, settings, sim_server)
    # The rate limiter's Redis is not there.
    with refused_port() as port:
        gone = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        down = dataclasses.replace(deps, http=create_http_client(settings, gone))
        try:
            assert await process_webhook({"deps": down, "job_try": 1}, event_id) == "retrying"
        finally:
            await down.http.session.close()
            await gone.aclose()
    failed = await the_event(db)
    assert failed["status"] == "failed"
    assert failed["retry_at"] is not None
    assert failed["detail"].startswith("queue unavailable")
    await reaped_and_processed(deps, queue, event_id, activity_id)
