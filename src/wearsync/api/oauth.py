"""Connecting a user to a provider: the start of the OAuth flow (API key) and the provider's
callback (public: the browser comes back from the provider without our key; the single-use state
authenticates it). How the flow works, and the redirect URI rule: wearsync/oauth.py.

The callback ends in a redirect (302) to the caller's redirect URI with the outcome in its query:
`status=connected&provider=P&user_id=U&task_id=T` (the first sync), or `status=error&provider=P&
user_id=U&error=E&error_description=...` where E is the provider's own error (`access_denied`, ...),
`state_used`, `state_expired`, `invalid_request` (no code), `invalid_grant` (the provider refused
the code: a wrong PKCE verifier, a used code), `token_exchange_failed`, `insufficient_scope`,
`account_in_use` (the upstream account is connected to another user of the application; started
with `move=true`, the flow moves it instead) or `registration_failed`. Without a state we issued
(missing, tampered, another provider's), or when the redirect URI is no longer allowed, there is
nowhere trusted to send the browser: 403 JSON. A malformed query is a 422 like everywhere else (an
authorize `redirect_uri` that is no absolute http(s) URL too); a well-formed `redirect_uri` that the
allow-list does not allow is a 403.
"""

from datetime import UTC, datetime
from uuid import UUID

import structlog
from aiohttp import web

from wearsync import connect_links, oauth
from wearsync.api.common import APP_ID, DEPS, QUEUE, ApiError, json_response, validate
from wearsync.api.models import AuthorizeQuery, CallbackQuery
from wearsync.api.views import own_user
from wearsync.app_settings import PROVIDER_NOT_ENABLED, provider_enabled, redirect_allowlist
from wearsync.db import connections
from wearsync.deps import Deps
from wearsync.providers import PROVIDERS
from wearsync.redirects import redirect_allowed
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

_AUTHORIZE_LOCATIONS = {"provider": "path", "user_id": "query", "redirect_uri": "query", "move": "query"}
_CALLBACK_LOCATIONS = {name: "query" for name in CallbackQuery.model_fields} | {"provider": "path"}
UNKNOWN_STATE = "Unknown OAuth state: start again with GET /api/v1/oauth/{provider}/authorize"
# An application's own redirect allow-list (api/admin.py), when set, stands for the setting.
REDIRECT_NOT_ALLOWED = "redirect_uri is not allowed by WEARSYNC_OAUTH_REDIRECT_ALLOWLIST"
REDIRECT_NO_LONGER_ALLOWED = "The redirect URI of this authorization is no longer allowed"


async def authorize(request: web.Request) -> web.Response:
    """GET /api/v1/oauth/{provider}/authorize?user_id=&redirect_uri=: where to send the user's
    browser to connect the provider."""
    query = validate(AuthorizeQuery, {**request.query, **request.match_info}, _AUTHORIZE_LOCATIONS)
    deps = request.app[DEPS]
    if not redirect_allowed(query.redirect_uri, await redirect_allowlist(deps.db, deps.settings, request[APP_ID])):
        raise ApiError(403, REDIRECT_NOT_ALLOWED)
    refuse_unconfigured(deps.settings, query.provider)
    if not await provider_enabled(deps.db, request[APP_ID], query.provider):
        raise ApiError(403, PROVIDER_NOT_ENABLED)
    user = await own_user(request, query.user_id)
    auth, url = await begin(deps, request[APP_ID], user["id"], query.provider, query.redirect_uri, query.move)
    return json_response({
        "provider": query.provider,
        "user_id": query.user_id,
        "authorization_url": url,
        "state": auth.state,
        "expires_at": auth.expires_at,
    })  # fmt: skip


def refuse_unconfigured(settings: Settings, provider: str) -> None:
    if not settings.providers[provider].client_id:
        upper = provider.upper()
        raise ApiError(503, f"Provider '{provider}' is not configured: set WEARSYNC_{upper}_CLIENT_ID and _SECRET")


async def begin(
    deps: Deps, app_id: UUID, user_id: UUID, provider_name: str, redirect_uri: str, move: bool = False
) -> tuple[oauth.Authorization, str]:
    """A flow started for the user (by its key): its authorization, and the provider's page to send
    the browser to."""
    provider, config = PROVIDERS[provider_name], deps.settings.providers[provider_name]
    auth = await oauth.start_authorization(
        deps.db, deps.settings.cipher(), app_id=app_id, user_id=user_id, provider=provider,
        redirect_uri=redirect_uri, ttl_s=deps.settings.oauth_state_ttl_s, move=move,
    )  # fmt: skip
    url = oauth.authorization_url(
        provider, config, callback=oauth.callback_url(deps.settings, provider.name), state=auth.state,
        verifier=auth.code_verifier,
    )  # fmt: skip
    return auth, url


async def callback(request: web.Request) -> web.Response:
    """GET /api/v1/oauth/{provider}/callback?code=&state= (or ?error=&state=): finish the flow and
    send the browser back to the caller with the outcome."""
    query = validate(CallbackQuery, {**request.query, **request.match_info}, _CALLBACK_LOCATIONS)
    deps = request.app[DEPS]
    auth = await oauth.take_authorization(deps.db, deps.settings.cipher(), query.provider, query.state)
    if auth is None:
        raise ApiError(403, UNKNOWN_STATE.format(provider=query.provider))
    # The built-in result page of a connect link's flow is ours: no allow-list entry is needed for it.
    ours = auth.redirect_uri == connect_links.result_url(deps.settings)
    allowlist = await redirect_allowlist(deps.db, deps.settings, auth.app_id)
    if not ours and not redirect_allowed(auth.redirect_uri, allowlist):
        raise ApiError(403, REDIRECT_NO_LONGER_ALLOWED)
    # The user as the caller knows them (auth.user_id is the user's key in every table).
    outcome = {"provider": auth.provider, "user_id": str(await connections.public_user_id(deps.db, auth.user_id))}

    def back(**params: str) -> web.Response:
        if params.get("status") != "connected":
            log.info("connecting failed", provider=auth.provider, user_id=str(auth.user_id), error=params["error"])
            params = {"status": "error", **params}
        return web.Response(status=302, headers={"Location": oauth.with_query(auth.redirect_uri, outcome | params)})

    if auth.used:
        return back(error="state_used", error_description="This authorization was finished already")
    if auth.expires_at <= datetime.now(UTC):
        return back(error="state_expired", error_description="The authorization took too long: start again")
    if query.error is not None:
        return back(error=query.error, error_description=query.error_description or f"{auth.provider}: {query.error}")
    if query.code is None:
        return back(error="invalid_request", error_description=f"{auth.provider} sent neither a code nor an error")
    try:
        await oauth.connect_user(deps, auth, query.code, query.scope)
    except oauth.ConnectFailed as e:
        return back(error=e.error, error_description=e.description)
    task_id = await oauth.queue_first_sync(deps, request.app[QUEUE], auth)
    return back(status="connected", **({"task_id": str(task_id)} if task_id else {}))
