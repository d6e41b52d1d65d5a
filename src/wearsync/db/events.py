"""The event log (migration 0021), also the outbox of outgoing webhooks.

An event is written by the very statement that makes the change it reports: the change runs as a
data-modifying CTE (`changed`) and the events are selected from the rows it returns, so a commit
stores both or neither, in one round trip. `reporting` builds such a statement; the SQL that makes
each kind of event from its change's rows is here, and the modules making the changes (records,
tasks, connections, garmin_backfills) wrap their own statements in it.
"""

from typing import Final

# Every event type, with what its `data` holds besides `user_id` (see api/events.py for schemas).
SYNC_TYPES: Final = ("sync.succeeded", "sync.partial", "sync.failed")
DATA_TYPES: Final = ("data.created", "data.updated", "data.deleted")
CONNECTION_TYPES: Final = ("connection.created", "connection.deactivated")
ENDPOINT_TYPES: Final = ("endpoint.disabled", "endpoint.test")
EVENT_TYPES: Final = (*SYNC_TYPES, *DATA_TYPES, *CONNECTION_TYPES, "backfill.completed", *ENDPOINT_TYPES)


def reporting(change: str, events: str, answer: str = "SELECT count(*) FROM changed", before: str = "") -> str:
    """One statement: `change` (with RETURNING) as the CTE `changed`, and the events `events`
    selects, usually from `changed` (application_id, user_id: the API's id, type, payload), written
    with it, each with a delivery to every enabled endpoint of its application that takes its type;
    `answer` is what the statement returns. `before`: CTEs to put first, such as the rows' state
    before the change (every part of the statement sees the database as it was)."""
    first = f"{before}, " if before else ""
    return (
        f"WITH {first}changed AS ({change}),"
        f" reported AS (INSERT INTO events (application_id, user_id, type, payload) {events}"
        f" RETURNING id, public_id, application_id, user_id, type), {_FAN_OUT} {answer}"
    )


# An event's deliveries: one per enabled endpoint of its application that takes its type (a test
# event goes only to the endpoint it tests).
_FAN_OUT = """fanned AS (
    INSERT INTO event_deliveries (event_id, endpoint_id, user_id)
    SELECT r.id, p.id, r.user_id FROM reported r JOIN webhook_endpoints p ON p.application_id = r.application_id
    WHERE p.enabled AND r.type <> 'endpoint.test' AND (p.event_types IS NULL OR r.type = ANY(p.event_types)))"""


# ---- sync tasks: `changed` has the task's columns, `was` its status before ----------------------

_TASK_DATA = """jsonb_build_object(
        'task_id', c.id, 'provider', c.provider, 'status', c.status, 'error', c.error,
        'counts', (SELECT coalesce(jsonb_object_agg(k, n), '{}') FROM (
            SELECT r.key AS k, sum(r.value::bigint) AS n
            FROM jsonb_each(c.progress) p, jsonb_each_text(coalesce(p.value -> 'records', '{}')) r
            GROUP BY r.key) s),
        'data_types', (SELECT coalesce(jsonb_object_agg(p.key, jsonb_build_object(
            'status', p.value -> 'status', 'records', coalesce(p.value -> 'records', '{}'),
            'error', p.value -> 'error')), '{}') FROM jsonb_each(c.progress) p))"""

# RETURNING of a task's final update, with `was` from a `FROM (...) o` locking its row first.
TASK_ENDED_RETURNING = (
    "RETURNING t.id, t.application_id, t.user_id, t.provider, t.status::text AS status, t.error, t.progress, o.was"
)
# A task that became final (not one final already): sync.succeeded, sync.partial or sync.failed.
TASK_ENDED = f"""
    SELECT c.application_id, u.public_id, 'sync.' || c.status, {_TASK_DATA}
    FROM changed c JOIN users u ON u.id = c.user_id WHERE c.was IN ('queued', 'running')"""
# A Garmin task ended by its deliveries: its sync.* event, then backfill.completed.
BACKFILL_ENDED = f"""{TASK_ENDED}
    UNION ALL
    SELECT c.application_id, u.public_id, 'backfill.completed', jsonb_build_object(
        'task_id', c.id, 'provider', c.provider, 'status', c.status, 'error', c.error,
        'windows_requested', (SELECT count(*) FROM garmin_backfills b WHERE b.task_id = c.id),
        'windows_delivered', (SELECT count(*) FROM garmin_backfills b
                              WHERE b.task_id = c.id AND b.delivered_records > 0))
    FROM changed c JOIN users u ON u.id = c.user_id WHERE c.was IN ('queued', 'running')"""


# ---- connections: `changed` has (user_id, application_id, provider, inactive_reason, was_active) --

CONNECTION_DEACTIVATED = """
    SELECT c.application_id, u.public_id, 'connection.deactivated',
           jsonb_build_object('provider', c.provider, 'reason', c.inactive_reason)
    FROM changed c JOIN users u ON u.id = c.user_id WHERE c.was_active"""
# `before` holds the connection's `active` before it was stored: created unless it was active.
CONNECTION_CREATED = """
    SELECT c.application_id, u.public_id, 'connection.created',
           jsonb_build_object('provider', c.provider, 'provider_user_id', c.provider_user_id, 'scopes', c.scopes)
    FROM changed c JOIN users u ON u.id = c.user_id WHERE NOT coalesce((SELECT active FROM before), false)"""


# ---- records: `changed` has (id, provider_record_id, created) or, samples, (sample_type, recorded_at, created);
# $1 is the user's key, $2 the provider, `task` the parameter holding the task id (or NULL) --------


def records_written(kind: str, task: str) -> str:
    """data.created for the rows a page inserted, data.updated for those it changed, one event each
    per page and kind, naming the rows (id, provider_record_id)."""
    return f"""
    SELECT u.application_id, u.public_id, CASE WHEN c.created THEN 'data.created' ELSE 'data.updated' END,
           jsonb_build_object('provider', $2::text, 'kind', '{kind}', 'task_id', {task}::uuid,
               'records', jsonb_agg(jsonb_build_object('id', c.id, 'provider_record_id', c.provider_record_id)
                                    ORDER BY c.id))
    FROM changed c, users u WHERE u.id = $1 GROUP BY u.application_id, u.public_id, c.created"""


def samples_written(task: str) -> str:
    """data.created / data.updated for the samples a page wrote: per sample type, the range of
    instants written and how many (not one entry per sample)."""
    return f"""
    SELECT u.application_id, u.public_id, CASE WHEN s.created THEN 'data.created' ELSE 'data.updated' END,
           jsonb_build_object('provider', $2::text, 'kind', 'samples', 'task_id', {task}::uuid,
               'ranges', jsonb_agg(jsonb_build_object('sample_type', s.sample_type, 'start', s.start,
                                                      'end', s.end, 'count', s.n) ORDER BY s.sample_type))
    FROM (SELECT c.created, c.sample_type, min(c.recorded_at) AS start, max(c.recorded_at) AS end, count(*) AS n
          FROM changed c GROUP BY c.created, c.sample_type) s, users u
    WHERE u.id = $1 GROUP BY u.application_id, u.public_id, s.created"""


def records_deleted(kind: str) -> str:
    """data.deleted for the rows a statement deleted (`changed`: id, provider_record_id)."""
    return f"""
    SELECT u.application_id, u.public_id, 'data.deleted',
           jsonb_build_object('provider', $2::text, 'kind', '{kind}', 'task_id', NULL,
               'records', jsonb_agg(jsonb_build_object('id', c.id, 'provider_record_id', c.provider_record_id)
                                    ORDER BY c.id))
    FROM changed c, users u WHERE u.id = $1 GROUP BY u.application_id, u.public_id"""
