"""Hostile input is refused early with a 4xx and a `{"detail": ...}`, never a 5xx."""

import io

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory

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
    for body in (b"[" * 100_000, b"\xff\xfe{}"):
        resp = await client.post("/api/v1/webhooks/strava", data=io.BytesIO(body))
        assert resp.status == 400
        assert (await resp.json())["detail"].startswith("Unreadable webhook payload")
