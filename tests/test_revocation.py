"""Withdrawing our access upstream at a disconnect or a user's deletion: out of turn in a busy
rate limit, and tried again later, with the tokens kept until then, where the provider failed."""

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from tests.conftest import Factory
from wearsync.api.app import create_app
from wearsync.crypto import PREFIX
from wearsync.deps import Deps
from wearsync.providers import PROVIDERS
from wearsync.providers.ratelimit import RateLimiter
from wearsync.revocation import retry_revocations
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]
WHOOP_REVOKE = "/developer/v2/user/access"


async def test_deleting_a_user_while_the_rate_limit_is_used_up_still_revokes_upstream(
    aiohttp_client: Any, factory: Factory, settings: Settings, sim_state: SimState
) -> None:
    busy = settings.replace(suunto_rate_limits="1/3600")
    api: Client = await aiohttp_client(create_app(busy))
    key, user_id, sim_user = await factory.connected_user("suunto")
    redis = Redis.from_url(settings.redis_url)
    try:  # another sync took the window's last call
        await RateLimiter(redis, prefix=f"{settings.queue_name}:ratelimit").acquire(
            "suunto", PROVIDERS["suunto"].bucket(busy).limits
        )
    finally:
        await redis.aclose()
    resp = await api.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    (connection,) = (await resp.json())["connections"]
    assert connection == {
        "provider": "suunto",
        "upstream_revoked": True,
        "upstream_error": None,
        "revocation": "revoked",
    }
    assert sim_state.revocations == [("suunto", sim_user)]


async def test_a_failed_revocation_keeps_its_tokens_encrypted_and_is_tried_again(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, sim_user = await factory.connected_user("whoop")
    stored = await db.fetchrow("SELECT access_token, refresh_token, provider_user_id FROM provider_connections")
    assert stored is not None
    sim_state.faults.append(Fault("whoop", WHOOP_REVOKE, "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}", headers={"X-API-Key": key})
    assert resp.status == 200, await resp.text()
    (connection,) = (await resp.json())["connections"]
    assert (connection["upstream_revoked"], connection["revocation"]) == (False, "retrying")
    assert "HTTP 502" in connection["upstream_error"]
    assert await db.fetchval("SELECT count(*) FROM users") == 0  # the user is gone ...
    kept = await db.fetchrow("SELECT * FROM pending_revocations")
    assert kept is not None  # ... the tokens revoking needs are not, and stay encrypted
    assert (kept["access_token"], kept["refresh_token"]) == (stored["access_token"], stored["refresh_token"])
    assert kept["access_token"].startswith(PREFIX)
    assert (kept["tries"], kept["provider_user_id"]) == (1, stored["provider_user_id"])
    assert await retry_revocations({"deps": deps}) == {"revoked": 0, "retrying": 0, "given_up": 0, "superseded": 0}

    sim_state.faults.clear()  # Whoop answers again, and the next try is due
    await db.execute("UPDATE pending_revocations SET retry_at = now()")
    outcome = await retry_revocations({"deps": deps})
    assert outcome == {"revoked": 1, "retrying": 0, "given_up": 0, "superseded": 0}
    assert sim_state.revocations == [("whoop", sim_user)]
    assert await db.fetchval("SELECT count(*) FROM pending_revocations") == 0


async def test_a_revocation_failing_past_its_tries_is_given_up_and_its_tokens_dropped(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool, sim_state: SimState
) -> None:
    key, user_id, _ = await factory.connected_user("whoop")
    sim_state.faults.append(Fault("whoop", WHOOP_REVOKE, "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert (await resp.json())["revocation"] == "retrying"
    three_tries = dataclasses.replace(deps, settings=deps.settings.model_copy(update={"revoke_max_tries": 3}))
    await db.execute("UPDATE pending_revocations SET retry_at = now()")
    assert (await retry_revocations({"deps": three_tries}))["retrying"] == 1
    retry_at = await db.fetchval("SELECT retry_at - now() FROM pending_revocations")
    assert retry_at.total_seconds() > 60  # the pause grows
    await db.execute("UPDATE pending_revocations SET retry_at = now()")
    assert (await retry_revocations({"deps": three_tries}))["given_up"] == 1
    assert await db.fetchval("SELECT count(*) FROM pending_revocations") == 0
    assert not sim_state.revocations


async def test_a_revocation_is_not_retried_once_the_account_is_connected_again(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """Revoking with the old tokens could withdraw the new grant too."""
    key, user_id, sim_user = await factory.connected_user("whoop")
    sim_state.faults.append(Fault("whoop", WHOOP_REVOKE, "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert (await resp.json())["revocation"] == "retrying"
    sim_state.faults.clear()
    await factory.connect(key, user_id, "whoop", sim_user)
    await db.execute("UPDATE pending_revocations SET retry_at = now()")
    assert (await retry_revocations({"deps": deps}))["superseded"] == 1
    assert not sim_state.revocations
    assert await db.fetchval("SELECT active FROM provider_connections") is True


async def test_kept_tokens_refused_are_not_refreshed_into_the_users_new_connection(
    client: Client, factory: Factory, deps: Deps, db: asyncpg.Pool, sim_state: SimState
) -> None:
    """The user connected another account since: the connection's row holds its tokens now, and
    a refused old token must not make the retry revoke the new account's grant with them."""
    key, user_id, old_account = await factory.connected_user("whoop")
    sim_state.faults.append(Fault("whoop", WHOOP_REVOKE, "status", 502, count=-1))
    resp = await client.delete(f"/api/v1/users/{user_id}/connections/whoop", headers={"X-API-Key": key})
    assert (await resp.json())["revocation"] == "retrying"
    sim_state.faults.clear()
    await factory.connect(key, user_id, "whoop", "a-new-account")
    sim_state.access_expired_before[("whoop", old_account)] = 2e9  # the kept access token is refused
    await db.execute("UPDATE pending_revocations SET retry_at = now()")
    assert (await retry_revocations({"deps": deps}))["given_up"] == 1
    assert sim_state.revocations == []
    assert await db.fetchval("SELECT active FROM provider_connections") is True
