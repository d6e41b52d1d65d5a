"""The OpenAPI document covers every route and is valid OpenAPI 3; /docs is served from the package."""

import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hatchling.builders.wheel import WheelBuilder
from openapi_spec_validator import validate
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from wearsync.api.app import create_app
from wearsync.api.dashboard import WEB_DIR
from wearsync.api.middlewares import INVALID_KEY, PUBLIC_ROUTES
from wearsync.api.openapi import DOCS_DIR, UndocumentedRoute, document
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


def api_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route but static files and the HEADs aiohttp adds to GETs."""
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD" and not isinstance(r.resource, web.StaticResource)
    }


async def test_every_route_is_in_the_document_and_it_is_valid_openapi(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")  # public: no key
    assert resp.status == 200, await resp.text()
    doc: dict[str, Any] = await resp.json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    undocumented = api_routes(client.app) - documented
    assert not undocumented, f"add these routes to OPERATIONS in api/openapi.py: {sorted(undocumented)}"
    assert len(documented) == len(api_routes(client.app))


def test_a_route_without_an_entry_fails(settings: Settings) -> None:
    """What happens to whoever adds a route and forgets its line in OPERATIONS."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = create_app(settings)
    app.router.add_get("/api/v1/forgotten", handler, name="forgotten")
    with pytest.raises(UndocumentedRoute, match=r"GET /api/v1/forgotten \(forgotten\)"):
        document(app.router)
    app = create_app(settings)
    app.router.add_get("/api/v1/nameless", handler)
    with pytest.raises(UndocumentedRoute, match="/api/v1/nameless"):
        document(app.router)


def test_operations_carry_models_security_and_errors(settings: Settings) -> None:
    doc = document(create_app(settings).router)
    assert doc["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            public = op["operationId"] in PUBLIC_ROUTES
            assert (op.get("security") == []) == public, f"{method} {path}"
            if not public:
                assert op["responses"]["401"]["description"] == INVALID_KEY, f"{method} {path}"
            assert op["tags"], f"{method} {path} has no tag"
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
    sync = doc["paths"]["/api/v1/{provider}/users/{user_id}/sync"]["post"]
    where = {p["name"]: p["in"] for p in sync["parameters"]}
    assert where == {"provider": "path", "user_id": "path"} | {
        name: "query" for name in where if name not in ("provider", "user_id")
    }
    assert {"async", "data_type", "since", "limit", "summary_start_time", "samples"} <= set(where)
    assert set(sync["responses"]) == {"200", "401", "403", "404", "422", "501", "503", "504"}
    task = doc["paths"]["/api/v1/tasks/{task_id}"]["get"]
    assert task["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Task"}


async def test_docs_page_and_its_files_come_from_the_package(client: Client) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) == 3, page
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), f"{asset}: not from this service"
        resp = await client.get(f"/{asset}")  # relative to /docs
        assert resp.status == 200, asset
        assert resp.content_type in ("text/css", "text/javascript", "application/javascript"), asset
        assert len(await resp.read()) > 100
    resp = await client.get("/docs/static/docs.js")
    assert "api/v1/openapi.json" in await resp.text()
    resp = await client.get("/docs/static/../openapi.py")
    assert resp.status in (403, 404)


async def test_docs_with_a_trailing_slash_redirects_to_docs(client: Client) -> None:
    resp = await client.get("/docs/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (301, "/docs")
    resp = await client.get("/docs/")
    assert (resp.status, resp.url.path, resp.content_type) == (200, "/docs", "text/html")


def test_the_wheel_ships_the_docs_files(tmp_path: Path) -> None:
    """/docs and /dashboard work from an installed wheel, not only from this checkout: their files
    are package data."""
    root = Path(__file__).resolve().parent.parent
    wheel = next(iter(WheelBuilder(str(root)).build(directory=str(tmp_path), versions=["standard"])))
    names = set(zipfile.ZipFile(wheel).namelist())
    package = root / "src" / "wearsync"
    files = [path for folder in (DOCS_DIR, WEB_DIR) for path in folder.rglob("*") if path.is_file()]
    docs = {f"wearsync/{path.relative_to(package).as_posix()}" for path in files}
    assert "wearsync/api/docs/static/swagger-ui/swagger-ui-bundle.js" in docs
    assert "wearsync/api/web/static/dashboard.js" in docs
    assert docs <= names, sorted(docs - names)


async def test_a_missing_docs_file_is_logged_and_counted_as_the_404_it_answers(client: Client) -> None:
    def counted(status: str) -> float:
        labels = {"route": "docs-static", "status": status}
        return REGISTRY.get_sample_value("wearsync_http_requests_total", labels) or 0.0

    before = counted("404"), counted("200")
    with capture_logs() as lines:
        resp = await client.get("/docs/static/no-such-file.js")
        found = await client.get("/docs/static/docs.js")
    assert (resp.status, found.status) == (404, 200)
    logged = {line["path"]: line["status"] for line in lines if line.get("event") == "request"}
    assert logged == {"/docs/static/no-such-file.js": 404, "/docs/static/docs.js": 200}
    assert (counted("404"), counted("200")) == (before[0] + 1, before[1] + 1)
