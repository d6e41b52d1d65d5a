"""Polar AccessLink v3 simulator: the paths, parameters, registration, auth and JSON shapes of
`www.polaraccesslink.com` and its OAuth server `polarremote.com`, with deterministic data per user.

Data API (mounted under /polar/api):
- `POST /v3/users` with JSON {"member-id": "..."}: registers the token's user with our app; 200
  with the user JSON, 409 if already registered or if another user has that member-id. Until
  then, data calls are answered 403 with Polar's error shape {"timestamp", "status": 403,
  "errorType": "Forbidden", "message", "corrId"} (our choice: Polar only says the user must be
  registered first, and documents 403 for consents not accepted).
- `GET /v3/users/{polar-user-id}`: the token's user as registered (its own id only, else 403; 204,
  the spec's "not found", when not registered).
- `DELETE /v3/users/{polar-user-id}`: deregisters the token's user (its own id only, else 403;
  404 when not registered) and revokes its access token: 204.
- `GET /v3/exercises?samples=&zones=&route=` (true|false): the exercises uploaded in the last 30
  days before the simulator's anchor, oldest first, in one JSON list (no pagination). Older
  exercises exist (`older_workouts`) but are not served. AccessLink serves only exercises uploaded
  after the user's registration; the simulator serves its whole 30-day history to a user
  registered at connect time (our choice: a demo and tests with data), unless the user's history
  knob `since_registration` is 1. `GET /v3/exercises/{id}`: one of them.
- 24/7 data for the last `days_247` days (history knob, 28 by default: what AccessLink's lists
  serve): `GET /v3/users/sleep` ({"nights": [...]}, the spec's `sleep`: start and end with the
  user's offset, stages in seconds, 5-minute heart-rate samples keyed by local "HH:MM"),
  `/v3/users/nightly-recharge` ({"recharges": [...]}), both for the nights up to the anchor's
  date; `/v3/users/activities` (a list of the spec's `activity-summary-with-all-samples`, without
  samples) and `/v3/users/continuous-heart-rate/{date}` (samples every 5 minutes, local
  `sample_time` "HH:MM:SS", a list as the spec's example writes it) for the days before it. By
  date: `/v3/users/sleep/{date}` and `/nightly-recharge/{date}` (404 when none), `/activities/{date}`
  (204 when none, as the spec says), `/continuous-heart-rate/{date}` (404 when none).
  Without a flag the field is absent; with it, it is present, `[]` where the exercise has none
  (our choice: no HR sensor means no zones and no HR samples; no GPS means no route).
- Exercise fields as AccessLink documents them; `start_time` is local time without an offset,
  `start_time_utc_offset` its offset in minutes, `duration` an ISO 8601 duration ("PT1H2M3.5S");
  runs with HR carry `running-index`, exercises with HR from two of the watches
  `training_load_pro` (the spec's `training-load-pro-sample`, hyphenated keys).
  The optional fields have the spec's shapes (swagger.yaml `sample`, `zone`, `location`): samples
  `{"recording-rate", "sample-type", "data"}`, "0" heart rate (bpm), "1" speed (km/h), "3"
  altitude (m), "8" running cadence, "11" RR intervals (ms; `recording-rate` null, as the spec says
  of RR data); `data` comma-separated, a sensor offline written `null` (the spec) or left empty.
  Heart rate every 1 or 5 s (watches record every second; coarser here to keep test data small).
  Zones `{"index", "lower-limit", "upper-limit", "in-zone"}`; route points every 15 s,
  `{"latitude", "longitude", "time", "satellites", "fix"}`, `time` the offset from the start in
  seconds as the spec's example writes it ("PT210.026S").
OAuth (under /polar/auth): the authorization page `GET /oauth2/authorization` (flow.polar.com's
path; sim/oauth.py) and `/v2/oauth2/token`, client credentials by HTTP Basic; an issued code, or
the shortcut code `user-NAME`, yields a long-lived access token (10 years) and no refresh token;
`x_user_id` is the Polar user id (an integer). Rate limits: 500 calls per 15 minutes and 5,000 per
day, the floor of AccessLink's 500 + 20 and 5,000 + 100 per registered user (second-hand); a call
past them, or the "ratelimit" fault, is answered 429 in Polar's error shape with Retry-After (our
choice: the header names and formats Polar uses for its counts are not confirmed, so none are sent).

Webhooks (`emit`, for a registered user only, as AccessLink notifies only about those):
`{"kind": "exercise"}` records a new exercise that just ended (served by the list, the detail and
`records`) and sends `{"event": "EXERCISE", "user_id", "entity_id", "timestamp", "url"}`, the url
on this simulator's own API; `{"kind": "sleep"}` sends a SLEEP event for the anchor's night,
`activity_summary` and `continuous_heart_rate` an ACTIVITY_SUMMARY and CONTINUOUS_HEART_RATE event
for the day before the anchor (the newest each has: the spec's webhookPayloadActivitySummary and
webhookPayloadContinuousHeartRate);
`{"kind": "ping"}` sends `{"event": "PING", "timestamp"}` (the spec's webhookPayloadExercise,
webhookPayloadSleep and webhookPing). Signed with `Polar-Webhook-Signature`, the hex HMAC-SHA256
of the body under the webhook target's secret, and named by `Polar-Webhook-Event` (both as public
AccessLink clients read them; the spec names neither).
"""

import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from wearsync.sim.common import (
    STATE_KEY,
    RateLimitStyle,
    SimState,
    Simulator,
    bearer_user,
    cached_user_data,
    deliver,
    fault_middleware,
    json_error,
    user_rng,
)
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint

NAME = "polar"
ACCESS_TTL_S = 10 * 365 * 86400
WINDOW = timedelta(days=30)
DEFAULT_HISTORY = {"workouts": 40, "older_workouts": 12, "days_247": 28}
API_HOST = "https://www.polaraccesslink.com"  # `polar_user` links are absolute, on the real host
FLAGS = {"samples": "samples", "zones": "heart_rate_zones", "route": "route"}  # query flag -> field

# (sport, detailed_sport_info, outdoor (GPS), speed in km/h: 0 means no distance)
_SPORTS = [
    ("RUNNING", "RUNNING", True, 11.0), ("CYCLING", "ROAD_BIKING", True, 27.0),
    ("CYCLING", "MOUNTAIN_BIKING", True, 17.0), ("RUNNING", "TREADMILL_RUNNING", False, 0.0),
    ("CYCLING", "INDOOR_CYCLING", False, 0.0), ("OTHER", "STRENGTH_TRAINING", False, 0.0),
    ("OTHER", "YOGA", False, 0.0), ("SWIMMING", "POOL_SWIMMING", False, 2.5),
    ("SWIMMING", "OPEN_WATER_SWIMMING", True, 2.8), ("WALKING", "WALKING", True, 5.0),
    ("HIKING", "HIKING", True, 4.0), ("SKIING", "CROSS-COUNTRY_SKIING", True, 12.0),
]  # fmt: skip
_UNKNOWN_SPORT = ("OTHER", "SLACKLINING", False, 0.0)  # not in any client's table
_DEVICES = ["Polar Vantage V3", "Polar Grit X2 Pro", "Polar Pacer Pro"]
_TRAINING_LOAD_PRO_DEVICES = {"Polar Vantage V3", "Polar Grit X2 Pro"}  # "a specific wrist unit model" (spec)
_ZONES = [(50, 60), (60, 70), (70, 80), (80, 90), (90, 100)]  # percent of the user's maximum HR


@dataclass
class UserData:
    polar_user_id: int
    exercises: list[dict[str, Any]]  # served (last 30 days), oldest first, with every flag's field
    older: list[dict[str, Any]]  # outside the window: never served
    # 24/7 data by date (ISO): nights and their recharges up to the anchor's date, activity and
    # continuous heart rate for the days before it.
    nights: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    recharges: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    activities: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    heart_rate: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def duration(tenths: int) -> str:
    """Tenths of a second as an ISO 8601 duration, as Polar writes them: "PT1H2M3.5S"."""
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    seconds = f"{rest // 10}" + (f".{rest % 10}" if rest % 10 else "")
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    return text + (f"{seconds}S" if rest or text == "PT" else "")


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _series(values: list[float | None], digits: int, gap: str = "null") -> str:
    return ",".join(gap if v is None else (str(int(v)) if digits == 0 else f"{v:.{digits}f}") for v in values)


def _sample(sample_type: str, rate: int | None, data: str) -> dict[str, Any]:
    return {"recording-rate": rate, "sample-type": sample_type, "data": data}


def _samples(rng: Any, duration_s: float, speed: float, has_hr: bool, outdoor: bool, running: bool) -> list[Any]:
    samples: list[dict[str, Any]] = []
    gap = rng.choice(["null", ""])  # the spec writes an offline sensor as null; some series leave it empty
    if has_hr:
        rate = rng.choice([1, 5, 5, 5])
        hr: list[float | None] = []
        value = rng.uniform(90, 110)
        for _ in range(int(duration_s // rate) + 1):
            value = min(195.0, max(70.0, value + rng.uniform(-3, 3.4)))
            hr.append(None if rng.random() < 0.01 else round(value))  # strap contact lost: a gap
        samples.append(_sample("0", rate, _series(hr, 0, gap)))
        if rng.random() < 0.3:  # a chest strap also records RR intervals, at no fixed rate
            rr: list[float | None] = [rng.randint(380, 650) for _ in range(120)]
            samples.append(_sample("11", None, _series(rr, 0, gap)))
    if speed:
        count = int(duration_s // 5) + 1
        speeds: list[float | None] = [round(speed * rng.uniform(0.7, 1.3), 1) for _ in range(count)]
        samples.append(_sample("1", 5, _series(speeds, 1, gap)))
    if outdoor:
        altitude = rng.uniform(10, 600)
        altitudes: list[float | None] = []
        for _ in range(int(duration_s // 10) + 1):
            altitude += rng.uniform(-2, 2)
            altitudes.append(round(altitude, 1))
        samples.append(_sample("3", 10, _series(altitudes, 1, gap)))
    if running:
        cadence: list[float | None] = [rng.randint(160, 185) for _ in range(int(duration_s // 5) + 1)]
        samples.append(_sample("8", 5, _series(cadence, 0, gap)))
    return samples


def _zones(rng: Any, duration_s: float, max_hr: int) -> list[dict[str, Any]]:
    shares = [rng.random() for _ in _ZONES]
    total = sum(shares) * 1.1  # some time is spent below zone 1
    return [
        {"index": i + 1, "lower-limit": max_hr * low // 100, "upper-limit": max_hr * high // 100,
         "in-zone": duration(int(duration_s * share / total) * 10)}
        for i, ((low, high), share) in enumerate(zip(_ZONES, shares, strict=True))
    ]  # fmt: skip


def _route(rng: Any, duration_s: float, speed: float) -> list[dict[str, Any]]:
    lat, lon = 60.17 + rng.uniform(-0.2, 0.2), 24.94 + rng.uniform(-0.2, 0.2)
    step = speed / 3.6 * 15 / 111_000  # degrees per 15 s, roughly
    points = []
    for second in range(0, int(duration_s) + 1, 15):
        lat, lon = lat + step * rng.uniform(-1, 1), lon + step * rng.uniform(-1, 1)
        time = f"PT{second}.{rng.randrange(1000):03d}S"
        points.append({"latitude": round(lat, 8), "longitude": round(lon, 8), "time": time,
                       "satellites": rng.randint(5, 12), "fix": rng.choice([2, 3])})  # fmt: skip
    return points


def _training_load_pro(rng: Any, local_start: datetime) -> dict[str, Any]:
    """The spec's `training-load-pro-sample`: loads and how they read, the user's own RPE."""
    levels = ["VERY_LOW", "LOW", "MEDIUM", "HIGH", "VERY_HIGH"]
    return {"date": local_start.date().isoformat(), "cardio-load": round(rng.uniform(5, 250), 1),
            "muscle-load": round(rng.uniform(0, 80), 1), "perceived-load": round(rng.uniform(5, 200), 1),
            "cardio-load-interpretation": rng.choice(levels),
            "muscle-load-interpretation": rng.choice([*levels, "NOT_AVAILABLE"]),
            "perceived-load-interpretation": rng.choice(levels),
            "user-rpe": rng.choice(["RPE_EASY", "RPE_MODERATE", "RPE_HARD", "RPE_NONE"])}  # fmt: skip


def _exercise(
    rng: Any,
    start: datetime,
    slot_s: float,
    offset: int,
    sport: tuple[str, str, bool, float],
    has_hr: bool,
    user: tuple[int, int],
) -> dict[str, Any]:
    """One exercise starting at `start` (UTC), lasting 20 min to 2 h but at most half its slot."""
    polar_user_id, max_hr = user
    top, detailed, outdoor, speed = sport
    longest = max(12000, int(min(72000, slot_s * 5)))
    tenths = rng.randrange(12000, longest + 1) // 5 * 5  # whole or half seconds
    duration_s = tenths / 10
    local = (start + timedelta(minutes=offset)).replace(tzinfo=None)
    exercise: dict[str, Any] = {
        "id": f"{rng.getrandbits(40):010X}",
        "upload_time": _utc(start + timedelta(seconds=int(duration_s) + rng.randrange(60, 3600))),
        "polar_user": f"{API_HOST}/v3/users/{polar_user_id}",
        "device": rng.choice(_DEVICES),
        "device_id": f"{rng.getrandbits(32):08X}",
        "start_time": local.isoformat(timespec="seconds"),
        "start_time_utc_offset": offset,
        "duration": duration(tenths),
        "calories": int(duration_s / 60 * rng.uniform(5, 13)),
        "distance": round(speed / 3.6 * duration_s * rng.uniform(0.9, 1.1), 1),
        "heart_rate": {"average": rng.randint(105, 150), "maximum": rng.randint(155, max_hr)},
        "training_load": round(rng.uniform(20, 250), 1),
        "sport": top,
        "has_route": outdoor,
        "detailed_sport_info": detailed,
        "fat_percentage": (fat := rng.randint(20, 60)),
        "carbohydrate_percentage": (carbs := rng.randint(30, 100 - fat - 5)),
        "protein_percentage": 100 - fat - carbs,
    }
    if not speed:  # indoor: no distance at all
        del exercise["distance"]
    if not has_hr:
        del exercise["heart_rate"]
    if rng.random() < 0.1:
        exercise |= {"club_id": rng.randint(1000, 9999), "club_name": "Polar Club Helsinki"}
    if has_hr and top == "RUNNING":  # from HR and speed, by GPS or stride sensor
        exercise["running-index"] = rng.randint(40, 65)  # hyphenated in the spec, unlike its neighbours
    if has_hr and exercise["device"] in _TRAINING_LOAD_PRO_DEVICES:
        exercise["training_load_pro"] = _training_load_pro(rng, local)
    exercise["samples"] = _samples(rng, duration_s, speed, has_hr, outdoor, top == "RUNNING")
    exercise["heart_rate_zones"] = _zones(rng, duration_s, max_hr) if has_hr else []
    exercise["route"] = _route(rng, duration_s, speed) if outdoor else []
    return exercise


def _history(rng: Any, user: tuple[int, int], anchor: datetime, served: int, older: int) -> UserData:
    """`served` exercises spread over the 30 days before the anchor, one per slot so none overlap;
    `older` ones every two days or so before that."""
    offset = rng.choice([-300, 0, 60, 120, 330])
    unknown = rng.randrange(served) if served else -1
    no_hr = set(rng.sample(range(served), min(served, 3)))
    slot_s = (WINDOW - timedelta(hours=1)).total_seconds() / max(served, 1)
    exercises = []
    for i in range(served):
        start = anchor - WINDOW + timedelta(seconds=i * slot_s + rng.uniform(0, slot_s * 0.4))
        sport = _UNKNOWN_SPORT if i == unknown else rng.choice(_SPORTS)
        exercises.append(_exercise(rng, start.replace(microsecond=0), slot_s, offset, sport, i not in no_hr, user))
    old = []
    for i in range(older):
        start = anchor - WINDOW - timedelta(days=2 * (i + 1), hours=rng.uniform(0, 20))
        old.append(_exercise(rng, start.replace(microsecond=0), 86400, offset, rng.choice(_SPORTS), True, user))
    return UserData(user[0], exercises, old[::-1])


def polar_user_id(user: str) -> int:
    return user_rng(NAME, user, "id").randrange(10_000_000, 99_999_999)


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    identity = (polar_user_id(user), user_rng(NAME, user, "max_hr").randint(178, 200))
    rng = user_rng(NAME, user, "exercises")
    data = _history(rng, identity, anchor, history["workouts"], history["older_workouts"])
    offset = data.exercises[0]["start_time_utc_offset"] if data.exercises else 0
    link = f"{API_HOST}/v3/users/{identity[0]}"
    for i in range(history["days_247"]):
        night = anchor.date() - timedelta(days=i)
        day = night - timedelta(days=1)
        data.nights[night.isoformat()] = _night(user_rng(NAME, user, f"night-{night}"), link, night, offset)
        data.recharges[night.isoformat()] = _recharge(user_rng(NAME, user, f"recharge-{night}"), link, night)
        data.activities[day.isoformat()] = _activity(user_rng(NAME, user, f"activity-{day}"), day, offset)
        data.heart_rate[day.isoformat()] = _heart_rate(user_rng(NAME, user, f"hr-{day}"), link, day)
    return data


# ---- 24/7 data --------------------------------------------------------------------------------


def _hhmm_series(rng: Any, start: datetime, minutes: int, low: float, high: float, digits: int) -> dict[str, Any]:
    """Samples every 5 minutes keyed by local "HH:MM", as the spec's sleep and recharge examples."""
    values: dict[str, Any] = {}
    for m in range(0, minutes, 5):
        value = rng.uniform(low, high)
        values[(start + timedelta(minutes=m)).strftime("%H:%M")] = round(value, digits) if digits else round(value)
    return values


def _night(rng: Any, link: str, night: date, offset: int) -> dict[str, Any]:
    """The spec's `sleep`: start and end with the user's offset, stages in seconds that add up."""
    zone = timezone(timedelta(minutes=offset))
    start = datetime.combine(night, datetime.min.time(), zone) - timedelta(minutes=rng.randint(30, 150))
    asleep_s = rng.randint(6 * 3600, 9 * 3600)
    interruptions = rng.randint(600, 3600)
    end = start + timedelta(seconds=asleep_s + interruptions)
    deep, rem = int(asleep_s * rng.uniform(0.12, 0.22)), int(asleep_s * rng.uniform(0.18, 0.25))
    short = rng.randint(0, interruptions)
    return {
        "polar_user": link, "date": night.isoformat(),
        "sleep_start_time": start.isoformat(timespec="seconds"), "sleep_end_time": end.isoformat(timespec="seconds"),
        "device_id": "1111AAAA", "continuity": round(rng.uniform(1.0, 5.0), 1), "continuity_class": rng.randint(1, 5),
        "light_sleep": asleep_s - deep - rem, "deep_sleep": deep, "rem_sleep": rem,
        "unrecognized_sleep_stage": 0, "sleep_score": rng.randint(40, 95),
        "total_interruption_duration": interruptions, "sleep_charge": rng.randint(1, 5), "sleep_goal": 28800,
        "sleep_rating": rng.randint(0, 5), "short_interruption_duration": short,
        "long_interruption_duration": interruptions - short, "sleep_cycles": rng.randint(3, 7),
        "group_duration_score": round(rng.uniform(1, 100), 1), "group_solidity_score": round(rng.uniform(1, 100), 1),
        "group_regeneration_score": round(rng.uniform(1, 100), 1),
        "hypnogram": {start.strftime("%H:%M"): 2, (start + timedelta(minutes=40)).strftime("%H:%M"): 4},
        "heart_rate_samples": _hhmm_series(rng, start, 240, 48, 65, 0),
    }  # fmt: skip


def _recharge(rng: Any, link: str, night: date) -> dict[str, Any]:
    return {
        "polar_user": link, "date": night.isoformat(), "heart_rate_avg": rng.randint(48, 65),
        "beat_to_beat_avg": rng.randint(850, 1200), "heart_rate_variability_avg": rng.randint(20, 90),
        "breathing_rate_avg": round(rng.uniform(12, 17), 1), "nightly_recharge_status": rng.randint(1, 6),
        "ans_charge": round(rng.uniform(-10, 10), 1), "ans_charge_status": rng.randint(1, 5),
        "hrv_samples": _hhmm_series(rng, datetime(2000, 1, 1, 0, 30), 240, 15, 90, 0),
        "breathing_samples": _hhmm_series(rng, datetime(2000, 1, 1, 0, 30), 240, 12, 17, 1),
    }  # fmt: skip


def _activity(rng: Any, day: date, offset: int) -> dict[str, Any]:
    """The spec's `activity-summary-with-all-samples` without its samples (asked for by flags)."""
    steps = rng.randint(2000, 18000)
    active_s = rng.randint(3600, 5 * 3600)
    start = datetime.combine(day, datetime.min.time()) + timedelta(hours=rng.randint(6, 8), minutes=rng.randint(0, 59))
    end = datetime.combine(day, datetime.max.time()).replace(microsecond=0)
    inactive_s = int((end - start).total_seconds()) - active_s
    return {
        "start_time": start.isoformat(), "end_time": end.isoformat(),
        "active_duration": duration(active_s * 10), "inactive_duration": duration(inactive_s * 10),
        "daily_activity": round(rng.uniform(20, 120), 1), "calories": rng.randint(1800, 3200),
        "active_calories": rng.randint(300, 1500), "steps": steps, "inactivity_alert_count": rng.randint(0, 3),
        "distance_from_steps": round(steps * rng.uniform(0.65, 0.8), 2),
    }  # fmt: skip


def _heart_rate(rng: Any, link: str, day: date) -> dict[str, Any]:
    """The spec's `continuous-heartrate` as its example writes it: a list of samples, local times."""
    samples = []
    for minute in range(0, 24 * 60, 5):
        second = rng.randint(0, 59)
        samples.append(
            {"heart_rate": rng.randint(50, 120), "sample_time": f"{minute // 60:02d}:{minute % 60:02d}:{second:02d}"}
        )
    return {"polar_user": link, "date": day.isoformat(), "heart_rate_samples": samples}


def _added(request_or_app: web.Request | web.Application, user: str) -> list[dict[str, Any]]:
    """Exercises recorded after the history was laid out (by `emit`)."""
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    added: list[dict[str, Any]] = app[STATE_KEY].changes.get((NAME, user), {}).get("added", [])
    return added


def exercises(request_or_app: web.Request | web.Application, user: str) -> list[dict[str, Any]]:
    """Every exercise served, oldest first. With the user's history knob `since_registration` set
    to 1, as AccessLink documents it: only those uploaded after the user's registration, so a
    user registered now has none until one is recorded (`emit`)."""
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    state: SimState = app[STATE_KEY]
    served = user_data(request_or_app, user).exercises + _added(request_or_app, user)
    if not state.provider(NAME).history_for(user).get("since_registration"):
        return served
    registered_at = state.changes.get((NAME, user), {}).get("registered_at")
    return [e for e in served if registered_at is not None and e["upload_time"] >= registered_at]


# ---- data API ---------------------------------------------------------------------------------


def polar_error(status: int, error_type: str, message: str) -> web.Response:
    """Polar's error body."""
    body = {
        "timestamp": _utc(datetime.now(UTC)),
        "status": status,
        "errorType": error_type,
        "message": message,
        "corrId": "sim",
    }
    return json_error(status, body)


def _user(request: web.Request, *, registered: bool = True) -> str | web.Response:
    """The token's user, or the answer Polar gives instead (401 bad token, 403 not registered)."""
    user = bearer_user(request, NAME)
    if user is None:
        return polar_error(401, "Unauthorized", "Invalid or expired access token")
    if registered and (NAME, user) not in request.config_dict[STATE_KEY].registered:
        return polar_error(403, "Forbidden", "User is not registered to the partner: POST /v3/users first")
    return user


async def register_user(request: web.Request) -> web.Response:
    user = _user(request, registered=False)
    if isinstance(user, web.Response):
        return user
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("member-id"), str) or not body["member-id"]:
        return polar_error(400, "Bad Request", "member-id is required")
    state = request.config_dict[STATE_KEY]
    if (NAME, user) in state.registered or body["member-id"] in state.registered.values():
        return polar_error(409, "Conflict", "User already registered to partner or duplicated member-id")
    state.registered[(NAME, user)] = body["member-id"]
    registered_at = _utc(datetime.now(UTC))
    state.changes.setdefault((NAME, user), {})["registered_at"] = registered_at  # as upload_time
    return web.json_response(_user_information(user, body["member-id"], registered_at))


def _user_information(user: str, member_id: str, registered_at: str) -> dict[str, Any]:
    return {
        "polar-user-id": polar_user_id(user), "member-id": member_id,
        "registration-date": registered_at,
        "first-name": user, "last-name": "Sim", "birthdate": "1990-01-01", "gender": "FEMALE",
        "weight": 62.0, "height": 170.0, "extra-info": [],
    }  # fmt: skip


async def get_user(request: web.Request) -> web.Response:
    """`GET /v3/users/{user-id}`: the token's user as registered (204: not registered with us; the
    spec's "not found"); another user's id is 403, as on DELETE."""
    user = _user(request, registered=False)
    if isinstance(user, web.Response):
        return user
    if request.match_info["user_id"] != str(polar_user_id(user)):
        return polar_error(403, "Forbidden", "Not the token's user")
    member_id = request.config_dict[STATE_KEY].registered.get((NAME, user))
    if member_id is None:
        return web.Response(status=204)
    registered_at = request.config_dict[STATE_KEY].changes.get((NAME, user), {}).get("registered_at", "")
    return web.json_response(_user_information(user, member_id, registered_at))


async def delete_user(request: web.Request) -> web.Response:
    user = _user(request, registered=False)
    if isinstance(user, web.Response):
        return user
    if request.match_info["user_id"] != str(polar_user_id(user)):
        return polar_error(403, "Forbidden", "Not the token's user")
    state = request.config_dict[STATE_KEY]
    if (NAME, user) not in state.registered:
        return polar_error(404, "Not Found", "User is not registered to the partner")
    del state.registered[(NAME, user)]
    state.revoke_access(NAME, user)
    return web.Response(status=204)


def _flags(request: web.Request) -> dict[str, bool] | web.Response:
    flags = {}
    for name in FLAGS:
        value = request.query.get(name, "false").lower()
        if value not in ("true", "false"):
            return polar_error(400, "Bad Request", f"{name} must be true or false")
        flags[name] = value == "true"
    return flags


_FIELD_FLAG = {field: flag for flag, field in FLAGS.items()}


def as_served(exercise: dict[str, Any], flags: dict[str, bool]) -> dict[str, Any]:
    """An exercise with only the flagged optional fields."""
    return {k: v for k, v in exercise.items() if k not in _FIELD_FLAG or flags[_FIELD_FLAG[k]]}


async def list_exercises(request: web.Request) -> web.Response:
    user, flags = _user(request), _flags(request)
    if isinstance(user, web.Response):
        return user
    if isinstance(flags, web.Response):
        return flags
    return web.json_response([as_served(e, flags) for e in exercises(request, user)])


async def get_exercise(request: web.Request) -> web.Response:
    user, flags = _user(request), _flags(request)
    if isinstance(user, web.Response):
        return user
    if isinstance(flags, web.Response):
        return flags
    for exercise in exercises(request, user):
        if exercise["id"] == request.match_info["id"]:
            return web.json_response(as_served(exercise, flags))
    return polar_error(404, "Not Found", "Exercise not found")


def _by_date(request: web.Request, kind: str) -> dict[str, Any] | web.Response:
    user = _user(request)
    if isinstance(user, web.Response):
        return user
    found: dict[str, dict[str, Any]] = getattr(user_data(request, user), kind)
    return found.get(request.match_info.get("date", ""), {})


async def list_nights(request: web.Request) -> web.Response:
    user = _user(request)
    if isinstance(user, web.Response):
        return user
    return web.json_response({"nights": sorted(user_data(request, user).nights.values(), key=lambda n: n["date"])})


async def list_recharges(request: web.Request) -> web.Response:
    user = _user(request)
    if isinstance(user, web.Response):
        return user
    recharges = sorted(user_data(request, user).recharges.values(), key=lambda n: n["date"])
    return web.json_response({"recharges": recharges})


async def list_activities(request: web.Request) -> web.Response:
    user = _user(request)
    if isinstance(user, web.Response):
        return user
    activities = user_data(request, user).activities
    return web.json_response([activities[d] for d in sorted(activities)])


def _dated(kind: str, missing: int) -> Any:
    """One date's sleep, recharge, activity or heart rate; `missing` (404, or 204) where there is none."""

    async def handler(request: web.Request) -> web.Response:
        found = _by_date(request, kind)
        if isinstance(found, web.Response):
            return found
        if found:
            return web.json_response(found)
        if missing == 204:
            return web.Response(status=204)
        return polar_error(404, "Not Found", f"No data found for date {request.match_info['date']}")

    return handler


# ---- OAuth and limits -----------------------------------------------------------------------

OAUTH = OAuthStyle(
    NAME, ACCESS_TTL_S, client_auth="basic", issues_refresh_token=False,
    extra=lambda user, ttl: {"x_user_id": polar_user_id(user)},
)  # fmt: skip

RATE_LIMIT = RateLimitStyle(
    limits=[(500, 15 * 60), (5000, 86400)],  # tests may set others with the `rate_limits` knob
    headers=lambda usage: {"Retry-After": "1"} if any(used > limit for limit, _, used in usage) else {},
    body={"status": 429, "errorType": "Too Many Requests", "message": "Rate limit exceeded", "corrId": "sim"},
)


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    api.router.add_post("/v3/users", register_user)
    # Before /v3/users/{user_id}, which would take "sleep" for a user id.
    api.router.add_get("/v3/users/sleep", list_nights)
    api.router.add_get("/v3/users/sleep/{date}", _dated("nights", 404))
    api.router.add_get("/v3/users/nightly-recharge", list_recharges)
    api.router.add_get("/v3/users/nightly-recharge/{date}", _dated("recharges", 404))
    api.router.add_get("/v3/users/activities", list_activities)
    api.router.add_get("/v3/users/activities/{date}", _dated("activities", 204))
    api.router.add_get("/v3/users/continuous-heart-rate/{date}", _dated("heart_rate", 404))
    api.router.add_get("/v3/users/{user_id}", get_user)
    api.router.add_delete("/v3/users/{user_id}", delete_user)
    api.router.add_get("/v3/exercises", list_exercises)
    api.router.add_get("/v3/exercises/{id}", get_exercise)
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/v2/oauth2/token", token_endpoint(OAUTH))
    auth.router.add_get("/oauth2/authorization", authorize_endpoint(OAUTH))
    return api, auth


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served with samples, zones and route
    (without a flag its field is absent), plus the older exercises it keeps but never serves."""
    data = user_data(app, user)
    return {
        "exercises": exercises(app, user), "older_exercises": data.older, "polar_user_id": data.polar_user_id,
        "nights": data.nights, "recharges": data.recharges, "activities": data.activities,
        "heart_rate": data.heart_rate,
    }  # fmt: skip


# emit's 24/7 kinds: (path under /v3/users, days before the anchor's date of the date notified)
DATED_EVENTS = {"sleep": ("sleep", 0), "activity_summary": ("activities", 1),
                "continuous_heart_rate": ("continuous-heart-rate", 1)}  # fmt: skip


async def emit(request: web.Request, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Something happens upstream and AccessLink notifies (see the module docstring): the event
    sent, the status our receiver answered, and the exercise recorded, if any."""
    kind = str(body.get("kind", "exercise"))
    state = request.config_dict[STATE_KEY]
    if kind not in ("exercise", *DATED_EVENTS, "ping"):
        raise web.HTTPBadRequest(
            text=f'{{"error": "kind must be exercise, {", ".join(DATED_EVENTS)} or ping"}}',
            content_type="application/json",
        )
    if kind != "ping" and (NAME, user) not in state.registered:
        raise web.HTTPConflict(text='{"error": "Polar notifies only about users registered to the partner"}',
                               content_type="application/json")  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    event: dict[str, Any] = {"event": kind.upper(), "user_id": polar_user_id(user), "timestamp": _utc(now)}
    api = f"{request.url.origin()}/{NAME}/api"
    exercise = None
    if kind == "exercise":
        added = state.changes.setdefault((NAME, user), {}).setdefault("added", [])
        data = user_data(request, user)
        offset = data.exercises[0]["start_time_utc_offset"] if data.exercises else 0
        identity = (data.polar_user_id, user_rng(NAME, user, "max_hr").randint(178, 200))
        rng = user_rng(NAME, user, f"added-{len(added)}")
        exercise = _exercise(rng, now - timedelta(hours=3), 7200, offset, rng.choice(_SPORTS), True, identity)
        exercise["upload_time"] = _utc(now)  # uploaded to Flow now: that is what AccessLink notifies
        added.append(exercise)
        event |= {"entity_id": exercise["id"], "url": f"{api}/v3/exercises/{exercise['id']}"}
    elif kind in DATED_EVENTS:
        path, days_back = DATED_EVENTS[kind]
        day = (state.anchor - timedelta(days=days_back)).date().isoformat()  # the newest the simulator has
        event |= {"date": day, "url": f"{api}/v3/users/{path}/{day}"}
    else:
        event = {"event": "PING", "timestamp": _utc(now)}
    target = state.webhook_targets.get(NAME)
    raw = json.dumps(event).encode()
    signature = hmac.new((target.secret if target else "").encode(), raw, hashlib.sha256).hexdigest()
    headers = {"Polar-Webhook-Signature": signature, "Polar-Webhook-Event": event["event"]}
    status = await deliver(request, NAME, raw, headers)
    return {"event": event, "delivery_status": status, "exercise": exercise}


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=records, emit=emit)
