"""Webhook receivers: `POST /api/v1/webhooks/{provider}` for every provider that signs its
deliveries (no API key: each delivery is checked as its provider signs it), `POST
/api/v1/webhooks/{provider}/{path_secret}` for those that sign nothing (Garmin, Strava: the secret
in the URL is the check; any other URL of theirs answers 404), and Strava's subscription validation
GET at its URL.

A delivery is verified, split into events, stored in PostgreSQL and only then acknowledged, with
one job per new event enqueued for the worker: the request itself makes no upstream call, an
event redelivered is stored once, and an event whose job could not be enqueued is still in the
database for the reaper to pick up.
"""

import hmac
import json

import structlog
from aiohttp import web

from wearsync import metrics
from wearsync.api.common import DEPS, QUEUE, ApiError, json_response
from wearsync.api.quotas import DeliveryLimit, OverLimit
from wearsync.db import connections
from wearsync.db import webhooks as webhooks_db
from wearsync.providers import PROVIDERS, strava
from wearsync.providers.core import Provider
from wearsync.providers.errors import MalformedPayload, TooManyItems, WebhookRejected
from wearsync.queue import enqueue_webhook_events
from wearsync.settings import webhook_queue_name

log = structlog.get_logger(__name__)


DELIVERY_LIMIT = web.AppKey("webhook_delivery_limit", DeliveryLimit)


async def _count_delivery(request: web.Request, provider: str) -> None:
    """One more delivery from the caller's address, before its body is read; 429 with Retry-After
    past WEARSYNC_WEBHOOK_RATE_LIMIT (counted across every API process)."""
    try:
        await request.app[DELIVERY_LIMIT].take(provider, request.remote or "")
    except OverLimit as e:
        raise ApiError(429, "Too many webhook deliveries, retry later", {"Retry-After": str(e.retry_after_s)}) from None


def _provider_with_webhook(request: web.Request, name: str) -> Provider:
    """The provider whose webhook this URL is: 404 for any other URL, such as one without the path
    secret of a provider that signs nothing, or with a wrong one (which is not told apart, so the
    answer says nothing of the secret)."""
    provider = PROVIDERS.get(name)
    if provider is None or provider.webhook is None:
        raise ApiError(404, f"No webhook for provider '{name}'")
    given = request.match_info.get("path_secret")
    if provider.webhook.path_secret or given is not None:
        expected = request.app[DEPS].settings.providers[name].path_secret()
        if not (provider.webhook.path_secret and expected and given and _same(given, expected)):
            log.warning("webhook delivery to an unknown URL", provider=name)
            raise ApiError(404, f"No webhook for provider '{name}' at this URL")
    return provider


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())  # compare_digest: str only if ASCII


async def receive(request: web.Request) -> web.Response:
    provider = _provider_with_webhook(request, request.match_info["provider"])
    assert provider.webhook is not None
    await _count_delivery(request, provider.name)
    deps = request.app[DEPS]
    body = await _body(request, provider.webhook.max_body_bytes)
    try:
        provider.webhook.verify(request.headers, body, deps.settings.providers[provider.name], deps.settings)
    except WebhookRejected as e:
        log.warning("webhook rejected", provider=provider.name, reason=str(e))
        raise ApiError(401, f"Invalid webhook signature: {e}") from None
    try:
        events = provider.webhook.events(_json(body))
    except MalformedPayload as e:
        raise ApiError(400, f"Unreadable webhook payload: {e}") from None
    except TooManyItems as e:
        raise ApiError(413, f"Webhook payload too large: {e}") from None
    # Nobody to do them for: not stored, not queued (a flood for made-up users costs one query).
    connected = await connections.connected_upstream_users(deps.db, provider.name, [e.provider_user_id for e in events])
    kept = [event for event in events if event.provider_user_id in connected]
    if dropped := len(events) - len(kept):
        metrics.WEBHOOK_EVENTS_DROPPED.labels(provider.name).inc(dropped)
        log.info("webhook events for users without an active connection dropped", provider=provider.name, count=dropped)
    new_ids = await webhooks_db.insert_webhook_events(deps.db, provider.name, kept)
    try:
        await enqueue_webhook_events(request.app[QUEUE], new_ids, webhook_queue_name(deps.settings))
    except Exception as e:  # stored: the reaper enqueues them later
        log.error("webhook events stored but not enqueued", event_ids=new_ids[:20], count=len(new_ids), error=repr(e))
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
    """Strava's subscription validation, at the URL its events go to: echo `hub.challenge` when
    the verify token is ours."""
    _provider_with_webhook(request, "strava")
    await _count_delivery(request, "strava")
    settings = request.app[DEPS].settings
    query = request.query
    if query.get("hub.mode") != "subscribe" or "hub.challenge" not in query:
        raise ApiError(400, "Expected hub.mode=subscribe and hub.challenge")
    expected = strava.PROVIDER.settings(settings).verify_token
    if not expected or not _same(query.get("hub.verify_token", ""), expected):
        raise ApiError(403, "Invalid verify token")
    return json_response({"hub.challenge": query["hub.challenge"]})
