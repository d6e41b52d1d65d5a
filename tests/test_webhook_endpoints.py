"""The webhook endpoints API: an application's endpoints, their secret shown once and stored
sealed, URLs refused where they point inside the network, and nothing of another application."""

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync.api.app import create_app
from wearsync.crypto import generate_key
from wearsync.db import connections
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


async def test_an_endpoint_lifecycle(client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings) -> None:
    headers = {"X-API-Key": await factory.api_key()}
    resp = await client.post(
        "/api/v1/webhook-endpoints",
        json={"url": "https://example.com/hooks", "event_types": ["sync.failed"], "description": "ops"},
        headers=headers,
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    stored = await db.fetchval("SELECT secret FROM webhook_endpoints")
    assert secret not in stored
    assert settings.cipher().open(stored) == secret  # sealed at rest
    assert (created["url"], created["event_types"], created["enabled"]) == ("https://example.com/hooks",
                                                                           ["sync.failed"], True)  # fmt: skip
    path = f"/api/v1/webhook-endpoints/{created['id']}"
    assert await (await client.get(path, headers=headers)).json() == created  # the secret is never shown again
    assert await (await client.get("/api/v1/webhook-endpoints", headers=headers)).json() == [created]
    resp = await client.patch(path, json={"event_types": None, "enabled": False}, headers=headers)
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert (changed["event_types"], changed["enabled"], changed["url"]) == (None, False, created["url"])
    assert changed["disabled_reason"] == "disabled by the application"
    resp = await client.patch(path, json={"enabled": True, "url": "https://example.org/h"}, headers=headers)
    changed = await resp.json()
    assert (changed["enabled"], changed["disabled_reason"], changed["url"]) == (True, None, "https://example.org/h")
    invalid: list[dict[str, Any]] = [{"event_types": ["sync.nope"]}, {"event_types": []}, {"color": "red"}, {"url": ""}]
    for bad in invalid:
        resp = await client.patch(path, json=bad, headers=headers)
        assert resp.status == 422, bad
    resp = await client.delete(path, headers=headers)
    assert resp.status == 204
    assert (await client.get(path, headers=headers)).status == 404
    assert (await client.delete(path, headers=headers)).status == 404


async def test_urls_inside_the_network_are_refused_unless_allowed(
    aiohttp_client: Any, factory: Factory, settings: Settings
) -> None:
    strict: Client = await aiohttp_client(create_app(settings.model_copy(update={"events_allow_private_urls": False})))
    headers = {"X-API-Key": await factory.api_key()}
    refused = ["http://127.0.0.1:8080/h", "http://localhost/h", "http://api.localhost/h", "http://10.1.2.3/h",
               "http://192.168.0.1/h", "http://169.254.169.254/latest", "http://0.0.0.0/h", "http://127.1/h",
               "http://0177.0.0.1/h", "http://2130706433/h"]  # fmt: skip
    for url in refused:
        resp = await strict.post("/api/v1/webhook-endpoints", json={"url": url}, headers=headers)
        assert resp.status == 400, url
        assert (await resp.json())["detail"].startswith("Webhook URL refused: "), url
    for url in ("ftp://example.com/h", "example.com/h", "http://[::1]/h", "http://user@example.com/", "http:///h"):
        resp = await strict.post("/api/v1/webhook-endpoints", json={"url": url}, headers=headers)
        assert resp.status == 422, url
    resp = await strict.post("/api/v1/webhook-endpoints", json={"url": "https://93.184.215.14/h"}, headers=headers)
    assert resp.status == 201, await resp.text()
    endpoint_id = (await resp.json())["id"]
    resp = await strict.patch(
        f"/api/v1/webhook-endpoints/{endpoint_id}", json={"url": "http://10.0.0.1/"}, headers=headers
    )
    assert resp.status == 400
    # Allowed (as `make run` does): a sink on this machine.
    relaxed: Client = await aiohttp_client(create_app(settings.model_copy(update={"events_allow_private_urls": True})))
    resp = await relaxed.post("/api/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/h"}, headers=headers)
    assert resp.status == 201


async def test_another_applications_endpoints_and_events_are_not_found(client: Client, factory: Factory) -> None:
    mine, theirs = {"X-API-Key": await factory.api_key("mine")}, {"X-API-Key": await factory.api_key("theirs")}
    resp = await client.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/h"}, headers=theirs)
    their_endpoint = (await resp.json())["id"]
    resp = await client.post(f"/api/v1/webhook-endpoints/{their_endpoint}/test", headers=theirs)
    their_event = (await resp.json())["event_id"]
    assert (await (await client.get(f"/api/v1/events/{their_event}/deliveries", headers=theirs)).json())["deliveries"][
        0
    ]["endpoint_id"] == their_endpoint
    assert await (await client.get("/api/v1/webhook-endpoints", headers=mine)).json() == []
    calls = [
        ("GET", "/api/v1/webhook-endpoints/{endpoint}", None),
        ("PATCH", "/api/v1/webhook-endpoints/{endpoint}", {"description": "mine now"}),
        ("DELETE", "/api/v1/webhook-endpoints/{endpoint}", None),
        ("POST", "/api/v1/webhook-endpoints/{endpoint}/rotate-secret", {}),
        ("POST", "/api/v1/webhook-endpoints/{endpoint}/test", None),
        ("POST", "/api/v1/webhook-endpoints/{endpoint}/replay", {"event_id": "{event}"}),
        ("GET", "/api/v1/events/{event}/deliveries", None),
    ]
    for method, route, body in calls:
        answers = []
        for endpoint, event in ((their_endpoint, their_event), (str(uuid.uuid4()), "evt_" + "0" * 32)):
            sent = {k: v.format(event=event) for k, v in body.items()} if body else body
            resp = await client.request(method, route.format(endpoint=endpoint, event=event), json=sent, headers=mine)
            answers.append((resp.status, await resp.json()))
        assert answers[0] == answers[1], route
        assert answers[0][0] == 404, route
    resp = await client.get(f"/api/v1/webhook-endpoints/{their_endpoint}", headers=theirs)
    assert (resp.status, (await resp.json())["description"]) == (200, "")


async def test_a_token_key_rotation_reseals_the_signing_secrets(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings
) -> None:
    headers = {"X-API-Key": await factory.api_key()}
    resp = await client.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/h"}, headers=headers)
    created = await resp.json()
    resp = await client.post(f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret", headers=headers)
    rotated = await resp.json()
    new_key = generate_key()
    async with db.acquire() as conn:
        await connections.reseal_tokens(conn, Settings(token_keys=f"{new_key},{settings.token_keys}").cipher().reseal)
    row = await db.fetchrow("SELECT secret, previous_secret FROM webhook_endpoints")
    assert row is not None
    new = Settings(token_keys=new_key).cipher()
    assert (new.open(row["secret"]), new.open(row["previous_secret"])) == (rotated["secret"], created["secret"])
