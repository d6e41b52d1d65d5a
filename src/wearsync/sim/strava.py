"""Strava API v3 simulator: the paths, parameters, pagination, auth, rate limits, JSON shapes and
webhooks of `www.strava.com`, with deterministic activities per user (sim/strava_data.py).

Data API (mounted under /strava/api, followed by Strava's own `/api/v3`):
- `GET /api/v3/athlete/activities?before=&after=&page=&per_page=`: epoch seconds, strict bounds
  (start > after, start < before; unconfirmed); page from 1; per_page default 30, and a larger
  one than 200 is clamped to 200 (the list answers 200 at most; unconfirmed whether Strava
  clamps or refuses). Newest first, except with only `after` given: oldest first. Past the end,
  an empty list. Summary representation (resource_state 2): no `calories`.
- `GET /api/v3/activities/{id}`: the detailed representation (resource_state 3) with `calories`.
- `GET /api/v3/athlete`: the authenticated athlete.
Every call needs a bearer token from the OAuth server; a bad one is Strava's 401 body.

OAuth (under /strava/auth): the authorization page `GET /oauth/authorize` (sim/oauth.py; the
redirect back carries the accepted `scope`), `POST /oauth/deauthorize` (the app withdraws its
access: the athlete's tokens stop working), `POST /oauth/token` and `POST /api/v3/oauth/token`,
client credentials in the form body, no redirect_uri checked; an issued code, or the shortcut code
`user-NAME`, yields tokens of user NAME with the `athlete`
summary; access tokens last 6 hours (`expires_at` in epoch seconds); refresh tokens rotate: each
refresh returns a new one (without `athlete`, as Strava does) and the old one is refused with
Strava's 400 body.

Rate limits per app, as developers.strava.com/docs/rate-limits documents them: overall 200 calls
per 15 minutes and 2,000 a day (`X-RateLimit-Limit`/`-Usage`), and "non-upload" (read) calls 100
and 1,000 (`X-ReadRateLimit-Limit`/`-Usage`), each header "15-minute,daily", on every answer;
windows aligned to the quarter hour and to midnight UTC. Every call of the simulator counts
against both (it serves none of the upload endpoints Strava exempts from the read limit), a
refused one too ("requests violating the short term limit will still count toward the long term
limit"). Over either limit: Strava's 429 with its JSON message, without `Retry-After`.

Webhooks: one push subscription per app (`POST/GET /api/v3/push_subscriptions`,
`DELETE /api/v3/push_subscriptions/{id}`, client credentials in the form or the query; see
`create_subscription`); `emit` changes a user's activities (`state.changes[("strava", user)]`)
and POSTs the event Strava would send to the subscription's callback, unsigned, as Strava does.
A target set through `/_sim/strava/webhook` counts as the app's subscription (id 1).
"""

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from wearsync.sim.common import (
    DELIVERY_SESSION,
    STATE_KEY,
    RateLimitStyle,
    SimState,
    Simulator,
    WebhookTarget,
    bearer_user,
    deliver,
    fault_middleware,
    json_error,
)
from wearsync.sim.oauth import OAuthStyle, authorize_endpoint, token_endpoint
from wearsync.sim.strava_data import NAME, athlete, legacy_type, new_activity, user_data

ACCESS_TTL_S = 6 * 3600
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 30
CHALLENGE_TIMEOUT_S = 2.0  # Strava's: the callback must echo the challenge within two seconds
APPLICATION_ID = 4242  # the simulated app's id, as subscriptions show it
SUBSCRIPTION_KEY = (NAME, "*subscription")  # in state.changes: not a user name, never a user's
UPDATABLE = {"name", "sport_type", "private"}  # the fields whose change Strava announces
# The id of the app's first push subscription on a fresh simulator, and one more for each later
# one (Strava gives each a new id); what wearsync's WEARSYNC_STRAVA_SUBSCRIPTION_ID names in dev.
FIRST_SUBSCRIPTION_ID = 120_001
SUBSCRIPTIONS_MADE_KEY = (NAME, "*subscriptions made")


def _state(request_or_app: web.Request | web.Application) -> SimState:
    return (
        request_or_app.config_dict[STATE_KEY] if isinstance(request_or_app, web.Request) else request_or_app[STATE_KEY]
    )


def _changes(request_or_app: web.Request | web.Application, user: str) -> dict[str, Any]:
    """What happened to a user's activities after the history was laid out (by `emit`):
    activities added and their calorie estimates, fields changed by id, ids deleted."""
    changes: dict[str, Any] = _state(request_or_app).changes.setdefault(
        (NAME, user), {"added": [], "calories": {}, "changed": {}, "deleted": set()}
    )
    return changes


def served(request_or_app: web.Request | web.Application, user: str) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """The activity summaries a user is served now, oldest first, and their calorie estimates."""
    data = user_data(request_or_app, user)
    changes = _state(request_or_app).changes.get((NAME, user))
    if not changes:
        return data.activities, data.calories
    activities = [a | changes["changed"].get(a["id"], {}) for a in data.activities + changes["added"]
                  if a["id"] not in changes["deleted"]]  # fmt: skip
    if changes["added"]:
        activities.sort(key=lambda a: (_epoch(a), a["id"]))
    return activities, data.calories | changes["calories"]


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
    activities, _ = served(request, _authorized_user(request))
    before, after = _int_param(request, "before"), _int_param(request, "after")
    page, per_page = _int_param(request, "page") or 1, _int_param(request, "per_page") or DEFAULT_PER_PAGE
    if page < 1 or per_page < 1:
        return _error(400, "Bad Request", "Application", "page" if page < 1 else "per_page", "invalid")
    per_page = min(per_page, MAX_PER_PAGE)
    matching = [a for a in activities
                if (before is None or _epoch(a) < before) and (after is None or _epoch(a) > after)]  # fmt: skip
    if not (after is not None and before is None):
        matching.reverse()  # newest first, unless only `after` is given
    return web.json_response(matching[(page - 1) * per_page : page * per_page])


def _detail(request: web.Request, user: str, activity_id: object) -> dict[str, Any] | None:
    activities, calories = served(request, user)
    for a in activities:
        if str(a["id"]) == str(activity_id):
            return a | {"resource_state": 3, "calories": calories[a["id"]], "description": None}
    return None


async def get_activity(request: web.Request) -> web.Response:
    detail = _detail(request, _authorized_user(request), request.match_info["id"])
    if detail is None:
        return _error(404, "Record Not Found", "Activity", "id", "invalid")
    return web.json_response(detail)


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
    checks_redirect_uri=False,  # Strava's token request takes no redirect_uri
    returns_scope=True,  # its redirect back says which scopes the athlete accepted
)
_token_endpoint = token_endpoint(OAUTH)


async def deauthorize(request: web.Request) -> web.Response:
    """`POST /oauth/deauthorize` with the access token (form, query or bearer): the app's access to
    the athlete ends, every token stops working; answers the token it was given."""
    form = await request.post()
    token = str(form.get("access_token") or request.query.get("access_token") or "")
    if not token and request.headers.get("Authorization", "").startswith("Bearer "):
        token = request.headers["Authorization"][7:].strip()
    state = request.config_dict[STATE_KEY]
    user = state.read_token(NAME, token, "access")
    if user is None:
        return _error(401, "Authorization Error", "Athlete", "access_token", "invalid")
    state.revoke_access(NAME, user)
    return web.json_response({"access_token": token})


async def oauth_token(request: web.Request) -> web.StreamResponse:
    """Strava's answer to a refresh grant carries no `athlete`; to a code grant it does."""
    response = await _token_endpoint(request)
    form = await request.post()
    if response.status != 200 or form.get("grant_type") != "refresh_token" or not isinstance(response, web.Response):
        return response
    body = json.loads(response.text or "{}")
    body.pop("athlete", None)
    return web.json_response(body)


def _usage_headers(prefix: str) -> Callable[[list[tuple[int, int, int]]], dict[str, str]]:
    """Strava's `<prefix>-Limit` and `<prefix>-Usage`: "15-minute,daily"."""

    def headers(usage: list[tuple[int, int, int]]) -> dict[str, str]:
        return {f"{prefix}-Limit": ",".join(str(u[0]) for u in usage),
                f"{prefix}-Usage": ",".join(str(u[2]) for u in usage)}  # fmt: skip

    return headers


RATE_LIMIT = RateLimitStyle(
    limits=[(200, 15 * 60), (2000, 86400)],
    headers=_usage_headers("X-RateLimit"),
    read_limits=[(100, 15 * 60), (1000, 86400)],
    read_headers=_usage_headers("X-ReadRateLimit"),
    body={"message": "Rate Limit Exceeded",
          "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}]},
)  # fmt: skip


# ---- webhooks: the push subscription and its events ------------------------------------------


def _subscription(state: SimState) -> dict[str, Any] | None:
    """The app's subscription, if it has one: the webhook target, with Strava's id and times."""
    target = state.webhook_targets.get(NAME)
    if target is None:
        return None
    subscription: dict[str, Any] | None = state.changes.get(SUBSCRIPTION_KEY)
    if subscription is None or subscription["target"] is not target:  # set through /_sim/strava/webhook
        subscription = {"id": _next_subscription_id(state), "target": target, "created_at": _now_iso()}
        state.changes[SUBSCRIPTION_KEY] = subscription
    return subscription


def _next_subscription_id(state: SimState) -> int:
    made = state.changes.setdefault(SUBSCRIPTIONS_MADE_KEY, {"count": 0})
    made["count"] += 1
    subscription_id: int = FIRST_SUBSCRIPTION_ID + made["count"] - 1
    return subscription_id


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subscription_error(status: int, field: str, code: str) -> web.Response:
    message = {400: "Bad Request", 401: "Authorization Error", 404: "Record Not Found"}[status]
    return _error(status, message, "PushSubscription" if status != 401 else "Application", field, code)


async def _fields(request: web.Request) -> dict[str, str]:
    """Strava takes a subscription call's parameters in the query or as a form."""
    form = await request.post() if request.can_read_body else {}
    return dict(request.query) | {k: str(v) for k, v in form.items()}


def _client_refused(request: web.Request, fields: dict[str, str]) -> web.Response | None:
    knobs = request.config_dict[STATE_KEY].provider(NAME)
    if (fields.get("client_id"), fields.get("client_secret")) != (knobs.client_id, knobs.client_secret):
        return _subscription_error(401, "client_id", "invalid")
    return None


async def _echoes_challenge(request: web.Request, callback_url: str, verify_token: str) -> bool:
    """Strava's validation: GET the callback with a random challenge; it must answer 200 with
    `{"hub.challenge": <the challenge>}` within two seconds."""
    challenge = secrets.token_urlsafe(12)
    url = URL(callback_url).extend_query(
        {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge}
    )
    session = request.config_dict[DELIVERY_SESSION]
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=CHALLENGE_TIMEOUT_S)) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    return isinstance(body, dict) and body.get("hub.challenge") == challenge


async def create_subscription(request: web.Request) -> web.Response:
    """`POST /api/v3/push_subscriptions` (client_id, client_secret, callback_url, verify_token).
    Answers 201 `{"id": N}` once the callback echoed the challenge (the status is unconfirmed);
    refused with 400 when the app has a subscription already or the callback does not validate
    (Strava's error codes here are unconfirmed)."""
    fields = await _fields(request)
    if (refused := _client_refused(request, fields)) is not None:
        return refused
    for name in ("callback_url", "verify_token"):
        if not fields.get(name):
            return _subscription_error(400, name, "missing")
    state = request.config_dict[STATE_KEY]
    if _subscription(state) is not None:
        return _subscription_error(400, "", "already exists")
    if not await _echoes_challenge(request, fields["callback_url"], fields["verify_token"]):
        return _subscription_error(400, "callback url", "GET to callback URL does not return 200")
    if _subscription(state) is not None:  # created by another call while this one validated
        return _subscription_error(400, "", "already exists")
    target = WebhookTarget(fields["callback_url"], verify_token=fields["verify_token"])
    state.webhook_targets[NAME] = target
    subscription = {"id": _next_subscription_id(state), "target": target, "created_at": _now_iso()}
    state.changes[SUBSCRIPTION_KEY] = subscription
    return web.json_response({"id": subscription["id"]}, status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    if (refused := _client_refused(request, await _fields(request))) is not None:
        return refused
    subscription = _subscription(request.config_dict[STATE_KEY])
    if subscription is None:
        return web.json_response([])
    return web.json_response([{
        "id": subscription["id"], "resource_state": 2, "application_id": APPLICATION_ID,
        "callback_url": subscription["target"].url,
        "created_at": subscription["created_at"], "updated_at": subscription["created_at"],
    }])  # fmt: skip


async def delete_subscription(request: web.Request) -> web.Response:
    if (refused := _client_refused(request, await _fields(request))) is not None:
        return refused
    state = request.config_dict[STATE_KEY]
    subscription = _subscription(state)
    if subscription is None or str(subscription["id"]) != request.match_info["id"]:
        return _subscription_error(404, "id", "invalid")
    state.webhook_targets.pop(NAME, None)
    state.changes.pop(SUBSCRIPTION_KEY, None)
    return web.Response(status=204)


def _change_activity(request: web.Request, user: str, body: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """Apply an update (`changes` of name, sport_type, private) to a served activity; its id and
    the `updates` Strava's event names (title, type, private as "true"/"false")."""
    changes = body.get("changes")
    if not isinstance(changes, dict) or not changes or not set(changes) <= UPDATABLE:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"changes: a non-empty object of {sorted(UPDATABLE)}"}),
                                 content_type="application/json")  # fmt: skip
    activity_id = _served_id(request, user, body)
    change: dict[str, Any] = dict(changes)
    updates: dict[str, str] = {}
    if "name" in changes:
        updates["title"] = str(changes["name"])
    if "sport_type" in changes:
        change["type"] = legacy_type(str(changes["sport_type"]))
        updates["type"] = str(changes["sport_type"])
    if "private" in changes:
        change["private"] = bool(changes["private"])
        change["visibility"] = "only_me" if change["private"] else "everyone"
        updates["private"] = "true" if change["private"] else "false"
    _changes(request, user)["changed"].setdefault(activity_id, {}).update(change)
    return activity_id, updates


def _served_id(request: web.Request, user: str, body: dict[str, Any]) -> int:
    detail = _detail(request, user, body.get("id"))
    if detail is None:
        raise web.HTTPNotFound(text=json.dumps({"error": f"user {user} has no activity {body.get('id')}"}),
                               content_type="application/json")  # fmt: skip
    activity_id: int = detail["id"]
    return activity_id


async def emit(request: web.Request, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Something happens at Strava and it POSTs the event to the subscription's callback:
    `{"kind": "create", "sport_type"?}` (a new activity, started three hours ago),
    `{"kind": "update", "id", "changes": {"name"?, "sport_type"?, "private"?}}`,
    `{"kind": "delete", "id"}` (no longer served) or `{"kind": "deauthorize"}` (the athlete revokes
    the app: the user's tokens are refused from now on, until the user connects again).
    Without a subscription, or for an athlete who revoked the app, the change happens but no event
    is sent (`delivery_status` None)."""
    state = request.config_dict[STATE_KEY]
    data = user_data(request, user)
    revoked = (NAME, user) in state.refresh_revoked_before
    now = int(time.time())
    object_type, object_id, updates = "activity", 0, dict[str, str]()
    match body.get("kind"):
        case "create":
            changes = _changes(request, user)
            after = (changes["added"] or data.activities or [{"id": 2 * 10**9}])[-1]["id"]
            start = datetime.fromtimestamp(now - 3 * 3600, UTC)
            activity, calories = new_activity(data, user, len(changes["added"]), start, after, body.get("sport_type"))
            changes["added"].append(activity)
            changes["calories"][activity["id"]] = calories
            aspect, object_id = "create", activity["id"]
        case "update":
            aspect = "update"
            object_id, updates = _change_activity(request, user, body)
        case "delete":
            aspect, object_id = "delete", _served_id(request, user, body)
            _changes(request, user)["deleted"].add(object_id)
        case "deauthorize":
            cutoff = time.time() + 0.001  # tokens issued until now are refused
            state.refresh_revoked_before[(NAME, user)] = state.access_expired_before[(NAME, user)] = cutoff
            object_type, aspect, object_id, updates = "athlete", "update", data.athlete["id"], {"authorized": "false"}
        case _:
            raise web.HTTPBadRequest(text='{"error": "kind: create, update, delete or deauthorize"}',
                                     content_type="application/json")  # fmt: skip
    subscription = _subscription(state)
    event = {"aspect_type": aspect, "event_time": now, "object_id": object_id, "object_type": object_type,
             "owner_id": data.athlete["id"], "subscription_id": subscription["id"] if subscription else None,
             "updates": updates}  # fmt: skip
    status = None
    if subscription is not None and not revoked:
        status = await deliver(request, NAME, json.dumps(event).encode(), {})
    detail = _detail(request, user, object_id) if object_type == "activity" else None
    return {"event": event, "delivery_status": status, "activity": detail}


def create_apps() -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[fault_middleware(NAME, RATE_LIMIT)])
    api.router.add_get("/api/v3/athlete/activities", list_activities)
    api.router.add_get("/api/v3/activities/{id}", get_activity)
    api.router.add_get("/api/v3/athlete", get_athlete)
    api.router.add_post("/api/v3/push_subscriptions", create_subscription)
    api.router.add_get("/api/v3/push_subscriptions", list_subscriptions)
    api.router.add_delete("/api/v3/push_subscriptions/{id}", delete_subscription)
    auth = web.Application(middlewares=[fault_middleware(NAME)])
    auth.router.add_post("/oauth/token", oauth_token)
    auth.router.add_post("/api/v3/oauth/token", oauth_token)
    auth.router.add_get("/oauth/authorize", authorize_endpoint(OAUTH))
    auth.router.add_post("/oauth/deauthorize", deauthorize)
    return api, auth


def records(app: web.Application, user: str) -> dict[str, Any]:
    """Every record the simulator serves this user, as served: the athlete, the activity summaries
    (oldest first, with those `emit` added, changed or deleted) and, by activity id, the
    `calories` only the detail carries."""
    activities, calories = served(app, user)
    return {
        "athlete": user_data(app, user).athlete,
        "activities": activities,
        "calories": {str(a["id"]): calories[a["id"]] for a in activities},
    }


SIMULATOR = Simulator(name=NAME, create_apps=create_apps, records=records, emit=emit)
