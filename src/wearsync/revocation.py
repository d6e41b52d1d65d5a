"""Withdrawing wearsync's access to an account at its provider: when a connection is disconnected
or its user deleted, and again later, by the workers, where the provider could not be told then.

A revocation is one call, and takes no turn in the shared rate limit: a deletion must not wait for
the window a busy provider opens next, nor be given up for it (the provider itself may still
answer 429, which is tried again). One that failed for a reason that may pass (timeouts, 5xx,
429) keeps the tokens it needs (pending_revocations, encrypted as stored) and is tried again with a
growing pause, WEARSYNC_REVOKE_MAX_TRIES tries in all; only then are those tokens dropped. The
answer of a disconnect says which: `revocation` is `revoked`, `retrying`, `failed` (the provider
refused it for good), `not_offered` (the provider has no way to revoke) or `shared` (not asked:
another application's connection uses the account, and our grant upstream is one for all)."""

import asyncio
from typing import Any

import asyncpg
import structlog

from wearsync.db import connections, revocations
from wearsync.deps import Deps, connection_context, credentials_for
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection
from wearsync.providers.errors import ProviderError, RateLimited, UpstreamError

log = structlog.get_logger(__name__)

REVOKE_TIMEOUT_S = 10.0  # a disconnect waits no longer for the provider
FIRST_RETRY_S, LONGEST_RETRY_S = 60.0, 3600.0


async def revoke_upstream(deps: Deps, row: asyncpg.Record, *, kept: bool = False) -> tuple[str | None, bool]:
    """Withdraw our access to a connection's account at the provider: (None, False) when that
    happened, else (why not, whether trying again may succeed). `kept`: the tokens of a revocation
    tried again, used as they are: refreshing them would take the tokens the user's connection
    holds now, perhaps of an account connected since."""
    provider = PROVIDERS[row["provider"]]
    if provider.revoke is None:
        return f"{provider.name} offers no way to revoke access", False
    connection = Connection.from_row(row, deps.settings.cipher())
    credentials = credentials_for(deps, provider, connection)
    credentials.refreshable = not kept
    ctx = connection_context(deps, provider, connection, credentials)
    ctx.bucket = None  # out of turn: see the module's docstring
    may_pass = False
    try:
        async with asyncio.timeout(REVOKE_TIMEOUT_S):
            await provider.revoke(ctx)
    except TimeoutError:
        reason, may_pass = f"{provider.name} did not answer within {REVOKE_TIMEOUT_S:.0f} s", True
    except RateLimited as e:
        reason, may_pass = str(e)[:300], True
    except UpstreamError as e:
        reason, may_pass = str(e)[:300], e.status is None or e.status >= 500
    except ProviderError as e:
        reason = str(e)[:300]
    else:
        log.info("access revoked upstream", provider=provider.name, user_id=str(row["user_id"]))
        return None, False
    log.warning("revoking access upstream failed", provider=provider.name, user_id=str(row["user_id"]), error=reason)
    return reason, may_pass


SHARED_GRANT = "access kept upstream: another application's connection uses it (one grant to wearsync's client)"


async def shared(deps: Deps, row: asyncpg.Record) -> bool:
    """Whether another active connection (another application's) uses the connection's account:
    our access upstream is one grant to our client, whichever application connected the account,
    so revoking it would cut that connection off too. The last one to let go revokes."""
    others = await connections.connections_by_upstream_user(deps.db, row["provider"], row["provider_user_id"])
    return any(other["user_id"] != row["user_id"] for other in others)


async def disconnect(deps: Deps, row: asyncpg.Record) -> dict[str, object]:
    """Withdraw our access to a connection's account at the provider, then deactivate the
    connection, also where revoking made the provider refuse the token (and so deactivated it
    already); a revocation that may succeed later keeps the tokens it needs. Whether the provider
    was told, and if not, why and what happens next."""
    if await shared(deps, row):
        await connections.deactivate_connection(
            deps.db, row["user_id"], row["provider"], "disconnected", only_active=False
        )
        return {"upstream_revoked": False, "upstream_error": SHARED_GRANT, "revocation": "shared"}
    error, may_pass = await revoke_upstream(deps, row)
    retrying = may_pass and deps.settings.revoke_max_tries > 1
    async with deps.db.acquire() as conn, conn.transaction():
        await connections.deactivate_connection(
            conn, row["user_id"], row["provider"], "disconnected", only_active=False
        )
        if retrying:
            assert error is not None
            await revocations.keep(conn, row["user_id"], row["provider"], error, FIRST_RETRY_S)
    if error is None:
        revocation = "revoked"
    elif retrying:
        revocation = "retrying"
    else:
        revocation = "not_offered" if PROVIDERS[row["provider"]].revoke is None else "failed"
    return {"upstream_revoked": error is None, "upstream_error": error, "revocation": revocation}


async def retry_revocations(ctx: dict[str, Any]) -> dict[str, int]:
    """Try again the revocations whose next try is due (a worker's cron job, every minute)."""
    deps: Deps = ctx["deps"]
    outcomes = {"revoked": 0, "retrying": 0, "given_up": 0, "superseded": 0}
    for row in await revocations.claim_due(deps.db, hold_s=REVOKE_TIMEOUT_S * 6):
        where = {"provider": row["provider"], "user_id": str(row["user_id"]), "tries": row["tries"] + 1}
        if await revocations.reconnected_since(deps.db, row) or await shared(deps, row):
            outcome = "superseded"
        else:
            error, may_pass = await revoke_upstream(deps, row, kept=True)
            if error is None:
                outcome = "revoked"
            elif may_pass and row["tries"] + 1 < deps.settings.revoke_max_tries:
                pause = min(LONGEST_RETRY_S, FIRST_RETRY_S * 2 ** row["tries"])
                await revocations.retry_later(deps.db, row["id"], error, pause)
                outcomes["retrying"] += 1
                continue
            else:
                outcome = "given_up"
                log.error("revoking access upstream given up: its tokens are dropped", error=error, **where)
        await revocations.drop(deps.db, row["id"])
        outcomes[outcome] += 1
    return outcomes
