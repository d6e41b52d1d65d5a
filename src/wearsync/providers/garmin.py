"""Garmin Health API client: backfill requests, pulls of summaries, and their mapping to our rows.

Garmin pushes its data to our webhooks (push: summaries inline; ping: a callbackURL to GET). A
sync therefore stores nothing itself: it *asks* Garmin for a backfill of a range, which Garmin
answers `202 Accepted` at once and delivers later through the webhooks. A request spans at most
30 days, so a range is cut into 30-day windows; one asked before is answered `409` (duplicate),
which counts as requested too. Each request is a page of the task (a rerun skips it) and is listed
in the type's progress under `backfill` ({type, start, end, status: accepted | duplicate}).

Choices (facts marked unconfirmed in the spec, or ours):
- Without `summary_start_time` / `summary_end_time` a sync asks for the last
  `WEARSYNC_GARMIN_BACKFILL_DAYS` (30) days ending now; with only one of them, the range reaches
  that far from it (or ends now).
- workouts -> `activities`; 247 -> `dailies`, `epochs`, `sleeps`, `hrv`: exactly the summaries we
  map to rows. `stressDetails`, `bodyComps` and `userMetrics` are not requested: no table of ours
  holds stress levels, body composition or VO2max, and Garmin would deliver them only to be dropped.
- Refresh tokens rotate (Garmin's docs say a refresh returns a new one; unconfirmed); the core
  stores whichever comes back. `refresh_token_expires_in` (about 90 days) is not tracked.
- Rate limit 100 calls per minute per app, the evaluation tier (unconfirmed).
- `pull_summaries` fetches what a ping's callbackURL points at, or an upload range (at most a day
  per call): only from the configured API host, since the user's bearer token goes with it.

Mapping: activities -> Workout (summaryId; activityType to our sports, unknown -> `other` with
Garmin's type kept; energy = activeKilocalories). dailies -> DailyActivity keyed by calendarDate
(a later version of the day replaces it), energy = active + BMR (None without BMR), plus
heart_rate samples from timeOffsetHeartRateSamples. epochs -> steps and (active) energy samples
per 15 minutes, summed over the activity types of a slot. sleeps -> SleepSession (durationInSeconds
spans the stages and awake time; score = overallSleepScore.value; Garmin reports no naps here).
hrv -> Recovery at the end of the night's measurement, hrv_rmssd_ms = lastNightAvg.
"""

from collections.abc import Callable, Sequence
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any

from yarl import URL

from wearsync.db import queries
from wearsync.models import DataType
from wearsync.providers.core import Provider, SyncContext, map_page
from wearsync.providers.errors import MalformedPayload, NotSupported, ProviderError, UpstreamError
from wearsync.providers.http import Params
from wearsync.providers.paging import each_concurrently, time_windows
from wearsync.providers.ratelimit import RateLimit
from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout

REST = "/wellness-api/rest"
MAX_BACKFILL = timedelta(days=30)
MAX_UPLOAD_RANGE_S = 86400
BACKFILL_CONCURRENCY = 4
WORKOUT_TYPES = ("activities",)
TYPES_247 = ("dailies", "epochs", "sleeps", "hrv")

# Garmin activityType -> our sport. From Garmin's activity type list; the rest become `other`.
SPORTS: dict[str, str] = {
    "RUNNING": "running", "STREET_RUNNING": "running", "INDOOR_RUNNING": "treadmill_running",
    "TREADMILL_RUNNING": "treadmill_running", "TRAIL_RUNNING": "trail_running", "TRACK_RUNNING": "track_running",
    "ULTRA_RUN": "trail_running", "VIRTUAL_RUN": "treadmill_running",
    "CYCLING": "cycling", "ROAD_BIKING": "cycling", "INDOOR_CYCLING": "indoor_cycling",
    "VIRTUAL_RIDE": "indoor_cycling", "MOUNTAIN_BIKING": "mountain_biking", "GRAVEL_CYCLING": "gravel_cycling",
    "E_BIKE_FITNESS": "e_biking", "E_BIKE_MOUNTAIN": "e_biking",
    "SWIMMING": "swimming", "LAP_SWIMMING": "swimming", "OPEN_WATER_SWIMMING": "open_water_swimming",
    "WALKING": "walking", "CASUAL_WALKING": "walking", "SPEED_WALKING": "walking", "HIKING": "hiking",
    "STRENGTH_TRAINING": "strength_training", "HIIT": "crossfit", "YOGA": "yoga", "PILATES": "pilates",
    "ELLIPTICAL": "elliptical", "INDOOR_ROWING": "indoor_rowing", "ROWING_V2": "rowing", "ROWING": "rowing",
    "BREATHWORK": "meditation", "MEDITATION": "meditation",
    "CROSS_COUNTRY_SKIING_WS": "cross_country_skiing", "SKATE_SKIING_WS": "cross_country_skiing",
    "RESORT_SKIING_SNOWBOARDING_WS": "alpine_skiing", "BACKCOUNTRY_SKIING": "backcountry_skiing",
    "SNOW_SHOE_WS": "snowshoeing", "SKATING_WS": "ice_skating", "INLINE_SKATING": "inline_skating",
    "KAYAKING_V2": "kayaking", "PADDLING_V2": "paddling", "STAND_UP_PADDLEBOARDING_V2": "stand_up_paddling",
    "SAILING_V2": "sailing", "SURFING_V2": "surfing", "WINDSURFING_V2": "windsurfing",
    "KITEBOARDING_V2": "kitesurfing", "ROCK_CLIMBING": "climbing", "INDOOR_CLIMBING": "climbing",
    "BOULDERING": "climbing", "MOUNTAINEERING": "mountaineering", "GOLF": "golf", "TENNIS": "tennis",
    "PADEL": "padel", "TABLE_TENNIS": "table_tennis", "BADMINTON": "badminton", "SQUASH": "squash",
    "SOCCER": "soccer", "BASKETBALL": "basketball", "VOLLEYBALL": "volleyball", "BOXING": "boxing",
    "MIXED_MARTIAL_ARTS": "martial_arts", "DANCE": "dance", "MULTI_SPORT": "multisport",
    "TRIATHLON": "triathlon", "HORSEBACK_RIDING": "horseback_riding", "SKATEBOARDING": "skateboarding",
}  # fmt: skip


def _from_s(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _offset_minutes(summary: dict[str, Any]) -> int | None:
    offset = summary.get("startTimeOffsetInSeconds")
    return None if offset is None else round(int(offset) / 60)


# ---- mapping --------------------------------------------------------------------------------


def map_activity(a: dict[str, Any]) -> Workout:
    start = _from_s(a["startTimeInSeconds"])
    duration = _num(a.get("durationInSeconds"))
    kind = a.get("activityType")
    return Workout(
        provider_record_id=str(a["summaryId"]),
        sport=SPORTS.get(str(kind).upper(), "other"),
        provider_sport=None if kind is None else str(kind),
        start_time=start,
        end_time=start + timedelta(seconds=duration or 0),
        raw=a,
        name=a.get("activityName"),
        utc_offset_minutes=_offset_minutes(a),
        duration_s=duration,
        distance_m=_num(a.get("distanceInMeters")),
        energy_kcal=_num(a.get("activeKilocalories")),
        steps=_int(a.get("steps")),
        avg_hr=_num(a.get("averageHeartRateInBeatsPerMinute")),
        max_hr=_num(a.get("maxHeartRateInBeatsPerMinute")),
        avg_speed_mps=_num(a.get("averageSpeedInMetersPerSecond")),
        max_speed_mps=_num(a.get("maxSpeedInMetersPerSecond")),
        ascent_m=_num(a.get("totalElevationGainInMeters")),
        descent_m=_num(a.get("totalElevationLossInMeters")),
        avg_cadence=_num(a.get("averageRunCadenceInStepsPerMinute", a.get("averageBikeCadenceInRoundsPerMinute"))),
        max_cadence=_num(a.get("maxRunCadenceInStepsPerMinute", a.get("maxBikeCadenceInRoundsPerMinute"))),
        device_name=a.get("deviceName"),
    )


def map_daily(d: dict[str, Any]) -> list[Record]:
    active, bmr = _num(d.get("activeKilocalories")), _num(d.get("bmrKilocalories"))
    day: list[Record] = [
        DailyActivity(
            provider_record_id=str(d["calendarDate"]),
            day=date.fromisoformat(d["calendarDate"]),
            raw=d,
            steps=_int(d.get("steps")),
            energy_kcal=active + bmr if active is not None and bmr is not None else None,
            active_energy_kcal=active,
            distance_m=_num(d.get("distanceInMeters")),
        )
    ]
    start = int(d["startTimeInSeconds"])
    for offset, bpm in (d.get("timeOffsetHeartRateSamples") or {}).items():
        raw = {"summaryId": d.get("summaryId"), "timeOffset": int(offset), "bpm": bpm}
        day.append(Sample("heart_rate", _from_s(start + int(offset)), float(bpm), raw))
    return day


def map_epochs(epochs: list[dict[str, Any]]) -> list[Record]:
    """Garmin reports a 15-minute slot once per activity type in it: one steps and one energy
    sample per slot, summed over them."""
    slots: dict[int, list[dict[str, Any]]] = {}
    for epoch in epochs:
        slots.setdefault(int(epoch["startTimeInSeconds"]), []).append(epoch)
    samples: list[Record] = []
    for start, parts in sorted(slots.items()):
        raw = {"epochs": parts}
        for kind, name in (("steps", "steps"), ("energy", "activeKilocalories")):
            values = [float(p[name]) for p in parts if p.get(name) is not None]
            if values:
                samples.append(Sample(kind, _from_s(start), sum(values), raw))
    return samples


def map_sleep(s: dict[str, Any]) -> SleepSession:
    start = _from_s(s["startTimeInSeconds"])
    duration = _num(s.get("durationInSeconds"))
    score = s.get("overallSleepScore") or {}
    return SleepSession(
        provider_record_id=str(s["summaryId"]),
        start_time=start,
        end_time=start + timedelta(seconds=duration or 0),
        raw=s,
        utc_offset_minutes=_offset_minutes(s),
        duration_s=duration,
        deep_s=_num(s.get("deepSleepDurationInSeconds")),
        light_s=_num(s.get("lightSleepDurationInSeconds")),
        rem_s=_num(s.get("remSleepInSeconds")),
        awake_s=_num(s.get("awakeDurationInSeconds")),
        score=_num(score.get("value")),
    )


def map_hrv(h: dict[str, Any]) -> Recovery:
    end = int(h["startTimeInSeconds"]) + int(h.get("durationInSeconds") or 0)
    return Recovery(
        provider_record_id=str(h["summaryId"]),
        recorded_at=_from_s(end),
        raw=h,
        utc_offset_minutes=_offset_minutes(h),
        hrv_rmssd_ms=_num(h.get("lastNightAvg")),
    )


def map_summaries(summary_type: str, items: list[Any]) -> list[Record]:
    """One upstream list of summaries of a type as our rows."""
    if summary_type == "epochs":
        return map_page([items], map_epochs)
    mapper: Callable[[Any], Record | Sequence[Record]] = _MAPPERS[summary_type]
    return map_page(items, mapper)


_MAPPERS: dict[str, Callable[[Any], Record | Sequence[Record]]] = {
    "activities": map_activity,
    "dailies": map_daily,
    "sleeps": map_sleep,
    "hrv": map_hrv,
}
PULLED_TYPES = frozenset({*_MAPPERS, "epochs"})


# ---- pulls (what a ping's callbackURL points at) --------------------------------------------


def _callback(ctx: SyncContext, summary_type: str, url: str) -> tuple[str, str]:
    """(url, page key) of a callback URL on the configured Garmin API host; anything else is
    refused, since the user's bearer token goes with the call."""
    api, given = URL(ctx.config.api_url), URL(url)
    expected_path = f"{api.path.rstrip('/')}{REST}/{summary_type}"
    if (given.scheme, given.host, given.port) != (api.scheme, api.host, api.port):
        raise ProviderError(f"refusing Garmin callback URL {url}: not on the Garmin API host {api.origin()}")
    if given.path != expected_path:
        raise ProviderError(f"refusing Garmin callback URL {url}: expected path {expected_path}")
    start, end = given.query.get("uploadStartTimeInSeconds"), given.query.get("uploadEndTimeInSeconds")
    return url, f"{summary_type}@{start}-{end}" if start and end else f"{summary_type}@{url}"


async def pull_summaries(ctx: SyncContext, summary_type: str, url_or_range: str | tuple[int, int]) -> int:
    """Fetch the summaries of a ping's callback URL, or of an upload range [start, end) in Unix
    seconds (cut into days, Garmin's limit per call), and store them page by page. Returns how
    many summaries came; a page stored by an earlier run of the task is skipped."""
    if summary_type not in PULLED_TYPES:
        raise NotSupported(f"Garmin {summary_type} summaries have no rows of ours to land in")
    calls: list[tuple[str, Params | None, str]]
    if isinstance(url_or_range, str):
        url, key = _callback(ctx, summary_type, url_or_range)
        calls = [(url, None, key)]
    else:
        start, end = url_or_range
        url = f"{ctx.config.api_url}{REST}/{summary_type}"
        calls = [
            (url, {"uploadStartTimeInSeconds": s, "uploadEndTimeInSeconds": e}, f"{summary_type}@{s}-{e}")
            for s, e in ((s, min(s + MAX_UPLOAD_RANGE_S, end)) for s in range(start, end, MAX_UPLOAD_RANGE_S))
        ]
    pulled = 0
    for url, params, key in calls:
        if key in ctx.done:
            continue
        body = await ctx.get_json(url, params=params)
        items = [] if body is None else body
        if not isinstance(items, list):
            raise MalformedPayload(f"GET {url} returned no list of {summary_type}: {str(body)[:200]}")
        await ctx.save_page(map_summaries(summary_type, items), key, len(items))
        pulled += len(items)
    return pulled


async def fetch_user_id(ctx: SyncContext) -> str:
    """Garmin's id of the connected user: what its webhook payloads name the user by."""
    body = await ctx.get_json(f"{ctx.config.api_url}{REST}/user/id")
    if not isinstance(body, dict) or not body.get("userId"):
        raise MalformedPayload(f"GET {REST}/user/id returned no userId: {str(body)[:200]}")
    return str(body["userId"])


# ---- sync: backfill requests ----------------------------------------------------------------


def backfill_range(ctx: SyncContext) -> tuple[int, int]:
    """[start, end) in Unix seconds: the sync's range, else the configured reach ending now."""
    p, reach = ctx.params, ctx.settings.garmin_backfill_days * 86400
    end = p.summary_end_time if p.summary_end_time is not None else int(datetime.now(UTC).timestamp())
    start = p.summary_start_time if p.summary_start_time is not None else end - reach
    return start, end


async def _earlier_backfills(ctx: SyncContext) -> list[dict[str, Any]]:
    """The backfill requests an earlier run of this task recorded (a rerun adds to them)."""
    assert ctx.task_id is not None, "backfills are requested by sync tasks"
    task = await queries.get_task(ctx.db, ctx.task_id)
    progress = task["progress"].get(ctx.data_type.value, {}) if task is not None else {}
    return list(progress.get("backfill") or [])


async def _record_backfill(ctx: SyncContext, page_key: str, requested: list[dict[str, Any]]) -> None:
    """Count one request as a page, mark it done and list it, in one statement."""
    assert ctx.task_id is not None, "backfills are requested by sync tasks"
    await queries.update_type_progress(
        ctx.db, ctx.task_id, ctx.data_type, pages=1, done={page_key: 0}, backfill=requested
    )


async def request_backfills(ctx: SyncContext, summary_types: Sequence[str]) -> None:
    start, end = backfill_range(ctx)
    windows = [
        (int(s.timestamp()), int(e.timestamp())) for s, e in time_windows(_from_s(start), _from_s(end), MAX_BACKFILL)
    ]
    calls = [(kind, s, e) for s, e in windows for kind in summary_types]
    await ctx.set_pages_total(len(calls))
    todo = [call for call in calls if _key(call) not in ctx.done]
    if not todo:
        return
    requested = await _earlier_backfills(ctx)

    async def ask(call: tuple[str, int, int]) -> tuple[tuple[str, int, int], str]:
        kind, s, e = call
        url = f"{ctx.config.api_url}{REST}/backfill/{kind}"
        try:
            await ctx.get_json(url, params={"summaryStartTimeInSeconds": s, "summaryEndTimeInSeconds": e})
        except UpstreamError as error:
            if error.status != 409:
                raise
            return call, "duplicate"  # asked before: Garmin delivers it (or has) all the same
        return call, "accepted"

    async with aclosing(each_concurrently(todo, ask, concurrency=BACKFILL_CONCURRENCY)) as answers:
        async for (kind, s, e), status in answers:
            requested.append({"type": kind, "start": s, "end": e, "status": status})
            await _record_backfill(ctx, _key((kind, s, e)), requested)


def _key(call: tuple[str, int, int]) -> str:
    kind, start, end = call
    return f"backfill/{kind}@{start}-{end}"


async def sync_workouts(ctx: SyncContext) -> None:
    await request_backfills(ctx, WORKOUT_TYPES)


async def sync_247(ctx: SyncContext) -> None:
    await request_backfills(ctx, TYPES_247)


PROVIDER = Provider(
    name="garmin",
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="webhook",
    token_path="/di-oauth2-service/oauth/token",
    client_auth="body",
    rate_limits=(RateLimit(100, 60),),  # evaluation-tier figure (unconfirmed)
    sync={DataType.WORKOUTS: sync_workouts, DataType.DATA_247: sync_247},
)
