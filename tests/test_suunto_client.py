"""Edge cases of the Suunto client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_worker.py; here storage is replaced by a list."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from tests.clients import RecordingContext, recording_context, sent
from wearsync.models import DataType, SyncParams
from wearsync.providers import suunto
from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.records import DailyActivity, Sample, Workout
from wearsync.settings import Settings

API = "https://suunto.test/api"
WORKOUTS = re.compile(r"^https://suunto\.test/api/v3/workouts/\?.*$")


def make_ctx(
    http: HttpClient, data_type: DataType = DataType.WORKOUTS, concurrency: int = 3, **params: Any
) -> RecordingContext:
    settings = Settings(suunto_api_url=API, suunto_subscription_key="sub-key", suunto_page_concurrency=concurrency)
    return recording_context(suunto.PROVIDER, http, settings, data_type=data_type, params=SyncParams(**params))


def workout(key: int, **fields: Any) -> dict[str, Any]:
    w: dict[str, Any] = {"workoutKey": f"w{key}", "activityId": 1, "startTime": 1_700_000_000_000 + key * 1000}
    w["stopTime"] = w["startTime"] + 3_600_000
    w["totalTime"] = 3600.0
    return w | fields


async def test_empty_history_costs_one_call_and_stores_nothing(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, limit=100)
    with upstream() as m:
        m.get(WORKOUTS, payload={"error": None, "payload": [], "metadata": {}}, repeat=True)
        await suunto.sync_workouts(ctx)
        calls = sent(m)
    assert ctx.pages == []
    # No speculative pages in parallel before the first one shows there is more.
    assert [kw["params"]["offset"] for _, _, kw in calls] == [0]


async def test_pages_until_a_short_page_with_params_headers_and_units(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, limit=2, since=1_700_000_000, filter_by_modification_time=False)
    served = {0: [workout(1), workout(2)], 2: [workout(3), workout(4)], 4: [workout(5)]}
    with upstream() as m:

        def page(url: URL, **kwargs: Any) -> Any:
            from aioresponses import CallbackResult

            offset = int(kwargs["params"]["offset"])
            return CallbackResult(payload={"error": None, "payload": served.get(offset, [])})

        m.get(WORKOUTS, callback=page, repeat=True)
        await suunto.sync_workouts(ctx)
        calls = sent(m)
    keys = sorted(ctx.ids())
    assert keys == ["w1", "w2", "w3", "w4", "w5"]
    offsets = sorted(kw["params"]["offset"] for _, _, kw in calls)
    assert offsets[:3] == [0, 2, 4]
    # Past the short page's window (which ends at 6), at most `concurrency` (3) speculative calls.
    assert all(o < 6 + 3 * 2 for o in offsets)
    _, _, first = calls[0]
    assert first["params"]["since"] == 1_700_000_000_000  # Unix seconds in, milliseconds upstream
    assert first["params"]["limit"] == 2
    assert first["params"]["filter-by-modification-time"] == "false"
    assert first["headers"]["Authorization"] == "Bearer token-1"
    assert first["headers"]["Ocp-Apim-Subscription-Key"] == "sub-key"


def test_missing_stop_time_and_optional_fields() -> None:
    raw = {"workoutKey": "k1", "activityId": 2, "startTime": 1_700_000_000_000, "totalTime": 1800.5}
    w = suunto.map_workout(raw)
    assert w.start_time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert w.end_time == w.start_time + timedelta(seconds=1800.5)
    assert (w.sport, w.provider_sport, w.duration_s) == ("cycling", "Cycling", 1800.5)
    assert (w.distance_m, w.avg_hr, w.device_name, w.utc_offset_minutes) == (None, None, None, None)
    assert w.raw is raw


def test_unknown_activity_is_other_with_its_original_id() -> None:
    w = suunto.map_workout(workout(1, activityId=999))
    assert (w.sport, w.provider_sport) == ("other", "activityId 999")


def test_workout_units_and_hr_fields() -> None:
    raw = workout(
        1,
        totalDistance=10_000.0,
        energyConsumption=650,
        hrdata={"avg": 150, "hrmax": 178, "max": 195, "min": 90},
        timeOffsetInMinutes=120,
        gear={"displayName": "Suunto Race"},
    )
    w = suunto.map_workout(raw)
    assert (w.distance_m, w.energy_kcal, w.avg_hr, w.max_hr, w.min_hr) == (10_000.0, 650.0, 150.0, 178.0, 90.0)
    assert (w.utc_offset_minutes, w.device_name) == (120, "Suunto Race")


async def test_a_record_without_its_key_fails_the_type_naming_it(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, limit=10)
    broken = workout(2)
    del broken["workoutKey"]
    with upstream() as m:
        m.get(WORKOUTS, payload={"payload": [workout(1), broken]}, repeat=True)
        with pytest.raises(MalformedPayload, match=r"unreadable record.*workoutKey"):
            await suunto.sync_workouts(ctx)
    assert ctx.pages == []  # the page is not half-stored


async def test_upstream_error_field_fails_the_type(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, payload={"error": "Invalid parameter", "payload": []}, repeat=True)
        with pytest.raises(MalformedPayload, match="Invalid parameter"):
            await suunto.sync_workouts(ctx)


async def test_malformed_json_is_retried_then_reported(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, body='{"payload": [', content_type="application/json", repeat=True)
        with pytest.raises(MalformedPayload, match="malformed JSON"):
            await suunto.sync_workouts(ctx)
        # First attempt plus two retries for the first page (the others are cancelled or alike).
        assert len([c for c in sent(m) if c[2]["params"]["offset"] == 0]) == 3


async def test_5xx_then_success_is_retried(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1, limit=10)
    with upstream() as m:
        m.get(WORKOUTS, status=503, body="busy")
        m.get(WORKOUTS, payload={"payload": [workout(1)]}, repeat=True)
        await suunto.sync_workouts(ctx)
    assert ctx.ids() == ["w1"]


async def test_persistent_5xx_fails_with_status_and_body(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, status=502, body="bad gateway", repeat=True)
        with pytest.raises(UpstreamError, match=r"HTTP 502: bad gateway"):
            await suunto.sync_workouts(ctx)


async def test_401_refreshes_the_token_once_then_fails(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(WORKOUTS, status=401, body='{"message": "Access denied"}', repeat=True)
        with pytest.raises(UpstreamAuthError, match="HTTP 401"):
            await suunto.sync_workouts(ctx)
        tokens = [c[2]["headers"]["Authorization"] for c in sent(m)]
    assert tokens == ["Bearer token-1", "Bearer token-2"]  # one refresh, one retry, no loop
    assert ctx.credentials.refreshes == 1


async def test_401_then_fresh_token_succeeds(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1, limit=10)
    with upstream() as m:
        m.get(WORKOUTS, status=401, body='{"message": "expired"}')
        m.get(WORKOUTS, payload={"payload": [workout(1)]}, repeat=True)
        await suunto.sync_workouts(ctx)
    assert ctx.ids() == ["w1"]
    assert ctx.credentials.access_token == "token-2"


async def test_short_429_is_waited_out_long_one_is_raised(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1, limit=10)
    with upstream() as m:
        m.get(WORKOUTS, status=429, headers={"Retry-After": "0"}, body="slow down")
        m.get(WORKOUTS, payload={"payload": [workout(1)]}, repeat=True)
        await suunto.sync_workouts(ctx)
    assert len(ctx.pages) == 1
    ctx = make_ctx(http, limit=10)
    with upstream() as m:
        m.get(WORKOUTS, status=429, headers={"Retry-After": "600"}, body="slow down", repeat=True)
        with pytest.raises(RateLimited) as raised:
            await suunto.sync_workouts(ctx)
    assert raised.value.retry_after_s == 600


# ---- 24/7 ---------------------------------------------------------------------------------


def _247(m: aioresponses, path: str, **kwargs: Any) -> None:
    m.get(re.compile(rf"^{re.escape(API + path)}\?.*$"), repeat=True, **kwargs)


async def test_247_windows_null_bodies_and_units(http: HttpClient, upstream: type[aioresponses]) -> None:
    since = int((datetime.now(UTC) - timedelta(days=40)).timestamp())
    ctx = make_ctx(http, DataType.DATA_247, since=since)
    activity = [
        {
            "timestamp": "2026-11-01T10:00:00.000+02:00",
            "entryData": {"HR": 61, "StepCount": 12, "EnergyConsumption": 4184, "SpO2": 0.97, "HRV": 0},
        }
    ]
    with upstream() as m:
        _247(m, "/247samples/sleep", body="null", content_type="application/json")
        _247(m, "/247samples/recovery", payload=[])
        _247(m, "/247samples/activity", payload=activity)
        _247(m, "/247/daily-activity-statistics", payload=[])
        await suunto.sync_247(ctx)
        calls = sent(m)
    # 40 days in windows of at most 28: two windows, four endpoints each.
    assert ctx.pages_total == 8
    assert len(calls) == 8
    for _, _, kw in calls:
        span = kw["params"]["to"] - kw["params"]["from"]
        assert 0 < span <= 28 * 86_400_000
    samples = ctx.rows(Sample)
    by_type = {s.sample_type: s.value for s in samples}
    # Two windows served the same entry: the same samples twice, which the upsert dedupes.
    assert by_type == {"heart_rate": 61.0, "steps": 12.0, "energy": 1.0, "spo2": 97.0}  # HRV 0 = no reading
    assert samples[0].recorded_at == datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


async def test_247_non_list_answer_fails_the_type(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, DataType.DATA_247, since=int(datetime.now(UTC).timestamp()) - 86_400)
    with upstream() as m:
        _247(m, "/247samples/sleep", payload={"unexpected": True})
        for path in ("/247samples/recovery", "/247samples/activity", "/247/daily-activity-statistics"):
            _247(m, path, payload=[])
        with pytest.raises(MalformedPayload, match="returned no list"):
            await suunto.sync_247(ctx)


def test_sleep_without_stage_fields_and_percent_spo2() -> None:
    entry = {
        "timestamp": "2026-11-02T07:00:00+01:00",
        "entryData": {
            "BedtimeStart": "2026-11-01T23:00:00+01:00",
            "BedtimeEnd": "2026-11-02T07:00:00+01:00",
            "Duration": 28000,
            "MaxSpo2": 98,
        },
    }
    s = suunto.map_sleep(entry)
    assert s.start_time == datetime(2026, 11, 1, 22, 0, tzinfo=UTC)
    assert s.utc_offset_minutes == 60
    assert (s.deep_s, s.light_s, s.rem_s, s.awake_s) == (None, None, None, 28000.0)
    assert s.spo2_percent == 98.0  # already a percentage: not multiplied
    assert s.provider_record_id == "2026-11-02T06:00:00+00:00"  # no SleepId: keyed by its timestamp


def test_daily_statistics_take_the_largest_source_per_day() -> None:
    stats = [
        {
            "Name": "StepCount",
            "Sources": [
                {"Name": "watch", "Samples": [{"TimeISO8601": "2026-11-01T00:00:00+02:00", "Value": 8000}]},
                {"Name": "phone", "Samples": [{"TimeISO8601": "2026-11-01T00:00:00+02:00", "Value": 7500}]},
            ],
        },
        {"Name": "EnergyConsumption", "Sources": [{"Samples": [{"TimeISO8601": "2026-11-01", "Value": 8368}]}]},
    ]
    (day,) = suunto.map_daily_statistics(stats)
    assert isinstance(day, DailyActivity)
    assert (day.provider_record_id, day.steps, day.energy_kcal) == ("2026-11-01", 8000, 2.0)


def test_workout_record_type() -> None:
    assert isinstance(suunto.map_workout(workout(1)), Workout)
