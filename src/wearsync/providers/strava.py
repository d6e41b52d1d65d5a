"""Strava API v3 client: the athlete's activity list, pages of 200 fetched side by side, each page
written as it lands.

A sync first fixes its range: `before` = the moment the task first started (`ctx.started_at`, the
same on every rerun of the task) and `after` = 0, all history. With the range fixed, page N always
means the same activities, so pages are independent: they are fetched concurrently
(`WEARSYNC_STRAVA_PAGE_CONCURRENCY`) and a rerun of a deferred task skips the pages it stored
(`ctx.done` keys `page:N`). An activity uploaded while a task runs but started before its
`before` pushes every older one a place back: the pages still to come repeat one, and the new one
is on a page already read. An activity listed on two pages shows this, and the list is read
again from the start (the upserts make the re-read harmless). Not caught: an activity deleted
meanwhile pulls the older ones a place forward, and one of them may be missed unseen (page numbers
cannot overlap to show it, and Strava gives no count).

Choices where Strava's documentation is silent (unconfirmed):
- The list ends with the first page shorter than `per_page` (an empty page when the count is a
  multiple of 200); Strava is not known to return short pages mid-list for the athlete's own
  activities, and the call this saves is scarce (100 per 15 minutes per app).
- Only the list is read: the detail call (`GET /api/v3/activities/{id}`, which alone carries
  `calories`) costs one request per activity. `energy_kcal` is `calories` where an answer has it,
  else `kilojoules` (mechanical work of rides with power): Strava's own ride calorie estimate
  treats 1 kJ of work as about 1 kcal burned (a ~25% efficient body and 4.184 kJ per kcal cancel
  out). A `calories` of 0 is taken as "no estimate".
- `duration_s` is `elapsed_time` (the end is start + elapsed time); `moving_time` stays in `raw`.
- Sports map from `sport_type` (the legacy `type` where it is missing); unknown ones are `other`
  with Strava's name kept in `provider_sport`.

Webhooks (`POST /api/v1/webhooks/strava/<WEARSYNC_STRAVA_WEBHOOK_PATH_SECRET>`; the
subscription's validation GET at the same URL is in api/webhooks.py):
- Strava signs nothing and sends no secret with its events. An event is taken as Strava's for
  arriving at the callback URL with our path secret (any other URL answers 404) and naming our
  push subscription (`subscription_id`, WEARSYNC_STRAVA_SUBSCRIPTION_ID; another is 401): a
  forged delete or deauthorization would take effect.
- One event per delivery, for the connection whose `provider_user_id` is the athlete id
  (`owner_id`); a body that is not JSON or lacks the object or owner ids is refused (400; Strava
  tries an event three times at most). The dedupe key is the object, aspect, `event_time` and
  `updates`, so Strava's retries of an event are one event and a later change is another.
- activity create/update: the detail (`GET /api/v3/activities/{id}`, which carries `calories`)
  is fetched and upserted; a 404 there (deleted meanwhile, or private without
  `activity:read_all`) stores nothing and the event counts as processed: a deletion announces
  itself with its own event, and the row as last seen stays until then.
- activity delete: the row is deleted (idempotent). athlete update with
  `{"authorized": "false"}`: the connection is deactivated. Other athlete events: nothing to do.
"""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wearsync.models import DataType, RateLimit
from wearsync.providers.core import Provider, SyncContext, UnsignedWebhookSettings, Webhook, WebhookEvent, map_page, num
from wearsync.providers.errors import MalformedPayload, WebhookRejected
from wearsync.providers.http import HttpClient
from wearsync.providers.paging import save_offset_list
from wearsync.records import Workout
from wearsync.settings import RateLimits, Settings

log = structlog.get_logger(__name__)


class StravaSettings(UnsignedWebhookSettings):
    model_config = SettingsConfigDict(env_prefix="WEARSYNC_STRAVA_")

    api_url: str = "https://www.strava.com"
    auth_url: str = "https://www.strava.com"
    authorize_url: str = "https://www.strava.com"
    rate_limits: RateLimits = (RateLimit(100, 15 * 60), RateLimit(1000, 86400))
    page_concurrency: int = Field(4, ge=1, le=32)  # activity pages in flight per sync
    verify_token: str = ""  # what we gave Strava when subscribing to its webhook
    # The id Strava gave our push subscription: an event naming another is refused (401).
    subscription_id: str = ""


Ctx = SyncContext[StravaSettings]

PER_PAGE = 200  # Strava's maximum: the fewest calls for a history

# Strava sport_type -> our sport. Those missing (Pickleball, Racquetball, StairStepper, RollerSki,
# Wheelchair, Handcycle, Velomobile, ...) have no counterpart in our list: `other`.
SPORTS: dict[str, str] = {
    "Run": "running", "TrailRun": "trail_running", "VirtualRun": "treadmill_running", "Walk": "walking",
    "Hike": "hiking", "Ride": "cycling", "MountainBikeRide": "mountain_biking", "GravelRide": "gravel_cycling",
    "EBikeRide": "e_biking", "EMountainBikeRide": "e_biking", "VirtualRide": "indoor_cycling",
    "Swim": "swimming", "Rowing": "rowing", "VirtualRow": "indoor_rowing", "Kayaking": "kayaking",
    "Canoeing": "canoeing", "StandUpPaddling": "stand_up_paddling", "Surfing": "surfing",
    "Windsurf": "windsurfing", "Kitesurf": "kitesurfing", "Sail": "sailing", "NordicSki": "cross_country_skiing",
    "AlpineSki": "alpine_skiing", "BackcountrySki": "backcountry_skiing", "Snowboard": "snowboarding",
    "Snowshoe": "snowshoeing", "IceSkate": "ice_skating", "InlineSkate": "inline_skating",
    "WeightTraining": "strength_training", "Crossfit": "crossfit", "Yoga": "yoga", "Pilates": "pilates",
    "Elliptical": "elliptical", "RockClimbing": "climbing", "Golf": "golf", "Tennis": "tennis",
    "Badminton": "badminton", "Squash": "squash", "Padel": "padel", "TableTennis": "table_tennis",
    "Soccer": "soccer", "Basketball": "basketball", "Volleyball": "volleyball", "Cricket": "cricket",
    "Dance": "dance", "HighIntensityIntervalTraining": "aerobics", "Skateboard": "skateboarding",
    "Workout": "other",  # Strava's generic workout: nothing more specific to say
}  # fmt: skip


def _utc(value: str) -> datetime:
    """Strava's `start_date` ("2024-05-01T06:30:00Z") as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _energy_kcal(activity: dict[str, Any]) -> float | None:
    calories = num(activity.get("calories"))
    if calories:
        return calories
    return num(activity.get("kilojoules"))  # 1 kJ of work ~ 1 kcal burned, as Strava estimates


# ---- mapping --------------------------------------------------------------------------------


def map_activity(a: dict[str, Any]) -> Workout:
    start = _utc(a["start_date"])
    elapsed = float(a["elapsed_time"])
    sport_type = str(a.get("sport_type") or a["type"])
    offset_s = num(a.get("utc_offset"))
    return Workout(
        provider_record_id=str(a["id"]),
        sport=SPORTS.get(sport_type, "other"),
        provider_sport=sport_type,
        start_time=start,
        end_time=start + timedelta(seconds=elapsed),
        raw=a,
        name=a.get("name"),
        utc_offset_minutes=None if offset_s is None else round(offset_s / 60),
        duration_s=elapsed,
        distance_m=num(a.get("distance")),
        energy_kcal=_energy_kcal(a),
        avg_hr=num(a.get("average_heartrate")),  # present only when has_heartrate
        max_hr=num(a.get("max_heartrate")),
        avg_speed_mps=num(a.get("average_speed")),
        max_speed_mps=num(a.get("max_speed")),
        ascent_m=num(a.get("total_elevation_gain")),
        max_altitude_m=num(a.get("elev_high")),
        min_altitude_m=num(a.get("elev_low")),
        avg_power_w=num(a.get("average_watts")),
        max_power_w=num(a.get("max_watts")),
        avg_cadence=num(a.get("average_cadence")),
        device_name=a.get("device_name"),
    )


# ---- sync -----------------------------------------------------------------------------------


LATE_UPLOADS = timedelta(days=7)


async def sync_workouts(ctx: Ctx) -> None:
    url = f"{ctx.config.api_url}/api/v3/athlete/activities"
    # The epoch second the task first started: every run of the task lists the same range. After
    # a first full sync, only the activities started since the last one (with a week's grace for
    # late uploads; webhooks announce the rest) are listed: one call for an unchanged account.
    after = int(ctx.cursor["after"]) if ctx.cursor else 0
    query = {"before": int(ctx.started_at.timestamp()), "after": after, "per_page": PER_PAGE}

    async def fetch(offset: int) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = await ctx.get_json(
            url, params=query | {"page": offset // PER_PAGE + 1}, expect=(list, "activity list")
        )
        return body

    await save_offset_list(
        ctx, fetch, map_activity, start=0, limit=PER_PAGE, concurrency=ctx.config.page_concurrency,
        record_key=lambda a: str(a.get("id")), page_key=lambda offset: f"page:{offset // PER_PAGE + 1}",
        page_offset=lambda key: (int(key.removeprefix("page:")) - 1) * PER_PAGE if key.startswith("page:") else None,
    )  # fmt: skip
    ctx.advance_cursor({"after": int((ctx.started_at - LATE_UPLOADS).timestamp())})


# ---- webhook: activity and athlete events --------------------------------------------------------

DEAUTHORIZED = "deauthorized by the athlete at Strava"


def verify_webhook(headers: Mapping[str, str], body: bytes, config: StravaSettings, settings: Settings) -> None:
    """Strava signs no event: one is taken as Strava's for arriving at the URL with our path
    secret (checked before) and naming our push subscription. A body that is no JSON object is
    left to `parse_webhook` to refuse."""
    expected = config.subscription_id
    if not expected:
        raise WebhookRejected("WEARSYNC_STRAVA_SUBSCRIPTION_ID is not set, so no event can be trusted")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    if isinstance(payload, dict) and str(payload.get("subscription_id")) != expected:
        raise WebhookRejected("the event names another push subscription than ours")


def parse_webhook(payload: Any) -> list[WebhookEvent]:
    """One event per delivery: `{"object_type", "object_id", "aspect_type", "owner_id",
    "subscription_id", "event_time", "updates"}`; kind `activity.create` and so on."""
    if not isinstance(payload, dict):
        raise MalformedPayload("a Strava event is a JSON object")
    object_type, aspect = payload.get("object_type"), payload.get("aspect_type")
    object_id, owner = payload.get("object_id"), payload.get("owner_id")
    if not isinstance(object_type, str) or not isinstance(aspect, str) or not object_type or not aspect:
        raise MalformedPayload("a Strava event needs object_type and aspect_type")
    if not all(isinstance(v, int | str) and not isinstance(v, bool) and str(v) for v in (object_id, owner)):
        raise MalformedPayload("a Strava event needs object_id and owner_id")
    updates = payload.get("updates") or {}
    if not isinstance(updates, dict):
        raise MalformedPayload("a Strava event's updates are an object")
    what = json.dumps([object_type, str(object_id), aspect, payload.get("event_time"), updates], sort_keys=True)
    key = f"{object_type}:{object_id}:{aspect}:{hashlib.sha256(what.encode()).hexdigest()[:24]}"
    return [WebhookEvent(f"{object_type}.{aspect}", str(owner), key, payload)]


async def process_webhook(ctx: Ctx, event: WebhookEvent) -> None:
    """Do what the event announces: fetch and upsert, delete, or deactivate (module docstring)."""
    payload = event.payload
    object_id = str(payload["object_id"])
    if event.kind in ("activity.create", "activity.update"):
        url = f"{ctx.config.api_url}/api/v3/activities/{object_id}"
        detail = await ctx.get_json(url, ok=(404,), expect=(dict, "activity"))
        if detail is None:
            log.info("strava activity gone or private: nothing stored", activity_id=object_id)
            return
        await ctx.save_page(map_page([detail], map_activity))
    elif event.kind == "activity.delete":
        await ctx.delete_record("workouts", object_id)
    elif event.kind == "athlete.update" and str((payload.get("updates") or {}).get("authorized")).lower() == "false":
        await ctx.deactivate(DEAUTHORIZED)
    else:
        log.info("strava event with nothing to do", kind=event.kind, object_id=object_id)


async def user_id(http: HttpClient, config: StravaSettings, access_token: str) -> str:
    """Strava's id of a token's athlete (`GET /api/v3/athlete`): what its events name the owner by.
    The token response carries it too (`athlete`); this is for tokens handed to us."""
    url = f"{config.api_url}/api/v3/athlete"
    body = await http.get_json(url, headers={"Authorization": f"Bearer {access_token}"}, provider="strava")
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise MalformedPayload(f"GET {url} returned no athlete id: {str(body)[:200]}")
    return str(body["id"])


async def revoke(ctx: Ctx) -> None:
    """Withdraw our access to the athlete's account (`POST /oauth/deauthorize` on the OAuth host,
    the access token as a form field): every token of the athlete stops working."""
    token = await ctx.credentials.token()
    await ctx.http.request_json(
        "POST", f"{ctx.config.auth_url}/oauth/deauthorize", headers={"Accept": "application/json"},
        data={"access_token": token}, provider=ctx.connection.provider,
    )  # fmt: skip


PROVIDER = Provider(
    name="strava",
    supports=frozenset({DataType.WORKOUTS}),
    delivery="pull",
    config=StravaSettings,
    token_path="/oauth/token",
    client_auth="body",
    # Strava's read ("non-upload") limit: every call we make is a read, so it binds before the
    # overall 200 per 15 minutes and 2,000 a day (developers.strava.com/docs/rate-limits).
    sync={DataType.WORKOUTS: sync_workouts},
    webhook=Webhook(verify=verify_webhook, parse=parse_webhook, process=process_webhook, path_secret=True),
    # Strava joins scopes with commas; `read` for the athlete, `activity:read_all` for private
    # activities too. approval_prompt=auto: a user who approved before is not asked again.
    scopes=("read", "activity:read_all"),
    scope_separator=",",
    authorize_params={"approval_prompt": "auto"},
    user_id=user_id,
    revoke=revoke,
)
