"""Applications and API keys over the API, for operator keys only (issue 16, API completeness)."""

import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync.api.admin import OPERATORS_ONLY
from wearsync.db import keys

Client = TestClient[web.Request, web.Application]
ADMIN_CALLS = [
    ("GET", "/api/v1/applications", None),
    ("POST", "/api/v1/applications", {"name": "mine"}),
    ("GET", "/api/v1/applications/{app}/keys", None),
    ("POST", "/api/v1/applications/{app}/keys", {"name": "mine"}),
    ("DELETE", "/api/v1/applications/{app}/keys/{prefix}", None),
]


async def _call(client: Client, key: str, method: str, url: str, body: Any = None, status: int = 200) -> Any:
    resp = await client.request(method, url, json=body, headers={"X-API-Key": key})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_an_operator_key_manages_applications_and_their_keys(client: Client, factory: Factory) -> None:
    operator = await keys.create_api_key(factory.db, "operators", "ops", operator=True)
    name = f"app-{uuid.uuid4().hex[:8]}"
    app = await _call(client, operator, "POST", "/api/v1/applications", {"name": name}, 201)
    assert app["name"] == name
    assert name in [a["name"] for a in await _call(client, operator, "GET", "/api/v1/applications")]
    await _call(client, operator, "POST", "/api/v1/applications", {"name": name}, 409)
    made = await _call(client, operator, "POST", f"/api/v1/applications/{app['id']}/keys", {"name": "backend"}, 201)
    assert (made["prefix"], made["operator"], made["revoked_at"]) == (made["key"][:10], False, None)
    # The new key is the new application's: a user it makes is listed by it, and by no other key.
    user = await factory.user(made["key"])
    assert [u["id"] for u in (await _call(client, made["key"], "GET", "/api/v1/users"))["data"]] == [user]
    listed = await _call(client, operator, "GET", f"/api/v1/applications/{app['id']}/keys")
    assert [(k["prefix"], k["name"]) for k in listed] == [(made["prefix"], "backend")]
    assert "key" not in listed[0]
    # An application's own key may not manage anything, not even its own keys.
    for method, url, body in ADMIN_CALLS:
        url = url.format(app=app["id"], prefix=made["prefix"])
        assert await _call(client, made["key"], method, url, body, 403) == {"detail": OPERATORS_ONLY}
    revoked = await _call(client, operator, "DELETE", f"/api/v1/applications/{app['id']}/keys/{made['prefix']}")
    assert revoked == {"prefix": made["prefix"], "revoked": True}
    assert await keys.application_for_key(factory.db, made["key"]) is None
    assert (await _call(client, operator, "GET", f"/api/v1/applications/{app['id']}/keys"))[0]["revoked_at"]
    await _call(client, operator, "DELETE", f"/api/v1/applications/{app['id']}/keys/{made['prefix']}", status=404)
    await _call(client, operator, "GET", f"/api/v1/applications/{uuid.uuid4()}/keys", status=404)
    await _call(client, operator, "POST", "/api/v1/applications", {"name": ""}, 422)
    # An operator key made over the API is an operator key; revoked, it manages nothing.
    second = await _call(
        client, operator, "POST", f"/api/v1/applications/{app['id']}/keys", {"name": "ops2", "operator": True}, 201
    )
    await _call(client, second["key"], "GET", "/api/v1/applications")
    await _call(client, operator, "DELETE", f"/api/v1/applications/{app['id']}/keys/{second['prefix']}")
    await _call(client, second["key"], "GET", "/api/v1/applications", status=403)
