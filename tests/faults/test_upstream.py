"""The upstream misbehaves in the middle of a sync: it times out, answers 5xx, cuts connections,
sends a body cut short, malformed or empty, or changes a record between pages. The real worker
syncs against the simulators over sockets; each fault is either retried (the task succeeds and the
stored rows are exactly the simulator's records: none lost, none twice, each as served now) or
reported as a failure of the data type that names what happened, after a bounded number of calls:
never a task that claims success with pages missing, never a retry loop."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Factory, sim_records, start_sync, start_worker, wait_for_task
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Listing:
    """One provider's workout list, as a sync pages it."""

    provider: str
    path: str  # the list's path upstream (a fault's path prefix)
    history: dict[str, int]
    settings: dict[str, Any]  # what keeps the list a few pages long
    served: Callable[[dict[str, Any]], dict[str, Any]]  # the simulator's records -> {record id: raw}


LISTINGS = {
    # Offset pages of 50, four in flight.
    "suunto": Listing("suunto", "/v3/workouts", {"workouts": 300}, {},
                      lambda r: {w["workoutKey"]: w for w in r["workouts"]}),
    # Numbered pages of 200, side by side.
    "strava": Listing("strava", "/api/v3/athlete/activities", {"workouts": 450}, {},
                      lambda r: {str(a["id"]): a for a in r["activities"]}),
    # Three ranges, each paged sequentially by next tokens.
    "whoop": Listing("whoop", "/developer/v2/activity/workout", {"workouts": 300, "days_247": 120},
                     {"whoop_history_days": 125, "whoop_range_days": 45},
                     lambda r: {str(w["id"]): w for w in r["workout"]}),
}  # fmt: skip
QUERY = {"suunto": "data_type=workouts&limit=50", "strava": "", "whoop": "data_type=workouts"}


def fast(settings: Settings, listing: Listing) -> Settings:
    """Upstream calls give up after a second (a hung call costs that), retried twice, quickly."""
    update = {"http_timeout_s": 1, "http_retries": 2, "http_backoff_s": 0.01, "schedule_interval_s": 0}
    return settings.replace(**update, **listing.settings)


async def stored(db: asyncpg.Pool, user_id: str, provider: str) -> dict[str, Any]:
    rows = await db.fetch(
        "SELECT provider_record_id, raw FROM workouts WHERE user_id = $1::uuid AND provider = $2", user_id, provider
    )
    return {r["provider_record_id"]: r["raw"] for r in rows}


def list_calls(sim_state: SimState, listing: Listing) -> list[dict[str, Any]]:
    return [r for r in sim_state.requests if r["provider"] == listing.provider and r["path"].startswith(listing.path)]


async def sync_with_faults(
    client: Client, factory: Factory, settings: Settings, sim_state: SimState, listing: Listing, *faults: Fault
) -> tuple[dict[str, Any], str, str]:
    """(final task, user id, simulated user) of a workout sync with these faults injected."""
    key, user_id, sim_user = await factory.connected_user(listing.provider)
    sim_state.provider(listing.provider).user_history[sim_user] = listing.history
    sim_state.faults.extend(faults)
    async with start_worker(fast(settings, listing)):
        task_id = await start_sync(client, key, listing.provider, user_id, QUERY[listing.provider])
        task = await wait_for_task(client, key, task_id)
    return task, user_id, sim_user


TRANSIENT: dict[str, dict[str, Any]] = {
    "timeout": {"kind": "timeout"},
    "5xx burst": {"kind": "status", "status": 503},
    "502 burst": {"kind": "status", "status": 502},
    "cut connection": {"kind": "cut"},
    "truncated body": {"kind": "truncated"},
    "malformed JSON": {"kind": "malformed"},
    "empty body": {"kind": "empty"},
}


@pytest.mark.parametrize("fault", TRANSIENT)
@pytest.mark.parametrize("provider", LISTINGS)
async def test_a_passing_fault_mid_list_is_retried_and_nothing_is_lost(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState,
    sim_server: TestServer, provider: str, fault: str,
) -> None:  # fmt: skip
    listing = LISTINGS[provider]
    # Two failures in a row from the third list call on: one call may take both and still land
    # on its third try (two retries).
    injected = Fault(listing.provider, listing.path, skip=2, count=2, **TRANSIENT[fault])
    task, user_id, sim_user = await sync_with_faults(client, factory, settings, sim_state, listing, injected)

    assert task["status"] == "succeeded", task
    assert task["attempts"] == 1, task
    assert injected.count == 0, "both faults were served"
    served = listing.served(await sim_records(sim_server, provider, sim_user))
    assert len(served) == listing.history["workouts"]
    assert await stored(db, user_id, provider) == served  # none lost, none twice, each as served
    assert task["progress"]["workouts"]["records"] == {"workouts": len(served)}


@pytest.mark.parametrize("fault", TRANSIENT)
@pytest.mark.parametrize("provider", LISTINGS)
async def test_a_lasting_fault_mid_list_fails_the_data_type_clearly(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState,
    sim_server: TestServer, provider: str, fault: str,
) -> None:  # fmt: skip
    listing = LISTINGS[provider]
    injected = Fault(listing.provider, listing.path, skip=2, count=-1, **TRANSIENT[fault])
    task, user_id, sim_user = await sync_with_faults(client, factory, settings, sim_state, listing, injected)

    # The one data type failed, saying which and why; the task did not claim the pages it lacks.
    assert task["status"] == "failed", task
    assert task["result"] == {"workouts": False}, task
    assert task["attempts"] == 1, "failed once, not retried in a loop"
    progress = task["progress"]["workouts"]
    assert progress["status"] == "failed", progress
    assert task["error"].startswith("workouts: "), task["error"]
    assert listing.path in task["error"], task["error"]
    what = {"timeout": "TimeoutError", "5xx burst": "HTTP 503", "502 burst": "HTTP 502",
            "cut connection": "ServerDisconnectedError", "truncated body": "ClientPayloadError",
            "malformed JSON": "malformed JSON", "empty body": "empty body"}[fault]  # fmt: skip
    assert what in task["error"], task["error"]
    assert progress["error"] == task["error"].removeprefix("workouts: ")
    # What was stored is real and counted.
    rows = await stored(db, user_id, provider)
    served = listing.served(await sim_records(sim_server, provider, sim_user))
    assert rows.items() <= served.items()
    assert 0 < len(rows) < len(served)
    assert progress["records"].get("workouts", 0) == len(rows)
    # Calls in flight (at most 4) three times each, some twice over: aiohttp itself sends a GET
    # again once when the server cut a connection it reused.
    failed = [r for r in list_calls(sim_state, listing) if str(r["status"]).startswith("fault:")]
    assert 3 <= len(failed) <= 4 * 3 * (2 if fault == "cut connection" else 1), len(failed)


async def test_a_workout_changed_between_suunto_pages_is_not_lost(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    """Suunto lists by modification time: a workout changed while the list is paged moves from its
    head to its tail, so every later offset shifts by one and one workout falls between two pages
    already cut. The sync notices (the moved workout comes back on a second page) and lists again."""
    listing = LISTINGS["suunto"]
    # The third list call (the first page was fetched alone, before) sees the change first.
    change = {"kind": "update", "changes": {"name": "renamed mid-sync"}}
    injected = Fault("suunto", listing.path, "event", skip=2, event=change)
    task, user_id, sim_user = await sync_with_faults(client, factory, settings, sim_state, listing, injected)

    assert injected.count == 0, "the change happened"
    assert task["status"] == "succeeded", task
    served = listing.served(await sim_records(sim_server, "suunto", sim_user))
    rows = await stored(db, user_id, "suunto")
    assert sorted(set(served) - set(rows)) == [], "workouts lost"
    assert rows == served  # each as served now: the renamed one renamed
    assert [w["name"] for w in rows.values()].count("renamed mid-sync") == 1
    assert task["progress"]["workouts"]["records"] == {"workouts": len(served)}
    assert len(list_calls(sim_state, listing)) >= 2 * 7, "listed again: 6 full pages and the empty one"


async def test_an_activity_uploaded_between_strava_pages_is_not_lost(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    """Strava lists newest first: an activity uploaded while the list is paged pushes every later
    activity one place back, so the pages still to come repeat one, and the new one is on a page
    already read. The sync notices (an activity on two pages) and lists again."""
    listing = LISTINGS["strava"]
    injected = Fault("strava", listing.path, "event", skip=1, event={"kind": "create"})
    task, user_id, sim_user = await sync_with_faults(client, factory, settings, sim_state, listing, injected)

    assert injected.count == 0, "the upload happened"
    assert task["status"] == "succeeded", task
    served = listing.served(await sim_records(sim_server, "strava", sim_user))
    assert len(served) == listing.history["workouts"] + 1
    rows = await stored(db, user_id, "strava")
    assert sorted(set(served) - set(rows)) == [], "activities lost"
    assert rows == served
    assert task["progress"]["workouts"]["records"] == {"workouts": len(served)}
    assert len(list_calls(sim_state, listing)) >= 3 + 3, "listed again"


async def test_a_list_that_keeps_moving_fails_the_data_type_after_three_readings(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool, sim_state: SimState, sim_server: TestServer
) -> None:
    listing = LISTINGS["suunto"]
    change = {"kind": "update", "changes": {"name": "renamed again"}}
    injected = Fault("suunto", listing.path, "event", skip=1, count=-1, event=change)  # every call from the second
    task, _, _ = await sync_with_faults(client, factory, settings, sim_state, listing, injected)

    assert task["status"] == "failed", task
    assert task["attempts"] == 1, task
    assert task["error"].startswith("workouts: record "), task["error"]
    assert "the list moved while it was paged, 3 times in a row" in task["error"], task["error"]
    assert task["progress"]["workouts"]["status"] == "failed"
    assert len(list_calls(sim_state, listing)) <= 3 * 8, "three readings, then it gave up"
