"""The README's "Adding a provider", followed with a toy provider: a client module and a simulator
module (both written here), a line in each registry, and the migration that lets the database
take its name. Then a user is connected and synced through the API against the simulator, and
what is stored is what the simulator serves."""

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic_settings import SettingsConfigDict

from tests.conftest import Factory
from wearsync.api.app import create_app
from wearsync.models import DataType, ProviderName
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Provider, SyncContext, map_page
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import request_tokens
from wearsync.records import Workout
from wearsync.settings import PROVIDER_SETTINGS, ProviderSettings, Settings
from wearsync.sim import SIMULATORS, create_sim_app
from wearsync.sim.common import Simulator, bearer_user, json_error
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint

NAME = "toy"
PAGE = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# ---- step 1, the client module (src/wearsync/providers/toy.py) ---------------------------------


def map_workout(item: dict[str, Any]) -> Workout:
    start = datetime.fromisoformat(item["start"])
    return Workout(
        provider_record_id=str(item["id"]), sport="running", provider_sport=item["type"], start_time=start,
        end_time=start + timedelta(seconds=item["seconds"]), duration_s=float(item["seconds"]), raw=item,
    )  # fmt: skip


async def sync_workouts(ctx: SyncContext[Any]) -> None:
    url, page = f"{ctx.config.api_url}/workouts", 0
    while page is not None:
        body = await ctx.get_json(url, params={"page": page})
        await ctx.save_page(map_page(body["workouts"], map_workout), f"page:{page}", len(body["workouts"]))
        page = body["next"]


async def user_id(http: HttpClient, config: ProviderSettings, access_token: str) -> str:
    me = await http.get_json(f"{config.api_url}/me", headers={"Authorization": f"Bearer {access_token}"})
    return str(me["id"])


def toy_provider() -> Provider[Any]:
    """Its settings (declaring the class registers them) and its record."""

    class ToySettings(ProviderSettings):
        model_config = SettingsConfigDict(env_prefix="WEARSYNC_TOY_")

        api_url: str = "https://api.toy.example"
        auth_url: str = "https://auth.toy.example"
        authorize_url: str = "https://auth.toy.example"

    return Provider(
        name=NAME, supports=frozenset({DataType.WORKOUTS}), delivery="pull", token_path="/oauth/token",
        config=ToySettings, sync={DataType.WORKOUTS: sync_workouts}, user_id=user_id,
    )  # fmt: skip


# ---- step 2, the simulator module (src/wearsync/sim/toy.py) ------------------------------------


def served(user: str) -> list[dict[str, Any]]:
    """The user's workouts: seven for each letter of the user's name."""
    return [
        {"id": 1000 + i, "type": "run", "start": (T0 + timedelta(days=i)).isoformat(), "seconds": 1800 + i}
        for i in range(7 * len(user))
    ]


async def list_workouts(request: web.Request) -> web.Response:
    user = bearer_user(request, NAME)
    if user is None:
        return json_error(401, {"error": "unauthorized"})
    page, workouts = int(request.query["page"]), served(user)
    more = (page + 1) * PAGE < len(workouts)
    return web.json_response(
        {"workouts": workouts[page * PAGE : (page + 1) * PAGE], "next": page + 1 if more else None}
    )


async def me(request: web.Request) -> web.Response:
    user = bearer_user(request, NAME)
    return json_error(401, {"error": "unauthorized"}) if user is None else web.json_response({"id": f"toy-{user}"})


def create_apps() -> tuple[web.Application, web.Application]:
    api, auth = web.Application(), web.Application()
    api.router.add_get("/workouts", list_workouts)
    api.router.add_get("/me", me)
    style = OAuthStyle(NAME, access_ttl_s=3600)
    auth.router.add_get("/oauth/authorize", authorize_endpoint(style))
    auth.router.add_post("/oauth/token", token_endpoint(style))
    return api, auth


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=lambda app, user: {"workouts": served(user)})


# ---- steps 3 and 4: the registries, and the migration -------------------------------------------


@dataclass
class Toy:
    provider: Provider[Any]
    sim_url: str


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Provider[Any]]:
    provider = toy_provider()
    monkeypatch.setitem(PROVIDERS, NAME, provider)
    monkeypatch.setitem(SIMULATORS, NAME, SIMULATOR)
    yield provider
    del PROVIDER_SETTINGS[NAME]


@pytest.fixture
async def migrated(db: asyncpg.Pool) -> AsyncIterator[None]:
    """The migration a provider needs: its name in provider_connections' check (undone after)."""

    async def check(names: list[str]) -> None:
        listed = ", ".join(f"'{name}'" for name in names)
        await db.execute(
            "ALTER TABLE provider_connections DROP CONSTRAINT provider_connections_provider_check,"
            f" ADD CONSTRAINT provider_connections_provider_check CHECK (provider IN ({listed}))"
        )

    shipped = [p.value for p in ProviderName]
    await check([*shipped, NAME])
    yield
    await db.execute("DELETE FROM provider_connections WHERE provider = $1", NAME)
    await check(shipped)


@pytest.fixture
async def toy(registered: Provider[Any], migrated: None, aiohttp_server: Any) -> Toy:
    server: TestServer = await aiohttp_server(create_sim_app())  # every registered simulator
    return Toy(registered, str(server.make_url("")).rstrip("/"))


async def test_a_new_provider_is_four_steps_and_syncs_end_to_end(
    toy: Toy, settings: Settings, factory: Factory, aiohttp_client: Any, db: asyncpg.Pool
) -> None:
    assert NAME in PROVIDER_SETTINGS  # declared in its module: WEARSYNC_TOY_* settings
    config = toy.provider.config(api_url=f"{toy.sim_url}/toy/api", auth_url=f"{toy.sim_url}/toy/auth",
                                 client_id="wearsync-sim", client_secret="sim-secret")  # fmt: skip
    settings = settings.model_copy(update={"providers": {**settings.providers, NAME: config}})
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(settings))
    key = await factory.api_key()
    headers = {"X-API-Key": key}

    resp = await client.post("/api/v1/users", json={}, headers=headers)
    user = (await resp.json())["id"]
    async with aiohttp.ClientSession() as session:
        grant = {"grant_type": "authorization_code", "code": "user-alice", "redirect_uri": "http://localhost/"}
        tokens = await request_tokens(HttpClient(session, retries=0), toy.provider, config, grant)
    body = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
    resp = await client.put(f"/api/v1/users/{user}/connections/{NAME}", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["provider_user_id"] == "toy-alice"  # learnt from the provider, by its user_id

    resp = await client.post(f"/api/v1/{NAME}/users/{user}/sync?async=false", headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["details"] == {"workouts": True}

    rows = await db.fetch(
        "SELECT provider_record_id, start_time, duration_s FROM workouts WHERE user_id = $1 AND provider = $2",
        uuid.UUID(user), NAME,
    )  # fmt: skip
    expected = SIMULATORS[NAME].records(web.Application(), "alice")["workouts"]
    assert len(expected) > 2 * PAGE  # more than one page
    assert sorted((r["provider_record_id"], r["start_time"], r["duration_s"]) for r in rows) == sorted(
        (str(w["id"]), datetime.fromisoformat(w["start"]), float(w["seconds"])) for w in expected
    )
    resp = await client.get(f"/api/v1/users/{user}/workouts?provider={NAME}&limit=100", headers=headers)
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["data"]) == len(expected)


def test_a_provider_that_is_not_registered_is_not_served() -> None:
    assert NAME not in PROVIDERS
    assert NAME not in SIMULATORS
    assert NAME not in PROVIDER_SETTINGS
