"""Suunto Cloud API client: workouts by offset pages (several in flight), 24/7 data by windows of
at most 28 days (independent, fetched concurrently), each page written as it lands; webhook
notifications of new workouts and 24/7 data.

Calls carry the user's bearer token and our `Ocp-Apim-Subscription-Key`. `since` arrives in Unix
seconds (the contract) and goes upstream in milliseconds. A 24/7 sync with since=0 reaches back
`WEARSYNC_SUUNTO_247_HISTORY_DAYS` days. The 24/7 entry shapes are those public clients read
(unconfirmed by public docs): HR in bpm, SpO2 as a 0-1 fraction, energy in joules; we store bpm,
percent and kcal. Daily activity statistics take ISO 8601 UTC `startdate`/`enddate` and answer
joules (official). Every fact relied on, with its source: docs/providers/suunto.md; the documented
shapes are kept in wearsync/sim/fixtures/suunto/.
"""

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote
from uuid import UUID

import structlog
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from wearsync.models import DataType, RateLimit
from wearsync.providers.core import Provider, SyncContext, Webhook, WebhookEvent, integer, map_page, num
from wearsync.providers.errors import AccountUnconfirmed, MalformedPayload, WebhookRejected
from wearsync.providers.http import HttpClient
from wearsync.providers.paging import each_concurrently, save_offset_list, time_windows
from wearsync.providers.tokens import TokenSet, request_tokens
from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout
from wearsync.settings import ProviderSettings, RateLimits, Settings

log = structlog.get_logger(__name__)


class SuuntoSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="WEARSYNC_SUUNTO_")

    api_url: str = "https://cloudapi.suunto.com"
    auth_url: str = "https://cloudapi-oauth.suunto.com"
    authorize_url: str = "https://cloudapi-oauth.suunto.com"
    rate_limits: RateLimits = (RateLimit(100, 15 * 60),)
    subscription_key: str = ""  # sent as Ocp-Apim-Subscription-Key with every data call
    webhook_secret: str = ""  # signs Suunto's notifications
    # How far back a 24/7 sync with since=0 ("all available data") reaches.
    history_days_247: int = Field(
        90, ge=1, le=3650, validation_alias=AliasChoices("WEARSYNC_SUUNTO_247_HISTORY_DAYS", "247_history_days")
    )
    page_concurrency: int = Field(4, ge=1, le=32)  # requests in flight per sync


Ctx = SyncContext[SuuntoSettings]

MAX_WINDOW = timedelta(days=28)
JOULES_PER_KCAL = 4184.0

# activityId -> (Suunto's name, our sport). From Suunto's published activity list.
ACTIVITIES: dict[int, tuple[str, str]] = {
    0: ("Walking", "walking"), 1: ("Running", "running"), 2: ("Cycling", "cycling"),
    3: ("Cross-country skiing", "cross_country_skiing"), 10: ("Mountain biking", "mountain_biking"),
    11: ("Hiking", "hiking"), 12: ("Roller skating", "inline_skating"), 13: ("Downhill skiing", "alpine_skiing"),
    14: ("Paddling", "paddling"), 15: ("Rowing", "rowing"), 16: ("Golfing", "golf"), 21: ("Swimming", "swimming"),
    22: ("Trail running", "trail_running"), 23: ("Gym", "strength_training"), 24: ("Nordic walking", "walking"),
    25: ("Horseback riding", "horseback_riding"), 27: ("Skateboarding", "skateboarding"),
    29: ("Climbing", "climbing"), 30: ("Snowboarding", "snowboarding"), 31: ("Ski touring", "backcountry_skiing"),
    32: ("Fitness class", "aerobics"), 33: ("Soccer", "soccer"), 34: ("Tennis", "tennis"),
    35: ("Basketball", "basketball"), 36: ("Badminton", "badminton"), 37: ("Baseball", "baseball"),
    38: ("Volleyball", "volleyball"), 39: ("American football", "american_football"),
    40: ("Table tennis", "table_tennis"), 42: ("Squash", "squash"), 44: ("Handball", "handball"),
    47: ("Cricket", "cricket"), 48: ("Rugby", "rugby"), 49: ("Ice skating", "ice_skating"),
    50: ("Ice hockey", "hockey"),
    51: ("Yoga/pilates", "yoga"), 52: ("Indoor cycling", "indoor_cycling"), 53: ("Treadmill", "treadmill_running"),
    54: ("Crossfit", "crossfit"), 55: ("Crosstrainer", "elliptical"), 57: ("Indoor rowing", "indoor_rowing"),
    58: ("Stretching", "stretching"), 59: ("Track and field", "track_running"), 60: ("Orienteering", "orienteering"),
    61: ("Standup paddling", "stand_up_paddling"), 62: ("Combat sport", "martial_arts"), 64: ("Dancing", "dance"),
    65: ("Snow shoeing", "snowshoeing"), 68: ("Multisport", "multisport"), 69: ("Aerobics", "aerobics"),
    70: ("Trekking", "hiking"), 71: ("Sailing", "sailing"), 72: ("Kayaking", "kayaking"),
    73: ("Circuit training", "strength_training"), 74: ("Triathlon", "triathlon"), 75: ("Padel", "padel"),
    77: ("Boxing", "boxing"), 78: ("Scubadiving", "diving"), 82: ("Canoeing", "canoeing"),
    83: ("Mountaineering", "mountaineering"), 85: ("Openwater swimming", "open_water_swimming"),
    86: ("Windsurfing", "windsurfing"), 87: ("Kitesurfing", "kitesurfing"), 91: ("Surfing", "surfing"),
    99: ("Gravel cycling", "gravel_cycling"), 103: ("Track running", "track_running"),
    105: ("E-biking", "e_biking"), 112: ("Meditation", "meditation"), 120: ("Pilates", "pilates"),
    121: ("Yoga", "yoga"),
}  # fmt: skip

STRESS_STATES = {1: "relaxing", 2: "active", 3: "passive", 4: "stressful"}  # 0 means no reading


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _parse_time(value: str) -> tuple[datetime, int | None]:
    """A Suunto ISO 8601 timestamp as UTC, plus its UTC offset in minutes if it carries one."""
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    if offset is None:
        return parsed.replace(tzinfo=UTC), None
    return parsed.astimezone(UTC), int(offset.total_seconds() // 60)


def _percent(fraction_or_percent: Any) -> float | None:
    value = num(fraction_or_percent)
    if value is None:
        return None
    return value * 100 if value <= 1 else value


# ---- mapping --------------------------------------------------------------------------------


def _first_number(values: Mapping[str, Any], *keys: str) -> float | None:
    """The first of `keys` that `values` holds a number for."""
    for key in keys:
        if values.get(key) is not None:
            return float(values[key])
    return None


def workout_device(w: Mapping[str, Any]) -> Mapping[str, Any]:
    """The recording device: `gear` at the workout's root, or, from newer watches, in its
    SummaryExtension (second-hand); {} if neither."""
    gear = w.get("gear")
    if isinstance(gear, dict):
        return gear
    for extension in w.get("extensions") or []:
        is_summary = isinstance(extension, dict) and extension.get("type") == "SummaryExtension"
        if is_summary and isinstance(extension.get("gear"), dict):
            return extension["gear"]  # type: ignore[no-any-return]
    return {}


def map_workout(w: dict[str, Any], gear: Mapping[str, Any] | None = None) -> Workout:
    """One workout as listed (`workoutKey`) or fetched alone (documented as `key`). `gear`: the
    device a webhook notification names beside the workout, if the workout names none."""
    key = w.get("workoutKey", w.get("key"))
    if key is None:
        raise KeyError("workoutKey")
    start = _from_ms(w["startTime"])
    total_time = num(w.get("totalTime"))
    # `stopTime` can be missing from fresh payloads: start + totalTime.
    end = _from_ms(w["stopTime"]) if w.get("stopTime") is not None else start + timedelta(seconds=total_time or 0)
    activity_id = int(w["activityId"])
    suunto_name, sport = ACTIVITIES.get(activity_id, (f"activityId {activity_id}", "other"))
    # Documented: workoutAvgHR / workoutMaxHR (and userMaxHR); live answers may also carry
    # avg / hrmax / max. `max` and `userMaxHR` are the user's configured maximum, not this workout's.
    hr = w.get("hrdata") or {}
    # Cadence: avgCadence / maxCadence, or `cadence` as one number (documented) or {"avg", "max"}.
    cadence = w.get("cadence")
    cadence_avg, cadence_max = (
        (num(cadence.get("avg")), num(cadence.get("max"))) if isinstance(cadence, dict) else (num(cadence), None)
    )
    device = workout_device(w) or gear or {}
    return Workout(
        provider_record_id=str(key),
        sport=sport,
        provider_sport=suunto_name,
        start_time=start,
        end_time=end,
        raw=w,
        name=w.get("name"),
        utc_offset_minutes=integer(w.get("timeOffsetInMinutes")),
        duration_s=total_time,
        distance_m=num(w.get("totalDistance")),
        energy_kcal=num(w.get("energyConsumption")),
        steps=integer(w.get("stepCount")),
        avg_hr=_first_number(hr, "workoutAvgHR", "avg"),
        max_hr=_first_number(hr, "workoutMaxHR", "hrmax"),
        min_hr=num(hr.get("min")),
        avg_speed_mps=num(w.get("avgSpeed")),
        max_speed_mps=num(w.get("maxSpeed")),
        ascent_m=num(w.get("totalAscent")),
        descent_m=num(w.get("totalDescent")),
        max_altitude_m=num(w.get("maxAltitude")),
        min_altitude_m=num(w.get("minAltitude")),
        avg_power_w=num(w.get("avgPower")),
        max_power_w=num(w.get("maxPower")),
        avg_cadence=_first_number(w, "avgCadence") if w.get("avgCadence") is not None else cadence_avg,
        max_cadence=_first_number(w, "maxCadence") if w.get("maxCadence") is not None else cadence_max,
        device_name=device.get("displayName") or device.get("name"),
    )


def map_sleep(entry: dict[str, Any]) -> SleepSession:
    data = entry["entryData"]
    start, offset = _parse_time(data["BedtimeStart"])
    end, _ = _parse_time(data["BedtimeEnd"])
    duration = num(data.get("Duration"))
    stages = [num(data.get(k)) for k in ("DeepSleepDuration", "LightSleepDuration", "REMSleepDuration")]
    awake = max(0.0, duration - sum(s or 0 for s in stages)) if duration is not None else None
    return SleepSession(
        provider_record_id=str(data.get("SleepId") or _parse_time(entry["timestamp"])[0].isoformat()),
        start_time=start,
        end_time=end,
        raw=entry,
        utc_offset_minutes=offset,
        is_nap=bool(data.get("IsNap", False)),
        duration_s=duration,
        deep_s=stages[0],
        light_s=stages[1],
        rem_s=stages[2],
        awake_s=awake,
        score=num(data.get("SleepQualityScore")),
        avg_hr=num(data.get("HRAvg")),
        min_hr=num(data.get("HRMin")),
        avg_hrv_ms=num(data.get("AvgHRV")),
        spo2_percent=_percent(data.get("MaxSpo2")),
    )


def map_recovery(entry: dict[str, Any]) -> Recovery:
    data = entry["entryData"]
    recorded_at, offset = _parse_time(entry["timestamp"])
    balance = num(data.get("Balance"))
    return Recovery(
        provider_record_id=recorded_at.isoformat(),
        recorded_at=recorded_at,
        raw=entry,
        utc_offset_minutes=offset,
        score=balance * 100 if balance is not None else None,  # body resources, 0-1 upstream
        stress_state=STRESS_STATES.get(integer(data.get("StressState")) or 0),
    )


def map_activity(entry: dict[str, Any]) -> list[Sample]:
    data = entry["entryData"]
    at, _ = _parse_time(entry["timestamp"])
    values = {
        "heart_rate": num(data.get("HR")),
        "steps": num(data.get("StepCount")),
        "energy": None if data.get("EnergyConsumption") is None else float(data["EnergyConsumption"]) / JOULES_PER_KCAL,
        "spo2": _percent(data.get("SpO2")),
        "hrv_rmssd": num(data.get("HRV")) or None,  # 0 means no reading
    }
    return [Sample(kind, at, value, entry) for kind, value in values.items() if value is not None]


def map_daily_statistics(stats: list[dict[str, Any]]) -> list[Record]:
    """Suunto groups daily values by statistic and source, each day a sample at its bucket's start
    (UTC, no offset); we make one row per day. Where several sources report a day, the largest
    value wins (they overlap, so adding would double). `Value` null means no data: a day with
    none is no row (so it never blanks a day stored before)."""
    days: dict[date, dict[str, Any]] = {}
    for stat in stats:
        name = stat["Name"].lower()
        for source in stat.get("Sources") or []:
            for sample in source.get("Samples") or []:
                day = datetime.fromisoformat(sample["TimeISO8601"]).date()
                row = days.setdefault(day, {"date": day.isoformat()})
                row.setdefault(name, []).append({"source": source.get("Name"), "Value": sample["Value"]})

    def best(row: dict[str, Any], name: str) -> float | None:
        values = [float(v["Value"]) for v in row.get(name, []) if v["Value"] is not None]
        return max(values) if values else None

    rows: list[Record] = []
    for day, row in sorted(days.items()):
        steps, joules = best(row, "stepcount"), best(row, "energyconsumption")
        if steps is None and joules is None:
            continue
        rows.append(
            DailyActivity(
                provider_record_id=day.isoformat(),
                day=day,
                raw=row,
                steps=int(steps) if steps is not None else None,
                energy_kcal=joules / JOULES_PER_KCAL if joules is not None else None,
            )
        )
    return rows


# ---- sync -----------------------------------------------------------------------------------


# A record modified while a sync ran may be listed before it changed: the next incremental sync
# starts this much before the last one did. Late 24/7 data gets the same grace.
CURSOR_OVERLAP = timedelta(minutes=10)
LATE_247 = timedelta(days=2)


def workouts_since_ms(ctx: Ctx) -> int:
    """`since` as given; else, with the default modification-time filter from offset 0, from where
    the last successful sync started (so an unchanged account costs one call); else all data."""
    p = ctx.params
    if p.since is not None:
        return p.since * 1000
    if ctx.cursor and p.filter_by_modification_time and p.offset == 0:
        return int(ctx.cursor["modified_since_ms"])
    return 0


async def sync_workouts(ctx: Ctx) -> None:
    p = ctx.params
    url = f"{ctx.config.api_url}/v3/workouts/"
    query = {
        "since": workouts_since_ms(ctx),
        "limit": p.limit,
        "filter-by-modification-time": "true" if p.filter_by_modification_time else "false",
    }

    async def fetch(offset: int) -> list[dict[str, Any]]:
        body = await ctx.get_json(url, params=query | {"offset": offset})
        if not isinstance(body, dict) or not isinstance(body.get("payload", []), list):
            raise MalformedPayload(f"GET {url} returned no workout list: {str(body)[:200]}")
        if body.get("error"):
            raise MalformedPayload(f"GET {url} returned an error: {body['error']}")
        payload: list[dict[str, Any]] = body.get("payload") or []
        return payload

    # Listed by modification time (by default), a workout changed meanwhile moves to the end.
    await save_offset_list(
        ctx, fetch, map_workout, start=p.offset, limit=p.limit, concurrency=ctx.config.page_concurrency,
        record_key=lambda w: str(w.get("workoutKey")), page_key=lambda offset: f"offset:{offset}",
        page_offset=lambda key: int(key.removeprefix("offset:")),
    )  # fmt: skip
    if p.filter_by_modification_time and p.offset == 0:
        ctx.advance_cursor({"modified_since_ms": _ms(ctx.started_at - CURSOR_OVERLAP)})


_SAMPLES_247: dict[str, Callable[[Any], Record | Sequence[Record]]] = {
    "/247samples/sleep": map_sleep,
    "/247samples/recovery": map_recovery,
    "/247samples/activity": map_activity,
}
DAILY_STATISTICS = "/247/daily-activity-statistics"
ALL_247 = (*_SAMPLES_247, DAILY_STATISTICS)

Call247 = tuple[str, datetime, datetime]  # (path, window start, window end)


def _utc_midnight(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_statistics_params(start: datetime, end: datetime) -> dict[str, str]:
    """[start, end) as the endpoint takes it: ISO 8601 in UTC without an offset (one written
    +0200 is refused: second-hand), to the second, the end inclusive (as the official example)."""
    last = end - timedelta(seconds=1)
    return {
        "startdate": f"{start.astimezone(UTC):%Y-%m-%dT%H:%M:%S}",
        "enddate": f"{last.astimezone(UTC):%Y-%m-%dT%H:%M:%S}",
    }


def calls_247(start: datetime, end: datetime, paths: Sequence[str] = ALL_247) -> list[Call247]:
    """The calls covering [start, end): each samples endpoint by windows of at most 28 days (epoch
    ms `from`/`to`); daily statistics by windows of at most 28 days from the first UTC midnight,
    so that each of its 24-hour buckets, which start at `startdate`, is one UTC day."""
    calls = [
        (path, *window) for window in time_windows(start, end, MAX_WINDOW) for path in paths if path in _SAMPLES_247
    ]
    if DAILY_STATISTICS in paths:
        calls += [(DAILY_STATISTICS, *window) for window in time_windows(_utc_midnight(start), end, MAX_WINDOW)]
    return calls


async def fetch_247(ctx: Ctx, calls: Sequence[Call247]) -> None:
    """Fetch and store each call's page, several in flight; pages stored by an earlier run of the
    task are skipped."""
    await ctx.set_pages_total(len(calls))

    def key(call: Call247) -> str:
        path, window_start, _ = call
        return f"{path}@{_ms(window_start)}"

    async def fetch(call: Call247) -> tuple[str, list[Record]]:
        path, window_start, window_end = call
        url = f"{ctx.config.api_url}{path}"
        if path == DAILY_STATISTICS:
            params: dict[str, str | int] = {**daily_statistics_params(window_start, window_end)}
        else:
            params = {"from": _ms(window_start), "to": _ms(window_end)}
        body = await ctx.get_json(url, params=params)
        if body is None:
            return key(call), []
        if not isinstance(body, list):
            raise MalformedPayload(f"GET {url} returned no list: {str(body)[:200]}")
        if path == DAILY_STATISTICS:
            return key(call), map_page([body], map_daily_statistics)
        return key(call), map_page(body, _SAMPLES_247[path])

    concurrency = ctx.config.page_concurrency
    todo = [call for call in calls if key(call) not in ctx.done]
    async with aclosing(
        each_concurrently(todo, fetch, concurrency=concurrency, max_fetches=ctx.fetch_allowance())
    ) as pages:
        async for page_key, records in pages:
            await ctx.save_page(records, page_key, len(records))


async def sync_247(ctx: Ctx) -> None:
    end = ctx.started_at  # fixed for the task, so that a rerun's windows (and page keys) match
    if ctx.params.since:
        start = _from_ms(ctx.params.since * 1000)
    elif ctx.params.since is None and ctx.cursor:  # continue where the last sync got to
        start = max(_from_ms(ctx.cursor["to_ms"]) - LATE_247, end - timedelta(days=ctx.config.history_days_247))
    else:
        start = end - timedelta(days=ctx.config.history_days_247)
    await fetch_247(ctx, calls_247(start, end))
    ctx.advance_cursor({"to_ms": _ms(end)})


# ---- webhook notifications ----------------------------------------------------------------------

WORKOUT_CREATED = "WORKOUT_CREATED"
# A 24/7 notification: the endpoints whose data it announces.
NOTIFIED_247: dict[str, tuple[str, ...]] = {
    "SUUNTO_247_SLEEP_CREATED": ("/247samples/sleep",),
    "SUUNTO_247_RECOVERY_CREATED": ("/247samples/recovery",),
    "SUUNTO_247_ACTIVITY_CREATED": ("/247samples/activity", DAILY_STATISTICS),
}


def verify_webhook(headers: Mapping[str, str], body: bytes, config: SuuntoSettings, settings: Settings) -> None:
    """HMAC-SHA256 of the raw body under WEARSYNC_SUUNTO_WEBHOOK_SECRET, hex, in
    `X-HMAC-SHA256-Signature` (second-hand: public clients), compared in constant time."""
    secret = config.webhook_secret
    if not secret:
        raise WebhookRejected("WEARSYNC_SUUNTO_WEBHOOK_SECRET is not set, so no notification can be trusted")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    # As bytes: compare_digest refuses str with non-ASCII characters, which a header may hold.
    given = headers.get("X-HMAC-SHA256-Signature", "").lower().encode("utf-8", "replace")
    if not hmac.compare_digest(given, expected):
        raise WebhookRejected("bad or missing X-HMAC-SHA256-Signature")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def notified_workout_key(payload: Mapping[str, Any]) -> str | None:
    """The workout a notification announces: the embedded workout's `workoutKey` (documented),
    else a `workoutKey` / legacy `workoutid` beside it."""
    workout = payload.get("workout")
    if isinstance(workout, dict) and workout.get("workoutKey") is not None:
        return str(workout["workoutKey"])
    key = payload.get("workoutKey", payload.get("workoutid"))
    return None if key is None else str(key)


def parse_webhook(payload: Any) -> list[WebhookEvent]:
    """One notification is at most one event. Documented: `{"type": "WORKOUT_CREATED", "username",
    "workout": {... "workoutKey"}, "gear"}`; 24/7 types carry samples (second-hand). Routes and
    types we do not know are acknowledged and not stored. A workout's event key is its key and
    a digest of what it says, so a redelivery is a duplicate and a later change is not; a 24/7
    event's key is a digest of the whole notification."""
    if not isinstance(payload, dict):
        raise MalformedPayload("a Suunto notification is a JSON object")
    kind = payload.get("type", WORKOUT_CREATED)  # the legacy form carried no type: workouts only
    if not isinstance(kind, str):
        raise MalformedPayload("a Suunto notification's type is a string")
    if kind != WORKOUT_CREATED and kind not in NOTIFIED_247:
        log.info("suunto notification acknowledged, not stored", type=kind[:100])
        return []
    if not isinstance(payload.get("username"), str) or not payload["username"]:
        raise MalformedPayload(f"a Suunto {kind} notification needs a username")
    if kind in NOTIFIED_247:
        return [WebhookEvent(f"data_247.{kind.lower()}", payload["username"], f"{kind}:{_digest(payload)}", payload)]
    key = notified_workout_key(payload)
    if key is None:
        raise MalformedPayload("a Suunto WORKOUT_CREATED notification names no workout (workout.workoutKey)")
    version = _digest([payload.get("workout"), payload.get("gear")])
    return [WebhookEvent("workout.workout_created", payload["username"], f"{key}:{version}", payload)]


def _sample_times(samples: Any) -> list[datetime]:
    """The times a 24/7 notification's samples name (`timestamp`; a sleep's bedtimes), those readable."""
    times = []
    for sample in samples if isinstance(samples, list) else []:
        if not isinstance(sample, dict):
            continue
        data = sample.get("entryData")
        data = data if isinstance(data, dict) else {}
        for value in (sample.get("timestamp"), data.get("BedtimeStart"), data.get("BedtimeEnd")):
            if not isinstance(value, str):
                continue
            try:
                times.append(_parse_time(value)[0])
            except ValueError:
                continue
    return times


def notified_window(payload: Mapping[str, Any], now: datetime, reach: timedelta) -> tuple[datetime, datetime]:
    """The window a 24/7 notification's samples cover; without readable times, the last LATE_247.
    A notification names recent data: a time from a watch's wrong clock must not cost a history's
    worth of calls, so the window stays within `reach` before now and a day after."""
    times = _sample_times(payload.get("samples"))
    if not times:
        return now - LATE_247, now
    start = min(max(min(times), now - reach), now)
    end = min(max(times) + timedelta(seconds=1), now + timedelta(days=1))
    return start, max(end, start + timedelta(seconds=1))


async def process_webhook(ctx: Ctx, event: WebhookEvent) -> str | None:
    """A workout: store the one the notification carries (unless one is stored), or fetch it by
    its key when it carries none. 24/7 data: sync the window its samples cover, from the endpoints it announces."""
    payload = event.payload
    kind = payload.get("type", WORKOUT_CREATED)
    if kind in NOTIFIED_247:
        reach = timedelta(days=ctx.config.history_days_247)
        start, end = notified_window(payload, ctx.started_at, reach)
        await fetch_247(ctx, calls_247(start, end, NOTIFIED_247[kind]))
        return f"synced {', '.join(NOTIFIED_247[kind])} from {start.isoformat()} to {end.isoformat()}"
    gear = payload.get("gear") if isinstance(payload.get("gear"), dict) else None
    workout = payload.get("workout")
    if isinstance(workout, dict):
        # The workout as it was created, with no modification time to order it by: a workout
        # stored already (by a sync, or an earlier notification) is as new or newer, and a late
        # or replayed notification must not revert it. Changes reach us through syncs.
        if not await ctx.save_page(map_page([workout], lambda w: map_workout(w, gear)), overwrite=False):
            return "the workout is stored already: a notification of its creation does not replace it"
        return None
    url = f"{ctx.config.api_url}/v3/workouts/{quote(str(notified_workout_key(payload)), safe='')}"
    body = await ctx.get_json(url)
    fetched = body.get("payload") if isinstance(body, dict) else None
    if not isinstance(fetched, dict):
        raise MalformedPayload(f"GET {url} returned no workout: {str(body)[:200]}")
    await ctx.save_page(map_page([fetched], lambda w: map_workout(w, gear)))
    return None


async def revoke(ctx: Ctx) -> None:
    """Withdraw our access (`GET /oauth/deauthorize?client_id=...` on the OAuth host, with the
    user's bearer token): the user's tokens stop working. The answer is a 200 (its body, if any,
    says nothing we use: unconfirmed), so an empty one is fine."""
    url = f"{ctx.config.auth_url}/oauth/deauthorize"
    await ctx.request_json("GET", url, params={"client_id": ctx.config.client_id}, empty_ok=True)


async def identify(http: HttpClient, config: SuuntoSettings, handed: TokenSet, user_id: UUID) -> TokenSet:
    """The account of tokens handed to us: Suunto names it (`user`, the username its notifications
    carry) only in a token response and has no endpoint that says it, so the handed refresh token
    is redeemed once and the new tokens, with their user, are what is stored."""
    if handed.refresh_token is None:
        raise AccountUnconfirmed(
            "Suunto names a token's account only in a token response: send the refresh_token, which"
            " wearsync redeems once to learn it"
        )
    tokens = await request_tokens(
        http, PROVIDER, config, {"grant_type": "refresh_token", "refresh_token": handed.refresh_token}
    )
    if tokens.provider_user_id is None:
        raise MalformedPayload("Suunto's token response names no user")
    return dataclasses.replace(tokens, scopes=tokens.scopes or handed.scopes)


PROVIDER = Provider(
    name="suunto",
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="pull",
    config=SuuntoSettings,
    token_path="/oauth/token",
    client_auth="basic",
    sync={DataType.WORKOUTS: sync_workouts, DataType.DATA_247: sync_247},
    params=("since", "limit", "offset", "filter_by_modification_time"),
    api_headers=lambda config: {"Ocp-Apim-Subscription-Key": config.subscription_key},
    webhook=Webhook(
        verify=verify_webhook,
        parse=parse_webhook,
        process=process_webhook,
        max_body_bytes=1024 * 1024,  # a notification may carry the whole workout
    ),
    authorize_path="/oauth/authorize",  # no scope parameter: Suunto grants the app's configured access
    identify=identify,
    revoke=revoke,
)
