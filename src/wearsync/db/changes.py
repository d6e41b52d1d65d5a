"""The change feed: a user's rows in the order their writes committed, for `order=changes`.

Every data row names the transaction that last wrote it (`change_xid`, PostgreSQL's 64-bit xid8)
and a number no other write has (`change_seq`), set on insert and on update (migration 0022). A
page holds the rows after a position (xid, seq) in that order, and only rows of transactions older
than the oldest one still running (`pg_snapshot_xmin` of the statement's own snapshot): those have
all ended, so the statement sees every row they wrote, and a transaction still running, however
early it took its xid, gets a place after every position given out so far. A transaction that
commits late holds the feed back until it ends; it is never skipped. A row written again moves to
its new place, later in the feed. Clock time plays no part.

Each page is one range scan of the (user_id, change_xid, change_seq) index (samples: with the
type after the user), the time window and provider filters applying to the rows it reads. The
window is written so that a plan made for any window (a prepared statement's generic plan) cannot
take the time index instead, which would read and sort the user's whole window for every page.
"""

import asyncpg

from wearsync.db import Executor
from wearsync.db.reads import DAILY, RECOVERY, SLEEP, WORKOUTS, Kind, Window, bounds

# A feed's position: the last row's (change_xid, change_seq); (0, 0) is before every row.
ChangePosition = tuple[int, int]
START: ChangePosition = (0, 0)

# xid8 has no cast from bigint; its text form is the same number. Every xid8 fits in a bigint.
_AFTER = "(change_xid, change_seq) > ({xid}::bigint::text::xid8, {seq}::bigint)"
_SETTLED = "change_xid < pg_snapshot_xmin(pg_current_snapshot())"
# The position each row leaves the feed at: not named change_xid, which ORDER BY would take for
# this output column instead of the indexed one.
POSITION_COLUMNS = ("feed_xid", "feed_seq")
_POSITION = "change_xid::text::bigint AS feed_xid, change_seq AS feed_seq"


def _records_sql(kind: Kind) -> str:
    pg_type = "date" if kind.is_day else "timestamptz"
    return f"""
        SELECT {kind.columns}, CASE WHEN $6 THEN raw END AS raw, {_POSITION}
        FROM {kind.table}
        WHERE user_id = $1
          AND {_AFTER.format(xid="$2", seq="$3")}
          AND {_SETTLED}
          AND ($4::{pg_type} IS NULL OR {kind.time} >= $4)
          AND ($5::{pg_type} IS NULL OR {kind.time} < $5)
          AND ($7::text IS NULL OR provider = $7)
        ORDER BY change_xid, change_seq
        LIMIT $8
    """


RECORDS_SQL = {kind: _records_sql(kind) for kind in (WORKOUTS, SLEEP, RECOVERY, DAILY)}

SAMPLES_SQL = f"""
    SELECT provider, sample_type AS type, recorded_at, value, CASE WHEN $7 THEN raw END AS raw, {_POSITION}
    FROM samples
    WHERE user_id = $1 AND sample_type = $2
      AND {_AFTER.format(xid="$3", seq="$4")}
      AND {_SETTLED}
      AND ($5::timestamptz IS NULL OR recorded_at >= $5)
      AND ($6::timestamptz IS NULL OR recorded_at < $6)
      AND ($8::text IS NULL OR provider = $8)
    ORDER BY change_xid, change_seq
    LIMIT $9
"""


async def read_records(
    db: Executor, kind: Kind, window: Window, after: ChangePosition, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` rows of the kind written after the position, in the order they committed."""
    start, end = bounds(kind, window)
    rows: list[asyncpg.Record] = await db.fetch(
        RECORDS_SQL[kind], window.user_id, *after, start, end, window.include_raw, window.provider, limit
    )
    return rows


async def read_samples(
    db: Executor, sample_type: str, window: Window, after: ChangePosition, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` samples of the type written after the position, in the order they committed."""
    rows: list[asyncpg.Record] = await db.fetch(
        SAMPLES_SQL,
        window.user_id,
        sample_type,
        *after,
        window.start,
        window.end,
        window.include_raw,
        window.provider,
        limit,
    )
    return rows
