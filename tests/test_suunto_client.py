"""Edge cases of the Suunto client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_worker.py; here storage is replaced by a list."""

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from tests.clients import RecordingContext, recording_context, sent
from wearsync.dev import SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SUBSCRIPTION_KEY
from wearsync.models import DataType, SyncParams
from wearsync.providers import suunto
from wearsync.providers.core import map_page
from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.records import DailyActivity, Sample, Workout
from wearsync.settings import Settings
from wearsync.sim import suunto as suunto_sim
from wearsync.sim.common import fixture, fixture_file, user_rng

FIXTURES = Path(suunto_sim.__file__).parent / "fixtures" / "suunto"

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


# ---- the documented shapes (wearsync/sim/fixtures/suunto) -----------------------------------


def test_every_fixture_names_its_source_and_whether_it_is_official() -> None:
    names = sorted(p.stem for p in FIXTURES.glob("*.json"))
    assert len(names) >= 6
    for name in names:
        source = fixture_file("suunto", name)["_source"]
        assert source["url"].startswith("https://"), name
        assert source["status"] in ("official", "second-hand"), name
        assert source["note"], name


def test_the_documented_workout_answer_maps_heart_rate_cadence_and_key() -> None:
    """Official example of one workout: `key`, hrdata.workoutAvgHR / workoutMaxHR / userMaxHR,
    cadence a number."""
    payload = fixture("suunto", "workout_data_json")["payload"]
    (w,) = map_page([payload], suunto.map_workout)
    assert isinstance(w, Workout)
    assert (w.provider_record_id, w.sport) == ("6570b1c2d3e4f5a6b7c8d9e0", "running")
    assert (w.avg_hr, w.max_hr, w.min_hr) == (151.0, 178.0, None)  # not userMaxHR (192)
    assert (w.avg_cadence, w.max_cadence) == (84.0, None)
    assert (w.start_time, w.end_time) == (
        datetime(2023, 12, 16, 12, 20, tzinfo=UTC),
        datetime(2023, 12, 16, 13, 20, tzinfo=UTC),
    )
    assert (w.energy_kcal, w.steps, w.distance_m, w.utc_offset_minutes) == (612.0, 9400, 11520.0, 120)


def test_a_live_list_item_with_both_heart_rate_forms_maps_the_workouts_own() -> None:
    item = fixture("suunto", "workout_v3_list_item")
    (w,) = map_page([item], suunto.map_workout)
    assert isinstance(w, Workout)
    assert (w.avg_hr, w.max_hr, w.min_hr) == (138.0, 171.0, 74.0)  # not max / userMaxHR (190)
    assert (w.avg_cadence, w.max_cadence) == (86.0, 112.0)
    assert (w.device_name, w.avg_power_w, w.max_power_w) == ("Suunto Race", 212.0, 780.0)
    # Only the older form present: read too.
    item["hrdata"] = {"avg": 140, "hrmax": 169, "max": 190, "min": 70}
    assert suunto.map_workout(item).max_hr == 169.0


def test_a_newer_watch_names_its_device_in_an_extension_and_cadence_as_an_object() -> None:
    item = fixture("suunto", "workout_v3_newer_watch")
    (w,) = map_page([item], suunto.map_workout)
    assert isinstance(w, Workout)
    assert (w.avg_cadence, w.max_cadence) == (82.0, 101.0)
    assert w.device_name == "Suunto Race 2"
    assert (w.avg_hr, w.max_hr) == (149.0, 181.0)
    assert w.end_time == w.start_time + timedelta(seconds=5400)  # no stopTime


def test_the_documented_notification_maps_with_its_sibling_gear() -> None:
    body = fixture("suunto", "webhook_workout_created")
    (event,) = suunto.PROVIDER.webhook.events(body)  # type: ignore[union-attr]
    assert (event.kind, event.provider_user_id) == ("workout.workout_created", "johndoe123")
    assert event.dedupe_key.startswith("67604889401b942184624cb8:")
    w = suunto.map_workout(body["workout"], body["gear"])
    assert (w.provider_record_id, w.sport, w.device_name) == (
        "67604889401b942184624cb8",
        "cross_country_skiing",
        "Suunto Vertical",
    )
    assert (w.avg_hr, w.max_hr, w.energy_kcal, w.duration_s) == (145.0, 175.0, 500.0, 3600.0)
    # The same notification again is the same event; a changed workout is a new one.
    assert suunto.parse_webhook(body)[0].dedupe_key == event.dedupe_key
    changed = body | {"workout": body["workout"] | {"totalTime": 3700}}
    assert suunto.parse_webhook(changed)[0].dedupe_key != event.dedupe_key


def test_routes_and_unknown_types_are_acknowledged_without_an_event() -> None:
    assert suunto.parse_webhook({"type": "ROUTE_CREATED", "username": "johndoe123", "route": {}}) == []
    assert suunto.parse_webhook({"type": "SOMETHING_NEW", "username": "johndoe123"}) == []
    assert suunto.parse_webhook({"type": "WORKOUT_UPDATED"}) == []  # not documented: not relied on


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "WORKOUT_CREATED", "workout": {"workoutKey": "k"}}, "needs a username"),
        ({"type": "SUUNTO_247_SLEEP_CREATED", "username": ""}, "needs a username"),
        ({"type": "WORKOUT_CREATED", "username": "u", "workout": {"activityId": 1}}, "names no workout"),
        (["WORKOUT_CREATED"], "a JSON object"),
        ({"type": ["WORKOUT_CREATED"], "username": "u"}, "type is a string"),
    ],
)
def test_a_notification_we_cannot_act_on_is_refused(body: Any, message: str) -> None:
    with pytest.raises(MalformedPayload, match=message):
        suunto.parse_webhook(body)


def test_a_247_notification_is_one_event_covering_its_samples() -> None:
    body = fixture("suunto", "webhook_247_sleep_created")
    (event,) = suunto.parse_webhook(body)
    assert (event.kind, event.provider_user_id) == ("data_247.suunto_247_sleep_created", "johndoe123")
    assert suunto.parse_webhook(body)[0].dedupe_key == event.dedupe_key
    now, reach = datetime(2026, 5, 1, tzinfo=UTC), timedelta(days=90)
    assert suunto.notified_window(body, now, reach) == (
        datetime(2026, 4, 27, 19, 0, tzinfo=UTC),  # BedtimeStart, 22:00+03:00
        datetime(2026, 4, 28, 3, 40, 1, tzinfo=UTC),
    )
    # No readable times: the last two days.
    unreadable = {"samples": [{"timestamp": "yesterday"}, 5]}
    assert suunto.notified_window(unreadable, now, reach) == (now - timedelta(days=2), now)
    # A watch's wrong clock: no further back than the 24/7 reach, no more than a day ahead.
    wrong = {"samples": [{"timestamp": "1990-01-01T00:00:00+00:00"}, {"timestamp": "2100-01-01T00:00:00+00:00"}]}
    assert suunto.notified_window(wrong, now, reach) == (now - reach, now + timedelta(days=1))
    long_ago = {"samples": [{"timestamp": "1990-01-01T00:00:00+00:00"}]}
    assert suunto.notified_window(long_ago, now, reach) == (now - reach, now - reach + timedelta(seconds=1))


def test_the_documented_daily_statistics_map_joules_and_skip_null_days() -> None:
    (day,) = map_page([fixture("suunto", "daily_activity_statistics")["answer"]], suunto.map_daily_statistics)
    assert isinstance(day, DailyActivity)
    assert (day.day, day.steps) == (date(2019, 2, 12), 4617)
    assert day.energy_kcal == pytest.approx(640580.3985 / 4184)  # joules


def test_the_simulator_serves_the_fixtures_shapes_both_variants() -> None:
    listed, newer = fixture("suunto", "workout_v3_list_item"), fixture("suunto", "workout_v3_newer_watch")
    documented = fixture("suunto", "workout_data_json")["payload"]
    hr_forms = {frozenset(listed["hrdata"]), frozenset(newer["hrdata"])}
    assert frozenset(documented["hrdata"]) in hr_forms  # the official form is one of the two
    workouts, _ = suunto_sim._workouts(user_rng("suunto", "shapes"), datetime.now(UTC), 200, 60)
    seen_hr = set()
    for w in workouts:
        assert set(w) <= set(listed) | set(newer), set(w) - set(listed) - set(newer)
        if "hrdata" in w:
            seen_hr.add(frozenset(w["hrdata"]))
        if "gear" in w:
            assert set(w["gear"]) == set(listed["gear"])
        cadence = w.get("cadence")
        assert cadence is None or set(cadence) == set(newer["cadence"])
        summary = [e for e in w["extensions"] if e["type"] == "SummaryExtension"]
        assert all(set(e["gear"]) <= set(newer["extensions"][0]["gear"]) for e in summary)
    assert seen_hr == hr_forms, "both heart-rate forms are served"
    notification = suunto_sim.workout_notification("alice", next(w for w in workouts if "gear" in w))
    documented_body = fixture("suunto", "webhook_workout_created")
    assert set(notification) == set(documented_body)
    assert set(notification["gear"]) == set(documented_body["gear"])
    assert "gear" not in notification["workout"]


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
    daily = sorted(
        (kw["params"] for _, url, kw in calls if url.path.endswith("/daily-activity-statistics")),
        key=lambda params: params["startdate"],
    )
    for _, url, kw in calls:
        if not url.path.endswith("/daily-activity-statistics"):
            span = kw["params"]["to"] - kw["params"]["from"]
            assert 0 < span <= 28 * 86_400_000
    # Daily statistics: ISO 8601 in UTC without an offset, to the second, the end inclusive, at
    # most 28 days; from a UTC midnight (each bucket a UTC day), the windows back to back.
    assert len(daily) == 2
    for params in daily:
        assert set(params) == {"startdate", "enddate"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", params["startdate"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", params["enddate"])
        start, last = datetime.fromisoformat(params["startdate"]), datetime.fromisoformat(params["enddate"])
        assert timedelta(0) < last - start < timedelta(days=28)
    first_start = datetime.fromisoformat(daily[0]["startdate"]).replace(tzinfo=UTC)
    assert first_start == datetime.fromtimestamp(since, UTC).replace(hour=0, minute=0, second=0)
    next_start = datetime.fromisoformat(daily[1]["startdate"])
    assert next_start == datetime.fromisoformat(daily[0]["enddate"]) + timedelta(seconds=1)
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


async def test_the_simulator_takes_daily_statistics_dates_as_suunto_does(sim_server: TestServer) -> None:
    """ISO 8601, UTC unless it says otherwise (an offset written +0200 refused), at most 28 days
    apart; epoch-ms from/to is not its form."""
    async with aiohttp.ClientSession() as session:
        grant = {"grant_type": "authorization_code", "code": "user-dates"}
        basic = {"Authorization": aiohttp.encode_basic_auth(SIM_CLIENT_ID, SIM_CLIENT_SECRET)}
        async with session.post(sim_server.make_url("/suunto/auth/oauth/token"), data=grant, headers=basic) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": SIM_SUBSCRIPTION_KEY}

        async def status(**params: str) -> int:
            url = sim_server.make_url("/suunto/api/247/daily-activity-statistics")
            async with session.get(url, params=params, headers=headers) as resp:
                return resp.status

        assert await status(startdate="2026-01-01T00:00:00", enddate="2026-01-28T23:59:59") == 200
        assert await status(startdate="2026-01-01T00:00:00+0200", enddate="2026-01-28T23:59:59") == 400
        assert await status(startdate="2026-01-01T02:00:00+02:00", enddate="2026-01-28T23:59:59") == 200
        assert await status(startdate="2026-01-01T01:59:59+02:00", enddate="2026-01-29T00:00:00") == 400
        assert await status(startdate="2026-01-01T00:00:00", enddate="2026-01-29T00:00:01") == 400
        assert await status(**{"from": "1767225600000", "to": "1767312000000"}) == 400
