"""The simulated providers' OAuth servers: an authorization page that a simulated user approves
(or denies) at once, and a token endpoint, each in its provider's style (`OAuthStyle`)."""

import base64
import hashlib
import hmac
import html
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from wearsync.sim.common import STATE_KEY, USER_NAME, AuthCode, Handler, basic_client, json_error

AUTH_CODE_TTL_S = 600  # as long as a user may take between consent and our token request


@dataclass(frozen=True)
class OAuthStyle:
    """How a provider's authorization page and token endpoint behave."""

    provider: str
    access_ttl_s: int
    client_auth: str = "basic"  # "basic" or "body"
    issues_refresh_token: bool = True
    rotates_refresh_token: bool = False  # the old refresh token stops working once used
    # Provider-specific fields of a token response (user ids, expires_at, scope) for (user, ttl).
    extra: Callable[[str, int], dict[str, Any]] = lambda user, ttl: {}
    # The body of a refused grant (400).
    refused: Callable[[str], dict[str, Any]] = lambda what: {"error": "invalid_grant", "error_description": what}
    pkce: bool = False  # the authorization page requires a code_challenge (S256 only), the token request its verifier
    # The token request must repeat the authorization's redirect_uri (RFC 6749 4.1.3); Strava's takes none.
    checks_redirect_uri: bool = True
    returns_scope: bool = False  # the redirect back says which scopes the user accepted (Strava)


def s256(verifier: str) -> str:
    """PKCE's S256 code challenge of a code verifier (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_endpoint(style: OAuthStyle) -> Handler:
    """GET: the provider's authorization page, where simulated user `login_hint` (default `demo`)
    signs in and approves (`consent=approve`) or denies (`consent=deny`): both simulator-only
    parameters, the user's part. A browser (it accepts text/html) without `consent` gets a consent
    page whose form sends one; a script gets the approval at once, as before. The browser is
    redirected to `redirect_uri` with a single-use code bound to the client, the redirect URI and
    (PKCE) the challenge, and the `state`; or with `error` (`access_denied`, `invalid_request`, ...).
    A bad client_id or redirect_uri is answered 400 here: the provider never redirects to an
    unverified URI (RFC 6749 4.1.2.1)."""

    async def handler(request: web.Request) -> web.Response:
        state = request.config_dict[STATE_KEY]
        knobs = state.provider(style.provider)
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != knobs.client_id:
            return json_error(400, {"error": "invalid_client", "error_description": "Unknown client_id"})
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            return json_error(400, {"error": "invalid_request", "error_description": "Invalid redirect_uri"})

        def back(**params: str) -> web.Response:
            if "state" in query:
                params["state"] = query["state"]
            location = redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(params)
            return web.Response(status=302, headers={"Location": location})

        user, challenge = query.get("login_hint", "demo"), query.get("code_challenge")
        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if not USER_NAME.match(user):
            return back(error="invalid_request", error_description="Unknown user")
        if style.pkce and (
            query.get("code_challenge_method") != "S256" or not re.fullmatch(r"[\w-]{43}", challenge or "")
        ):
            return back(
                error="invalid_request", error_description="code_challenge with code_challenge_method=S256 required"
            )
        if "consent" not in query and _wants_page(request):
            return consent_page(style.provider, query)
        if query.get("consent") == "deny":
            return back(error="access_denied", error_description="The user denied access")
        code = secrets.token_urlsafe(24)
        scope = query.get("scope", "")
        state.auth_codes[code] = AuthCode(
            style.provider, user, knobs.client_id, redirect_uri, scope, challenge if style.pkce else None,
            time.time() + AUTH_CODE_TTL_S,
        )  # fmt: skip
        return back(code=code, **({"scope": scope} if style.returns_scope else {}))

    return handler


def _wants_page(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


_SCOPE_SPLIT = re.compile(r"[ ,]+")


def consent_page(provider: str, query: Mapping[str, str]) -> web.Response:
    """What a user sees at the provider: who asks for what, a name to sign in as, approve or deny.
    The form sends the same query back with `login_hint` and `consent` (both from the user)."""
    name = html.escape(provider.capitalize())
    kept = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in query.items()
        if k not in ("login_hint", "consent")
    )
    scopes = [s for s in _SCOPE_SPLIT.split(query.get("scope", "")) if s]
    asked = "".join(f"<li>{html.escape(s)}</li>" for s in scopes) or "<li>your activity data</li>"
    # A person types who they are (prefilled from login_hint, as real providers do with it).
    user = html.escape(query.get("login_hint", ""))
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: authorize an application</title>
<style>body{{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem;color:#222}}
.box{{border:1px solid #ccc;border-radius:8px;padding:1.5rem}}button{{font-size:1rem;padding:.5rem 1.2rem;
margin-right:.5rem;border-radius:6px;border:1px solid #888;cursor:pointer}}button[value=approve]{{background:#1a7f37;
color:#fff;border-color:#1a7f37}}.note{{color:#777;font-size:.85rem}}</style></head>
<body><div class="box">
<p class="note">Simulated {name} (wearsync's simulator)</p>
<h1>Authorize access to your {name} account</h1>
<p>An application asks to read:</p><ul>{asked}</ul>
<form method="get">{kept}
<p><label>Sign in as <input name="login_hint" value="{user}" placeholder="alice" required></label></p>
<button type="submit" name="consent" value="approve">Approve</button>
<button type="submit" name="consent" value="deny">Deny</button>
</form></div></body></html>
"""
    return web.Response(text=text, content_type="text/html")


def _issued_code_problem(style: OAuthStyle, issued: AuthCode, client_id: str, form: Mapping[str, Any]) -> str | None:
    """Why a token request may not redeem this issued code, or None."""
    if issued.provider != style.provider or issued.client_id != client_id or issued.expires_at < time.time():
        return "Invalid authorization code"
    if style.checks_redirect_uri and form.get("redirect_uri") != issued.redirect_uri:
        return "redirect_uri does not match the authorization request"
    if issued.code_challenge is not None:
        verifier = str(form.get("code_verifier", ""))
        if not hmac.compare_digest(s256(verifier), issued.code_challenge):
            return "PKCE verification failed: code_verifier does not match the code_challenge"
    return None


def token_endpoint(style: OAuthStyle) -> Handler:
    """POST token endpoint: the `authorization_code` grant for a code the authorization page issued
    (once; checked against its client, redirect URI and PKCE challenge) or, a shortcut for scripts
    and tests, any code `user-NAME` (tokens of simulated user NAME, nothing checked); and the
    `refresh_token` grant, as the provider answers them."""

    async def handler(request: web.Request) -> web.Response:
        state = request.config_dict[STATE_KEY]
        knobs = state.provider(style.provider)
        form = await request.post()
        if style.client_auth == "basic":
            client = basic_client(request)
        else:
            client = (str(form.get("client_id", "")), str(form.get("client_secret", "")))
        if client != (knobs.client_id, knobs.client_secret):
            return json_error(401, {"error": "invalid_client"})
        grant = str(form.get("grant_type", ""))
        if grant == "authorization_code":
            code = str(form.get("code", ""))
            issued = state.auth_codes.pop(code, None)  # used once, whatever the outcome
            user = issued.user if issued is not None else code.removeprefix("user-")
            if issued is not None:
                problem = _issued_code_problem(style, issued, client[0], form)
                if problem is not None:
                    return json_error(400, style.refused(problem))
            elif not code.startswith("user-") or not USER_NAME.match(user):
                return json_error(400, style.refused("Invalid authorization code"))
            state.refresh_revoked_before.pop((style.provider, user), None)  # connecting again
            refresh_token = None
        elif grant == "refresh_token" and style.issues_refresh_token:
            refresh_token = str(form.get("refresh_token", ""))
            found = state.read_token(style.provider, refresh_token, "refresh")
            if found is None:
                return json_error(400, style.refused("Invalid refresh token"))
            user = found
            if style.rotates_refresh_token:
                state.revoked_refresh_tokens.add(refresh_token)
                refresh_token = None
        else:
            return json_error(400, {"error": "unsupported_grant_type"})
        state.grants.append((style.provider, grant, user))
        ttl = knobs.access_ttl_s or style.access_ttl_s
        body: dict[str, Any] = {
            "access_token": state.issue_token(style.provider, user, "access", ttl),
            "token_type": "bearer",
            "expires_in": ttl,
        }
        if style.issues_refresh_token:
            body["refresh_token"] = refresh_token or state.issue_token(style.provider, user, "refresh", None)
        return web.json_response(body | style.extra(user, ttl))

    return handler
