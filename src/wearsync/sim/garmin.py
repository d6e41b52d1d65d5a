"""Garmin Health API simulator: the paths, parameters, auth and summary shapes of
`apis.garmin.com` (mounted under /garmin/api) and its OAuth server `diauth.garmin.com` (under
/garmin/auth), with deterministic data per user.

Data API: `GET /wellness-api/rest/user/id` -> {"userId"}; `GET /wellness-api/rest/backfill/{type}`
with `summaryStartTimeInSeconds` / `summaryEndTimeInSeconds` (at most 30 days, else 400) answers
202 with an empty body and remembers the request per user (the same type and range again: 409), or
403 if the user no longer shares HISTORICAL_DATA_EXPORT (a permission change took it away); it
delivers only summaries from 30 days before the user first connected (the anchor, for every user);
`GET /wellness-api/rest/{type}` with `uploadStartTimeInSeconds` / `uploadEndTimeInSeconds` (at most
86400 s apart, else 400) returns that user's summaries uploaded in [start, end): what a ping's
callbackURL points at. Summaries served: activities, dailies, epochs, sleeps, hrv. Each summary has
an upload time (its end plus a delay) that is not part of the payload; `records()` lists them.

Webhooks: after answering a backfill request 202, the simulator delivers that window's summaries
(by start time) to the webhook target set with `POST /_sim/garmin/webhook {"url": ...}`, in the
background (DELIVERY_DELAY_S later), one delivery per day of summaries (empty days send nothing),
as Garmin does (unconfirmed: its chunking), each to the target still set. Push sends
`{"<type>": [summaries]}`; ping sends `{"<type>": [{"userId", "callbackURL"}]}`, the callback on
the host and mount the backfill request came to. The shapes of summaries and notifications follow
sim/fixtures/garmin/ (each naming its source; all second-hand: Garmin publishes its specifications
only behind its developer portal). A pinged chunk counts as uploaded again in a one-second upload range of its own
(from now on, never a second at which the history uploaded that type), which the pull endpoint
then serves: exactly the chunk. The mode is per user, set by `POST /_sim/garmin/users/NAME/events
{"kind": "delivery_mode", "mode": "push" | "ping"}`, else `state.changes[("garmin", "")]["mode"]`,
else push. `{"kind": "on_hold", "on": true}` holds every backfill delivery back (the portal's On Hold), `false`
sends them. The same events endpoint sends `{"kind": "deregistration"}` (the user's tokens stop
working too) and `{"kind": "permissions", "permissions": [...]}`. Deliveries are not signed
(Garmin signs nothing) but carry the app's client id in a `garmin-client-id` header; they are not
retried; those in flight are cancelled when the app shuts down.

Heart-rate samples in dailies come every 10 minutes, not every 15 s as on a real device, to keep
test volumes small. Errors carry Garmin's `{"errorMessage": ...}` body (exact texts unconfirmed).
OAuth: the authorization page `GET /oauth2Confirm` (connect.garmin.com's path, under /garmin/auth
too) requires PKCE (`code_challenge`, `code_challenge_method=S256`) and issues a code whose token
request must carry the matching `code_verifier` (else 400 invalid_grant); the shortcut code
`user-NAME` -> tokens of NAME without PKCE (sim/oauth.py); client credentials in the form body;
access tokens live 86400 s; refresh tokens rotate (Garmin's docs say a refresh returns a new
refresh token; unconfirmed) and report `refresh_token_expires_in`.
Rate limit: 100 calls per minute per app (evaluation tier, unconfirmed); over it, 429 with
`Retry-After`. `DELETE /wellness-api/rest/user/registration` (the app withdraws its access): 204,
the user's tokens stop working.
"""

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from wearsync.sim.common import (
    STATE_KEY,
    RateLimitStyle,
    SimState,
    Simulator,
    WebhookTarget,
    bearer_user,
    cached_user_data,
    deliver,
    fault_middleware,
    json_error,
    user_rng,
)
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint

NAME = "garmin"
ACCESS_TTL_S = 86400
REFRESH_TTL_S = 7775999  # reported only: the simulator's refresh tokens do not expire
MAX_BACKFILL_S = 30 * 86400
MAX_UPLOAD_RANGE_S = 86400
DEFAULT_HISTORY = {"workouts": 40, "days_247": 35}
BACKFILL_TYPES = frozenset(
    {"activities", "dailies", "epochs", "sleeps", "bodyComps", "stressDetails", "userMetrics", "hrv"}
)
SUMMARY_TYPES = ("activities", "dailies", "epochs", "sleeps", "hrv")
# What a user may share on Garmin's consent page; backfills need HISTORICAL_DATA_EXPORT.
PERMISSIONS = ["ACTIVITY_EXPORT", "HEALTH_EXPORT", "HISTORICAL_DATA_EXPORT", "WORKOUT_IMPORT", "COURSE_IMPORT"]
HISTORICAL_PERMISSION = "HISTORICAL_DATA_EXPORT"
HISTORY_BEFORE_CONNECTING_S = 30 * 86400
DELIVERY_DELAY_S = 0.5  # Garmin delivers minutes later; long enough for the 202 to be recorded first
REST = "/wellness-api/rest"

# (activityType, speed in m/s (0: no distance), counts steps, outdoors (elevation)); the last is a
# type our client does not know, to exercise its `other` mapping.
_ACTIVITY_TYPES = [
    ("RUNNING", 3.0, True, True), ("CYCLING", 7.5, False, True), ("LAP_SWIMMING", 0.9, False, False),
    ("WALKING", 1.4, True, True), ("HIKING", 1.1, True, True), ("STRENGTH_TRAINING", 0.0, False, False),
    ("YOGA", 0.0, False, False), ("TREADMILL_RUNNING", 2.9, True, False), ("INDOOR_CYCLING", 0.0, False, False),
    ("MOUNTAIN_BIKING", 5.0, False, True), ("TRAIL_RUNNING", 2.5, True, True), ("HANG_GLIDING", 0.0, False, True),
]  # fmt: skip
_DEVICES = ["Forerunner 965", "fenix 7X", "Venu 3", "Edge 840", "vivoactive 5"]
_PLACES = ["Berlin", "Boulder", "Leeds", "Lyon", "Oslo", "Kyoto"]
_SCORES = [(90, "EXCELLENT"), (80, "GOOD"), (60, "FAIR"), (0, "POOR")]


@dataclass
class UserData:
    user_id: str  # Garmin's own id of the user
    offset_s: int
    summaries: dict[str, list[dict[str, Any]]]  # type -> summaries, oldest first
    uploads: dict[str, dict[str, int]]  # type -> summaryId -> upload time (not in the payload)


@dataclass
class Backfills:
    """Accepted backfill requests per user, and the deliveries of them still in flight."""

    by_user: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deliveries: set[asyncio.Task[None]] = field(default_factory=set)
    # Cleared while the portal's "On Hold" is set: Garmin queues the deliveries and sends them
    # when it is unset.
    released: asyncio.Event = field(default_factory=lambda: _set(asyncio.Event()))


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


BACKFILLS = web.AppKey("garmin_backfills", Backfills)


def _sid(user_id: str, start: int, suffix: str = "") -> str:
    return f"x{user_id[:7]}-{start:x}{suffix}"


def _activities(rng: Any, anchor: datetime, count: int, offset_s: int, uid: str) -> list[dict[str, Any]]:
    activities = []
    start = anchor
    for i in range(count):
        start -= timedelta(hours=rng.uniform(20, 44))
        kind, speed, steps, outdoors = rng.choice(_ACTIVITY_TYPES)
        t0, duration = int(start.timestamp()), rng.randrange(1200, 7200)
        activity_id = 12_000_000_000 - i * 1000 - rng.randrange(1000)
        speed *= rng.uniform(0.8, 1.2)
        a: dict[str, Any] = {
            "userId": uid, "summaryId": str(activity_id), "activityId": activity_id,
            "activityName": f"{rng.choice(_PLACES)} {kind.replace('_', ' ').title()}", "activityType": kind,
            "startTimeInSeconds": t0, "startTimeOffsetInSeconds": offset_s, "durationInSeconds": duration,
            "activeKilocalories": rng.randrange(100, 1200),
            "averageHeartRateInBeatsPerMinute": rng.randrange(100, 160),
            "maxHeartRateInBeatsPerMinute": rng.randrange(160, 192),
            "deviceName": rng.choice(_DEVICES), "manual": False,
        }  # fmt: skip
        if speed:
            a["distanceInMeters"] = round(speed * duration, 1)
            a["averageSpeedInMetersPerSecond"] = round(speed, 3)
            a["maxSpeedInMetersPerSecond"] = round(speed * rng.uniform(1.2, 1.8), 3)
        if outdoors and speed:
            a["totalElevationGainInMeters"] = round(rng.uniform(0, 900), 1)
            a["totalElevationLossInMeters"] = round(rng.uniform(0, 900), 1)
        if steps:
            a["steps"] = int(duration * rng.uniform(1.5, 2.9))
            a["averageRunCadenceInStepsPerMinute"] = round(rng.uniform(150, 180), 1)
            a["maxRunCadenceInStepsPerMinute"] = round(rng.uniform(180, 200), 1)
        if kind in ("CYCLING", "INDOOR_CYCLING", "MOUNTAIN_BIKING"):
            a["averageBikeCadenceInRoundsPerMinute"] = round(rng.uniform(70, 95), 1)
            a["maxBikeCadenceInRoundsPerMinute"] = round(rng.uniform(95, 125), 1)
        if rng.random() < 0.1:  # entered by hand: no sensor data
            a["manual"] = True
            for name in ("averageHeartRateInBeatsPerMinute", "maxHeartRateInBeatsPerMinute", "deviceName"):
                del a[name]
        elif rng.random() < 0.1:
            del a["deviceName"]
        activities.append(a)
    activities.reverse()
    return activities


def _epochs(rng: Any, t0: int, offset_s: int, uid: str) -> list[dict[str, Any]]:
    """One day of 15-minute epochs from local midnight `t0`; a slot may hold two activity types."""
    epochs = []
    for slot in range(96):
        start = t0 + slot * 900
        night = slot < 28 or slot >= 92
        kinds = ["SEDENTARY"] if night or rng.random() < 0.5 else [rng.choice(["WALKING", "RUNNING"])]
        if not night and rng.random() < 0.15:
            kinds = ["SEDENTARY", "WALKING"]
        for i, kind in enumerate(kinds):
            steps = 0 if kind == "SEDENTARY" else rng.randrange(100, 1500 if kind == "WALKING" else 2500)
            epochs.append({
                "userId": uid, "summaryId": _sid(uid, start, f"-{i}"), "activityType": kind,
                "activeKilocalories": rng.randrange(0, 3) if kind == "SEDENTARY" else rng.randrange(5, 60),
                "steps": steps, "distanceInMeters": round(steps * 0.76, 2), "durationInSeconds": 900,
                "activeTimeInSeconds": 900 // len(kinds), "startTimeInSeconds": start,
                "startTimeOffsetInSeconds": offset_s, "met": round(rng.uniform(1.0, 9.0), 2),
                "intensity": "SEDENTARY" if kind == "SEDENTARY" else "ACTIVE",
                "meanMotionIntensity": round(rng.uniform(0, 4), 2), "maxMotionIntensity": round(rng.uniform(4, 7), 2),
            })  # fmt: skip
    return epochs


def _daily(rng: Any, t0: int, day: str, offset_s: int, uid: str, epochs: list[dict[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "userId": uid, "summaryId": _sid(uid, t0), "calendarDate": day, "activityType": "GENERIC",
        "startTimeInSeconds": t0, "startTimeOffsetInSeconds": offset_s, "durationInSeconds": 86400,
        "steps": sum(e["steps"] for e in epochs),
        "distanceInMeters": round(sum(e["distanceInMeters"] for e in epochs), 1),
        "activeKilocalories": sum(e["activeKilocalories"] for e in epochs),
        "bmrKilocalories": rng.randrange(1500, 1900), "restingHeartRateInBeatsPerMinute": rng.randrange(44, 62),
        "averageHeartRateInBeatsPerMinute": rng.randrange(60, 80),
        "maxHeartRateInBeatsPerMinute": rng.randrange(120, 180),
        "averageStressLevel": rng.randrange(15, 60), "maxStressLevel": rng.randrange(60, 99),
        "bodyBatteryChargedValue": rng.randrange(20, 80), "bodyBatteryDrainedValue": rng.randrange(20, 80),
        "timeOffsetHeartRateSamples": {str(k * 600): rng.randrange(48, 130) for k in range(144)},
    }  # fmt: skip
    if rng.random() < 0.1:  # the watch was not worn
        for name in ("timeOffsetHeartRateSamples", "restingHeartRateInBeatsPerMinute"):
            del d[name]
    if rng.random() < 0.05:
        del d["bmrKilocalories"]
    return d


def _sleep(rng: Any, midnight: int, day: str, offset_s: int, uid: str) -> dict[str, Any]:
    """A night in Garmin's shape: `durationInSeconds` is the time asleep (deep + light + REM); the
    night ends with its last `sleepLevelsMap` stage, awake stages included (one may come last)."""
    bed = midnight - rng.randrange(0, 7200)
    plan = ["light", "deep", "light", "rem", "awake", "light", "deep", "rem", "light"]
    if rng.random() < 0.5:
        plan.append("awake")  # awake in bed before getting up
    levels: dict[str, list[dict[str, int]]] = {}
    at = bed
    for stage in plan:
        length = rng.randrange(300, 1500) if stage == "awake" else rng.randrange(1800, 4800)
        levels.setdefault(stage, []).append({"startTimeInSeconds": at, "endTimeInSeconds": at + length})
        at += length
    total = {stage: sum(x["endTimeInSeconds"] - x["startTimeInSeconds"] for x in xs) for stage, xs in levels.items()}
    s: dict[str, Any] = {
        "userId": uid, "summaryId": _sid(uid, bed), "calendarDate": day, "startTimeInSeconds": bed,
        "startTimeOffsetInSeconds": offset_s, "durationInSeconds": total["deep"] + total["light"] + total["rem"],
        "unmeasurableSleepInSeconds": 0, "deepSleepDurationInSeconds": total["deep"],
        "lightSleepDurationInSeconds": total["light"], "remSleepInSeconds": total["rem"],
        "awakeDurationInSeconds": total["awake"], "sleepLevelsMap": levels,
        "validation": rng.choice(["ENHANCED_FINAL", "AUTO_FINAL", "DEVICE"]),
    }  # fmt: skip
    score = rng.randrange(35, 100)
    s["overallSleepScore"] = {"value": score, "qualifierKey": next(q for low, q in _SCORES if score >= low)}
    if rng.random() < 0.1:  # an older device: no REM stage, no score, no stages
        s["lightSleepDurationInSeconds"] += s.pop("remSleepInSeconds")
        del s["overallSleepScore"], s["sleepLevelsMap"]
    return s


def _hrv(rng: Any, midnight: int, day: str, offset_s: int, uid: str) -> dict[str, Any]:
    start, duration = midnight - rng.randrange(0, 3600), rng.randrange(5 * 3600, 8 * 3600)
    values = {str(k * 300): rng.randrange(20, 95) for k in range(duration // 300)}
    h: dict[str, Any] = {
        "userId": uid, "summaryId": _sid(uid, start, "-hrv"), "calendarDate": day,
        "lastNightAvg": round(sum(values.values()) / len(values)), "lastNight5MinHigh": max(values.values()),
        "startTimeOffsetInSeconds": offset_s, "durationInSeconds": duration, "startTimeInSeconds": start,
        "hrvValues": values,
    }  # fmt: skip
    if rng.random() < 0.1:
        del h["lastNight5MinHigh"], h["hrvValues"]
    return h


def _data_247(rng: Any, anchor: datetime, days: int, offset_s: int, uid: str) -> dict[str, list[dict[str, Any]]]:
    shift = timedelta(seconds=offset_s)
    first = (anchor + shift).replace(hour=0, minute=0, second=0, microsecond=0) - shift - timedelta(days=days)
    data: dict[str, list[dict[str, Any]]] = {"dailies": [], "epochs": [], "sleeps": [], "hrv": []}
    for d in range(days):
        midnight = first + timedelta(days=d)
        t0, day = int(midnight.timestamp()), (midnight + shift).date().isoformat()
        epochs = _epochs(rng, t0, offset_s, uid)
        data["epochs"] += epochs
        data["dailies"].append(_daily(rng, t0, day, offset_s, uid, epochs))
        data["sleeps"].append(_sleep(rng, t0, day, offset_s, uid))
        if rng.random() < 0.9:  # some nights have no HRV reading
            data["hrv"].append(_hrv(rng, t0, day, offset_s, uid))
    return data


def _upload_times(rng: Any, summaries: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """A summary is uploaded after it ends; the epochs of one 15 minutes travel together."""
    uploads: dict[str, dict[str, int]] = {}
    for kind, items in summaries.items():
        by_slot: dict[int, int] = {}
        uploads[kind] = {}
        for s in items:
            end = s["startTimeInSeconds"] + s["durationInSeconds"]
            delay = by_slot.setdefault(end, rng.randrange(60, 4 * 3600)) if kind == "epochs" else None
            uploads[kind][s["summaryId"]] = end + (delay if delay is not None else rng.randrange(60, 4 * 3600))
    return uploads


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    rng = user_rng(NAME, user)
    uid, offset_s = f"{rng.getrandbits(128):032x}", rng.choice([-18000, 0, 3600, 7200, 19800])
    summaries = {"activities": _activities(user_rng(NAME, user, "activities"), anchor,
                                           history["workouts"], offset_s, uid)}  # fmt: skip
    summaries |= _data_247(user_rng(NAME, user, "247"), anchor, history["days_247"], offset_s, uid)
    return UserData(uid, offset_s, summaries, _upload_times(user_rng(NAME, user, "uploads"), summaries))


# ---- data API ---------------------------------------------------------------------------------


def _http_error(status: int, message: str) -> web.HTTPError:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound}[status]
    return cls(text=f'{{"errorMessage": "{message}"}}', content_type="application/json")


def _authorized_user(request: web.Request) -> str:
    user = bearer_user(request, NAME)
    if user is None:
        raise _http_error(401, "Invalid or expired access token")
    return user


async def delete_registration(request: web.Request) -> web.Response:
    request.config_dict[STATE_KEY].revoke_access(NAME, _authorized_user(request))
    return web.Response(status=204)


def _seconds(request: web.Request, name: str) -> int:
    try:
        return int(request.query[name])
    except KeyError:
        raise _http_error(400, f"Missing parameter {name}") from None
    except ValueError:
        raise _http_error(400, f"Invalid parameter {name}") from None


async def user_id(request: web.Request) -> web.Response:
    return web.json_response({"userId": user_data(request, _authorized_user(request)).user_id})


async def backfill(request: web.Request) -> web.Response:
    user = _authorized_user(request)
    kind = request.match_info["type"]
    if kind not in BACKFILL_TYPES:
        raise _http_error(404, f"Unknown summary type {kind}")
    start, end = _seconds(request, "summaryStartTimeInSeconds"), _seconds(request, "summaryEndTimeInSeconds")
    if end <= start:
        return json_error(400, {"errorMessage": "summaryStartTimeInSeconds must be before summaryEndTimeInSeconds"})
    if end - start > MAX_BACKFILL_S:
        return json_error(400, {"errorMessage": f"Time range exceeds the maximum of {MAX_BACKFILL_S} seconds"})
    if HISTORICAL_PERMISSION not in _permissions(request.config_dict[STATE_KEY], user):
        return json_error(403, {"errorMessage": "User has not granted permission to historical data"})
    asked = request.config_dict[BACKFILLS].by_user.setdefault(user, [])
    if any((b["type"], b["start"], b["end"]) == (kind, start, end) for b in asked):
        return json_error(409, {"errorMessage": "Duplicate backfill request"})
    asked.append({"type": kind, "start": start, "end": end, "at": time.time()})
    target = request.config_dict[STATE_KEY].webhook_targets.get(NAME)
    if target is not None:
        deliveries = request.config_dict[BACKFILLS].deliveries
        task = asyncio.create_task(_deliver_backfill(request, target, user, kind, start, end))
        deliveries.add(task)
        task.add_done_callback(deliveries.discard)
    return web.Response(status=202)


def _permissions(state: SimState, user: str) -> list[str]:
    """What the user shares with the app: all of it, until a permission change says otherwise."""
    permissions: list[str] = _changes(state, user).get("permissions", PERMISSIONS)
    return permissions


def history_reach(state: SimState) -> int:
    """The oldest start time a backfill delivers (Unix seconds): Garmin serves history from about
    a month before the user first connected to the app, here the anchor for every user."""
    return int(state.anchor.timestamp()) - HISTORY_BEFORE_CONNECTING_S


def _changes(state: SimState, user: str) -> dict[str, Any]:
    """What happened to a user after its history was laid out: delivery mode, re-uploads."""
    return state.changes.setdefault((NAME, user), {})


def summaries_uploaded(state: SimState, user: str, data: UserData, kind: str, start: int, end: int) -> list[Any]:
    """The user's summaries uploaded in [start, end): by the history, or again by a pinged backfill."""
    uploads = data.uploads[kind]
    again = {sid for t, sid in _changes(state, user).get("reuploads", {}).get(kind, []) if start <= t < end}
    return [s for s in data.summaries[kind] if start <= uploads[s["summaryId"]] < end or s["summaryId"] in again]


def summaries_endpoint(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        user = _authorized_user(request)
        data = user_data(request, user)
        start, end = _seconds(request, "uploadStartTimeInSeconds"), _seconds(request, "uploadEndTimeInSeconds")
        if end < start or end - start > MAX_UPLOAD_RANGE_S:
            return json_error(400, {"errorMessage": f"Upload time range must span 0 to {MAX_UPLOAD_RANGE_S} seconds"})
        return web.json_response(summaries_uploaded(request.config_dict[STATE_KEY], user, data, kind, start, end))

    return handler


# ---- webhook deliveries ---------------------------------------------------------------------


def _reupload(state: SimState, data: UserData, user: str, kind: str, chunk: list[dict[str, Any]]) -> int:
    """A one-second upload range of the chunk's own: its start."""
    reuploads = _changes(state, user).setdefault("reuploads", {}).setdefault(kind, [])
    used = {t for t, _ in reuploads}
    taken = used | set(data.uploads[kind].values())
    at = max(int(time.time()), max(used, default=0) + 1)
    while at in taken:
        at += 1
    reuploads.extend((at, s["summaryId"]) for s in chunk)
    return at


def _mode(state: SimState, user: str) -> str:
    mode: str = _changes(state, user).get("mode") or state.changes.get((NAME, ""), {}).get("mode") or "push"
    return mode


async def _deliver_backfill(
    request: web.Request, target: WebhookTarget, user: str, kind: str, start: int, end: int
) -> None:
    """A backfill window's summaries, a day at a time, pushed or pinged to `target`."""
    api_base = f"{request.url.origin()}{request.path[: request.path.index(REST + '/')]}{REST}"
    state = request.config_dict[STATE_KEY]
    await asyncio.sleep(DELIVERY_DELAY_S)
    await request.config_dict[BACKFILLS].released.wait()
    data = user_data(request, user)
    summaries = data.summaries.get(kind, [])  # bodyComps, stressDetails, ...: none here
    reach = history_reach(state)
    for day in range(start, end, MAX_UPLOAD_RANGE_S):
        chunk = [
            s for s in summaries if max(day, reach) <= s["startTimeInSeconds"] < min(day + MAX_UPLOAD_RANGE_S, end)
        ]
        if not chunk:
            continue
        if state.webhook_targets.get(NAME) is not target:
            return  # the portal's webhook setting changed: nowhere to send the rest
        body: dict[str, Any] = {kind: chunk}
        if _mode(state, user) == "ping":
            at = _reupload(state, data, user, kind, chunk)
            url = f"{api_base}/{kind}?uploadStartTimeInSeconds={at}&uploadEndTimeInSeconds={at + 1}"
            body = {kind: [{"userId": data.user_id, "callbackURL": url}]}  # fixtures/garmin/ping_epochs.json
        await deliver(request, NAME, json.dumps(body).encode(), _delivery_headers(state))


def _delivery_headers(state: SimState) -> dict[str, str]:
    """What Garmin sends with every delivery besides the JSON: the consumer key (client id) of
    the app it is for, and its user agent."""
    return {"garmin-client-id": state.provider(NAME).client_id, "User-Agent": "Garmin Health API"}


async def emit(request: web.Request, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """`{"kind": "deregistration"}` or `{"kind": "permissions", "permissions": [...]}`: Garmin's
    notification of it, delivered; `{"kind": "delivery_mode", "mode": "push" | "ping"}`: how this
    user's backfills are delivered from now on."""
    state = request.config_dict[STATE_KEY]
    data = user_data(request, user)
    kind = body.get("kind")
    if kind == "on_hold":  # an app-wide setting of Garmin's portal, whichever user names it
        on_hold = body.get("on")
        if not isinstance(on_hold, bool):
            raise web.HTTPBadRequest(text='{"error": "on is true or false"}', content_type="application/json")
        released = _backfills(request.app).released
        if on_hold:
            released.clear()
        else:
            released.set()
        return {"on_hold": on_hold}
    if kind == "delivery_mode":
        if body.get("mode") not in ("push", "ping"):
            raise web.HTTPBadRequest(text='{"error": "mode is push or ping"}', content_type="application/json")
        _changes(state, user)["mode"] = body["mode"]
        return {"mode": body["mode"]}
    notification: dict[str, Any]
    if kind == "deregistration":
        token = hashlib.sha256(f"{NAME}:{user}:access".encode()).hexdigest()[:36]
        notification = {"deregistrations": [{"userId": data.user_id, "userAccessToken": token}]}
        now = time.time()  # Garmin no longer serves the user: its tokens stop working
        state.access_expired_before[(NAME, user)] = state.refresh_revoked_before[(NAME, user)] = now
    elif kind == "permissions":
        permissions = body.get("permissions")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise web.HTTPBadRequest(
                text='{"error": "permissions is a list of names"}', content_type="application/json"
            )
        changes = _changes(state, user)
        changes["permission_changes"] = n = changes.get("permission_changes", 0) + 1
        changes["permissions"] = permissions
        change = {"userId": data.user_id, "summaryId": f"x{data.user_id[:7]}-perm-{n}", "permissions": permissions,
                  "changeTimeInSeconds": int(time.time())}  # fmt: skip
        notification = {"userPermissionsChange": [change]}
    else:
        raise web.HTTPBadRequest(
            text='{"error": "kind is deregistration, permissions, delivery_mode or on_hold"}',
            content_type="application/json",
        )
    status = await deliver(request, NAME, json.dumps(notification).encode(), _delivery_headers(state))
    return {"notification": notification, "delivery_status": status}


# ---- OAuth and limits -----------------------------------------------------------------------

OAUTH = OAuthStyle(
    NAME,
    ACCESS_TTL_S,
    client_auth="body",
    rotates_refresh_token=True,
    pkce=True,
    extra=lambda user, ttl: {
        "scope": "PARTNER_WRITE PARTNER_READ CONNECT_READ CONNECT_WRITE",
        "jti": secrets.token_hex(16),
        "refresh_token_expires_in": REFRESH_TTL_S,
    },
)


def _rate_headers(usage: list[tuple[int, int, int]]) -> dict[str, str]:
    for limit, seconds, used in usage:
        if used > limit:
            return {"Retry-After": str(int(seconds - time.time() % seconds) + 1)}
    return {}


RATE_LIMIT = RateLimitStyle(limits=[(100, 60)], headers=_rate_headers, body={"errorMessage": "Rate limit exceeded"})


async def _stop_deliveries(app: web.Application) -> None:
    deliveries = list(app[BACKFILLS].deliveries)
    for task in deliveries:
        task.cancel()
    await asyncio.gather(*deliveries, return_exceptions=True)


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    api[BACKFILLS] = Backfills()
    api.on_shutdown.append(_stop_deliveries)
    api.router.add_get("/wellness-api/rest/user/id", user_id)
    api.router.add_delete("/wellness-api/rest/user/registration", delete_registration)
    api.router.add_get("/wellness-api/rest/backfill/{type}", backfill)
    for kind in SUMMARY_TYPES:
        api.router.add_get(f"/wellness-api/rest/{kind}", summaries_endpoint(kind))
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/di-oauth2-service/oauth/token", token_endpoint(OAUTH))
    auth.router.add_get("/oauth2Confirm", authorize_endpoint(OAUTH))
    return api, auth


def _backfills(app: web.Application) -> Backfills:
    """The backfill state of the simulator's root app, or of our api app."""
    apps = [app] + [r.get_info().get("app") for r in app.router.resources()]
    for candidate in apps:
        if isinstance(candidate, web.Application) and BACKFILLS in candidate:
            return candidate[BACKFILLS]
    raise LookupError("no Garmin simulator in this app")


def backfills(app: web.Application, user: str) -> list[dict[str, Any]]:
    """The backfill requests accepted for this user."""
    return list(_backfills(app).by_user.get(user, []))


def deliveries_in_flight(app: web.Application) -> int:
    """Backfill deliveries not yet sent (waiting for their delay, or sending)."""
    return len(_backfills(app).deliveries)


async def deliveries_sent(app: web.Application) -> None:
    """Wait until every backfill delivery in flight has been sent (for tests); its errors raise."""
    deliveries = _backfills(app).deliveries
    while deliveries:
        await asyncio.gather(*list(deliveries))


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every summary the simulator serves this user, as served, with each one's upload time (by
    type and summaryId) and the backfill requests it accepted."""
    data = user_data(app, user)
    changes = app[STATE_KEY].changes.get((NAME, user), {})
    return {
        "userId": data.user_id,
        "offset_seconds": data.offset_s,
        **data.summaries,
        "uploads": data.uploads,
        "backfills": backfills(app, user),
        "reuploads": changes.get("reuploads", {}),
    }


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=records, emit=emit, in_flight=deliveries_in_flight)
