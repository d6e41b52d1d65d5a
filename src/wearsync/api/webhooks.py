"""Webhook receivers: `POST /api/v1/webhooks/{provider}` for every provider (no API key: each
delivery is checked as its provider signs it), and Strava's subscription validation GET.

A delivery is verified, split into events, stored in PostgreSQL and only then acknowledged, with
one job per new event enqueued for the worker: the request itself makes no upstream call, an
event redelivered is stored once, and an event whose job could not be enqueued is still in the
database for the reaper to pick up.
"""

import hmac
import json

import structlog
from aiohttp import web

from wearsync.api.common import DEPS, QUEUE, ApiError, json_response
from wearsync.db import queries
from wearsync.providers import PROVIDERS
from wearsync.providers.core import Provider
from wearsync.providers.errors import MalformedPayload, WebhookRejected

log = structlog.get_logger(__name__)


def _provider_with_webhook(request: web.Request) -> Provider:
    provider = PROVIDERS.get(request.match_info["provider"])
    if provider is None or provider.webhook is None:
        raise ApiError(404, f"No webhook for provider '{request.match_info['provider']}'")
    return provider


async def receive(request: web.Request) -> web.Response:
    provider = _provider_with_webhook(request)
    assert provider.webhook is not None
    deps = request.app[DEPS]
    body = await _body(request, provider.webhook.max_body_bytes)
    try:
        provider.webhook.verify(request.headers, body, deps.settings.provider(provider.name), deps.settings)
    except WebhookRejected as e:
        log.warning("webhook rejected", provider=provider.name, reason=str(e))
        raise ApiError(401, f"Invalid webhook signature: {e}") from None
    try:
        events = provider.webhook.events(_json(body))
    except MalformedPayload as e:
        raise ApiError(400, f"Unreadable webhook payload: {e}") from None
    new_ids = await queries.insert_webhook_events(deps.db, provider.name, events)
    queue = request.app[QUEUE]
    for event_id in new_ids:
        try:
            # No job id of ours: arq's job keys are global to the Redis server, event ids are
            # only unique per database, and the insert above already ran once per event.
            await queue.enqueue_job("process_webhook", event_id)
        except Exception as e:  # stored: the reaper enqueues it later
            log.error("webhook event stored but not enqueued", event_id=event_id, error=repr(e))
    log.info("webhook received", provider=provider.name, events=len(events), new=len(new_ids))
    return json_response({"received": len(events), "new": len(new_ids)})


async def _body(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is longer than `limit`, whether it says its length
    or comes in chunks without one."""
    too_large = ApiError(413, f"Webhook payload too large: more than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise MalformedPayload("the body is not JSON") from None


async def strava_challenge(request: web.Request) -> web.Response:
    """Strava's subscription validation: echo `hub.challenge` when the verify token is ours."""
    settings = request.app[DEPS].settings
    query = request.query
    if query.get("hub.mode") != "subscribe" or "hub.challenge" not in query:
        raise ApiError(400, "Expected hub.mode=subscribe and hub.challenge")
    expected = settings.strava_verify_token
    given = query.get("hub.verify_token", "").encode("utf-8", "replace")  # compare_digest: str only if ASCII
    if not expected or not hmac.compare_digest(given, expected.encode()):
        raise ApiError(403, "Invalid verify token")
    return json_response({"hub.challenge": query["hub.challenge"]})
