"""`make soak`'s webhook deliveries: every provider's webhook registered with its simulator as an
operator would (wearsync.dev's demo set-up), half the Garmin users' backfills delivered by ping
(the callback then fetched, through the simulators' injected errors) and half by push, and each
round a new workout upstream for every Strava user (an event: the activity is fetched) and every
Suunto user (a notification carrying the workout, or for every other user only naming it: fetched).
The soak's checks then find each of these records stored exactly once, like the synced ones."""

from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from bench.harness import Deployment, Run
from wearsync.dev import _subscribe_webhooks

# Upstream events each round: provider -> the event bodies, by the user's place among that
# provider's users (the simulators' `emit`).
ROUND_EVENTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "strava": lambda i: {"kind": "create"},
    "suunto": lambda i: {"kind": "create", "embedded": i % 2 == 0},
}


async def register_webhooks(run: Run, dep: Deployment) -> None:
    """Every provider's webhook pointed at the deployment's API (Strava's by its push subscription)."""
    await _subscribe_webhooks(run.session, dep.api_url, run.sim.url, run.env)


async def ping_half(run: Run, garmin_users: list[str]) -> None:
    """Every other Garmin user's backfills delivered by ping, the rest by push."""
    for user in garmin_users[1::2]:
        await event(run, "garmin", user, {"kind": "delivery_mode", "mode": "ping"})


async def event(run: Run, provider: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Something happens upstream for the simulated user (its simulator's `emit`)."""
    async with run.session.post(f"{run.sim.url}/_sim/{provider}/users/{user}/events", json=body) as resp:
        if resp.status != 200:
            raise aiohttp.ClientError(f"{provider} event for {user}: {resp.status} {await resp.text()}")
        emitted: dict[str, Any] = await resp.json()
        return emitted


async def emit_round_events(run: Run, users: dict[str, list[str]]) -> Counter[str]:
    """This round's upstream events (ROUND_EVENTS) for the simulated users of each provider; the
    deliveries by "provider status" (a delivery the API refused or never answered is not 200)."""
    sent = Counter[str]()
    for provider, body in ROUND_EVENTS.items():
        for i, user in enumerate(users.get(provider, [])):
            emitted = await event(run, provider, user, body(i))
            sent[f"{provider} {emitted.get('delivery_status')}"] += 1
    return sent


async def event_counts(run: Run) -> dict[str, Counter[str]]:
    """The webhook events stored: "provider kind" -> status -> events."""
    counts: dict[str, Counter[str]] = {}
    query = "SELECT provider, kind, status, count(*) AS n FROM webhook_events GROUP BY provider, kind, status"
    for row in await run.db.fetch(query):
        counts.setdefault(f"{row['provider']} {row['kind']}", Counter())[row["status"]] += row["n"]
    return counts
