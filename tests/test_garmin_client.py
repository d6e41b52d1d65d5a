"""Edge cases of the Garmin client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_garmin.py; here storage is replaced by lists."""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses

from tests.clients import RecordingContext, recording_context, sent
from wearsync.models import DataType, SyncParams
from wearsync.providers import garmin
from wearsync.providers.errors import MalformedPayload, NotSupported, ProviderError, UpstreamError
from wearsync.providers.http import HttpClient
from wearsync.records import DailyActivity, Recovery, Sample, SleepSession, Workout
from wearsync.settings import Settings
from wearsync.sim import garmin as garmin_sim
from wearsync.sim.common import fixture, fixture_file
from wearsync.sports import SPORTS

API = "https://garmin.test/api"
REST = re.compile(r"^https://garmin\.test/api/wellness-api/rest/.*$")
T0 = 1_780_000_000
DAY = 86400


@dataclass
class GarminContext(RecordingContext):
    """A RecordingContext that also keeps the backfill requests recorded on the task (in the
    garmin_backfills table and the task's done pages, by the database's context)."""

    backfills: list[dict[str, Any]] = field(default_factory=list)

    async def expect_delivery(self, kind: str, start: datetime, end: datetime, status: str, page_key: str) -> None:
        await self.save_page([], page_key)
        self.backfills.append({"type": kind, "start": int(start.timestamp()), "end": int(end.timestamp()),
                               "status": status})  # fmt: skip


def make_ctx(http: HttpClient, data_type: DataType = DataType.WORKOUTS, **params: Any) -> GarminContext:
    settings = Settings(garmin_api_url=API, garmin_backfill_days=30)
    ctx = recording_context(garmin.PROVIDER, http, settings, data_type=data_type, params=SyncParams(**params),
                            provider_user_id="g-user", context=GarminContext)  # fmt: skip
    assert isinstance(ctx, GarminContext)
    return ctx


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def summary(**fields: Any) -> dict[str, Any]:
    return {"userId": "g-user", "summaryId": "s1", "startTimeInSeconds": T0, "startTimeOffsetInSeconds": 3600,
            "durationInSeconds": 1800} | fields  # fmt: skip


# ---- mapping --------------------------------------------------------------------------------


def test_an_activity_with_only_the_required_fields() -> None:
    raw = {"summaryId": "9", "activityType": "RUNNING", "startTimeInSeconds": T0}
    w = garmin.map_activity(raw)
    assert (w.provider_record_id, w.sport, w.provider_sport) == ("9", "running", "RUNNING")
    assert w.start_time == w.end_time == datetime.fromtimestamp(T0, UTC)
    assert (w.duration_s, w.distance_m, w.avg_hr, w.device_name, w.utc_offset_minutes, w.name) == (None,) * 6
    assert w.raw is raw


def test_every_mapped_sport_is_one_of_ours() -> None:
    assert set(garmin.SPORTS.values()) <= SPORTS


def test_an_unknown_activity_type_is_other_keeping_garmins_name() -> None:
    w = garmin.map_activity(summary(activityType="HANG_GLIDING", activityName="Ridge soaring"))
    assert (w.sport, w.provider_sport, w.name) == ("other", "HANG_GLIDING", "Ridge soaring")
    assert garmin.map_activity(summary()).provider_sport is None  # no type at all: other, too
    assert garmin.map_activity(summary()).sport == "other"


def test_activity_units_and_offsets() -> None:
    raw = summary(activityType="CYCLING", startTimeOffsetInSeconds=19800, distanceInMeters=30_000.5,
                  activeKilocalories=640, averageHeartRateInBeatsPerMinute=141, maxHeartRateInBeatsPerMinute=176,
                  averageSpeedInMetersPerSecond=8.1, maxSpeedInMetersPerSecond=15.2,
                  totalElevationGainInMeters=420.0, totalElevationLossInMeters=410.0,
                  averageBikeCadenceInRoundsPerMinute=88.0, deviceName="Edge 840")  # fmt: skip
    w = garmin.map_activity(raw)
    assert w.end_time - w.start_time == timedelta(seconds=1800)
    assert (w.utc_offset_minutes, w.distance_m, w.energy_kcal, w.avg_hr, w.max_hr) == (330, 30_000.5, 640, 141, 176)
    assert (w.avg_speed_mps, w.max_speed_mps, w.ascent_m, w.descent_m) == (8.1, 15.2, 420.0, 410.0)
    assert (w.avg_cadence, w.device_name, w.steps) == (88.0, "Edge 840", None)


def test_a_daily_without_bmr_or_heart_rate_samples() -> None:
    (day,) = garmin.map_daily(summary(calendarDate="2026-11-01", steps=9000, activeKilocalories=400))
    assert isinstance(day, DailyActivity)
    assert (day.provider_record_id, day.day, day.steps) == ("2026-11-01", date(2026, 11, 1), 9000)
    assert (day.active_energy_kcal, day.energy_kcal, day.distance_m) == (400, None, None)


def test_a_daily_with_heart_rate_samples() -> None:
    hr = {"0": 55, "15": 57}
    raw = summary(
        calendarDate="2026-11-01", activeKilocalories=400, bmrKilocalories=1700, timeOffsetHeartRateSamples=hr
    )
    rows = garmin.map_daily(raw)
    assert isinstance(rows[0], DailyActivity)
    assert rows[0].energy_kcal == 2100
    assert [(s.sample_type, s.recorded_at, s.value) for s in rows[1:] if isinstance(s, Sample)] == [
        ("heart_rate", datetime.fromtimestamp(T0, UTC), 55.0),
        ("heart_rate", datetime.fromtimestamp(T0 + 15, UTC), 57.0),
    ]


def test_epochs_of_one_slot_are_summed() -> None:
    epochs = [summary(summaryId="a", steps=0, activeKilocalories=1, activityType="SEDENTARY"),
              summary(summaryId="b", steps=700, activeKilocalories=30, activityType="WALKING"),
              summary(summaryId="c", startTimeInSeconds=T0 + 900, steps=None, activeKilocalories=2)]  # fmt: skip
    samples = [s for s in garmin.map_epochs(epochs) if isinstance(s, Sample)]
    at = datetime.fromtimestamp(T0, UTC)
    assert [(s.sample_type, s.recorded_at, s.value) for s in samples] == [
        ("steps", at, 700.0),
        ("energy", at, 31.0),
        ("energy", at + timedelta(minutes=15), 2.0),
    ]


def test_a_sleep_without_rem_or_score() -> None:
    raw = summary(calendarDate="2026-11-01", durationInSeconds=25000, deepSleepDurationInSeconds=5000,
                  lightSleepDurationInSeconds=20000, awakeDurationInSeconds=2000)  # fmt: skip
    s = garmin.map_sleep(raw)
    assert isinstance(s, SleepSession)
    # durationInSeconds is the time asleep: without stages the night lasts it plus the awake time.
    assert s.end_time - s.start_time == timedelta(seconds=27000)
    assert s.duration_s == 27000
    assert (s.deep_s, s.light_s, s.rem_s, s.awake_s, s.score, s.is_nap) == (5000, 20000, None, 2000, None, False)
    assert garmin.map_sleep(raw | {"overallSleepScore": {"value": 81, "qualifierKey": "GOOD"}}).score == 81


def test_a_sleep_ends_with_its_last_stage_awake_included() -> None:
    """Garmin's documented shape: durationInSeconds (asleep) is short of the session by the awake
    stages, one of them the last before getting up."""
    levels = {
        "light": [{"startTimeInSeconds": T0, "endTimeInSeconds": T0 + 3600},
                  {"startTimeInSeconds": T0 + 9000, "endTimeInSeconds": T0 + 14000}],
        "deep": [{"startTimeInSeconds": T0 + 3600, "endTimeInSeconds": T0 + 7200}],
        "awake": [{"startTimeInSeconds": T0 + 7200, "endTimeInSeconds": T0 + 9000},
                  {"startTimeInSeconds": T0 + 14000, "endTimeInSeconds": T0 + 15000}],
    }  # fmt: skip
    raw = summary(durationInSeconds=12200, deepSleepDurationInSeconds=3600, lightSleepDurationInSeconds=8600,
                  awakeDurationInSeconds=2800, sleepLevelsMap=levels)  # fmt: skip
    s = garmin.map_sleep(raw)
    assert (s.start_time, s.end_time) == (datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 15000, UTC))
    assert (s.duration_s, s.awake_s, s.deep_s, s.light_s) == (15000, 2800, 3600, 8600)
    # The stages rule over the sums: a night whose summary misses its last awake stage still ends then.
    assert garmin.map_sleep(raw | {"awakeDurationInSeconds": 1800}).end_time == s.end_time


def test_hrv_is_recovery_at_the_end_of_the_night() -> None:
    r = garmin.map_hrv(summary(summaryId="h1", lastNightAvg=48, durationInSeconds=3600))
    assert isinstance(r, Recovery)
    assert (r.provider_record_id, r.hrv_rmssd_ms, r.utc_offset_minutes) == ("h1", 48, 60)
    assert r.recorded_at == datetime.fromtimestamp(T0 + 3600, UTC)
    assert garmin.map_hrv(summary(durationInSeconds=None)).hrv_rmssd_ms is None


# ---- the documented shapes (wearsync/sim/fixtures/garmin) -----------------------------------

SHAPES = ("push_activities", "ping_epochs", "push_sleeps", "deregistrations", "user_permissions_change")


def test_every_documented_shape_names_its_source() -> None:
    for name in SHAPES:
        source = fixture_file("garmin", name)["_source"]
        assert source["status"] in ("official", "second-hand"), name
        assert source["url"].startswith("https://"), name
        assert source["note"], name


def test_the_documented_sleep_lasts_until_its_last_stage() -> None:
    (raw,) = fixture("garmin", "push_sleeps")["sleeps"]
    night = garmin.map_sleep(raw)
    last_stage_end = max(x["endTimeInSeconds"] for xs in raw["sleepLevelsMap"].values() for x in xs)
    assert (night.start_time, night.end_time) == (at(raw["startTimeInSeconds"]), at(last_stage_end))
    assert night.duration_s == last_stage_end - raw["startTimeInSeconds"] == 27000
    assert (
        raw["durationInSeconds"]
        == 25200
        == raw["deepSleepDurationInSeconds"] + raw["lightSleepDurationInSeconds"] + raw["remSleepInSeconds"]
    )  # asleep only: what the end used to be computed from
    assert (night.awake_s, night.score) == (1800, 82)


def test_the_documented_push_maps_field_by_field() -> None:
    body = fixture("garmin", "push_activities")
    (event,) = garmin.parse_webhook(body)
    assert (event.kind, event.provider_user_id) == ("activities.push", body["activities"][0]["userId"])
    (workout,) = garmin.map_summaries("activities", event.payload["summaries"])
    assert isinstance(workout, Workout)
    a = body["activities"][0]
    assert (workout.provider_record_id, workout.sport, workout.start_time) == ("12041234567", "running",
                                                                               at(a["startTimeInSeconds"]))  # fmt: skip
    assert (workout.duration_s, workout.distance_m, workout.energy_kcal, workout.avg_hr, workout.max_hr) == (
        2712, 8123.4, 612, 148, 176
    )  # fmt: skip
    assert (workout.avg_cadence, workout.ascent_m, workout.device_name, workout.utc_offset_minutes) == (
        164.2, 84.0, "Forerunner 965", 60
    )  # fmt: skip


def test_the_documented_ping_deregistration_and_permission_change() -> None:
    ping = fixture("garmin", "ping_epochs")
    (event,) = garmin.parse_webhook(ping)
    assert (event.kind, event.payload["callbackURL"]) == ("epochs.ping", ping["epochs"][0]["callbackURL"])
    (gone,) = garmin.parse_webhook(fixture("garmin", "deregistrations"))
    assert (gone.kind, gone.provider_user_id) == ("deregistration", "4aacafe82427c251df9c9592d0c06768")
    (change,) = garmin.parse_webhook(fixture("garmin", "user_permissions_change"))
    assert (change.kind, change.payload["permissions"]) == ("permissions", ["ACTIVITY_EXPORT", "HEALTH_EXPORT"])


def test_the_simulator_serves_the_documented_shapes() -> None:
    data = garmin_sim._build_user_data("shapes", {"workouts": 300, "days_247": 60}, datetime.now(UTC))
    (activity,) = fixture("garmin", "push_activities")["activities"]
    bike = {"averageBikeCadenceInRoundsPerMinute", "maxBikeCadenceInRoundsPerMinute"}  # rides: in place of run's
    for a in data.summaries["activities"]:
        assert set(a) <= set(activity) | bike, set(a) - set(activity) - bike
    (sleep,) = fixture("garmin", "push_sleeps")["sleeps"]
    with_stages = 0
    for s in data.summaries["sleeps"]:
        assert set(s) <= set(sleep), set(s) - set(sleep)
        asleep = [
            s.get(k, 0) for k in ("deepSleepDurationInSeconds", "lightSleepDurationInSeconds", "remSleepInSeconds")
        ]
        assert s["durationInSeconds"] == sum(asleep)  # the time asleep, as documented
        if "sleepLevelsMap" in s:
            with_stages += 1
            levels = s["sleepLevelsMap"]
            assert set(levels) <= set(sleep["sleepLevelsMap"])
            assert all(set(x) == {"startTimeInSeconds", "endTimeInSeconds"} for xs in levels.values() for x in xs)
            awake = sum(x["endTimeInSeconds"] - x["startTimeInSeconds"] for x in levels["awake"])
            assert (awake, garmin.sleep_end(s)) == (
                s["awakeDurationInSeconds"], s["startTimeInSeconds"] + s["durationInSeconds"] + awake
            )  # fmt: skip
    assert with_stages > len(data.summaries["sleeps"]) // 2


# ---- pulls ----------------------------------------------------------------------------------


async def test_empty_and_absent_lists_store_empty_pages(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(REST, payload=[])
        m.get(REST, body="", status=204)
        assert await garmin.pull_summaries(ctx, "activities", (T0, T0 + 2 * DAY)) == 0
    assert [(key, rows, n) for key, rows, n in ctx.saved] == [
        (f"activities@{T0}-{T0 + DAY}", [], 0),
        (f"activities@{T0 + DAY}-{T0 + 2 * DAY}", [], 0),
    ]


async def test_a_200_with_no_body_is_a_body_cut_short_not_an_empty_list(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(REST, body="", status=200)  # retried: the second try answers
        m.get(REST, payload=[summary(summaryId="a1")])
        assert await garmin.pull_summaries(ctx, "activities", (T0, T0 + DAY)) == 1
    with upstream() as m:
        m.get(REST, body="", status=200, repeat=True)
        with pytest.raises(MalformedPayload, match="empty body"):
            await garmin.pull_summaries(ctx, "activities", (T0, T0 + DAY))


async def test_a_range_is_pulled_a_day_at_a_time_with_the_token(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(REST, payload=[summary(summaryId="h1", lastNightAvg=50)], repeat=True)
        assert await garmin.pull_summaries(ctx, "hrv", (T0, T0 + 2 * DAY + 600)) == 3
        calls = sent(m)
    assert [(u.path, kw["params"]) for _, u, kw in calls] == [
        ("/api/wellness-api/rest/hrv", {"uploadStartTimeInSeconds": s, "uploadEndTimeInSeconds": e})
        for s, e in ((T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY), (T0 + 2 * DAY, T0 + 2 * DAY + 600))
    ]
    assert calls[0][2]["headers"]["Authorization"] == "Bearer token-1"
    assert [type(r) for r in ctx.rows()] == [Recovery] * 3


async def test_a_callback_url_is_fetched_as_given(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    url = f"{API}/wellness-api/rest/sleeps?uploadStartTimeInSeconds={T0}&uploadEndTimeInSeconds={T0 + 60}&token=x"
    with upstream() as m:
        m.get(url, payload=[summary(durationInSeconds=100)])
        assert await garmin.pull_summaries(ctx, "sleeps", url) == 1
    (key, rows, items) = ctx.saved[0]
    assert (key, items, [type(r) for r in rows]) == (f"sleeps@{T0}-{T0 + 60}", 1, [SleepSession])


async def test_a_page_done_before_is_not_fetched_again(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    ctx.done = {f"dailies@{T0}-{T0 + DAY}": 3}
    with upstream() as m:
        m.get(REST, payload=[])
        await garmin.pull_summaries(ctx, "dailies", (T0, T0 + 2 * DAY))
        assert [kw["params"]["uploadStartTimeInSeconds"] for _, _, kw in sent(m)] == [T0 + DAY]


@pytest.mark.parametrize(
    ("summary_type", "url"),
    [
        ("dailies", f"{API}/wellness-api/rest/sleeps?uploadStartTimeInSeconds=0"),  # another type
        ("dailies", "https://garmin.test:8443/api/wellness-api/rest/dailies"),  # another port
        ("dailies", "http://garmin.test/api/wellness-api/rest/dailies"),  # not https
        ("dailies", "https://garmin.test/other/wellness-api/rest/dailies"),  # outside the API's path
    ],
)
async def test_a_callback_url_off_the_api_is_refused_without_a_call(
    http: HttpClient, upstream: type[aioresponses], summary_type: str, url: str
) -> None:
    with upstream() as m, pytest.raises(ProviderError, match="refusing Garmin callback URL"):
        await garmin.pull_summaries(make_ctx(http), summary_type, url)
    assert sent(m) == []


async def test_an_unmapped_summary_type_is_not_pulled(http: HttpClient) -> None:
    with pytest.raises(NotSupported, match="stressDetails"):
        await garmin.pull_summaries(make_ctx(http), "stressDetails", (T0, T0 + DAY))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"body": '[{"summaryId": "s1", "startTi', "content_type": "application/json"}, "malformed JSON"),
        ({"payload": {"errorMessage": "Invalid time range"}}, "returned no list of activities"),
        ({"payload": [{"summaryId": "s1"}]}, r"unreadable record \(KeyError: 'startTimeInSeconds'\)"),
        ({"payload": ["not a summary"]}, "unreadable record"),
    ],
)
async def test_malformed_answers_fail_the_pull_clearly(
    http: HttpClient, upstream: type[aioresponses], answer: dict[str, Any], error: str
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(REST, repeat=True, **answer)
        with pytest.raises(MalformedPayload, match=error):
            await garmin.pull_summaries(ctx, "activities", (T0, T0 + DAY))
    assert ctx.pages == []


async def test_a_refused_token_is_refreshed_once(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(REST, status=401, payload={"errorMessage": "Invalid or expired access token"})
        m.get(REST, payload={"userId": "abc123"})
        assert await garmin.fetch_user_id(ctx) == "abc123"
        tokens = [kw["headers"]["Authorization"] for _, _, kw in sent(m)]
    assert tokens == ["Bearer token-1", "Bearer token-2"]


# ---- backfill requests ----------------------------------------------------------------------


async def test_a_range_is_asked_in_30_day_windows(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, summary_start_time=T0, summary_end_time=T0 + 75 * DAY)
    with upstream() as m:
        m.get(REST, status=202, body="", repeat=True)
        await garmin.sync_workouts(ctx)
        calls = sent(m)
    windows = [(T0, T0 + 30 * DAY), (T0 + 30 * DAY, T0 + 60 * DAY), (T0 + 60 * DAY, T0 + 75 * DAY)]
    asked = [
        (u.path, kw["params"]["summaryStartTimeInSeconds"], kw["params"]["summaryEndTimeInSeconds"])
        for _, u, kw in calls
    ]
    assert sorted(asked) == [("/api/wellness-api/rest/backfill/activities", s, e) for s, e in windows]
    assert ctx.pages_total == 3
    assert sorted((b["start"], b["end"], b["status"]) for b in ctx.backfills) == [(*w, "accepted") for w in windows]
    assert sorted(str(key) for key, _ in ctx.page_keys) == [f"backfill/activities@{s}-{e}" for s, e in windows]


async def test_247_asks_for_each_mapped_type_and_409_counts_as_asked(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, DataType.DATA_247, summary_end_time=T0)
    with upstream() as m:
        m.get(re.compile(r".*/backfill/sleeps\?.*"), status=409, payload={"errorMessage": "Duplicate backfill request"})
        m.get(REST, status=202, body="", repeat=True)
        await garmin.sync_247(ctx)
    assert sorted((b["type"], b["start"], b["end"], b["status"]) for b in ctx.backfills) == [
        ("dailies", T0 - 30 * DAY, T0, "accepted"),
        ("epochs", T0 - 30 * DAY, T0, "accepted"),
        ("hrv", T0 - 30 * DAY, T0, "accepted"),
        ("sleeps", T0 - 30 * DAY, T0, "duplicate"),
    ]


async def test_a_refused_backfill_fails_the_type(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, summary_start_time=T0, summary_end_time=T0 + DAY)
    with upstream() as m:
        m.get(REST, status=400, payload={"errorMessage": "Time range exceeds the maximum"})
        with pytest.raises(UpstreamError, match="HTTP 400"):
            await garmin.sync_workouts(ctx)
    assert ctx.backfills == []


async def test_a_backfill_refused_403_says_the_user_shares_no_history(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, summary_start_time=T0, summary_end_time=T0 + DAY)
    with upstream() as m:
        m.get(REST, status=403, payload={"errorMessage": "User has not granted permission to historical data"})
        with pytest.raises(garmin.NoHistoricalPermission, match=r"no permission for historical data .* activities"):
            await garmin.sync_workouts(ctx)
    assert ctx.backfills == []
    assert ctx.credentials.refreshes == 0  # the token is fine: no refresh


async def test_done_requests_and_empty_ranges_ask_nothing(http: HttpClient, upstream: type[aioresponses]) -> None:
    done = make_ctx(http, summary_start_time=T0, summary_end_time=T0 + DAY)
    done.done = {f"backfill/activities@{T0}-{T0 + DAY}": 0}
    empty = make_ctx(http, summary_start_time=T0, summary_end_time=T0)
    with upstream() as m:
        await garmin.sync_workouts(done)
        await garmin.sync_workouts(empty)
        assert sent(m) == []
    assert (done.pages_total, empty.pages_total) == (1, 0)


async def test_without_a_range_the_configured_days_end_now(http: HttpClient) -> None:
    ctx = make_ctx(http)
    ctx.config = ctx.config.model_copy(update={"backfill_days": 45})
    start, end = garmin.backfill_range(ctx)
    assert abs(end - datetime.now(UTC).timestamp()) < 5
    assert end - start == 45 * DAY
