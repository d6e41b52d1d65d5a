"""Syncs whose data comes later by webhook (a Provider with `deliveries`: Garmin's backfills).

Such a sync only asks for windows of data (SyncContext.expect_delivery records each request).
Once its requests are done, the task stays running, each data type that asked saying it awaits
delivery, until every window has had a delivery (SyncContext.delivered), then it succeeds; or
until the provider's wait has passed, then each type with a window nothing came into fails,
naming those windows, and the task ends partial. Tasks are settled after each delivery and every
minute (the worker's cron).
"""

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from wearsync.db import Executor, garmin_backfills, tasks
from wearsync.models import TaskStatus
from wearsync.providers.core import Deliveries, Provider
from wearsync.settings import ProviderSettings

log = structlog.get_logger(__name__)


def _deliveries(provider: Provider[Any]) -> Deliveries[Any]:
    assert provider.deliveries is not None, f"{provider.name}'s syncs await no deliveries"
    return provider.deliveries


async def await_deliveries(
    db: Executor, provider: Provider[Any], config: ProviderSettings, task_id: UUID, user_id: UUID
) -> None:
    """The task asked for its windows: it stays running until they are delivered or its wait
    has passed (`settle_tasks`)."""
    task = await tasks.get_task(db, task_id)
    if task is None:
        return
    asked = [t for t in task["data_types"] if task["progress"].get(t, {}).get("status") != "failed"]
    await garmin_backfills.await_deliveries(db, task_id, _deliveries(provider).wait_s(config), asked)
    await settle_tasks(db, provider, config, user_id=user_id)


def _window(w: dict[str, Any]) -> str:
    start, end = (datetime.fromtimestamp(w[k], UTC).strftime("%Y-%m-%dT%H:%MZ") for k in ("start", "end"))
    return f"{w['type']} {start}..{end}"


def _outcome(
    deliveries: Deliveries[Any], task: asyncpg.Record, missing: list[dict[str, Any]], wait_s: float
) -> tuple[TaskStatus, dict[str, bool], str | None, dict[str, Any]]:
    """(status, result, error, progress) of a task whose wait ended: a data type succeeded if its
    requests did and every window of it had a delivery; otherwise the task is partial, naming
    the windows nothing came into."""
    progress, result, errors = dict(task["progress"]), {}, []
    for data_type in task["data_types"]:
        p = dict(progress.get(data_type, {}))
        windows = [_window(w) for w in missing if deliveries.data_type_of(w["type"]) == data_type]
        if p.get("status") == "failed":
            errors.append(f"{data_type}: {p.get('error')}")
        elif windows:
            p |= {
                "status": "failed",
                "error": deliveries.nothing_delivered.format(wait=wait_s, windows=", ".join(windows)),
            }
            errors.append(f"{data_type}: {p['error']}")
        else:
            p["status"] = "succeeded"
        result[data_type] = p["status"] == "succeeded"
        progress[data_type] = p
    status = TaskStatus.SUCCEEDED if all(result.values()) else TaskStatus.PARTIAL
    return status, result, "; ".join(errors) or None, progress


async def settle_tasks(
    db: Executor, provider: Provider[Any], config: ProviderSettings, user_id: UUID | None = None
) -> int:
    """End the provider's tasks (of one user, or all) that awaited their deliveries: those into
    whose every window something was delivered (succeeded), and those whose wait has passed
    (partial, naming the windows nothing came into). How many it ended."""
    deliveries, ended = _deliveries(provider), 0
    for task in await garmin_backfills.garmin_tasks_awaiting_deliveries(db, user_id):
        missing = json.loads(task["missing"]) if isinstance(task["missing"], str) else task["missing"]
        if missing and not task["overdue"]:
            continue
        status, result, error, progress = _outcome(deliveries, task, missing, deliveries.wait_s(config))
        if await garmin_backfills.finish_awaiting_task(db, task["id"], status, result, error, progress):
            ended += 1
            log.info("sync ended with its deliveries", provider=provider.name, task_id=str(task["id"]),
                     status=status.value, missing=len(missing))  # fmt: skip
    return ended
