"""What every provider simulator shares: signed tokens, fault and latency knobs, a request log,
and deterministic per-user randomness."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no dots: tokens are dot-separated


@dataclass
class Fault:
    """Make the next `count` matching calls fail (count < 0: every call), after letting `skip`
    matching calls through.

    Kinds: "status" (answer `status`), "timeout" (never answer), "cut" (close the connection),
    "malformed" (truncated JSON), "truncated" (the real answer's headers and half its body, then
    the connection is closed), "empty" (200 with no body), "ratelimit" (the provider's own 429),
    "expire_tokens" (the calling user's access tokens expire now; the call then goes on, and is
    refused), "event" (`event` happens upstream first, as the provider's `/_sim/P/users/U/events`
    would make it happen for the calling user; the call then goes on and sees it), "gather" (the
    `count` matching calls are held until the last of them arrives, then all go on: so a client
    that sends that many at once is seen to, whatever the timing; one that does not has each call
    answered after GATHER_WAIT_S, and the provider's peak of calls in flight shows it), "hold" (the
    `count` matching calls wait until the test sets `released`, then go on: the caller is then
    known to be inside those calls, whatever the timing)."""

    provider: str
    path_prefix: str  # matched against the provider's own path, e.g. "/247samples"
    kind: str
    status: int = 500
    count: int = 1
    skip: int = 0
    event: dict[str, Any] = field(default_factory=dict)
    gathered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # "gather": the last one came
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # "hold": let them go on

    async def gather(self) -> None:
        """Hold a call of a "gather" fault until the last of its calls arrives (its count is spent)."""
        if self.count == 0:
            self.gathered.set()
            return
        try:
            await asyncio.wait_for(self.gathered.wait(), GATHER_WAIT_S)
        except TimeoutError:  # they do not come together: the calls held are answered, and counted
            self.gathered.set()


# How long a call of a "gather" fault waits for the rest: only a client that never sends them
# together waits this long.
GATHER_WAIT_S = 5.0


@dataclass
class ProviderKnobs:
    latency_s: float = 0.0
    client_id: str = "wearsync-sim"
    client_secret: str = "sim-secret"
    subscription_key: str = "sim-subscription-key"
    access_ttl_s: int | None = None  # None: the provider's own lifetime
    # (requests, seconds) windows counted per app, as the provider counts them; None: its own.
    rate_limits: list[tuple[int, int]] | None = None
    read_rate_limits: list[tuple[int, int]] | None = None  # the second set, where there is one (Strava's reads)
    error_rate: float = 0.0  # share of data calls answered 500, at random
    # Default history size; users may be given their own with set_history.
    history: dict[str, int] = field(default_factory=dict)
    user_history: dict[str, dict[str, int]] = field(default_factory=dict)

    def history_for(self, user: str) -> dict[str, int]:
        return self.history | self.user_history.get(user, {})


@dataclass
class AuthCode:
    """What an authorization code was issued for: the token request must match it."""

    provider: str
    user: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None  # PKCE (S256)
    expires_at: float


@dataclass
class SimState:
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    # Data is laid out backwards from this instant (today's midnight, UTC, by default), so the
    # same user gets the same records for the life of the simulator.
    anchor: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    knobs: dict[str, ProviderKnobs] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    # Every call served: provider, app ("api" or "auth"), method, path, query, status, user; with
    # `record_exchanges` also the request's headers and body and the answer (status, content type,
    # body), which the conformance tests check against the providers' specs (off by default: a
    # benchmark's answers would fill the memory).
    requests: list[dict[str, Any]] = field(default_factory=list)
    record_exchanges: bool = False
    # Refresh tokens used once where the provider rotates them, or revoked.
    revoked_refresh_tokens: set[str] = field(default_factory=set)
    # (provider, user) -> instant before which its access / refresh tokens no longer work.
    access_expired_before: dict[tuple[str, str], float] = field(default_factory=dict)
    refresh_revoked_before: dict[tuple[str, str], float] = field(default_factory=dict)
    # Every token grant served: (provider, grant_type, user).
    grants: list[tuple[str, str, str]] = field(default_factory=list)
    # Authorization codes the authorize endpoints issued and no token request has used yet.
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    # Every withdrawal of the app's access by the app (deauthorize, delete registration): (provider,
    # user); tokens issued before the last one never work again (a new authorization gets new ones).
    revocations: list[tuple[str, str]] = field(default_factory=list)
    withdrawn_before: dict[tuple[str, str], float] = field(default_factory=dict)
    # (provider, window seconds, window index) -> requests counted.
    rate_counts: dict[tuple[str, int, int], int] = field(default_factory=dict)
    registered: dict[tuple[str, str], str] = field(default_factory=dict)  # Polar: users registered, their member-id
    # Where each provider sends its webhooks (set through /_sim/P/webhook, or the provider's own
    # subscription API where it has one), and every delivery made: (provider, url, status).
    webhook_targets: dict[str, "WebhookTarget"] = field(default_factory=dict)
    deliveries: list[tuple[str, str, int]] = field(default_factory=list)
    # Per (provider, user): records added, changed or deleted after the deterministic history was
    # laid out (by events tests ask for); each simulator decides what it keeps here.
    changes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Per provider: data calls being served now, and the most ever served at once (counted as calls
    # come and go: how many pages a client really keeps in flight).
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: dict[str, int] = field(default_factory=dict)

    def provider(self, name: str) -> ProviderKnobs:
        return self.knobs.setdefault(name, ProviderKnobs())

    def revoke_access(self, provider: str, user: str) -> None:
        """The app's access to the user is withdrawn: every token issued so far stops working."""
        self.withdrawn_before[(provider, user)] = time.time() + 0.001
        self.revocations.append((provider, user))

    # ---- tokens: signed, so they survive nothing but need no store --------------------------

    def issue_token(self, provider: str, user: str, kind: str, ttl_s: int | None) -> str:
        now = time.time()
        expires = int(now + ttl_s) if ttl_s else 0
        body = f"{provider}.{user}.{kind}.{expires}.{int(now * 1000)}x{secrets.token_hex(3)}"
        return f"{body}.{self._sign(body)}"

    def read_token(self, provider: str, token: str, kind: str) -> str | None:
        """The user a valid, unexpired, unrevoked token of this kind was issued to, else None."""
        body, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        parts = body.split(".")
        if len(parts) != 5 or parts[0] != provider or parts[2] != kind:
            return None
        user, expires, issued_s = parts[1], int(parts[3]), int(parts[4].partition("x")[0]) / 1000
        if expires and expires < time.time():
            return None
        cutoffs = self.access_expired_before if kind == "access" else self.refresh_revoked_before
        if issued_s < max(cutoffs.get((provider, user), 0.0), self.withdrawn_before.get((provider, user), 0.0)):
            return None
        if kind == "refresh" and token in self.revoked_refresh_tokens:
            return None
        return user

    def count_request(self, provider: str, limits: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """Count one data call in each fixed window; (limit, window seconds, usage) per window."""
        now = time.time()
        usage = []
        for requests, seconds in limits:
            key = (provider, seconds, int(now // seconds))
            self.rate_counts[key] = self.rate_counts.get(key, 0) + 1
            usage.append((requests, seconds, self.rate_counts[key]))
        return usage

    @contextlib.contextmanager
    def serving(self, provider: str) -> Iterator[None]:
        """Count one data call in flight while it is served."""
        self.in_flight[provider] = self.in_flight.get(provider, 0) + 1
        self.peak_in_flight[provider] = max(self.peak_in_flight.get(provider, 0), self.in_flight[provider])
        try:
            yield
        finally:
            self.in_flight[provider] -= 1

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]

    def take_fault(self, provider: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.provider == provider and path.startswith(fault.path_prefix) and fault.count != 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.count > 0:
                    fault.count -= 1
                return fault
        return None


@dataclass
class WebhookTarget:
    url: str
    secret: str = ""  # what the provider signs with (Whoop: our client secret)
    verify_token: str = ""  # Strava's


STATE_KEY = web.AppKey("sim_state", SimState)
# Provider name -> its simulator's `emit(request, user, body)`: what "event" faults make happen.
Emit = Callable[[web.Request, str, dict[str, Any]], Awaitable[dict[str, Any]]]
EMITTERS = web.AppKey("sim_emitters", dict[str, Emit])


@dataclass(frozen=True)
class Simulator:
    """A simulated provider, as a Provider describes a real one: its data API and OAuth server
    (served under /P/api and /P/auth), the records a simulated user has, how it makes something
    happen upstream and sends the webhook the provider would (`emit`), and how many webhook
    deliveries it still owes (`in_flight`: Garmin's backfills, delivered later)."""

    name: str
    create_apps: Callable[[], tuple[web.Application, web.Application]]
    records: Callable[[web.Application, str], dict[str, Any]]
    emit: Emit | None = None
    in_flight: Callable[[web.Application], int] | None = None


DELIVERY_SESSION = web.AppKey("sim_delivery_session", aiohttp.ClientSession)


async def deliver(
    request_or_app: web.Request | web.Application, provider: str, body: bytes, headers: Mapping[str, str]
) -> int:
    """POST one webhook delivery to the provider's configured target, as the provider would;
    the HTTP status we got back (0 when none is configured or nothing answered)."""
    app = request_or_app.config_dict if isinstance(request_or_app, web.Request) else request_or_app
    state = app[STATE_KEY]
    target = state.webhook_targets.get(provider)
    if target is None:  # the app configured no webhook: the provider sends nothing
        return 0
    try:
        async with app[DELIVERY_SESSION].post(
            target.url, data=body, headers={"Content-Type": "application/json", **headers}
        ) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    state.deliveries.append((provider, target.url, status))
    return status


T = TypeVar("T")
USERS_CACHED = 64  # per provider: the users whose data stays built
_user_data: dict[str, "OrderedDict[tuple[Any, ...], Any]"] = {}


def cached_user_data(
    request_or_app: web.Request | web.Application,
    provider: str,
    user: str,
    defaults: Mapping[str, int],
    build: Callable[[str, dict[str, int], datetime], T],
) -> T:
    """A simulated user's data: `build(user, history, anchor)` with the provider's `defaults`
    overridden by the user's history knobs. Built once per (user, history, anchor) and kept in a
    per-provider LRU, as it is the same every time (build sees nothing else)."""
    state = (
        request_or_app.config_dict[STATE_KEY] if isinstance(request_or_app, web.Request) else request_or_app[STATE_KEY]
    )
    history = dict(defaults) | state.provider(provider).history_for(user)
    key = (user, tuple(sorted(history.items())), state.anchor)
    cache = _user_data.setdefault(provider, OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cast(T, cache[key])
    data = build(user, history, state.anchor)
    cache[key] = data
    while len(cache) > USERS_CACHED:
        cache.popitem(last=False)
    return data


def user_rng(provider: str, user: str, salt: str = "") -> random.Random:
    seed = hashlib.sha256(f"{provider}:{user}:{salt}".encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def json_error(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def basic_client(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return client_id, secret


def bearer_user(request: web.Request, provider: str) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return request.config_dict[STATE_KEY].read_token(provider, header[7:].strip(), "access")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RateLimitStyle:
    """How a provider counts calls to its data API and says so: its windows, the headers on every
    answer, and its 429."""

    limits: list[tuple[int, int]]  # (requests, seconds)
    headers: Callable[[list[tuple[int, int, int]]], dict[str, str]]  # from (limit, seconds, usage)
    body: dict[str, Any]
    # A second set of windows every call also counts against, told in headers of its own (Strava's
    # read limit under its overall one); None where the provider has one set.
    read_limits: list[tuple[int, int]] | None = None
    read_headers: Callable[[list[tuple[int, int, int]]], dict[str, str]] | None = None


async def _faulty_response(
    request: web.Request, fault: Fault, rate_limit: RateLimitStyle | None, headers: dict[str, str], handler: "Handler"
) -> web.StreamResponse:
    if fault.kind == "timeout":
        # Never answer; stop waiting once the caller gives up, so that no handler lingers.
        for _ in range(72_000):  # an hour at most
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
    if fault.kind == "cut" and request.transport is not None:
        request.transport.close()
        raise web.HTTPInternalServerError()
    if fault.kind == "malformed":
        return web.Response(status=200, text='{"payload": [{"truncat', content_type="application/json")
    if fault.kind == "empty":
        return web.Response(status=200, content_type="application/json")
    if fault.kind == "truncated":
        return await _truncated(request, await handler(request))
    if fault.kind == "ratelimit" and rate_limit is not None:
        return web.json_response(rate_limit.body, status=429, headers=headers | {"Retry-After": "1"})
    return json_error(fault.status, {"error": f"injected fault {fault.status}"})


async def _truncated(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    """`answer` as a connection that dies mid-body: all its headers (the whole body's
    Content-Length), half its body, then the connection closes."""
    body = answer.body if isinstance(answer, web.Response) and isinstance(answer.body, bytes) else b"{}"
    response = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


def fault_middleware(provider: str, rate_limit: RateLimitStyle | None = None) -> Middleware:
    """Latency, injected faults, rate limits and the request log for one provider's apps."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(f"/{provider}/api/"):
            return await serve(request, handler)
        with request.config_dict[STATE_KEY].serving(provider):
            return await serve(request, handler)

    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.config_dict[STATE_KEY]
        knobs = state.provider(provider)
        # The provider's own path: without the /<provider>/api or /<provider>/auth mount point.
        _, _, app, path = [*request.path.split("/", 3), "", ""][:4]  # /<provider>/<app>/<path>
        entry: dict[str, Any] = {"provider": provider, "app": app, "method": request.method, "path": "/" + path,
                                 "query": dict(request.query), "status": None, "at": time.time(),
                                 "user": bearer_user(request, provider)}  # fmt: skip
        path = entry["path"]
        state.requests.append(entry)
        if state.record_exchanges:
            entry["headers"] = dict(request.headers)
            entry["body"] = (await request.read()).decode("utf-8", "replace")  # aiohttp keeps it for the handler
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        headers: dict[str, str] = {}
        if rate_limit is not None:
            usage = state.count_request(provider, knobs.rate_limits or rate_limit.limits)
            headers = rate_limit.headers(usage)
            if rate_limit.read_limits is not None and rate_limit.read_headers is not None:
                reads = state.count_request(f"{provider}:read", knobs.read_rate_limits or rate_limit.read_limits)
                headers |= rate_limit.read_headers(reads)
                usage = usage + reads
            if any(used > limit for limit, _, used in usage):
                entry["status"] = 429
                return _recorded(state, entry, web.json_response(rate_limit.body, status=429, headers=headers))
        fault = state.take_fault(provider, path)
        if fault is None and knobs.error_rate and random.random() < knobs.error_rate:
            fault = Fault(provider, path, "status", 500)
        if fault is not None and fault.kind in ("expire_tokens", "event", "gather", "hold"):
            await _before_the_call(request, provider, fault)
            fault = None
        if fault is not None:
            entry["status"] = f"fault:{fault.kind}"
            return await _faulty_response(request, fault, rate_limit, headers, handler)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            entry["status"] = e.status
            e.headers.update(headers)
            _recorded(state, entry, e)
            raise
        response.headers.update(headers)
        entry["status"] = response.status
        return _recorded(state, entry, response)

    return middleware


async def _before_the_call(request: web.Request, provider: str, fault: Fault) -> None:
    """What a fault that lets the call go on makes happen first."""
    if fault.kind == "gather":
        await fault.gather()
        return
    if fault.kind == "hold":
        await fault.released.wait()
        return
    user = bearer_user(request, provider)
    if user is not None and fault.kind == "expire_tokens":
        request.config_dict[STATE_KEY].access_expired_before[(provider, user)] = time.time() + 0.001
    if user is not None and fault.kind == "event":
        await request.config_dict[EMITTERS][provider](request, user, dict(fault.event))


R = TypeVar("R", bound=web.StreamResponse)


def _recorded(state: SimState, entry: dict[str, Any], response: R) -> R:
    """`response`, kept in the request log's `entry` when the state records exchanges."""
    if state.record_exchanges:  # as text, so that /_sim/requests can list it as JSON
        body = response.body if isinstance(response, web.Response) else None
        entry["response"] = {"status": response.status, "content_type": response.content_type,
                             "headers": dict(response.headers),
                             "body": body.decode("utf-8", "replace") if isinstance(body, bytes) else ""}  # fmt: skip
    return response


def iso(dt: datetime, offset_minutes: int) -> str:
    """ISO 8601 in the user's local time with its offset, to the millisecond."""
    return dt.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat(timespec="milliseconds")


def fixture_file(provider: str, name: str) -> Any:
    """sim/fixtures/<provider>/<name>.json: a shape the provider documents (or public clients
    show), with its `_source` (url; status "official" or "second-hand"; note)."""
    return json.loads((resources.files("wearsync.sim") / "fixtures" / provider / f"{name}.json").read_text())


def fixture(provider: str, name: str) -> Any:
    """The fixture's shape without its `_source`: what the simulator's answers follow and tests map."""
    shape = fixture_file(provider, name)
    shape.pop("_source")
    return shape
