"""The webhooks of providers that sign nothing (Garmin, Strava) take a delivery only at the URL with
our path secret, and Strava's only for our push subscription: a forged delivery anywhere else is
404 (401 for another subscription) and changes nothing. Before, both took any body at a fixed
path: a forged deregistration deactivated a connection."""

import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from tests.conftest import Factory
from tests.fuzzing import hook_path, signed_headers
from wearsync.api.app import create_app
from wearsync.providers import strava
from wearsync.settings import Settings
from wearsync.sim.strava import FIRST_SUBSCRIPTION_ID

Client = TestClient[web.Request, web.Application]
NOT_HERE = {"garmin": {"detail": "No webhook for provider 'garmin' at this URL"},
            "strava": {"detail": "No webhook for provider 'strava' at this URL"}}  # fmt: skip


def deregistration(garmin_user: str) -> dict[str, Any]:
    return {"deregistrations": [{"userId": garmin_user, "userAccessToken": "x"}]}


def deauthorization(athlete: str, subscription_id: object = FIRST_SUBSCRIPTION_ID) -> dict[str, Any]:
    return {"object_type": "athlete", "object_id": int(athlete), "aspect_type": "update",
            "owner_id": int(athlete), "subscription_id": subscription_id, "event_time": 1_790_000_000,
            "updates": {"authorized": "false"}}  # fmt: skip


async def nothing_changed(db: asyncpg.Pool) -> None:
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM provider_connections WHERE NOT active") == 0


@pytest.mark.parametrize(
    ("provider", "forged"),
    [("garmin", deregistration("gu-1")), ("strava", deauthorization("1001"))],
)
async def test_a_delivery_anywhere_but_the_secret_url_is_404_and_changes_nothing(
    client: Client, factory: Factory, db: asyncpg.Pool, provider: str, forged: dict[str, Any]
) -> None:
    await factory.connected_user(provider)
    secret = hook_path(provider).rsplit("/", 1)[1]
    for path in (
        f"/api/v1/webhooks/{provider}",  # the old, fixed path
        f"/api/v1/webhooks/{provider}/{secret[:-1]}x",
        f"/api/v1/webhooks/{provider}/{secret}x",
        f"/api/v1/webhooks/{provider}/é{secret[1:]}",
    ):
        resp = await client.post(path, json=forged)
        assert (resp.status, await resp.json()) == (404, NOT_HERE[provider]), path
    await nothing_changed(db)
    resp = await client.post(hook_path(provider), json=forged, headers=signed_headers(provider, b""))
    assert await resp.json() == {"received": 1, "new": 0}  # taken (and, for a user we do not know, dropped)


@pytest.mark.parametrize("provider", ["garmin", "strava"])
async def test_with_no_path_secret_set_the_webhook_takes_nothing(
    aiohttp_client: Any, factory: Factory, settings: Settings, db: asyncpg.Pool, provider: str
) -> None:
    await factory.connected_user(provider)
    unset = settings.replace(**{f"{provider}_webhook_path_secret": ""})
    client: Client = await aiohttp_client(create_app(unset))
    body = deregistration("gu-1") if provider == "garmin" else deauthorization("1001")
    for path in (f"/api/v1/webhooks/{provider}", hook_path(provider)):
        resp = await client.post(path, json=body)
        assert (resp.status, await resp.json()) == (404, NOT_HERE[provider]), path
    await nothing_changed(db)


@pytest.mark.parametrize(
    ("subscription_id", "setting"),
    [(FIRST_SUBSCRIPTION_ID + 1, str(FIRST_SUBSCRIPTION_ID)), (None, str(FIRST_SUBSCRIPTION_ID)),
     (FIRST_SUBSCRIPTION_ID, "")],
)  # fmt: skip
async def test_a_strava_event_of_another_subscription_is_401_and_changes_nothing(
    aiohttp_client: Any, factory: Factory, settings: Settings, db: asyncpg.Pool,
    subscription_id: int | None, setting: str,
) -> None:  # fmt: skip
    await factory.connected_user("strava")
    client: Client = await aiohttp_client(create_app(settings.replace(strava_subscription_id=setting)))
    body = deauthorization("1001", subscription_id)
    if subscription_id is None:
        del body["subscription_id"]
    resp = await client.post(hook_path("strava"), data=json.dumps(body))
    assert resp.status == 401
    detail = (await resp.json())["detail"]
    expected = "another push subscription" if setting else "WEARSYNC_STRAVA_SUBSCRIPTION_ID is not set"
    assert detail.startswith("Invalid webhook signature")
    assert expected in detail
    await nothing_changed(db)


async def test_signed_webhooks_stay_at_their_path_and_take_no_path_secret(client: Client, db: asyncpg.Pool) -> None:
    body = b'{"type": "WORKOUT_CREATED", "username": "nobody", "workoutid": "w1"}'
    resp = await client.post("/api/v1/webhooks/suunto/anything-at-all-here", data=body,
                             headers=signed_headers("suunto", body))  # fmt: skip
    assert (resp.status, await resp.json()) == (404, {"detail": "No webhook for provider 'suunto' at this URL"})
    resp = await client.post(hook_path("suunto"), data=body, headers=signed_headers("suunto", body))
    assert resp.status == 200
    assert hook_path("suunto") == "/api/v1/webhooks/suunto"


async def test_strava_validates_the_subscription_only_at_the_secret_url(client: Client, settings: Settings) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.challenge": "c1",
        "hub.verify_token": strava.PROVIDER.settings(settings).verify_token,
    }
    resp = await client.get("/api/v1/webhooks/strava/not-our-path-secret-at-all", params=query)
    assert (resp.status, await resp.json()) == (404, NOT_HERE["strava"])
    resp = await client.get("/api/v1/webhooks/strava", params=query)
    assert resp.status == 405  # only deliveries are posted there, and those answer 404
    resp = await client.get(hook_path("strava"), params=query)
    assert (resp.status, await resp.json()) == (200, {"hub.challenge": "c1"})


async def test_the_path_secret_is_never_logged(client: Client) -> None:
    with capture_logs() as logs:
        await client.post(hook_path("garmin"), json={"dailies": []})
        await client.post(hook_path("garmin") + "x", json={"dailies": []})
    secret = hook_path("garmin").rsplit("/", 1)[1]
    assert logs
    assert not [entry for entry in logs if secret in json.dumps(entry, default=str)]
    assert {e["path"] for e in logs if e["event"] == "request"} == {"/api/v1/webhooks/garmin/***"}


def test_a_path_secret_must_be_long_and_url_safe() -> None:
    for bad in ("short", "a" * 15, "with/slash-and-long-enough", "with space and long enough"):
        with pytest.raises(ValueError, match="garmin_webhook_path_secret"):
            Settings(garmin_webhook_path_secret=bad)
    assert Settings(strava_webhook_path_secret="A-z_0" * 4).webhook_path("strava") == "/api/v1/webhooks/strava/" + (
        "A-z_0" * 4
    )
