"""Property tests through the real app: arbitrary query values of a sync and arbitrary webhook
deliveries get a 2xx or a 4xx with `{"detail": ...}`, never a 5xx.

Examples share one API client (and database) per test: a sync for a user without a connection
stops at the 404 after validation, so nothing is enqueued; webhook events that read are stored
as they would be in production (the next test starts from empty tables)."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.conftest import Factory
from tests.fuzzing import FUZZ, HOSTILE, HOSTILE_TEXT, hook_path, json_values, mutated, signed_headers, with_examples
from tests.test_fuzz_parsers import WEBHOOK_SEEDS
from wearsync.api.models import SyncRequest
from wearsync.models import MAX_UNIX_S
from wearsync.providers import whoop
from wearsync.sync import NO_CONNECTION

Client = TestClient[web.Request, web.Application]
TIME_PARAMETERS = ("since", "summary_start_time", "summary_end_time")

# What a client might put in a time parameter: numbers of any size and sign, ISO dates and
# datetimes of every year and offset, and anything else.
time_values = st.one_of(
    st.integers().map(str),
    st.from_regex(r"\s*[+-]?[0-9]{1,20}(\.[0-9]*)?([eE][+-]?[0-9]{1,4})?\s*", fullmatch=True),
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.dates().map(str),
    # Not longer: a request line over 8190 bytes is aiohttp's to refuse (test_hostile.py).
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=40),
)


@FUZZ
@given(name=st.sampled_from(TIME_PARAMETERS), value=time_values)
@with_examples({"name": name, "value": value} for name in TIME_PARAMETERS for value in HOSTILE_TEXT)
@with_examples(
    {"name": "since", "value": value}
    for value in ("0", str(MAX_UNIX_S), str(MAX_UNIX_S + 1), "-0", "1e3", "1.5", " 7 ", "0x10", "1_000", "١٢")
)
def test_a_time_parameter_is_unix_seconds_in_range_or_a_validation_error(name: str, value: str) -> None:
    query = {"provider": "garmin", "user_id": str(uuid.uuid4()), name: value}
    try:
        parsed = getattr(SyncRequest.model_validate(query), name)
    except ValidationError as e:
        problems = {error["loc"] for error in e.errors()}
    else:
        assert isinstance(parsed, int)
        assert 0 <= parsed <= MAX_UNIX_S
        return
    assert problems <= {(name,)}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@FUZZ
@given(moment=st.datetimes(timezones=st.timezones()))
@with_examples(
    {"moment": moment}
    for moment in (
        EPOCH,
        EPOCH - timedelta(microseconds=1),
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
        datetime(2024, 3, 31, 2, 30, tzinfo=UTC),
    )
)
def test_an_iso_datetime_is_its_unix_second(moment: datetime) -> None:
    query = {"provider": "garmin", "user_id": str(uuid.uuid4()), "summary_start_time": moment.isoformat()}
    seconds = int(moment.timestamp())
    if 0 <= seconds <= MAX_UNIX_S:
        assert SyncRequest.model_validate(query).summary_start_time == seconds
    else:
        with pytest.raises(ValidationError):
            SyncRequest.model_validate(query)


@pytest.fixture
async def unconnected(factory: Factory) -> tuple[str, str]:
    """(key, user id) of a user with no connection: a valid sync request ends in a 404."""
    key = await factory.api_key()
    return key, await factory.user(key)


SYNC_PARAMETERS = (
    *TIME_PARAMETERS, "data_type", "async", "limit", "offset", "filter_by_modification_time", "samples", "zones",
    "route",
)  # fmt: skip
query_values = st.one_of(time_values, st.sampled_from(["true", "false", "1", "0", "all", "247", "workouts", "50"]))


@FUZZ
@given(query=st.dictionaries(st.sampled_from(SYNC_PARAMETERS), query_values, min_size=1, max_size=4))
async def test_sync_query_values_get_a_404_or_a_422_naming_the_parameter(
    client: Client, unconnected: tuple[str, str], query: dict[str, str]
) -> None:
    key, user_id = unconnected
    resp = await client.post(f"/api/v1/garmin/users/{user_id}/sync", params=query, headers={"X-API-Key": key})
    body = await resp.json()
    if resp.status == 404:
        assert body == {"detail": NO_CONNECTION}
        return
    assert resp.status == 422, body
    assert any(name in body["detail"] for name in query), body


CONNECTION = {
    "access_token": "a", "refresh_token": "r", "expires_at": "2030-01-01T00:00:00Z", "provider_user_id": "u",
    "scopes": ["read"],
}  # fmt: skip


@FUZZ
@given(body=st.one_of(mutated(CONNECTION), mutated({"external_id": "alice"}), json_values))
@with_examples({"body": CONNECTION | {field: value}} for field in CONNECTION for value in HOSTILE)
@with_examples({"body": {"external_id": value}} for value in HOSTILE)
async def test_a_user_or_connection_body_gets_a_2xx_or_a_4xx_with_a_detail(
    client: Client, unconnected: tuple[str, str], body: Any
) -> None:
    key, user_id = unconnected
    for method, url in [("PUT", f"/api/v1/users/{user_id}/connections/strava"), ("POST", "/api/v1/users")]:
        resp = await client.request(method, url, data=json.dumps(body), headers={"X-API-Key": key})
        if resp.status >= 300:
            assert 400 <= resp.status < 500, await resp.text()
            assert isinstance((await resp.json())["detail"], str)


SIGNATURE_HEADERS = ["Polar-Webhook-Signature", "X-HMAC-SHA256-Signature", whoop.SIGNATURE, whoop.TIMESTAMP]
# Header values a client can send (no line breaks): anything else, non-ASCII too.
header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=80),
    st.integers().map(str),
    st.sampled_from(["", "0" * 5000, "9" * 5000, "é", "ü" * 64]),
)


def _bodies(provider: str) -> st.SearchStrategy[bytes]:
    payloads = st.one_of(*(mutated(seed) for seed in WEBHOOK_SEEDS[provider]), json_values)
    return st.one_of(payloads.map(lambda p: json.dumps(p).encode()), st.binary(max_size=200))


@pytest.mark.parametrize("provider", sorted(WEBHOOK_SEEDS))
@FUZZ
@given(data=st.data())
async def test_a_webhook_delivery_gets_a_2xx_or_a_4xx_with_a_detail(
    client: Client, provider: str, data: st.DataObject
) -> None:
    body = data.draw(_bodies(provider), label="body")
    headers: dict[str, Any] = signed_headers(provider, body) if data.draw(st.booleans(), label="signed") else {}
    headers |= data.draw(st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), header_values, max_size=2), "headers")
    resp = await client.post(hook_path(provider), data=body, headers=headers)
    if resp.status == 200:
        assert set(await resp.json()) == {"received", "new"}
        return
    assert 400 <= resp.status < 500, await resp.text()
    assert isinstance((await resp.json())["detail"], str)
