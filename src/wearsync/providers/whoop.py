"""Whoop Developer API v2 client: workouts, and sleep, recovery and cycles as 24/7 data.

Each collection pages by `nextToken`, so one range is sequential. A sync therefore cuts its reach
(`WEARSYNC_WHOOP_HISTORY_DAYS` back from now) into sub-ranges of `WEARSYNC_WHOOP_RANGE_DAYS` and
pages the sub-ranges side by side (`WEARSYNC_WHOOP_PAGE_CONCURRENCY` at a time per data type),
newest first, each one sequentially with the largest page Whoop allows (25), writing each page
as it lands. Sub-ranges lie on a fixed grid (multiples of the range length since the Unix epoch,
so the reach is rounded down to the grid): a rerun of a task cuts the same sub-ranges.

Resuming (our choice): a page with more to come is marked done as
`<collection>@<sub-range start date>#<page index>`, and the page that completes a sub-range as
`<collection>@<sub-range start date>`. A rerun skips completed sub-ranges without a call; an
interrupted one is paged again from its start (the next page needs the previous page's token,
which is not kept), storing only the pages not marked done.

Whoop matches a record to a range when the two intersect, so a record spanning a sub-range
boundary is served in both: a run stores it once (records it has seen already are dropped; after a
rerun, progress may count such a record twice, though its row is not rewritten). Once our share of
the rate limit is used up, no new sub-range starts but the pages in flight land, so the calls they
cost are not wasted. Cost: at least one call per sub-range and collection (4 x 25 with the
defaults, a minute of Whoop's 100 per minute) even where there is no data.

Mapping choices: sport names we do not know become `other` with Whoop's name kept (HIIT and the
like map to `aerobics`: our list has no interval training); energy is
kJ / 4.184; a sleep's duration is its time in bed (end - start), deep sleep is slow-wave sleep;
a recovery is recorded at its `created_at` (the time Whoop scored it, after the night) and keyed
by its cycle id; a cycle is a day's activity on the local date of its start (cycles begin at sleep
onset, so usually the evening before the day it mostly covers), keyed by its id, with strain and
heart rates kept in `raw`. Records not (yet) scored carry no `score`: their measures are None.

Webhooks (`workout|sleep|recovery.updated|deleted`, `{"user_id", "id", "type", "trace_id"}`):
verified as Whoop signs them (base64 HMAC-SHA256 under our client secret of the
`X-WHOOP-Signature-Timestamp` header, milliseconds, followed by the raw body; a timestamp more
than WEARSYNC_WEBHOOK_MAX_AGE_S away from now is refused as a replay). A connection must carry
Whoop's numeric user id as its provider_user_id (the token response has none: ask
`GET /developer/v2/user/profile/basic`, see `user_id`). An update fetches the record
(`/activity/workout/{id}`, `/activity/sleep/{id}`) and upserts it; a delete removes our row.
A recovery event names either its sleep (a UUID) or its cycle (an integer): sources disagree
which one v2 sends, so both are read. The spec has no recovery-by-sleep route: for a sleep, its
`cycle_id` comes from `/activity/sleep/{id}`; then `/cycle/{cycle_id}/recovery`. Our recovery rows
are keyed by cycle id, so a deletion naming a cycle deletes that row, and one naming a sleep finds
it by the `sleep_id` in the recovery's raw JSON, or the `cycle_id` in our row of that sleep. Event types
we do not store (e.g. future ones) are acknowledged and left alone. A redelivery carries the same
`trace_id`, which makes it a duplicate; a later event about the same record does not.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wearsync.models import DataType, RateLimit
from wearsync.providers.core import Provider, SyncContext, Webhook, WebhookEvent, map_page, num
from wearsync.providers.errors import MalformedPayload, RateLimited, WebhookRejected
from wearsync.providers.http import HttpClient
from wearsync.providers.paging import each_concurrently, time_windows
from wearsync.records import DailyActivity, Record, Recovery, SleepSession, Workout
from wearsync.settings import ProviderSettings, RateLimits, Settings

log = structlog.get_logger(__name__)


class WhoopSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="WEARSYNC_WHOOP_")

    api_url: str = "https://api.prod.whoop.com"
    auth_url: str = "https://api.prod.whoop.com"
    authorize_url: str = "https://api.prod.whoop.com"
    rate_limits: RateLimits = (RateLimit(100, 60), RateLimit(10_000, 86400))
    # Whoop pages a range sequentially (next tokens), so a sync cuts its reach into sub-ranges
    # paged side by side.
    history_days: int = Field(730, ge=1, le=3650)
    range_days: int = Field(90, ge=1, le=365)
    page_concurrency: int = Field(4, ge=1, le=32)


Ctx = SyncContext[WhoopSettings]

PAGE_LIMIT = 25  # Whoop's maximum
KJ_PER_KCAL = 4.184
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Whoop's sport_name -> our sport. Names not listed become "other".
SPORTS: dict[str, str] = {
    "running": "running", "track-and-field": "track_running", "cycling": "cycling", "spin": "indoor_cycling",
    "mountain-biking": "mountain_biking", "walking": "walking", "dog-walking": "walking",
    "stroller-walking": "walking", "hiking/rucking": "hiking", "swimming": "swimming", "rowing": "rowing",
    "kayaking": "kayaking", "canoeing": "canoeing", "paddleboarding": "stand_up_paddling", "sailing": "sailing",
    "surfing": "surfing", "kite-boarding": "kitesurfing", "diving": "diving",
    "skiing": "alpine_skiing", "cross-country-skiing": "cross_country_skiing", "snowboarding": "snowboarding",
    "ice-skating": "ice_skating", "inline-skating": "inline_skating", "skateboarding": "skateboarding",
    "weightlifting": "strength_training", "powerlifting": "strength_training",
    "functional-fitness": "strength_training", "strength-trainer": "strength_training",
    "f45-training": "strength_training", "crossfit": "crossfit", "hiit": "aerobics", "box-fitness": "aerobics",
    "barre": "aerobics", "barre3": "aerobics", "yoga": "yoga", "hot-yoga": "yoga", "pilates": "pilates",
    "stretching": "stretching", "dance": "dance", "elliptical": "elliptical", "rock-climbing": "climbing",
    "climber": "climbing", "golf": "golf", "disc-golf": "golf", "tennis": "tennis", "badminton": "badminton",
    "squash": "squash", "padel": "padel", "table-tennis": "table_tennis", "soccer": "soccer",
    "basketball": "basketball", "volleyball": "volleyball", "handball": "handball", "baseball": "baseball",
    "football": "american_football", "american-football": "american_football", "rugby": "rugby",
    "ice-hockey": "hockey", "field-hockey": "hockey", "cricket": "cricket", "martial-arts": "martial_arts",
    "jiu-jitsu": "martial_arts", "kickboxing": "martial_arts", "wrestling": "martial_arts", "boxing": "boxing",
    "triathlon": "triathlon", "duathlon": "multisport", "horseback-riding": "horseback_riding",
    "meditation": "meditation",
}  # fmt: skip

_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


@dataclass(frozen=True)
class Collection:
    name: str  # in page keys
    path: str
    id_field: str  # what identifies a record (a recovery: its cycle)
    mapper: Callable[[Any], Record]


# ---- mapping --------------------------------------------------------------------------------


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return parsed.astimezone(UTC)


def _offset_minutes(value: str | None) -> int | None:
    """`-05:00` -> -300; `Z` -> 0."""
    if value is None:
        return None
    if value == "Z":
        return 0
    match = _OFFSET.match(value)
    if match is None:
        raise ValueError(f"unreadable timezone_offset {value!r}")
    sign, hours, minutes = match.groups()
    return (-1 if sign == "-" else 1) * (int(hours) * 60 + int(minutes))


def _seconds(millis: Any) -> float | None:
    return None if millis is None else float(millis) / 1000


def _kcal(kilojoule: Any) -> float | None:
    return None if kilojoule is None else float(kilojoule) / KJ_PER_KCAL


def _score(record: dict[str, Any]) -> dict[str, Any]:
    """The score, or {} where Whoop has none (PENDING_SCORE, UNSCORABLE)."""
    score = record.get("score")
    return score if isinstance(score, dict) else {}


def map_workout(w: dict[str, Any]) -> Workout:
    start, end = _time(w["start"]), _time(w["end"])
    sport_name = str(w["sport_name"])
    score = _score(w)
    return Workout(
        provider_record_id=str(w["id"]),
        sport=SPORTS.get(sport_name, "other"),
        provider_sport=sport_name,
        start_time=start,
        end_time=end,
        raw=w,
        utc_offset_minutes=_offset_minutes(w.get("timezone_offset")),
        duration_s=(end - start).total_seconds(),
        distance_m=num(score.get("distance_meter")),
        energy_kcal=_kcal(score.get("kilojoule")),
        avg_hr=num(score.get("average_heart_rate")),
        max_hr=num(score.get("max_heart_rate")),
        ascent_m=num(score.get("altitude_gain_meter")),
    )


def map_sleep(s: dict[str, Any]) -> SleepSession:
    start, end = _time(s["start"]), _time(s["end"])
    score = _score(s)
    stages = score.get("stage_summary") or {}
    return SleepSession(
        provider_record_id=str(s["id"]),
        start_time=start,
        end_time=end,
        raw=s,
        utc_offset_minutes=_offset_minutes(s.get("timezone_offset")),
        is_nap=bool(s.get("nap", False)),
        duration_s=(end - start).total_seconds(),
        deep_s=_seconds(stages.get("total_slow_wave_sleep_time_milli")),
        light_s=_seconds(stages.get("total_light_sleep_time_milli")),
        rem_s=_seconds(stages.get("total_rem_sleep_time_milli")),
        awake_s=_seconds(stages.get("total_awake_time_milli")),
        score=num(score.get("sleep_performance_percentage")),
        respiratory_rate=num(score.get("respiratory_rate")),
    )


def map_recovery(r: dict[str, Any]) -> Recovery:
    score = _score(r)
    return Recovery(
        provider_record_id=str(r["cycle_id"]),
        recorded_at=_time(r["created_at"]),
        raw=r,
        score=num(score.get("recovery_score")),
        resting_hr=num(score.get("resting_heart_rate")),
        hrv_rmssd_ms=num(score.get("hrv_rmssd_milli")),
        spo2_percent=num(score.get("spo2_percentage")),
        skin_temp_c=num(score.get("skin_temp_celsius")),
    )


def map_cycle(c: dict[str, Any]) -> DailyActivity:
    start = _time(c["start"])
    offset = _offset_minutes(c.get("timezone_offset")) or 0
    day: date = (start + timedelta(minutes=offset)).date()
    return DailyActivity(
        provider_record_id=str(c["id"]),
        day=day,
        raw=c,
        energy_kcal=_kcal(_score(c).get("kilojoule")),
    )


WORKOUTS = Collection("workout", "/developer/v2/activity/workout", "id", map_workout)
SLEEP = Collection("sleep", "/developer/v2/activity/sleep", "id", map_sleep)
RECOVERY = Collection("recovery", "/developer/v2/recovery", "cycle_id", map_recovery)
CYCLES = Collection("cycle", "/developer/v2/cycle", "id", map_cycle)


# ---- sync -----------------------------------------------------------------------------------


LATE_SCORES = timedelta(days=2)


def sub_ranges(now: datetime, history_days: int, range_days: int) -> list[tuple[datetime, datetime]]:
    """[now - history, now) cut on a grid of `range_days` since the epoch, newest first; the
    first starts on the grid line at or before the reach, the last ends now."""
    span = timedelta(days=range_days)
    first = EPOCH + span * ((now - timedelta(days=history_days) - EPOCH) // span)
    return time_windows(first, now, span)[::-1]


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def range_key(collection: Collection, start: datetime) -> str:
    """The key of the page that completes a sub-range; earlier pages add `#<index>`."""
    return f"{collection.name}@{start.date().isoformat()}"


def read_page(url: str, body: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(records, next token or None on the last page) of one answer, or MalformedPayload."""
    if not isinstance(body, dict) or not isinstance(body.get("records", []), list):
        raise MalformedPayload(f"GET {url} returned no record list: {str(body)[:200]}")
    records: list[Any] = body.get("records") or []
    if not all(isinstance(r, dict) for r in records):
        raise MalformedPayload(f"GET {url} returned records that are not objects: {str(records)[:200]}")
    token = body.get("next_token")
    if token is not None and not isinstance(token, str):
        raise MalformedPayload(f"GET {url} returned a next_token that is not a string: {token!r}")
    return records, token or None


async def sync_range(ctx: Ctx, collection: Collection, window: tuple[datetime, datetime], seen: set[str]) -> None:
    """Page one sub-range of one collection to its end, storing the pages not stored before."""
    start, end = window
    url = f"{ctx.config.api_url}{collection.path}"
    done_key = range_key(collection, start)
    query: dict[str, str | int] = {"start": rfc3339(start), "end": rfc3339(end), "limit": PAGE_LIMIT}
    tokens: set[str] = set()
    index = 0
    while True:
        records, token = read_page(url, await ctx.get_json(url, params=query))
        page_key = done_key if token is None else f"{done_key}#{index}"
        if page_key not in ctx.done:
            # Drop what another sub-range of this task served already (records spanning a boundary).
            ids = [None if r.get(collection.id_field) is None else str(r[collection.id_field]) for r in records]
            fresh = [r for r, i in zip(records, ids, strict=True) if i is None or i not in seen]
            seen.update(i for i in ids if i is not None)
            await ctx.save_page(map_page(fresh, collection.mapper), page_key, len(records))
        if token is None:
            return
        if token in tokens:
            raise MalformedPayload(f"GET {url} returned the same next_token twice: {token!r}")
        tokens.add(token)
        query["nextToken"] = token
        index += 1


async def sync_collections(ctx: Ctx, collections: list[Collection]) -> None:
    config, now = ctx.config, datetime.now(UTC)
    windows = sub_ranges(now, config.history_days, config.range_days)
    if ctx.cursor:  # continue from the last sync, with two days' grace for records scored late
        since = datetime.fromtimestamp(ctx.cursor["to_ms"] / 1000, UTC) - LATE_SCORES
        if now - since < timedelta(days=config.range_days):
            windows = [(since, now)]  # one range: a page per collection for an unchanged account
    todo = [(c, w) for w in windows for c in collections if range_key(c, w[0]) not in ctx.done]
    seen: dict[str, set[str]] = {c.name: set() for c in collections}
    limited: list[RateLimited] = []

    async def run(item: tuple[Collection, tuple[datetime, datetime]]) -> None:
        # Once the rate limit is used up, start nothing new but let the pages in flight land:
        # cancelling them would throw away answers that cost a call each.
        if limited:
            return
        collection, window = item
        try:
            await sync_range(ctx, collection, window, seen[collection.name])
        except RateLimited as e:
            limited.append(e)

    async with aclosing(
        each_concurrently(todo, run, concurrency=config.page_concurrency, max_fetches=ctx.fetch_allowance())
    ) as runs:
        async for _ in runs:
            pass
    if limited:
        raise max(limited, key=lambda e: e.retry_after_s)
    ctx.advance_cursor({"to_ms": int(now.timestamp() * 1000)})


async def sync_workouts(ctx: Ctx) -> None:
    await sync_collections(ctx, [WORKOUTS])


async def sync_247(ctx: Ctx) -> None:
    await sync_collections(ctx, [SLEEP, RECOVERY, CYCLES])


# ---- webhook: update and delete notifications ------------------------------------------------

SIGNATURE, TIMESTAMP = "X-WHOOP-Signature", "X-WHOOP-Signature-Timestamp"
_DETAIL = {"workout": (WORKOUTS, "workouts"), "sleep": (SLEEP, "sleep")}  # kind -> (collection, record kind)
_EVENT_TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$")  # <object>.<action>


async def user_id(http: HttpClient, config: WhoopSettings, access_token: str) -> str:
    """Whoop's numeric user id of a token's user: what a connection must store as its
    provider_user_id for webhooks to find it (the token response carries none)."""
    url = f"{config.api_url}/developer/v2/user/profile/basic"
    body = await http.get_json(url, headers={"Authorization": f"Bearer {access_token}"}, provider="whoop")
    if not isinstance(body, dict) or not isinstance(body.get("user_id"), int):
        raise MalformedPayload(f"GET {url} returned no user_id: {str(body)[:200]}")
    return str(body["user_id"])


async def revoke(ctx: Ctx) -> None:
    """Withdraw our access (`DELETE /developer/v2/user/access`, 204): the tokens stop working and
    Whoop sends no more webhooks for the user."""
    await ctx.request_json("DELETE", f"{ctx.config.api_url}/developer/v2/user/access")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, timestamp + body)), as Whoop signs a delivery."""
    return base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()).decode()


def verify_webhook(headers: Mapping[str, str], body: bytes, config: WhoopSettings, settings: Settings) -> None:
    """The signature under our client secret, compared in constant time, and a timestamp no
    further than WEARSYNC_WEBHOOK_MAX_AGE_S from now (either way), so a captured delivery cannot
    be replayed later."""
    secret = config.client_secret
    if not secret:
        raise WebhookRejected("WEARSYNC_WHOOP_CLIENT_SECRET is not set, so no notification can be trusted")
    given, timestamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not given or not timestamp:
        raise WebhookRejected(f"missing {SIGNATURE} or {TIMESTAMP}")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 15:
        raise WebhookRejected(f"{TIMESTAMP} is not milliseconds since the epoch")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        raise WebhookRejected(f"bad {SIGNATURE}")
    age_s = time.time() - int(timestamp) / 1000
    if abs(age_s) > settings.webhook_max_age_s:
        raise WebhookRejected(f"{TIMESTAMP} is {age_s:.0f}s away from now (at most {settings.webhook_max_age_s}s)")


def parse_webhook(payload: Any) -> list[WebhookEvent]:
    """One notification is one event, keyed by type, record id and trace id (a redelivery
    carries the same trace id; without one, the same body is the same event)."""
    if not isinstance(payload, dict):
        raise MalformedPayload("a Whoop notification is a JSON object")
    user_id, record_id, kind = payload.get("user_id"), payload.get("id"), payload.get("type")
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise MalformedPayload(f"a Whoop notification needs a numeric user_id, not {user_id!r}")
    if not isinstance(record_id, str | int) or isinstance(record_id, bool) or str(record_id) == "":
        raise MalformedPayload(f"a Whoop notification needs the record id, not {record_id!r}")
    if not isinstance(kind, str) or not _EVENT_TYPE.match(kind):
        raise MalformedPayload(f"a Whoop notification needs a type like workout.updated, not {kind!r}")
    trace = payload.get("trace_id")
    if not trace:
        trace = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return [WebhookEvent(kind, str(user_id), f"{kind}:{record_id}:{trace}", payload)]


async def _fetch(ctx: Ctx, path: str) -> dict[str, Any]:
    url = f"{ctx.config.api_url}{path}"
    body: dict[str, Any] = await ctx.get_json(url, expect=(dict, "record"))
    return body


async def _delete(ctx: Ctx, kind: str, record_id: str) -> None:
    await ctx.delete_record(kind, record_id)


async def _delete_recovery(ctx: Ctx, sleep_id: str) -> None:
    """Our recovery rows are keyed by cycle: find the row by its sleep, as the recovery's raw JSON
    names it or as our row of that sleep does."""
    await ctx.delete_record("recovery", sleep_id, raw_field="sleep_id")
    sleep = await ctx.stored_raw("sleep", sleep_id)
    if sleep is not None and sleep.get("cycle_id") is not None:
        await ctx.delete_record("recovery", str(sleep["cycle_id"]))


def recovery_names_cycle(record_id: Any) -> bool:
    """Whether a recovery event's id is its cycle's (an integer) rather than its sleep's (a UUID)."""
    if isinstance(record_id, int):
        return True
    text = str(record_id)
    if text.isascii() and text.isdigit():
        return True
    try:
        uuid.UUID(text)
    except ValueError:
        raise MalformedPayload(f"a recovery event names a sleep (UUID) or a cycle (integer), not {text!r}") from None
    return False


async def _update_recovery(ctx: Ctx, record_id: Any) -> None:
    cycle_id = str(record_id)
    if not recovery_names_cycle(record_id):
        sleep = await _fetch(ctx, f"{SLEEP.path}/{quote(cycle_id, safe='')}")
        if sleep.get("cycle_id") is None:
            raise MalformedPayload(f"sleep {record_id} names no cycle_id, so its recovery cannot be found")
        cycle_id = str(sleep["cycle_id"])
    recovery = await _fetch(ctx, f"{CYCLES.path}/{quote(cycle_id, safe='')}/recovery")
    await ctx.save_page(map_page([recovery], RECOVERY.mapper))


async def process_webhook(ctx: Ctx, event: WebhookEvent) -> None:
    """Fetch and upsert the record an update names, or delete our row of a deleted one."""
    record_id = str(event.payload["id"])
    in_path = quote(record_id, safe="")
    kind, _, action = event.kind.partition(".")
    if action == "deleted" and kind == "recovery":
        if recovery_names_cycle(event.payload["id"]):
            await _delete(ctx, "recovery", record_id)
        else:
            await _delete_recovery(ctx, record_id)
    elif action == "deleted" and kind in _DETAIL:
        await _delete(ctx, _DETAIL[kind][1], record_id)
    elif action == "updated" and kind in _DETAIL:
        collection = _DETAIL[kind][0]
        record = await _fetch(ctx, f"{collection.path}/{in_path}")
        await ctx.save_page(map_page([record], collection.mapper))
    elif action == "updated" and kind == "recovery":
        await _update_recovery(ctx, event.payload["id"])
    else:
        log.info("whoop webhook event not stored", kind=event.kind, record_id=record_id)


PROVIDER = Provider(
    name="whoop",
    supports=frozenset({DataType.WORKOUTS, DataType.DATA_247}),
    delivery="pull",
    config=WhoopSettings,
    token_path="/oauth/oauth2/token",
    client_auth="body",
    refresh_params={"scope": "offline"},  # without it Whoop issues no new refresh token
    sync={DataType.WORKOUTS: sync_workouts, DataType.DATA_247: sync_247},
    webhook=Webhook(verify=verify_webhook, parse=parse_webhook, process=process_webhook),
    user_id=user_id,
    authorize_path="/oauth/oauth2/auth",
    # `offline` for a refresh token, `read:profile` for the user id webhooks name the user by.
    scopes=("offline", "read:profile", "read:workout", "read:sleep", "read:recovery", "read:cycles"),
    revoke=revoke,
)
