"""The dashboard: a read-only page at /dashboard (HTML, JavaScript and CSS shipped in the package,
api/web/) for one application, and the read endpoints it needs beyond the rest of the API.

Signing in: the page asks for an API key and keeps it in the tab's sessionStorage, and sends it as
`X-API-Key` like any client, so the dashboard is one more client of the JSON API, with the same
checks (and nothing it can do that the key cannot). A cookie would make every API route accept a
credential the browser sends by itself: each state-changing route ("sync now") would then need CSRF
protection, and the key would outlive the tab. What sessionStorage costs is exposure to a script
injected into the page; the page allows only its own scripts (Content-Security-Policy), builds its
DOM with textContent, never HTML from data, and the key is gone when the tab closes.
"""

from pathlib import Path

from aiohttp import web

from wearsync.api.common import APP_ID, DEPS, json_response, validate
from wearsync.api.models import DashboardListQuery, DashboardTasksQuery, DashboardUsersQuery
from wearsync.db import dashboard
from wearsync.tasks import shown_progress

WEB_DIR = Path(__file__).parent / "web"  # dashboard.html, and static/ (its script and the pages' CSS)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_QUERY = {"limit": "query", "offset": "query", "status": "query", "external_id": "query"}


async def page(request: web.Request) -> web.FileResponse:
    """GET /dashboard: the page (it signs in and reads the API itself)."""
    return web.FileResponse(WEB_DIR / "dashboard.html", headers=PAGE_HEADERS)


async def users(request: web.Request) -> web.Response:
    """GET /api/v1/dashboard/users: the application's users, newest first, with their connections'
    health."""
    query = validate(DashboardUsersQuery, dict(request.query), _QUERY)
    db, app_id = request.app[DEPS].db, request[APP_ID]
    rows = await dashboard.users_page(db, app_id, query.limit, query.offset, query.external_id)
    health = await dashboard.connections_health(db, [row["id"] for row in rows])
    connections: dict[object, list[dict[str, object]]] = {}
    for c in health:
        connections.setdefault(c["user_id"], []).append({k: v for k, v in c.items() if k != "user_id"})
    data = [
        {
            "id": row["public_id"],
            "external_id": row["external_id"],
            "created_at": row["created_at"],
            "connections": connections.get(row["id"], []),
        }
        for row in rows
    ]
    return json_response({"total": await dashboard.count_users(db, app_id, query.external_id), "data": data})


async def tasks(request: web.Request) -> web.Response:
    """GET /api/v1/dashboard/tasks: the application's latest tasks with their progress per type."""
    query = validate(DashboardTasksQuery, dict(request.query), _QUERY)
    status = query.status.value if query.status else None
    rows = await dashboard.recent_tasks(request.app[DEPS].db, request[APP_ID], status, query.limit)
    data = [dict(row) | {"progress": shown_progress(row["progress"])} for row in rows]
    return json_response({"data": data})


async def webhook_events(request: web.Request) -> web.Response:
    """GET /api/v1/dashboard/webhook-events: the latest webhook events received for the
    application's users."""
    query = validate(DashboardListQuery, dict(request.query), _QUERY)
    rows = await dashboard.webhook_events(request.app[DEPS].db, request[APP_ID], query.limit)
    return json_response({"data": [dict(row) for row in rows]})


async def deliveries(request: web.Request) -> web.Response:
    """GET /api/v1/dashboard/deliveries: the deliveries of the application's latest events to its
    webhook endpoints, with each one's last answer."""
    query = validate(DashboardListQuery, dict(request.query), _QUERY)
    rows = await dashboard.recent_deliveries(request.app[DEPS].db, request[APP_ID], query.limit)
    return json_response({"data": [dict(row) for row in rows]})
