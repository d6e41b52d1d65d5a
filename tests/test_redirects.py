"""The outbound HTTP client never follows a redirect off the provider's host, and never sends a
token request's form (client secret, refresh token) anywhere but where it was addressed."""

from typing import Any

import pytest
from aiohttp import web

from wearsync.providers import PROVIDERS
from wearsync.providers.errors import UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import request_tokens
from wearsync.settings import ProviderSettings


async def servers(aiohttp_server: Any) -> tuple[str, list[web.Request]]:
    """A provider (whose every route redirects) and another host that records what reaches it."""
    reached: list[web.Request] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(request)
        return web.json_response({"access_token": "stolen", "data": "elsewhere"})

    other = await aiohttp_server(_app(elsewhere))
    other_url = str(other.make_url(""))

    async def provider(request: web.Request) -> web.Response:
        if request.path == "/data":
            return web.json_response({"data": "here", "auth": request.headers.get("Authorization")})
        if request.path == "/moved-here":
            raise web.HTTPFound("/data")
        if request.path == "/loop":
            raise web.HTTPFound("/loop")
        raise web.HTTPTemporaryRedirect(f"{other_url}{request.path}")

    own = await aiohttp_server(_app(provider))
    return str(own.make_url("")), reached


def _app(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_token_request_redirected_elsewhere_is_not_resent(aiohttp_server: Any, http: HttpClient) -> None:
    own_url, reached = await servers(aiohttp_server)
    config = ProviderSettings(api_url=own_url, auth_url=own_url, client_id="our-client", client_secret="our-secret")
    grant = {"grant_type": "refresh_token", "refresh_token": "the-users-refresh-token"}
    with pytest.raises(UpstreamError, match="not followed") as raised:
        await request_tokens(http, PROVIDERS["strava"], config, grant)
    assert raised.value.status == 307
    assert reached == []  # neither the client secret nor the refresh token left for the other host


async def test_a_data_call_redirected_elsewhere_is_refused(aiohttp_server: Any, http: HttpClient) -> None:
    own_url, reached = await servers(aiohttp_server)
    with pytest.raises(UpstreamError, match="not followed"):
        await http.get_json(f"{own_url}/v1/workouts", headers={"Authorization": "Bearer users-token"})
    assert reached == []


async def test_a_redirect_within_the_providers_host_is_followed(aiohttp_server: Any, http: HttpClient) -> None:
    own_url, reached = await servers(aiohttp_server)
    body = await http.get_json(f"{own_url}/moved-here", headers={"Authorization": "Bearer users-token"})
    assert body == {"data": "here", "auth": "Bearer users-token"}
    with pytest.raises(UpstreamError, match="more than 3 redirects"):
        await http.get_json(f"{own_url}/loop", headers={})
    assert reached == []
