"""The aiohttp application: resources in cleanup_ctx, middlewares, and every route in one place."""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from arq import create_pool as create_redis_pool
from arq.connections import RedisSettings

from wearsync.api import (
    admin,
    connect,
    dashboard,
    data,
    imports,
    oauth,
    openapi,
    stream,
    users,
    views,
    webhook_endpoints,
    webhooks,
)
from wearsync.api.common import DEPS, KEY_CACHE, QUEUE
from wearsync.api.middlewares import api_key_auth, errors, log_file_response, request_context
from wearsync.api.quotas import DeliveryLimit
from wearsync.db import service_pool_when_up
from wearsync.deps import Deps, create_http_client
from wearsync.queue import finish_handovers
from wearsync.settings import Settings

SETTINGS = web.AppKey("settings", Settings)


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.cipher()  # no key, no start: tokens are never stored in clear
    db = await service_pool_when_up(settings, settings.api_db_pool_max)
    queue = await create_redis_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    # Sync mode runs provider clients inside the request, so the API has an upstream session too.
    http = create_http_client(settings, queue)
    app[DEPS] = Deps(settings=settings, db=db, http=http)
    app[QUEUE] = queue
    app[webhooks.DELIVERY_LIMIT] = DeliveryLimit.from_setting(queue, settings.queue_name, settings.webhook_rate_limit)
    yield
    await finish_handovers(app[DEPS])  # a sync call cut off by shutdown hands its task to a worker
    await http.session.close()
    await queue.aclose()
    await db.close()


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", views.health, name="health")
    r.add_get("/metrics", views.scrape, name="metrics")
    r.add_post("/api/v1/{provider}/users/{user_id}/sync", views.trigger_sync, name="sync")
    r.add_get("/api/v1/tasks/{task_id}", views.get_task, name="task")
    r.add_post("/api/v1/tasks/{task_id}/retry", users.retry, name="task-retry")
    r.add_post("/api/v1/tasks/{task_id}/cancel", users.cancel, name="task-cancel")
    r.add_post("/api/v1/users", views.create_user, name="users")
    r.add_get("/api/v1/users/{user_id}", views.get_user, name="user")
    r.add_delete("/api/v1/users/{user_id}", views.delete_user, name="user-delete")
    r.add_get("/api/v1/users", users.list_users, name="users-list")
    r.add_patch("/api/v1/users/{user_id}", users.update_user, name="user-update")
    r.add_get("/api/v1/users/{user_id}/tasks", users.user_tasks, name="user-tasks")
    r.add_get("/api/v1/users/{user_id}/connections", views.list_connections, name="connections")
    r.add_put("/api/v1/users/{user_id}/connections/{provider}", views.put_connection, name="connection")
    r.add_delete("/api/v1/users/{user_id}/connections/{provider}", views.delete_connection, name="disconnect")
    r.add_get("/api/v1/oauth/{provider}/authorize", oauth.authorize, name="oauth-authorize")
    r.add_get("/api/v1/oauth/{provider}/callback", oauth.callback, name="oauth-callback")
    r.add_get("/api/v1/users/{user_id}/workouts", data.workouts, name="workouts")
    r.add_get("/api/v1/users/{user_id}/sleep", data.sleep, name="sleep")
    r.add_get("/api/v1/users/{user_id}/recovery", data.recovery, name="recovery")
    r.add_get("/api/v1/users/{user_id}/daily", data.daily, name="daily")
    r.add_get("/api/v1/users/{user_id}/samples", data.samples, name="samples")
    r.add_post("/api/v1/users/{user_id}/imports/apple-health", imports.apple_health, name="apple-health-upload")
    r.add_get("/api/v1/events/stream", stream.events_stream, name="events-stream")
    r.add_post("/api/v1/webhooks/{provider}", webhooks.receive, name="webhook")
    r.add_post("/api/v1/webhooks/{provider}/{path_secret}", webhooks.receive, name="webhook-unsigned")
    r.add_get("/api/v1/webhooks/strava/{path_secret}", webhooks.strava_challenge, name="webhook-strava-validation")
    r.add_post("/api/v1/webhook-endpoints", webhook_endpoints.create_endpoint, name="endpoints-create")
    r.add_get("/api/v1/webhook-endpoints", webhook_endpoints.list_endpoints, name="endpoints")
    r.add_get("/api/v1/webhook-endpoints/{endpoint_id}", webhook_endpoints.get_endpoint, name="endpoint")
    r.add_patch("/api/v1/webhook-endpoints/{endpoint_id}", webhook_endpoints.update_endpoint, name="endpoint-update")
    r.add_delete("/api/v1/webhook-endpoints/{endpoint_id}", webhook_endpoints.delete_endpoint, name="endpoint-delete")
    r.add_post(
        "/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret", webhook_endpoints.rotate_secret, name="endpoint-rotate"
    )
    r.add_post("/api/v1/webhook-endpoints/{endpoint_id}/test", webhook_endpoints.send_test, name="endpoint-test")
    r.add_post("/api/v1/webhook-endpoints/{endpoint_id}/replay", webhook_endpoints.replay, name="endpoint-replay")
    r.add_get("/api/v1/events/{event_id}/deliveries", webhook_endpoints.event_deliveries, name="event-deliveries")
    r.add_get("/api/v1/applications", admin.list_applications, name="applications")
    r.add_post("/api/v1/applications", admin.create_application, name="applications-create")
    r.add_get("/api/v1/applications/{application_id}/keys", admin.list_keys, name="keys")
    r.add_post("/api/v1/applications/{application_id}/keys", admin.create_key, name="keys-create")
    r.add_delete("/api/v1/applications/{application_id}/keys/{prefix}", admin.revoke_key, name="key-revoke")
    r.add_get("/api/v1/applications/{application_id}/settings", admin.get_settings, name="app-settings")
    r.add_patch("/api/v1/applications/{application_id}/settings", admin.update_settings, name="app-settings-update")
    r.add_get("/api/v1/openapi.json", openapi.serve_document, name="openapi")
    r.add_get("/docs", openapi.docs_page, name="docs")
    r.add_get("/docs/", openapi.docs_redirect, name="docs-slash")
    r.add_static("/docs/static", openapi.DOCS_DIR / "static", name="docs-static")
    r.add_get("/dashboard", dashboard.page, name="dashboard")
    r.add_static("/dashboard/static", dashboard.WEB_DIR / "static", name="dashboard-static")
    r.add_get("/api/v1/dashboard/users", dashboard.users, name="dashboard-users")
    r.add_get("/api/v1/dashboard/tasks", dashboard.tasks, name="dashboard-tasks")
    r.add_get("/api/v1/dashboard/webhook-events", dashboard.webhook_events, name="dashboard-webhook-events")
    r.add_get("/api/v1/dashboard/deliveries", dashboard.deliveries, name="dashboard-deliveries")
    r.add_post("/api/v1/users/{user_id}/connect-link", connect.create_link, name="connect-link")
    r.add_get("/connect/result", connect.connect_result, name="connect-result")
    r.add_get("/connect/{user_id}", connect.connect_page, name="connect-page")
    r.add_get("/connect/{user_id}/{provider}", connect.connect_start, name="connect-start")


def create_app(settings: Settings | None = None) -> web.Application:
    app = web.Application(middlewares=[request_context, errors, api_key_auth], client_max_size=64 * 1024)
    app[SETTINGS] = settings or Settings()
    app[KEY_CACHE] = {}
    app[openapi.DOCUMENT] = {}
    app[stream.CLOSING] = asyncio.Event()
    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(stream.close_streams)
    app.on_response_prepare.append(log_file_response)
    setup_routes(app)
    return app
