"""The hosted connect page: a user opens the link their integrator made (wearsync/connect_links.py),
sees the providers with what is connected already, picks one, goes through its OAuth flow, and is
sent back to the integrator's redirect URI or, without one, to a result page of ours.

`POST /api/v1/users/{user_id}/connect-link` (API key) makes a link. The pages are public: the
signed token authenticates them, for one user of one application until it expires. They are
server-rendered HTML, every value escaped, and no script runs on them.
"""

import html
import re
from uuid import UUID

from aiohttp import web
from pydantic import ValidationError

from wearsync import connect_links
from wearsync.api.common import APP_ID, DEPS, ApiError, json_body, json_response, validate
from wearsync.api.models import ConnectLinkIn, ConnectResultQuery, UserPath
from wearsync.api.oauth import REDIRECT_NOT_ALLOWED, begin
from wearsync.api.views import own_user
from wearsync.app_settings import enabled_providers, provider_enabled, redirect_allowlist
from wearsync.db import connections
from wearsync.providers import PROVIDERS
from wearsync.redirects import redirect_allowed

STYLESHEET, ICON = "/dashboard/static/wearsync.css", "/dashboard/static/favicon.svg"
# No script, no frames, nothing from elsewhere; the forms and links stay on this origin or go to
# the provider's authorization page by a redirect.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the link's token is in the URL
    "Cache-Control": "no-store",
}
BAD_LINK = "This link is not valid, or it has expired. Ask for a new one where you got it."


async def create_link(request: web.Request) -> web.Response:
    path = validate(UserPath, request.match_info, {"user_id": "path"})
    body = validate(ConnectLinkIn, await json_body(request, optional=True))
    settings = request.app[DEPS].settings
    allowlist = await redirect_allowlist(request.app[DEPS].db, settings, request[APP_ID])
    if body.redirect_uri is not None and not redirect_allowed(body.redirect_uri, allowlist):
        raise ApiError(403, REDIRECT_NOT_ALLOWED)
    await own_user(request, path.user_id)
    url, expires_at = connect_links.mint(settings, request[APP_ID], path.user_id, body.redirect_uri, body.ttl_s)
    return json_response({"user_id": path.user_id, "url": url, "expires_at": expires_at})


def page(title: str, body: str, status: int = 200) -> web.Response:
    """An HTML page of ours: `body` is HTML whose every value the caller escaped."""
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><link rel="stylesheet" href="{STYLESHEET}">
<link rel="icon" href="{ICON}" type="image/svg+xml"></head>
<body class="hosted"><main class="card">
{body}
</main></body></html>
"""
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


def _problem(title: str, detail: str, status: int) -> web.Response:
    return page(title, f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(detail)}</p>", status)


def display_name(provider: str) -> str:
    return provider.capitalize()


async def _link_of(request: web.Request) -> tuple[connect_links.ConnectLink, UUID] | web.Response:
    """The page's link and its user's key, or the page that says why there is none."""
    try:
        user_id = UUID(request.match_info["user_id"])
    except ValueError:
        return _problem("Link not valid", BAD_LINK, 404)
    deps = request.app[DEPS]
    link = connect_links.read_token(deps.settings, request.query.get("token", "")[:4096])
    if link is None or link.user_id != user_id:
        return _problem("Link not valid", BAD_LINK, 403)
    user = await connections.get_user(deps.db, link.app_id, user_id)
    if user is None:  # deleted since the link was made
        return _problem("Link not valid", BAD_LINK, 404)
    return link, user["id"]


async def connect_page(request: web.Request) -> web.Response:
    """GET /connect/{user_id}?token=: the providers, each connected already or not, to pick one."""
    found = await _link_of(request)
    if isinstance(found, web.Response):
        return found
    link, user_key = found
    deps = request.app[DEPS]
    active = {row["provider"] for row in await connections.list_connections(deps.db, user_key) if row["active"]}
    token = html.escape(request.query["token"])
    items = []
    enabled = await enabled_providers(deps.db, link.app_id)
    for name in sorted(PROVIDERS):
        if not deps.settings.providers[name].client_id or (enabled is not None and name not in enabled):
            continue  # not set up by this service's operator, or not enabled for the application
        label = display_name(name)
        state = '<span class="ok">connected</span>' if name in active else '<span class="muted">not connected</span>'
        action = "Connect again" if name in active else "Connect"
        href = f"/connect/{link.user_id}/{name}?token={token}"
        items.append(
            f'<li data-provider="{name}"><span class="provider">{label}</span> {state}'
            f' <a class="button" href="{href}">{action}</a></li>'
        )
    expires = link.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    body = f"""<h1>Connect your devices</h1>
<p>Pick a service to share your workouts, sleep and activity from. You will sign in there and decide
what to share; then you come back here.</p>
<ul class="providers">{"".join(items) or "<li>No service is set up yet.</li>"}</ul>
<p class="muted small">This link works until {expires}.</p>"""
    return page("Connect your devices", body)


async def connect_start(request: web.Request) -> web.Response:
    """GET /connect/{user_id}/{provider}?token=: start the provider's OAuth flow and send the browser
    to its authorization page."""
    found = await _link_of(request)
    if isinstance(found, web.Response):
        return found
    link, user_key = found
    provider = request.match_info["provider"]
    deps = request.app[DEPS]
    if (
        provider not in PROVIDERS
        or not deps.settings.providers[provider].client_id
        or not await provider_enabled(deps.db, link.app_id, provider)
    ):
        return _problem("Unknown service", "This service cannot be connected here.", 404)
    back = link.redirect_uri or connect_links.result_url(deps.settings)
    allowlist = await redirect_allowlist(deps.db, deps.settings, link.app_id)
    if link.redirect_uri is not None and not redirect_allowed(back, allowlist):
        return _problem("Link not valid", BAD_LINK, 403)  # the allow-list changed since the link was made
    _, url = await begin(deps, link.app_id, user_key, provider, back)
    return web.Response(status=302, headers={"Location": url, **PAGE_HEADERS})


_ERRORS = {
    "access_denied": "You declined to share your data with us at {p}. Nothing was connected.",
    "state_expired": "Signing in at {p} took too long. Open your link again to start over.",
    "state_used": "This sign-in at {p} was finished already.",
    "account_in_use": "This {p} account is connected to someone else here already.",
    "insufficient_scope": "Not everything we asked for was shared at {p}. Connect again and allow it all.",
}
_CODE = re.compile(r"^[a-z_]{1,64}$")


async def connect_result(request: web.Request) -> web.Response:
    """GET /connect/result: where a flow from a link without a redirect URI ends. It shows our own
    sentences only (never text from the query), so the page cannot be made to say anything else."""
    try:
        outcome = ConnectResultQuery.model_validate(dict(request.query))
    except ValidationError:
        return _problem("Nothing to show", "This page shows how connecting a service ended.", 400)
    name = display_name(outcome.provider)
    if outcome.status == "connected":
        return page(
            f"{name} connected",
            f'<h1>{name} is connected</h1>\n<p class="ok">Thank you. Your data is on its way; you can close'
            " this window.</p>",
        )
    code = outcome.error if outcome.error and _CODE.match(outcome.error) else "unknown_error"
    text = _ERRORS.get(code, "{p} could not be connected. Please try again later.").format(p=name)
    return page(
        "Not connected",
        f'<h1>Not connected</h1>\n<p class="error">{html.escape(text)}</p>\n<p class="muted small">({code})</p>',
    )
