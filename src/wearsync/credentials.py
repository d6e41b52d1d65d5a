"""A connection's tokens during one task: fresh before expiry, refreshed once on a 401.

Only one refresh per connection runs at a time across every worker and API process: the
refresher takes a lease on the connection's row (migration 0016), asks the provider, then saves
the new tokens and ends the lease in one statement, and only then uses them; whoever found the
lease taken waits for it to end, finds the new token in the row and uses it instead of refreshing
again. This matters where refresh tokens rotate (Whoop, Strava): a second refresh with the old
token would be refused. No database connection (or row lock) is held while the provider answers:
a slow token endpoint holds no one else's connection. A lease outlives the longest the refresher
may take (`lease_s`), so one whose holder died expires.
"""

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from wearsync.crypto import TokenCipher
from wearsync.db import connections
from wearsync.providers.core import Provider
from wearsync.providers.errors import ConnectionRevoked
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import GrantRefused, TokenSet, request_tokens
from wearsync.settings import ProviderSettings

log = structlog.get_logger(__name__)

FIRST_PAUSE_S = 0.05  # the first look again at a connection another process is refreshing


@dataclass
class Credentials:
    """One connection's tokens during one task, shared by the task's data types."""

    provider: Provider[Any]
    config: ProviderSettings
    user_id: UUID
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    db: asyncpg.Pool
    http: HttpClient
    refresh_margin: timedelta = timedelta(minutes=5)
    refreshes: int = 0  # how many times this task asked the provider for new tokens
    cipher: TokenCipher | None = None  # stored tokens are encrypted (None: stored as they are)
    # The longest one refresh may take (the token request, with its retries): the lease on the
    # connection's row lasts this long, then another process may refresh.
    lease_s: float = 300.0
    # False: tokens that are no longer the connection's (kept to revoke our access after a
    # disconnect): never refreshed, nor replaced by what the connection's row holds now.
    refreshable: bool = True
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def token(self) -> str:
        """An access token that is not about to expire."""
        expiring = self.expires_at is not None and self.expires_at - self.refresh_margin <= datetime.now(UTC)
        if expiring and self.refresh_token:
            await self.refresh(self.access_token)
        return self.access_token

    async def refresh(self, stale: str) -> None:
        """Replace the `stale` access token, unless this task or another process already has."""
        async with self._lock:
            if self.access_token != stale:
                return
            if not self.refreshable:
                raise ConnectionRevoked(f"{self.provider.name} refused the access token, which is not refreshed")
            lease = uuid.uuid4()
            row, leased = await self._lease_or_fresh_row(stale, lease)
            if leased:
                row = await self._refresh_leased(row, lease)
            self.access_token, self.refresh_token, self.expires_at = (
                self._open(row["access_token"]) or "",
                self._open(row["refresh_token"]),
                row["expires_at"],
            )

    async def _lease_or_fresh_row(self, stale: str, lease: uuid.UUID) -> tuple[asyncpg.Record, bool]:
        """The connection's row once it holds tokens newer than `stale` (and False), or with the
        lease to refresh them ourselves (and True); waiting while another process holds it."""
        pause = FIRST_PAUSE_S
        while True:
            row = await connections.take_refresh_lease(self.db, self.user_id, self.provider.name, lease, self.lease_s)
            if row is None or not row["active"]:
                raise ConnectionRevoked(f"the {self.provider.name} connection was deactivated during the sync")
            if self._open(row["access_token"]) != stale:
                if row["leased"]:
                    await connections.release_refresh_lease(self.db, self.user_id, self.provider.name, lease)
                return row, False
            if row["leased"]:
                return row, True
            # Another process is asking the provider; its tokens will be in the row when it is done.
            if pause == FIRST_PAUSE_S:
                log.info("token refresh under way elsewhere, waiting for it", provider=self.provider.name)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 1.0)

    async def _refresh_leased(self, row: asyncpg.Record, lease: uuid.UUID) -> asyncpg.Record:
        """Ask the provider for new tokens with the row's refresh token and save them (ending the
        lease); a refused grant deactivates the connection."""
        refresh_token = self._open(row["refresh_token"])
        try:
            if not refresh_token:
                raise GrantRefused(f"{self.provider.name} refused the access token and issues no refresh token")
            async with asyncio.timeout(self.lease_s):
                tokens = await self._ask(refresh_token)
        except GrantRefused as refused:
            async with self.db.acquire() as conn, conn.transaction():
                await connections.deactivate_connection(conn, self.user_id, self.provider.name, str(refused))
                await connections.release_refresh_lease(conn, self.user_id, self.provider.name, lease)
            log.warning("connection deactivated: refresh refused", provider=self.provider.name, error=str(refused))
            raise ConnectionRevoked(
                f"{refused}. The connection is now inactive: the user must connect {self.provider.name} again"
            ) from refused
        except BaseException:
            # The lease ends now rather than when it expires: the next refresh need not wait.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    connections.release_refresh_lease(self.db, self.user_id, self.provider.name, lease)
                )
            raise
        # Saved before anyone uses them. Where the provider sends no new refresh token, the old
        # one stays valid.
        return await connections.save_tokens(
            self.db,
            self.user_id,
            self.provider.name,
            access_token=self._seal(tokens.access_token) or "",
            refresh_token=self._seal(tokens.refresh_token or refresh_token),
            expires_at=tokens.expires_at,
            lease=lease,
        )

    async def _ask(self, refresh_token: str) -> TokenSet:
        grant = {"grant_type": "refresh_token", "refresh_token": refresh_token, **self.provider.refresh_params}
        tokens = await request_tokens(self.http, self.provider, self.config, grant)
        self.refreshes += 1
        log.info("tokens refreshed", provider=self.provider.name, expires_at=str(tokens.expires_at))
        return tokens

    def _open(self, stored: str | None) -> str | None:
        return self.cipher.open(stored) if self.cipher is not None else stored

    def _seal(self, token: str | None) -> str | None:
        return self.cipher.seal(token) if self.cipher is not None else token
