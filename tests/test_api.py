"""Users, connections, tasks and health endpoints."""

import asyncio
import contextlib
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory, start_sync
from wearsync.api.app import SETTINGS, create_app
from wearsync.api.middlewares import PUBLIC_ROUTES
from wearsync.providers import PROVIDERS
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


async def test_create_and_get_user(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    headers = {"X-API-Key": key}
    user_id = str(uuid.uuid4())
    resp = await client.post("/api/v1/users", json={"id": user_id, "external_id": "u-1"}, headers=headers)
    assert resp.status == 201
    body = await resp.json()
    assert (body["id"], body["external_id"]) == (user_id, "u-1")
    resp = await client.get(f"/api/v1/users/{user_id}", headers=headers)
    assert resp.status == 200
    assert (await resp.json())["id"] == user_id
    resp = await client.post("/api/v1/users", headers=headers)  # no body: a generated id
    assert resp.status == 201
    assert uuid.UUID((await resp.json())["id"])


async def test_user_errors(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    headers = {"X-API-Key": key}
    user_id = await factory.user(key, external_id="dup")
    resp = await client.post("/api/v1/users", json={"id": user_id}, headers=headers)
    assert resp.status == 409
    resp = await client.post("/api/v1/users", json={"external_id": "dup"}, headers=headers)
    assert resp.status == 409
    resp = await client.post("/api/v1/users", json={"id": "nope"}, headers=headers)
    assert resp.status == 422
    assert "'id'" in (await resp.json())["detail"]
    resp = await client.post("/api/v1/users", data=b"{not json", headers=headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": "Request body is not valid JSON"}
    resp = await client.get("/api/v1/users/not-a-uuid", headers=headers)
    assert resp.status == 422
    assert "user_id" in (await resp.json())["detail"]
    resp = await client.get(f"/api/v1/users/{uuid.uuid4()}", headers=headers)
    assert resp.status == 404
    assert await resp.json() == {"detail": "User not found"}


# Every route that names a user or a task, by route name, as another application's key calls it:
# (method, path, body). A route added to the app without an entry here fails the test below.
FOREIGN_CALLS: dict[str, list[tuple[str, str, dict[str, Any] | None]]] = {
    "user": [("GET", "/api/v1/users/{user}", None)],
    "connections": [("GET", "/api/v1/users/{user}/connections", None)],
    "connection": [("PUT", "/api/v1/users/{user}/connections/suunto", {})],  # body: B's own valid tokens
    "disconnect": [("DELETE", "/api/v1/users/{user}/connections/suunto", None)],
    "sync": [
        *(("POST", f"/api/v1/{provider}/users/{{user}}/sync", None) for provider in sorted(PROVIDERS)),
        ("POST", "/api/v1/suunto/users/{user}/sync?async=false", None),
        ("POST", "/api/v1/suunto/users/{user}/sync?data_type=workouts", None),  # the open task's own request
    ],
    "task": [("GET", "/api/v1/tasks/{task}", None)],
    "task-retry": [("POST", "/api/v1/tasks/{task}/retry", None)],
    "task-cancel": [("POST", "/api/v1/tasks/{task}/cancel", None)],
    "oauth-authorize": [
        ("GET", "/api/v1/oauth/suunto/authorize?user_id={user}&redirect_uri=http%3A%2F%2Flocalhost%2Fcb", None)
    ],
    **{name: [("GET", f"/api/v1/users/{{user}}/{name}", None)] for name in ("workouts", "sleep", "recovery", "daily")},
    "samples": [("GET", "/api/v1/users/{user}/samples?type=heart_rate", None)],
    "user-delete": [("DELETE", "/api/v1/users/{user}", None)],
    "user-update": [("PATCH", "/api/v1/users/{user}", {"external_id": "mine now"})],
    "user-tasks": [("GET", "/api/v1/users/{user}/tasks", None)],
    "apple-health-upload": [("POST", "/api/v1/users/{user}/imports/apple-health", None)],
    "connect-link": [("POST", "/api/v1/users/{user}/connect-link", None)],
    # Their webhook endpoint and one of their events, by id.
    "endpoint": [("GET", "/api/v1/webhook-endpoints/{endpoint}", None)],
    "endpoint-update": [("PATCH", "/api/v1/webhook-endpoints/{endpoint}", {"description": "mine now"})],
    "endpoint-delete": [("DELETE", "/api/v1/webhook-endpoints/{endpoint}", None)],
    "endpoint-rotate": [("POST", "/api/v1/webhook-endpoints/{endpoint}/rotate-secret", None)],
    "endpoint-test": [("POST", "/api/v1/webhook-endpoints/{endpoint}/test", None)],
    "endpoint-replay": [("POST", "/api/v1/webhook-endpoints/{endpoint}/replay", {"event_id": "{event}"})],
    "event-deliveries": [("GET", "/api/v1/events/{event}/deliveries", None)],
    "events-stream": [("GET", "/api/v1/events/stream?user_id={user}", None)],
}
# Routes that name nobody's user or task: public ones (webhooks: tests/test_tenants.py walks them
# with one account in two applications), creating a user (below), the dashboard's lists of the
# application's own (tests/test_dashboard.py shows another application's key none of it), and its
# webhook endpoints (listing, creating: tests/test_webhook_endpoints.py).
NAMING_NO_USER = (
    PUBLIC_ROUTES
    | {"users", "users-list"}  # the list: tests/test_users_api.py shows only the application's own
    | {
        "dashboard-users",
        "dashboard-tasks",
        "dashboard-webhook-events",
        "dashboard-deliveries",
    }
    | {"endpoints", "endpoints-create"}
    # Operator keys only: tests/test_admin_api.py refuses every other key (403).
    | {"applications", "applications-create", "keys", "keys-create", "key-revoke"}
    | {"app-settings", "app-settings-update"}
)


async def test_a_key_sees_only_its_applications_users(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    """Every route that names a user or a task answers another application's key exactly as it
    answers for an id that does not exist (404, the same detail), and changes nothing; also when
    both applications connected the same upstream account."""
    routes = {r.name for r in client.app.router.routes() if r.method != "HEAD" and r.name}
    assert routes - NAMING_NO_USER == set(FOREIGN_CALLS), "a route without its cross-application check"
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    owner_key = await factory.api_key()
    their_user = await factory.user(owner_key, external_id="shared-name")
    await factory.connect(owner_key, their_user, "suunto", sim_user)
    await start_sync(client, owner_key, "suunto", their_user, "data_type=workouts&async=false")  # their data
    their_task = await start_sync(client, owner_key, "suunto", their_user, "data_type=workouts")  # left queued
    resp = await client.post(
        "/api/v1/webhook-endpoints", json={"url": "https://example.com/h"}, headers={"X-API-Key": owner_key}
    )
    their_endpoint = (await resp.json())["id"]
    their_event = await db.fetchval("SELECT public_id FROM events ORDER BY id DESC LIMIT 1")
    mine = {"X-API-Key": await factory.api_key("another-app")}
    my_user = await factory.user(mine["X-API-Key"], external_id="shared-name")  # external ids: per application
    await factory.connect(mine["X-API-Key"], my_user, "suunto", sim_user)  # the same upstream account
    tables = ("provider_connections", "sync_tasks", "workouts", "samples", "sync_cursors", "webhook_endpoints",
              "event_deliveries")  # fmt: skip

    async def state() -> list[list[asyncpg.Record]]:
        return [await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables]

    before = await state()
    for name, calls in FOREIGN_CALLS.items():
        for method, route, body in calls:
            if body == {}:
                tokens = await factory.sim_tokens("suunto", sim_user)
                body = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
            answers = []
            theirs_and_unknown = [
                {"user": their_user, "task": their_task, "endpoint": their_endpoint, "event": their_event},
                {"user": str(uuid.uuid4()), "task": str(uuid.uuid4()), "endpoint": str(uuid.uuid4()),
                 "event": "evt_" + uuid.uuid4().hex},
            ]  # fmt: skip
            for ids in theirs_and_unknown:
                sent = {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()} if body else body
                resp = await client.request(method, route.format(**ids), json=sent, headers=mine)
                answers.append((resp.status, await resp.json()))
            theirs, unknown = answers
            assert theirs == unknown, (name, route)
            assert theirs[0] == 404, (name, route)
            assert set(theirs[1]) == {"detail"}, (name, route)
    # Nothing of theirs changed, and no task was made for their user.
    assert await state() == before


async def test_connections_lifecycle(client: Client, factory: Factory, db: asyncpg.Pool) -> None:
    key = await factory.api_key()
    headers = {"X-API-Key": key}
    user_id = await factory.user(key)
    tokens = await factory.sim_tokens("strava", "athlete-7")
    body = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": "2030-01-01T00:00:00+00:00",
        "scopes": ["read", "activity:read"],
    }
    resp = await client.put(f"/api/v1/users/{user_id}/connections/strava", json=body, headers=headers)
    assert resp.status == 200
    shown = await resp.json()
    assert "access_token" not in shown
    assert "refresh_token" not in shown
    # The account is the one Strava says the token is of.
    assert (shown["provider"], shown["provider_user_id"], shown["active"]) == ("strava", tokens.provider_user_id, True)
    newer = (await factory.sim_tokens("strava", "athlete-7")).access_token
    resp = await client.put(
        f"/api/v1/users/{user_id}/connections/strava", json=body | {"access_token": newer}, headers=headers
    )
    assert resp.status == 200
    stored = await db.fetchval("SELECT access_token FROM provider_connections")
    assert stored.startswith("fernet:")  # encrypted at rest
    assert newer not in stored
    assert client.app[SETTINGS].cipher().open(stored) == newer
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers=headers)
    assert [c["provider"] for c in await resp.json()] == ["strava"]
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/strava", headers=headers)
    assert resp.status == 200
    assert ((await resp.json())["active"], (await resp.json())["upstream_revoked"]) == (False, True)
    resp = await client.get(f"/api/v1/users/{user_id}/connections", headers=headers)
    assert [c["active"] for c in await resp.json()] == [False]  # deactivated, kept with its data
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/strava", headers=headers)
    assert resp.status == 404


async def test_connection_validation_names_the_field(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    cases = [
        ({"provider_user_id": "x"}, "access_token"),
        ({"access_token": "x", "provider_user_id": "y", "expires_at": "soon"}, "expires_at"),
        ({"access_token": "x", "provider_user_id": "y", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"access_token": "x", "provider_user_id": "y", "scopes": "all"}, "scopes"),
    ]
    for body, field in cases:
        resp = await client.put(f"/api/v1/users/{user_id}/connections/suunto", json=body, headers={"X-API-Key": key})
        assert resp.status == 422, body
        assert field in (await resp.json())["detail"]
    resp = await client.put(
        f"/api/v1/users/{user_id}/connections/fitbit",
        json={"access_token": "x", "provider_user_id": "y"},
        headers={"X-API-Key": key},
    )
    assert resp.status == 422
    assert "provider" in (await resp.json())["detail"]


async def test_task_endpoint(client: Client, factory: Factory) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    headers = {"X-API-Key": key}
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?data_type=247&since=1700000000", headers=headers)
    task_id = (await resp.json())["task_id"]
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers=headers)
    assert resp.status == 200
    task = await resp.json()
    assert task["task_id"] == task_id
    assert (task["status"], task["provider"], task["user_id"]) == ("queued", "suunto", user_id)
    assert task["data_types"] == ["data_247"]
    assert task["params"]["since"] == 1700000000
    assert task["progress"] == {
        "data_247": {"status": "queued", "pages": 0, "pages_total": None, "records": {}, "error": None}
    }
    for name in ("result", "error", "created_at", "started_at", "finished_at", "duration_s"):
        assert name in task
    other = {"X-API-Key": await factory.api_key("another-app")}
    assert (await client.get(f"/api/v1/tasks/{task_id}", headers=other)).status == 404
    resp = await client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=headers)
    assert resp.status == 404
    assert await resp.json() == {"detail": "Task not found"}
    assert (await client.get("/api/v1/tasks/xyz", headers=headers)).status == 422
    assert (await client.get(f"/api/v1/tasks/{task_id}")).status == 401


async def test_health(client: Client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


class TcpProxy:
    """A TCP relay to a real server that a test can cut, to take a dependency down for real."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_health_names_what_is_down(aiohttp_client: Any, settings: Settings, db: asyncpg.Pool) -> None:
    redis_url = urlsplit(settings.redis_url)
    proxy = TcpProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379)
    port = await proxy.start()
    app = create_app(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}{redis_url.path}"}))
    client: Client = await aiohttp_client(app)
    assert (await client.get("/health")).status == 200
    await proxy.cut()
    resp = await client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["detail"] == "Unavailable: redis"
    assert body["postgres"] == "ok"


async def test_unknown_route_is_json_404(client: Client) -> None:
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404
    assert await resp.json() == {"detail": "Not Found"}
