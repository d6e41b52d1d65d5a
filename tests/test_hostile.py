"""Hostile input is refused early with a 4xx and a `{"detail": ...}`, never a 5xx."""

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, sim_records, wait_for_task
from tests.fuzzing import hook_path, signed_headers
from wearsync.api.app import create_app
from wearsync.dev import SIM_CLIENT_SECRET
from wearsync.providers import PROVIDERS, whoop
from wearsync.providers.errors import MalformedPayload
from wearsync.providers.http import HttpClient
from wearsync.settings import Settings
from wearsync.sim.strava import FIRST_SUBSCRIPTION_ID

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 30_000 + b"]" * 30_000, 400),  # nesting deeper than any parser should follow
        (b'{"external_id": "\xff\xfe"}', 400),  # not UTF-8
        (b'{"external_id": ' + b"9" * 5000 + b"}", 400),  # a number too long to read
        (b'{"external_id": "' + b"x" * 70_000 + b'"}', 413),  # larger than any request needs
        (b'{"external_id": 12}', 422),
        (b'{"unexpected": true}', 422),
    ],
)
async def test_bad_bodies_get_a_4xx_with_a_detail(client: Client, factory: Factory, body: bytes, status: int) -> None:
    key = await factory.api_key()
    resp = await client.post("/api/v1/users", data=io.BytesIO(body), headers={"X-API-Key": key})
    assert resp.status == status
    assert isinstance((await resp.json())["detail"], str)


@pytest.mark.parametrize(
    "query",
    ["limit=" + "9" * 40, "since=-1", "offset=1e9", "async=maybe", "data_type=" + "x" * 5000, "limit=%00"],
)
async def test_bad_query_values_get_a_422_naming_the_parameter(client: Client, factory: Factory, query: str) -> None:
    key, user_id, _ = await factory.connected_user("suunto")
    resp = await client.post(f"/api/v1/suunto/users/{user_id}/sync?{query}", headers={"X-API-Key": key})
    assert resp.status == 422
    assert query.split("=")[0] in (await resp.json())["detail"]


async def test_webhook_bodies_nested_or_not_utf8_are_400(client: Client) -> None:
    for body in (b"[" * 60_000, b"\xff\xfe{}"):
        resp = await client.post(hook_path("strava"), data=io.BytesIO(body))
        assert resp.status == 400
        assert (await resp.json())["detail"].startswith("Unreadable webhook payload")


# ---- what aiohttp refuses before the app runs -------------------------------------------------


async def raw_request(client: Client, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client library in between); the status and body answered."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # a request line over 8190 bytes
        b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",  # a header over 8190 bytes
        b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /api/v1/users/\xff\xfe HTTP/1.1\r\n\r\n",  # bytes no URL holds
        b"POST /api/v1/users HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
        b"POST /api/v1/webhooks/strava HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ],
)
async def test_requests_aiohttp_cannot_parse_are_400_before_the_app_runs(client: Client, request_bytes: bytes) -> None:
    """aiohttp answers these itself, in plain text: it offers no hook to shape that response
    (aio-libs/aiohttp#3287), and no handler or middleware of ours runs for them."""
    status, _ = await raw_request(client, request_bytes.replace(b"\r\n", b"\r\nHost: a\r\nConnection: close\r\n", 1))
    assert status == 400


async def test_long_values_within_aiohttp_limits_get_our_json_4xx(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    resp = await client.post(f"/api/v1/garmin/users/{user_id}/sync?since={'9' * 8000}", headers={"X-API-Key": key})
    assert resp.status == 422
    assert "since" in (await resp.json())["detail"]
    resp = await client.get(f"/api/v1/users/{user_id}", headers={"X-API-Key": "k" * 8000})
    assert (resp.status, await resp.json()) == (401, {"detail": "Invalid or missing API key"})


async def test_header_bytes_that_are_not_utf8_are_refused_or_ignored(client: Client, factory: Factory) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    request = f"GET /api/v1/users/{user_id} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n".encode()
    status, body = await raw_request(client, request + b"X-API-Key: " + key.encode() + b"\xff\xfe\r\n\r\n")
    assert (status, json.loads(body)) == (401, {"detail": "Invalid or missing API key"})
    status, body = await raw_request(client, request + f"X-API-Key: {key}\r\n".encode() + b"X-Request-ID: \xff\r\n\r\n")
    assert (status, json.loads(body)["id"]) == (200, user_id)


async def test_a_metrics_token_that_is_not_utf8_is_401(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Pool
) -> None:
    client: Client = await aiohttp_client(create_app(settings.model_copy(update={"metrics_token": "t"})))
    request = b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer \xff\r\n\r\n"
    status, body = await raw_request(client, request)
    assert status == 401
    assert set(json.loads(body)) == {"detail"}


# ---- webhook deliveries larger than the provider sends ------------------------------------------


def smallest_delivery(provider: str) -> dict[str, Any]:
    """A delivery each provider's receiver reads (and answers 200)."""
    deliveries: dict[str, dict[str, Any]] = {
        "strava": {
            "object_type": "activity",
            "object_id": 1,
            "aspect_type": "create",
            "owner_id": 2,
            "subscription_id": FIRST_SUBSCRIPTION_ID,
        },
        "polar": {"event": "PING", "timestamp": "2024-05-01T06:30:00.000Z"},
        "suunto": {"type": "WORKOUT_CREATED", "username": "nobody", "workoutid": "w1"},
        "whoop": {"user_id": 1, "id": "r1", "type": "workout.updated", "trace_id": "t1"},
        "garmin": {"dailies": []},
    }
    return deliveries[provider]


async def chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The body in chunks: aiohttp sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


WEBHOOK_PROVIDERS = sorted(name for name, provider in PROVIDERS.items() if provider.webhook is not None)


@pytest.mark.parametrize("provider", WEBHOOK_PROVIDERS)
async def test_a_webhook_delivery_over_the_providers_limit_is_413_with_or_without_a_length(
    client: Client, provider: str
) -> None:
    webhook = PROVIDERS[provider].webhook
    assert webhook is not None
    limit, url = webhook.max_body_bytes, hook_path(provider)
    at_limit = json.dumps(smallest_delivery(provider)).encode().ljust(limit)
    for sent in (io.BytesIO(at_limit), chunks(at_limit)):
        resp = await client.post(url, data=sent, headers=signed_headers(provider, at_limit))
        assert resp.status == 200, await resp.text()  # read whole, however it came
    over = at_limit + b" "
    for sent in (io.BytesIO(over), chunks(over)):
        resp = await client.post(url, data=sent, headers=signed_headers(provider, over))
        assert resp.status == 413
        assert await resp.json() == {"detail": f"Webhook payload too large: more than {limit} bytes"}


# ---- signatures and tokens a client can garble --------------------------------------------------


async def test_signature_values_of_any_characters_or_length_are_refused_with_401(client: Client) -> None:
    body = b'{"type": "WORKOUT_CREATED", "username": "nobody", "workoutid": "w1"}'
    resp = await client.post("/api/v1/webhooks/suunto", data=body, headers={"X-HMAC-SHA256-Signature": "é" * 64})
    assert resp.status == 401
    # Signed as Whoop signs, over a timestamp of more digits than any int() reads.
    timestamp = "9" * 5000
    headers = {whoop.SIGNATURE: whoop.signature(SIM_CLIENT_SECRET, timestamp, body), whoop.TIMESTAMP: timestamp}
    resp = await client.post("/api/v1/webhooks/whoop", data=body, headers=headers)
    assert resp.status == 401
    assert "milliseconds" in (await resp.json())["detail"]
    query = {"hub.mode": "subscribe", "hub.challenge": "c", "hub.verify_token": "é"}
    resp = await client.get(hook_path("strava"), params=query)
    assert (resp.status, await resp.json()) == (403, {"detail": "Invalid verify token"})


# ---- upstream text PostgreSQL cannot store ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem", "quoted"),
    [("Run\x00", "JSON with a NUL character", "Run\\x00"), ("Run\ud800", "JSON with a lone surrogate", "Run\\ud800")],
)
async def test_an_upstream_record_postgresql_would_refuse_fails_the_type_naming_the_field(
    client: Client, factory: Factory, sim_server: TestServer, name: str, problem: str, quoted: str
) -> None:
    """A name with a NUL character or a lone surrogate (valid JSON upstream) fails the sync of
    workouts with a MalformedPayload naming the field, not a database error. The record's raw
    JSON, which carries the name too, is the field named: it is checked first (every column's
    own guard meets such values in tests/test_storable.py)."""
    key, user_id, sim_user = await factory.connected_user("strava")
    activity = (await sim_records(sim_server, "strava", sim_user))["activities"][-1]
    change = {"kind": "update", "id": activity["id"], "changes": {"name": name}}
    async with aiohttp.ClientSession() as session:
        url = sim_server.make_url(f"/_sim/strava/users/{sim_user}/events")
        async with session.post(url, data=json.dumps(change), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()
    resp = await client.post(f"/api/v1/strava/users/{user_id}/sync?async=false", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    outcome = await resp.json()
    assert (outcome["success"], outcome["details"]) == (False, {"workouts": False})
    task = await wait_for_task(client, key, outcome["task_id"])
    assert task["status"] == "failed"
    for error in (task["error"], task["progress"]["workouts"]["error"]):
        assert f"unreadable record (ValueError: Workout.raw: {problem}" in error
        assert quoted in error


async def test_an_upstream_error_quoting_a_nul_character_is_stored_escaped(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Pool
) -> None:
    """Upstream's answer is quoted in the error a task stores; PostgreSQL refuses NUL characters
    in text and JSON, so they are stored escaped rather than failing the task's bookkeeping."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, body=b'{"message": "Bad\x00Request"}', content_type="application/json")

    async def athlete(request: web.Request) -> web.Response:
        return web.json_response({"id": 1})

    upstream = web.Application()
    upstream.router.add_get("/api/v3/athlete", athlete)
    upstream.router.add_get("/api/v3/athlete/activities", refuse)
    strava: Client = await aiohttp_client(upstream)
    strava_url = str(strava.make_url(""))
    api: Client = await aiohttp_client(create_app(settings.replace(strava_api_url=strava_url)))
    factory = Factory(api, db, settings)
    key = await factory.api_key()
    headers = {"X-API-Key": key}
    user_id = await factory.user(key)
    connection = {"access_token": "t", "provider_user_id": "1", "expires_at": "2099-01-01T00:00:00Z"}
    resp = await api.put(f"/api/v1/users/{user_id}/connections/strava", json=connection, headers=headers)
    assert resp.status == 200
    resp = await api.post(f"/api/v1/strava/users/{user_id}/sync?async=false", headers=headers)
    assert resp.status == 200, await resp.text()
    task = await wait_for_task(api, key, (await resp.json())["task_id"])
    assert task["status"] == "failed"
    for error in (task["error"], task["progress"]["workouts"]["error"]):
        assert 'HTTP 400: {"message": "Bad\\x00Request"}' in error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_at": 1e400}, "expires_at"),  # huge numbers
        ({"expires_at": 10**30}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),  # year 10000 in UTC
        ({"expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at"),  # year 0 in UTC
        ({"provider_user_id": "y\x00"}, "provider_user_id"),  # text PostgreSQL cannot hold
        ({"scopes": ["read\x00"]}, "scopes"),
        ({"access_token": "\x00"}, "access_token"),
        ({"scopes": [1e308]}, "scopes"),
    ],
)
async def test_connection_bodies_postgresql_cannot_store_are_422_naming_the_field(
    client: Client, factory: Factory, body: dict[str, Any], field: str
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    connection = {"access_token": "x", "provider_user_id": "y"} | body
    resp = await client.put(f"/api/v1/users/{user_id}/connections/strava", json=connection, headers={"X-API-Key": key})
    assert resp.status == 422
    assert field in (await resp.json())["detail"]
    resp = await client.post("/api/v1/users", json={"external_id": "a\x00"}, headers={"X-API-Key": key})
    assert resp.status == 422
    assert "external_id" in (await resp.json())["detail"]


async def test_upstream_json_nested_too_deep_to_read_is_malformed_payload(
    aiohttp_client: Any, http: HttpClient
) -> None:
    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")

    upstream = web.Application()
    upstream.router.add_get("/deep", nested)
    server: Client = await aiohttp_client(upstream)
    with pytest.raises(MalformedPayload, match="malformed JSON"):
        await http.get_json(str(server.make_url("/deep")), headers={})
