"""For the hostile-input tests: hypothesis settings and strategies (arbitrary JSON, the hostile
values upstream data and clients can carry, mutations of valid payloads) and webhook signing."""

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

from wearsync.dev import SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_WEBHOOK_SECRET, dev_environment
from wearsync.providers import garmin, whoop
from wearsync.settings import webhook_path

# How many examples and which: the profile tests/conftest.py loads (`make test`: the same 60 on
# every run; `make test-fuzz`: thousands, new ones each run). The function-scoped fixtures (a
# database pool, an API client) are shared by a test's examples on purpose: each example leaves
# no trace.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Values that have broken parsers: nulls, wrong types, numbers beyond every range, numbers as
# strings, absurd dates, characters PostgreSQL refuses, very long strings.
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 2**31, -(2**31) - 1, 2**63, 10**30, -(10**30), 1e308, -1e308, 1e-320,
    float("nan"), float("inf"), float("-inf"), "NaN", "nan", "inf", "-Infinity", "1e999", "", " ", "0",
    "-1", "9" * 30, "\x00", "a\x00b", "\ud800", "\udfff", "x" * 10_000, "é" * 300, "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59+14:00", "9999-12-31T23:59:59.999-14:00", "0001-01-01", "9999-12-31", "1970-01-01T00:00:00",
    "2024-02-30T00:00:00Z", "2024-05-01T06:30:00Z", "not a date", "PT", "P", "PT99999999999999H", "+99:99",
    [], {}, [None], {"": None},
]  # fmt: skip

# Those a query parameter or a header can carry: text, short enough for a request line.
HOSTILE_TEXT = [str(v) for v in HOSTILE if isinstance(v, str | int | float) and len(str(v)) < 1000]

F = TypeVar("F", bound=Callable[..., Any])


def with_examples(cases: Iterable[dict[str, Any]]) -> Callable[[F], F]:
    """`@example(**case)` for every case: tried first on every run, whatever the profile draws."""

    def decorate(test: F) -> F:
        for case in cases:
            test = example(**case)(test)
        return test

    return decorate


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: Python's json reads them
    st.text(max_size=30),
    st.sampled_from(HOSTILE),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, seed: Any, max_changes: int = 3) -> Any:
    """`seed` (valid JSON, as a provider serves it) with a few of its values, anywhere in it,
    removed or replaced by hostile or arbitrary ones."""
    value = _copy(seed)
    for _ in range(draw(st.integers(1, max_changes))):
        value = _mutate_somewhere(draw, value)
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _mutate_somewhere(draw: st.DrawFn, value: Any) -> Any:
    """Walk down a random path and change what is there (the root itself is rarely replaced)."""
    if isinstance(value, dict) and value and draw(st.integers(0, 9)) > 0:
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.integers(0, 5)) == 0:
            return {k: v for k, v in value.items() if k != key}  # a missing field
        return value | {key: _mutate_somewhere(draw, value[key])}
    if isinstance(value, list) and value and draw(st.integers(0, 9)) > 0:
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], _mutate_somewhere(draw, value[index]), *value[index + 1 :]]
    return draw(st.one_of(st.sampled_from(HOSTILE), json_values))


def hook_path(provider: str) -> str:
    """Where the tests' API (configured as `make run`'s) takes the provider's webhook: with the
    path secret of a provider that signs nothing."""
    secret = dev_environment({}, "").get(f"WEARSYNC_{provider.upper()}_WEBHOOK_PATH_SECRET", "")
    return webhook_path(provider, secret)


def signed_headers(provider: str, body: bytes) -> dict[str, str]:
    """The headers with which the simulated provider would sign `body` (dev secrets)."""
    if provider in ("polar", "suunto"):
        name = "Polar-Webhook-Signature" if provider == "polar" else "X-HMAC-SHA256-Signature"
        return {name: hmac.new(SIM_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    if provider == "whoop":
        timestamp = str(int(time.time() * 1000))
        return {whoop.SIGNATURE: whoop.signature(SIM_CLIENT_SECRET, timestamp, body), whoop.TIMESTAMP: timestamp}
    if provider == "garmin":  # signs nothing, but names the app it delivers to
        return {garmin.CLIENT_ID_HEADER: SIM_CLIENT_ID}
    return {}
