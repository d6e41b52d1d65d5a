"""Strava API v3 simulator: the paths, parameters, pagination, auth, rate limits and JSON shapes of
`www.strava.com`, with deterministic activities per user.

Data API (mounted under /strava/api, followed by Strava's own `/api/v3`):
- `GET /api/v3/athlete/activities?before=&after=&page=&per_page=`: epoch seconds, strict bounds
  (start > after, start < before; unconfirmed); page from 1; per_page default 30, and a larger
  one than 200 is clamped to 200 (the list answers 200 at most; unconfirmed whether Strava
  clamps or refuses). Newest first, except with only `after` given: oldest first. Past the end,
  an empty list. Summary representation (resource_state 2): no `calories`.
- `GET /api/v3/activities/{id}`: the detailed representation (resource_state 3) with `calories`.
- `GET /api/v3/athlete`: the authenticated athlete.
Every call needs a bearer token from the OAuth server; a bad one is Strava's 401 body.

OAuth (under /strava/auth): `POST /oauth/token` and `POST /api/v3/oauth/token`, client
credentials in the form body; code `user-NAME` yields tokens of user NAME with the `athlete`
summary; access tokens last 6 hours (`expires_at` in epoch seconds); refresh tokens rotate: each
refresh returns a new one (without `athlete`, as Strava does) and the old one is refused with
Strava's 400 body.

Rate limits per app: 100 calls per 15 minutes and 1,000 per day, windows aligned to the quarter
hour and to midnight UTC; every answer carries `X-RateLimit-Limit`/`-Usage` and the
`X-ReadRateLimit-*` pair (the same numbers); over a limit, Strava's 429 without `Retry-After`.

History: 450 activities over about two years by default (`{"workouts": N}` through /_sim sets
another size). Activities carry the user's time zone ("(GMT+01:00) Europe/Paris") with
`utc_offset` in seconds as of the activity (daylight saving time from the system's zone data,
the standard offset where it is missing), and `start_date_local` in local time with Strava's misleading `Z`. A few are
manual (no device, heart rate or elevation), some lack heart rate or a device name, and a sport
type not in Strava's list ("Paragliding") appears at least once, for the client's edge cases.
"""

import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from wearsync.sim.common import (
    OAuthStyle,
    RateLimitStyle,
    bearer_user,
    cached_user_data,
    fault_middleware,
    json_error,
    token_endpoint,
    user_rng,
)

NAME = "strava"
ACCESS_TTL_S = 6 * 3600
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 30
DEFAULT_HISTORY = {"workouts": 450}  # over about two years: more than two pages of 200

# (Strava's label, zone, standard offset in minutes)
_ZONES = [("(GMT+01:00) Europe/Paris", "Europe/Paris", 60), ("(GMT-05:00) America/New_York", "America/New_York", -300),
          ("(GMT+00:00) Europe/London", "Europe/London", 0), ("(GMT+05:30) Asia/Kolkata", "Asia/Kolkata", 330),
          ("(GMT+10:00) Australia/Sydney", "Australia/Sydney", 600),
          ("(GMT-08:00) America/Los_Angeles", "America/Los_Angeles", -480)]  # fmt: skip

# sport_type -> (legacy type, speed m/s or None without distance, outdoors with GPS, power, weight)
_SPORTS: dict[str, tuple[str, float | None, bool, bool, int]] = {
    "Run": ("Run", 3.0, True, False, 30), "Ride": ("Ride", 7.5, True, True, 20), "Walk": ("Walk", 1.4, True, False, 8),
    "Hike": ("Hike", 1.1, True, False, 5), "TrailRun": ("Run", 2.4, True, False, 5),
    "VirtualRide": ("VirtualRide", 8.5, False, True, 6), "MountainBikeRide": ("Ride", 5.0, True, True, 4),
    "GravelRide": ("Ride", 6.5, True, True, 3), "Swim": ("Swim", 0.8, False, False, 6),
    "WeightTraining": ("WeightTraining", None, False, False, 6), "Yoga": ("Yoga", None, False, False, 3),
    "Workout": ("Workout", None, False, False, 2), "HighIntensityIntervalTraining": ("Workout", None, False, False, 1),
    "NordicSki": ("NordicSki", 3.5, True, False, 1), "AlpineSki": ("AlpineSki", 8.0, True, False, 1),
    "Rowing": ("Rowing", 3.0, True, False, 1), "EBikeRide": ("EBikeRide", 7.0, True, True, 1),
    "VirtualRun": ("VirtualRun", 3.1, False, False, 1), "Paragliding": ("Workout", 9.0, True, False, 1),
}  # fmt: skip
_SPORT_TYPES, _WEIGHTS = list(_SPORTS), [s[4] for s in _SPORTS.values()]
_DEVICES = ["Garmin Forerunner 965", "Garmin Edge 540", "Wahoo ELEMNT BOLT", "Apple Watch Series 9", "Strava App"]


@dataclass
class UserData:
    athlete: dict[str, Any]
    activities: list[dict[str, Any]]  # summaries, oldest first
    calories: dict[int, float]  # activity id -> the detail's calorie estimate


def athlete(user: str) -> dict[str, Any]:
    """The athlete summary a user's token response and `GET /athlete` carry."""
    rng = user_rng(NAME, user, "athlete")
    created = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(3000))
    return {
        "id": rng.randrange(10**6, 10**8),
        "username": None,
        "resource_state": 2,
        "firstname": user,
        "lastname": "Sim",
        "city": rng.choice(["Paris", "Boston", "Pune", None]),
        "country": None,
        "sex": rng.choice(["F", "M"]),
        "premium": rng.random() < 0.3,
        "summit": False,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _offset_s(zone: str, standard_minutes: int, at: datetime) -> float:
    try:
        offset = ZoneInfo(zone).utcoffset(at)
    except ZoneInfoNotFoundError:
        offset = None
    return offset.total_seconds() if offset is not None else standard_minutes * 60.0


def _activity(
    rng: random.Random,
    athlete_id: int,
    start: datetime,
    zone: tuple[str, str, int],
    i: int,
    sport_type: str,
    manual: bool,
) -> dict[str, Any]:
    legacy, speed, outdoors, power, _ = _SPORTS[sport_type]
    moving = rng.randrange(1200, 9000)
    elapsed = moving if manual else int(moving * rng.uniform(1.0, 1.15))
    speed = None if speed is None else round(speed * rng.uniform(0.8, 1.2), 3)
    offset = _offset_s(zone[1], zone[2], start)
    a: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": rng.choice([f"Morning {sport_type}", f"Evening {sport_type}", f"{sport_type} #{i}"]),
        "distance": round(speed * moving, 1) if speed else 0.0,
        "moving_time": moving,
        "elapsed_time": elapsed,
        "total_elevation_gain": round(rng.uniform(0, 900), 1) if outdoors else 0.0,
        "type": legacy,
        "sport_type": sport_type,
        "workout_type": None,
        "id": 0,  # numbered once every activity is laid out, oldest first
        "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_date_local": (start + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timezone": zone[0],
        "utc_offset": offset,
        "trainer": not outdoors and speed is not None,
        "commute": rng.random() < 0.05,
        "manual": manual,
        "private": False,
        "visibility": "everyone",
        "start_latlng": [],
        "end_latlng": [],
        "average_speed": speed or 0.0,
        "max_speed": round(speed * rng.uniform(1.3, 2.0), 3) if speed else 0.0,
        "has_heartrate": False,
        "heartrate_opt_out": False,
        "display_hide_heartrate_option": False,
        "kudos_count": rng.randrange(0, 30),
        "pr_count": 0,
        "upload_id": None,
    }
    if not manual:
        a["upload_id"] = rng.randrange(10**10, 10**11)
        if rng.random() < 0.95:
            a["device_name"] = "Zwift" if sport_type.startswith("Virtual") else rng.choice(_DEVICES)
        if rng.random() < 0.85:
            a["has_heartrate"] = True
            a["average_heartrate"] = round(rng.uniform(105, 160), 1)
            a["max_heartrate"] = float(rng.randrange(160, 192))
        if outdoors:
            lat, lng = round(rng.uniform(40, 50), 6), round(rng.uniform(-5, 10), 6)
            a["start_latlng"], a["end_latlng"] = [lat, lng], [round(lat + 0.01, 6), round(lng + 0.01, 6)]
            a["elev_low"] = round(rng.uniform(0, 400), 1)
            a["elev_high"] = round(a["elev_low"] + rng.uniform(5, 800), 1)
        if sport_type in ("Run", "TrailRun", "VirtualRun", "Ride", "GravelRide", "VirtualRide"):
            a["average_cadence"] = round(rng.uniform(75, 92), 1)
        if sport_type in ("Run", "TrailRun"):
            a["workout_type"] = rng.choice([0, 0, 0, 1, 2, 3])
    if power and not manual:
        a["average_watts"] = round(rng.uniform(140, 260), 1)
        a["kilojoules"] = round(a["average_watts"] * moving / 1000, 1)
        a["device_watts"] = sport_type == "VirtualRide" or rng.random() < 0.5
        if a["device_watts"]:
            a["weighted_average_watts"] = int(a["average_watts"] * 1.05)
            a["max_watts"] = rng.randrange(500, 1100)
    return a


def _calories(rng: random.Random, a: dict[str, Any]) -> float:
    """The detail's estimate: about the work done for rides with power, by time otherwise;
    0 for manual entries, as Strava answers when it has nothing to estimate from."""
    if a["manual"]:
        return 0.0
    if "kilojoules" in a:
        return round(float(a["kilojoules"]) * rng.uniform(0.95, 1.1), 1)
    return round(int(a["moving_time"]) / 60 * rng.uniform(5, 12), 1)


def _activities(
    user: str, anchor: datetime, count: int, athlete_id: int
) -> tuple[list[dict[str, Any]], dict[int, float]]:
    rng = user_rng(NAME, user, "activities")
    home = rng.choice(_ZONES)
    starts, start = [], anchor
    for _ in range(count):
        start -= timedelta(hours=rng.uniform(20, 58), seconds=rng.randrange(3600))
        starts.append(start)
    activities, calories = [], {}
    activity_id = rng.randrange(2 * 10**9, 3 * 10**9)
    for i, at in enumerate(reversed(starts)):
        zone = home if rng.random() < 0.95 else rng.choice(_ZONES)  # away from home now and then
        # The newest few always include the edge cases: a manual entry, a sport Strava's list lacks.
        sport_type = {count - 2: "Paragliding", count - 3: "Run"}.get(i) or rng.choices(_SPORT_TYPES, _WEIGHTS)[0]
        manual = i == count - 3 or rng.random() < 0.03
        a = _activity(rng, athlete_id, at, zone, i, sport_type, manual)
        activity_id += rng.randrange(1_000, 50_000_000)
        a["id"] = activity_id
        activities.append(a)
        calories[activity_id] = _calories(rng, a)
    return activities, calories


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    profile = athlete(user)
    return UserData(profile, *_activities(user, anchor, history["workouts"], profile["id"]))


# ---- data API ---------------------------------------------------------------------------------


def _error(status: int, message: str, resource: str, field: str, code: str) -> web.Response:
    return json_error(status, {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]})


def _authorized_user(request: web.Request) -> str:
    user = bearer_user(request, NAME)
    if user is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"message": "Authorization Error",
                             "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}]}),
            content_type="application/json",
        )  # fmt: skip
    return user


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw))
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"message": "Bad Request",
                             "errors": [{"resource": "Application", "field": name, "code": "invalid"}]}),
            content_type="application/json",
        ) from None  # fmt: skip


def _epoch(a: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(a["start_date"]).timestamp())


async def list_activities(request: web.Request) -> web.Response:
    data = user_data(request, _authorized_user(request))
    before, after = _int_param(request, "before"), _int_param(request, "after")
    page, per_page = _int_param(request, "page") or 1, _int_param(request, "per_page") or DEFAULT_PER_PAGE
    if page < 1 or per_page < 1:
        return _error(400, "Bad Request", "Application", "page" if page < 1 else "per_page", "invalid")
    per_page = min(per_page, MAX_PER_PAGE)
    matching = [a for a in data.activities
                if (before is None or _epoch(a) < before) and (after is None or _epoch(a) > after)]  # fmt: skip
    if not (after is not None and before is None):
        matching.reverse()  # newest first, unless only `after` is given
    return web.json_response(matching[(page - 1) * per_page : page * per_page])


async def get_activity(request: web.Request) -> web.Response:
    data = user_data(request, _authorized_user(request))
    for a in data.activities:
        if str(a["id"]) == request.match_info["id"]:
            return web.json_response(a | {"resource_state": 3, "calories": data.calories[a["id"]], "description": None})
    return _error(404, "Record Not Found", "Activity", "id", "invalid")


async def get_athlete(request: web.Request) -> web.Response:
    return web.json_response(user_data(request, _authorized_user(request)).athlete)


# ---- OAuth and limits -----------------------------------------------------------------------


def _refused(what: str) -> dict[str, Any]:
    resource, field = ("RefreshToken", "refresh_token") if "refresh" in what.lower() else ("AuthorizationCode", "code")
    return {"message": "Bad Request", "errors": [{"resource": resource, "field": field, "code": "invalid"}]}


OAUTH = OAuthStyle(
    NAME,
    ACCESS_TTL_S,
    client_auth="body",
    rotates_refresh_token=True,
    extra=lambda user, ttl: {"token_type": "Bearer", "expires_at": int(time.time()) + ttl, "athlete": athlete(user)},
    refused=_refused,
)
_token_endpoint = token_endpoint(OAUTH)


async def oauth_token(request: web.Request) -> web.StreamResponse:
    """Strava's answer to a refresh grant carries no `athlete`; to a code grant it does."""
    response = await _token_endpoint(request)
    form = await request.post()
    if response.status != 200 or form.get("grant_type") != "refresh_token" or not isinstance(response, web.Response):
        return response
    body = json.loads(response.text or "{}")
    body.pop("athlete", None)
    return web.json_response(body)


def _rate_headers(usage: list[tuple[int, int, int]]) -> dict[str, str]:
    """Strava's usage headers, on every answer: limits and usage per window, 15 minutes first."""
    limits, used = ",".join(str(u[0]) for u in usage), ",".join(str(u[2]) for u in usage)
    return {"X-RateLimit-Limit": limits, "X-RateLimit-Usage": used,
            "X-ReadRateLimit-Limit": limits, "X-ReadRateLimit-Usage": used}  # fmt: skip


RATE_LIMIT = RateLimitStyle(
    limits=[(100, 15 * 60), (1000, 86400)],
    headers=_rate_headers,
    body={"message": "Rate Limit Exceeded",
          "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}]},
)  # fmt: skip


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    api.router.add_get("/api/v3/athlete/activities", list_activities)
    api.router.add_get("/api/v3/activities/{id}", get_activity)
    api.router.add_get("/api/v3/athlete", get_athlete)
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/oauth/token", oauth_token)
    auth.router.add_post("/api/v3/oauth/token", oauth_token)
    return api, auth


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served: the athlete, the activity summaries
    (oldest first) and, by activity id, the `calories` only the detail carries."""
    data = user_data(app, user)
    return {
        "athlete": data.athlete,
        "activities": data.activities,
        "calories": {str(k): v for k, v in data.calories.items()},
    }
