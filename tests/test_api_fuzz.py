"""Schemathesis against the API's own OpenAPI document: the real app on a real socket, a valid API
key, a running worker and a user connected to every provider, with tasks, so that generated
requests reach past the 404s into syncs, tasks and connections.

For every operation, valid and invalid requests: no 5xx, every 4xx is `{"detail": <string>}`, and
status, content type and body are the documented ones. What it found (non-ASCII verify tokens
and signatures, NUL characters in bodies: 500s) is pinned in test_hostile.py."""

import asyncio
from typing import Any

import asyncpg
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import Factory, start_sync
from wearsync.models import unix_or_iso
from wearsync.providers import PROVIDERS
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
Operation = APIOperation[Any, Any, Any, Any]

EXAMPLES = 30  # per operation and mode: bounded, so the whole run takes seconds
# Bodies shaped by each provider, not by this API's schema: a valid JSON object may still be
# an unreadable delivery (400), so only the other checks apply.
PROVIDER_SHAPED = {"POST /api/v1/webhooks/{provider}", "POST /api/v1/webhooks/{provider}/{path_secret}"}


def no_server_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No 5xx but the contract's 501: a data type the provider does not support (schemathesis'
    own check, which it replaces, counts that as a server error)."""
    assert response.status_code < 500 or response.status_code == 501, f"server error {response.status_code}"
    return None


# Pages for people (the hosted connect flow): their own errors are pages too, documented as text/html.
PAGES = {"GET /connect/result", "GET /connect/{user_id}", "GET /connect/{user_id}/{provider}"}


def error_is_detail(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx and 5xx is JSON `{"detail": <string>}` (a page's may be a page)."""
    if case.operation.label in PAGES and response.headers.get("content-type", [""])[0].startswith("text/html"):
        assert "<h1>" in response.text, f"{response.status_code}: not a page: {response.text[:200]!r}"
        return None
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict), f"{response.status_code}: not a JSON object: {response.text[:200]!r}"
        assert isinstance(body.get("detail"), str), f"{response.status_code}: no string detail: {body!r}"
    return None


def in_order(query: dict[str, Any] | None) -> None:
    """Rules the schema cannot state: a range's start is not after its end (a Garmin sync's, a
    list's), and a list's cursor is one the API gave out (here: none, the first page)."""
    if not query:
        return
    query.pop("cursor", None)
    for start, end in (("summary_start_time", "summary_end_time"), ("start", "end")):
        times = (query.get(start), query.get(end))
        if None not in times and unix_or_iso(times[0]) > unix_or_iso(times[1]):
            query[start], query[end] = times[1], times[0]


def has_inputs(operation: Operation) -> bool:
    return bool(len(operation.path_parameters) or len(operation.query) or len(operation.body))


def cases(operation: Operation, mode: GenerationMode) -> st.SearchStrategy[Case[Any]]:
    """Schemathesis' cases of the operation; the event stream's end once they have sent what there
    is (`follow=false`): a stream that follows never ends. (Not in `run` below, whose source seeds
    the derandomized examples of every operation.)"""
    strategy: st.SearchStrategy[Case[Any]] = operation.as_strategy(generation_mode=mode)
    if operation.path != "/api/v1/events/stream":
        return strategy

    def finite(case: Case[Any]) -> Case[Any]:
        case.query = case.query or {}
        if mode is GenerationMode.POSITIVE or "follow" not in case.query:
            case.query["follow"] = "false"
        return case

    return strategy.map(finite)


def fuzz_operation(
    operation: Operation, mode: GenerationMode, base_url: str, key: str, known: dict[str, list[str]]
) -> None:
    """Schemathesis' cases for one operation in one mode, each sent and checked; raises the failures."""
    excluded: list[CheckFunction] = [not_a_server_error] + (
        [positive_data_acceptance] if operation.label in PROVIDER_SHAPED else []
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(operation, mode), use_known=st.booleans(), pick=st.integers(0, 9))
    def run(case: Case[Any], use_known: bool, pick: int) -> None:
        if mode is GenerationMode.NEGATIVE and case.query:
            # A query parameter without a name, or whose value is None, is not sent at all: send
            # it (named, empty) as the unknown parameter it is meant to be.
            case.query = {name or "unnamed": "" if value is None else value for name, value in case.query.items()}
        if mode is GenerationMode.POSITIVE:
            in_order(case.query)
            if use_known and case.path_parameters:  # ids that exist, for the deeper paths
                for name in case.path_parameters.keys() & known.keys():
                    case.path_parameters[name] = known[name][pick % len(known[name])]
        case.call_and_validate(
            base_url=base_url,
            headers={"X-API-Key": key},
            additional_checks=[no_server_error, error_is_detail],
            excluded_checks=excluded,
            timeout=30,
        )

    run()


def fuzz(base_url: str, key: str, known: dict[str, list[str]]) -> list[str]:
    """Every operation of the served document in both modes (in a thread: schemathesis blocks);
    the failures, one text per operation and mode."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not has_inputs(operation):
                continue  # nothing to make invalid
            try:
                fuzz_operation(operation, mode, base_url, key, known)
            except (Exception, FailureGroup) as e:  # FailureGroup: several distinct failures
                failures.append(f"{operation.label} ({mode.value}):\n{e}")
    return failures


async def test_schemathesis_finds_nothing(
    client: Client, factory: Factory, sim_state: SimState, worker: Worker, db: asyncpg.Pool
) -> None:
    """The worker runs what the API queues: a sync with `async=false` that joins a queued
    identical one waits for its outcome."""
    key = await factory.api_key()
    user_id = await factory.user(key)
    for provider in PROVIDERS:
        await factory.connect(key, user_id, provider, f"fuzz-{provider}")
    finished = await start_sync(client, key, "polar", user_id, "async=false")
    queued = await start_sync(client, key, "suunto", user_id)
    garmin = await start_sync(client, key, "garmin", user_id, "async=false")
    known = {"user_id": [user_id], "task_id": [finished, queued, garmin]}
    failures = await asyncio.to_thread(fuzz, str(client.make_url("")).rstrip("/"), key, known)
    assert not failures, "\n\n".join(failures)
    # Every task the requests started ends (and no job is cut off when the worker stops).
    deadline = asyncio.get_running_loop().time() + 60
    while open_tasks := await db.fetchval("SELECT count(*) FROM sync_tasks WHERE status IN ('queued', 'running')"):
        assert asyncio.get_running_loop().time() < deadline, f"{open_tasks} tasks still queued or running"
        await asyncio.sleep(0.2)
