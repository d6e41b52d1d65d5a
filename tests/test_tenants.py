"""Tenants stay apart (issue 13, findings 1 and 10): an upstream account connected in two
applications gets its events in both, each fetched with its own token; within one application an
account belongs to one user at a time; one application's disconnect leaves the other's alone."""

import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory
from tests.fuzzing import hook_path
from tests.helpers import settled
from tests.test_garmin_webhooks import settled as garmin_settled
from wearsync.dev import SIM_CLIENT_SECRET, SIM_VERIFY_TOKEN, SIM_WEBHOOK_SECRET
from wearsync.providers import PROVIDERS
from wearsync.settings import Settings
from wearsync.sim.common import SimState, WebhookTarget

Client = TestClient[web.Request, web.Application]


async def emit(sim_server: TestServer, provider: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Make something happen at the simulated provider, which sends its webhook; what it says."""
    url = sim_server.make_url(f"/_sim/{provider}/users/{user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        emitted: dict[str, Any] = await resp.json()
        return emitted


async def put_connection(
    factory: Factory, key: str, user_id: str, provider: str, sim_user: str, query: str = ""
) -> tuple[int, dict[str, Any]]:
    """PUT a connection with fresh tokens of the simulated user, naming its account."""
    tokens = await factory.sim_tokens(provider, sim_user)
    body = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
            "provider_user_id": tokens.provider_user_id or sim_user, "scopes": tokens.scopes}  # fmt: skip
    resp = await factory.client.put(
        f"/api/v1/users/{user_id}/connections/{provider}{query}", json=body, headers={"X-API-Key": key}
    )
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def workouts_of(db: asyncpg.Pool, user_id: str) -> list[str]:
    rows = await db.fetch("SELECT provider_record_id FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    return sorted(r["provider_record_id"] for r in rows)


async def test_an_account_connected_in_two_applications_gets_its_events_in_both(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    key_a, key_b = await factory.api_key("app-a"), await factory.api_key("app-b")
    user_a, user_b = await factory.user(key_a), await factory.user(key_b)
    await factory.connect(key_a, user_a, "suunto", sim_user)
    await factory.connect(key_b, user_b, "suunto", sim_user)
    sim_state.webhook_targets["suunto"] = WebhookTarget(
        str(client.make_url("/api/v1/webhooks/suunto")), SIM_WEBHOOK_SECRET
    )
    emitted = await emit(sim_server, "suunto", sim_user, {"kind": "create"})
    (event,) = await settled(db, 1)
    assert event["status"] == "processed", event["detail"]
    key = emitted["workout"]["workoutKey"]
    assert await workouts_of(db, user_a) == await workouts_of(db, user_b) == [key]


async def test_an_account_of_another_user_of_the_application_is_refused_or_moved_on_request(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    key = await factory.api_key()
    first, second = await factory.user(key), await factory.user(key)
    assert (await put_connection(factory, key, first, "suunto", sim_user))[0] == 200
    status, answer = await put_connection(factory, key, second, "suunto", sim_user)
    assert (status, answer) == (409, {"detail": (
        f"The suunto account '{sim_user}' is already connected to user {first} of this application: disconnect"
        " it there first, or send move=true to move it to this user"
    )})  # fmt: skip
    # The same user connecting again is no conflict (new tokens).
    assert (await put_connection(factory, key, first, "suunto", sim_user))[0] == 200
    status, answer = await put_connection(factory, key, second, "suunto", sim_user, "?move=true")
    assert (status, answer["active"], answer["user_id"]) == (200, True, second)
    resp = await client.get(f"/api/v1/users/{first}/connections", headers={"X-API-Key": key})
    (moved,) = await resp.json()
    assert (moved["active"], moved["inactive_reason"]) == (False, f"moved to user {second}")
    # Its events now reach the user it was moved to, and only that one.
    sim_state.webhook_targets["suunto"] = WebhookTarget(
        str(client.make_url("/api/v1/webhooks/suunto")), SIM_WEBHOOK_SECRET
    )
    emitted = await emit(sim_server, "suunto", sim_user, {"kind": "create"})
    (event,) = await settled(db, 1)
    assert event["status"] == "processed", event["detail"]
    assert (await workouts_of(db, first), await workouts_of(db, second)) == ([], [emitted["workout"]["workoutKey"]])


# ---- every provider's webhook, one upstream account in two applications ----------------------

DATA_TABLES = ("workouts", "sleep_sessions", "recoveries", "daily_activity")
# What makes each simulated provider send a webhook announcing new data (Garmin: a backfill a
# sync asks for, delivered by ping so that the data is fetched).
NEW_DATA = {"suunto": {"kind": "create"}, "strava": {"kind": "create"}, "whoop": {"kind": "workout.updated"},
            "polar": {"kind": "exercise"}}  # fmt: skip
# The calls that fetch what an event announced (not a sync's or a connection's own calls).
FETCHES = {"suunto": None, "strava": "/api/v3/activities/", "whoop": "/developer/v2/activity/",
           "polar": "/v3/exercises/", "garmin": "/wellness-api/rest/"}  # fmt: skip


async def stored(db: asyncpg.Pool, user_id: str) -> dict[str, list[str]]:
    """Every data row of the user, by table: the provider's record ids."""
    rows = {}
    for table in DATA_TABLES:
        found = await db.fetch(f"SELECT provider_record_id FROM {table} WHERE user_id = $1", uuid.UUID(user_id))
        rows[table] = sorted(r["provider_record_id"] for r in found)
    return rows


async def access_token(db: asyncpg.Pool, settings: Settings, user_id: str) -> str:
    sealed = await db.fetchval("SELECT access_token FROM provider_connections WHERE user_id = $1", uuid.UUID(user_id))
    token = settings.cipher().open(sealed)
    assert token is not None
    return token


def bearers(sim_state: SimState, provider: str, since: int) -> set[str]:
    """The tokens the provider's data API saw on the calls fetching what events announced."""
    prefix = FETCHES[provider]
    return {
        r["headers"]["Authorization"].removeprefix("Bearer ")
        for r in sim_state.requests[since:]
        if prefix
        and r["provider"] == provider
        and r["app"] == "api"
        and r["path"].startswith(prefix)
        and not r["path"].startswith(("/wellness-api/rest/backfill", "/wellness-api/rest/user"))
    }


async def new_data(
    client: Client, db: asyncpg.Pool, sim_server: TestServer, provider: str, sim_user: str, key: str, user_id: str,
    day: int,
) -> None:  # fmt: skip
    """Make the provider announce new data of the account by webhook; wait until it is handled."""
    if provider == "garmin":
        start = (int(time.time()) // 86400 - day) * 86400
        # The call returns once the backfills are asked for (the task then awaits their deliveries).
        query = f"summary_start_time={start}&summary_end_time={start + 86400}&async=false"
        resp = await client.post(f"/api/v1/garmin/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
        await garmin_settled(sim_server, db)
        return
    before = await db.fetchval("SELECT count(*) FROM webhook_events")
    await emit(sim_server, provider, sim_user, NEW_DATA[provider])
    await settled(db, before + 1)


def set_targets(client: Client, sim_state: SimState) -> None:
    """Every simulated provider sends its webhooks to the test's API, as `make run` sets them."""
    for provider, secret in (
        ("suunto", SIM_WEBHOOK_SECRET),
        ("polar", SIM_WEBHOOK_SECRET),
        ("whoop", SIM_CLIENT_SECRET),
    ):
        sim_state.webhook_targets[provider] = WebhookTarget(
            str(client.make_url(f"/api/v1/webhooks/{provider}")), secret
        )
    sim_state.webhook_targets["garmin"] = WebhookTarget(str(client.make_url(hook_path("garmin"))))
    strava = str(client.make_url(hook_path("strava")))
    sim_state.webhook_targets["strava"] = WebhookTarget(strava, verify_token=SIM_VERIFY_TOKEN)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_every_webhook_reaches_both_applications_with_their_own_tokens_and_a_disconnect_only_its_own(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, settings: Settings,
    sim_state: SimState, sim_server: TestServer, provider: str,
) -> None:  # fmt: skip
    set_targets(client, sim_state)
    sim_state.record_exchanges = True
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    if provider == "garmin":
        await emit(sim_server, "garmin", sim_user, {"kind": "delivery_mode", "mode": "ping"})
    key_a, key_b = await factory.api_key("app-a"), await factory.api_key("app-b")
    user_a, user_b = await factory.user(key_a), await factory.user(key_b)
    await factory.connect(key_a, user_a, provider, sim_user)
    await factory.connect(key_b, user_b, provider, sim_user)
    tokens = {await access_token(db, settings, user_a), await access_token(db, settings, user_b)}
    assert len(tokens) == 2

    since = len(sim_state.requests)
    await new_data(client, db, sim_server, provider, sim_user, key_a, user_a, day=2)
    rows_a, rows_b = await stored(db, user_a), await stored(db, user_b)
    assert rows_a == rows_b
    assert any(rows_a.values()), rows_a
    # Each application's connection fetched what the event announced with its own token.
    assert bearers(sim_state, provider, since) == (set() if FETCHES[provider] is None else tokens)
    events = await db.fetch("SELECT status, detail FROM webhook_events")
    assert {e["status"] for e in events} == {"processed"}, [dict(e) for e in events]

    # A disconnects: our grant upstream is shared, so it stays; B's connection is untouched.
    resp = await client.delete(f"/api/v1/users/{user_a}/connections/{provider}", headers={"X-API-Key": key_a})
    assert (await resp.json())["upstream_revoked"] is False
    resp = await client.get(f"/api/v1/users/{user_b}/connections", headers={"X-API-Key": key_b})
    ((connection_b),) = await resp.json()
    assert (connection_b["active"], connection_b["inactive_reason"]) == (True, None)
    since = len(sim_state.requests)
    await new_data(client, db, sim_server, provider, sim_user, key_b, user_b, day=5)
    assert await stored(db, user_a) == rows_a  # A gets nothing more
    later_b = await stored(db, user_b)
    assert any(set(later_b[t]) - set(rows_b[t]) for t in DATA_TABLES), later_b
    assert bearers(sim_state, provider, since) <= {await access_token(db, settings, user_b)}


# ---- a connection's account is the provider's word, never the caller's -----------------------


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_a_connection_claiming_another_account_is_refused_and_the_real_one_learnt(
    client: Client, factory: Factory, worker: Worker, db: asyncpg.Pool, sim_state: SimState,
    sim_server: TestServer, provider: str,
) -> None:  # fmt: skip
    """Tenant B, holding tokens of its own user's account, names tenant A's account: refused, and
    A's events keep reaching A alone. Without a name the account is learnt from the provider."""
    victim, mallory = f"v{uuid.uuid4().hex[:10]}", f"m{uuid.uuid4().hex[:10]}"
    key_a, key_b = await factory.api_key("app-a"), await factory.api_key("app-b")
    user_a, user_b = await factory.user(key_a), await factory.user(key_b)
    await factory.connect(key_a, user_a, provider, victim)
    victims_account = await db.fetchval("SELECT provider_user_id FROM provider_connections")
    assert victims_account != victim or provider == "suunto"  # learnt, not the name the test gave

    tokens = await factory.sim_tokens(provider, mallory)
    claim = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
             "provider_user_id": victims_account}  # fmt: skip
    url, headers = f"/api/v1/users/{user_b}/connections/{provider}", {"X-API-Key": key_b}
    resp = await client.put(url, json=claim, headers=headers)
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert victims_account in detail, detail
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 1

    tokens = await factory.sim_tokens(provider, mallory)  # Suunto's was redeemed by the refused call
    unnamed = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
    if provider == "polar":  # Polar names the account only in the token response: it must be given
        resp = await client.put(url, json=unnamed, headers=headers)
        assert resp.status == 422
        assert "x_user_id" in (await resp.json())["detail"]
        unnamed["provider_user_id"] = tokens.provider_user_id
    resp = await client.put(url, json=unnamed, headers=headers)
    assert resp.status == 200, await resp.text()
    learnt = (await resp.json())["provider_user_id"]
    assert learnt not in (victims_account, None)

    # A token the provider refuses is refused too, saying so.
    refused = {"access_token": "made-up", "refresh_token": "made-up", "provider_user_id": learnt}
    resp = await client.put(url, json=refused, headers=headers)
    assert resp.status == 422
    assert "refused the tokens" in (await resp.json())["detail"]


# ---- user ids are the application's own --------------------------------------------------------


async def test_a_user_id_taken_in_another_application_is_free_and_names_only_this_applications_user(
    client: Client, factory: Factory, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """No existence oracle, no squatting: application B creates a user with the id A's user has,
    and every route B calls with it is about B's user, A's untouched."""
    key_a, key_b = await factory.api_key("app-a"), await factory.api_key("app-b")
    shared_id = await factory.user(key_a, external_id="alice")
    await factory.connect(key_a, shared_id, "suunto", f"a{uuid.uuid4().hex[:10]}")
    resp = await client.post(f"/api/v1/suunto/users/{shared_id}/sync?async=false", headers={"X-API-Key": key_a})
    assert (await resp.json())["success"] is True
    a_rows = await db.fetchval("SELECT count(*) FROM workouts")
    assert a_rows > 0

    b = {"X-API-Key": key_b}
    resp = await client.post("/api/v1/users", json={"id": shared_id, "external_id": "alice"}, headers=b)
    assert (resp.status, (await resp.json())["id"]) == (201, shared_id)
    resp = await client.post("/api/v1/users", json={"id": shared_id}, headers=b)  # taken in B now
    assert resp.status == 409
    resp = await client.get(f"/api/v1/users/{shared_id}", headers=b)
    assert (await resp.json())["external_id"] == "alice"
    resp = await client.get(f"/api/v1/users/{shared_id}/connections", headers=b)
    assert await resp.json() == []  # A's connection is not B's user's
    resp = await client.get(f"/api/v1/users/{shared_id}/workouts", headers=b)
    assert (await resp.json())["data"] == []
    resp = await client.post(f"/api/v1/suunto/users/{shared_id}/sync", headers=b)
    assert resp.status == 404  # B's user has no connection

    # B's user connects, syncs and reads its own data under the same id.
    b_account = f"b{uuid.uuid4().hex[:10]}"
    status, connection = await put_connection(factory, key_b, shared_id, "suunto", b_account)
    assert (status, connection["user_id"], connection["provider_user_id"]) == (200, shared_id, b_account)
    resp = await client.post(f"/api/v1/suunto/users/{shared_id}/sync?async=false&data_type=workouts", headers=b)
    task_id = (await resp.json())["task_id"]
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers=b)
    assert ((await resp.json())["user_id"], (await resp.json())["status"]) == (shared_id, "succeeded")
    # Two users, one id: each application reads its own user's rows.
    users = await db.fetch("SELECT id FROM users WHERE public_id = $1 ORDER BY created_at", uuid.UUID(shared_id))
    assert len({u["id"] for u in users}) == 2  # A's, then B's
    for key, user in zip((key_a, key_b), users, strict=True):
        resp = await client.get(f"/api/v1/users/{shared_id}/workouts", headers={"X-API-Key": key})
        shown = [w["provider_record_id"] for w in (await resp.json())["data"]]
        owners = await db.fetch(
            "SELECT DISTINCT user_id FROM workouts WHERE provider_record_id = ANY($1::text[])", shown
        )
        assert shown
        assert [o["user_id"] for o in owners] == [user["id"]]
    assert await db.fetchval("SELECT count(DISTINCT user_id) FROM workouts") == 2

    # B deletes its user: A's stays, with everything of it.
    resp = await client.delete(f"/api/v1/users/{shared_id}", headers=b)
    assert (await resp.json())["user_id"] == shared_id
    resp = await client.get(f"/api/v1/users/{shared_id}/connections", headers={"X-API-Key": key_a})
    assert [c["active"] for c in await resp.json()] == [True]
    assert await db.fetchval("SELECT count(*) FROM workouts") == a_rows
