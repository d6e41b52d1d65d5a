"""Processing one stored webhook event in the worker: find the connections it names (one per
application that connected the upstream account), let the provider's client do for each, with its
own token, what the event asks (upsert the pushed records, fetch the announced one,
delete, deactivate), and record the outcome on the event.

Events for users no active connection names are dropped at receipt (api/webhooks.py); one whose
connections went inactive since is marked `ignored` here with the reason, and never retried. A
failure that may pass (the provider unreachable or answering 5xx, its rate limit, Redis or
PostgreSQL away) marks the event `failed` with a time to try again, which the worker's reaper
keeps (growing pauses, for WEARSYNC_WEBHOOK_RETRY_FOR_S); any other marks it `failed` for good,
with its message.
Processing twice is harmless (upserts, idempotent deletes).
"""

import structlog

from wearsync.db import connections
from wearsync.db import webhooks as webhooks_db
from wearsync.deps import Deps, connection_context
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, WebhookEvent
from wearsync.providers.errors import ProviderError, RateLimited, UpstreamAuthError, UpstreamError

log = structlog.get_logger(__name__)


async def process_event(deps: Deps, event_id: int) -> str | None:
    """Process a stored event; its final status, or None if it was done already."""
    row = await webhooks_db.claim_webhook_event(deps.db, event_id)
    if row is None:
        return None
    provider = PROVIDERS[row["provider"]]
    assert provider.webhook is not None
    event = WebhookEvent(row["kind"], row["provider_user_id"], row["dedupe_key"], row["payload"])
    log_ = log.bind(provider=provider.name, kind=event.kind, event_id=event_id)
    rows = await connections.connections_by_upstream_user(deps.db, provider.name, event.provider_user_id)
    if not rows:
        reason = f"no active {provider.name} connection for provider user {event.provider_user_id}"
        log_.info("webhook event ignored", reason=reason)
        await webhooks_db.finish_webhook_event(deps.db, event_id, "ignored", reason)
        return "ignored"
    # One upstream account connected in several applications: the event is each one's, done with
    # each connection's own token. Done again for all of them when it is tried again (idempotent).
    details, errors = [], []
    for row in rows:
        connection = Connection.from_row(row, deps.settings.cipher())
        try:
            detail = await provider.webhook.process(connection_context(deps, provider, connection), event)
        except RateLimited:
            raise  # the job is deferred and the event stays pending
        except ProviderError as e:
            log_.warning("webhook event failed for a connection", user_id=str(connection.user_id), error=str(e))
            errors.append((connection.user_id, e))
            continue
        log_.info("webhook event processed", user_id=str(connection.user_id))
        if detail:
            details.append(detail if len(rows) == 1 else f"user {connection.user_id}: {detail}")
    if errors:
        described = "; ".join(str(e) if len(rows) == 1 else f"user {user_id}: {e}" for user_id, e in errors)
        return await fail_event(deps, event_id, described, may_pass=any(may_pass(e) for _, e in errors))
    await webhooks_db.finish_webhook_event(deps.db, event_id, "processed", "; ".join(details) or None)
    return "processed"


def may_pass(error: ProviderError) -> bool:
    """Whether the provider failed in a way that passes by itself: unreachable, 5xx, its 429.
    Not: our token refused, an answer we cannot read, a record it says is not there."""
    if not isinstance(error, UpstreamError) or isinstance(error, UpstreamAuthError):
        return False
    return error.status is None or error.status >= 500 or error.status == 429


async def fail_event(deps: Deps, event_id: int, detail: str, may_pass: bool) -> str:
    """Record an event's failure: "retrying" if it is to be tried again later (the reaper enqueues
    it when due), "failed" if for good."""
    if may_pass:
        settings = deps.settings
        retry_at = await webhooks_db.fail_webhook_event(
            deps.db, event_id, detail,
            settings.webhook_retry_first_s, settings.webhook_retry_longest_s, settings.webhook_retry_for_s,
        )  # fmt: skip
        if retry_at is not None:
            log.warning("webhook event failed, tried again later", error=detail, retry_at=retry_at.isoformat())
            return "retrying"
    else:
        await webhooks_db.finish_webhook_event(deps.db, event_id, "failed", detail)
    log.warning("webhook event failed", error=detail)
    return "failed"
