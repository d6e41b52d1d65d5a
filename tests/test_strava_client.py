"""Edge cases of the Strava client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_strava.py; here storage is a list."""

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from tests.clients import RecordingContext, recording_context, sent
from wearsync.providers import strava
from wearsync.providers.core import WebhookEvent
from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.records import Workout
from wearsync.settings import Settings

API = "https://strava.test"
ACTIVITIES = re.compile(r"^https://strava\.test/api/v3/athlete/activities\?.*$")
STARTED = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)  # when the task first started


def make_ctx(
    http: HttpClient, concurrency: int = 3, done: Mapping[str, int] | None = None, started: datetime = STARTED
) -> RecordingContext:
    settings = Settings(strava_api_url=API, strava_page_concurrency=concurrency)
    return recording_context(strava.PROVIDER, http, settings, done=done, started_at=started, provider_user_id="12345")


def activity(activity_id: int, **fields: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "id": activity_id,
        "sport_type": "Run",
        "type": "Run",
        "start_date": "2026-02-01T07:00:00Z",
        "elapsed_time": 3600,
    }
    return a | fields


def paged(served: dict[int, list[dict[str, Any]]], asked: list[dict[str, Any]]) -> Any:
    """An aioresponses callback serving `served[page]` (else an empty page), recording each query."""

    def callback(url: URL, **kwargs: Any) -> CallbackResult:
        asked.append(dict(kwargs["params"]) | {"auth": kwargs["headers"]["Authorization"]})
        page = served.get(int(kwargs["params"]["page"]), [])
        return CallbackResult(body=json.dumps(page), content_type="application/json")

    return callback


async def test_empty_history_costs_one_call_with_the_fixed_range(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    asked: list[dict[str, Any]] = []
    with upstream() as m:
        m.get(ACTIVITIES, callback=paged({}, asked), repeat=True)
        await strava.sync_workouts(ctx)
    assert ctx.pages == []
    assert asked == [
        {"before": int(STARTED.timestamp()), "after": 0, "per_page": 200, "page": 1, "auth": "Bearer token-1"}
    ]


async def test_pages_of_200_until_a_short_page_each_stored_under_its_number(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, concurrency=3)
    served = {1: [activity(i) for i in range(200)], 2: [activity(i) for i in range(200, 400)], 3: [activity(400)]}
    asked: list[dict[str, Any]] = []
    with upstream() as m:
        m.get(ACTIVITIES, callback=paged(served, asked), repeat=True)
        await strava.sync_workouts(ctx)
    assert sorted(ctx.ids(), key=int) == [str(i) for i in range(401)]
    assert sorted(ctx.page_keys, key=str) == [("page:1", 200), ("page:2", 200), ("page:3", 1)]
    pages = [q["page"] for q in asked]
    assert pages[0] == 1  # alone, until a full page shows there is more
    assert sorted(pages)[:3] == [1, 2, 3]
    assert max(pages) <= 3 + 2  # at most the pages already in flight when page 3 came back short
    assert {q["before"] for q in asked} == {int(STARTED.timestamp())}


async def test_pages_stored_by_an_earlier_run_are_not_fetched_again(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, concurrency=2, done={"page:1": 200, "page:2": 200})
    asked: list[dict[str, Any]] = []
    with upstream() as m:
        m.get(ACTIVITIES, callback=paged({3: [activity(1), activity(2)]}, asked), repeat=True)
        await strava.sync_workouts(ctx)
    assert 1 not in {q["page"] for q in asked}
    assert 2 not in {q["page"] for q in asked}
    assert ctx.page_keys == [("page:3", 2)]
    # An earlier run that stored the last (short) page has nothing left to ask.
    ctx = make_ctx(http, done={"page:1": 200, "page:2": 17})
    with upstream() as m:
        m.get(ACTIVITIES, callback=paged({}, asked := []), repeat=True)
        await strava.sync_workouts(ctx)
    assert (asked, ctx.pages) == ([], [])


async def test_a_task_started_now_lists_until_now(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, started=datetime.now(UTC))
    asked: list[dict[str, Any]] = []
    with upstream() as m:
        m.get(ACTIVITIES, callback=paged({}, asked), repeat=True)
        await strava.sync_workouts(ctx)
    assert abs(asked[0]["before"] - time.time()) < 5


def test_full_ride_maps_every_field() -> None:
    raw = activity(
        9_876_543_210,
        name="Evening Ride",
        sport_type="GravelRide",
        type="Ride",
        start_date="2026-02-01T16:30:00Z",
        start_date_local="2026-02-01T17:30:00Z",
        timezone="(GMT+01:00) Europe/Paris",
        utc_offset=3600.0,
        elapsed_time=5400,
        moving_time=5000,
        distance=40_123.4,
        total_elevation_gain=512.5,
        average_speed=8.02,
        max_speed=15.3,
        has_heartrate=True,
        average_heartrate=141.2,
        max_heartrate=177.0,
        kilojoules=980.4,
        average_watts=196.1,
        max_watts=850,
        average_cadence=86.5,
        elev_high=640.2,
        elev_low=120.0,
        device_name="Garmin Edge 540",
        manual=False,
    )
    w = strava.map_activity(raw)
    start = datetime(2026, 2, 1, 16, 30, tzinfo=UTC)
    assert (w.provider_record_id, w.sport, w.provider_sport, w.name) == (
        "9876543210",
        "gravel_cycling",
        "GravelRide",
        "Evening Ride",
    )
    assert (w.start_time, w.end_time, w.duration_s, w.utc_offset_minutes) == (
        start,
        start + timedelta(seconds=5400),
        5400.0,
        60,
    )
    assert (w.distance_m, w.ascent_m, w.max_altitude_m, w.min_altitude_m) == (40_123.4, 512.5, 640.2, 120.0)
    assert (w.avg_speed_mps, w.max_speed_mps, w.avg_hr, w.max_hr) == (8.02, 15.3, 141.2, 177.0)
    assert (w.avg_power_w, w.max_power_w, w.avg_cadence, w.device_name) == (196.1, 850.0, 86.5, "Garmin Edge 540")
    assert w.energy_kcal == 980.4  # kilojoules of work, ~ kcal burned
    assert (w.steps, w.min_hr, w.descent_m, w.max_cadence) == (None, None, None, None)
    assert w.raw is raw


def test_manual_entry_without_optional_fields() -> None:
    raw = {"id": 5, "sport_type": "Yoga", "start_date": "2026-02-01T07:00:00Z", "elapsed_time": 1800, "manual": True}
    w = strava.map_activity(raw)
    assert (w.sport, w.end_time - w.start_time) == ("yoga", timedelta(minutes=30))
    assert (w.name, w.utc_offset_minutes, w.distance_m, w.energy_kcal, w.avg_hr, w.device_name) == (None,) * 6


def test_unknown_sport_type_is_other_and_legacy_type_is_a_fallback() -> None:
    w = strava.map_activity(activity(1, sport_type="Paragliding", type="Workout"))
    assert (w.sport, w.provider_sport) == ("other", "Paragliding")
    legacy = activity(2, type="Hike")
    del legacy["sport_type"]
    assert (strava.map_activity(legacy).sport, strava.map_activity(legacy).provider_sport) == ("hiking", "Hike")
    assert strava.map_activity(activity(3, sport_type="VirtualRide")).sport == "indoor_cycling"


def test_energy_prefers_calories_then_kilojoules() -> None:
    assert strava.map_activity(activity(1, calories=712.0, kilojoules=650.0)).energy_kcal == 712.0
    assert strava.map_activity(activity(1, calories=0.0, kilojoules=650.0)).energy_kcal == 650.0  # 0: no estimate
    assert strava.map_activity(activity(1, calories=0.0)).energy_kcal is None


def test_offsets_in_seconds_become_minutes() -> None:
    assert strava.map_activity(activity(1, utc_offset=19800.0)).utc_offset_minutes == 330  # India, +05:30
    assert strava.map_activity(activity(1, utc_offset=-25200.0)).utc_offset_minutes == -420
    offset_start = strava.map_activity(activity(1, start_date="2026-02-01T07:00:00+00:00"))
    assert offset_start.start_time == datetime(2026, 2, 1, 7, tzinfo=UTC)


async def test_an_answer_that_is_not_a_list_fails_the_type(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(ACTIVITIES, payload={"message": "Resource Not Found", "errors": []}, repeat=True)
        with pytest.raises(MalformedPayload, match="returned no activity list"):
            await strava.sync_workouts(ctx)


async def test_a_record_without_its_id_fails_the_type_and_stores_nothing(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    broken = activity(2)
    del broken["id"]
    with upstream() as m:
        m.get(ACTIVITIES, payload=[activity(1), broken], repeat=True)
        with pytest.raises(MalformedPayload, match=r"unreadable record.*'id'"):
            await strava.sync_workouts(ctx)
    assert ctx.pages == []


async def test_malformed_json_is_retried_then_reported(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(ACTIVITIES, body='[{"id": 1, "na', content_type="application/json", repeat=True)
        with pytest.raises(MalformedPayload, match="malformed JSON"):
            await strava.sync_workouts(ctx)


async def test_5xx_then_success_and_401_then_fresh_token(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(ACTIVITIES, status=503, body="busy")
        m.get(ACTIVITIES, status=401, body='{"message": "Authorization Error"}')
        m.get(ACTIVITIES, payload=[activity(1)], repeat=True)
        await strava.sync_workouts(ctx)
    assert ctx.ids() == ["1"]
    assert (ctx.credentials.access_token, ctx.credentials.refreshes) == ("token-2", 1)
    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(ACTIVITIES, status=401, body='{"message": "Authorization Error"}', repeat=True)
        with pytest.raises(UpstreamAuthError, match="HTTP 401"):
            await strava.sync_workouts(ctx)
    assert ctx.credentials.refreshes == 1  # one refresh, no loop


def _distance_to_boundary(instant: float, window_s: int) -> float:
    return abs(instant - round(instant / window_s) * window_s)


@pytest.mark.parametrize(
    ("overall", "read", "window_s"),
    [("101,400", "101,400", 900), ("60,700", "101,400", 900), ("100,1000", "100,1000", 86400),
     ("37,1001", "37,1001", 86400), ("40,900", "30,1000", 86400), ("200,2000", "90,900", 86400),
     ("150,1200", "80,800", 900)],
    ids=["15-minute read limit: next quarter hour", "read 15-minute only: next quarter hour",
         "both used up: midnight", "daily: midnight", "daily read limit only: midnight",
         "overall daily limit: midnight", "nothing shown used up: next quarter hour"],
)  # fmt: skip
async def test_a_429_with_stravas_usage_headers_waits_until_its_window_ends(
    upstream: type[aioresponses], overall: str, read: str, window_s: int
) -> None:
    """Strava's 429 has no Retry-After: the wait is read from its usage headers, as documented
    (developers.strava.com/docs/rate-limits): overall 200 per 15 minutes and 2,000 a day, reads
    100 and 1,000, each "15-minute,daily". Nothing is slept through here (max_inline_wait_s=0), so
    the RateLimited carries the wait for the job's deferral."""
    async with aiohttp.ClientSession() as session:
        ctx = make_ctx(HttpClient(session, retries=0, max_inline_wait_s=0.0))
        headers = {
            "X-RateLimit-Limit": "200,2000",
            "X-RateLimit-Usage": overall,
            "X-ReadRateLimit-Limit": "100,1000",
            "X-ReadRateLimit-Usage": read,
        }
        body = {"message": "Rate Limit Exceeded", "errors": [{"resource": "Application", "code": "exceeded"}]}
        with upstream() as m:
            m.get(ACTIVITIES, status=429, headers=headers, payload=body, repeat=True)
            with pytest.raises(RateLimited, match="Rate Limit Exceeded") as raised:
                await strava.sync_workouts(ctx)
    ends = time.time() + raised.value.retry_after_s
    assert 0 < raised.value.retry_after_s <= window_s
    assert _distance_to_boundary(ends, window_s) < 1, "the wait does not end on the window's boundary"


# ---- webhook events: what processing one fetches and stores ----------------------------------


def strava_event(aspect: str, object_id: int = 77, object_type: str = "activity", **updates: str) -> WebhookEvent:
    (parsed,) = strava.parse_webhook({"object_type": object_type, "object_id": object_id, "aspect_type": aspect,
                                    "owner_id": 12345, "subscription_id": 9, "event_time": 1_790_000_000,
                                    "updates": updates})  # fmt: skip
    return parsed


async def test_a_created_activity_is_fetched_in_detail_and_stored_with_its_calories(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    detail = activity(77, resource_state=3, calories=612.5, kilojoules=580.0, name="Lunch Ride")
    with upstream() as m:
        m.get(f"{API}/api/v3/activities/77", payload=detail)
        await strava.process_webhook(ctx, strava_event("create"))
        assert [(method, str(url)) for method, url, _ in sent(m)] == [("GET", f"{API}/api/v3/activities/77")]
    ((key, (row,), items),) = ctx.saved
    assert (key, items) == (None, 0)  # not a sync page
    assert isinstance(row, Workout)
    assert (row.provider_record_id, row.name, row.energy_kcal, row.raw) == ("77", "Lunch Ride", 612.5, detail)


async def test_an_activity_gone_or_private_stores_nothing_and_other_failures_fail_the_event(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    not_found = {"message": "Record Not Found", "errors": [{"resource": "Activity", "field": "id", "code": "invalid"}]}
    with upstream() as m:
        m.get(f"{API}/api/v3/activities/77", status=404, payload=not_found)
        await strava.process_webhook(ctx, strava_event("update", title="Private now"))
        m.get(f"{API}/api/v3/activities/78", status=503, body="busy", repeat=True)
        with pytest.raises(UpstreamError, match="HTTP 503"):
            await strava.process_webhook(ctx, strava_event("create", 78))
        m.get(f"{API}/api/v3/activities/79", payload=["not", "an", "activity"])
        with pytest.raises(MalformedPayload, match="returned no activity"):
            await strava.process_webhook(ctx, strava_event("create", 79))
    assert ctx.saved == []


async def test_athlete_events_other_than_a_deauthorization_do_nothing(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)  # its db is None: touching it would fail
    with upstream() as m:
        for parsed in (strava_event("update", 12345, "athlete", authorized="true"),
                       strava_event("update", 12345, "athlete"), strava_event("create", 5, "club")):  # fmt: skip
            await strava.process_webhook(ctx, parsed)
        assert sent(m) == []
    assert ctx.saved == []
