"""Applications and API keys over the API, for operator keys only (issue 16, API completeness)."""

import uuid
from typing import Any
from urllib.parse import urlsplit

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
    ("GET", "/api/v1/applications/{app}/settings", None),
    ("PATCH", "/api/v1/applications/{app}/settings", {"providers": ["polar"]}),
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


async def test_an_applications_settings_narrow_its_providers_and_redirects(client: Client, factory: Factory) -> None:
    operator = await keys.create_api_key(factory.db, "operators", "ops", operator=True)
    name = f"app-{uuid.uuid4().hex[:8]}"
    key, user, _ = await factory.connected_user("suunto", application=name)
    other_key, other_user, _ = await factory.connected_user("suunto", application=f"app-{uuid.uuid4().hex[:8]}")
    app_id = await factory.db.fetchval("SELECT id FROM applications WHERE name = $1", name)
    settings_url = f"/api/v1/applications/{app_id}/settings"
    assert await _call(client, operator, "GET", settings_url) == {"redirect_allowlist": None, "providers": None}
    changed = await _call(
        client, operator, "PATCH", settings_url,
        {"providers": ["polar"], "redirect_allowlist": ["https://app.example.com/back"]},
    )  # fmt: skip
    assert changed == {"redirect_allowlist": ["https://app.example.com/back"], "providers": ["polar"]}
    assert (await _call(client, operator, "PATCH", settings_url, {"providers": ["polar"]})) == changed  # the rest kept
    # Suunto is not enabled: no sync, connection or authorization; the other application's user syncs.
    await _call(client, key, "POST", f"/api/v1/suunto/users/{user}/sync", status=403)
    await _call(client, other_key, "POST", f"/api/v1/suunto/users/{other_user}/sync")
    authorize = "/api/v1/oauth/{p}/authorize?user_id={u}&redirect_uri={r}"
    back, localhost = "https%3A%2F%2Fapp.example.com%2Fback%2Fdone", "http%3A%2F%2Flocalhost%2Fcb"
    await _call(client, key, "GET", authorize.format(p="suunto", u=user, r=back), status=403)
    await _call(client, key, "GET", authorize.format(p="polar", u=user, r=back))
    # Its own allow-list replaces the operator's: localhost (allowed by default) is not allowed for it.
    await _call(client, key, "GET", authorize.format(p="polar", u=user, r=localhost), status=403)
    await _call(client, other_key, "GET", authorize.format(p="polar", u=other_user, r=localhost))
    body = {"redirect_uri": "http://localhost/cb"}
    await _call(client, key, "POST", f"/api/v1/users/{user}/connect-link", body, status=403)
    link = await _call(
        client, key, "POST", f"/api/v1/users/{user}/connect-link", {"redirect_uri": "https://app.example.com/back"}
    )
    url = urlsplit(link["url"])
    page = await client.get(f"{url.path}?{url.query}")
    text = await page.text()
    assert 'data-provider="polar"' in text
    assert 'data-provider="suunto"' not in text
    # Unset, the operator's settings apply again.
    await _call(client, operator, "PATCH", settings_url, {"providers": None, "redirect_allowlist": None})
    await _call(client, key, "GET", authorize.format(p="suunto", u=user, r=localhost))
    for bad in ({"providers": ["fitbit"]}, {"redirect_allowlist": ["ftp://x"]}, {"colour": "red"}):
        await _call(client, operator, "PATCH", settings_url, bad, status=422)
