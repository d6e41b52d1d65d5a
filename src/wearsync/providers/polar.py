"""Polar AccessLink v3 client: exercises, and sleep, nightly recharge, daily activity and
continuous heart rate as 24/7 data.

AccessLink serves data only to users our app has registered (`POST /v3/users` with our
`member-id`); a sync registers first and takes 409 (already registered) as success, then keeps
which Polar account it registered in its cursor, to skip that call next time. `GET /v3/exercises`
then answers the last 30 days in one list: one call, one page.
The contract's `samples`, `zones` and `route` go upstream as true/false. A sample series is
AccessLink's `sample` schema: `sample-type`, `recording-rate` (seconds) and `data`, the values
comma-separated, where `null` (or nothing) marks a moment the sensor was offline. Heart-rate series
(type "0") become `heart_rate` Sample rows at start + i * recording-rate, gaps skipped; the other
sample types, the zones and the route stay in the workout's raw JSON only (our choice: the samples
table keeps the types every provider shares). docs/providers/polar.md lists the upstream facts
this relies on and where each comes from.

Polar tokens are long-lived and come without a refresh token: a refused token deactivates the
connection (the shared Credentials.refresh). Rate limits: AccessLink allows an app 500 + 20 x its
registered users calls per 15 minutes and 5,000 + 100 x users per 24 hours (second-hand: not in
the spec); the limiter counts the floor, 500 and 5,000, which no user count undercuts
(WEARSYNC_POLAR_RATE_LIMITS raises it), and a 429 is honoured by the shared HTTP core.

The sport names below are those of Polar's sport list as public clients read them (unconfirmed
by AccessLink's docs); an unknown `detailed_sport_info` falls back to `sport`, then to "other",
keeping Polar's name.

Webhooks: a delivery is signed with `Polar-Webhook-Signature`, the hex HMAC-SHA256 of the raw
body under the signature secret Polar returned when the webhook was created
(WEARSYNC_POLAR_WEBHOOK_SECRET). Polar signs no time apart from the body (whose `timestamp` is
when the notification was sent, says the spec), so none is checked for age: a replay is a
duplicate of a stored event. `PING` (sent when the webhook is created or changed) names no user:
it is acknowledged, signed or not (see verify_webhook), and nothing is stored. `EXERCISE` names
the exercise by `entity_id` and `url`: the worker fetches it only if the URL is exactly
`<WEARSYNC_POLAR_API_URL>/v3/exercises/<entity_id>` (anything else fails the event, no request
made: no server-side request forgery), without samples, zones or route (our choice: one light
call per exercise; a sync asks for those), and upserts it as a sync would, so the row's raw JSON
is the exercise without those fields. `SLEEP`, `ACTIVITY_SUMMARY` and `CONTINUOUS_HEART_RATE` name
a date: the worker fetches that date's sleep (and its nightly recharge), activity or heart rate
from our configured API (never the event's `url`) and upserts it; a date Polar has nothing for
(404, 204) stores nothing. Other events (SleepWise) are stored and left alone.

24/7 data (data_type=247): `GET /v3/users/sleep` (the nights of the last 28 days) as sleep,
`/v3/users/nightly-recharge` (28 days) as recovery, `/v3/users/activities` (28 days) as daily
activity, each one call, and continuous heart rate day by day (`/continuous-heart-rate/{date}`,
the spec gives the date-range call the same one-day schema) for the last HEART_RATE_DAYS days, as
`heart_rate` samples, each day a page a rerun skips; the cursor keeps the last day fetched, so the
next sync starts there. Keys: a sleep, a recharge and an activity day by their date. Mapping
choices: a sleep's duration is end - start, awake time is `total_interruption_duration`; a
recharge is recorded at 00:00 UTC of its date (the spec gives only the date), its `heart_rate_avg`
is the resting heart rate and `heart_rate_variability_avg` the RMSSD (the spec says RMSSD), its
1-6 status stays in `raw` (the score column is 0-100); an activity's day is the date of its
`start_time`. Continuous heart-rate times are the device's local times of day without an offset:
we take the offset of that night's stored sleep, else UTC (assumption). A heart-rate sample never
replaces a stored one of the same instant (an exercise's, recorded per second, is the better one).
"""

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlsplit
from uuid import UUID

import structlog
from pydantic_settings import SettingsConfigDict

from wearsync.models import DataType, RateLimit
from wearsync.providers.core import Connection, Provider, SyncContext, Webhook, WebhookEvent, map_page, num
from wearsync.providers.errors import (
    AccountUnconfirmed,
    MalformedPayload,
    ProviderError,
    UpstreamAuthError,
    UpstreamError,
    WebhookRejected,
)
from wearsync.providers.http import HttpClient
from wearsync.providers.tokens import TokenSet
from wearsync.records import DailyActivity, Record, Recovery, Sample, SleepSession, Workout
from wearsync.settings import ProviderSettings, RateLimits, Settings

log = structlog.get_logger(__name__)


class PolarSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="WEARSYNC_POLAR_")

    api_url: str = "https://www.polaraccesslink.com"
    auth_url: str = "https://polarremote.com"
    authorize_url: str = "https://flow.polar.com"
    # The floor of 500 + 20/user per 15 minutes and 5000 + 100/user per day.
    rate_limits: RateLimits = (RateLimit(500, 15 * 60), RateLimit(5000, 86400))
    webhook_secret: str = ""  # the signature secret Polar returned when the webhook was created
    heart_rate_days: int = 28  # continuous heart rate: days a first sync fetches, one call each


Ctx = SyncContext[PolarSettings]

NAME = "polar"
PAGE_KEY = "exercises"
HEART_RATE = "0"  # Polar's sample types: 0 heart rate (bpm), 1 speed (km/h), 2 cadence, 3 altitude, ...
GAPS = ("", "null")  # a value the sensor did not record, as the spec documents it ("null") or left empty

SPORTS: dict[str, str] = {
    "RUNNING": "running", "ROAD_RUNNING": "running", "TRAIL_RUNNING": "trail_running",
    "TREADMILL_RUNNING": "treadmill_running", "TRACK_AND_FIELD_RUNNING": "track_running",
    "ORIENTEERING": "orienteering", "CYCLING": "cycling", "ROAD_BIKING": "cycling",
    "MOUNTAIN_BIKING": "mountain_biking", "INDOOR_CYCLING": "indoor_cycling", "GRAVEL_BIKING": "gravel_cycling",
    "E_BIKING": "e_biking", "WALKING": "walking", "NORDIC_WALKING": "walking", "HIKING": "hiking",
    "SWIMMING": "swimming", "POOL_SWIMMING": "swimming", "OPEN_WATER_SWIMMING": "open_water_swimming",
    "CROSS-COUNTRY_SKIING": "cross_country_skiing", "CROSS_COUNTRY_SKIING": "cross_country_skiing",
    "DOWNHILL_SKIING": "alpine_skiing", "BACKCOUNTRY_SKIING": "backcountry_skiing", "SNOWBOARDING": "snowboarding",
    "SNOWSHOE_TREKKING": "snowshoeing", "STRENGTH_TRAINING": "strength_training",
    "CIRCUIT_TRAINING": "strength_training", "CROSSFIT": "crossfit", "YOGA": "yoga", "PILATES": "pilates",
    "STRETCHING": "stretching", "AEROBICS": "aerobics", "DANCING": "dance", "ROWING": "rowing",
    "INDOOR_ROWING": "indoor_rowing", "KAYAKING": "kayaking", "CANOEING": "canoeing",
    "STAND_UP_PADDLING": "stand_up_paddling", "TRIATHLON": "triathlon", "MULTISPORT": "multisport",
    "GOLF": "golf", "TENNIS": "tennis", "BADMINTON": "badminton", "SQUASH": "squash", "PADEL": "padel",
    "TABLE_TENNIS": "table_tennis", "FOOTBALL": "soccer", "SOCCER": "soccer", "BASKETBALL": "basketball",
    "VOLLEYBALL": "volleyball", "HANDBALL": "handball", "ICE_SKATING": "ice_skating",
    "INLINE_SKATING": "inline_skating", "ICE_HOCKEY": "hockey", "CLIMBING": "climbing",
    "MOUNTAINEERING": "mountaineering", "BOXING": "boxing", "MARTIAL_ARTS": "martial_arts",
    "RIDING": "horseback_riding", "CROSS_TRAINER": "elliptical",
}  # fmt: skip

_DURATION = re.compile(
    r"P(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


def parse_duration(value: str) -> float:
    """Seconds of an ISO 8601 duration as Polar writes them ("PT1H2M3.5S", "P1DT2H"); anything
    else (years, months, a sign, an empty "PT") raises ValueError."""
    match = _DURATION.fullmatch(value)
    if match is None or value == "P":  # "P" alone matches the all-optional pattern
        raise ValueError(f"not an ISO 8601 duration: {value!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["days"] * 86400 + parts["hours"] * 3600 + parts["minutes"] * 60 + parts["seconds"]


def parse_start(start_time: str, offset_minutes: int | None) -> datetime:
    """Polar's local start time (no offset) and its offset in minutes, as UTC."""
    local = datetime.fromisoformat(start_time)
    if local.tzinfo is not None:  # not what Polar sends, but unambiguous
        return local.astimezone(UTC)
    if offset_minutes is None:
        raise ValueError("start_time is local time, but start_time_utc_offset is missing")
    return (local - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def series_field(series: dict[str, Any], name: str) -> Any:
    """A sample series' field by the spec's hyphenated name ("sample-type"), else by its underscored
    spelling, which public AccessLink clients also read (the exercise's own fields are underscored)."""
    return series[name] if name in series else series[name.replace("-", "_")]


def heart_rate_samples(exercise: dict[str, Any], start: datetime) -> list[Sample]:
    """One `heart_rate` row per value of the heart-rate series; a null or empty value is a gap."""
    rows = []
    for series in exercise.get("samples") or []:
        if str(series_field(series, "sample-type")) != HEART_RATE:
            continue
        rate = num(series_field(series, "recording-rate"))  # null only for RR intervals, says the spec
        if rate is None or rate <= 0:
            raise ValueError(f"recording-rate {rate!r} of the heart-rate series of exercise {exercise['id']}")
        for i, value in enumerate((series["data"] or "").split(",")):
            if value.strip().lower() not in GAPS:
                raw = {"exercise_id": exercise["id"], "sample_type": HEART_RATE, "recording_rate": rate, "index": i}
                rows.append(Sample("heart_rate", start + timedelta(seconds=i * rate), float(value), raw))
    return rows


def map_exercise(exercise: dict[str, Any]) -> list[Record]:
    """The workout, and its heart-rate samples when the exercise carries them."""
    offset = exercise.get("start_time_utc_offset")
    offset = None if offset is None else int(offset)
    start = parse_start(exercise["start_time"], offset)
    duration_s = parse_duration(exercise["duration"])
    polar_sport = exercise.get("detailed_sport_info") or exercise.get("sport")
    sport = SPORTS.get(str(exercise.get("detailed_sport_info")).upper()) or SPORTS.get(
        str(exercise.get("sport")).upper()
    )
    hr = exercise.get("heart_rate") or {}
    workout = Workout(
        provider_record_id=str(exercise["id"]),
        sport=sport or "other",
        provider_sport=polar_sport,
        start_time=start,
        end_time=start + timedelta(seconds=duration_s),
        raw=exercise,
        utc_offset_minutes=offset,
        duration_s=duration_s,
        distance_m=num(exercise.get("distance")),
        energy_kcal=num(exercise.get("calories")),
        avg_hr=num(hr.get("average")),
        max_hr=num(hr.get("maximum")),
        device_name=exercise.get("device"),
    )
    return [workout, *heart_rate_samples(exercise, start)]


def member_id(connection: Connection) -> str:
    """Our name for the user at Polar, one per wearsync user and Polar account: Polar answers a
    member-id another account holds with the same 409 as an account registered already, so with
    the user id alone a user's second Polar account would never be registered."""
    return f"{connection.user_id}_{connection.provider_user_id}"


async def identify(http: HttpClient, config: PolarSettings, handed: TokenSet, user_id: UUID) -> TokenSet:
    """The account of a token handed to us. Polar names it (x_user_id) only in the token response,
    so the caller must say it, and Polar confirms it: `GET /v3/users/{id}` with the token answers
    that user (another's id: 403); a user not registered with us yet (204) is registered, and
    registration answers whose the token is."""
    claimed = handed.provider_user_id
    if claimed is None:
        raise AccountUnconfirmed(
            "Polar names a token's account only in the token response (x_user_id): send it as provider_user_id"
        )
    headers = {"Authorization": f"Bearer {handed.access_token}", "Accept": "application/json"}
    try:
        body = await http.get_json(
            f"{config.api_url}/v3/users/{quote(claimed, safe='')}", headers=headers, provider=NAME
        )
        if body is None:
            body = await http.request_json(
                "POST", f"{config.api_url}/v3/users", headers=headers, provider=NAME,
                json_body={"member-id": f"{user_id}_{claimed}"},
            )  # fmt: skip
    except UpstreamAuthError as e:
        if e.status != 403:
            raise
        raise AccountUnconfirmed(f"Polar does not confirm the account '{claimed}' for this token: {e}") from None
    if not isinstance(body, dict) or body.get("polar-user-id") is None:
        raise MalformedPayload(f"Polar's user answer carries no polar-user-id: {str(body)[:200]}")
    return dataclasses.replace(handed, provider_user_id=str(body["polar-user-id"]))


async def register_user(ctx: Ctx) -> None:
    """Register the user with our app; Polar answers 409 when that was done before."""
    url = f"{ctx.config.api_url}/v3/users"
    try:
        await ctx.request_json("POST", url, json_body={"member-id": member_id(ctx.connection)})
    except UpstreamError as e:
        if e.status != 409:
            raise


async def connect_user(ctx: Ctx) -> None:
    """A new connection: register the user (again, after a disconnect deleted the registration), so
    the first sync needs no registration call."""
    await register_user(ctx)
    registered = {"registered": ctx.connection.provider_user_id}
    await ctx.save_cursor(registered)


async def revoke(ctx: Ctx) -> None:
    """Deregister the user from our app (`DELETE /v3/users/{polar user id}`), which also revokes the
    access token; a user Polar no longer knows (404) is deregistered already. Not asked while
    another application's connection uses the same Polar account (revocation.shared): the
    registration is our Polar client's, shared by all of them."""
    account = ctx.connection.provider_user_id
    url = f"{ctx.config.api_url}/v3/users/{quote(account, safe='')}"
    await ctx.request_json("DELETE", url, ok=(404,))


def _flag(value: bool) -> str:
    return "true" if value else "false"


async def sync_workouts(ctx: Ctx) -> None:
    if PAGE_KEY in ctx.done:  # stored by an earlier run of this task
        return
    await ctx.set_pages_total(1)
    account = ctx.connection.provider_user_id
    registered = ctx.cursor is not None and ctx.cursor.get("registered") == account
    if not registered:  # once per account is enough: saves a call a sync
        await register_user(ctx)
    p = ctx.params
    url = f"{ctx.config.api_url}/v3/exercises"
    query = {"samples": _flag(p.samples), "zones": _flag(p.zones), "route": _flag(p.route)}
    try:
        body = await ctx.get_json(url, params=query)
    except UpstreamAuthError as e:
        # Registered once, but no longer (a disconnect, or the user removed our app in Flow): again.
        # A 403 that stays is Polar's "mandatory consents not accepted", for the user to settle.
        if e.status != 403 or not registered:
            raise
        await register_user(ctx)
        body = await ctx.get_json(url, params=query)
    if body is None:  # 204 No Content: AccessLink's answer where it has no data
        body = []
    if not isinstance(body, list):
        raise MalformedPayload(f"GET {url} returned no exercise list: {str(body)[:200]}")
    await ctx.save_page(map_page(body, map_exercise), PAGE_KEY, len(body))
    ctx.advance_cursor({"registered": account})


# ---- 24/7 data: sleep, nightly recharge, daily activity, continuous heart rate ------------------


def _day(value: Any) -> date:
    return date.fromisoformat(str(value)[:10])


def map_sleep(night: dict[str, Any]) -> SleepSession:
    start = datetime.fromisoformat(night["sleep_start_time"])
    end = datetime.fromisoformat(night["sleep_end_time"])
    offset = start.utcoffset()
    return SleepSession(
        provider_record_id=_day(night["date"]).isoformat(),
        start_time=start.astimezone(UTC),
        end_time=end.astimezone(UTC),
        raw=night,
        utc_offset_minutes=None if offset is None else int(offset.total_seconds() // 60),
        duration_s=(end - start).total_seconds(),
        deep_s=num(night.get("deep_sleep")),
        light_s=num(night.get("light_sleep")),
        rem_s=num(night.get("rem_sleep")),
        awake_s=num(night.get("total_interruption_duration")),
        score=num(night.get("sleep_score")),
    )


def map_recharge(recharge: dict[str, Any]) -> Recovery:
    day = _day(recharge["date"])
    return Recovery(
        provider_record_id=day.isoformat(),
        recorded_at=datetime.combine(day, time(), UTC),
        raw=recharge,
        resting_hr=num(recharge.get("heart_rate_avg")),
        hrv_rmssd_ms=num(recharge.get("heart_rate_variability_avg")),
    )


def map_activity(activity: dict[str, Any]) -> DailyActivity:
    steps = num(activity.get("steps"))
    return DailyActivity(
        provider_record_id=_day(activity["start_time"]).isoformat(),
        day=_day(activity["start_time"]),
        raw=activity,
        steps=None if steps is None else int(steps),
        energy_kcal=num(activity.get("calories")),
        active_energy_kcal=num(activity.get("active_calories")),
        distance_m=num(activity.get("distance_from_steps")),
    )


def map_heart_rate(day_hr: dict[str, Any], offset_minutes: int) -> list[Sample]:
    """A day's continuous heart rate as `heart_rate` samples; times are local, `offset_minutes` ahead of UTC."""
    day = _day(day_hr["date"])
    rows = []
    for sample in day_hr.get("heart_rate_samples") or []:
        at = datetime.combine(day, time.fromisoformat(sample["sample_time"]), UTC) - timedelta(minutes=offset_minutes)
        raw = {"date": day.isoformat(), "sample_time": sample["sample_time"], "offset_minutes": offset_minutes}
        rows.append(Sample("heart_rate", at, float(sample["heart_rate"]), raw))
    return rows


async def get_registered(ctx: Ctx, url: str, params: dict[str, str] | None = None, ok: tuple[int, ...] = ()) -> Any:
    """A data call; a 403 registers the user (the registration may be gone) and asks once more."""
    try:
        return await ctx.get_json(url, params=params, ok=ok)
    except UpstreamAuthError as e:
        if e.status != 403:
            raise
    await register_user(ctx)
    return await ctx.get_json(url, params=params, ok=ok)


def _listed(body: Any, url: str, key: str | None) -> list[dict[str, Any]]:
    """A list answer (`{key: [...]}`, or a bare list without a key); 204 (None) is an empty one."""
    items = [] if body is None else body.get(key) if key is not None and isinstance(body, dict) else body
    if items is None:
        items = []
    if not isinstance(items, list):
        raise MalformedPayload(f"GET {url} returned no list: {str(body)[:200]}")
    return items


# (page key, path, the list's key in the answer, mapping)
LISTS_247: tuple[tuple[str, str, str | None, Any], ...] = (
    ("sleep", "/v3/users/sleep", "nights", map_sleep),
    ("nightly-recharge", "/v3/users/nightly-recharge", "recharges", map_recharge),
    ("activities", "/v3/users/activities", None, map_activity),
)


async def sleep_offset(ctx: Ctx, day: date) -> int:
    """Minutes the user's clock was ahead of UTC on `day`: that night's stored sleep's, else 0."""
    night = await ctx.stored_raw("sleep", day.isoformat())
    if night is None or not isinstance(night.get("sleep_start_time"), str):
        return 0
    offset = datetime.fromisoformat(night["sleep_start_time"]).utcoffset()
    return 0 if offset is None else int(offset.total_seconds() // 60)


async def save_heart_rate_day(ctx: Ctx, day: date, page_key: str | None = None) -> int:
    """Fetch and store one day's continuous heart rate; the samples stored (404, 204: none)."""
    url = f"{ctx.config.api_url}/v3/users/continuous-heart-rate/{day.isoformat()}"
    body = await get_registered(ctx, url, ok=(404,))
    if body is None:
        if page_key is not None:
            await ctx.save_page([], page_key)
        return 0
    if not isinstance(body, dict):
        raise MalformedPayload(f"GET {url} returned no heart rate: {str(body)[:200]}")
    offset = await sleep_offset(ctx, day)
    rows = map_page([body], lambda d: map_heart_rate(d, offset))
    # An exercise's own heart rate at the same instant (per second, not a 5-minute average) wins:
    # overwriting neither way, a sync of both types rewrites nothing the second time.
    await ctx.save_page(rows, page_key, len(rows), overwrite=False)
    return len(rows)


async def sync_247(ctx: Ctx) -> None:
    today = ctx.started_at.astimezone(UTC).date()
    first = today - timedelta(days=ctx.config.heart_rate_days - 1)
    if ctx.cursor is not None and isinstance(ctx.cursor.get("heart_rate_through"), str):
        first = max(first, _day(ctx.cursor["heart_rate_through"]))  # that day again: it may have grown
    await ctx.set_pages_total(len(LISTS_247) + (today - first).days + 1)
    for key, path, list_key, mapping in LISTS_247:
        if key in ctx.done:
            continue
        url = f"{ctx.config.api_url}{path}"
        items = _listed(await get_registered(ctx, url), url, list_key)
        await ctx.save_page(map_page(items, mapping), key, len(items))
    day = first
    while day <= today:
        if f"heart-rate@{day.isoformat()}" not in ctx.done:
            await save_heart_rate_day(ctx, day, f"heart-rate@{day.isoformat()}")
        day += timedelta(days=1)
    ctx.advance_cursor({"heart_rate_through": today.isoformat()})


# ---- webhook: EXERCISE, SLEEP, ... events ----------------------------------------------------

SIGNATURE = "Polar-Webhook-Signature"
_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def verify_webhook(headers: Mapping[str, str], body: bytes, config: PolarSettings, settings: Settings) -> None:
    """Hex HMAC-SHA256 of the raw body under the webhook's signature secret, in constant time.

    A PING passes unchecked: Polar sends it while it creates (or changes) the webhook, and creates
    it only if the PING is answered 200, but the signature secret comes in the answer to that
    creation, so it cannot be configured here yet. A PING stores and starts nothing (parse_webhook)."""
    if is_ping(body):
        return
    secret = config.webhook_secret
    if not secret:
        raise WebhookRejected("WEARSYNC_POLAR_WEBHOOK_SECRET is not set, so no event can be trusted")
    given = headers.get(SIGNATURE, "").lower().encode("utf-8", "replace")
    if not hmac.compare_digest(given, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()):
        raise WebhookRejected(f"bad or missing {SIGNATURE}")


def is_ping(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # not JSON: parse_webhook refuses it after the signature check
        return False
    return isinstance(payload, dict) and payload.get("event") == "PING"


def parse_webhook(payload: Any) -> list[WebhookEvent]:
    """One delivery is one event, or none for a PING. Polar gives events no id: the key is the
    event, user, entity (or date) and the time Polar sent it; the same notification sent again
    at another time is processed again, harmlessly (an upsert)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str) or not payload["event"]:
        raise MalformedPayload("a Polar event is a JSON object with an event name")
    kind = payload["event"]
    if kind == "PING":
        return []
    user_id = payload.get("user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, int | str) or not str(user_id).isdigit():
        raise MalformedPayload(f"a Polar {kind} event needs the numeric user_id, not {user_id!r}")
    if kind == "EXERCISE" and not (isinstance(payload.get("entity_id"), str) and isinstance(payload.get("url"), str)):
        raise MalformedPayload("a Polar EXERCISE event needs entity_id and url")
    what = payload.get("entity_id") or payload.get("date") or ""
    key = f"{kind}:{user_id}:{what}:{payload.get('timestamp', '')}"
    return [WebhookEvent(kind, str(user_id), key, payload)]


def exercise_url(config: PolarSettings, entity_id: str, announced: str) -> str:
    """The exercise's URL on our configured API, if the announced one is exactly that; otherwise
    ProviderError: an event never makes us call a URL of its choosing."""
    expected = f"{config.api_url.rstrip('/')}/v3/exercises/{entity_id}"
    given, ours = urlsplit(announced), urlsplit(expected)
    same = (given.scheme.lower(), given.netloc.lower(), given.path) == (
        ours.scheme.lower(),
        ours.netloc.lower(),
        ours.path,
    )
    if not _ENTITY_ID.match(entity_id) or not same or given.query or given.fragment:
        raise ProviderError(
            f"refused to fetch {announced[:200]!r}: not exercise {entity_id[:64]!r} on {config.api_url}"
        )
    return expected


# A 24/7 event's kind -> the paths (on our configured API) of its date's data, with their mappings.
DATED_247: dict[str, tuple[tuple[str, Any], ...]] = {
    "SLEEP": (("/v3/users/sleep/{}", map_sleep), ("/v3/users/nightly-recharge/{}", map_recharge)),
    "ACTIVITY_SUMMARY": (("/v3/users/activities/{}", map_activity),),
}


async def process_dated(ctx: Ctx, event: WebhookEvent) -> str | None:
    """A 24/7 event: fetch its date's data from our configured API (the event's url is not called)."""
    try:
        day = _day(event.payload["date"])
    except (KeyError, ValueError) as e:
        raise MalformedPayload(f"a Polar {event.kind} event needs its date: {e}") from None
    if event.kind == "CONTINUOUS_HEART_RATE":
        stored = await save_heart_rate_day(ctx, day)
        return None if stored else f"no continuous heart rate at Polar for {day}: nothing stored"
    missing = []
    for path, mapping in DATED_247[event.kind]:
        url = f"{ctx.config.api_url}{path.format(day.isoformat())}"
        body = await get_registered(ctx, url, ok=(404,))
        if body is None:
            missing.append(url.rsplit("/", 2)[-2])
            continue
        if not isinstance(body, dict):
            raise MalformedPayload(f"GET {url} returned no object: {str(body)[:200]}")
        await ctx.save_page(map_page([body], mapping))
    return f"nothing at Polar for {day} ({', '.join(missing)}): not stored" if missing else None


async def process_webhook(ctx: Ctx, event: WebhookEvent) -> str | None:
    """Fetch and upsert an announced exercise, or a 24/7 event's date; SleepWise events are not
    data we store. An exercise Polar no longer has (404: deleted, or past its 30 days) is nothing
    to store."""
    if event.kind in DATED_247 or event.kind == "CONTINUOUS_HEART_RATE":
        return await process_dated(ctx, event)
    if event.kind != "EXERCISE":
        log.info("polar webhook event not stored", kind=event.kind, user=event.provider_user_id)
        return None
    url = exercise_url(ctx.config, event.payload["entity_id"], event.payload["url"])
    query = {"samples": "false", "zones": "false", "route": "false"}
    body = await ctx.get_json(url, params=query, ok=(404,), expect=(dict, "exercise"))
    if body is None:
        return f"exercise {event.payload['entity_id']} is no longer at Polar (404): nothing stored"
    await ctx.save_page(map_page([body], map_exercise))
    return None


PROVIDER = Provider(
    name=NAME,
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="pull",
    config=PolarSettings,
    token_path="/v2/oauth2/token",
    client_auth="basic",
    sync={DataType.WORKOUTS: sync_workouts, DataType.DATA_247: sync_247},
    params=("samples", "zones", "route"),
    webhook=Webhook(verify=verify_webhook, parse=parse_webhook, process=process_webhook),
    authorize_path="/oauth2/authorization",  # on flow.polar.com
    scopes=("accesslink.read_all",),
    # AccessLink also speaks XML (the spec lists both for users); Polar's example client asks for JSON.
    api_headers=lambda config: {"Accept": "application/json"},
    on_connect=connect_user,
    identify=identify,
    revoke=revoke,
)
