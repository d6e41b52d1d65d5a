"""Property tests of every parser of upstream data: whatever a page or a webhook body holds, the
parser returns rows (or events) that PostgreSQL stores, or raises MalformedPayload, never another
exception that would crash a job with an unclear message.

The oracle is PostgreSQL itself: what a parser returns is written (in a transaction rolled back)
with the same statements a sync or the webhook receiver uses. Inputs are the simulators' own
records, mutated (fields missing, nulls, wrong types, huge numbers, NaN, absurd dates, NUL
characters, very long strings), and arbitrary JSON."""

import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import fields
from typing import Any

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import FUZZ, json_values, mutated
from wearsync.db import create_pool, webhooks
from wearsync.db.records import upsert_records
from wearsync.providers import PROVIDERS, garmin, polar, strava, suunto, whoop
from wearsync.providers.core import WebhookEvent, map_page
from wearsync.providers.errors import MalformedPayload
from wearsync.records import RECORD_KIND, Record
from wearsync.sim import SIMULATORS, create_sim_app
from wearsync.sim.common import SimState, fixture

Parser = Callable[[list[Any]], list[Record]]


def _seeds() -> dict[str, list[Any]]:
    """A few of each kind of record the simulators serve, the fullest ones first."""
    app = create_sim_app(SimState())
    served = {name: sim.records(app, "fuzzer") for name, sim in SIMULATORS.items()}

    def fullest(items: list[Any], n: int = 3) -> list[Any]:
        return sorted(items, key=lambda item: -len(json.dumps(item)))[:n]

    suunto_daily = [
        {**stat, "Sources": [{**s, "Samples": s["Samples"][:3]} for s in stat["Sources"]]}
        for stat in served["suunto"]["daily"]
    ]
    return {
        "strava.activity": fullest(served["strava"]["activities"]),
        "polar.exercise": [
            {**e, "samples": [{**s, "data": s["data"][:60]} for s in e.get("samples", [])]}
            for e in fullest(served["polar"]["exercises"])
        ],
        "suunto.workout": fullest(served["suunto"]["workouts"]),
        "suunto.sleep": fullest(served["suunto"]["sleep"]),
        "suunto.recovery": fullest(served["suunto"]["recovery"]),
        "suunto.activity": fullest(served["suunto"]["activity"]),
        "suunto.daily": [suunto_daily],  # one item: the whole answer
        "whoop.workout": fullest(served["whoop"]["workout"]),
        "whoop.sleep": fullest(served["whoop"]["sleep"]),
        "whoop.recovery": fullest(served["whoop"]["recovery"]),
        "whoop.cycle": fullest(served["whoop"]["cycle"]),
        **{f"garmin.{kind}": fullest(served["garmin"][kind]) for kind in ("activities", "dailies", "sleeps", "hrv")},
        "garmin.epochs": served["garmin"]["epochs"][:4],
    }


SEEDS = _seeds()


def _garmin(kind: str) -> Parser:
    return lambda items: garmin.map_summaries(kind, items)


def _page(mapper: Callable[[Any], Record | Sequence[Record]]) -> Parser:
    return lambda items: map_page(items, mapper)


PARSERS: dict[str, Parser] = {
    "strava.activity": _page(strava.map_activity),
    "polar.exercise": _page(polar.map_exercise),
    "suunto.workout": _page(suunto.map_workout),
    "suunto.sleep": _page(suunto.map_sleep),
    "suunto.recovery": _page(suunto.map_recovery),
    "suunto.activity": _page(suunto.map_activity),
    "suunto.daily": _page(suunto.map_daily_statistics),
    "whoop.workout": _page(whoop.map_workout),
    "whoop.sleep": _page(whoop.map_sleep),
    "whoop.recovery": _page(whoop.map_recovery),
    "whoop.cycle": _page(whoop.map_cycle),
    **{f"garmin.{kind}": _garmin(kind) for kind in ("activities", "dailies", "sleeps", "hrv", "epochs")},
}


def test_every_seed_maps_cleanly() -> None:
    """The unmutated seeds are valid: a failure below is the mutation's doing."""
    for name, parse in PARSERS.items():
        assert parse(SEEDS[name]), name


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The test database, shared by every example: each one's writes are rolled back."""
    pool = await create_pool(database_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def user_id(pool: asyncpg.Pool) -> uuid.UUID:
    """A user the rows can belong to."""
    user_id = uuid.uuid4()
    app_id = await pool.fetchval("INSERT INTO applications (name) VALUES ($1) RETURNING id", f"fuzz-{user_id}")
    await pool.execute("INSERT INTO users (id, public_id, application_id) VALUES ($1, $1, $2)", user_id, app_id)
    return user_id


async def stored(pool: asyncpg.Pool, write: Callable[[PoolConnectionProxy], Awaitable[None]]) -> None:
    """Run `write` in a transaction that is rolled back: PostgreSQL's verdict, no trace left."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await write(conn)
        finally:
            await transaction.rollback()


def page_of(name: str) -> st.SearchStrategy[list[Any]]:
    """An upstream page for parser `name`: its seeds mutated, now and then arbitrary JSON."""
    seeds = st.sampled_from(SEEDS[name]).flatmap(mutated)
    return st.lists(st.one_of(seeds, seeds, seeds, json_values), min_size=1, max_size=2)


def assert_plausible(record: Record) -> None:
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), f"{type(record).__name__}.{f.name} = {value}"


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.data())
async def test_a_page_maps_to_storable_rows_or_malformed_payload(
    pool: asyncpg.Pool, user_id: uuid.UUID, name: str, data: st.DataObject
) -> None:
    items = data.draw(page_of(name), label="page")
    try:
        records = PARSERS[name](items)
    except MalformedPayload:
        return
    for record in records:
        assert type(record) in RECORD_KIND
        assert_plausible(record)

    async def write(conn: PoolConnectionProxy) -> None:
        await upsert_records(conn, user_id, name.partition(".")[0], records)

    await stored(pool, write)


WEBHOOK_SEEDS: dict[str, list[Any]] = {
    "strava": [
        {"object_type": "activity", "object_id": 1234567, "aspect_type": "update", "owner_id": 42,
         "subscription_id": 7, "event_time": 1_700_000_000, "updates": {"title": "Evening run"}},
        {"object_type": "athlete", "object_id": 42, "aspect_type": "update", "owner_id": 42,
         "subscription_id": 7, "event_time": 1_700_000_000, "updates": {"authorized": "false"}},
    ],
    "polar": [
        {"event": "EXERCISE", "user_id": 475, "entity_id": "aQlC83", "timestamp": "2024-05-01T06:30:00.000Z",
         "url": "https://www.polaraccesslink.com/v3/exercises/aQlC83"},
        {"event": "SLEEP", "user_id": 475, "date": "2024-05-01", "timestamp": "2024-05-01T06:30:00.000Z"},
        {"event": "PING", "timestamp": "2024-05-01T06:30:00.000Z"},
    ],
    "suunto": [
        fixture("suunto", "webhook_workout_created"),
        fixture("suunto", "webhook_247_sleep_created"),
        {"type": "WORKOUT_CREATED", "username": "alice", "workout": SEEDS["suunto.workout"][0]},
    ],
    "whoop": [
        {"user_id": 10129, "id": "ecfc6a15-4661-442f-a9a4-f160dd7afae8", "type": "workout.updated",
         "trace_id": "e369c784-5100-49e8-8098-75d35c47b31b"},
        {"user_id": 10129, "id": 93845, "type": "recovery.deleted"},
    ],
    "garmin": [
        {"activities": SEEDS["garmin.activities"][:2], "dailies": [{"userId": "u-1", "callbackURL":
         "https://apis.garmin.com/wellness-api/rest/dailies?uploadStartTimeInSeconds=1&uploadEndTimeInSeconds=2"}]},
        {"deregistrations": [{"userId": "u-1", "userAccessToken": "t"}],
         "userPermissionsChange": [{"userId": "u-1", "permissions": ["ACTIVITY_EXPORT"]}]},
    ],
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(WEBHOOK_SEEDS))
@FUZZ
@given(data=st.data())
async def test_a_webhook_body_parses_to_storable_events_or_malformed_payload(
    pool: asyncpg.Pool, provider: str, data: st.DataObject
) -> None:
    webhook = PROVIDERS[provider].webhook
    assert webhook is not None
    payload = data.draw(st.one_of(*(mutated(seed) for seed in WEBHOOK_SEEDS[provider]), json_values), label="body")
    try:
        events = webhook.events(payload)
    except MalformedPayload:
        return
    assert all(isinstance(e, WebhookEvent) for e in events)

    async def write(conn: PoolConnectionProxy) -> None:
        await webhooks.insert_webhook_events(conn, provider, events)

    await stored(pool, write)
