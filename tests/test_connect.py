"""The hosted connect page over real sockets, as a browser without JavaScript would walk it: a
link made by the API or the CLI, the page listing the providers, the provider's consent page in
the simulator (approve or deny), our callback, and the end: the integrator's redirect URI or our
own result page. Links are signed, short-lived and bound to one user of one application. The same
walk in a real browser: tests/test_browser.py."""

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker

from tests.conftest import Factory, wait_for_task
from tests.test_cli import wearsync
from wearsync import connect_links
from wearsync.api.responses import ConnectLink
from wearsync.crypto import generate_key
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]
HTML = {"Accept": "text/html,application/xhtml+xml"}  # as a browser asks


@pytest.fixture
def public(client: Client, settings: Settings) -> Client:
    """The test client, with WEARSYNC_PUBLIC_URL naming its real address (links and callbacks use it)."""
    settings.public_url = str(client.make_url("")).rstrip("/")
    return client


@pytest.fixture
async def browser() -> Any:
    """A user's browser: follows nothing by itself, so each step is seen."""
    async with aiohttp.ClientSession(headers=HTML) as session:
        yield session


async def make_link(client: Client, key: str, user_id: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/users/{user_id}/connect-link", json=body, headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    link: dict[str, Any] = await resp.json()
    ConnectLink.model_validate(link)  # as the OpenAPI document describes it
    return link


async def visit(browser: aiohttp.ClientSession, url: str) -> tuple[int, str, str | None]:
    """(status, body, Location) of one GET."""
    async with browser.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


def offered(page: str) -> dict[str, str]:
    """The providers the connect page lists: provider -> its state."""
    return dict(re.findall(r'<li data-provider="(\w+)">.*?<span class="(?:ok|muted)">([\w ]+)</span>', page))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def through_consent(
    browser: aiohttp.ClientSession, link: dict[str, Any], provider: str, sim_user: str, consent: str
) -> str:
    """From the connect page to the provider's consent page and the user's decision there: where
    the provider sends the browser back (our callback)."""
    status, page, _ = await visit(browser, link["url"])
    assert status == 200, page
    href = re.search(rf'href="(/connect/[^"]+/{provider}\?token=[^"]+)"', page)
    assert href, page
    start = str(urlsplit(link["url"])._replace(path="", query="").geturl()) + href.group(1).replace("&amp;", "&")
    status, _, authorize = await visit(browser, start)
    assert status == 302
    assert authorize is not None
    status, consent_page, _ = await visit(browser, authorize)  # a browser gets the page, not a redirect
    assert status == 200, consent_page
    assert 'name="login_hint" value=""' in consent_page  # a person signs in as who they are
    assert 'value="approve"' in consent_page
    assert 'value="deny"' in consent_page
    status, _, callback = await visit(
        browser, authorize + "&" + urlencode({"login_hint": sim_user, "consent": consent})
    )
    assert status == 302
    assert callback is not None
    return callback


async def test_approving_connects_and_ends_on_our_result_page(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, worker: Worker, db: asyncpg.Pool,
    settings: Settings,
) -> None:  # fmt: skip
    key = await factory.api_key()
    user_id = await factory.user(key)
    link = await make_link(public, key, user_id)
    assert link["url"].startswith(f"{settings.public_url}/connect/{user_id}?token=")
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    _, page, _ = await visit(browser, link["url"])
    assert offered(page) == {p: "not connected" for p in ("garmin", "polar", "strava", "suunto", "whoop")}

    callback = await through_consent(browser, link, "strava", f"a{uuid.uuid4().hex[:10]}", "approve")
    status, _, result = await visit(browser, callback)
    assert status == 302
    assert result is not None
    assert result.startswith(f"{settings.public_url}/connect/result?")
    outcome = query_of(result)
    assert (outcome["status"], outcome["provider"], outcome["user_id"]) == ("connected", "strava", user_id)
    status, shown, _ = await visit(browser, result)
    assert status == 200
    assert "<h1>Strava is connected</h1>" in shown
    task = await wait_for_task(public, key, outcome["task_id"])  # the first sync, as the API's flow queues
    assert task["status"] == "succeeded", task
    assert await db.fetchval("SELECT active FROM provider_connections WHERE provider = 'strava'") is True
    _, again, _ = await visit(browser, link["url"])  # the link still works, and says what is connected
    assert offered(again)["strava"] == "connected"
    assert "Connect again" in again


async def test_denying_connects_nothing_and_says_so(
    public: Client, factory: Factory, browser: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    link = await make_link(public, key, user_id)
    callback = await through_consent(browser, link, "suunto", "says-no", "deny")
    _, _, result = await visit(browser, callback)
    assert result is not None
    assert query_of(result)["error"] == "access_denied"
    status, shown, _ = await visit(browser, result)
    assert status == 200
    assert "You declined to share your data with us at Suunto" in shown
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0


async def test_a_link_with_a_redirect_uri_ends_there(
    public: Client, factory: Factory, browser: aiohttp.ClientSession
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    link = await make_link(public, key, user_id, redirect_uri="http://localhost:3000/done?from=app", ttl_s=60)
    assert datetime.fromisoformat(link["expires_at"]) - datetime.now(UTC) <= timedelta(seconds=60)
    callback = await through_consent(browser, link, "polar", f"p{uuid.uuid4().hex[:10]}", "approve")
    _, _, back = await visit(browser, callback)
    assert back is not None
    assert back.startswith("http://localhost:3000/done?from=app&")
    assert (query_of(back)["status"], query_of(back)["provider"]) == ("connected", "polar")


async def test_making_a_link_checks_the_redirect_uri_and_the_ttl(public: Client, factory: Factory) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    headers = {"X-API-Key": key}
    url = f"/api/v1/users/{user_id}/connect-link"
    resp = await public.post(url, json={"redirect_uri": "https://evil.example/steal"}, headers=headers)
    assert resp.status == 403
    assert "WEARSYNC_OAUTH_REDIRECT_ALLOWLIST" in (await resp.json())["detail"]
    for ttl in (59, 86401):
        resp = await public.post(url, json={"ttl_s": ttl}, headers=headers)
        assert resp.status == 422
        assert "ttl_s" in (await resp.json())["detail"]
    resp = await public.post(url, headers=headers)  # no body: the defaults
    assert resp.status == 200


async def test_only_a_valid_unexpired_link_of_this_user_opens_the_page(
    public: Client, factory: Factory, settings: Settings, browser: aiohttp.ClientSession
) -> None:
    key = await factory.api_key()
    user_id, other_user = await factory.user(key), await factory.user(key)
    link = await make_link(public, key, user_id)
    token = query_of(link["url"])["token"]
    base = f"{settings.public_url}/connect"
    assert (await visit(browser, link["url"]))[0] == 200
    payload, _, signature = token.partition(".")
    forged = connect_links.read_token(settings, token)
    assert forged is not None
    cases = {
        "another user's page": f"{base}/{other_user}?token={token}",
        "a tampered signature": f"{base}/{user_id}?token={payload}.{signature[::-1]}",
        "no token": f"{base}/{user_id}",
        "an expired link": f"{base}/{user_id}?token="
        + connect_links.make_token(settings, replace(forged, expires_at=datetime.now(UTC) - timedelta(seconds=1))),
        "another service's key": f"{base}/{user_id}?token="
        + connect_links.make_token(settings.model_copy(update={"token_keys": generate_key()}), forged),
    }
    for case, url in cases.items():
        status, page, _ = await visit(browser, url)
        assert status == 403, case
        assert "This link is not valid, or it has expired" in page, case
        status, _, location = await visit(browser, url.replace("?", "/strava?", 1) if "?" in url else url + "/strava")
        assert (status, location) == (403, None), case  # and no flow starts from it
    assert (await visit(browser, f"{base}/not-a-user?token={token}"))[0] == 404
    # A new token key put first (rotation): links already sent keep working until they expire.
    settings.token_keys = f"{generate_key()},{settings.token_keys}"
    assert (await visit(browser, link["url"]))[0] == 200
    # A deleted user's link opens nothing.
    assert (await public.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})).status == 200
    assert (await visit(browser, link["url"]))[0] == 404


async def test_the_result_page_says_only_its_own_sentences(
    public: Client, browser: aiohttp.ClientSession, settings: Settings
) -> None:
    base = f"{settings.public_url}/connect/result"
    said = {"status": "error", "provider": "whoop", "error": "access_denied", "error_description": "Call 555-0100"}
    status, page, _ = await visit(browser, f"{base}?{urlencode(said)}")
    assert status == 200
    assert "You declined to share your data with us at Whoop" in page
    assert "555" not in page
    status, page, _ = await visit(browser, f"{base}?status=error&provider=whoop&error=%3Cscript%3E")
    assert (status, "<script>" in page, "(unknown_error)" in page) == (200, False, True)
    assert (await visit(browser, f"{base}?status=connected&provider=myspace"))[0] == 400
    resp = await public.get("/connect/result?status=connected&provider=garmin")
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_the_cli_makes_a_link_for_a_user_of_the_named_application(
    public: Client, factory: Factory, settings: Settings, browser: aiohttp.ClientSession
) -> None:
    key = await factory.api_key("cli-app")
    user_id = await factory.user(key)
    code, out, err = await wearsync(settings, "connect-link", user_id, "--application", "cli-app", "--ttl", "600")
    assert code == 0, err
    url = out.strip()
    assert url.startswith(f"{settings.public_url}/connect/{user_id}?token=")
    assert "Valid until" in err
    status, page, _ = await visit(browser, url)
    assert status == 200, page
    code, _, err = await wearsync(settings, "connect-link", user_id, "--application", "another-app")
    assert (code, err.strip()) == (1, f"error: application 'another-app' has no user {user_id}")
    code, _, err = await wearsync(settings, "connect-link", user_id, "--app", "cli-app", "--ttl", "5")
    assert code == 2
    assert "must be 60 to 86400 seconds" in err
