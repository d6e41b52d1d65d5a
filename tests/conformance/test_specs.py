"""The judge itself: where it looks for the specs, and that it refuses what the specs refuse."""

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from tests.conformance.specs import (
    REQUIRE_ENV,
    SPEC_FILES,
    SPECS_ENV,
    Correction,
    example_instance,
    judge,
    load,
    paths_named_in_source,
    pointed,
    published,
    specs_dir,
    swagger2_to_openapi3,
)


def test_absent_specs_skip_saying_where_they_were_looked_for_or_fail_where_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"whoop's spec not found at {tmp_path}/whoop/openapi.json"):
        load("whoop")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"not found at {tmp_path}"):
        load("whoop")


def exchange(path: str, query: dict[str, str], answer: Any, status: int = 200) -> dict[str, Any]:
    """One call as the simulator records it, with a bearer token."""
    return {"provider": "whoop", "app": "api", "method": "GET", "path": path, "query": query,
            "headers": {"Authorization": "Bearer t"}, "body": "",
            "response": {"status": status, "content_type": "application/json", "headers": {},
                         "body": json.dumps(answer)}}  # fmt: skip


WORKOUT = {"id": "ecfc6a15-4661-442f-a9a4-f160dd7afae8", "user_id": 10129, "created_at": "2022-04-24T11:25:44.774Z",
           "updated_at": "2022-04-24T14:25:44.774Z", "start": "2022-04-24T02:25:44.774Z",
           "end": "2022-04-24T10:25:44.774Z", "timezone_offset": "-05:00", "sport_name": "running",
           "score_state": "PENDING_SCORE"}  # fmt: skip


def test_the_judge_refuses_what_the_spec_does_not_allow() -> None:
    spec = load("whoop")
    path = "/developer/v2/activity/workout"
    assert judge(spec, exchange(path, {"limit": "25"}, {"records": [WORKOUT]})).operation_id == "getWorkoutCollection"
    refused = [
        (exchange("/developer/v2/activity/workouts", {}, {"records": []}), "no operation"),
        (exchange(path, {"limit": "26"}, {"records": []}), "does not match getWorkoutCollection"),  # max 25
        (exchange(path, {"start": "yesterday"}, {"records": []}), "does not match"),  # not a date-time
        (exchange(path, {"page": "2"}, {"records": []}), r"query parameters \['page'\] are not in"),
        (exchange(path, {}, {"records": [], "next_token": None}), "is not getWorkoutCollection's"),  # not nullable
        (exchange(path, {}, {"records": [{k: v for k, v in WORKOUT.items() if k != "start"}]}), "is not"),
        (exchange(path, {}, {"records": []}) | {"headers": {}}, "no bearer token"),
    ]
    for entry, reason in refused:
        with pytest.raises(AssertionError, match=reason):
            judge(spec, entry)


def test_swagger2_becomes_openapi3_with_the_same_parameters_schemas_and_examples() -> None:
    swagger = {
        "swagger": "2.0", "info": {"title": "t", "version": "1"}, "host": "api.example.com", "basePath": "/v3",
        "parameters": {"page": {"name": "page", "in": "query", "type": "integer"}},
        "paths": {"/things/{id}": {"get": {
            "operationId": "getThing",
            "parameters": [{"name": "id", "in": "path", "required": True, "type": "integer", "format": "int64"},
                           {"$ref": "#/parameters/page"},
                           {"name": "keys", "in": "query", "type": "array", "items": {"type": "string"}}],
            "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/Thing"},
                                  "examples": {"application/json": {"id": 1, "name": None}}}},
        }}},
        "definitions": {"Thing": {"type": "object",
                                  "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}},
    }  # fmt: skip
    converted = swagger2_to_openapi3(swagger)
    assert converted["servers"] == [{"url": "https://api.example.com/v3"}]
    operation = converted["paths"]["/things/{id}"]["get"]
    assert operation["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "format": "int64"}},
        {"name": "page", "in": "query", "schema": {"type": "integer"}},
        {"name": "keys", "in": "query", "style": "form", "explode": False,
         "schema": {"type": "array", "items": {"type": "string"}}},
    ]  # fmt: skip
    assert operation["responses"]["200"]["content"]["application/json"] == {
        "schema": {"$ref": "#/components/schemas/Thing"}, "example": {"id": 1, "name": None},
    }  # fmt: skip
    # Swagger 2.0 has no null: what the spec's own example shows null is nullable, nothing else.
    assert converted["components"]["schemas"]["Thing"]["properties"] == {
        "id": {"type": "integer"}, "name": {"type": "string", "nullable": True},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("provider", "correction"),
    [(provider, c) for provider, file in SPEC_FILES.items() for c in file.corrections],
    ids=lambda value: value.pointer if isinstance(value, Correction) else value,
)
def test_each_correction_still_changes_what_the_published_spec_says(provider: str, correction: Correction) -> None:
    load(provider)  # skipped where the spec is absent
    schema = pointed(published(provider, str(specs_dir() / SPEC_FILES[provider].path)), correction.pointer)
    assert any(schema.get(k) != v for k, v in correction.changes.items()), f"no longer needed: {correction.why}"


def test_polars_published_sample_schema_refuses_its_own_example_and_the_null_it_describes() -> None:
    spec = load("polar")
    document = published("polar", str(specs_dir() / SPEC_FILES["polar"].path))
    sample = example_instance(spec, spec.schema("sample"))
    assert sample["sample-type"] == "1"
    as_published = OAS30Validator(document["components"]["schemas"]["sample"], format_checker=oas30_format_checker)
    assert [e.message for e in as_published.iter_errors(sample)] == ["'1' is not a 'byte'"]
    assert not as_published.is_valid(sample | {"sample-type": "AAAA"} | {"recording-rate": None})
    corrected = OAS30Validator(spec.schema("sample"), format_checker=oas30_format_checker)
    assert corrected.is_valid(sample)
    assert corrected.is_valid(sample | {"sample-type": "11", "recording-rate": None})


def test_the_paths_a_client_names_are_read_from_its_source() -> None:
    spec = load("whoop")
    source = """
    LIST = "/developer/v2/activity/workout"
    url = f"{config.api_url}/developer/v2/cycle/{cycle_id}/recovery"
    mentioned = "see GET /developer/v2/recovery"  # not a path of its own: not named
    """
    assert paths_named_in_source(spec, source) == {"/v2/activity/workout", "/v2/cycle/{cycleId}/recovery"}
    with pytest.raises(AssertionError, match=r"/developer/v2/user/measurements \(named in the client\) is no path"):
        paths_named_in_source(spec, source + 'BODY = "/developer/v2/user/measurements"')
