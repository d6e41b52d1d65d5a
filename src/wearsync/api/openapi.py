"""The API's OpenAPI 3.1 document, built from the router and the pydantic models the views
validate with (api/models.py) and answer with (api/responses.py); and the `/docs` page.

Every named route has one entry in OPERATIONS, under its route name: a new route is documented by
adding its line there (tests/test_openapi.py fails for a route without one)."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib.metadata import version
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from wearsync.api.admin import APPLICATION_NOT_FOUND, NAME_TAKEN, OPERATORS_ONLY
from wearsync.api.connect import BAD_LINK
from wearsync.api.middlewares import INVALID_KEY, PUBLIC_ROUTES
from wearsync.api.models import (
    ApplicationIn,
    ApplicationPath,
    AuthorizeQuery,
    CallbackQuery,
    ConnectionIn,
    ConnectionPath,
    ConnectionPut,
    ConnectLinkIn,
    ConnectPagePath,
    ConnectResultQuery,
    ConnectStartPath,
    DashboardListQuery,
    DashboardTasksQuery,
    DashboardUsersQuery,
    KeyIn,
    KeyPath,
    ListQuery,
    SamplesQuery,
    SettingsPatch,
    StravaChallengeQuery,
    StreamQuery,
    SyncRequest,
    TaskPath,
    UnsignedWebhookPath,
    UserIn,
    UserPatch,
    UserPath,
    UsersQuery,
    UserTasksQuery,
    WebhookPath,
)
from wearsync.api.oauth import REDIRECT_NO_LONGER_ALLOWED, REDIRECT_NOT_ALLOWED, UNKNOWN_STATE
from wearsync.api.responses import (
    ApiKey,
    ApiKeyCreated,
    Application,
    ApplicationSettings,
    AuthorizationStarted,
    Connection,
    ConnectLink,
    DailyPage,
    DashboardDeliveries,
    DashboardTasks,
    DashboardUsers,
    DashboardWebhookEvents,
    Disconnected,
    Error,
    Health,
    KeyRevoked,
    RecoveryPage,
    SamplePage,
    SleepPage,
    StravaChallenge,
    StreamMessage,
    SyncQueued,
    SyncResult,
    Task,
    TaskPage,
    User,
    UserDeleted,
    UserPage,
    WebhookReceipt,
    WorkoutPage,
)
from wearsync.api.views import EXTERNAL_ID_TAKEN
from wearsync.api.webhook_models import (
    EVENT_DATA,
    Endpoint,
    EndpointCreated,
    EndpointIn,
    EndpointPatch,
    EndpointPath,
    EventDeliveries,
    EventPath,
    Replayed,
    ReplayIn,
    RotateIn,
    SecretRotated,
    TestSent,
    event_model,
)
from wearsync.app_settings import PROVIDER_NOT_ENABLED
from wearsync.metrics_server import INVALID_TOKEN
from wearsync.sync import NO_CONNECTION

DOCS_DIR = Path(__file__).parent / "docs"  # index.html, and static/ (Swagger UI, shipped in the wheel)
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """What the router does not know about a route: its models, responses and words. 401 (unless
    the route is public), 400/413/422 (when pydantic checks what it gets) and 503 are added."""

    tag: str
    summary: str
    params: type[BaseModel] | None = None  # path and query: a field named in the route's path is a path parameter
    body: Any = None  # the JSON body's type (anything pydantic describes)
    body_required: bool = True
    ok: Any = None  # the success response's type; None: no body
    status: int = 200
    media_type: str = "application/json"
    errors: Mapping[int, str] = field(default_factory=dict)  # error statuses besides the ones added below
    validated: bool = True  # params and body checked by pydantic (422); False: by the view itself
    upload: bool = False  # the body is a file: the raw bytes, or a form's `file` field
    html_errors: bool = False  # a page for people: its own errors are pages too (the middleware's stay JSON)
    # Optional request headers it reads: their meaning and JSON schema.
    headers: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    stateful: bool = True  # uses PostgreSQL or Redis (so may answer 503)


TAGS = {
    "sync": "Start syncs of a user's data from a provider",
    "imports": "Import files users export from their devices' apps (Apple Health)",
    "tasks": "Follow a sync task",
    "users": "Your application's users",
    "connections": "A user's connections to providers (OAuth tokens)",
    "data": "A user's stored data, oldest first, a page at a time: pass `next_cursor` back as `cursor`;"
    " `order=changes`: the change feed, rows in the order they were stored or changed, to poll",
    "events": "What happened to your application's users: syncs ended, data stored, changed or deleted, connections",
    "webhooks": "Receivers of the providers' notifications (signed by the provider; no API key)",
    "dashboard": "What the dashboard at /dashboard reads besides the rest of the API",
    "outgoing": "Your endpoints that wearsync sends events to (Standard Webhooks: see `webhooks` for each"
    " event type's body)",
    "admin": "Applications and their API keys: an operator key only (`wearsync api-key create --operator`);"
    " any other key gets 403",
    "meta": "Health, metrics and documentation",
}
_ADMIN_ERRORS = {403: OPERATORS_ONLY}
_APP_ERRORS = _ADMIN_ERRORS | {404: APPLICATION_NOT_FOUND}
ENDPOINT_NOT_FOUND = {404: "Webhook endpoint not found"}
URL_REFUSED = {400: "The URL is not http(s), or names a private or loopback address (the detail says)"}

USER_NOT_FOUND = {404: "User not found"}
TOO_MANY_DELIVERIES = "Too many webhook deliveries, retry later (Retry-After)"


def _webhook(summary: str, params: type[BaseModel], invalid: str, not_found: str) -> Operation:
    """A webhook receiver: the body is the provider's, read by the view itself."""
    errors = {400: "Unreadable webhook payload", 401: invalid, 404: not_found, 413: "Webhook payload too large",
              429: TOO_MANY_DELIVERIES}  # fmt: skip
    body = dict[str, Any]
    return Operation("webhooks", summary, params, body=body, ok=WebhookReceipt, validated=False, errors=errors)


OPERATIONS: dict[str, Operation] = {
    "health": Operation("meta", "Health of PostgreSQL and Redis", ok=Health),
    "metrics": Operation(
        "meta",
        "Prometheus metrics (with WEARSYNC_METRICS_TOKEN set: `Authorization: Bearer <token>`)",
        ok=str,
        media_type="text/plain",
        errors={401: INVALID_TOKEN},
    ),
    "openapi": Operation("meta", "This OpenAPI document", ok=dict[str, Any], stateful=False),
    "docs": Operation("meta", "Browsable API documentation", ok=str, media_type="text/html", stateful=False),
    "docs-slash": Operation("meta", "Redirects to /docs", status=301, stateful=False),
    "sync": Operation(
        "sync",
        "Sync a user's data from a provider",
        SyncRequest,
        ok=SyncQueued | SyncResult,
        errors={
            403: PROVIDER_NOT_ENABLED,
            404: NO_CONNECTION,
            501: "The provider does not support the requested data type",
            504: "async=false found the same sync open and it did not finish in time (the detail names it)",
        },
    ),
    "task": Operation(
        "tasks", "A sync task's status, progress and result", TaskPath, ok=Task, errors={404: "Task not found"}
    ),
    "users": Operation(
        "users",
        "Create a user (the id is made when not given)",
        body=UserIn,
        body_required=False,
        ok=User,
        status=201,
        errors={409: "A user with this id or external_id already exists in this application"},
    ),
    "user": Operation("users", "A user", UserPath, ok=User, errors=USER_NOT_FOUND),
    "task-retry": Operation(
        "tasks",
        "Run an ended sync again (failed, partial or succeeded), with its data types and parameters, as a new"
        " task: follow it at /api/v1/tasks/{task_id} (the same sync already queued or running is that task)",
        TaskPath,
        ok=SyncQueued,
        status=202,
        errors={
            404: f"Task not found, or: {NO_CONNECTION}",
            409: "The task is still queued or running, or is an import (upload the file again)",
            429: "The user or the application has as many tasks queued or running as it may (Retry-After)",
            501: "The provider does not support the task's data type",
        },
    ),
    "task-cancel": Operation(
        "tasks",
        "Cancel a queued task: it ends failed (its sync.failed event is sent) and never starts. A running"
        " task cannot be cancelled: it ends by itself",
        TaskPath,
        ok=Task,
        errors={404: "Task not found", 409: "The task is running or ended already"},
    ),
    "applications": Operation("admin", "Every application", ok=list[Application], errors=_ADMIN_ERRORS),
    "applications-create": Operation(
        "admin",
        "Create an application",
        body=ApplicationIn,
        ok=Application,
        status=201,
        errors=_ADMIN_ERRORS | {409: NAME_TAKEN},
    ),
    "keys": Operation(
        "admin", "An application's API keys (revoked ones too)", ApplicationPath, ok=list[ApiKey], errors=_APP_ERRORS
    ),
    "keys-create": Operation(
        "admin",
        "Create an API key of an application: the key is in this answer only",
        ApplicationPath,
        body=KeyIn,
        ok=ApiKeyCreated,
        status=201,
        errors=_APP_ERRORS,
    ),
    "key-revoke": Operation(
        "admin",
        "Revoke an application's key by its prefix (it stops working within 30 s)",
        KeyPath,
        ok=KeyRevoked,
        errors=_APP_ERRORS
        | {
            404: "Application not found, or no active key has this prefix",
            409: "Several active keys have this prefix: none revoked",
        },
    ),
    "app-settings": Operation(
        "admin",
        "An application's settings: its redirect allow-list and enabled providers (null: the operator's)",
        ApplicationPath,
        ok=ApplicationSettings,
        errors=_APP_ERRORS,
    ),
    "app-settings-update": Operation(
        "admin",
        "Change an application's settings (only the fields sent): its OAuth flows then send users back only where"
        " its allow-list allows, and its users connect and sync only the providers it enables (403 otherwise)",
        ApplicationPath,
        body=SettingsPatch,
        ok=ApplicationSettings,
        errors=_APP_ERRORS,
    ),
    "users-list": Operation(
        "users",
        "The application's users, oldest first, a page at a time (pass `next_cursor` back as `cursor`);"
        " `external_id` finds the one with your id",
        UsersQuery,
        ok=UserPage,
    ),
    "user-update": Operation(
        "users",
        "Change a user: set or clear (null) its external id",
        UserPath,
        body=UserPatch,
        ok=User,
        errors=USER_NOT_FOUND | {409: EXTERNAL_ID_TAKEN},
    ),
    "user-tasks": Operation(
        "tasks",
        "A user's tasks (syncs and imports), newest first, a page at a time (pass `next_cursor` back as `cursor`)",
        UserTasksQuery,
        ok=TaskPage,
        errors=USER_NOT_FOUND,
    ),
    "user-delete": Operation(
        "users",
        "Delete a user and everything stored about them: access is withdrawn at each provider first (best"
        " effort), then the data, tasks and connections are deleted. Sent again after a cut-off request, it"
        " goes on where it stopped",
        UserPath,
        ok=UserDeleted,
        errors=USER_NOT_FOUND,
    ),
    "connections": Operation(
        "connections", "A user's connections", UserPath, ok=list[Connection], errors=USER_NOT_FOUND
    ),
    "connection": Operation(
        "connections",
        "Connect a user to a provider with the user's OAuth tokens: the provider is asked whose they are"
        " (422 when it refuses them or names another account than provider_user_id)",
        ConnectionPut,
        body=ConnectionIn,
        ok=Connection,
        errors=USER_NOT_FOUND
        | {
            403: PROVIDER_NOT_ENABLED,
            409: "The upstream account is connected to another user of this application",
            502: "The provider could not be asked whose the tokens are",
        },
    ),
    "disconnect": Operation(
        "connections",
        "Disconnect a user from a provider: its access is withdrawn at the provider where it allows (best"
        " effort), then the connection is deactivated (its data stays)",
        ConnectionPath,
        ok=Disconnected,
        errors={404: f"User not found, or: {NO_CONNECTION}"},
    ),
    "oauth-authorize": Operation(
        "connections",
        "Start connecting a user to a provider (OAuth): where to send the user's browser",
        AuthorizeQuery,
        ok=AuthorizationStarted,
        errors={
            403: f"{REDIRECT_NOT_ALLOWED}, or: {PROVIDER_NOT_ENABLED}",
            404: "User not found",
            503: "The provider is not configured (WEARSYNC_<P>_CLIENT_ID), PostgreSQL or Redis unavailable or busy",
        },
    ),
    "oauth-callback": Operation(
        "connections",
        "Where the provider sends the user back (register it with the provider): stores the connection, queues"
        " a first sync and redirects to the redirect_uri with status=connected&provider&user_id&task_id, or"
        " status=error&provider&user_id&error&error_description",
        CallbackQuery,
        status=302,
        errors={
            403: f"{UNKNOWN_STATE.format(provider='{provider}')} (tampered, another provider's), or:"
            f" {REDIRECT_NO_LONGER_ALLOWED}"
        },
    ),
    "apple-health-upload": Operation(
        "imports",
        "Import an Apple Health export.zip (the Health app's Export All Health Data): the body is the zip, or a"
        " multipart form's `file` field; streamed to disk and checked, then a worker imports it into workouts,"
        " sleep, daily activity and samples (202: follow the task at /api/v1/tasks/{task_id}). Importing again"
        " adds nothing twice; an export that cannot be read fails its task naming why, and stores nothing",
        UserPath,
        upload=True,
        ok=SyncQueued,
        status=202,
        validated=False,
        errors=USER_NOT_FOUND
        | {
            400: "The form cannot be read",
            409: "An Apple Health import of this user is already queued or running (the detail names it)",
            413: "The upload is larger than WEARSYNC_IMPORT_MAX_UPLOAD_BYTES, or its export.xml inflates past"
            " WEARSYNC_IMPORT_MAX_XML_BYTES (a zip bomb)",
            422: "No body, not a zip archive, or a zip without export.xml (the detail says which)",
            429: "The user or the application has as many tasks queued or running as it may (Retry-After)",
        },
    ),
    "workouts": Operation("data", "A user's workouts, by start time", ListQuery, ok=WorkoutPage, errors=USER_NOT_FOUND),
    "sleep": Operation("data", "A user's sleep, by start time", ListQuery, ok=SleepPage, errors=USER_NOT_FOUND),
    "recovery": Operation(
        "data", "A user's recovery measurements, by time", ListQuery, ok=RecoveryPage, errors=USER_NOT_FOUND
    ),
    "daily": Operation("data", "A user's daily activity, by day", ListQuery, ok=DailyPage, errors=USER_NOT_FOUND),
    "samples": Operation(
        "data", "One time series of a user, by time", SamplesQuery, ok=SamplePage, errors=USER_NOT_FOUND
    ),
    "dashboard": Operation(
        "dashboard",
        "The dashboard: a page that signs in with an API key and shows the application's users, their"
        " connections' health, tasks, webhook events and data",
        ok=str,
        media_type="text/html",
        stateful=False,
    ),
    "dashboard-users": Operation(
        "dashboard",
        "The application's users, newest first, each with its connections' health",
        DashboardUsersQuery,
        ok=DashboardUsers,
    ),
    "dashboard-tasks": Operation(
        "dashboard", "The application's latest tasks, newest first", DashboardTasksQuery, ok=DashboardTasks
    ),
    "dashboard-webhook-events": Operation(
        "dashboard",
        "The latest webhook events received for the application's users, newest first",
        DashboardListQuery,
        ok=DashboardWebhookEvents,
    ),
    "dashboard-deliveries": Operation(
        "dashboard",
        "The deliveries of the application's latest events to its webhook endpoints, newest event first",
        DashboardListQuery,
        ok=DashboardDeliveries,
    ),
    "connect-link": Operation(
        "connections",
        "Make a link to the hosted connect page for a user (signed, not stored): send it to them to connect"
        " their providers",
        UserPath,
        body=ConnectLinkIn,
        body_required=False,
        ok=ConnectLink,
        errors={403: REDIRECT_NOT_ALLOWED, 404: "User not found"},
    ),
    "connect-page": Operation(
        "connections",
        "The hosted connect page of a link: the providers to connect (a page for people)",
        ConnectPagePath,
        ok=str,
        media_type="text/html",
        validated=False,
        html_errors=True,
        errors={403: BAD_LINK, 404: BAD_LINK},
    ),
    "connect-start": Operation(
        "connections",
        "From the connect page: start a provider's OAuth flow, redirecting to its authorization page",
        ConnectStartPath,
        status=302,
        validated=False,
        html_errors=True,
        errors={403: BAD_LINK, 404: f"{BAD_LINK} Or: the provider is not set up"},
    ),
    "connect-result": Operation(
        "connections",
        "Where a flow from a connect link without a redirect URI ends: says whether it connected",
        ConnectResultQuery,
        ok=str,
        media_type="text/html",
        validated=False,
        html_errors=True,
        errors={400: "Not the outcome of a flow"},
        stateful=False,
    ),
    "events-stream": Operation(
        "events",
        "The application's events as server-sent events, in commit order, as they happen: each message's `id`"
        " is its position, `event` its type, `data` the webhook's body plus the event `id`. Resumable: a"
        " client reconnecting with `Last-Event-ID` gets every event after it, none twice",
        StreamQuery,
        ok=StreamMessage,
        media_type="text/event-stream",
        errors=USER_NOT_FOUND,
        headers={
            "Last-Event-ID": (
                "The `id` of the last message received: the stream goes on after it",
                {"type": "string", "pattern": r"^[ \t]*(0|[0-9]{1,19}-[0-9]{1,19})?[ \t]*$"},  # empty: none
            )
        },
    ),
    "webhook": _webhook(
        "Receive a provider's notification", WebhookPath, "Invalid webhook signature", "No webhook for provider"
    ),
    "webhook-unsigned": _webhook(
        "Receive the notification of a provider that signs nothing (Garmin, Strava) at its secret URL",
        UnsignedWebhookPath,
        "Invalid webhook (Strava: another subscription's event)",
        "No webhook for provider at this URL",
    ),
    "webhook-strava-validation": Operation(
        "webhooks",
        "Strava's subscription validation: echoes hub.challenge",
        StravaChallengeQuery,
        ok=StravaChallenge,
        validated=False,
        errors={
            400: "Expected hub.mode=subscribe and hub.challenge",
            403: "Invalid verify token",
            404: "No webhook for provider at this URL",
            429: TOO_MANY_DELIVERIES,
        },
    ),
    "endpoints-create": Operation(
        "outgoing",
        "Register an endpoint: events of the types it takes are sent to it, signed with the secret shown"
        " in this answer only",
        body=EndpointIn,
        ok=EndpointCreated,
        status=201,
        errors=URL_REFUSED,
    ),
    "endpoints": Operation("outgoing", "Your endpoints", ok=list[Endpoint]),
    "endpoint": Operation("outgoing", "An endpoint", EndpointPath, ok=Endpoint, errors=ENDPOINT_NOT_FOUND),
    "endpoint-update": Operation(
        "outgoing",
        "Change an endpoint; `enabled: true` turns on one disabled for its failures",
        EndpointPath,
        body=EndpointPatch,
        ok=Endpoint,
        errors=ENDPOINT_NOT_FOUND | URL_REFUSED,
    ),
    "endpoint-delete": Operation(
        "outgoing",
        "Delete an endpoint (its pending deliveries too)",
        EndpointPath,
        status=204,
        errors=ENDPOINT_NOT_FOUND,
    ),
    "endpoint-rotate": Operation(
        "outgoing",
        "A new signing secret; the old one also signs for overlap_s (both signatures are sent)",
        EndpointPath,
        body=RotateIn,
        body_required=False,
        ok=SecretRotated,
        errors=ENDPOINT_NOT_FOUND,
    ),
    "endpoint-test": Operation(
        "outgoing",
        "Send an endpoint.test event to the endpoint",
        EndpointPath,
        ok=TestSent,
        status=202,
        errors=ENDPOINT_NOT_FOUND,
    ),
    "endpoint-replay": Operation(
        "outgoing",
        "Deliver again one event, or the events of a time range, to the endpoint",
        EndpointPath,
        body=ReplayIn,
        ok=Replayed,
        status=202,
        errors={404: "Webhook endpoint not found, or: Event not found"},
    ),
    "event-deliveries": Operation(
        "outgoing",
        "An event's deliveries to your endpoints, each with its attempts (status, latency, the answer's start)",
        EventPath,
        ok=EventDeliveries,
        errors={404: "Event not found"},
    ),
}


def _webhooks(schemas: dict[str, Any]) -> dict[str, Any]:
    """The events sent to endpoints, one POST per type: body {type, timestamp, data}, headers
    webhook-id (the event's id), webhook-timestamp and webhook-signature (Standard Webhooks)."""
    bodies, definitions = TypeAdapter.json_schemas(
        [(t, "serialization", TypeAdapter(event_model(t))) for t in EVENT_DATA], ref_template=REF
    )
    schemas.update(definitions.get("$defs", {}))
    headers = {name: {"required": True, "schema": {"type": "string"}, "description": text} for name, text in (
        ("webhook-id", "The event's id: the same on every attempt (deduplicate by it)"),
        ("webhook-timestamp", "Unix seconds of this attempt"),
        ("webhook-signature", "v1,<base64 HMAC-SHA256>, space-separated (two during a secret's rotation)"),
    )}  # fmt: skip
    return {
        event_type: {"post": {
            "operationId": f"event-{event_type}", "tags": ["outgoing"], "summary": summary, "security": [],
            "parameters": [{"name": name, "in": "header", **spec} for name, spec in headers.items()],
            "requestBody": {"required": True, "content": _json_content(bodies[(event_type, "serialization")])},
            "responses": {"200": {"description": "Any 2xx: delivered; anything else (or none in time): tried again"}},
        }}
        for event_type, (_, summary) in EVENT_DATA.items()
    }  # fmt: skip


class UndocumentedRoute(LookupError):
    pass


def _error_statuses(name: str, op: Operation) -> dict[int, str]:
    statuses = dict(op.errors)
    if name not in PUBLIC_ROUTES:
        statuses[401] = INVALID_KEY
    if op.validated and op.body is not None:
        statuses |= {400: "The body is not JSON", 413: "The body is too large"}
    if op.validated and (op.params is not None or op.body is not None):
        statuses[422] = "A parameter or the body is invalid: the detail names it"
    if op.stateful:
        statuses.setdefault(503, "PostgreSQL or Redis is unavailable or busy (a query timed out): try again later")
    return dict(sorted(statuses.items()))


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's None is its absence: `anyOf [X, null]` becomes X."""
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s != {"type": "null"}]
        schema = {k: v for k, v in schema.items() if k != "anyOf"} | (
            options[0] if len(options) == 1 else {"anyOf": options}
        )
    if schema.get("default", "") is None:
        del schema["default"]
    return schema


def _parameters(model: type[BaseModel], path: str, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    in_path = set(re.findall(r"\{(\w+)", path))
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.get("$defs", {}))
    missing = in_path - set(schema["properties"])
    if missing:
        raise UndocumentedRoute(f"{path}: {model.__name__} has no field for {', '.join(sorted(missing))}")
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _absent_not_null({k: v for k, v in prop.items() if k != "title"})
        where = "path" if name in in_path else "query"
        parameter = {"name": name, "in": where, "required": where == "path" or name in schema.get("required", ())}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameters.append(parameter | {"schema": prop})
    return parameters


_FILE = {"type": "string", "format": "binary"}
_UPLOAD = {
    "application/zip": {"schema": _FILE},
    "application/octet-stream": {"schema": _FILE},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": _FILE}, "required": ["file"]}},
}


def _json_content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(
    name: str, path: str, op: Operation, types: dict[Any, dict[str, Any]], schemas: dict[str, Any]
) -> dict[str, Any]:
    error_ref = {"$ref": REF.format(model="Error")}
    responses: dict[str, Any] = {str(op.status): {"description": HTTPStatus(op.status).phrase}}
    if op.ok is not None:
        responses[str(op.status)]["content"] = _json_content(types[("ok", name)], op.media_type)
    for status, description in _error_statuses(name, op).items():
        content = _json_content(error_ref)
        if op.html_errors:
            content |= _json_content({"type": "string"}, "text/html")
        responses[str(status)] = {"description": description, "content": content}
    operation: dict[str, Any] = {"operationId": name, "tags": [op.tag], "summary": op.summary}
    if name in PUBLIC_ROUTES:
        operation["security"] = []
    if op.params is not None:
        operation["parameters"] = _parameters(op.params, path, schemas)
    for header, (description, schema) in op.headers.items():
        parameter = {"name": header, "in": "header", "required": False, "description": description}
        operation.setdefault("parameters", []).append(parameter | {"schema": schema})
    if op.body is not None:
        operation["requestBody"] = {"required": op.body_required, "content": _json_content(types[("body", name)])}
    if op.upload:
        operation["requestBody"] = {"required": True, "content": _UPLOAD}
    return operation | {"responses": responses}


def _type_schemas(operations: Mapping[str, Operation]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """JSON schemas of every body and response type, sharing one set of component schemas."""
    inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = [("error", "serialization", TypeAdapter(Error))]
    for name, op in operations.items():
        if op.body is not None:
            inputs.append((("body", name), "validation", TypeAdapter(op.body)))
        if op.ok is not None:
            inputs.append((("ok", name), "serialization", TypeAdapter(op.ok)))
    by_key, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    return {key: schema for (key, _), schema in by_key.items()}, definitions.get("$defs", {})


def document(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI document of every route but static files; UndocumentedRoute names any route
    that has no entry in OPERATIONS."""
    routes = [r for r in router.routes() if r.method != "HEAD" and not isinstance(r.resource, web.StaticResource)]
    missing = sorted({f"{r.method} {r.resource.canonical if r.resource else '?'} ({r.name})"
                      for r in routes if r.name not in OPERATIONS})  # fmt: skip
    if missing:
        raise UndocumentedRoute(f"routes without an entry in api/openapi.py OPERATIONS: {'; '.join(missing)}")
    types, schemas = _type_schemas({r.name: OPERATIONS[r.name] for r in routes if r.name})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        assert route.name is not None
        assert route.resource is not None
        op = OPERATIONS[route.name]
        if op.tag not in TAGS:
            raise UndocumentedRoute(f"route {route.name}: tag {op.tag!r} is not in api/openapi.py TAGS")
        path = route.resource.canonical
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.name, path, op, types, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wearsync",
            "version": version("wearsync"),
            "description": "Pulls wearable data from Garmin, Strava, Polar, Suunto and Whoop into PostgreSQL. "
            'Every call but the public ones needs an `X-API-Key` header; every error body is `{"detail": ...}`.',
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "webhooks": _webhooks(schemas),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }


# The document as JSON, made on the first request (every route is added by then).
DOCUMENT = web.AppKey("openapi_document", dict[str, str])


async def serve_document(request: web.Request) -> web.Response:
    cache = request.app[DOCUMENT]
    if "json" not in cache:
        cache["json"] = json.dumps(document(request.app.router))
    return web.Response(text=cache["json"], content_type="application/json")


async def docs_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DOCS_DIR / "index.html")


async def docs_redirect(request: web.Request) -> web.Response:
    # The page's assets are relative to /docs: served at /docs/ they would not load.
    raise web.HTTPMovedPermanently(request.app.router["docs"].url_for())
