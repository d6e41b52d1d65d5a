"""OAuth tokens: asking a provider's token endpoint, and reading its answer (keeping a
connection's tokens fresh during a sync is wearsync.credentials)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from wearsync.providers.errors import MalformedPayload, ProviderError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.settings import ProviderSettings

if TYPE_CHECKING:
    from wearsync.providers.core import Provider

log = structlog.get_logger(__name__)


class GrantRefused(ProviderError):
    """The token endpoint refused the grant (invalid_grant: a used, expired or revoked code or
    refresh token)."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: list[str]
    provider_user_id: str | None
    raw: dict[str, Any]


def parse_token_response(body: Any, now: datetime | None = None) -> TokenSet:
    """The fields every OAuth server returns, under the names our providers use for them."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise MalformedPayload(f"token endpoint answered without an access token: {str(body)[:200]}")
    now = now or datetime.now(UTC)
    expires_at = None
    if body.get("expires_at") is not None:  # Strava: epoch seconds
        expires_at = datetime.fromtimestamp(int(body["expires_at"]), UTC)
    elif body.get("expires_in") is not None:
        expires_at = now + timedelta(seconds=int(body["expires_in"]))
    scope = body.get("scope") or ""
    scopes = scope.replace(",", " ").split() if isinstance(scope, str) else [str(s) for s in scope]
    athlete = body["athlete"] if isinstance(body.get("athlete"), dict) else {}
    user = body.get("x_user_id") or body.get("user") or body.get("user_id") or athlete.get("id")
    return TokenSet(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token"),
        expires_at=expires_at,
        scopes=scopes,
        provider_user_id=None if user is None else str(user),
        raw=body,
    )


async def request_tokens(
    http: HttpClient, provider: "Provider[Any]", config: ProviderSettings, grant: Mapping[str, str]
) -> TokenSet:
    """POST a grant to the provider's token endpoint, with our client credentials as it wants them."""
    form = dict(grant)
    headers = {"Accept": "application/json"}
    if provider.client_auth == "basic":
        headers["Authorization"] = aiohttp.encode_basic_auth(config.client_id, config.client_secret)
    else:
        form |= {"client_id": config.client_id, "client_secret": config.client_secret}
    url = f"{config.auth_url}{provider.token_path}"
    try:
        body = await http.request_json("POST", url, headers=headers, data=form, provider=provider.name)
    except UpstreamError as e:
        # 400 is a refused grant (OAuth's invalid_grant; Strava says "invalid" refresh_token);
        # 401 is our client credentials, which is no reason to give up on the user's connection.
        if e.status == 400:
            raise GrantRefused(f"{provider.name} refused the {grant.get('grant_type')} grant: {e.body[:300]}") from e
        raise
    return parse_token_response(body)
