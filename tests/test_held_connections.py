"""No database connection is held while a provider answers, a wait for a free connection is
bounded, and one application's sync calls (async=false) cannot take the API from the others."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory
from tests.helpers import wait_until
from wearsync.api.app import create_app
from wearsync.api.common import DEPS
from wearsync.db import connections, service_pool
from wearsync.deps import Deps, credentials_for
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection
from wearsync.providers.http import HttpClient
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


@dataclass
class HeldTokenEndpoint:
    """A token endpoint that takes each request, then answers only once `release` is set: with
    the simulator's own answer (it forwards the request there)."""

    url: str = ""
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0


@pytest.fixture
async def held_tokens(aiohttp_server: Any, sim_server: TestServer) -> AsyncIterator[HeldTokenEndpoint]:
    held = HeldTokenEndpoint()
    sim_auth = str(sim_server.make_url("/suunto/auth")).rstrip("/")

    async def token(request: web.Request) -> web.Response:
        held.requests += 1
        held.asked.set()
        await held.release.wait()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sim_auth}{request.path}", data=await request.post(), headers=request.headers) as resp,
        ):
            return web.Response(status=resp.status, body=await resp.read(), content_type=resp.content_type)

    app = web.Application()
    app.router.add_post("/{tail:.*}", token)
    server = await aiohttp_server(app)
    held.url = str(server.make_url("")).rstrip("/")
    yield held
    held.release.set()


async def expired_connection(factory: Factory, application: str) -> tuple[str, str]:
    """(key, user id) of a user of `application` whose Suunto access token has expired."""
    key = await factory.api_key(application)
    user_id = await factory.user(key)
    await factory.connect(key, user_id, "suunto", f"u{uuid.uuid4().hex[:10]}", expires_at="2000-01-01T00:00:00Z")
    return key, user_id


async def test_a_token_refresh_holds_no_database_connection_while_the_provider_answers(
    factory: Factory, settings: Settings, db: asyncpg.Pool, held_tokens: HeldTokenEndpoint
) -> None:
    _, user_id = await expired_connection(factory, "acme")
    slow = settings.replace(suunto_auth_url=held_tokens.url)
    pool = await service_pool(slow, 1)
    try:
        row = await connections.get_active_connection(db, uuid.UUID(user_id), "suunto")
        assert row is not None
        connection = Connection.from_row(row, slow.cipher())
        async with aiohttp.ClientSession() as session:
            deps = Deps(settings=slow, db=pool, http=HttpClient(session, retries=0))
            credentials = credentials_for(deps, PROVIDERS["suunto"], connection)
            refresh = asyncio.create_task(credentials.token())
            await held_tokens.asked.wait()
            # The provider is answering: the pool's one connection is free, the row unlocked.
            assert pool.get_idle_size() == pool.get_size() == 1
            lock = "SELECT 1 FROM provider_connections WHERE user_id = $1 FOR UPDATE NOWAIT"
            async with db.acquire() as conn, conn.transaction():
                assert await conn.fetchval(lock, uuid.UUID(user_id)) == 1
            held_tokens.release.set()
            token = await refresh
    finally:
        await pool.close()
    assert token != connection.access_token
    stored = await connections.get_active_connection(db, uuid.UUID(user_id), "suunto")
    assert stored is not None
    assert slow.cipher().open(stored["access_token"]) == token


async def test_a_request_finding_every_connection_taken_answers_503_within_the_bound(
    aiohttp_client: Any, factory: Factory, settings: Settings
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    api: Client = await aiohttp_client(
        create_app(settings.model_copy(update={"api_db_pool_max": 1, "db_acquire_timeout_s": 0.2}))
    )
    url, headers = f"/api/v1/users/{user_id}", {"X-API-Key": key}
    assert (await api.get(url, headers=headers)).status == 200
    async with api.app[DEPS].db.acquire():  # a caller that keeps the API's only connection
        resp = await api.get(url, headers=headers)
        assert resp.status == 503
        assert (await resp.json())["detail"].startswith("Database")
    assert (await api.get(url, headers=headers)).status == 200


async def test_one_applications_sync_calls_are_limited_and_leave_the_api_to_others(
    aiohttp_client: Any, factory: Factory, settings: Settings, held_tokens: HeldTokenEndpoint
) -> None:
    busy_key, busy_user = await expired_connection(factory, "busy")
    _, busy_other_user = await expired_connection(factory, "busy")
    other_key, other_user = await expired_connection(factory, "other")
    limited = settings.model_copy(
        update={"suunto_auth_url": held_tokens.url, "api_db_pool_max": 1, "sync_calls_per_app": 1}
    )
    api: Client = await aiohttp_client(create_app(limited))
    sync_call = "/api/v1/suunto/users/{}/sync?data_type=workouts&async=false"
    first = asyncio.create_task(api.post(sync_call.format(busy_user), headers={"X-API-Key": busy_key}))
    await held_tokens.asked.wait()  # the first call is refreshing its token, the provider slow
    # The same application's next sync call is refused at once, saying when to try again ...
    resp = await api.post(sync_call.format(busy_other_user), headers={"X-API-Key": busy_key})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "sync calls" in (await resp.json())["detail"]
    # ... while another application's requests are answered, from the API's one connection.
    resp = await api.get(f"/api/v1/users/{other_user}", headers={"X-API-Key": other_key})
    assert resp.status == 200
    other_call = asyncio.create_task(api.post(sync_call.format(other_user), headers={"X-API-Key": other_key}))
    await wait_until(lambda: asked(held_tokens, 2), "the other application's sync call refreshing too")
    held_tokens.release.set()
    for call in (first, other_call):
        resp = await call
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["success"] is True
    # The slot is given back: the application may sync again.
    resp = await api.post(sync_call.format(busy_other_user), headers={"X-API-Key": busy_key})
    assert resp.status == 200, await resp.text()


async def asked(held: HeldTokenEndpoint, times: int) -> bool:
    return held.requests >= times


async def test_an_applications_sync_calls_are_limited_across_api_processes(
    aiohttp_client: Any, factory: Factory, settings: Settings, held_tokens: HeldTokenEndpoint
) -> None:
    """Two API processes (two apps on one PostgreSQL and Redis): the application's one sync call
    running in the first takes its place in the second too, until it ends."""
    key, user = await expired_connection(factory, "busy")
    _, other_user = await expired_connection(factory, "busy")
    limited = settings.model_copy(update={"suunto_auth_url": held_tokens.url, "sync_calls_per_app": 1})
    first_api, second_api = [await aiohttp_client(create_app(limited)) for _ in range(2)]
    sync_call = "/api/v1/suunto/users/{}/sync?data_type=workouts&async=false"
    first = asyncio.create_task(first_api.post(sync_call.format(user), headers={"X-API-Key": key}))
    await held_tokens.asked.wait()
    resp = await second_api.post(sync_call.format(other_user), headers={"X-API-Key": key})
    assert resp.status == 429
    assert "sync calls" in (await resp.json())["detail"]
    held_tokens.release.set()
    resp = await first
    assert resp.status == 200, await resp.text()
    resp = await second_api.post(sync_call.format(other_user), headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
