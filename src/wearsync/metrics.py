"""Prometheus metrics: all defined here, recorded by one-line calls where things happen, served at
`/metrics` (wearsync.metrics_server) by the API and, with WEARSYNC_WORKER_METRICS_PORT, by each
worker on a port of its own. This module imports nothing of the app: the lowest layers record.

Labels stay bounded: route names (never paths), provider names, HTTP statuses, outcomes. No metric
carries a user, a task, a URL or a secret."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("wearsync_http_requests", "API requests by route name and status", ["route", "status"])
HTTP_SECONDS = Histogram("wearsync_http_request_duration_seconds", "API request latency by route name", ["route"])
TASK_RUN_SECONDS = Histogram(
    "wearsync_task_run_duration_seconds",
    "Runs of sync tasks (one worker job, or one sync call) by provider and outcome",
    ["provider", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf")),
)
UPSTREAM_REQUESTS = Counter(
    "wearsync_upstream_requests", "Provider API calls (every attempt) by provider and status", ["provider", "status"]
)
UPSTREAM_SECONDS = Histogram("wearsync_upstream_request_duration_seconds", "Provider API call latency", ["provider"])
RATE_LIMIT_WAITS = Counter("wearsync_rate_limit_waits", "Waits for a provider's rate limit", ["provider", "reason"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "wearsync_rate_limit_wait_seconds", "Seconds waited (or deferred) for rate limits", ["provider", "reason"]
)
WEBHOOK_EVENTS_DROPPED = Counter(
    "wearsync_webhook_events_dropped",
    "Webhook events dropped at receipt, as no active connection names their user",
    ["provider"],
)
QUEUE_JOBS = Gauge("wearsync_queue_jobs", "Jobs in the arq queue: ready to run, or deferred to later", ["state"])
WEBHOOK_QUEUE_JOBS = Gauge(
    "wearsync_webhook_queue_jobs", "Jobs in the webhook jobs' queue: ready to run, or deferred to later", ["state"]
)
OPEN_TASKS = Gauge("wearsync_open_tasks", "Sync tasks queued or running, from PostgreSQL", ["provider", "status"])

UNMATCHED = "unmatched"  # every request that matched no route: one label, whatever its path


def observe_request(request: web.Request, status: int, seconds: float) -> None:
    route = request.match_info.route
    resource = route.resource
    name = route.name or (resource.canonical if resource is not None else UNMATCHED)
    HTTP_REQUESTS.labels(name, str(status)).inc()
    HTTP_SECONDS.labels(name).observe(seconds)


def upstream_call(provider: str, status: int | str, seconds: float) -> None:
    """`status`: the HTTP status, or "timeout" / "error" when no answer came."""
    UPSTREAM_REQUESTS.labels(provider, str(status)).inc()
    UPSTREAM_SECONDS.labels(provider).observe(seconds)


def rate_limit_wait(provider: str, reason: str, seconds: float) -> None:
    """`reason`: "limiter" (our shared limiter), "upstream_429" (the provider said so) or
    "deferred" (the job was put back in the queue for that long)."""
    RATE_LIMIT_WAITS.labels(provider or "unknown", reason).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(provider or "unknown", reason).inc(seconds)


@dataclass
class TaskRun:
    provider: str
    outcome: str = "error"  # unless the run ends otherwise: it crashed, timed out or was cancelled


@contextmanager
def task_run(provider: str) -> Iterator[TaskRun]:
    """Times one run of a task; the caller sets `outcome` to how it ended: the task's status, or
    "deferred" (a rate limit), "continued" (the job's page share used)."""
    run, started = TaskRun(provider), time.perf_counter()
    try:
        yield run
    finally:
        TASK_RUN_SECONDS.labels(provider, run.outcome).observe(time.perf_counter() - started)
