"""Tenants stay apart (issue 13, findings 1 and 10): an upstream account connected in two
applications gets its events in both, each fetched with its own token; within one application an
account belongs to one user at a time; one application's disconnect leaves the other's alone."""

import uuid
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.worker import Worker

from tests.conftest import Factory
from tests.test_webhooks import settled
from wearsync.dev import SIM_WEBHOOK_SECRET
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
