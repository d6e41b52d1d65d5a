"""Garmin Health API client: backfill requests, the webhook receivers that bring the data, pulls
of summaries, and their mapping to our rows.

Garmin pushes its data to our webhook (push: summaries inline; ping: a callbackURL to GET). A
sync therefore stores nothing itself: it *asks* Garmin for a backfill of a range, which Garmin
answers `202 Accepted` at once and delivers later through the webhook. A request spans at most
30 days, so a range is cut into 30-day windows; one asked before is answered `409` (duplicate),
which counts as requested too; one answered `403` means the user did not grant us their history
(not a refused token: the data type fails saying so, the connection stays active, and later pushes
still land). Garmin serves history from about a month before the user first connected to our app;
a window before that is accepted but never delivered. Each request is a page of the task (a rerun skips it) and a row of
`garmin_backfills` (task, user, type, window, status accepted | duplicate); every delivery then
adds its summaries to the rows of that user and type whose window holds their start time, so the
task endpoint shows how many windows have been delivered since (`backfill`).

Webhook (`POST /api/v1/webhooks/garmin/<WEARSYNC_GARMIN_WEBHOOK_PATH_SECRET>`, one URL for every
summary type: a body names its type by its top-level key):
- Garmin does not sign its deliveries: a delivery is taken as Garmin's for arriving at the URL with
  our path secret (any other URL answers 404) with our client id in its `garmin-client-id` header
  (else 401, nothing stored), as anyone who can post to it and knows a user's Garmin id could
  write that user's rows or deactivate the connection. A forged ping still cannot
  send the user's token off the configured Garmin API host.
- Push `{"<type>": [summary, ...]}` and ping `{"<type>": [{"userId", "callbackURL"}]}` for the
  types we store (activities, dailies, epochs, sleeps, hrv): one event per (type, user) of a push,
  keyed by a hash of the type, user and summaries, and one per ping, keyed by its callback URL, so
  a redelivery is a duplicate. Other types (stressDetails, bodyComps, ...) are acknowledged and
  dropped: we never ask for them and hold no table for them.
- Deregistration `{"deregistrations": [{"userId", ...}]}`: the connection is deactivated. Not
  deduplicated (Garmin's body carries nothing that tells a reconnected user's next deregistration
  from a redelivery); deactivating twice is harmless, the second is `ignored`.
- User permission change `{"userPermissionsChange": [{"userId", "permissions", ...}]}`: the
  connection's `scopes` become the permissions the user still grants (ACTIVITY_EXPORT,
  HEALTH_EXPORT, ...); with none left the connection is deactivated. Changes are applied in the
  order they are processed (changeTimeInSeconds is not compared).

Choices (facts marked unconfirmed in the spec, or ours):
- Without `summary_start_time` / `summary_end_time` a sync asks for the last
  `WEARSYNC_GARMIN_BACKFILL_DAYS` (30) days ending when the task first started (a rerun asks for
  the same windows); with only one of them, the range reaches that far from it (or ends then).
- workouts -> `activities`; 247 -> `dailies`, `epochs`, `sleeps`, `hrv`: exactly the summaries we
  map to rows. `stressDetails`, `bodyComps` and `userMetrics` are not requested: no table of ours
  holds stress levels, body composition or VO2max, and Garmin would deliver them only to be dropped.
- The task of a sync stays `running` after its requests (its data types `awaiting_delivery`) until
  every window it asked for has had a delivery, or we already hold a Garmin row starting in it
  (Garmin sends a window asked for again as before, and such a delivery is dropped as a duplicate
  at receipt); it then succeeds. Garmin says neither how many deliveries a window makes nor when
  it is done: the first counts. A window with no data at Garmin (no activity in those 30 days, or
  before its reach) is never delivered: after WEARSYNC_GARMIN_BACKFILL_WAIT_S (a day) the task
  ends `partial`, naming each such window (wearsync.backfills, after each delivery and every
  minute).
- Refresh tokens rotate (Garmin's docs say a refresh returns a new one; unconfirmed); the core
  stores whichever comes back. `refresh_token_expires_in` (about 90 days) is not tracked.
- Rate limit 100 calls per minute per app, the evaluation tier (unconfirmed).
- `pull_summaries` fetches what a ping's callbackURL points at, or an upload range (at most a day
  per call): only from the configured API host, since the user's bearer token goes with it.

Mapping: activities -> Workout (summaryId; activityType to our sports, unknown -> `other` with
Garmin's type kept; energy = activeKilocalories). dailies -> DailyActivity keyed by calendarDate
(a later version of the day replaces it), energy = active + BMR (None without BMR), plus
heart_rate samples from timeOffsetHeartRateSamples. epochs -> steps and (active) energy samples
per 15 minutes, summed over the activity types of a slot. sleeps -> SleepSession ending at the end of the last
sleepLevelsMap stage (awake included; durationInSeconds counts only the time asleep), duration_s =
end - start; score = overallSleepScore.value; Garmin reports no naps here).
hrv -> Recovery at the end of the night's measurement, hrv_rmssd_ms = lastNightAvg.
"""

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from yarl import URL

from wearsync.models import DataType, RateLimit
from wearsync.providers.core import (
    Deliveries,
    Provider,
    SyncContext,
    UnsignedWebhookSettings,
    Webhook,
    WebhookEvent,
    integer,
    map_page,
    num,
)
from wearsync.providers.errors import MalformedPayload, NotSupported, ProviderError, UpstreamError, WebhookRejected
from wearsync.providers.http import HttpClient, Params
from wearsync.providers.paging import each_concurrently, time_windows
from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout
from wearsync.settings import RateLimits, Settings

log = structlog.get_logger(__name__)


class GarminSettings(UnsignedWebhookSettings):
    model_config = SettingsConfigDict(env_prefix="WEARSYNC_GARMIN_")

    api_url: str = "https://apis.garmin.com"
    auth_url: str = "https://diauth.garmin.com"
    authorize_url: str = "https://connect.garmin.com"
    rate_limits: RateLimits = (RateLimit(100, 60),)  # evaluation-tier figure (unconfirmed)
    backfill_days: int = Field(30, ge=1, le=3650)  # a sync without a range asks for this many days
    # How long a sync waits, running, for the deliveries of the backfills it asked for.
    backfill_wait_s: float = Field(86400, ge=0)


Ctx = SyncContext[GarminSettings]

NAME = "garmin"
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


def _offset_minutes(summary: dict[str, Any]) -> int | None:
    offset = summary.get("startTimeOffsetInSeconds")
    return None if offset is None else round(int(offset) / 60)


# ---- mapping --------------------------------------------------------------------------------


def map_activity(a: dict[str, Any]) -> Workout:
    start = _from_s(a["startTimeInSeconds"])
    duration = num(a.get("durationInSeconds"))
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
        distance_m=num(a.get("distanceInMeters")),
        energy_kcal=num(a.get("activeKilocalories")),
        steps=integer(a.get("steps")),
        avg_hr=num(a.get("averageHeartRateInBeatsPerMinute")),
        max_hr=num(a.get("maxHeartRateInBeatsPerMinute")),
        avg_speed_mps=num(a.get("averageSpeedInMetersPerSecond")),
        max_speed_mps=num(a.get("maxSpeedInMetersPerSecond")),
        ascent_m=num(a.get("totalElevationGainInMeters")),
        descent_m=num(a.get("totalElevationLossInMeters")),
        avg_cadence=num(a.get("averageRunCadenceInStepsPerMinute", a.get("averageBikeCadenceInRoundsPerMinute"))),
        max_cadence=num(a.get("maxRunCadenceInStepsPerMinute", a.get("maxBikeCadenceInRoundsPerMinute"))),
        device_name=a.get("deviceName"),
    )


def map_daily(d: dict[str, Any]) -> list[Record]:
    active, bmr = num(d.get("activeKilocalories")), num(d.get("bmrKilocalories"))
    day: list[Record] = [
        DailyActivity(
            provider_record_id=str(d["calendarDate"]),
            day=date.fromisoformat(d["calendarDate"]),
            raw=d,
            steps=integer(d.get("steps")),
            energy_kcal=active + bmr if active is not None and bmr is not None else None,
            active_energy_kcal=active,
            distance_m=num(d.get("distanceInMeters")),
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


def sleep_end(s: dict[str, Any]) -> int:
    """When a night ended (Unix seconds): the end of its last `sleepLevelsMap` stage, awake ones
    included. `durationInSeconds` counts only the time asleep, so without stages the awake time
    is added to it (our assumption: Garmin documents no other end)."""
    stage_ends = [
        int(stage["endTimeInSeconds"])
        for stages in (s.get("sleepLevelsMap") or {}).values()
        if isinstance(stages, list)
        for stage in stages
        if isinstance(stage, dict) and stage.get("endTimeInSeconds") is not None
    ]
    if stage_ends:
        return max(stage_ends)
    asleep, awake = int(s.get("durationInSeconds") or 0), int(s.get("awakeDurationInSeconds") or 0)
    return int(s["startTimeInSeconds"]) + asleep + awake


def map_sleep(s: dict[str, Any]) -> SleepSession:
    """duration_s is the whole session (start to end, awake time included), as for the other
    providers; the time asleep is the sum of the stages (and Garmin's durationInSeconds, in raw)."""
    start, end = _from_s(s["startTimeInSeconds"]), _from_s(sleep_end(s))
    score = s.get("overallSleepScore") or {}
    return SleepSession(
        provider_record_id=str(s["summaryId"]),
        start_time=start,
        end_time=end,
        raw=s,
        utc_offset_minutes=_offset_minutes(s),
        duration_s=(end - start).total_seconds(),
        deep_s=num(s.get("deepSleepDurationInSeconds")),
        light_s=num(s.get("lightSleepDurationInSeconds")),
        rem_s=num(s.get("remSleepInSeconds")),
        awake_s=num(s.get("awakeDurationInSeconds")),
        score=num(score.get("value")),
    )


def map_hrv(h: dict[str, Any]) -> Recovery:
    end = int(h["startTimeInSeconds"]) + int(h.get("durationInSeconds") or 0)
    return Recovery(
        provider_record_id=str(h["summaryId"]),
        recorded_at=_from_s(end),
        raw=h,
        utc_offset_minutes=_offset_minutes(h),
        hrv_rmssd_ms=num(h.get("lastNightAvg")),
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


def _callback(ctx: Ctx, summary_type: str, url: str) -> tuple[str, str]:
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


async def pull_summaries(ctx: Ctx, summary_type: str, url_or_range: str | tuple[int, int]) -> int:
    """Fetch the summaries of a ping's callback URL, or of an upload range [start, end) in Unix
    seconds (cut into days, Garmin's limit per call), and store them page by page. Returns how
    many summaries came; a page stored by an earlier run of the task is skipped."""
    return len(await _pull(ctx, summary_type, url_or_range))


async def _pull(ctx: Ctx, summary_type: str, url_or_range: str | tuple[int, int]) -> list[Any]:
    """pull_summaries, returning the summaries stored."""
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
    pulled: list[Any] = []
    for url, params, key in calls:
        if key in ctx.done:
            continue
        body = await ctx.get_json(url, params=params)
        items = [] if body is None else body
        if not isinstance(items, list):
            raise MalformedPayload(f"GET {url} returned no list of {summary_type}: {str(body)[:200]}")
        await ctx.save_page(map_summaries(summary_type, items), key, len(items))
        pulled += items
    return pulled


async def user_id(http: HttpClient, config: GarminSettings, access_token: str) -> str:
    """Garmin's id of a token's user (the token response carries none): what its webhooks name
    the user by, so what the connection stores as provider_user_id."""
    url = f"{config.api_url}{REST}/user/id"
    body = await http.get_json(url, headers={"Authorization": f"Bearer {access_token}"}, provider=NAME)
    if not isinstance(body, dict) or not body.get("userId"):
        raise MalformedPayload(f"GET {url} returned no userId: {str(body)[:200]}")
    return str(body["userId"])


async def fetch_user_id(ctx: Ctx) -> str:
    """Garmin's id of the connected user: what its webhook payloads name the user by."""
    body = await ctx.get_json(f"{ctx.config.api_url}{REST}/user/id")
    if not isinstance(body, dict) or not body.get("userId"):
        raise MalformedPayload(f"GET {REST}/user/id returned no userId: {str(body)[:200]}")
    return str(body["userId"])


async def revoke(ctx: Ctx) -> None:
    """Withdraw our access (`DELETE /wellness-api/rest/user/registration`, 204): Garmin stops
    sending the user's data and the tokens stop working."""
    await ctx.request_json("DELETE", f"{ctx.config.api_url}{REST}/user/registration")


# ---- sync: backfill requests ----------------------------------------------------------------


def backfill_range(ctx: Ctx) -> tuple[int, int]:
    """[start, end) in Unix seconds: the sync's range, else the configured reach ending when the
    task first started (a rerun cuts the same windows, and skips those it asked for)."""
    p, reach = ctx.params, ctx.config.backfill_days * 86400
    end = p.summary_end_time if p.summary_end_time is not None else int(ctx.started_at.timestamp())
    start = p.summary_start_time if p.summary_start_time is not None else end - reach
    return start, end


class NoHistoricalPermission(ProviderError):
    """Garmin answers a backfill request 403 when the user did not grant us their history
    (HISTORICAL_DATA_EXPORT on Garmin's consent page): not a refused token, so the connection
    stays active and what the user records from now on still arrives by push or ping."""

    def __init__(self, summary_type: str) -> None:
        super().__init__(
            f"the user gave no permission for historical data at Garmin (HISTORICAL_DATA_EXPORT): "
            f"no backfill of {summary_type}; new data still arrives by webhook"
        )


async def request_backfills(ctx: Ctx, summary_types: Sequence[str]) -> None:
    start, end = backfill_range(ctx)
    windows = [
        (int(s.timestamp()), int(e.timestamp())) for s, e in time_windows(_from_s(start), _from_s(end), MAX_BACKFILL)
    ]
    calls = [(kind, s, e) for s, e in windows for kind in summary_types]
    await ctx.set_pages_total(len(calls))
    todo = [call for call in calls if _key(call) not in ctx.done]

    async def ask(call: tuple[str, int, int]) -> tuple[tuple[str, int, int], str]:
        kind, s, e = call
        url = f"{ctx.config.api_url}{REST}/backfill/{kind}"
        try:
            await ctx.get_json(url, params={"summaryStartTimeInSeconds": s, "summaryEndTimeInSeconds": e})
        except UpstreamError as error:
            if error.status == 403:  # the token is fine: the user shares no history with us
                raise NoHistoricalPermission(kind) from None
            if error.status != 409:
                raise
            return call, "duplicate"  # asked before: Garmin delivers it (or has) all the same
        return call, "accepted"

    async with aclosing(
        each_concurrently(todo, ask, concurrency=BACKFILL_CONCURRENCY, max_fetches=ctx.fetch_allowance())
    ) as answers:
        async for (kind, start, end), status in answers:
            await ctx.expect_delivery(kind, _from_s(start), _from_s(end), status, _key((kind, start, end)))


def _key(call: tuple[str, int, int]) -> str:
    kind, start, end = call
    return f"backfill/{kind}@{start}-{end}"


async def sync_workouts(ctx: Ctx) -> None:
    await request_backfills(ctx, WORKOUT_TYPES)


async def sync_247(ctx: Ctx) -> None:
    await request_backfills(ctx, TYPES_247)


# ---- a sync's deliveries: how its task ends (wearsync.backfills) ------------------------------

NOTHING_DELIVERED = (
    "Garmin delivered nothing within {wait:g} s into {windows} (it sends nothing for a window without data, "
    "nor for one from before about 30 days before the user first connected)"
)


def data_type_of(summary_type: str) -> DataType:
    return DataType.WORKOUTS if summary_type in WORKOUT_TYPES else DataType.DATA_247


# ---- webhook: push, ping, deregistration, permission changes --------------------------------

DEREGISTERED = "deregistered by the user at Garmin"
NO_PERMISSION_LEFT = "the user withdrew every permission at Garmin"
MAX_DELIVERY_BYTES = 16 * 1024 * 1024  # a push may hold many users' epochs or dailies


CLIENT_ID_HEADER = "garmin-client-id"


def verify_webhook(headers: Mapping[str, str], body: bytes, config: GarminSettings, settings: Settings) -> None:
    """Garmin signs nothing, but names the app a delivery is for in its `garmin-client-id` header:
    one without our client id is refused (a delivery has reached the URL with our path secret
    before this check). A pushed record lands only on the connection of the user it names."""
    given = headers.get(CLIENT_ID_HEADER)
    if not config.client_id:
        raise WebhookRejected("WEARSYNC_GARMIN_CLIENT_ID is not set: no Garmin delivery can be checked")
    if given is None:
        raise WebhookRejected(f"no {CLIENT_ID_HEADER} header")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), config.client_id.encode()):
        raise WebhookRejected(f"the {CLIENT_ID_HEADER} header is not our client id")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _items(key: str, value: Any) -> list[dict[str, Any]]:
    """The notifications of one top-level key: a list of objects, each naming its userId."""
    if not isinstance(value, list):
        raise MalformedPayload(f"Garmin {key}: expected a list, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("userId"), str) or not item["userId"]:
            raise MalformedPayload(f"Garmin {key}: every entry needs a userId: {str(item)[:200]}")
    return value


def _summary_events(summary_type: str, items: list[dict[str, Any]]) -> list[WebhookEvent]:
    """A push's summaries grouped by user (one event each), and one event per ping."""
    pushed: dict[str, list[dict[str, Any]]] = {}
    events: dict[str, WebhookEvent] = {}
    for item in items:
        user = item["userId"]
        if "callbackURL" not in item:
            pushed.setdefault(user, []).append(item)
            continue
        url = item["callbackURL"]
        if not isinstance(url, str):
            raise MalformedPayload(f"Garmin {summary_type} ping: callbackURL is not a string: {str(item)[:200]}")
        key = f"{summary_type}.ping:{user}:{_digest(summary_type, user, url)}"
        payload = {"summaryType": summary_type, "userId": user, "callbackURL": url}
        events[key] = WebhookEvent(f"{summary_type}.ping", user, key, payload)
    for user, summaries in pushed.items():
        key = f"{summary_type}.push:{user}:{_digest(summary_type, user, summaries)}"
        payload = {"summaryType": summary_type, "userId": user, "summaries": summaries}
        events[key] = WebhookEvent(f"{summary_type}.push", user, key, payload, items=len(summaries))
    return list(events.values())


def parse_webhook(payload: Any) -> list[WebhookEvent]:
    """A delivery's events; its top-level keys name what it holds (see the module docstring)."""
    if not isinstance(payload, dict) or not any(isinstance(v, list) for v in payload.values()):
        raise MalformedPayload("a Garmin delivery is an object of lists keyed by summary or notification type")
    events: list[WebhookEvent] = []
    for key, value in payload.items():
        if key == "deregistrations":
            # Unique per delivery: see the module docstring.
            events += [
                WebhookEvent("deregistration", item["userId"], f"deregistration:{item['userId']}:{uuid.uuid4()}", item)
                for item in _items(key, value)
            ]
        elif key == "userPermissionsChange":
            events += [
                WebhookEvent("permissions", item["userId"], f"permissions:{item['userId']}:{_digest(item)}", item)
                for item in _items(key, value)
            ]
        elif key in PULLED_TYPES:
            events += _summary_events(key, _items(key, value))
        else:
            log.info("garmin webhook: a summary type we do not store, dropped", summary_type=key)
    return events


async def process_webhook(ctx: Ctx, event: WebhookEvent) -> None:
    """Store pushed summaries, or pull a ping's (only from the Garmin API host); then count them
    on the backfill windows they fall in. Deregistrations and permission changes update the
    connection."""
    payload = event.payload
    if event.kind == "deregistration":
        await ctx.deactivate(DEREGISTERED)
        return
    if event.kind == "permissions":
        await _apply_permissions(ctx, payload)
        return
    summary_type = payload["summaryType"]
    if event.kind.endswith(".ping"):
        summaries = await _pull(ctx, summary_type, payload["callbackURL"])
    else:
        summaries = payload["summaries"]
        await ctx.save_page(map_summaries(summary_type, summaries))
    starts = [_from_s(s["startTimeInSeconds"]) for s in summaries if s.get("startTimeInSeconds") is not None]
    if starts:
        await ctx.delivered(summary_type, starts)


async def _apply_permissions(ctx: Ctx, change: dict[str, Any]) -> None:
    """The connection's scopes become the permissions left; none left deactivates it."""
    permissions = change.get("permissions")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise MalformedPayload(f"a Garmin permission change without a list of permissions: {str(change)[:200]}")
    if not permissions:
        await ctx.deactivate(NO_PERMISSION_LEFT)
        return
    await ctx.set_scopes(permissions)


PROVIDER = Provider(
    name=NAME,
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="webhook",
    config=GarminSettings,
    token_path="/di-oauth2-service/oauth/token",
    client_auth="body",
    sync={DataType.WORKOUTS: sync_workouts, DataType.DATA_247: sync_247},
    params=("summary_start_time", "summary_end_time"),
    webhook=Webhook(
        verify=verify_webhook,
        parse=parse_webhook,
        process=process_webhook,
        max_body_bytes=MAX_DELIVERY_BYTES,
        path_secret=True,
        # Garmin documents no maximum; its deliveries carry a day's summaries of a few users.
        max_items=10_000,
    ),
    user_id=user_id,
    # OAuth 2 with PKCE on connect.garmin.com; no scope parameter: the user picks what to share
    # on Garmin's consent page (and may change it later: the permission-change webhook).
    authorize_path="/oauth2Confirm",
    pkce=True,
    revoke=revoke,
    deliveries=Deliveries[GarminSettings](
        wait_s=lambda config: config.backfill_wait_s, data_type_of=data_type_of, nothing_delivered=NOTHING_DELIVERED
    ),
)
