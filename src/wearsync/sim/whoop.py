"""Whoop Developer API v2 simulator: the paths, parameters, pagination, auth, rate limits and JSON
shapes of `api.prod.whoop.com`, with deterministic data per user.

Data API (mounted under /whoop/api, followed by Whoop's own `/developer`): `GET
/developer/v2/activity/workout`, `.../activity/sleep`, `/developer/v2/recovery` and
`/developer/v2/cycle` with `start`, `end` (RFC 3339 with an offset; `end` defaults to now),
`limit` (default 10, 1-25, else 400) and `nextToken`; body `{"records": [...], "next_token"}`,
newest first, no `next_token` on the last page (the spec: "If the token is not present, there are
no more records"; an opaque keyset cursor, so pages never shift). The current cycle has no `end`
(the spec: "If not present, the user is currently in this cycle"; not null: it is not nullable).
A record matches a range it intersects, as Whoop documents ("occurred after or during `start`",
"intersect `end` or ended before it"): end >= start (an open cycle never ends), start < end; a
recovery is matched and ordered by its cycle. Details: `GET /developer/v2/activity/workout/{id}`,
`.../activity/sleep/{id}`, `/developer/v2/cycle/{id}` and `/developer/v2/cycle/{id}/recovery` (404
`{"error": "Not Found", ...}` for an id the user does not have: our choice).
`GET /developer/v2/user/profile/basic` too. A bad bearer token is a 401. `DELETE
/developer/v2/user/access` (the app withdraws its access): 204, the user's tokens stop working.

OAuth (under /whoop/auth): the authorization page `GET /oauth/oauth2/auth` (sim/oauth.py) and
`POST /oauth/oauth2/token`, client credentials in the form; an issued code, or the shortcut code
`user-NAME`, gives tokens of NAME with scope "offline read:..." and no user id; access tokens last
an hour; refresh tokens rotate (a used one is refused: 400 invalid_grant), and a refresh grant
without `scope=offline` gets no new refresh token (Whoop issues them for `offline` only).

Rate limits per app: 100 calls a minute, 10,000 a day. Every answer carries `X-RateLimit-Limit:
100, 100;window=60, 10000;window=86400` and `X-RateLimit-Remaining`/`-Reset` (calls left, seconds
to the reset) of the minute window, or of the window used up. Over a limit: 429 with
`{"error": "Too Many Requests"}` (our choice: Whoop's body is not documented).

History: `workouts` workouts in the waking hours of the last `days_247` nights of sleep (and a
few naps), recoveries (one a night) and cycles (sleep onset to the next; the current one has no
end), all over by the simulator's anchor. A few records are PENDING_SCORE or UNSCORABLE without
`score`; GPS-less workouts lack distance and altitude; some recoveries lack SpO2 and skin
temperature, some sleeps the respiratory rate; `spikeball` is a sport our client does not map.

Webhooks (`emit`): `{"kind": "workout.updated"}` records a new scored workout that just ended;
`{"kind": "sleep.updated"}` (or `recovery.updated`) a new scored night a day after the latest
(maybe not over yet by the wall clock: the simulator does not mind), with its cycle (closing the
open one) and recovery, and sends `sleep.updated` then `recovery.updated` (naming the recovery by
its sleep's UUID, or with `"recovery_id": "cycle"` by its cycle's integer id: sources disagree
which one Whoop's v2 events carry, so the simulator sends either); with an `"id"` (for a recovery,
its sleep's UUID or its cycle's id; the event names it as given) and `"changes"` (merged into the
record) it changes a record; `{"kind": "<x>.deleted", "id": ...}` deletes one. Each event is POSTed as
`{"user_id", "id", "type", "trace_id"}` with `X-WHOOP-Signature` = base64(HMAC-SHA256(secret,
`X-WHOOP-Signature-Timestamp` (epoch ms) + body)) under the webhook target's secret (Whoop signs
with the app's client secret).
"""

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from aiohttp import web

from wearsync.sim.common import (
    STATE_KEY,
    Handler,
    RateLimitStyle,
    Simulator,
    bearer_user,
    cached_user_data,
    deliver,
    fault_middleware,
    json_error,
    user_rng,
)
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint

NAME = "whoop"
ACCESS_TTL_S = 3600
DEFAULT_LIMIT, MAX_LIMIT = 10, 25
DEFAULT_HISTORY = {"workouts": 300, "days_247": 120}
SCOPE = "offline read:workout read:sleep read:recovery read:cycles read:profile"

# (sport_id, sport_name, m/s when it has GPS). `spikeball` is a Whoop sport our client does not
# map, to exercise the `other` path.
_SPORTS: list[tuple[int, str, float | None]] = [
    (0, "running", 3.0), (1, "cycling", 7.0), (63, "walking", 1.4), (52, "hiking/rucking", 1.1),
    (57, "mountain-biking", 5.0), (45, "weightlifting", None), (48, "functional-fitness", None),
    (44, "yoga", None), (33, "swimming", None), (18, "rowing", None), (34, "tennis", None),
    (96, "hiit", None), (43, "pilates", None), (39, "boxing", None), (104, "spikeball", None),
]  # fmt: skip
_OFFSETS = ["-05:00", "-08:00", "+00:00", "+01:00", "+02:00", "+05:30"]


def z(dt: datetime) -> str:
    """Whoop's timestamps: UTC, milliseconds, `Z`."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    """A served record with the span it is matched and ordered by."""

    start: datetime
    end: datetime | None
    key: tuple[str, str]  # ordering: (start, id); newest first
    record: dict[str, Any]


@dataclass
class UserData:
    user_id: int
    timezone_offset: str
    collections: dict[str, list[Entry]]  # "workout" | "sleep" | "recovery" | "cycle", newest first


def _entry(start: datetime, end: datetime | None, record_id: Any, record: dict[str, Any]) -> Entry:
    return Entry(start, end, (z(start), str(record_id)), record)


def _nights(rng: Random, anchor: datetime, days: int, offset: str) -> list[tuple[datetime, datetime]]:
    """(onset, wake) of `days` nights, oldest first, each over by the anchor: onset in the local
    evening (21:30 to 01:00), 6.5 to 9 hours long."""
    tz = datetime.strptime(offset, "%z").tzinfo
    local_day = anchor.astimezone(tz).date()
    nights: list[tuple[datetime, datetime]] = []
    while len(nights) < days:
        evening = datetime(local_day.year, local_day.month, local_day.day, 21, 30, tzinfo=tz)
        onset = (evening + timedelta(minutes=rng.randrange(0, 210))).astimezone(UTC)
        wake = onset + timedelta(minutes=rng.randrange(390, 540))
        if wake <= anchor:
            nights.append((onset, wake))
        local_day -= timedelta(days=1)
    nights.reverse()
    return nights


def _uuid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stamps(rng: Random, end: datetime, latest: datetime) -> dict[str, str]:
    """created_at soon after `end`, updated_at a little later, neither after `latest`."""
    created = min(end + timedelta(minutes=rng.randrange(1, 15)), latest)
    return {"created_at": z(created), "updated_at": z(min(created + timedelta(minutes=rng.randrange(0, 90)), latest))}


def _score_state(rng: Random, unscorable_share: float) -> str:
    return "UNSCORABLE" if rng.random() < unscorable_share else "SCORED"


def _sleeps_and_cycles(
    rng: Random, user_id: int, anchor: datetime, days: int, offset: str
) -> tuple[dict[str, list[Entry]], list[tuple[datetime, datetime]]]:
    """The 24/7 collections, and the waking hours between the nights (for workouts)."""
    nights = _nights(rng, anchor, days, offset)
    awake = [(wake, nights[n + 1][0] if n + 1 < len(nights) else anchor) for n, (_, wake) in enumerate(nights)]
    sleeps, recoveries, cycles = [], [], []
    first_cycle = rng.randrange(10**7, 9 * 10**7)
    for n, (onset, wake) in enumerate(nights):
        cycle_id, cycle_end = first_cycle + n, nights[n + 1][0] if n + 1 < len(nights) else None
        cycle: dict[str, Any] = {
            "id": cycle_id, "user_id": user_id, **_stamps(rng, onset, anchor),
            "start": z(onset), "timezone_offset": offset, "score_state": _score_state(rng, 0.02),
        }  # fmt: skip
        if cycle_end is not None:
            cycle["end"] = z(cycle_end)
        if cycle["score_state"] == "SCORED":
            cycle["score"] = {"strain": round(rng.uniform(4, 19), 4), "kilojoule": round(rng.uniform(6000, 14000), 3),
                              "average_heart_rate": rng.randint(55, 80),
                              "max_heart_rate": rng.randint(120, 190)}  # fmt: skip
        cycles.append(_entry(onset, cycle_end, cycle_id, cycle))
        naps = [(onset, wake, False)]
        if cycle_end is not None and rng.random() < 0.12:
            nap_start = wake + timedelta(hours=rng.uniform(5, 8))
            nap_end = nap_start + timedelta(minutes=rng.randrange(15, 60))
            if nap_end < cycle_end:
                naps.append((nap_start, nap_end, True))
        for start, end, nap in naps:
            sleep_id = _uuid(rng)
            latest = n == len(nights) - 1 and not nap
            state = "PENDING_SCORE" if latest else _score_state(rng, 0.03)
            sleep = {"id": sleep_id, "cycle_id": cycle_id, "v1_id": rng.randrange(10**6, 10**8), "user_id": user_id,
                     **_stamps(rng, end, anchor), "start": z(start), "end": z(end), "timezone_offset": offset,
                     "nap": nap, "score_state": state}  # fmt: skip
            if state == "SCORED":
                sleep["score"] = _sleep_score(rng, end - start, n)
            sleeps.append(_entry(start, end, sleep_id, sleep))
            if not nap:
                recoveries.append(_entry(onset, cycle_end, cycle_id, _recovery(rng, user_id, cycle_id, sleep, n)))
    return {"sleep": sleeps, "recovery": recoveries, "cycle": cycles}, awake


def _sleep_score(rng: Random, in_bed: timedelta, night: int) -> dict[str, Any]:
    total = int(in_bed.total_seconds() * 1000)
    awake, no_data = int(total * rng.uniform(0.04, 0.12)), rng.choice([0, 0, 0, 60_000 * rng.randrange(1, 20)])
    deep, rem = int(total * rng.uniform(0.14, 0.22)), int(total * rng.uniform(0.18, 0.26))
    score: dict[str, Any] = {
        "stage_summary": {
            "total_in_bed_time_milli": total, "total_awake_time_milli": awake,
            "total_no_data_time_milli": no_data, "total_light_sleep_time_milli": total - awake - no_data - deep - rem,
            "total_slow_wave_sleep_time_milli": deep, "total_rem_sleep_time_milli": rem,
            "sleep_cycle_count": rng.randint(3, 6), "disturbance_count": rng.randint(2, 20),
        },
        "sleep_needed": {
            "baseline_milli": rng.randrange(25_000_000, 30_000_000),
            "need_from_sleep_debt_milli": rng.randrange(0, 3_000_000),
            "need_from_recent_strain_milli": rng.randrange(0, 1_500_000), "need_from_recent_nap_milli": 0,
        },
        "respiratory_rate": round(rng.uniform(13, 18), 6),
        "sleep_performance_percentage": rng.randint(45, 100),
        "sleep_consistency_percentage": rng.randint(40, 95),
        "sleep_efficiency_percentage": round(rng.uniform(80, 97), 6),
    }  # fmt: skip
    if night < 3:  # consistency needs a few nights of history
        del score["sleep_consistency_percentage"]
    if rng.random() < 0.05:
        del score["respiratory_rate"]
    return score


def _recovery(rng: Random, user_id: int, cycle_id: int, sleep: dict[str, Any], night: int) -> dict[str, Any]:
    state = "PENDING_SCORE" if sleep["score_state"] == "PENDING_SCORE" else _score_state(rng, 0.03)
    created = datetime.fromisoformat(sleep["end"]) + timedelta(minutes=rng.randrange(2, 10))
    updated = created + timedelta(seconds=rng.randrange(5, 600))
    recovery: dict[str, Any] = {"cycle_id": cycle_id, "sleep_id": sleep["id"], "user_id": user_id,
                                "created_at": z(created), "updated_at": z(updated), "score_state": state}  # fmt: skip
    if state == "SCORED":
        score: dict[str, Any] = {
            "user_calibrating": night < 4, "recovery_score": rng.randint(1, 99),
            "resting_heart_rate": rng.randint(42, 70), "hrv_rmssd_milli": round(rng.uniform(20, 140), 6),
            "spo2_percentage": round(rng.uniform(93, 99.5), 4), "skin_temp_celsius": round(rng.uniform(32, 35.5), 4),
        }  # fmt: skip
        if rng.random() < 0.1:  # straps before 4.0 measure neither
            del score["spo2_percentage"], score["skin_temp_celsius"]
        recovery["score"] = score
    return recovery


def _workouts(
    rng: Random, user_id: int, count: int, awake: list[tuple[datetime, datetime]], offset: str
) -> list[Entry]:
    """`count` workouts in waking hours (of at least two hours), spread evenly over the days
    they fall on."""
    awake = [(a, b) for a, b in awake if b - a >= timedelta(hours=2)]
    per_day: dict[int, int] = {}
    for _ in range(count if awake else 0):
        day = rng.randrange(len(awake))
        per_day[day] = per_day.get(day, 0) + 1
    workouts: list[dict[str, Any]] = []
    for day, n in sorted(per_day.items()):
        first, last = awake[day]
        slot = (last - first - timedelta(minutes=30)) / n
        for i in range(n):
            start = first + timedelta(minutes=15) + slot * i + slot * rng.uniform(0, 0.1)
            length = min(timedelta(minutes=rng.randrange(15, 120)), slot * 0.85)
            workouts.append(_workout(rng, user_id, start, start + length, len(workouts), offset))
    if workouts:  # the newest is not scored yet
        workouts[-1] = {k: v for k, v in workouts[-1].items() if k != "score"} | {"score_state": "PENDING_SCORE"}
    return [_entry(datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"]), w["id"], w) for w in workouts]


def _workout(rng: Random, user_id: int, start: datetime, end: datetime, index: int, offset: str) -> dict[str, Any]:
    sport_id, sport_name, speed = rng.choice(_SPORTS)
    if rng.random() < 0.05:  # abroad
        offset = rng.choice(_OFFSETS)
    workout: dict[str, Any] = {
        "id": _uuid(rng), "v1_id": 1_000_000 + index, "user_id": user_id,
        **_stamps(rng, end, end + timedelta(minutes=30)),
        "start": z(start), "end": z(end), "timezone_offset": offset, "sport_name": sport_name,
        "score_state": _score_state(rng, 0.03), "sport_id": sport_id,
    }  # fmt: skip
    if workout["score_state"] != "SCORED":
        return workout
    millis = int((end - start).total_seconds() * 1000)
    zones = [rng.random() for _ in range(6)]
    durations = [int(millis * share / sum(zones)) for share in zones]
    score: dict[str, Any] = {
        "strain": round(rng.uniform(3, 19), 6), "average_heart_rate": rng.randint(95, 165),
        "max_heart_rate": rng.randint(150, 195), "kilojoule": round(rng.uniform(300, 4500), 6),
        "percent_recorded": round(rng.uniform(85, 100), 4),
        "zone_durations": {f"zone_{name}_milli": d for name, d in
                           zip(("zero", "one", "two", "three", "four", "five"), durations, strict=True)},
    }  # fmt: skip
    if speed is not None and rng.random() < 0.9:  # GPS: sometimes off
        score["distance_meter"] = round(speed * rng.uniform(0.8, 1.2) * millis / 1000, 4)
        score["altitude_gain_meter"] = round(rng.uniform(0, 600), 4)
        score["altitude_change_meter"] = round(rng.uniform(-50, 50), 4)
    workout["score"] = score
    return workout


def user_data(request_or_app: web.Request | web.Application, user: str) -> UserData:
    return cached_user_data(request_or_app, NAME, user, DEFAULT_HISTORY, _build_user_data)


def _build_user_data(user: str, history: dict[str, int], anchor: datetime) -> UserData:
    rng = user_rng(NAME, user)
    user_id, offset = rng.randrange(10_000, 99_999_999), rng.choice(_OFFSETS)
    collections, awake = _sleeps_and_cycles(user_rng(NAME, user, "247"), user_id, anchor, history["days_247"], offset)
    collections["workout"] = _workouts(user_rng(NAME, user, "workouts"), user_id, history["workouts"], awake, offset)
    newest_first = {kind: sorted(entries, key=lambda e: e.key, reverse=True) for kind, entries in collections.items()}
    return UserData(user_id, offset, newest_first)


# ---- changes made by events -------------------------------------------------------------------


def _key(kind: str, record: dict[str, Any]) -> str:
    """What changes to a record are kept under: its id, a recovery's its sleep's."""
    return str(record["sleep_id"] if kind == "recovery" else record["id"])


def _names(kind: str, record: dict[str, Any]) -> set[str]:
    """The ids an event may name a record by: a recovery by its sleep's or its cycle's."""
    return {str(record["sleep_id"]), str(record["cycle_id"])} if kind == "recovery" else {str(record["id"])}


def served(request_or_app: web.Request | web.Application, user: str) -> dict[str, list[Entry]]:
    """The user's collections (newest first) with the events' records added, changed, deleted;
    a recovery spans its cycle, which an event may have closed."""
    data = user_data(request_or_app, user)
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    changes = app[STATE_KEY].changes.get((NAME, user))
    if not changes:
        return data.collections
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, entries in data.collections.items():
        every = [e.record for e in entries] + changes["added"].get(kind, [])
        out[kind] = [changes["changed"].get((kind, _key(kind, r)), r) for r in every
                     if (kind, _key(kind, r)) not in changes["deleted"]]  # fmt: skip
    spans = {c["id"]: (c["start"], c.get("end")) for c in out["cycle"]}

    def entry(kind: str, r: dict[str, Any]) -> Entry:
        start, end = spans[r["cycle_id"]] if kind == "recovery" else (r["start"], r.get("end"))
        return _entry(_at(start), None if end is None else _at(end), r["cycle_id" if kind == "recovery" else "id"], r)

    return {kind: sorted((entry(kind, r) for r in rs), key=lambda e: e.key, reverse=True) for kind, rs in out.items()}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- data API ---------------------------------------------------------------------------------


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": "Bad Request", "message": message}),
                              content_type="application/json")  # fmt: skip


def _authorized_user(request: web.Request) -> str:
    user = bearer_user(request, NAME)
    if user is None:
        raise web.HTTPUnauthorized(text='{"error": "Unauthorized", "message": "Authorization was not valid"}',
                                   content_type="application/json")  # fmt: skip
    return user


async def revoke_access(request: web.Request) -> web.Response:
    request.config_dict[STATE_KEY].revoke_access(NAME, _authorized_user(request))
    return web.Response(status=204)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad_request(f"{name} must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise _bad_request(f"{name} must carry a time zone offset")
    return parsed


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    return int(raw)


def _encode_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, str]:
    try:
        start, record_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(start), str(record_id)
    except (ValueError, TypeError, binascii.Error):
        raise _bad_request("nextToken is not valid") from None


def collection_endpoint(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        entries = served(request, _authorized_user(request))[kind]
        limit = _limit(request)
        start = _time_param(request, "start")
        end = _time_param(request, "end") or datetime.now(UTC)
        if start is not None and start > end:
            raise _bad_request("start must not be after end")
        token = request.query.get("nextToken")
        after = _decode_token(token) if token else None
        matching = [
            e
            for e in entries
            if e.start < end and (start is None or e.end is None or e.end >= start) and (after is None or e.key < after)
        ]
        page = matching[:limit]
        body: dict[str, Any] = {"records": [e.record for e in page]}
        if len(matching) > limit:
            body["next_token"] = _encode_token(page[-1].key)
        return web.json_response(body)

    return handler


def detail_endpoint(kind: str) -> Handler:
    """One record by id; a recovery by its cycle's id."""
    field = "cycle_id" if kind == "recovery" else "id"

    async def handler(request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        for entry in served(request, _authorized_user(request))[kind]:
            if str(entry.record[field]) == wanted:
                return web.json_response(entry.record)
        return json_error(404, {"error": "Not Found", "message": f"No {kind} {wanted} for this user"})

    return handler


async def profile(request: web.Request) -> web.Response:
    user = _authorized_user(request)
    data = user_data(request, user)
    return web.json_response({"user_id": data.user_id, "email": f"{user}@example.com",
                              "first_name": user, "last_name": "Simulated"})  # fmt: skip


# ---- OAuth and limits -----------------------------------------------------------------------

OAUTH = OAuthStyle(NAME, ACCESS_TTL_S, client_auth="body", rotates_refresh_token=True,
                   extra=lambda user, ttl: {"scope": SCOPE})  # fmt: skip
_grant = token_endpoint(OAUTH)


async def token(request: web.Request) -> web.StreamResponse:
    """Whoop issues a refresh token only for the `offline` scope, which a refresh grant must ask
    for again."""
    form = await request.post()  # read (and cached by aiohttp) before the shared handler reads it
    response = await _grant(request)
    offline = "offline" in str(form.get("scope", "")).split()
    refreshed = form.get("grant_type") == "refresh_token" and response.status == 200
    if refreshed and not offline and isinstance(response, web.Response) and response.text:
        body = json.loads(response.text)
        body.pop("refresh_token", None)
        body["scope"] = " ".join(s for s in SCOPE.split() if s != "offline")
        return web.json_response(body)
    return response


def _rate_headers(usage: list[tuple[int, int, int]]) -> dict[str, str]:
    """Whoop's headers; Remaining and Reset speak of the window that is used up, else the first."""
    limit, seconds, used = next((u for u in reversed(usage) if u[2] > u[0]), usage[0])
    return {
        "X-RateLimit-Limit": ", ".join([str(usage[0][0]), *(f"{n};window={s}" for n, s, _ in usage)]),
        "X-RateLimit-Remaining": str(max(0, limit - used)),
        "X-RateLimit-Reset": str(math.ceil(seconds - time.time() % seconds)),
    }


RATE_LIMIT = RateLimitStyle(limits=[(100, 60), (10_000, 86400)], headers=_rate_headers,
                            body={"error": "Too Many Requests"})  # fmt: skip

COLLECTIONS = {"workout": "/developer/v2/activity/workout", "sleep": "/developer/v2/activity/sleep",
               "recovery": "/developer/v2/recovery", "cycle": "/developer/v2/cycle"}  # fmt: skip


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    for kind, path in COLLECTIONS.items():
        api.router.add_get(path, collection_endpoint(kind))
        if kind != "recovery":
            api.router.add_get(path + "/{id}", detail_endpoint(kind))
    api.router.add_get("/developer/v2/cycle/{id}/recovery", detail_endpoint("recovery"))
    api.router.add_get("/developer/v2/user/profile/basic", profile)
    api.router.add_delete("/developer/v2/user/access", revoke_access)
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/oauth/oauth2/token", token)
    auth.router.add_get("/oauth/oauth2/auth", authorize_endpoint(OAUTH))
    return api, auth


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served (newest first), for tests."""
    data = user_data(app, user)
    return {
        "user_id": data.user_id,
        "timezone_offset": data.timezone_offset,
        **{kind: [e.record for e in entries] for kind, entries in served(app, user).items()},
    }


# ---- webhooks -----------------------------------------------------------------------------------


def _merged(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`record` with `changes` merged in, nested objects key by key."""
    out = dict(record)
    for k, v in changes.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _scored(make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """The first record `make(attempt)` builds with a score (the history's odds leave some out)."""
    attempt = 0
    while (record := make(attempt))["score_state"] != "SCORED":
        attempt += 1
    return dict(record)


def _new_workout(user: str, data: UserData, count: int) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(minutes=1)

    def make(attempt: int) -> dict[str, Any]:
        rng = user_rng(NAME, user, f"added-workout-{count}-{attempt}")
        start = end - timedelta(minutes=rng.randrange(20, 90))
        return _workout(rng, data.user_id, start, end, 2_000_000 + count, data.timezone_offset)

    return _scored(make) | {"created_at": z(now), "updated_at": z(now)}


def _new_night(user: str, data: UserData, now: dict[str, list[Entry]], changes: dict[str, Any]) -> list[dict[str, Any]]:
    """A scored night a day after the latest one, with its cycle (the open one ends at its onset)
    and recovery: [sleep, recovery]."""
    latest = max((e for e in now["sleep"] if not e.record["nap"]), key=lambda e: e.start)
    onset = latest.start + timedelta(days=1)
    wake = onset + timedelta(minutes=450)
    rng = user_rng(NAME, user, f"added-night-{len(changes['added']['sleep'])}")
    cycle_id = max(e.record["id"] for e in now["cycle"]) + 1
    for e in now["cycle"]:
        if e.end is None:
            changes["changed"][("cycle", str(e.record["id"]))] = e.record | {"end": z(onset)}
    cycle = {"id": cycle_id, "user_id": data.user_id, "created_at": z(onset), "updated_at": z(wake),
             "start": z(onset), "timezone_offset": data.timezone_offset, "score_state": "SCORED",
             "score": {"strain": round(rng.uniform(4, 19), 4), "kilojoule": round(rng.uniform(6000, 14000), 3),
                       "average_heart_rate": rng.randint(55, 80), "max_heart_rate": rng.randint(120, 190)}}  # fmt: skip
    sleep = {"id": _uuid(rng), "cycle_id": cycle_id, "v1_id": rng.randrange(10**6, 10**8), "user_id": data.user_id,
             "created_at": z(wake), "updated_at": z(wake), "start": z(onset), "end": z(wake),
             "timezone_offset": data.timezone_offset, "nap": False, "score_state": "SCORED",
             "score": _sleep_score(rng, wake - onset, 10)}  # fmt: skip
    recovery = _scored(lambda attempt: _recovery(rng, data.user_id, cycle_id, sleep, 10))
    for kind, record in (("cycle", cycle), ("sleep", sleep), ("recovery", recovery)):
        changes["added"][kind].append(record)
    return [sleep, recovery]


def _signed(secret: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(payload).encode()
    stamp = str(int(time.time() * 1000))
    digest = hmac.new(secret.encode(), stamp.encode() + raw, hashlib.sha256).digest()
    return raw, {"X-WHOOP-Signature": base64.b64encode(digest).decode(), "X-WHOOP-Signature-Timestamp": stamp}


async def emit(request: web.Request, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Something changes upstream and Whoop notifies (see the module docstring): the records
    created or changed, and each event sent with the status our receiver answered."""
    kind = str(body.get("kind", "workout.updated"))
    obj, _, action = kind.partition(".")
    if obj not in ("workout", "sleep", "recovery") or action not in ("updated", "deleted"):
        raise _bad_request("kind must be workout|sleep|recovery.updated|deleted")
    state = request.config_dict[STATE_KEY]
    data = user_data(request, user)
    changes = state.changes.setdefault((NAME, user), {"added": {k: [] for k in COLLECTIONS}, "changed": {},
                                                      "deleted": set()})  # fmt: skip
    now = served(request, user)
    if "id" not in body:
        if action == "deleted":
            raise _bad_request("a deletion needs the id of the record")
        if obj == "workout":
            made = [_new_workout(user, data, len(changes["added"]["workout"]))]
            changes["added"]["workout"].append(made[0])
        else:
            made = _new_night(user, data, now, changes)
        recovery_id = made[-1]["cycle_id"] if body.get("recovery_id") == "cycle" else made[0]["id"]
        events = [("workout.updated", made[0]["id"])] if obj == "workout" else [
            ("sleep.updated", made[0]["id"]), ("recovery.updated", recovery_id)]  # fmt: skip
    else:
        found = [e.record for e in now[obj] if str(body["id"]) in _names(obj, e.record)]
        if not found:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no {obj} {body['id']} for {user}"}),
                                   content_type="application/json")  # fmt: skip
        key = _key(obj, found[0])
        if action == "deleted":
            changes["deleted"].add((obj, key))
            made = []
        else:
            made = [_merged(found[0], body.get("changes") or {}) | {"updated_at": z(datetime.now(UTC))}]
            changes["changed"][(obj, key)] = made[0]
        events = [(kind, body["id"])]
    target = state.webhook_targets.get(NAME)
    sent = []
    for event_type, record_id in events:
        payload = {"user_id": data.user_id, "id": record_id, "type": event_type, "trace_id": str(uuid.uuid4())}
        raw, headers = _signed(target.secret if target else "", payload)
        sent.append(payload | {"delivery_status": await deliver(request, NAME, raw, headers)})
    return {"records": made, "events": sent}


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=records, emit=emit)
