"""What every provider simulator shares: signed tokens, fault and latency knobs, a request log,
and deterministic per-user randomness."""

import asyncio
import base64
import hashlib
import hmac
import random
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class Fault:
    """Make the next `count` matching calls fail (count < 0: every call)."""

    provider: str
    path_prefix: str  # matched against the provider's own path, e.g. "/247samples"
    kind: str  # "status" | "timeout" | "cut" | "malformed"
    status: int = 500
    count: int = 1


@dataclass
class ProviderKnobs:
    latency_s: float = 0.0
    client_id: str = "wearsync-sim"
    client_secret: str = "sim-secret"
    subscription_key: str = "sim-subscription-key"
    # Default history size; users may be given their own with set_history.
    history: dict[str, int] = field(default_factory=dict)
    user_history: dict[str, dict[str, int]] = field(default_factory=dict)

    def history_for(self, user: str) -> dict[str, int]:
        return self.history | self.user_history.get(user, {})


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
    requests: list[dict[str, Any]] = field(default_factory=list)
    revoked_refresh_tokens: set[str] = field(default_factory=set)

    def provider(self, name: str) -> ProviderKnobs:
        return self.knobs.setdefault(name, ProviderKnobs())

    # ---- tokens: signed, so they survive nothing but need no store --------------------------

    def issue_token(self, provider: str, user: str, kind: str, ttl_s: int | None) -> str:
        expires = int((datetime.now(UTC) + timedelta(seconds=ttl_s)).timestamp()) if ttl_s else 0
        body = f"{provider}.{user}.{kind}.{expires}.{secrets.token_hex(4)}"
        return f"{body}.{self._sign(body)}"

    def read_token(self, provider: str, token: str, kind: str) -> str | None:
        """The user a valid, unexpired token of this kind was issued to, else None."""
        body, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        parts = body.split(".")
        if len(parts) != 5 or parts[0] != provider or parts[2] != kind:
            return None
        expires = int(parts[3])
        if expires and expires < datetime.now(UTC).timestamp():
            return None
        return parts[1]

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]

    def take_fault(self, provider: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.provider == provider and path.startswith(fault.path_prefix) and fault.count != 0:
                if fault.count > 0:
                    fault.count -= 1
                return fault
        return None


STATE_KEY = web.AppKey("sim_state", SimState)


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


def fault_middleware(provider: str) -> Middleware:
    """Latency, injected faults and the request log for one provider's apps."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.config_dict[STATE_KEY]
        knobs = state.provider(provider)
        # The provider's own path: without the /<provider>/api or /<provider>/auth mount point.
        path = "/" + request.path.split("/", 3)[-1]
        entry: dict[str, Any] = {"provider": provider, "method": request.method, "path": path,
                                 "query": dict(request.query), "status": None}  # fmt: skip
        state.requests.append(entry)
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        fault = state.take_fault(provider, path)
        if fault is not None:
            entry["status"] = f"fault:{fault.kind}"
            if fault.kind == "timeout":
                await asyncio.sleep(3600)
            if fault.kind == "cut" and request.transport is not None:
                request.transport.close()
                raise web.HTTPInternalServerError()
            if fault.kind == "malformed":
                return web.Response(status=200, text='{"payload": [{"truncat', content_type="application/json")
            return json_error(fault.status, {"error": f"injected fault {fault.status}"})
        response = await handler(request)
        entry["status"] = response.status
        return response

    return middleware


def iso(dt: datetime, offset_minutes: int) -> str:
    """ISO 8601 in the user's local time with its offset, to the millisecond."""
    return dt.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat(timespec="milliseconds")
