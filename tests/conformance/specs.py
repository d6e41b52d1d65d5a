"""The providers' own machine-readable specifications as the judge of what our clients send and
what our simulators answer.

The specs live outside the repository (`WEARSYNC_UPSTREAM_SPECS`, by default
`../shared/upstream-specs` next to the repository; see its SOURCES.md for where each came from).
Where they are absent the conformance tests are skipped, saying where they looked, unless
`WEARSYNC_REQUIRE_UPSTREAM_SPECS` is set (CI): then that is a failure.

Validation is openapi-core's, against the spec as published: Whoop's and Polar's are OpenAPI 3.0;
Strava's Swagger 2.0 document is converted to OpenAPI 3.0 mechanically first (`swagger2_to_openapi3`:
the same parameters, schemas and examples, moved to where OpenAPI 3 keeps them)."""

import functools
import json
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.testing import MockRequest, MockResponse

SPECS_ENV = "WEARSYNC_UPSTREAM_SPECS"
REQUIRE_ENV = "WEARSYNC_REQUIRE_UPSTREAM_SPECS"
REPOSITORY = Path(__file__).resolve().parents[2]
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Correction:
    """One schema of a published spec changed where the spec contradicts itself: its own example or
    description says otherwise than the schema (test_specs checks each is still needed)."""

    pointer: str  # JSON pointer to the schema object
    changes: dict[str, Any]  # keywords set; None removes one
    why: str


@dataclass(frozen=True)
class SpecFile:
    path: str  # under the specs directory
    host_url: str  # the origin the simulator's paths (the provider's own) are joined to
    swagger2: bool = False
    corrections: tuple[Correction, ...] = ()


POLAR_SAMPLE = "/components/schemas/sample/properties"
POLAR_HR = "/components/schemas/continuous-heartrate/properties/heart_rate_samples"

# Per provider: its spec, and where a simulator's path (after /<provider>/api) sits in it.
SPEC_FILES = {
    "whoop": SpecFile("whoop/openapi.json", "https://api.prod.whoop.com"),
    "strava": SpecFile("strava/swagger.bundled.json", "https://www.strava.com", swagger2=True),
    "polar": SpecFile("polar/swagger.yaml", "https://www.polaraccesslink.com", corrections=(
        Correction(f"{POLAR_SAMPLE}/sample-type", {"format": None},
                   "OpenAPI's `byte` is base64, but the spec's own example is '1': a sample type number"),
        Correction(f"{POLAR_SAMPLE}/recording-rate", {"nullable": True},
                   "its description: 'Null when recording rate is not applicable - currently only with RR-data'"),
        Correction(POLAR_HR, {"type": "array", "properties": None, "items": {"type": "object", "properties": {
                       "heart_rate": {"type": "integer"}, "sample_time": {"type": "string"}}}},
                   "continuous-heartrate's own example: a list of samples, sample_time a time of day ('00:02:08')"),
    )),
}  # fmt: skip


def operation_name(method: str, path: str, operation: dict[str, Any]) -> str:
    """An operation's operationId; where the spec gives none (Polar's sleep, nightly recharge and
    continuous heart rate by date), "<METHOD> <path template>"."""
    return str(operation.get("operationId") or f"{method.upper()} {path}")


def specs_dir() -> Path:
    configured = os.environ.get(SPECS_ENV)
    return Path(configured) if configured else REPOSITORY.parent / "shared" / "upstream-specs"


@dataclass(frozen=True)
class UpstreamSpec:
    provider: str
    document: dict[str, Any]  # as OpenAPI 3
    api: OpenAPI
    host_url: str

    def operation(self, operation_id: str) -> tuple[str, str, dict[str, Any]]:
        """(method, path template, operation) of an operationId."""
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                if method in HTTP_METHODS and operation_name(method, path, operation) == operation_id:
                    return method, path, operation
        raise KeyError(operation_id)

    def parameters(self, operation_id: str) -> list[dict[str, Any]]:
        """The operation's parameters and its path's, references resolved."""
        _, path, operation = self.operation(operation_id)
        listed = self.document["paths"][path].get("parameters", []) + operation.get("parameters", [])
        return [self._resolved(p) for p in listed]

    def _resolved(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.document["components"]["schemas"][name]
        return schema


def load(provider: str) -> UpstreamSpec:
    """The provider's spec, or a skip (a failure under WEARSYNC_REQUIRE_UPSTREAM_SPECS) saying where
    it was looked for."""
    file = SPEC_FILES[provider]
    path = specs_dir() / file.path
    if not path.is_file():
        message = f"{provider}'s spec not found at {path} (set {SPECS_ENV} to the upstream-specs directory)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return _load(provider, str(path))


def published(provider: str, path: str) -> dict[str, Any]:
    """The spec as its provider published it (as OpenAPI 3), without our corrections."""
    text = Path(path).read_text()
    document: dict[str, Any] = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    return swagger2_to_openapi3(document) if SPEC_FILES[provider].swagger2 else document


@functools.cache
def _load(provider: str, path: str) -> UpstreamSpec:
    document, file = published(provider, path), SPEC_FILES[provider]
    for correction in file.corrections:
        corrected(document, correction)
    # The documents are not checked as documents: Whoop's lacks `info.version`, which strict OpenAPI
    # requires; what matters here is its operations and schemas.
    api = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))
    return UpstreamSpec(provider, document, api, file.host_url)


def pointed(document: dict[str, Any], pointer: str) -> dict[str, Any]:
    """The object a JSON pointer names (`~1` is `/`, `~0` is `~`)."""
    node: Any = document
    for part in pointer.removeprefix("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    assert isinstance(node, dict), pointer
    return node


def corrected(document: dict[str, Any], correction: Correction) -> None:
    schema = pointed(document, correction.pointer)
    for keyword, value in correction.changes.items():
        if value is None:
            schema.pop(keyword, None)
        else:
            schema[keyword] = value


# ---- Swagger 2.0 -> OpenAPI 3.0 ----------------------------------------------------------------

# The keywords a Swagger 2.0 non-body parameter shares with a JSON schema.
_SCHEMA_KEYWORDS = ("type", "format", "items", "enum", "default", "minimum", "maximum", "exclusiveMinimum",
                    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems")  # fmt: skip


def _refs_moved(node: Any) -> Any:
    """`#/definitions/X` -> `#/components/schemas/X`, everywhere in `node`."""
    if isinstance(node, dict):
        return {
            k: v.replace("#/definitions/", "#/components/schemas/") if k == "$ref" and isinstance(v, str)
            else _refs_moved(v) for k, v in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_refs_moved(v) for v in node]
    return node


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    schema = {k: parameter[k] for k in _SCHEMA_KEYWORDS if k in parameter}
    moved = {k: v for k, v in parameter.items() if k not in _SCHEMA_KEYWORDS and k != "collectionFormat"}
    if parameter.get("type") == "array":  # Swagger's default collectionFormat is csv
        moved |= {"style": "form", "explode": parameter.get("collectionFormat") == "multi"}
    return moved | {"schema": schema}


def _operation(document: dict[str, Any], operation: dict[str, Any], shared: list[dict[str, Any]]) -> dict[str, Any]:
    def resolved(p: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in p:
            found: dict[str, Any] = document["parameters"][p["$ref"].rsplit("/", 1)[-1]]
            return found
        return p

    parameters = [resolved(p) for p in shared + operation.get("parameters", [])]
    out = {k: v for k, v in operation.items() if k not in ("parameters", "responses", "consumes", "produces")}
    out["parameters"] = [_parameter(p) for p in parameters if p["in"] in ("path", "query", "header")]
    body = [p for p in parameters if p["in"] == "body"]
    form = [p for p in parameters if p["in"] == "formData"]
    if body:
        out["requestBody"] = {"content": {"application/json": {"schema": body[0]["schema"]}}}
    elif form:
        form_schema: dict[str, Any] = {
            "type": "object",
            "properties": {p["name"]: _parameter(p)["schema"] for p in form},
        }
        if required := [p["name"] for p in form if p.get("required")]:
            form_schema["required"] = required
        uploads = any(p.get("type") == "file" for p in form)
        form_type = "multipart/form-data" if uploads else "application/x-www-form-urlencoded"
        out["requestBody"] = {"content": {form_type: {"schema": form_schema}}}
    out["responses"] = {}
    for status, response in operation.get("responses", {}).items():
        converted = {"description": response.get("description", "")}
        if "schema" in response:
            media: dict[str, Any] = {"schema": response["schema"]}
            example = response.get("examples", {}).get("application/json")
            if example is not None:
                media["example"] = example
            converted["content"] = {"application/json": media}
        out["responses"][status] = converted
    return out


def _nullable(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` that also takes null; a reference is copied in (OpenAPI 3.0 ignores a $ref's siblings)."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema | {"nullable": True}


def _parts(document: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and the schemas it is made of (`allOf`, however deep), references resolved."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return [schema, *(p for part in schema.get("allOf", []) for p in _parts(document, part))]


def _null_where_examples_are(document: dict[str, Any], schema: dict[str, Any], example: Any) -> None:
    """Mark `nullable` each property that `example` (an instance of `schema`) shows as null."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(example, list) and "items" in schema:
        for item in example:
            _null_where_examples_are(document, schema["items"], item)
    elif isinstance(example, dict):
        for part in _parts(document, schema):
            for name, value in example.items():
                if name not in part.get("properties", {}):
                    continue
                if value is None:
                    part["properties"][name] = _nullable(document, part["properties"][name])
                else:
                    _null_where_examples_are(document, part["properties"][name], value)


def swagger2_to_openapi3(document: dict[str, Any]) -> dict[str, Any]:
    """The same API as an OpenAPI 3.0 document: servers from host and basePath, parameters with
    schemas, bodies and forms as request bodies, response schemas and examples under their media
    type, definitions as component schemas, the OAuth flow as a security scheme.

    Swagger 2.0 cannot say that a value may be null, but the document's own response examples show
    nulls (Strava's `workout_type`, `upload_id`, `start_latlng`, ...): a property an example of the
    spec shows as null is taken as nullable, and no other."""
    scheme = (document.get("schemes") or ["https"])[0]
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        paths[path] = {m: _operation(document, op, shared) for m, op in item.items() if m in HTTP_METHODS}
    schemes = {}
    for name, definition in document.get("securityDefinitions", {}).items():
        if definition.get("type") == "oauth2":
            flow = {"authorizationUrl": definition["authorizationUrl"], "tokenUrl": definition["tokenUrl"],
                    "scopes": definition.get("scopes", {})}  # fmt: skip
            schemes[name] = {"type": "oauth2", "flows": {"authorizationCode": flow}}
    converted: dict[str, Any] = _refs_moved({
        "openapi": "3.0.3",
        "info": document["info"],
        "servers": [{"url": f"{scheme}://{document['host']}{document.get('basePath', '')}"}],
        "paths": paths,
        "components": {"schemas": document.get("definitions", {}), "securitySchemes": schemes},
        **({"security": document["security"]} if "security" in document else {}),
    })  # fmt: skip
    for item in converted["paths"].values():
        for operation in item.values():
            for response in operation["responses"].values():
                media = response.get("content", {}).get("application/json", {})
                if "example" in media:
                    _null_where_examples_are(converted, media["schema"], media["example"])
    return converted


# ---- judging the simulator's request log --------------------------------------------------------


@dataclass(frozen=True)
class Judged:
    operation_id: str
    method: str
    path: str
    status: int


def _errors(e: BaseException) -> str:
    """An openapi-core error with the schema errors under it, readable."""
    parts = [f"{type(e).__name__}: {str(e)[:300]}"]
    cause: BaseException | None = e.__cause__ or e.__context__
    while cause is not None:
        parts.append(f"{type(cause).__name__}: {str(cause)[:300]}")
        for schema_error in getattr(cause, "schema_errors", ()):
            parts.append(f"  at {'/'.join(str(p) for p in schema_error.absolute_path)}: {schema_error.message}")
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)


def judge(spec: UpstreamSpec, entry: dict[str, Any]) -> Judged:
    """Check one exchange the simulator recorded (its request log with `record_exchanges`): the
    request matches an operation of the spec (method, path, the query parameter names it declares,
    their values and the body by their schemas) and the simulator's answer validates against that
    operation's response for its status. AssertionError says what does not."""
    method, path, query = entry["method"].lower(), entry["path"], entry["query"]
    headers = entry.get("headers", {})
    request = MockRequest(spec.host_url, method, path, args=query, headers=headers,
                          data=entry.get("body", "").encode() or None,
                          content_type=headers.get("Content-Type", "application/json").split(";")[0])  # fmt: skip
    where = f"{entry['method']} {path}?{query}"
    try:
        found = APICallPathFinder(spec.api.spec).find(method, request.host_url + path)
    except OpenAPIError as e:
        raise AssertionError(f"{where} is no operation of {spec.provider}'s spec: {_errors(e)}") from None
    named = "operationId" in found.operation
    operation_id = str(found.operation["operationId"]) if named else f"{method.upper()} {found.path_result.pattern}"
    declared = {p["name"] for p in spec.parameters(operation_id) if p["in"] == "query"}
    undeclared = set(query) - declared
    assert not undeclared, f"{where}: query parameters {sorted(undeclared)} are not in {operation_id} ({declared})"
    _, _, operation = spec.operation(operation_id)
    if operation.get("security", spec.document.get("security")):
        # openapi-core checks no OAuth 2 scheme (it warns and passes): the bearer token is checked here.
        assert headers.get("Authorization", "").startswith("Bearer "), f"{where} carries no bearer token"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
            spec.api.validate_request(request)
    except OpenAPIError as e:
        raise AssertionError(f"{where} does not match {operation_id}:\n{_errors(e)}") from None
    answer = entry.get("response")
    assert answer is not None, f"{where}: the simulator recorded no answer"
    response = MockResponse(answer["body"].encode(), status_code=answer["status"], headers=answer["headers"],
                            content_type=answer["content_type"])  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
            spec.api.validate_response(request, response)
    except OpenAPIError as e:
        message = f"the answer to {where} ({answer['status']}) is not {operation_id}'s"
        raise AssertionError(f"{message}:\n{_errors(e)}") from None
    return Judged(operation_id, entry["method"], path, answer["status"])


def judge_all(spec: UpstreamSpec, log: Iterable[dict[str, Any]]) -> list[Judged]:
    """Every call of the provider's data API in the log, judged (its OAuth server's calls are not
    in the specs: the token endpoints carry no schema)."""
    return [judge(spec, entry) for entry in log if entry["provider"] == spec.provider and entry["app"] == "api"]


def example_instance(spec: UpstreamSpec, schema: dict[str, Any]) -> Any:
    """An instance of `schema` built from the spec's own `example` values (the schema's, else each
    property's, recursively); properties without one are left out."""
    if "$ref" in schema:
        return example_instance(spec, spec.schema(schema["$ref"].rsplit("/", 1)[-1]))
    if "example" in schema:
        return schema["example"]
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged |= example_instance(spec, part) or {}
        return merged
    if schema.get("type") == "array" and "items" in schema:
        item = example_instance(spec, schema["items"])
        return [] if item is None else [item]
    if "properties" in schema:
        built = {name: example_instance(spec, sub) for name, sub in schema["properties"].items()}
        return {k: v for k, v in built.items() if v is not None}
    return None


def paths_named_in_source(spec: UpstreamSpec, source: str, prefix: str = "") -> set[str]:
    """The spec's path templates that the data-API paths written in a client's source (strings
    whose path starts with the spec's base path and `prefix`, `{...}` placeholders taken as path
    parameters) stand for: a call to a path the conformance test does not list shows up here,
    even where no test exercises it. AssertionError for a path that is in no template of the spec."""
    base = urlsplit(spec.document["servers"][0]["url"]).path.rstrip("/")
    assert base + prefix, "a prefix is needed where the spec's server has no base path"
    templates = {t: re.compile(re.sub(r"\\{[^}]*\\}", "[^/]+", re.escape(t))) for t in spec.document["paths"]}
    named = set()
    # In a string: right after its quote, or after an f-string's `{...}` (the host's setting).
    for literal in re.findall(rf"[\"'}}]({re.escape(base + prefix)}/[^\"'?]*)", source):
        path = re.sub(r"\{[^}]*\}", "1", literal).removeprefix(base)
        matching = {t for t, pattern in templates.items() if pattern.fullmatch(path)}
        assert matching, f"{literal} (named in the client) is no path of {spec.provider}'s spec"
        named |= matching
    return named
