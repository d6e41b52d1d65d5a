"""Scheduled syncs: every minute the worker's cron enqueues incremental syncs of the active pull
connections that have not synced for `WEARSYNC_SCHEDULE_INTERVAL_S`, stalest first.

Each run takes its share of the interval (so the syncs are spread over it, not bunched at its
start) and never more than the provider's rate limits can serve: scheduled syncs may use
`WEARSYNC_SCHEDULE_RATE_SHARE` of each limit, at `Provider.incremental_calls` calls a sync, and
leave the rest to syncs asked for through the API. An identical sync already queued or running is
not started twice (coalescing)."""

import math
import time
from uuid import uuid4

import structlog
from arq import ArqRedis

from wearsync.db import connections as connections_db
from wearsync.db import tasks
from wearsync.deps import Deps
from wearsync.models import SyncParams
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Provider
from wearsync.queue import enqueue_task

log = structlog.get_logger(__name__)

RUN_EVERY_S = 60


def syncs_per_run(provider: Provider, deps: Deps, connections: int, run: int) -> int:
    """How many syncs of this provider run number `run` (minutes since the epoch) may start: its
    share of the interval, capped by the rate limits. A cap below one sync a run is honoured
    across runs (two thirds of a sync a minute is two syncs every three minutes)."""
    settings = deps.settings
    spread = math.ceil(connections * RUN_EVERY_S / settings.schedule_interval_s)
    limits = provider.bucket(settings).limits
    if not limits:
        return spread
    calls = min(limit.requests * RUN_EVERY_S / limit.per_seconds for limit in limits) * settings.schedule_rate_share
    per_run = calls / provider.incremental_calls
    capped = math.floor((run + 1) * per_run) - math.floor(run * per_run)
    return min(spread, capped)


async def schedule_syncs(deps: Deps, queue: ArqRedis) -> dict[str, int]:
    """Start this run's scheduled syncs; how many per provider."""
    started: dict[str, int] = {}
    if deps.settings.schedule_interval_s <= 0:
        return started
    for provider in PROVIDERS.values():
        if provider.delivery != "pull" or not provider.sync:
            continue
        connections = await connections_db.count_active_connections(deps.db, provider.name)
        quota = syncs_per_run(provider, deps, connections, int(time.time() // RUN_EVERY_S)) if connections else 0
        if quota <= 0:
            continue
        due = await connections_db.stalest_connections(deps.db, provider.name, deps.settings.schedule_interval_s, quota)
        data_types = sorted(t.value for t in provider.supports if t in provider.sync)
        for row in due:
            task_id, created = await tasks.create_task(
                deps.db,
                task_id=uuid4(),
                app_id=row["application_id"],
                user_id=row["user_id"],
                provider=provider.name,
                mode="scheduled",
                data_types=data_types,
                params=provider.task_params(SyncParams()),
            )
            if created and task_id is not None:
                await enqueue_task(queue, str(task_id))
                started[provider.name] = started.get(provider.name, 0) + 1
    if started:
        log.info("scheduled syncs started", **started)
    return started
