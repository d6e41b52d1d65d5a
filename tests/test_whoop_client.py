"""Edge cases of the Whoop client, one upstream answer at a time (aioresponses). The full path
against the simulator and PostgreSQL is in test_whoop.py; here storage is replaced by a list."""

import itertools
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from tests.clients import RecordingContext, recording_context, sent
from wearsync.models import DataType
from wearsync.providers import whoop
from wearsync.providers.errors import MalformedPayload, RateLimited, UpstreamAuthError
from wearsync.providers.http import HttpClient
from wearsync.records import DailyActivity, Recovery, SleepSession, Workout
from wearsync.settings import Settings
from wearsync.sports import SPORTS

API = "https://whoop.test/api"


def endpoint(path: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(API + path)}\?.*$")


WORKOUTS = endpoint("/developer/v2/activity/workout")


def make_ctx(
    http: HttpClient,
    data_type: DataType = DataType.WORKOUTS,
    *,
    history_days: int = 10,
    range_days: int = 30,
    concurrency: int = 2,
    done: Mapping[str, int] | None = None,
) -> RecordingContext:
    settings = Settings(whoop_api_url=API, whoop_history_days=history_days, whoop_range_days=range_days,
                        whoop_page_concurrency=concurrency)  # fmt: skip
    return recording_context(whoop.PROVIDER, http, settings, data_type=data_type, done=done)


def workout(n: int, **fields: Any) -> dict[str, Any]:
    start = datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(hours=n)
    w: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012d}", "v1_id": n, "user_id": 7,
        "created_at": "2026-11-01T14:00:00.000Z", "updated_at": "2026-11-01T14:00:00.000Z",
        "start": whoop.rfc3339(start), "end": whoop.rfc3339(start + timedelta(minutes=45)),
        "timezone_offset": "-05:00", "sport_name": "running", "sport_id": 0, "score_state": "SCORED",
        "score": {"strain": 9.1, "average_heart_rate": 140, "max_heart_rate": 171, "kilojoule": 2092.0,
                  "percent_recorded": 100.0, "distance_meter": 8000.5, "altitude_gain_meter": 40.2,
                  "altitude_change_meter": -1.0, "zone_durations": {"zone_zero_milli": 0}},
    }  # fmt: skip
    return w | fields


def params_of(m: aioresponses) -> list[dict[str, Any]]:
    return [dict(kw["params"]) for _, _, kw in sent(m)]


def page(records: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    return {"records": records, "next_token": token}


def newest_only(pages: dict[str | None, dict[str, Any]], newest: datetime) -> Any:
    """An upstream serving `pages` (by nextToken) in the sub-range starting at `newest`, and no
    records in the others (how many there are depends on today's place on the grid)."""

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        if kwargs["params"]["start"] != whoop.rfc3339(newest):
            return CallbackResult(payload=page([]))
        return CallbackResult(payload=pages[kwargs["params"].get("nextToken")])

    return answer


# ---- sub-ranges -----------------------------------------------------------------------------


def test_sub_ranges_lie_on_a_grid_newest_first_and_do_not_move_with_now() -> None:
    now = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)
    windows = whoop.sub_ranges(now, history_days=100, range_days=30)
    # The grid: every 30 days since the epoch (2026-11-03 is day 20760 = 692 * 30); the reach
    # (2026-08-18) rounds down to 2026-08-05.
    assert [w[0].date() for w in windows] == [date(2026, 11, 3), date(2026, 10, 4), date(2026, 9, 4),
                                             date(2026, 8, 5)]  # fmt: skip
    assert all(w[0].time() == time(0) for w in windows)
    assert windows[0][1] == now
    assert all(a[0] == b[1] for a, b in itertools.pairwise(windows))
    assert windows[-1][0] <= now - timedelta(days=100)
    # A rerun an hour later cuts the same sub-ranges (its page keys match).
    later = whoop.sub_ranges(now + timedelta(hours=1), history_days=100, range_days=30)
    assert [w[0] for w in later] == [w[0] for w in windows]


# ---- paging ---------------------------------------------------------------------------------


async def test_empty_history_costs_one_call_per_sub_range_and_marks_each_done(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http, history_days=70, range_days=30)
    with upstream() as m:
        m.get(WORKOUTS, payload={"records": []}, repeat=True)  # no next_token at all: the last page
        await whoop.sync_workouts(ctx)
        queries = params_of(m)
    windows = whoop.sub_ranges(datetime.now(UTC), 70, 30)
    assert len(queries) == len(windows) >= 3
    assert sorted(str(key) for key, _, _ in ctx.saved) == sorted(f"workout@{w[0].date()}" for w in windows)
    assert ctx.rows() == []


async def test_pages_follow_next_token_with_params_and_headers(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, history_days=5, range_days=30)
    (start, _), *_ = whoop.sub_ranges(datetime.now(UTC), 5, 30)
    pages = {None: page([workout(3), workout(2)], "t1"), "t1": page([workout(1)], "t2"), "t2": page([])}
    with upstream() as m:
        m.get(WORKOUTS, callback=newest_only(pages, start), repeat=True)
        await whoop.sync_workouts(ctx)
        calls = [kw for _, _, kw in sent(m) if kw["params"]["start"] == whoop.rfc3339(start)]
    assert [kw["params"].get("nextToken") for kw in calls] == [None, "t1", "t2"]
    first = calls[0]
    assert first["params"]["limit"] == 25
    assert first["params"]["start"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["params"]["end"])
    assert {kw["params"]["end"] for kw in calls} == {first["params"]["end"]}  # the range stays put
    assert first["headers"]["Authorization"] == "Bearer token-1"
    key = f"workout@{start.date()}"
    assert [(k, n) for k, _, n in ctx.saved if k and k.startswith(key)] == [(f"{key}#0", 2), (f"{key}#1", 1), (key, 0)]
    assert ctx.ids() == [workout(n)["id"] for n in (3, 2, 1)]


async def test_a_record_served_in_two_sub_ranges_is_stored_once(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, DataType.DATA_247, history_days=40, range_days=30)
    windows = whoop.sub_ranges(datetime.now(UTC), 40, 30)
    cycle = {"id": 42, "user_id": 7, "start": "2026-10-31T23:00:00.000Z", "end": "2026-11-01T22:00:00.000Z",
             "timezone_offset": "+00:00", "score_state": "UNSCORABLE"}  # fmt: skip
    with upstream() as m:
        m.get(endpoint("/developer/v2/cycle"), payload=page([cycle]), repeat=True)
        m.get(endpoint("/developer/v2/activity/sleep"), payload=page([]), repeat=True)
        m.get(endpoint("/developer/v2/recovery"), payload=page([]), repeat=True)
        await whoop.sync_247(ctx)
        assert len(sent(m)) == 3 * len(windows) >= 6
    assert ctx.ids() == ["42"]
    # Every sub-range's page is marked done, with the items served.
    assert sorted(str(k) for k, _, n in ctx.saved if n == 1) == sorted(f"cycle@{w[0].date()}" for w in windows)


async def test_a_rerun_skips_done_sub_ranges_and_does_not_store_a_page_twice(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    (newest, _), *older = whoop.sub_ranges(datetime.now(UTC), 40, 30)
    done = {f"workout@{w[0].date()}": 3 for w in older} | {f"workout@{newest.date()}#0": 2}
    ctx = make_ctx(http, history_days=40, range_days=30, done=done)
    pages = {None: page([workout(3), workout(2)], "t1"), "t1": page([workout(1)])}
    with upstream() as m:
        m.get(WORKOUTS, callback=newest_only(pages, newest), repeat=True)
        await whoop.sync_workouts(ctx)
        queries = params_of(m)
    # The completed sub-ranges cost nothing; the interrupted one is paged again from its start
    # (the token is needed), and only its page not stored before is stored.
    assert older
    assert {q["start"] for q in queries} == {whoop.rfc3339(newest)}
    assert [q.get("nextToken") for q in queries] == [None, "t1"]
    assert [(k, len(rows)) for k, rows, _ in ctx.saved] == [(f"workout@{newest.date()}", 1)]
    assert ctx.ids() == [workout(1)["id"]]


# ---- mapping --------------------------------------------------------------------------------


def test_workout_units_offset_and_sport() -> None:
    w = whoop.map_workout(workout(1, timezone_offset="+05:30", sport_name="functional-fitness"))
    assert (w.sport, w.provider_sport) == ("strength_training", "functional-fitness")
    assert w.start_time == datetime(2026, 11, 1, 13, tzinfo=UTC)
    assert (w.duration_s, w.utc_offset_minutes) == (2700.0, 330)
    assert w.energy_kcal == pytest.approx(500.0)  # 2092 kJ
    assert (w.distance_m, w.ascent_m, w.avg_hr, w.max_hr) == (8000.5, 40.2, 140.0, 171.0)


def test_unscored_workout_and_unknown_sport() -> None:
    raw = workout(1, sport_name="underwater-hockey", score_state="PENDING_SCORE")
    del raw["score"]
    w = whoop.map_workout(raw)
    assert (w.sport, w.provider_sport) == ("other", "underwater-hockey")
    assert (w.energy_kcal, w.distance_m, w.avg_hr, w.max_hr, w.ascent_m) == (None, None, None, None, None)
    assert w.duration_s == 2700.0  # known without a score
    assert w.raw is raw


def test_workout_without_gps_fields() -> None:
    raw = workout(1, sport_name="yoga")
    for name in ("distance_meter", "altitude_gain_meter", "altitude_change_meter"):
        del raw["score"][name]
    w = whoop.map_workout(raw)
    assert (w.sport, w.distance_m, w.ascent_m, w.energy_kcal is not None) == ("yoga", None, None, True)


def test_every_mapped_sport_is_one_of_ours() -> None:
    assert set(whoop.SPORTS.values()) <= SPORTS
    assert whoop.SPORTS["weightlifting"] == whoop.SPORTS["functional-fitness"] == "strength_training"


def test_sleep_stages_in_seconds_and_missing_optional_scores() -> None:
    raw = {"id": "s-1", "cycle_id": 42, "start": "2026-11-01T04:00:00.000Z", "end": "2026-11-01T12:00:00.000Z",
           "timezone_offset": "-05:00", "nap": False, "score_state": "SCORED",
           "score": {"stage_summary": {"total_in_bed_time_milli": 28_800_000, "total_awake_time_milli": 1_800_000,
                                       "total_light_sleep_time_milli": 14_400_000,
                                       "total_slow_wave_sleep_time_milli": 5_400_000,
                                       "total_rem_sleep_time_milli": 7_200_000},
                     "sleep_performance_percentage": 88}}  # fmt: skip
    s = whoop.map_sleep(raw)
    assert isinstance(s, SleepSession)
    assert (s.duration_s, s.deep_s, s.light_s, s.rem_s, s.awake_s) == (28800.0, 5400.0, 14400.0, 7200.0, 1800.0)
    assert (s.score, s.respiratory_rate, s.utc_offset_minutes, s.is_nap) == (88.0, None, -300, False)
    unscorable = whoop.map_sleep({k: v for k, v in raw.items() if k != "score"} | {"nap": True})
    assert (unscorable.deep_s, unscorable.score, unscorable.is_nap, unscorable.duration_s) == (
        None,
        None,
        True,
        28800.0,
    )


def test_recovery_keyed_by_cycle_with_optional_spo2() -> None:
    raw = {"cycle_id": 93845, "sleep_id": "s-1", "user_id": 7, "created_at": "2026-11-01T12:05:00.000Z",
           "updated_at": "2026-11-01T12:06:00.000Z", "score_state": "SCORED",
           "score": {"user_calibrating": True, "recovery_score": 44, "resting_heart_rate": 64,
                     "hrv_rmssd_milli": 31.8}}  # fmt: skip
    r = whoop.map_recovery(raw)
    assert isinstance(r, Recovery)
    assert (r.provider_record_id, r.recorded_at) == ("93845", datetime(2026, 11, 1, 12, 5, tzinfo=UTC))
    assert (r.score, r.resting_hr, r.hrv_rmssd_ms, r.spo2_percent, r.skin_temp_c) == (44.0, 64.0, 31.8, None, None)
    pending = whoop.map_recovery({k: v for k, v in raw.items() if k != "score"} | {"score_state": "PENDING_SCORE"})
    assert (pending.score, pending.hrv_rmssd_ms) == (None, None)


def test_cycle_day_is_the_local_date_of_its_start() -> None:
    raw = {"id": 7, "start": "2026-11-01T03:30:00.000Z", "end": None, "timezone_offset": "-05:00",
           "score_state": "SCORED", "score": {"strain": 5.3, "kilojoule": 8368.0, "average_heart_rate": 68,
                                              "max_heart_rate": 141}}  # fmt: skip
    c = whoop.map_cycle(raw)
    assert isinstance(c, DailyActivity)
    assert (c.provider_record_id, c.day, c.steps) == ("7", date(2026, 10, 31), None)
    assert c.energy_kcal == pytest.approx(2000.0)
    assert whoop.map_cycle(raw | {"timezone_offset": "+01:00"}).day == date(2026, 11, 1)


# ---- malformed answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "no record list"),
        ({"records": {"id": 1}}, "no record list"),
        ({"records": ["x"]}, "not objects"),
        ({"records": [], "next_token": 5}, "not a string"),
    ],
)
async def test_an_unreadable_answer_fails_the_type(
    http: HttpClient, upstream: type[aioresponses], body: Any, message: str
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, payload=body, repeat=True)
        with pytest.raises(MalformedPayload, match=message):
            await whoop.sync_workouts(ctx)
    assert ctx.saved == []


async def test_a_record_without_its_fields_fails_the_type_naming_it(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    broken = workout(2)
    del broken["start"]
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, payload=page([workout(1), broken]), repeat=True)
        with pytest.raises(MalformedPayload, match=r"unreadable record.*'start'"):
            await whoop.sync_workouts(ctx)
    bad_offset = workout(3, timezone_offset="EST")
    with pytest.raises(ValueError, match="timezone_offset"):
        whoop.map_workout(bad_offset)


async def test_a_repeated_next_token_is_not_followed_forever(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(WORKOUTS, payload=page([workout(1)], "same"), repeat=True)
        with pytest.raises(MalformedPayload, match="same next_token twice"):
            await whoop.sync_workouts(ctx)
        assert len(sent(m)) == 2


async def test_malformed_json_is_retried_then_reported(http: HttpClient, upstream: type[aioresponses]) -> None:
    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(WORKOUTS, body='{"records": [', content_type="application/json", repeat=True)
        with pytest.raises(MalformedPayload, match="malformed JSON"):
            await whoop.sync_workouts(ctx)
        assert len(sent(m)) == 3  # first attempt and two retries


# ---- tokens and limits ----------------------------------------------------------------------


async def test_401_refreshes_the_token_once_then_succeeds_or_fails(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, status=401, body='{"error": "Unauthorized"}')
        m.get(WORKOUTS, payload=page([workout(1)]), repeat=True)
        await whoop.sync_workouts(ctx)
    assert ctx.ids() == [workout(1)["id"]]
    assert ctx.credentials.access_token == "token-2"

    ctx = make_ctx(http, concurrency=1)
    with upstream() as m:
        m.get(WORKOUTS, status=401, body='{"error": "Unauthorized"}', repeat=True)
        with pytest.raises(UpstreamAuthError, match="HTTP 401"):
            await whoop.sync_workouts(ctx)
        assert [kw["headers"]["Authorization"] for _, _, kw in sent(m)] == ["Bearer token-1", "Bearer token-2"]


async def test_429_waits_x_ratelimit_reset_when_short_and_is_raised_when_long(
    http: HttpClient, upstream: type[aioresponses]
) -> None:
    ctx = make_ctx(http)
    with upstream() as m:
        m.get(WORKOUTS, status=429, payload={"error": "Too Many Requests"},
              headers={"X-RateLimit-Reset": "0", "X-RateLimit-Remaining": "0"})  # fmt: skip
        m.get(WORKOUTS, payload=page([workout(1)]), repeat=True)
        await whoop.sync_workouts(ctx)
    assert len(ctx.rows()) == 1

    ctx = make_ctx(http, history_days=70, concurrency=3)
    with upstream() as m:
        m.get(WORKOUTS, status=429, payload={"error": "Too Many Requests"},
              headers={"X-RateLimit-Reset": "45"}, repeat=True)  # fmt: skip
        with pytest.raises(RateLimited) as raised:
            await whoop.sync_workouts(ctx)
    assert raised.value.retry_after_s == 45
    assert isinstance(whoop.map_workout(workout(1)), Workout)
