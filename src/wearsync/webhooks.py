"""Processing one stored webhook event in the worker: find the connection it names, let the
provider's client do what the event asks (upsert the pushed records, fetch the announced one,
delete, deactivate), and record the outcome on the event.

Events for unknown users or inactive connections are acknowledged upstream already; here they are
marked `ignored` with the reason and never retried. A provider error marks the event `failed`
with its message; processing twice is harmless (upserts, idempotent deletes).
"""

import structlog

from wearsync.db import queries
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Connection, WebhookEvent
from wearsync.providers.errors import ProviderError, RateLimited
from wearsync.sync import Deps, connection_context

log = structlog.get_logger(__name__)


async def process_event(deps: Deps, event_id: int) -> str | None:
    """Process a stored event; its final status, or None if it was done already."""
    row = await queries.claim_webhook_event(deps.db, event_id)
    if row is None:
        return None
    provider = PROVIDERS[row["provider"]]
    assert provider.webhook is not None
    event = WebhookEvent(row["kind"], row["provider_user_id"], row["dedupe_key"], row["payload"])
    log_ = log.bind(provider=provider.name, kind=event.kind, event_id=event_id)
    connection_row = await queries.connection_by_upstream_user(deps.db, provider.name, event.provider_user_id)
    if connection_row is None:
        reason = f"no active {provider.name} connection for provider user {event.provider_user_id}"
        log_.info("webhook event ignored", reason=reason)
        await queries.finish_webhook_event(deps.db, event_id, "ignored", reason)
        return "ignored"
    connection = Connection.from_row(connection_row, deps.settings.cipher())
    ctx = connection_context(deps, provider, connection)
    try:
        detail = await provider.webhook.process(ctx, event)
    except RateLimited:
        raise  # the job is deferred and the event stays pending
    except ProviderError as e:
        log_.warning("webhook event failed", error=str(e))
        await queries.finish_webhook_event(deps.db, event_id, "failed", str(e))
        return "failed"
    await queries.finish_webhook_event(deps.db, event_id, "processed", detail)
    log_.info("webhook event processed", user_id=str(connection.user_id))
    return "processed"
