"""Suunto Cloud API simulator: the paths, parameters, pagination, auth and JSON shapes of
`cloudapi.suunto.com` and its OAuth server, with deterministic data per user.

Data API (mounted under /suunto/api): `GET /v3/workouts/` (since in epoch ms, limit <= 100, offset,
filter-by-modification-time; body {"error", "payload", "metadata"}), `GET /v3/workouts/{key}` (the
payload names the workout `key`, as documented for one workout), the 24/7 endpoints
`/247samples/{sleep,recovery,activity}` with `from`/`to` in epoch ms spanning at most 28 days
(entries with from <= time < to), and `/247/daily-activity-statistics` with ISO 8601
`startdate`/`enddate` (UTC unless an offset says otherwise, `+0200` refused; at most 28 days, the
end inclusive): 24-hour buckets from `startdate` summing the activity samples' steps and joules,
`Value` null where a bucket has none.
Every call needs a bearer token from the OAuth server and the `Ocp-Apim-Subscription-Key` header.

Shapes follow sim/fixtures/suunto/ (each naming its source, official or second-hand): a workout's
heart rate is the documented hrdata.workoutAvgHR / workoutMaxHR / userMaxHR, for about half the
workouts (chosen per workout) also avg / hrmax / max / min and avgCadence / maxCadence with the
device at the root, for the others cadence {"avg", "max"} and the device in a SummaryExtension.
Shapes of the 24/7 entries follow what public Suunto clients read (unconfirmed by public docs):
`{"timestamp", "entryData": {...}}` with HR in bpm, SpO2 as a 0-1 fraction, energy in joules.
OAuth (under /suunto/auth): the authorization page `GET /oauth/authorize` (sim/oauth.py),
`GET /oauth/deauthorize?client_id=` with the user's bearer token (the app withdraws its access:
200, the user's tokens stop working) and `/oauth/token` with client credentials by HTTP Basic; an
issued code, or the shortcut code `user-NAME`, yields tokens of user NAME; refresh tokens do not
rotate (unconfirmed); access tokens last a day.
Rate limit: 100 calls per 15 minutes per app; over it, a 429 with `Retry-After` (as Azure API
Management, Suunto's gateway, answers).
"""

import hashlib
import hmac
import json
import re
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from wearsync.sim.common import (
    STATE_KEY,
    RateLimitStyle,
    Simulator,
    bearer_user,
    cached_user_data,
    deliver,
    fault_middleware,
    fixture,
    iso,
    json_error,
    user_rng,
)
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint

NAME = "suunto"
ACCESS_TTL_S = 86400
MAX_WINDOW_MS = 28 * 86400 * 1000
DEFAULT_HISTORY = {"workouts": 300, "days_247": 42}

# (activityId, name); 130 is a code our client does not know, to exercise the `other` mapping.
_ACTIVITIES = [(1, "Running"), (2, "Cycling"), (0, "Walking"), (11, "Hiking"), (21, "Swimming"),
               (22, "Trail running"), (23, "Gym"), (52, "Indoor cycling"), (10, "Mountain biking"),
               (3, "Cross-country skiing"), (51, "Yoga/pilates"), (130, "Unlisted sport")]  # fmt: skip
_DEVICES = ["Suunto 9 Peak Pro", "Suunto Race", "Suunto Vertical", "Suunto 5 Peak"]


@dataclass
class UserData:
    offset_minutes: int
    workouts: list[dict[str, Any]]  # ordered by startTime
    modified_ms: dict[str, int]  # workoutKey -> modification time (not in the payload)
    sleep: list[dict[str, Any]]
    recovery: list[dict[str, Any]]
    activity: list[dict[str, Any]]
    source_247: str  # the name daily statistics give the user's 24/7 data source
    activity_ms: list[int] = field(default_factory=list)  # each activity entry's time, ascending

    def __post_init__(self) -> None:
        self.activity_ms = [_ms(datetime.fromisoformat(e["timestamp"])) for e in self.activity]

    def activity_between(self, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        return self.activity[bisect_left(self.activity_ms, start_ms) : bisect_left(self.activity_ms, end_ms)]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _workouts(rng: Any, anchor: datetime, count: int, offset: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    workouts, modified = [], {}
    start = anchor
    user_max_hr = rng.randint(178, 200)
    for i in range(count):
        start -= timedelta(hours=rng.uniform(20, 70))
        activity_id, activity_name = rng.choice(_ACTIVITIES)
        moving = activity_id in (0, 1, 2, 10, 11, 22, 3)
        total_time = round(rng.uniform(1200, 9000), 1)
        speed = {1: 3.0, 22: 2.5, 0: 1.4, 11: 1.1, 2: 7.5, 10: 5.0, 3: 4.0}.get(activity_id, 0.0) * rng.uniform(
            0.8, 1.2
        )
        stop = start + timedelta(seconds=total_time)
        workout: dict[str, Any] = {
            "workoutId": 4_000_000_000 + i * 7 + rng.randrange(7),
            "workoutKey": f"{rng.getrandbits(96):024x}",
            "activityId": activity_id,
            "startTime": _ms(start),
            "stopTime": _ms(stop),
            "totalTime": total_time,
            "timeOffsetInMinutes": offset,
            "totalDistance": round(speed * total_time, 1) if moving else 0.0,
            "stepCount": int(total_time * rng.uniform(2.4, 2.9)) if activity_id in (0, 1, 11, 22) else 0,
            "energyConsumption": int(total_time / 60 * rng.uniform(6, 13)),
            "maxSpeed": round(speed * 1.6, 2),
            "avgSpeed": round(speed, 2),
            "totalAscent": round(rng.uniform(0, 800), 1) if moving else 0.0,
            "totalDescent": round(rng.uniform(0, 800), 1) if moving else 0.0,
            "maxAltitude": round(rng.uniform(200, 1500), 1),
            "minAltitude": round(rng.uniform(0, 200), 1),
            "hrdata": {
                "workoutAvgHR": (avg_hr := rng.randint(110, 160)),
                "workoutMaxHR": (max_hr := rng.randint(160, 185)),
                "userMaxHR": user_max_hr,  # the user's configured maximum, not the workout's
            },
        }
        device = rng.choice(_DEVICES)
        cadence = {"avg": round(rng.uniform(70, 90), 1), "max": round(rng.uniform(90, 110), 1)}
        if rng.random() < 0.5:  # as public clients see live answers: both heart-rate forms, gear at the root
            workout["hrdata"] |= {"avg": avg_hr, "hrmax": max_hr, "max": user_max_hr, "min": rng.randint(60, 100)}
            workout |= {"avgCadence": cadence["avg"], "maxCadence": cadence["max"], "extensions": []}
            workout["gear"] = {
                "manufacturer": "Suunto", "name": device, "displayName": device,
                "serialNumber": f"{rng.getrandbits(40):012d}", "swVersion": "2.31.20", "hwVersion": "A",
            }  # fmt: skip
        else:  # a newer watch: the documented heart rate only, cadence an object, gear in an extension
            workout["cadence"] = cadence
            workout["extensions"] = [{
                "type": "SummaryExtension", "feeling": rng.randint(1, 5),
                "gear": {"manufacturer": "Suunto", "name": device, "displayName": device,
                         "softwareVersion": "2.44.6", "hardwareVersion": "B"},
            }]  # fmt: skip
        workout |= {
            "name": rng.choice([None, f"{activity_name} {i}"]),
            "notes": rng.choice([None, None, "felt good"]),
        }
        if activity_id in (2, 10, 52):
            workout["avgPower"] = rng.randint(150, 260)
            workout["maxPower"] = rng.randint(400, 900)
        # Fresh payloads can lack these; the client must cope.
        if rng.random() < 0.05:
            del workout["stopTime"]
        if rng.random() < 0.1:
            del workout["hrdata"]
        if rng.random() < 0.1:
            workout.pop("gear", None)
            workout["extensions"] = []
        workouts.append(workout)
        modified[workout["workoutKey"]] = min(_ms(stop) + rng.randrange(0, 2 * 86400_000), _ms(anchor))
    workouts.reverse()
    return workouts, modified


def _data_247(rng: Any, anchor: datetime, days: int, offset: int) -> dict[str, Any]:
    tz_shift = timedelta(minutes=offset)
    sleep, recovery, activity = [], [], []
    sleep_id = rng.randrange(10**8, 10**9)
    # Local midnights, oldest first.
    first_midnight = (anchor + tz_shift).replace(hour=0, minute=0, second=0, microsecond=0) - tz_shift
    first_midnight -= timedelta(days=days)
    # Two days the watch was not worn: no activity samples, so a whole UTC day's statistics are null.
    unworn = rng.randrange(1, days - 2) if days > 3 else -2
    for d in range(days):
        midnight = first_midnight + timedelta(days=d)
        for slot in range(144 if d not in (unworn, unworn + 1) else 0):  # one sample every 10 minutes
            t = midnight + timedelta(minutes=10 * slot)
            night = slot < 42 or slot >= 138
            entry: dict[str, Any] = {
                "HR": round(rng.uniform(48, 62) if night else rng.uniform(60, 110), 1),
                "StepCount": 0 if night else rng.randrange(0, 900),
                "EnergyConsumption": round(rng.uniform(30_000, 45_000) if night else rng.uniform(40_000, 160_000), 1),
            }
            if night:
                entry["SpO2"] = round(rng.uniform(0.93, 0.99), 3)
                entry["HRV"] = round(rng.uniform(25, 90), 1)
            activity.append({"timestamp": iso(t, offset), "entryData": entry})
        for hour in range(0, 24, 3):
            t = midnight + timedelta(hours=hour, minutes=rng.randrange(0, 60))
            recovery.append({"timestamp": iso(t, offset),
                             "entryData": {"Balance": round(rng.uniform(0.1, 1.0), 3),
                                           "StressState": rng.randrange(0, 5)}})  # fmt: skip
        bed = midnight - timedelta(minutes=rng.randrange(0, 120))
        duration = rng.randrange(6 * 3600, 9 * 3600)
        deep, rem = int(duration * rng.uniform(0.12, 0.22)), int(duration * rng.uniform(0.18, 0.25))
        light = int(duration * rng.uniform(0.4, 0.5))
        nights = [(bed, duration, False, deep, light, rem)]
        if rng.random() < 0.15:  # an afternoon nap
            nights.append((midnight + timedelta(hours=14), rng.randrange(1200, 3600), True, 0, 900, 0))
        for start, dur, nap, deep_s, light_s, rem_s in nights:
            end = start + timedelta(seconds=dur)
            sleep_id += 1
            sleep.append({
                "timestamp": iso(end, offset),
                "entryData": {
                    "SleepId": sleep_id, "BedtimeStart": iso(start, offset), "BedtimeEnd": iso(end, offset),
                    "Duration": dur, "DeepSleepDuration": deep_s, "LightSleepDuration": light_s,
                    "REMSleepDuration": rem_s, "SleepQualityScore": rng.randrange(40, 100), "IsNap": nap,
                    "HRAvg": rng.randrange(48, 62), "HRMin": rng.randrange(40, 50),
                    "AvgHRV": rng.randrange(25, 90), "MaxSpo2": round(rng.uniform(0.96, 1.0), 3),
                },
            })  # fmt: skip
    source = f"suunto-247-{rng.getrandbits(128):032x}"
    return {"sleep": sleep, "recovery": recovery, "activity": activity, "source_247": source}


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    rng = user_rng(NAME, user)
    offset = rng.choice([-300, 0, 60, 120, 330])
    workouts, modified = _workouts(user_rng(NAME, user, "workouts"), anchor, history["workouts"], offset)
    d247 = _data_247(user_rng(NAME, user, "247"), anchor, history["days_247"], offset)
    return UserData(offset, workouts, modified, **d247)


# ---- data API ---------------------------------------------------------------------------------


def _token_user(request: web.Request) -> str:
    user = bearer_user(request, NAME)
    if user is None:
        raise web.HTTPUnauthorized(
            text='{"error": "invalid_token", "error_description": "Invalid access token"}',
            content_type="application/json",
        )
    return user


async def deauthorize(request: web.Request) -> web.Response:
    """The app withdraws its access to the token's user (on the OAuth host: no subscription key)."""
    state = request.config_dict[STATE_KEY]
    if request.query.get("client_id") != state.provider(NAME).client_id:
        return json_error(400, {"error": "invalid_client"})
    state.revoke_access(NAME, _token_user(request))
    return web.Response(status=200)


def _authorized_user(request: web.Request) -> str:
    knobs = request.config_dict[STATE_KEY].provider(NAME)
    if request.headers.get("Ocp-Apim-Subscription-Key") != knobs.subscription_key:
        raise web.HTTPUnauthorized(
            text='{"statusCode": 401, "message": "Access denied due to missing or invalid subscription key."}',
            content_type="application/json",
        )
    return _token_user(request)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise web.HTTPBadRequest(text=f'{{"error": "missing parameter {name}"}}', content_type="application/json")
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=f'{{"error": "invalid parameter {name}"}}', content_type="application/json"
        ) from None


def _added(request_or_app: web.Request | web.Application, user: str) -> list[dict[str, Any]]:
    """Workouts recorded after the history was laid out (by `emit`), each with its modification
    time in ms under "_modified"."""
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    added: list[dict[str, Any]] = app[STATE_KEY].changes.setdefault((NAME, user), {}).setdefault("added", [])
    return added


def _changed(request_or_app: web.Request | web.Application, user: str) -> dict[str, dict[str, Any]]:
    """Workouts changed after the history was laid out (by `emit`): workoutKey -> {"changes":
    fields merged into the workout, "modified_ms": when}."""
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    changed: dict[str, dict[str, Any]] = app[STATE_KEY].changes.setdefault((NAME, user), {}).setdefault("changed", {})
    return changed


def all_workouts(
    request_or_app: web.Request | web.Application, user: str
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every workout served (history and added ones, as changed) and their modification times."""
    data = user_data(request_or_app, user)
    added = _added(request_or_app, user)
    changed = _changed(request_or_app, user)
    modified = data.modified_ms | {a["workout"]["workoutKey"]: a["modified_ms"] for a in added}
    modified |= {key: c["modified_ms"] for key, c in changed.items()}
    workouts = data.workouts + [a["workout"] for a in added]
    if changed:
        workouts = [w | changed[w["workoutKey"]]["changes"] if w["workoutKey"] in changed else w for w in workouts]
    return workouts, modified


async def list_workouts(request: web.Request) -> web.Response:
    workouts, modified_ms = all_workouts(request, _authorized_user(request))
    since, limit, offset = (
        _int_param(request, "since", 0),
        _int_param(request, "limit", 50),
        _int_param(request, "offset", 0),
    )
    by_modification = request.query.get("filter-by-modification-time", "true").lower() == "true"
    if not 1 <= limit <= 100 or offset < 0 or since < 0:
        return json_error(400, {"error": "limit must be 1-100; offset and since must be >= 0", "payload": None})

    def key(w: dict[str, Any]) -> int:
        return modified_ms[w["workoutKey"]] if by_modification else int(w["startTime"])

    matching = sorted((w for w in workouts if key(w) >= since), key=lambda w: (key(w), w["workoutId"]))
    page = matching[offset : offset + limit]
    return web.json_response({"error": None, "payload": page, "metadata": {"workoutcount": str(len(page))}})


async def get_workout(request: web.Request) -> web.Response:
    workouts, _ = all_workouts(request, _authorized_user(request))
    for workout in workouts:
        if workout["workoutKey"] == request.match_info["key"]:
            # As documented for one workout (fixture workout_data_json): named `key`, not workoutKey.
            payload = {"key": workout["workoutKey"]} | {k: v for k, v in workout.items() if k != "workoutKey"}
            return web.json_response({"error": None, "payload": payload, "metadata": {}})
    return json_error(404, {"error": "Workout not found", "payload": None})


def _window(request: web.Request) -> tuple[int, int]:
    start, end = _int_param(request, "from"), _int_param(request, "to")
    if end < start or end - start > MAX_WINDOW_MS:
        raise web.HTTPBadRequest(text='{"error": "from/to must span at most 28 days"}', content_type="application/json")
    return start, end


def _entries_between(entries: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    return [e for e in entries if start <= _ms(datetime.fromisoformat(e["timestamp"])) < end]


def samples_endpoint(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        data = user_data(request, _authorized_user(request))
        start, end = _window(request)
        return web.json_response(_entries_between(getattr(data, kind), start, end))

    return handler


def _utc_param(request: web.Request, name: str) -> datetime:
    """An ISO 8601 date and time, UTC where it names no offset (as documented). Public clients see
    an offset written `+0200` refused as "Invalid arguments" and `+02:00` taken."""
    raw = request.query.get(name, "")
    try:
        if re.search(r"[+-]\d{4}$", raw):
            raise ValueError(raw)
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="Invalid arguments", content_type="text/plain") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _utc_days(first_ms: int, last_ms: int) -> tuple[datetime, datetime]:
    first = datetime.fromtimestamp(first_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return first, datetime.fromtimestamp(last_ms / 1000, UTC)


def daily_statistics(data: UserData, start: datetime, last: datetime) -> list[dict[str, Any]]:
    """24-hour buckets from `start` up to `last` (inclusive), each the sum of the activity samples'
    steps and joules in it, its time written in UTC without an offset; null where it has none."""
    end_ms = _ms(last) + 1
    buckets: list[tuple[datetime, list[dict[str, Any]]]] = []
    bucket_start = start
    while bucket_start <= last:
        bucket_end_ms = min(_ms(bucket_start + timedelta(days=1)), end_ms)
        entries = data.activity_between(_ms(bucket_start), bucket_end_ms)
        buckets.append((bucket_start, [e["entryData"] for e in entries]))
        bucket_start += timedelta(days=1)

    def total(entries: list[dict[str, Any]], field: str) -> float | None:
        return round(sum(e[field] for e in entries), 4) if entries else None

    return [
        {
            "Name": name,
            "Aggregation": "sum",
            "Sources": [
                {
                    "Name": data.source_247,
                    "Samples": [
                        {"TimeISO8601": f"{at:%Y-%m-%dT%H:%M:%S}.000", "Value": total(entries, entry_key)}
                        for at, entries in buckets
                    ],
                }
            ],
        }
        for name, entry_key in (("energyconsumption", "EnergyConsumption"), ("stepcount", "StepCount"))
    ]


async def daily_activity_statistics(request: web.Request) -> web.Response:
    data = user_data(request, _authorized_user(request))
    start, last = _utc_param(request, "startdate"), _utc_param(request, "enddate")
    if last < start or last - start > timedelta(days=28):
        return web.Response(status=400, text="Invalid arguments: at most 28 days", content_type="text/plain")
    return web.json_response(daily_statistics(data, start, last))


# ---- OAuth and limits -----------------------------------------------------------------------

OAUTH = OAuthStyle(NAME, ACCESS_TTL_S, client_auth="basic", extra=lambda user, ttl: {"scope": "workout", "user": user})


def _rate_headers(usage: list[tuple[int, int, int]]) -> dict[str, str]:
    """Azure API Management (Suunto's gateway) says nothing until the limit is hit, then how long
    to wait."""
    for limit, seconds, used in usage:
        if used > limit:
            return {"Retry-After": str(int(seconds - time.time() % seconds) + 1)}
    return {}


RATE_LIMIT = RateLimitStyle(
    limits=[(100, 15 * 60)],
    headers=_rate_headers,
    body={"statusCode": 429, "message": "Rate limit is exceeded. Try again later."},
)


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    api.router.add_get("/v3/workouts/", list_workouts)
    api.router.add_get("/v3/workouts", list_workouts)
    api.router.add_get("/v3/workouts/{key}", get_workout)
    for kind in ("sleep", "recovery", "activity"):
        api.router.add_get(f"/247samples/{kind}", samples_endpoint(kind))
    api.router.add_get("/247/daily-activity-statistics", daily_activity_statistics)
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/oauth/token", token_endpoint(OAUTH))
    auth.router.add_get("/oauth/authorize", authorize_endpoint(OAUTH))
    auth.router.add_get("/oauth/deauthorize", deauthorize)
    return api, auth


# What each 24/7 notification announces (its samples: the user's latest day of that kind).
_NOTIFIED_247 = {"sleep": "SUUNTO_247_SLEEP_CREATED", "recovery": "SUUNTO_247_RECOVERY_CREATED",
                 "activity": "SUUNTO_247_ACTIVITY_CREATED"}  # fmt: skip


def workout_notification(user: str, workout: dict[str, Any]) -> dict[str, Any]:
    """The documented notification of a new workout (fixture webhook_workout_created): the
    workout inside, without its `gear`, which is a sibling (manufacturer, name, productType)."""
    notification: dict[str, Any] = fixture(NAME, "webhook_workout_created")
    embedded = {k: v for k, v in workout.items() if k != "gear"}
    gear = workout.get("gear") or next(
        (e["gear"] for e in workout.get("extensions", []) if e.get("type") == "SummaryExtension"), None
    )
    notification |= {"username": user, "workout": embedded}
    if gear:
        notification["gear"] = {
            "manufacturer": gear["manufacturer"],
            "name": gear["name"],
            "productType": "SPORT_WATCH",
        }
    else:
        del notification["gear"]
    return notification


async def emit(request: web.Request, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Something happens to the user's data and Suunto notifies (signed with HMAC-SHA256 of the body,
    hex, in `X-HMAC-SHA256-Signature` under the webhook's secret: second-hand):
    - `{"kind": "create"}` records a new workout: WORKOUT_CREATED in the documented shape; with
      `"embedded": false` the notification names the workout (`workoutid`) without carrying it;
    - `{"kind": "update", "workoutKey"?, "changes": {...}}` merges `changes` into a workout (by
      default the one modified longest ago, which a list ordered by modification time then moves
      from its head to its tail) and stamps it modified now: no notification (none documented);
    - `{"kind": "sleep" | "recovery" | "activity"}`: SUUNTO_247_<KIND>_CREATED with the latest day's
      entries of that kind as `samples` (second-hand shape);
    - `{"kind": "route"}`: ROUTE_CREATED (no body documented: type and username)."""
    state = request.config_dict[STATE_KEY]
    kind = body.get("kind", "create")
    workout: dict[str, Any] | None = None
    if kind == "update":
        workouts, modified_ms = all_workouts(request, user)
        key = (
            body.get("workoutKey")
            or min(workouts, key=lambda w: (modified_ms[w["workoutKey"]], w["workoutId"]))["workoutKey"]
        )
        changes = body.get("changes")
        if not isinstance(changes, dict) or key not in modified_ms:
            raise web.HTTPBadRequest(text='{"error": "update: a known workoutKey and an object of changes"}',
                                     content_type="application/json")  # fmt: skip
        change = _changed(request, user).setdefault(key, {"changes": {}})
        change["changes"] |= changes
        change["modified_ms"] = int(time.time() * 1000)
        workout = next(w for w in all_workouts(request, user)[0] if w["workoutKey"] == key)
        return {"workout": workout, "delivery_status": None}
    if kind == "create":
        added = _added(request, user)
        data = user_data(request, user)
        rng = user_rng(NAME, user, f"added-{len(added)}")
        (workout,), _ = _workouts(rng, state.anchor + timedelta(days=len(added) + 1), 1, data.offset_minutes)
        workout["workoutId"] = 9_000_000_000 + len(added)
        added.append({"workout": workout, "modified_ms": int(time.time() * 1000)})
        if body.get("embedded", True):
            notification = workout_notification(user, workout)
        else:
            notification = {"type": "WORKOUT_CREATED", "username": user, "workoutid": workout["workoutKey"]}
    elif kind in _NOTIFIED_247:
        entries = getattr(user_data(request, user), kind)
        latest = datetime.fromisoformat(entries[-1]["timestamp"])
        samples = [e for e in entries if datetime.fromisoformat(e["timestamp"]) > latest - timedelta(days=1)]
        notification = {"type": _NOTIFIED_247[kind], "username": user, "samples": samples}
    elif kind == "route":
        notification = {"type": "ROUTE_CREATED", "username": user}
    else:
        raise web.HTTPBadRequest(text='{"error": "kind: create, update, sleep, recovery, activity or route"}',
                                 content_type="application/json")  # fmt: skip
    target = state.webhook_targets.get(NAME)
    raw = json.dumps(notification).encode()
    signature = hmac.new((target.secret if target else "").encode(), raw, hashlib.sha256).hexdigest()
    status = await deliver(request, NAME, raw, {"X-HMAC-SHA256-Signature": signature})
    return {"workout": notification.get("workout", workout), "notification": notification, "delivery_status": status}


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served, for tests to compare with."""
    data = user_data(app, user)
    return {
        "workouts": all_workouts(app, user)[0],
        "sleep": data.sleep,
        "recovery": data.recovery,
        "activity": data.activity,
        # Each UTC day of the 24/7 history, as a sync asks for them.
        "daily": daily_statistics(data, *_utc_days(data.activity_ms[0], data.activity_ms[-1])) if data.activity else [],
        "offset_minutes": data.offset_minutes,
    }


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=records, emit=emit)
