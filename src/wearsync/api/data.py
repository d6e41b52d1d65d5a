"""The read API: a user's stored workouts, sleep, recovery, days and samples, page by page.

Every list answers `{"data": [...], "next_cursor": ...}`, ordered by time (a workout's or sleep's
start, a recovery's or sample's instant, a day) then by row id (samples: by provider). A page
starts strictly after the position its cursor names, so paging neither repeats nor skips rows
that share a time; `next_cursor` is null on the last page. The cursor is opaque to clients:
urlsafe base64 of JSON naming the list and the last row's (time, id); anything else is a 422.

With `order=changes` a list is its change feed (db/changes.py): rows in the order their writes
committed, the cursor naming the last one's (transaction, change number). A feed has no last page:
`next_cursor` is always given (the position reached, or the one asked for when nothing is new),
and polled with, it brings what was stored or changed since.
"""

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from aiohttp import web

from wearsync.api.common import DEPS, ApiError, json_response, validate
from wearsync.api.models import ListQuery, SamplesQuery
from wearsync.api.views import own_user
from wearsync.db import changes, reads
from wearsync.settings import DATA_SOURCES

Query = TypeVar("Query", bound=ListQuery)
Handler = Callable[[web.Request], Awaitable[web.Response]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BAD_CURSOR = "Invalid query parameter 'cursor': not a cursor of this list; pass next_cursor as it came"


def _time_json(value: datetime | date) -> int | str:
    """Instants as exact microseconds since the epoch, days as ISO dates."""
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(microseconds=1)
    return value.isoformat()


def _encode(parts: list[Any]) -> str:
    text = json.dumps(parts, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def encode_cursor(listing: str, time: datetime | date, tiebreak: int | str) -> str:
    return _encode([listing, _time_json(time), tiebreak])


def _decode(listing: str, cursor: str) -> tuple[Any, Any]:
    """The (time, tiebreak) JSON of a cursor this list gave out; ValueError for anything else."""
    try:
        parsed = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise ValueError("not a cursor") from None
    if not isinstance(parsed, list) or len(parsed) != 3:
        raise ValueError("not a cursor")
    name, time, tiebreak = parsed
    if name != listing:
        raise ValueError("a cursor of another list")
    return time, tiebreak


def _instant(value: Any) -> datetime:
    if type(value) is not int:
        raise ValueError("not an instant")
    return EPOCH + timedelta(microseconds=value)  # OverflowError beyond year 9999


def record_position(listing: str, kind: reads.Kind, cursor: str | None) -> reads.RecordPosition | None:
    if cursor is None:
        return None
    try:
        time, row_id = _decode(listing, cursor)
        at: datetime | date = date.fromisoformat(time) if kind.is_day else _instant(time)
        if type(row_id) is not int or not 0 < row_id < 2**63:
            raise ValueError("not a row id")
    except (ValueError, TypeError, OverflowError):
        raise ApiError(422, BAD_CURSOR) from None
    return at, row_id


def change_position(listing: str, cursor: str | None) -> changes.ChangePosition:
    """The feed position a change cursor of this list names; the feed's start without one."""
    if cursor is None:
        return changes.START
    try:
        xid, seq = _decode(f"{listing}:changes", cursor)
    except ValueError:
        raise ApiError(422, BAD_CURSOR) from None
    if not all(type(n) is int and 0 <= n < 2**63 for n in (xid, seq)):
        raise ApiError(422, BAD_CURSOR)
    return xid, seq


def encode_change_cursor(listing: str, position: changes.ChangePosition) -> str:
    return _encode([f"{listing}:changes", *position])


def uuid_position(listing: str, cursor: str | None) -> tuple[datetime, UUID] | None:
    """The (instant, id) a cursor of this list names (lists of users and tasks), or 422."""
    if cursor is None:
        return None
    try:
        time, row_id = _decode(listing, cursor)
        return _instant(time), UUID(row_id)
    except (ValueError, TypeError, OverflowError, AttributeError):
        raise ApiError(422, BAD_CURSOR) from None


def sample_position(cursor: str | None) -> reads.SamplePosition | None:
    if cursor is None:
        return None
    try:
        time, provider = _decode("samples", cursor)
        if provider not in DATA_SOURCES:
            raise ValueError("not a provider")
        return _instant(time), provider
    except (ValueError, TypeError, OverflowError):
        raise ApiError(422, BAD_CURSOR) from None


def parse(model: type[Query], request: web.Request) -> Query:
    """The path and query, validated; a detail names any parameter that is wrong or unknown."""
    locations = {name: "query" for name in (*model.model_fields, *request.query)} | {"user_id": "path"}
    return validate(model, {**request.query, **request.match_info}, locations)


def window(query: ListQuery, user_id: UUID) -> reads.Window:
    """The query's window of the user with this key."""

    def at(unix_s: int | None) -> datetime | None:
        return None if unix_s is None else datetime.fromtimestamp(unix_s, UTC)

    return reads.Window(user_id, at(query.start), at(query.end), query.provider, query.include_raw)


def _shown(rows: Sequence[asyncpg.Record], query: ListQuery, hidden: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows as the list shows them: raw only on request, no column of `hidden`."""
    hidden += () if query.include_raw else ("raw",)
    return [{k: v for k, v in row.items() if k not in hidden} for row in rows]


def page(
    rows: Sequence[asyncpg.Record], query: ListQuery, next_cursor: Callable[[asyncpg.Record], str]
) -> web.Response:
    """The first `limit` rows (one more was read to learn whether another page exists)."""
    shown = rows[: query.limit]
    more = len(rows) > query.limit
    return json_response({"data": _shown(shown, query), "next_cursor": next_cursor(shown[-1]) if more else None})


def change_page(
    rows: Sequence[asyncpg.Record], query: ListQuery, listing: str, after: changes.ChangePosition
) -> web.Response:
    """A page of a change feed: its cursor is the last row's position, or `after` on an empty page."""
    position = (rows[-1]["feed_xid"], rows[-1]["feed_seq"]) if rows else after
    data = _shown(rows, query, changes.POSITION_COLUMNS)
    return json_response({"data": data, "next_cursor": encode_change_cursor(listing, position)})


def records(listing: str, kind: reads.Kind) -> Handler:
    """The handler of one kind's list: `GET /api/v1/users/{user_id}/<listing>`."""

    async def handler(request: web.Request) -> web.Response:
        query = parse(ListQuery, request)
        db = request.app[DEPS].db
        if query.order == "changes":
            position = change_position(listing, query.cursor)
            user = await own_user(request, query.user_id)
            rows = await changes.read_records(db, kind, window(query, user["id"]), position, query.limit)
            return change_page(rows, query, listing, position)
        after = record_position(listing, kind, query.cursor)
        user = await own_user(request, query.user_id)
        rows = await reads.read_records(db, kind, window(query, user["id"]), after, query.limit + 1)
        return page(rows, query, lambda last: encode_cursor(listing, last[kind.time], last["id"]))

    return handler


workouts = records("workouts", reads.WORKOUTS)
sleep = records("sleep", reads.SLEEP)
recovery = records("recovery", reads.RECOVERY)
daily = records("daily", reads.DAILY)


async def samples(request: web.Request) -> web.Response:
    """`GET /api/v1/users/{user_id}/samples?type=heart_rate`: one time series, every provider's
    samples merged in time order (a provider's at the same instant: by provider name)."""
    query = parse(SamplesQuery, request)
    db = request.app[DEPS].db
    if query.order == "changes":
        position = change_position("samples", query.cursor)
        user = await own_user(request, query.user_id)
        rows = await changes.read_samples(db, query.type, window(query, user["id"]), position, query.limit)
        return change_page(rows, query, "samples", position)
    after = sample_position(query.cursor)
    user = await own_user(request, query.user_id)
    rows = await reads.read_samples(db, query.type, window(query, user["id"]), after, query.limit + 1)
    return page(rows, query, lambda last: encode_cursor("samples", last["recorded_at"], last["provider"]))
