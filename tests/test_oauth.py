"""Connecting users through the providers' OAuth flow, end to end over real sockets: our authorize
endpoint, the simulated provider's authorization page (which redirects back with a code), our
callback (token exchange, connection stored encrypted, upstream registration, first sync run by
the worker) and the redirect to the caller; PKCE, state misuse, provider errors, the redirect URI
allow-list; and disconnecting, with the provider told."""

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker

from tests.conftest import Factory, wait_for_task
from tests.test_garmin import assert_awaiting, wait_for_requests
from wearsync.api.responses import AuthorizationStarted, Disconnected
from wearsync.crypto import generate_key
from wearsync.db import connections
from wearsync.oauth import code_challenge
from wearsync.redirects import parse_allowlist, redirect_allowed
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
BACK = "http://localhost:3000/connected?from=app"  # the caller's page, with a parameter of its own
WHOOP_SCOPE = "offline read:profile read:workout read:sleep read:recovery read:cycles"
SMALL_HISTORY = {"workouts": 6, "days_247": 3, "older_workouts": 0}
# What each simulated authorization page gets asked for: path, scope, PKCE.
EXPECTED = {
    "garmin": ("/garmin/auth/oauth2Confirm", None, True),
    "strava": ("/strava/auth/oauth/authorize", "read,activity:read_all", False),
    "polar": ("/polar/auth/oauth2/authorization", "accesslink.read_all", False),
    "suunto": ("/suunto/auth/oauth/authorize", None, False),
    "whoop": ("/whoop/auth/oauth/oauth2/auth", WHOOP_SCOPE, False),
}  # fmt: skip


async def first_sync(client: Client, key: str, task_id: str, provider: str) -> dict[str, Any]:
    """The sync a connection starts, done: stored (Garmin: asked for, its data comes by webhook)."""
    if provider == "garmin":
        task = await wait_for_requests(client, key, task_id)
        assert_awaiting(task)
    else:
        task = await wait_for_task(client, key, task_id)
        assert task["status"] == "succeeded", task
    return task


@pytest.fixture
def public(client: Client, settings: Settings) -> Client:
    """The test client, with WEARSYNC_PUBLIC_URL naming its real address (providers redirect there)."""
    settings.public_url = str(client.make_url("")).rstrip("/")
    return client


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A user's browser: follows nothing by itself, so each redirect is seen."""
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Flow:
    key: str
    user_id: str
    started: dict[str, Any]  # our authorize endpoint's answer
    callback: str = ""  # where the provider sent the browser back


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def start(
    client: Client, factory: Factory, provider: str, redirect_uri: str = BACK, user: tuple[str, str] | None = None
) -> Flow:
    """Our authorize endpoint, for `user` (key, user id) or a new user."""
    if user is None:
        new_key = await factory.api_key()
        user = (new_key, await factory.user(new_key))
    key, user_id = user
    query = urlencode({"user_id": user_id, "redirect_uri": redirect_uri})
    resp = await client.get(f"/api/v1/oauth/{provider}/authorize?{query}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    started = await resp.json()
    AuthorizationStarted.model_validate(started)  # as the OpenAPI document describes it
    return Flow(key, user_id, started)


async def consent(browser: aiohttp.ClientSession, flow: Flow, sim_user: str, **page: str) -> str:
    """The user signs in at the provider as `sim_user` and decides: where the provider sends them."""
    url = flow.started["authorization_url"] + "&" + urlencode({"login_hint": sim_user, **page})
    async with browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        flow.callback = resp.headers["Location"]
    return flow.callback


async def finish(browser: aiohttp.ClientSession, callback: str) -> dict[str, str]:
    """Our callback's answer: the outcome in the query of the redirect to the caller."""
    async with browser.get(callback, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    assert location.startswith(BACK.split("?")[0]), location
    outcome = query_of(location)
    assert outcome.pop("from") == "app"  # the caller's own parameter stays
    return outcome


async def connect(
    client: Client, factory: Factory, browser: aiohttp.ClientSession, provider: str, sim_user: str
) -> tuple[Flow, dict[str, str]]:
    flow = await start(client, factory, provider)
    return flow, await finish(browser, await consent(browser, flow, sim_user))


@pytest.mark.parametrize("provider", list(EXPECTED))
async def test_connect_end_to_end(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, worker: Worker, db: asyncpg.Pool,
    settings: Settings, sim_state: SimState, provider: str,
) -> None:  # fmt: skip
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    sim_state.provider(provider).user_history[sim_user] = SMALL_HISTORY
    flow = await start(public, factory, provider)
    url = urlsplit(flow.started["authorization_url"])
    asked = query_of(flow.started["authorization_url"])
    path, scope, pkce = EXPECTED[provider]
    assert url.path == path
    assert asked["redirect_uri"] == f"{settings.public_url}/api/v1/oauth/{provider}/callback"
    assert (asked["client_id"], asked["response_type"], asked["state"]) == (
        "wearsync-sim",
        "code",
        flow.started["state"],
    )
    assert asked.get("scope") == scope
    assert ("code_challenge" in asked, asked.get("code_challenge_method")) == (pkce, "S256" if pkce else None)
    # The state is stored only as a hash; the verifier only encrypted.
    stored = await db.fetchrow("SELECT * FROM oauth_states")
    assert stored is not None
    assert stored["state_hash"] == hashlib.sha256(flow.started["state"].encode()).digest()
    if pkce:
        verifier = settings.cipher().open(stored["code_verifier"]) or ""
        assert stored["code_verifier"].startswith("fernet:")
        assert asked["code_challenge"] == code_challenge(verifier)

    callback = await consent(browser, flow, sim_user)
    assert callback.startswith(f"{settings.public_url}/api/v1/oauth/{provider}/callback?")
    outcome = await finish(browser, callback)
    assert outcome.keys() == {"status", "provider", "user_id", "task_id"}, outcome
    assert (outcome["status"], outcome["provider"], outcome["user_id"]) == ("connected", provider, flow.user_id)

    row = await db.fetchrow("SELECT * FROM provider_connections")
    assert row is not None
    assert (str(row["user_id"]), row["provider"], row["active"]) == (flow.user_id, provider, True)
    assert row["access_token"].startswith("fernet:")  # encrypted at rest
    access = settings.cipher().open(row["access_token"]) or ""
    assert sim_state.read_token(provider, access, "access") == sim_user  # the very tokens the provider issued
    assert row["provider_user_id"]  # what its webhooks will name the user by
    if provider == "polar":  # registered with our app when connecting: data is served at once
        assert ("polar", sim_user) in sim_state.registered
    task = await first_sync(public, flow.key, outcome["task_id"], provider)
    assert (task["user_id"], task["provider"]) == (flow.user_id, provider)
    if provider != "garmin":  # Garmin's data arrives by webhook later
        assert await db.fetchval("SELECT count(*) FROM workouts WHERE user_id = $1", row["user_id"]) > 0


async def test_garmin_pkce_a_wrong_verifier_is_refused(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings,
    sim_state: SimState,
) -> None:  # fmt: skip
    flow = await start(public, factory, "garmin")
    # As if the verifier were not the one the challenge was made from.
    await db.execute("UPDATE oauth_states SET code_verifier = $1", settings.cipher().seal("x" * 43))
    outcome = await finish(browser, await consent(browser, flow, "pkce-user"))
    assert (outcome["status"], outcome["error"]) == ("error", "invalid_grant"), outcome
    assert "PKCE verification failed" in outcome["error_description"]
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0
    assert not any(p == "garmin" for p, _, _ in sim_state.grants)


async def test_the_simulated_garmin_checks_pkce(
    sim_server: Any, sim_state: SimState, browser: aiohttp.ClientSession
) -> None:
    """Garmin's authorization page requires an S256 challenge; its token endpoint the verifier."""
    base = str(sim_server.make_url("/garmin/auth"))
    page = {
        "response_type": "code",
        "client_id": "wearsync-sim",
        "redirect_uri": "http://localhost/cb",
        "state": "s" * 8,
    }
    async with browser.get(f"{base}/oauth2Confirm?{urlencode(page)}", allow_redirects=False) as resp:
        assert resp.status == 302
        assert query_of(resp.headers["Location"])["error"] == "invalid_request"  # no challenge
    verifier = "v" * 43
    page |= {"code_challenge": code_challenge(verifier), "code_challenge_method": "S256", "login_hint": "pk"}
    form = {"grant_type": "authorization_code", "client_id": "wearsync-sim", "client_secret": "sim-secret",
            "redirect_uri": "http://localhost/cb"}  # fmt: skip
    for sent, status in ((None, 400), ("w" * 43, 400), (verifier, 200)):
        async with browser.get(f"{base}/oauth2Confirm?{urlencode(page)}", allow_redirects=False) as resp:
            code = query_of(resp.headers["Location"])["code"]
        verifier_field = {} if sent is None else {"code_verifier": sent}
        async with browser.post(
            f"{base}/di-oauth2-service/oauth/token", data=form | verifier_field | {"code": code}
        ) as r:
            assert r.status == status, (sent, await r.text())
    async with browser.post(
        f"{base}/di-oauth2-service/oauth/token", data=form | {"code": code, "code_verifier": verifier}
    ) as r:
        assert r.status == 400  # a code is used once


async def test_the_provider_refusing_is_told_to_the_caller(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    flow = await start(public, factory, "strava")
    outcome = await finish(browser, await consent(browser, flow, "says-no", consent="deny"))
    assert outcome == {"status": "error", "provider": "strava", "user_id": flow.user_id, "error": "access_denied",
                       "error_description": "The user denied access"}  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0


async def test_a_state_works_once(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, worker: Worker, sim_state: SimState
) -> None:
    sim_state.provider("suunto").user_history["once"] = SMALL_HISTORY
    flow, outcome = await connect(public, factory, browser, "suunto", "once")
    assert outcome["status"] == "connected"
    grants = len(sim_state.grants)
    again = await finish(browser, flow.callback)
    assert (again["status"], again["error"]) == ("error", "state_used")
    assert len(sim_state.grants) == grants  # nothing asked of the provider
    await wait_for_task(public, flow.key, outcome["task_id"])


async def test_an_expired_state_is_refused(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool, sim_state: SimState
) -> None:
    flow = await start(public, factory, "whoop")
    callback = await consent(browser, flow, "slow")
    await db.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
    outcome = await finish(browser, callback)
    assert (outcome["status"], outcome["error"]) == ("error", "state_expired")
    assert not sim_state.grants
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0


async def test_an_unknown_or_tampered_state_is_a_403_with_no_redirect(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, sim_state: SimState
) -> None:
    flow = await start(public, factory, "suunto")
    callback = await consent(browser, flow, "tampered")
    state = query_of(callback)["state"]
    cases = [
        callback.replace(state, state[:-1] + ("A" if state[-1] != "A" else "B")),  # tampered
        callback.replace("/oauth/suunto/", "/oauth/strava/"),  # another provider's callback
    ]
    for url in cases:
        async with browser.get(url, allow_redirects=False) as resp:
            assert resp.status == 403
            assert "Location" not in resp.headers
            assert (await resp.json())["detail"].startswith("Unknown OAuth state")
    async with browser.get(callback.split("?")[0] + "?code=abc", allow_redirects=False) as resp:
        assert resp.status == 422
        assert "'state'" in (await resp.json())["detail"]
    assert not sim_state.grants
    assert (await finish(browser, callback))["status"] == "connected"  # the real one still works, once


@pytest.mark.parametrize(
    ("redirect_uri", "status"),
    [
        ("https://evil.example.com/cb", 403),
        ("http://localhost.evil.example.com/cb", 403),
        ("http://localhost@evil.example.com/cb", 403),
        ("http://evil.example.com\\@localhost/cb", 403),
        ("http://localhost/cb#fragment", 403),
        ("http://localhost/a/../b", 403),
        ("javascript:alert(1)", 422),  # not even an http(s) URL
        ("//evil.example.com/cb", 422),
        ("ftp://localhost/cb", 422),
        ("http://localhost/ cb", 422),
    ],
)
async def test_a_redirect_uri_not_allowed_is_refused(
    client: Client, factory: Factory, redirect_uri: str, status: int
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    query = urlencode({"user_id": user_id, "redirect_uri": redirect_uri})
    resp = await client.get(f"/api/v1/oauth/strava/authorize?{query}", headers={"X-API-Key": key})
    assert resp.status == status
    detail = (await resp.json())["detail"]
    if status == 403:
        assert detail == "redirect_uri is not allowed by WEARSYNC_OAUTH_REDIRECT_ALLOWLIST"
    else:
        assert detail.startswith("Invalid query parameter 'redirect_uri': String should match pattern")


def test_the_redirect_allow_list_rule() -> None:
    allow = parse_allowlist("https://app.example.com/oauth,http://localhost,https://other.example.com:8443")
    allowed = [
        "https://app.example.com/oauth", "https://app.example.com/oauth/done?x=1", "https://APP.example.com:443/oauth/",
        "http://localhost:5173/anything", "http://localhost/", "https://other.example.com:8443/x",
    ]  # fmt: skip
    refused = [
        "https://app.example.com/oauthx", "https://app.example.com/", "http://app.example.com/oauth",
        "https://app.example.com:8443/oauth", "https://app.example.com/oauth/../admin", "http://127.0.0.1/",
        "https://app.example.com/oauth/%2e%2e/admin", "https://app.example.com/oauth/%2E./admin",
        "https://app.example.com/oauth/.%2E%2fadmin", "https://app.example.com/oauth/%252e%252e/admin",
        "https://other.example.com/x", "https://evil.com/?https://app.example.com/oauth", "",
    ]  # fmt: skip
    assert [u for u in allowed if not redirect_allowed(u, allow)] == []
    assert [u for u in refused if redirect_allowed(u, allow)] == []
    with pytest.raises(ValueError, match="WEARSYNC_OAUTH_REDIRECT_ALLOWLIST entry 'localhost'"):
        Settings(oauth_redirect_allowlist="localhost")


async def test_a_redirect_uri_disallowed_since_the_start_gets_no_redirect(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, settings: Settings, sim_state: SimState
) -> None:
    flow = await start(public, factory, "suunto")
    callback = await consent(browser, flow, "late")
    settings.oauth_redirect_allowlist = "https://app.example.com"
    async with browser.get(callback, allow_redirects=False) as resp:
        assert resp.status == 403
        assert "Location" not in resp.headers
        assert await resp.json() == {"detail": "The redirect URI of this authorization is no longer allowed"}
    assert not sim_state.grants


async def test_a_failing_token_endpoint_is_told_to_the_caller(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool, sim_state: SimState
) -> None:
    flow = await start(public, factory, "suunto")
    callback = await consent(browser, flow, "unlucky")
    sim_state.faults.append(Fault("suunto", "/oauth/token", "status", 503, count=-1))
    outcome = await finish(browser, callback)
    assert (outcome["status"], outcome["error"]) == ("error", "token_exchange_failed"), outcome
    assert "HTTP 503" in outcome["error_description"]
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0


async def test_scopes_the_user_did_not_grant_fail_the_connection(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    """Strava's page lets the athlete untick scopes, and its redirect says which were accepted."""
    flow = await start(public, factory, "strava")
    callback = await consent(browser, flow, "stingy")
    outcome = await finish(browser, callback.replace("scope=read%2Cactivity%3Aread_all", "scope=read"))
    assert (outcome["status"], outcome["error"]) == ("error", "insufficient_scope"), outcome
    assert outcome["error_description"] == "the user did not grant activity:read_all"
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0


async def test_authorize_errors(client: Client, factory: Factory, settings: Settings) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    theirs = await factory.user(await factory.api_key("someone-else"))

    async def authorize(provider: str, headers: dict[str, str] | None = None, **query: str) -> tuple[int, Any]:
        params = {"user_id": user_id, "redirect_uri": BACK} | query
        resp = await client.get(f"/api/v1/oauth/{provider}/authorize?{urlencode(params)}",
                                headers={"X-API-Key": key} if headers is None else headers)  # fmt: skip
        return resp.status, (await resp.json())["detail"]

    assert await authorize("strava", headers={}) == (401, "Invalid or missing API key")
    assert (await authorize("fitbit"))[0] == 422
    status, detail = await authorize("strava", user_id="nope")
    assert (status, detail.split(":")[0]) == (422, "Invalid query parameter 'user_id'")
    assert await authorize("strava", user_id=str(uuid.uuid4())) == (404, "User not found")
    assert await authorize("strava", user_id=theirs) == (404, "User not found")  # another application's
    settings.providers["whoop"] = settings.replace(whoop_client_id="").providers["whoop"]  # the client's
    assert await authorize("whoop") == (
        503, "Provider 'whoop' is not configured: set WEARSYNC_WHOOP_CLIENT_ID and _SECRET"
    )  # fmt: skip


@pytest.mark.parametrize("provider", list(EXPECTED))
async def test_disconnect_revokes_upstream(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, worker: Worker, db: asyncpg.Pool,
    settings: Settings, sim_state: SimState, provider: str,
) -> None:  # fmt: skip
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    sim_state.provider(provider).user_history[sim_user] = SMALL_HISTORY
    flow, outcome = await connect(public, factory, browser, provider, sim_user)
    await first_sync(public, flow.key, outcome["task_id"], provider)
    access = settings.cipher().open(await db.fetchval("SELECT access_token FROM provider_connections")) or ""
    resp = await public.delete(f"/api/v1/users/{flow.user_id}/connections/{provider}", headers={"X-API-Key": flow.key})
    assert resp.status == 200, await resp.text()
    Disconnected.model_validate(await resp.json())
    assert await resp.json() == {"user_id": flow.user_id, "provider": provider, "active": False,
                                 "upstream_revoked": True, "upstream_error": None, "revocation": "revoked"}  # fmt: skip
    assert sim_state.revocations == [(provider, sim_user)]
    assert sim_state.read_token(provider, access, "access") is None  # the provider no longer takes it
    row = await db.fetchrow("SELECT active, inactive_reason FROM provider_connections")
    assert row is not None
    assert (row["active"], row["inactive_reason"]) == (False, "disconnected")
    if provider == "polar":
        assert ("polar", sim_user) not in sim_state.registered

    # Connecting again works: new tokens, registered again where needed, a first sync that succeeds.
    flow2 = await start(public, factory, provider, user=(flow.key, flow.user_id))
    again = await finish(browser, await consent(browser, flow2, sim_user))
    assert (again["status"], again["user_id"]) == ("connected", flow.user_id), again
    await first_sync(public, flow.key, again["task_id"], provider)


async def test_disconnect_when_the_provider_fails_still_disconnects(
    client: Client, factory: Factory, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("whoop")
    sim_state.faults.append(Fault("whoop", "/developer/v2/user/access", "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert resp.status == 200
    body = await resp.json()
    assert (body["active"], body["upstream_revoked"]) == (False, False)
    assert body["upstream_error"].startswith("DELETE ")
    assert "HTTP 502" in body["upstream_error"]
    assert body["revocation"] == "retrying"  # tests/test_revocation.py: how
    assert not sim_state.revocations
    assert await db.fetchval("SELECT active FROM provider_connections") is False
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert resp.status == 404


@pytest.mark.parametrize("token", ["tok\nen", "tök", "two words", "\t"])
async def test_tokens_no_http_header_can_carry_are_refused(client: Client, factory: Factory, token: str) -> None:
    """Such a token could never be sent to the provider (to sync, or to revoke on disconnect)."""
    key = await factory.api_key()
    user_id = await factory.user(key)
    for field in ("access_token", "refresh_token"):
        body = {"access_token": "ok", "provider_user_id": "y", field: token}
        resp = await client.put(f"/api/v1/users/{user_id}/connections/polar", json=body, headers={"X-API-Key": key})
        assert resp.status == 422
        assert (await resp.json())["detail"].startswith(f"Invalid parameter '{field}'")


async def test_an_authorization_under_way_survives_a_token_key_rotation(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings
) -> None:
    """Its PKCE verifier is encrypted like tokens, so `wearsync token-key rotate` re-encrypts it too."""
    flow = await start(public, factory, "garmin")
    new_key = generate_key()
    async with db.acquire() as conn:
        await connections.reseal_tokens(conn, Settings(token_keys=f"{new_key},{settings.token_keys}").cipher().reseal)
    settings.token_keys = new_key  # the old key dropped
    outcome = await finish(browser, await consent(browser, flow, "rotated"))
    assert outcome["status"] == "connected", outcome


async def test_an_account_connected_to_another_user_of_the_application_is_refused_unless_moved(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    sim_user = f"u{uuid.uuid4().hex[:10]}"
    first, outcome = await connect(public, factory, browser, "strava", sim_user)
    assert outcome["status"] == "connected", outcome
    second = (first.key, await factory.user(first.key))
    flow = await start(public, factory, "strava", user=second)
    outcome = await finish(browser, await consent(browser, flow, sim_user))
    assert (outcome["status"], outcome["error"]) == ("error", "account_in_use"), outcome
    assert first.user_id in outcome["error_description"]
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 1

    query = urlencode({"user_id": second[1], "redirect_uri": BACK, "move": "true"})
    resp = await public.get(f"/api/v1/oauth/strava/authorize?{query}", headers={"X-API-Key": first.key})
    assert resp.status == 200, await resp.text()
    flow = Flow(first.key, second[1], await resp.json())
    outcome = await finish(browser, await consent(browser, flow, sim_user))
    assert (outcome["status"], outcome["user_id"]) == ("connected", second[1]), outcome
    rows = await db.fetch("SELECT user_id::text, active, inactive_reason FROM provider_connections ORDER BY active")
    assert [tuple(r) for r in rows] == [(first.user_id, False, f"moved to user {second[1]}"), (second[1], True, None)]
