"""Connecting users through the providers' OAuth 2 authorization-code flow, and disconnecting them.

Starting (`GET /api/v1/oauth/{provider}/authorize`): a *state* of 32 random bytes is stored (as its
SHA-256, like API keys) in `oauth_states` with what it is bound to: the API key's application, the
user, the provider, the caller's redirect URI and, where the provider uses PKCE (Garmin), the code
verifier (encrypted like tokens). It is valid for WEARSYNC_OAUTH_STATE_TTL_S and for one callback.
The provider's authorization URL carries our callback, `{WEARSYNC_PUBLIC_URL}/api/v1/oauth/{provider}
/callback` (register it with the provider), its scopes, the state and the S256 code challenge.

Finishing (the callback, answered in wearsync/api/oauth.py): the state is taken (a second use finds
it used), the code exchanged at the provider's token endpoint (with the verifier), the provider's id
of the user learnt, the scopes checked, the connection stored encrypted (the same code as
`PUT .../connections/{provider}`), the provider told where it needs to be (Polar: register the
user), and a first sync of everything queued, as `POST .../sync` queues one.

Redirect URIs: the caller's is checked against WEARSYNC_OAUTH_REDIRECT_ALLOWLIST (wearsync.redirects)
when a flow starts and again at its callback.
"""

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import asyncpg
import structlog
from arq import ArqRedis
from redis.exceptions import RedisError

from wearsync.crypto import TokenCipher
from wearsync.db import connections
from wearsync.deps import Deps, connection_context
from wearsync.models import SyncParams
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, Provider
from wearsync.providers.errors import AccountUnconfirmed, ProviderError, RateLimited, UpstreamAuthError
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import GrantRefused, TokenSet, request_tokens
from wearsync.settings import ProviderSettings, Settings
from wearsync.tasks import SyncRefused, requested_types, start_sync

log = structlog.get_logger(__name__)


def with_query(uri: str, params: Mapping[str, str]) -> str:
    """`uri` with `params` added to its query (the caller's own parameters stay)."""
    return uri + ("&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")) + urlencode(params)


# ---- starting a flow -------------------------------------------------------------------------


def callback_url(settings: Settings, provider: str) -> str:
    return f"{settings.public_url.rstrip('/')}/api/v1/oauth/{provider}/callback"


def code_challenge(verifier: str) -> str:
    """PKCE's S256 challenge of a code verifier (RFC 7636 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorization_url(
    provider: Provider, config: ProviderSettings, *, callback: str, state: str, verifier: str | None
) -> str:
    query = {"response_type": "code", "client_id": config.client_id, "redirect_uri": callback, "state": state}
    if provider.scopes:
        query["scope"] = provider.scope_separator.join(provider.scopes)
    if verifier is not None:
        query |= {"code_challenge": code_challenge(verifier), "code_challenge_method": "S256"}
    return f"{config.authorize_url}{provider.authorize_path}?{urlencode(query | dict(provider.authorize_params))}"


def _state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


@dataclass(frozen=True)
class Authorization:
    """A flow started and not finished: what its state is bound to."""

    state: str
    app_id: UUID
    user_id: UUID
    provider: str
    redirect_uri: str
    code_verifier: str | None
    expires_at: datetime
    used: bool = False  # taken by an earlier callback
    move: bool = False  # the account may be moved from another user of the application


async def start_authorization(
    db: asyncpg.Pool,
    cipher: TokenCipher,
    *,
    app_id: UUID,
    user_id: UUID,
    provider: Provider,
    redirect_uri: str,
    ttl_s: int,
    move: bool = False,
) -> Authorization:
    # 43 characters of the URL-safe alphabet: as PKCE asks of a verifier, and plenty for a state.
    auth = Authorization(
        state=secrets.token_urlsafe(32),
        app_id=app_id,
        user_id=user_id,
        provider=provider.name,
        redirect_uri=redirect_uri,
        code_verifier=secrets.token_urlsafe(32) if provider.pkce else None,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
        move=move,
    )
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM oauth_states WHERE expires_at < now() - interval '1 day'")
        await conn.execute(
            "INSERT INTO oauth_states (state_hash, application_id, user_id, provider, redirect_uri, code_verifier,"
            " expires_at, move) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            _state_hash(auth.state), app_id, user_id, provider.name, redirect_uri,
            cipher.seal(auth.code_verifier), auth.expires_at, move,
        )  # fmt: skip
    return auth


async def take_authorization(db: asyncpg.Pool, cipher: TokenCipher, provider: str, state: str) -> Authorization | None:
    """The flow a callback's state belongs to, marked used (`used`: it was already); None when no
    flow of this provider has this state."""
    row = await db.fetchrow(
        """
        UPDATE oauth_states s SET used_at = coalesce(s.used_at, now())
        FROM (SELECT state_hash, used_at FROM oauth_states WHERE state_hash = $1 AND provider = $2 FOR UPDATE) old
        WHERE s.state_hash = old.state_hash
        RETURNING s.application_id, s.user_id, s.redirect_uri, s.code_verifier, s.expires_at, s.move, old.used_at
        """,
        _state_hash(state),
        provider,
    )
    if row is None:
        return None
    return Authorization(
        state=state,
        app_id=row["application_id"],
        user_id=row["user_id"],
        provider=provider,
        redirect_uri=row["redirect_uri"],
        code_verifier=cipher.open(row["code_verifier"]),
        expires_at=row["expires_at"],
        used=row["used_at"] is not None,
        move=row["move"],
    )


# ---- finishing one ---------------------------------------------------------------------------


async def exchange_code(
    http: HttpClient, provider: Provider, config: ProviderSettings, grant: Mapping[str, str]
) -> TokenSet:
    """Tokens for an authorization code (`grant`: code, redirect_uri, ...), with the provider's id
    of their user, asked for where the token response does not carry it (Whoop, Garmin)."""
    tokens = await request_tokens(http, provider, config, {"grant_type": "authorization_code", **grant})
    if tokens.provider_user_id is None and provider.user_id is not None:
        user_id = await provider.user_id(http, config, tokens.access_token)
        tokens = dataclasses.replace(tokens, provider_user_id=user_id)
    return tokens


class AccountUnknown(Exception):
    """Whose tokens handed to `PUT .../connections` are was not learnt: `status` and `detail` are
    the API's answer (422: the provider refused them or names another account; 502: it could not
    be asked)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def learn_account(
    http: HttpClient, provider: Provider, config: ProviderSettings, user_id: UUID, handed: TokenSet
) -> TokenSet:
    """The tokens to store for tokens handed to us, with the account the provider says they are of:
    a connection's upstream identity is never the caller's word, as webhook events are routed by it.
    A provider_user_id the caller gave must be that account."""
    claimed = handed.provider_user_id
    try:
        if provider.identify is not None:
            learnt = await provider.identify(http, config, handed, user_id)
        else:
            assert provider.user_id is not None, f"{provider.name} has no way to learn a token's account"
            learnt = dataclasses.replace(
                handed, provider_user_id=await provider.user_id(http, config, handed.access_token)
            )
    except AccountUnconfirmed as e:
        raise AccountUnknown(422, str(e)) from None
    except (UpstreamAuthError, GrantRefused) as e:
        raise AccountUnknown(422, f"{provider.name} refused the tokens: {e}") from None
    except RateLimited as e:
        raise AccountUnknown(503, f"{provider.name}'s rate limit: {e}") from None
    except ProviderError as e:
        raise AccountUnknown(502, f"{provider.name} could not be asked whose the tokens are: {e}") from None
    if claimed is not None and learnt.provider_user_id != claimed:
        raise AccountUnknown(
            422,
            f"provider_user_id '{claimed}' is not the account of these tokens: {provider.name} says"
            f" '{learnt.provider_user_id}'",
        )
    return learnt


def missing_scopes(provider: Provider, granted: list[str]) -> list[str]:
    """The scopes we asked for that the user did not grant (where the provider says what was granted)."""
    return [s for s in provider.scopes if granted and s not in granted]


async def save_connection(
    db: asyncpg.Pool,
    cipher: TokenCipher,
    user_id: UUID,
    provider: str,
    *,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime | None,
    provider_user_id: str,
    scopes: list[str],
    move: bool = False,
) -> asyncpg.Record:
    """Store (or replace) a user's connection, its tokens encrypted; it is active. AccountTaken
    when another user of the application has the upstream account, unless `move` (db.connections)."""
    return await connections.upsert_connection(
        db, user_id, provider,
        access_token=cipher.seal(access_token) or "", refresh_token=cipher.seal(refresh_token),
        expires_at=expires_at, provider_user_id=provider_user_id, scopes=scopes, move=move,
    )  # fmt: skip


class ConnectFailed(Exception):
    """Why a callback did not connect the user: `error` (an OAuth-style code) and `description` go
    to the caller's redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description = error, description[:300]


async def connect_user(deps: Deps, auth: Authorization, code: str, granted_scope: str | None) -> None:
    """Exchange the code, check what was granted, store the connection and tell the provider where
    it needs it; ConnectFailed says why not (a connection whose upstream setup failed is left
    inactive, with the reason)."""
    provider, cipher = PROVIDERS[auth.provider], deps.settings.cipher()
    grant = {"code": code, "redirect_uri": callback_url(deps.settings, provider.name)}
    if auth.code_verifier is not None:
        grant["code_verifier"] = auth.code_verifier
    try:
        tokens = await exchange_code(deps.http, provider, deps.settings.providers[provider.name], grant)
    except GrantRefused as e:
        raise ConnectFailed("invalid_grant", str(e)) from e
    except ProviderError as e:
        raise ConnectFailed("token_exchange_failed", str(e)) from e
    if tokens.provider_user_id is None:
        raise ConnectFailed("token_exchange_failed", f"{provider.name}'s token response names no user")
    # Where the token response does not list the scopes, the redirect said which were accepted (Strava).
    granted = tokens.scopes or (granted_scope or "").replace(",", " ").split()
    missing = missing_scopes(provider, granted)
    if missing:
        raise ConnectFailed("insufficient_scope", f"the user did not grant {', '.join(missing)}")
    try:
        row = await save_connection(
            deps.db, cipher, auth.user_id, provider.name,
            access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_at=tokens.expires_at,
            provider_user_id=tokens.provider_user_id, scopes=granted, move=auth.move,
        )  # fmt: skip
    except connections.AccountTaken as e:
        other = await connections.public_user_id(deps.db, e.user_id)
        raise ConnectFailed(
            "account_in_use",
            f"this {provider.name} account ('{tokens.provider_user_id}') is connected to user {other} of this"
            " application; authorize with move=true to move it",
        ) from e
    if provider.on_connect is not None:
        try:
            await provider.on_connect(connection_context(deps, provider, Connection.from_row(row, cipher)))
        except ProviderError as e:
            await connections.deactivate_connection(deps.db, auth.user_id, provider.name, f"connecting failed: {e}")
            raise ConnectFailed("registration_failed", str(e)) from e
    log.info("user connected", provider=provider.name, user_id=str(auth.user_id))


async def queue_first_sync(deps: Deps, queue: ArqRedis, auth: Authorization) -> UUID | None:
    """A sync of everything the provider offers, started as `POST .../sync` starts one; None when it
    could not be queued (the connection stands: scheduled syncs, or the caller, will sync it)."""
    try:
        data_types = requested_types(auth.provider, "all")
        task_id, _ = await start_sync(
            deps.db, queue, auth.app_id, auth.provider, auth.user_id, data_types, SyncParams(), run_async=True
        )
    except (SyncRefused, RedisError) as e:
        log.warning("first sync not queued", provider=auth.provider, user_id=str(auth.user_id), error=repr(e))
        return None
    return task_id
