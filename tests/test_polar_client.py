"""Edge cases of the Polar client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_polar.py; here storage is replaced by a list."""

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses

from tests.clients import RecordingContext, recording_context, sent
from wearsync.models import RateLimit, SyncParams
from wearsync.providers import polar
from wearsync.providers.errors import MalformedPayload, UpstreamAuthError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.records import Sample, Workout
from wearsync.settings import Settings
from wearsync.sim import polar as sim_polar

API = "https://polar.test/api"
USERS = f"{API}/v3/users"
EXERCISES = re.compile(r"^https://polar\.test/api/v3/exercises\?.*$")


def make_ctx(http: HttpClient, done: Mapping[str, int] | None = None, **params: Any) -> RecordingContext:
    return recording_context(polar.PROVIDER, http, Settings(polar_api_url=API), params=SyncParams(**params),
                             done=done, provider_user_id="12345678", refresh_token=None)  # fmt: skip


def exercise(n: int = 1, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": f"EX{n}",
        "upload_time": "2026-11-01T09:00:00Z",
        "polar_user": "https://www.polaraccesslink.com/v3/users/12345678",
        "device": "Polar Vantage V3",
        "start_time": "2026-11-01T07:30:00",
        "start_time_utc_offset": 120,
        "duration": "PT1H2M3.5S",
        "calories": 640,
        "distance": 10123.4,
        "heart_rate": {"average": 142, "maximum": 171},
        "sport": "RUNNING",
        "detailed_sport_info": "RUNNING",
    }
    return e | fields


async def test_registers_then_fetches_once_with_the_flags(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, samples=True, zones=False, route=True)
    with upstream() as m:
        m.post(USERS, payload={"polar-user-id": 12345678, "member-id": f"{ctx.connection.user_id}_12345678"})
        m.get(EXERCISES, payload=[exercise(1), exercise(2)])
        await polar.sync_workouts(ctx)
        calls = sent(m)
    assert [(method, url.path) for method, url, _ in calls] == [("POST", "/api/v3/users"), ("GET", "/api/v3/exercises")]
    register, fetch = calls[0][2], calls[1][2]
    assert register["json"] == {"member-id": f"{ctx.connection.user_id}_12345678"}  # user and Polar account
    assert register["headers"]["Authorization"] == fetch["headers"]["Authorization"] == "Bearer token-1"
    assert register["headers"]["Accept"] == fetch["headers"]["Accept"] == "application/json"  # not XML
    assert fetch["params"] == {"samples": "true", "zones": "false", "route": "true"}
    assert ctx.ids() == ["EX1", "EX2"]
    assert ctx.page_keys == [("exercises", 2)]
    assert ctx.pages_total == 1


async def test_already_registered_409_is_fine(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, status=409, payload={"status": 409, "errorType": "Conflict", "message": "already registered"})
        m.get(EXERCISES, payload=[exercise()])
        await polar.sync_workouts(ctx)
        calls = sent(m)
    assert len(calls) == 2  # no retry of the registration
    assert ctx.ids() == ["EX1"]
    assert sent(m)[1][2]["params"] == {"samples": "false", "zones": "false", "route": "false"}


async def test_a_refused_registration_fails_before_any_data_call(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, status=400, body='{"message": "member-id is required"}')
        with pytest.raises(UpstreamError, match=r"POST .*/v3/users failed: HTTP 400: .*member-id"):
            await polar.sync_workouts(ctx)
        assert [method for method, _, _ in sent(m)] == ["POST"]
    assert ctx.pages == []


async def test_403_not_registered_fails_without_a_refresh(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, payload={})
        m.get(EXERCISES, status=403, body='{"errorType": "Forbidden"}', repeat=True)
        with pytest.raises(UpstreamAuthError, match="HTTP 403"):
            await polar.sync_workouts(ctx)
    assert ctx.credentials.refreshes == 0


async def test_an_account_registered_before_is_not_registered_again(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    ctx.cursor = {"registered": "12345678"}
    with upstream() as m:
        m.get(EXERCISES, payload=[exercise()])
        await polar.sync_workouts(ctx)
        assert [method for method, _, _ in sent(m)] == ["GET"]
    assert ctx.new_cursor == {"registered": "12345678"}


@pytest.mark.parametrize("cursor", [{"registered": "87654321"}, {"registered": True}, {}])
async def test_another_account_or_an_older_cursor_is_registered(
    http: HttpClient, upstream: type[aioresponses], cursor: dict[str, Any]
) -> None:
    ctx = make_ctx(http)
    ctx.cursor = cursor
    with upstream() as m:
        m.post(USERS, status=409, body="already registered")
        m.get(EXERCISES, payload=[])
        await polar.sync_workouts(ctx)
        assert [method for method, _, _ in sent(m)] == ["POST", "GET"]
    assert ctx.new_cursor == {"registered": "12345678"}


async def test_a_registration_gone_since_is_made_again_once(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    ctx.cursor = {"registered": "12345678"}
    with upstream() as m:
        m.get(EXERCISES, status=403, body='{"errorType": "Forbidden"}')
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=[exercise()])
        await polar.sync_workouts(ctx)
        assert sorted(method for method, _, _ in sent(m)) == ["GET", "GET", "POST"]  # sent() groups by URL
    assert ctx.ids() == ["EX1"]


async def test_a_403_that_stays_after_registering_fails_the_type(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    ctx.cursor = {"registered": "12345678"}
    with upstream() as m:
        m.get(EXERCISES, status=403, body='{"message": "User has not accepted all mandatory consents"}', repeat=True)
        m.post(USERS, status=409, body="already registered")
        with pytest.raises(UpstreamAuthError, match=r"HTTP 403: .*consents"):
            await polar.sync_workouts(ctx)
        assert sorted(method for method, _, _ in sent(m)) == ["GET", "GET", "POST"]  # sent() groups by URL
    assert ctx.pages == []


async def test_401_asks_the_credentials_once(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, status=401, body="invalid token")
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=[])
        await polar.sync_workouts(ctx)
        tokens = [kw["headers"]["Authorization"] for _, _, kw in sent(m)]
    assert tokens == ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
    assert ctx.credentials.refreshes == 1


async def test_an_empty_list_stores_an_empty_page(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=[])
        await polar.sync_workouts(ctx)
    assert ctx.pages == [[]]
    assert ctx.page_keys == [("exercises", 0)]  # marked done: a rerun of the task asks nothing


async def test_a_page_stored_by_an_earlier_run_is_not_fetched_again(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, done={"exercises": 12})
    with upstream() as m:
        await polar.sync_workouts(ctx)
        assert sent(m) == []
    assert ctx.pages == []


@pytest.mark.parametrize("body", [{"exercises": []}, "exercises", 17])
async def test_an_answer_that_is_no_list_fails_the_type(
    http: HttpClient, upstream: type[aioresponses], body: Any
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=body)
        with pytest.raises(MalformedPayload, match="returned no exercise list"):
            await polar.sync_workouts(ctx)


async def test_no_content_is_no_exercises(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, status=204)
        m.get(EXERCISES, status=204)
        await polar.sync_workouts(ctx)
    assert ctx.pages == [[]]
    assert ctx.page_keys == [("exercises", 0)]


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ({"duration": "1:02:03"}, "1:02:03"),
        ({"duration": "PT"}, "'PT'"),
        ({"start_time": "yesterday"}, "yesterday"),
        ({"start_time_utc_offset": None}, "start_time_utc_offset is missing"),
        ({"samples": [{"sample-type": "0", "recording-rate": 1, "data": "120,x"}]}, "could not convert"),
        ({"samples": [{"sample-type": "0", "recording-rate": None, "data": "120"}]}, "recording-rate None"),
    ],
)
async def test_an_unreadable_exercise_fails_the_page_naming_it(
    http: HttpClient, upstream: type[aioresponses], broken: dict[str, Any], named: str
) -> None:
    ctx = make_ctx(http, samples=True)
    with upstream() as m:
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=[exercise(1), exercise(2, **broken)])
        with pytest.raises(MalformedPayload, match=rf"unreadable record .*{re.escape(named)}"):
            await polar.sync_workouts(ctx)
    assert ctx.pages == []  # the page is not half-stored


async def test_a_missing_id_fails_the_page(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    broken = exercise()
    del broken["id"]
    with upstream() as m:
        m.post(USERS, payload={})
        m.get(EXERCISES, payload=[broken])
        with pytest.raises(MalformedPayload, match=r"unreadable record \(KeyError: 'id'\)"):
            await polar.sync_workouts(ctx)


async def test_a_429_is_waited_out_and_a_5xx_retried(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.post(USERS, status=503, body="busy")
        m.post(USERS, payload={})
        m.get(EXERCISES, status=429, headers={"Retry-After": "0"}, body="slow down")
        m.get(EXERCISES, payload=[exercise()])
        await polar.sync_workouts(ctx)
        assert len(sent(m)) == 4
    assert ctx.ids() == ["EX1"]


# ---- mapping --------------------------------------------------------------------------------


def test_local_start_and_offset_become_utc_and_the_duration_its_end() -> None:
    (w,) = polar.map_exercise(exercise())
    assert isinstance(w, Workout)
    assert w.start_time == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 07:30 at UTC+2
    assert w.utc_offset_minutes == 120
    assert w.duration_s == 3723.5
    assert w.end_time == w.start_time + timedelta(seconds=3723.5)
    assert (w.sport, w.provider_sport, w.device_name) == ("running", "RUNNING", "Polar Vantage V3")
    assert (w.energy_kcal, w.distance_m, w.avg_hr, w.max_hr) == (640.0, 10123.4, 142.0, 171.0)


def test_a_negative_offset_crosses_midnight() -> None:
    (w,) = polar.map_exercise(exercise(start_time="2026-11-01T21:15:00", start_time_utc_offset=-300))
    assert isinstance(w, Workout)
    assert w.start_time == datetime(2026, 11, 2, 2, 15, tzinfo=UTC)


def test_missing_optional_fields_are_none() -> None:
    raw = exercise()
    for name in ("distance", "heart_rate", "device", "calories"):
        del raw[name]
    (w,) = polar.map_exercise(raw)
    assert isinstance(w, Workout)
    assert (w.distance_m, w.avg_hr, w.max_hr, w.device_name, w.energy_kcal) == (None, None, None, None, None)
    assert w.raw is raw


@pytest.mark.parametrize(
    ("sport", "detailed", "expected"),
    [
        ("CYCLING", "MOUNTAIN_BIKING", ("mountain_biking", "MOUNTAIN_BIKING")),
        ("SKIING", "CROSS-COUNTRY_SKIING", ("cross_country_skiing", "CROSS-COUNTRY_SKIING")),
        ("OTHER", "SLACKLINING", ("other", "SLACKLINING")),  # unknown: other, Polar's name kept
        ("RUNNING", "MOON_RUNNING", ("running", "MOON_RUNNING")),  # unknown detail: the sport decides
        ("CYCLING", None, ("cycling", "CYCLING")),
    ],
)
def test_sports(sport: str, detailed: str | None, expected: tuple[str, str]) -> None:
    (w,) = polar.map_exercise(exercise(sport=sport, detailed_sport_info=detailed))
    assert isinstance(w, Workout)
    assert (w.sport, w.provider_sport) == expected


def test_heart_rate_samples_skip_gaps_and_other_types_stay_in_raw() -> None:
    samples = [
        {"recording-rate": 1, "sample-type": "1", "data": "10.8,11.2"},  # speed: raw only
        {"recording-rate": None, "sample-type": "11", "data": "512,498"},  # RR intervals: no rate, raw only
        {"recording-rate": 5, "sample-type": "0", "data": "120,121,null,123,NULL,,124, "},
    ]
    zones = [{"index": 1, "lower-limit": 110, "upper-limit": 130, "in-zone": "PT4S"}]
    raw = exercise(samples=samples, heart_rate_zones=zones, route=[{"latitude": 60.1, "time": "PT210.026S"}])
    workout, *rows = polar.map_exercise(raw)
    assert isinstance(workout, Workout)
    assert workout.raw["route"] == [{"latitude": 60.1, "time": "PT210.026S"}]
    assert workout.raw["heart_rate_zones"] == zones
    start = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert all(isinstance(r, Sample) for r in rows)
    assert [(r.sample_type, r.recorded_at, r.value) for r in rows if isinstance(r, Sample)] == [
        ("heart_rate", start, 120.0),
        ("heart_rate", start + timedelta(seconds=5), 121.0),
        ("heart_rate", start + timedelta(seconds=15), 123.0),  # index 2 was a gap (null)
        ("heart_rate", start + timedelta(seconds=30), 124.0),  # 4 and 5 were gaps (NULL, empty)
    ]


def test_underscored_series_keys_are_read_too() -> None:
    """Public AccessLink clients also read `sample_type` / `recording_rate`: so does ours."""
    rows = polar.map_exercise(exercise(samples=[{"sample_type": "0", "recording_rate": 2, "data": "99,100"}]))
    assert [(r.recorded_at, r.value) for r in rows[1:] if isinstance(r, Sample)] == [
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), 99.0),
        (datetime(2026, 11, 1, 5, 30, 2, tzinfo=UTC), 100.0),
    ]


def test_empty_heart_rate_series_gives_no_samples() -> None:
    for data in ("", None):
        rows = polar.map_exercise(exercise(samples=[{"sample-type": "0", "recording-rate": 1, "data": data}]))
        assert len(rows) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT1H2M3.5S", 3723.5), ("PT45S", 45.0), ("PT0S", 0.0), ("PT2H", 7200.0), ("P1DT1M", 86460.0), ("PT0.25S", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert polar.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "PT1H2M3.5", "01:02:03", "-PT5S", "P1Y", "PT1.5H", "PTS"])
def test_parse_duration_refuses_what_is_not_one(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        polar.parse_duration(text)


def test_calls_count_against_the_floor_of_accesslinks_limits_as_the_simulator_enforces_them() -> None:
    floor = (RateLimit(500, 15 * 60), RateLimit(5000, 86400))  # 500 + 20 and 5,000 + 100 per user
    assert polar.PROVIDER.bucket(Settings()).limits == floor
    assert [(limit.requests, limit.per_seconds) for limit in floor] == sim_polar.RATE_LIMIT.limits
    assert polar.PROVIDER.bucket(Settings(polar_rate_limits="1000/900")).limits == (RateLimit(1000, 900),)
