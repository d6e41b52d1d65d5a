"""The live stream (`GET /api/v1/events/stream`) over real HTTP: events in commit order, one whose
transaction took its id early and commits late not skipped (two real connections); resuming with
Last-Event-ID; each application sees only its own events, filtered by user and type; a real sync's
events as they happen; the stream ends at shutdown and when its key is revoked."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from arq.worker import Worker

from tests.conftest import Factory, start_sync
from wearsync.api import stream as api_stream
from wearsync.db import keys, stream
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
GUARD_S = 30  # a test that gets nothing for this long has failed


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"events_stream_poll_s": 0.02})


class Sse:
    """The messages of an open stream, read from the wire as the SSE format has them."""

    def __init__(self, resp: ClientResponse) -> None:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        self.resp = resp

    async def message(self) -> dict[str, str]:
        """The next message's fields (comments skipped); EOFError when the stream ends."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(GUARD_S):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    raise EOFError
                text = line.decode().removesuffix("\n")
                if not text:
                    if fields:
                        return fields
                elif not text.startswith(":"):
                    name, _, value = text.partition(":")
                    fields[name] = value.removeprefix(" ")

    async def event(self) -> dict[str, Any]:
        """The next event (messages that only move the position skipped): its id, type and body."""
        while "data" not in (fields := await self.message()):
            pass
        return {"id": fields["id"], "event": fields["event"], "body": json.loads(fields["data"])}

    async def events(self, n: int) -> list[dict[str, Any]]:
        return [await self.event() for _ in range(n)]

    async def ended(self) -> None:
        """Read on until the stream ends (EOF)."""
        try:
            while True:
                await self.message()
        except EOFError:
            return


async def open_stream(client: Client, key: str, query: str = "", **headers: str) -> Sse:
    resp = await client.get(f"/api/v1/events/stream?{query}", headers={"X-API-Key": key, **headers})
    assert resp.status == 200, await resp.text()
    return Sse(resp)


async def emit(
    db: asyncpg.Pool | asyncpg.Connection, app_id: uuid.UUID, user_id: str | None, event_type: str = "data.created"
) -> str:
    """An event as the outbox writes one; its public id."""
    public_id: str = await db.fetchval(
        "INSERT INTO events (application_id, user_id, type, payload) VALUES ($1, $2, $3, $4::text::jsonb)"
        " RETURNING public_id",
        app_id, None if user_id is None else uuid.UUID(user_id), event_type, json.dumps({"n": 1}),
    )  # fmt: skip
    return public_id


async def body_of(db: asyncpg.Pool, public_id: str) -> dict[str, Any]:
    """The stored event as its body should be: a webhook's (the Standard Webhooks layout: type,
    timestamp, data with the user's id), plus the event's id."""
    row = await db.fetchrow("SELECT type, created_at, user_id, payload FROM events WHERE public_id = $1", public_id)
    assert row is not None
    user_id = None if row["user_id"] is None else str(row["user_id"])
    data = {"user_id": user_id, **row["payload"]}
    return {"id": public_id, "type": row["type"], "timestamp": row["created_at"], "data": data}


def parsed(body: dict[str, Any]) -> dict[str, Any]:
    """A body with its timestamp read (PostgreSQL writes no trailing zeros of the microseconds)."""
    return body | {"timestamp": datetime.fromisoformat(body["timestamp"])}


async def tenant(factory: Factory, db: asyncpg.Pool, application: str) -> tuple[str, uuid.UUID, str]:
    """(key, application id, a user's id) of an application."""
    key = await factory.api_key(application)
    user_id = await factory.user(key)
    app_id: uuid.UUID = await db.fetchval("SELECT application_id FROM users WHERE public_id = $1", uuid.UUID(user_id))
    return key, app_id, user_id


@pytest.fixture
async def streams() -> AsyncIterator[list[Sse]]:
    opened: list[Sse] = []
    yield opened
    for sse in opened:
        sse.resp.close()


async def test_an_event_committed_late_is_not_skipped(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings
) -> None:
    key, app_id, user_id = await tenant(factory, db, "acme")
    sse = await open_stream(client, key)
    start = (await sse.message())["id"]  # from now: the position only
    slow = await asyncpg.connect(settings.database_url)
    fast = await asyncpg.connect(settings.database_url)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        early = await emit(slow, app_id, user_id)  # takes its id and transaction first
        late = await emit(fast, app_id, user_id)  # committed first
        ids = {r["public_id"]: r["id"] for r in await db.fetch("SELECT public_id, id FROM events")}
        assert list(ids) == [late]
        # The log read from where the stream started holds the committed event back.
        assert await stream.read_events(db, app_id, api_stream.parse_position(start), None, None, 10) == []
        await slow_tx.commit()
    finally:
        await slow.close()
        await fast.close()
    got = await sse.events(2)
    assert [e["body"]["id"] for e in got] == [early, late]
    assert await db.fetchval("SELECT id FROM events WHERE public_id = $1", early) < ids[late]
    assert got[0]["event"] == "data.created"
    assert parsed(got[0]["body"]) == await body_of(db, early)
    assert got[0]["body"]["data"] == {"user_id": user_id, "n": 1}


async def test_a_client_reconnecting_with_last_event_id_gets_every_later_event_once(
    client: Client, factory: Factory, db: asyncpg.Pool, streams: list[Sse]
) -> None:
    key, app_id, user_id = await tenant(factory, db, "acme")
    first = [await emit(db, app_id, user_id) for _ in range(3)]
    replay = await open_stream(client, key, "after=0&follow=false")  # what there is, then the end
    assert [e["body"]["id"] for e in await replay.events(3)] == first
    await replay.ended()
    streams.append(sse := await open_stream(client, key, "after=0"))
    assert (await sse.message()) == {"retry": "1000", "id": "0-0"}
    got = await sse.events(3)
    assert [e["body"]["id"] for e in got] == first
    sse.resp.close()

    missed = [await emit(db, app_id, user_id) for _ in range(2)]
    # Reconnecting as EventSource does: the original URL, and the last id in the header, which wins.
    streams.append(sse := await open_stream(client, key, "after=0", **{"Last-Event-ID": got[-1]["id"]}))
    assert [e["body"]["id"] for e in await sse.events(2)] == missed
    marker = await emit(db, app_id, user_id)
    assert (await sse.event())["body"]["id"] == marker  # nothing twice in between

    # Without a position the stream starts now: only what comes after.
    streams.append(fresh := await open_stream(client, key))
    await fresh.message()
    new = await emit(db, app_id, user_id)
    assert (await fresh.event())["body"]["id"] == new


async def test_each_application_streams_its_own_events_filtered_by_user_and_type(
    client: Client, factory: Factory, db: asyncpg.Pool, streams: list[Sse]
) -> None:
    key_a, app_a, alice = await tenant(factory, db, "acme")
    bob = await factory.user(key_a)
    key_b, app_b, carol = await tenant(factory, db, "globex")
    streams.append(all_a := await open_stream(client, key_a))
    streams.append(alices := await open_stream(client, key_a, f"user_id={alice}&type=sync.succeeded,sync.failed"))
    streams.append(all_b := await open_stream(client, key_b))

    others = [await emit(db, app_b, carol), await emit(db, app_b, None, "connection.created")]
    mine = [await emit(db, app_a, bob, "connection.created"), await emit(db, app_a, alice, "data.created"),
            await emit(db, app_a, alice, "sync.succeeded")]  # fmt: skip
    # Commit order is the order above: another application's events would come first.
    assert [e["body"]["id"] for e in await all_a.events(3)] == mine
    assert [e["body"]["id"] for e in await alices.events(1)] == mine[2:]
    assert [e["body"]["id"] for e in await all_b.events(2)] == others
    marker = await emit(db, app_b, carol, "sync.failed")
    assert (await all_b.event())["body"]["id"] == marker
    failed = await emit(db, app_a, alice, "sync.failed")
    assert parsed((await alices.event())["body"]) == await body_of(db, failed)

    def get(query: str, key: str = key_a, **headers: str) -> Any:
        return client.get(f"/api/v1/events/stream?{query}", headers={"X-API-Key": key, **headers})

    for query, key, status in (
        (f"user_id={carol}", key_a, 404),  # another application's user
        (f"user_id={alice}", key_b, 404),
        (f"user_id={uuid.uuid4()}", key_a, 404),
        ("type=data.created,nope", key_a, 422),
        ("after=12", key_a, 422),
        ("after=-1-2", key_a, 422),
        ("userid=x", key_a, 422),
        ("", "ws_nope", 401),
    ):
        resp = await get(query, key)
        assert resp.status == status, (query, await resp.text())
        assert "detail" in await resp.json()
    resp = await get("", key_a, **{"Last-Event-ID": "abc"})
    assert resp.status == 422
    assert "Last-Event-ID" in (await resp.json())["detail"]


async def test_a_sync_streams_its_events_as_they_are_stored(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, streams: list[Sse]
) -> None:
    key, user_id, sim_user = await factory.connected_user("suunto")
    sim_state.provider("suunto").user_history[sim_user] = {"workouts": 30, "days_247": 2}
    streams.append(sse := await open_stream(client, key, f"user_id={user_id}"))
    await sse.message()
    task_id = await start_sync(client, key, "suunto", user_id)
    got: list[dict[str, Any]] = []
    while not got or not got[-1]["event"].startswith("sync."):
        got.append(await sse.event())
    assert got[-1]["event"] == "sync.succeeded"
    assert got[-1]["body"]["data"]["task_id"] == task_id
    stored = await db.fetch("SELECT public_id FROM events WHERE user_id = $1 ORDER BY tx, id", uuid.UUID(user_id))
    # every event of the sync, in the log's commit order (the connection's own came before the stream)
    assert [e["body"]["id"] for e in got] == [r["public_id"] for r in stored][-len(got) :]
    assert {e["event"] for e in got[:-1]} == {"data.created"}
    positions = [api_stream.parse_position(e["id"]) for e in got]
    assert positions == sorted(positions)


async def test_a_stream_ends_when_its_key_is_revoked_and_when_the_api_shuts_down(
    client: Client, factory: Factory, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, streams: list[Sse]
) -> None:
    monkeypatch.setattr(api_stream, "KEY_CACHE_S", 0)  # the key checked at every poll
    key, app_id, user_id = await tenant(factory, db, "acme")
    other_key = await factory.api_key("acme")
    streams.append(revoked := await open_stream(client, key))
    streams.append(kept := await open_stream(client, other_key))
    await revoked.message()
    await kept.message()
    assert await keys.revoke_api_key(db, key[:10]) == 1
    await revoked.ended()
    marker = await emit(db, app_id, user_id)
    assert (await kept.event())["body"]["id"] == marker

    await client.app.shutdown()  # what a SIGTERM starts with
    await kept.ended()
