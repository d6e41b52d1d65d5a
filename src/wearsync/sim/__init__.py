"""Simulators of the providers' APIs, served together on one port: provider P's data API under
`/P/api` and its OAuth server under `/P/auth`, each followed by the real provider's own paths.

`/_sim/...` is the control surface for tests, benchmarks and the demo: which records a user has,
history sizes, latency, injected faults, and the log of requests served.
"""

from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from wearsync.sim import garmin, polar, strava, suunto, whoop
from wearsync.sim.common import (
    DELIVERY_SESSION,
    EMITTERS,
    STATE_KEY,
    USER_NAME,
    Fault,
    SimState,
    Simulator,
    WebhookTarget,
)

SIMULATORS: dict[str, Simulator] = {s.SIMULATOR.name: s.SIMULATOR for s in (garmin, strava, polar, suunto, whoop)}


def _provider(request: web.Request) -> Simulator:
    name = request.match_info["provider"]
    if name not in SIMULATORS:
        raise web.HTTPNotFound(text=f'{{"error": "no simulator for {name}"}}', content_type="application/json")
    return SIMULATORS[name]


def _user(request: web.Request) -> str:
    user = request.match_info["user"]
    if not USER_NAME.match(user):
        raise web.HTTPBadRequest(text='{"error": "bad user name"}', content_type="application/json")
    return user


async def get_records(request: web.Request) -> web.Response:
    return web.json_response(_provider(request).records(request.app, _user(request)))


async def set_history(request: web.Request) -> web.Response:
    """Body: the history sizes to use for this user, e.g. {"workouts": 1000, "days_247": 90}."""
    _provider(request)
    sizes = {k: int(v) for k, v in (await request.json()).items()}
    request.app[STATE_KEY].provider(request.match_info["provider"]).user_history[_user(request)] = sizes
    return web.json_response({"ok": True})


async def configure(request: web.Request) -> web.Response:
    """Body, any of: {"latency_s": 0.1, "error_rate": 0.01, "access_ttl_s": 60,
    "rate_limits": [[100, 900]], "read_rate_limits": [[100, 900]] (Strava's reads), "history": {...}}
    for the whole provider."""
    _provider(request)
    body = await request.json()
    knobs = request.app[STATE_KEY].provider(request.match_info["provider"])
    if "latency_s" in body:
        knobs.latency_s = float(body["latency_s"])
    if "error_rate" in body:
        knobs.error_rate = float(body["error_rate"])
    if "access_ttl_s" in body:
        knobs.access_ttl_s = None if body["access_ttl_s"] is None else int(body["access_ttl_s"])
    for name in ("rate_limits", "read_rate_limits"):
        if name in body:
            limits = body[name]
            setattr(knobs, name, None if limits is None else [(int(n), int(s)) for n, s in limits])
    if "history" in body:
        knobs.history = {k: int(v) for k, v in body["history"].items()}
    return web.json_response({"ok": True})


async def add_fault(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[STATE_KEY].faults.append(Fault(**body))
    return web.json_response({"ok": True})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.json_response({"ok": True})


async def get_requests(request: web.Request) -> web.Response:
    provider = request.query.get("provider")
    log = request.app[STATE_KEY].requests
    return web.json_response([r for r in log if provider is None or r["provider"] == provider])


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].requests.clear()
    return web.json_response({"ok": True})


async def set_webhook(request: web.Request) -> web.Response:
    """Body: {"url": ..., "secret": ...}: where this provider's webhooks go (the developer portal
    setting of the real provider)."""
    _provider(request)
    body = await request.json()
    target = WebhookTarget(str(body["url"]), str(body.get("secret", "")), str(body.get("verify_token", "")))
    request.app[STATE_KEY].webhook_targets[request.match_info["provider"]] = target
    return web.json_response({"ok": True})


async def get_deliveries(request: web.Request) -> web.Response:
    """Webhook deliveries sent, counted by provider and the status the receiver answered (0: no
    answer), and the deliveries still owed (Garmin's backfills)."""
    sent = Counter((provider, status) for provider, _, status in request.app[STATE_KEY].deliveries)
    return web.json_response({
        "sent": [{"provider": p, "status": status, "count": n} for (p, status), n in sorted(sent.items())],
        "in_flight": sum(sim.in_flight(request.app) for sim in SIMULATORS.values() if sim.in_flight),
    })  # fmt: skip


async def get_concurrency(request: web.Request) -> web.Response:
    """The provider's data calls being served now and the most served at once since the last reset."""
    _provider(request)
    name, state = request.match_info["provider"], request.app[STATE_KEY]
    return web.json_response({"in_flight": state.in_flight.get(name, 0), "peak": state.peak_in_flight.get(name, 0)})


async def reset_concurrency(request: web.Request) -> web.Response:
    """The peak starts again from the calls being served now."""
    _provider(request)
    name, state = request.match_info["provider"], request.app[STATE_KEY]
    state.peak_in_flight[name] = state.in_flight.get(name, 0)
    return web.json_response({"ok": True})


async def emit_event(request: web.Request) -> web.Response:
    """Body: what happened upstream (provider-specific, e.g. {"kind": "create"}); the simulator
    changes its data accordingly and sends the webhook the provider would send."""
    sim = _provider(request)
    if sim.emit is None:
        raise web.HTTPNotFound(text='{"error": "this simulator sends no webhooks"}', content_type="application/json")
    body = await request.json() if request.can_read_body else {}
    return web.json_response(await sim.emit(request, _user(request), body))


async def delivery_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        app[DELIVERY_SESSION] = session
        yield


def create_sim_app(state: SimState | None = None) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state or SimState()
    app[EMITTERS] = {name: sim.emit for name, sim in SIMULATORS.items() if sim.emit is not None}
    app.cleanup_ctx.append(delivery_session)
    for name, sim in SIMULATORS.items():
        api, auth = sim.create_apps()
        app.add_subapp(f"/{name}/api", api)
        app.add_subapp(f"/{name}/auth", auth)
    app.router.add_get("/_sim/{provider}/users/{user}/records", get_records)
    app.router.add_put("/_sim/{provider}/users/{user}/history", set_history)
    app.router.add_post("/_sim/{provider}/config", configure)
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_post("/_sim/{provider}/webhook", set_webhook)
    app.router.add_post("/_sim/{provider}/users/{user}/events", emit_event)
    app.router.add_get("/_sim/{provider}/concurrency", get_concurrency)
    app.router.add_delete("/_sim/{provider}/concurrency", reset_concurrency)
    app.router.add_get("/_sim/deliveries", get_deliveries)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_delete("/_sim/requests", clear_requests)
    return app
