"""Per-application settings, as the API's checks read them: where an application's OAuth flows
may send users back, and which providers its users may connect and sync. Unset, the operator's
settings apply (WEARSYNC_OAUTH_REDIRECT_ALLOWLIST; every configured provider)."""

from uuid import UUID

from wearsync.db import Executor, applications
from wearsync.redirects import AllowedRedirect, parse_allowlist
from wearsync.settings import Settings

PROVIDER_NOT_ENABLED = "This provider is not enabled for this application"


async def redirect_allowlist(db: Executor, settings: Settings, app_id: UUID) -> tuple[AllowedRedirect, ...]:
    row = await applications.get_settings(db, app_id)
    if row is None or row["redirect_allowlist"] is None:
        return settings.redirect_allowlist
    return parse_allowlist(",".join(row["redirect_allowlist"]))


async def enabled_providers(db: Executor, app_id: UUID) -> frozenset[str] | None:
    """The providers the application may use; None: all of them."""
    row = await applications.get_settings(db, app_id)
    if row is None or row["providers"] is None:
        return None
    return frozenset(row["providers"])


async def provider_enabled(db: Executor, app_id: UUID, provider: str) -> bool:
    enabled = await enabled_providers(db, app_id)
    return enabled is None or provider in enabled
