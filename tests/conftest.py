"""Real PostgreSQL, Redis and simulators over sockets. DATABASE_URL / REDIS_URL name the servers
to use (CI: the machine's); without them an embedded PostgreSQL and Valkey are started.

Each test run gets its own database (dropped at the end) and its own arq queue name; every test
starts from empty tables."""

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from hypothesis import settings as hypothesis_settings
from redis.asyncio import Redis

from tests.helpers import wait_until
from tests.servers import real_servers
from wearsync.api.app import create_app
from wearsync.db import create_pool, keys
from wearsync.db.migrate import migrate
from wearsync.deps import Deps, create_http_client
from wearsync.dev import dev_environment
from wearsync.providers import PROVIDERS
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import TokenSet, request_tokens
from wearsync.settings import Settings
from wearsync.sim import create_sim_app
from wearsync.sim.common import STATE_KEY, SimState
from wearsync.worker import WorkerSettings, worker_options
from wearsync.worker_loop import WearsyncWorker

# Property tests (tests/fuzzing.py's FUZZ). `make test` draws the same examples on every run, so a
# regression fails every time rather than once in a while like a flake; `make test-fuzz`
# (`--hypothesis-profile=fuzz`) draws many more, new ones each run, to find what the fixed set
# misses: a failure it finds becomes an explicit `@example`.
hypothesis_settings.register_profile("derandomized", max_examples=60, derandomize=True, database=None)
hypothesis_settings.register_profile("fuzz", max_examples=2000)
hypothesis_settings.load_profile("derandomized")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def servers(worker_id: str) -> Iterator[tuple[str, str]]:
    """(admin DSN, Redis URL). Under pytest-xdist each worker process has a Redis database of its
    own (gw0: 1, gw1: 2, ...), as it has its own PostgreSQL database (`database_url`) and, without
    DATABASE_URL / REDIS_URL, its own embedded servers."""
    with real_servers() as (database_url, redis_url):
        yield database_url, redis_database(redis_url, worker_id)


def redis_database(url: str, worker_id: str) -> str:
    """The Redis URL of the xdist worker `worker_id` ("master" when not distributed: as is)."""
    if worker_id == "master":
        return url
    number = int(worker_id.removeprefix("gw")) + 1
    assert number < 16, f"Redis has databases 0-15: run at most 15 xdist workers, not {number}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{number}"))


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
async def database_url(servers: tuple[str, str]) -> AsyncIterator[str]:
    admin_dsn = servers[0]
    name = f"wearsync_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    yield dsn
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
async def sim_server() -> AsyncIterator[TestServer]:
    server = TestServer(create_sim_app(SimState()), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def sim_state(sim_server: TestServer) -> Iterator[SimState]:
    state = sim_server.app[STATE_KEY]
    reset_sim(state)
    yield state
    reset_sim(state)


def reset_sim(state: SimState) -> None:
    """Every test starts with a simulator as a fresh app would find it (data stays cached)."""
    for fault in state.faults:
        fault.released.set()  # no call stays held
    state.faults.clear()
    state.requests.clear()
    state.record_exchanges = False
    state.grants.clear()
    state.rate_counts.clear()
    state.revoked_refresh_tokens.clear()
    state.access_expired_before.clear()
    state.refresh_revoked_before.clear()
    state.registered.clear()
    state.webhook_targets.clear()
    state.deliveries.clear()
    state.changes.clear()
    state.auth_codes.clear()
    state.revocations.clear()
    state.withdrawn_before.clear()
    state.peak_in_flight = dict(state.in_flight)
    for knobs in state.knobs.values():
        knobs.latency_s = knobs.error_rate = 0.0
        knobs.access_ttl_s = knobs.rate_limits = knobs.read_rate_limits = None
        knobs.user_history.clear()


@pytest.fixture
async def settings(database_url: str, servers: tuple[str, str], sim_server: TestServer) -> Settings:
    reset_sim(sim_server.app[STATE_KEY])
    sim_url = str(sim_server.make_url("")).rstrip("/")
    env = {k.removeprefix("WEARSYNC_").lower(): v for k, v in dev_environment({}, sim_url).items()}
    return Settings.model_validate(
        env
        | {
            "database_url": database_url,
            "redis_url": servers[1],
            "queue_name": f"wearsync-test:{uuid.uuid4().hex}",
            "http_retries": 2,
            "http_backoff_s": 0.01,
            "http_timeout_s": 5,
            "worker_poll_delay_s": 0.05,
        }
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url)
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    await pool.execute(f"TRUNCATE {', '.join(t['tablename'] for t in tables)}")
    yield pool
    await pool.close()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, db: asyncpg.Pool) -> TestClient[web.Request, web.Application]:
    app = create_app(settings)
    test_client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    return test_client


@contextlib.asynccontextmanager
async def start_worker(settings: Settings) -> AsyncIterator[WearsyncWorker]:
    """The product's worker, in this process, polling the test's queue (and, started by it, the
    webhook jobs' worker polling theirs); no cron jobs. It stops as `wearsync worker` does."""
    running = WearsyncWorker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        handle_signals=False,
        **worker_options(settings),
    )
    task = asyncio.create_task(running.async_run())
    try:
        yield running
    finally:
        await running.close()
        await asyncio.gather(task, return_exceptions=True)


async def run_queued(settings: Settings, max_jobs: int = -1) -> WearsyncWorker:
    """The product's worker in burst mode, in this coroutine: it runs the jobs queued (and those they
    queue, and the retries they defer, once due) until the queue is empty, then stops; with
    `max_jobs`, once it has started that many. For a test that means "now run what is queued":
    no polling worker to wait on. The worker, to read its counts (jobs_complete, jobs_retried)."""
    running = WearsyncWorker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        handle_signals=False,
        burst=True,
        max_burst_jobs=max_jobs,
        **worker_options(settings),
    )
    try:
        await running.main()
    finally:
        await running.close()
    return running


@pytest.fixture
async def worker(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[WearsyncWorker]:
    async with start_worker(settings) as running:
        yield running


@pytest.fixture
async def deps(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[Deps]:
    """What the worker's jobs get: for running a task in the test itself."""
    redis = Redis.from_url(settings.redis_url)
    running = Deps(settings=settings, db=db, http=create_http_client(settings, redis))
    yield running
    await running.http.session.close()
    await redis.aclose()


def process_env(settings: Settings, **overrides: object) -> dict[str, str]:
    """The environment that makes a `wearsync` subprocess run with these settings."""
    variables = settings.variables()
    return dict(os.environ) | settings.environment() | {variables[k]: str(v) for k, v in overrides.items()}


async def stored_tokens(db: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    """The one connection's tokens as stored, decrypted (and the stored access token as is)."""
    row = await db.fetchrow("SELECT access_token, refresh_token, expires_at FROM provider_connections")
    assert row is not None
    cipher = settings.cipher()
    return {"access_token": cipher.open(row["access_token"]), "refresh_token": cipher.open(row["refresh_token"]),
            "expires_at": row["expires_at"], "stored_access_token": row["access_token"]}  # fmt: skip


class Factory:
    """Test data made the way a client makes it: keys in the database, the rest through the API."""

    def __init__(self, client: TestClient[web.Request, web.Application], db: asyncpg.Pool, settings: Settings):
        self.client, self.db, self.settings = client, db, settings

    async def api_key(self, application: str = "acme") -> str:
        return await keys.create_api_key(self.db, application, "test key")

    async def user(self, key: str, **body: Any) -> str:
        resp = await self.client.post("/api/v1/users", json=body, headers={"X-API-Key": key})
        assert resp.status == 201, await resp.text()
        user_id: str = (await resp.json())["id"]
        return user_id

    async def sim_tokens(self, provider: str, sim_user: str) -> TokenSet:
        """Tokens of a simulated user from the simulator's OAuth server, asked as wearsync asks."""
        async with aiohttp.ClientSession() as session:
            return await request_tokens(
                HttpClient(session, retries=0),
                PROVIDERS[provider],
                self.settings.providers[provider],
                {"grant_type": "authorization_code", "code": f"user-{sim_user}", "redirect_uri": "http://localhost/"},
            )

    async def connect(
        self, key: str, user_id: str, provider: str, sim_user: str, expires_at: str = "2099-01-01T00:00:00Z"
    ) -> str:
        """Connect the user to the simulated user's account; the account's id, as the provider says it
        (what its webhooks name the user by)."""
        tokens = await self.sim_tokens(provider, sim_user)
        # The account as the token response names it, where it does (the API checks it with the
        # provider in any case, and learns it where it does not).
        named = {"provider_user_id": tokens.provider_user_id} if tokens.provider_user_id else {}
        resp = await self.client.put(
            f"/api/v1/users/{user_id}/connections/{provider}",
            json={
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "expires_at": expires_at,
                "scopes": tokens.scopes,
                **named,
            },
            headers={"X-API-Key": key},
        )
        assert resp.status == 200, await resp.text()
        account: str = (await resp.json())["provider_user_id"]
        # The token's expiry as asked, also where connecting redeemed the refresh token to learn
        # the account (Suunto) and stored fresh tokens: tests make it stale on purpose.
        await self.db.execute(
            "UPDATE provider_connections SET expires_at = $3 WHERE user_id = $1 AND provider = $2",
            uuid.UUID(user_id), provider, datetime.fromisoformat(expires_at),
        )  # fmt: skip
        return account

    async def connected_user(
        self, provider: str = "suunto", sim_user: str | None = None, application: str = "acme"
    ) -> tuple[str, str, str]:
        """(key, user id, simulated upstream user) of a fresh user of `application` connected to
        the provider."""
        key = await self.api_key(application)
        user_id = await self.user(key)
        sim_user = sim_user or f"u{uuid.uuid4().hex[:10]}"
        await self.connect(key, user_id, provider, sim_user)
        return key, user_id, sim_user


@pytest.fixture
def factory(client: TestClient[web.Request, web.Application], db: asyncpg.Pool, settings: Settings) -> Factory:
    return Factory(client, db, settings)


async def start_sync(
    client: TestClient[web.Request, web.Application], key: str, provider: str, user_id: str, query: str = ""
) -> str:
    """Start a sync through the API (`query`: its parameters); the task's id."""
    resp = await client.post(f"/api/v1/{provider}/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    task_id: str = (await resp.json())["task_id"]
    return task_id


async def sim_records(sim_server: TestServer, provider: str, user: str) -> dict[str, Any]:
    """Everything the simulator serves one of the provider's users, as its test endpoint lists it."""
    url = sim_server.make_url(f"/_sim/{provider}/users/{user}/records")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        records: dict[str, Any] = await resp.json()
        return records


async def sim_event(sim_server: TestServer, provider: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Make something happen upstream for the provider's user (its simulator's `emit`): what it
    answers, e.g. the record and the webhook delivery's status."""
    url = sim_server.make_url(f"/_sim/{provider}/users/{user}/events")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        emitted: dict[str, Any] = await resp.json()
        return emitted


def refreshes(sim_state: SimState, provider: str) -> int:
    """How many refresh-token grants the provider's simulated OAuth server has served."""
    return sum(1 for p, grant, _ in sim_state.grants if p == provider and grant == "refresh_token")


async def stored_suunto_workouts_as_served(
    db: asyncpg.Pool, sim_server: TestServer, user_id: str, sim_user: str
) -> list[str]:
    """The user's stored Suunto workouts equal the simulator's, none lost, none twice; their ids."""
    served = await sim_records(sim_server, "suunto", sim_user)
    rows = await db.fetch("SELECT provider_record_id FROM workouts WHERE user_id = $1", uuid.UUID(user_id))
    stored = sorted(r["provider_record_id"] for r in rows)
    assert stored == sorted(w["workoutKey"] for w in served["workouts"])
    return stored


async def wait_for_task(
    client: TestClient[web.Request, web.Application], key: str, task_id: str, timeout_s: float = 120
) -> dict[str, Any]:
    """Poll the task endpoint until the task is final."""

    async def final() -> dict[str, Any] | None:
        resp = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
        task: dict[str, Any] = await resp.json()
        return task if task["status"] in ("succeeded", "partial", "failed") else None

    return await wait_until(final, f"task {task_id} final", timeout_s)


class _CompatResponse(aiohttp.ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument that aioresponses (0.7.9) does not
    pass (pnuckowski/aioresponses#289); a finished upload reports its size as 0."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """An HttpClient that retries twice without waiting, for unit tests of one provider client."""
    async with aiohttp.ClientSession() as session:
        yield HttpClient(session, retries=2, backoff_s=0.0, backoff_max_s=0.0, max_inline_wait_s=5)


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> type[aioresponses]:
    """aioresponses, for unit tests of one provider client's edge cases: `with upstream() as m:`."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    return aioresponses
