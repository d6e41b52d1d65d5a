"""`wearsync` command line: api, worker, migrate, sim, api-key create|list|revoke, connect-link, events
tail|sink, dev; and the operators' commands sync, tasks, connections (wearsync.operate)."""

import argparse
import asyncio
import errno
import os
import re
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import ValidationError

# Importing the providers registers each one's settings, which Settings() then reads (WEARSYNC_<P>_*).
from wearsync import operate, providers  # noqa: F401
from wearsync.connect_links import DEFAULT_TTL_S, MAX_TTL_S
from wearsync.logging import capture_stray_output, configure_logging
from wearsync.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg
    from aiohttp import web

T = TypeVar("T")
SINK_SECRET_HELP = "the endpoint's secret in WEARSYNC_SINK_SECRET"


def _serve(app: "web.Application", args: argparse.Namespace, what: str, **options: Any) -> None:
    """Serve `app` on --host and --port, or on the listening socket inherited as --fd (from
    `wearsync dev`, which binds the ports itself); log where, once it listens."""
    from aiohttp import web

    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    host, port = sock.getsockname()[:2] if sock else (args.host, args.port)
    log = structlog.get_logger(__name__)

    def listening(message: str) -> None:
        # aiohttp's "Running on http://HOST:PORT": the port bound, also where --port 0 let the system choose.
        bound = re.search(r"http://\S+:([0-9]+)", message)
        log.info(f"{what} listening", url=f"http://{host}:{bound.group(1) if bound else port}")

    try:
        web.run_app(app, host=None if sock else host, port=None if sock else port, sock=sock, access_log=None,
                    print=listening, **options)  # fmt: skip
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        sys.exit(f"error: port {port} on {host} is in use by another program: choose another with --port")


def _api(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.api.app import create_app

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # not on this platform: the standard loop
        loop = asyncio.new_event_loop()
    # SIGTERM: stop accepting, answer the requests in flight (for up to the grace), then exit.
    _serve(create_app(settings), args, "API", loop=loop, shutdown_timeout=settings.shutdown_grace_s)


def _worker(settings: Settings, args: argparse.Namespace) -> None:
    from arq.worker import async_check_health

    from wearsync.worker import health_check_key, run_worker, worker_options

    if args.check:  # for container health checks: exit 0 if this host's worker reported in lately
        options = worker_options(settings)
        sys.exit(asyncio.run(async_check_health(options["redis_settings"], health_check_key(settings))))
    run_worker(settings)


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.db.migrate import migrate

    applied = _with_db(settings.database_url, migrate)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


def _sim(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.sim import create_sim_app

    _serve(create_sim_app(), args, "simulators")


def _with_db(dsn: str, work: "Callable[[asyncpg.Connection], Awaitable[T]]") -> T:
    """`work(connection)` on a connection of its own; a database that cannot be reached (not up,
    missing, refused) ends the command with one line saying so, not a traceback."""
    from wearsync.db import DatabaseUnreachable, with_connection

    try:
        return asyncio.run(with_connection(dsn, work))
    except DatabaseUnreachable as e:
        sys.exit(f"error: {e}")


def _api_key_list(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.db import keys as keys_db

    rows = _with_db(settings.database_url, lambda c: keys_db.list_api_keys(c, args.application))
    print(f"{'prefix':<12} {'application':<20} {'name':<24} {'created':<17} {'last used':<17} revoked")
    for r in rows:
        when = [
            t.strftime("%Y-%m-%d %H:%M") if t else "-" for t in (r["created_at"], r["last_used_at"], r["revoked_at"])
        ]
        print(f"{r['prefix']:<12} {r['application']:<20} {r['name']:<24} {when[0]:<17} {when[1]:<17} {when[2]}")


def _api_key_revoke(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.db import keys as keys_db

    matches = _with_db(settings.database_url, lambda c: keys_db.revoke_api_key(c, args.prefix))
    if matches != 1:
        what = "no active key" if matches == 0 else f"{matches} active keys (nothing revoked)"
        sys.exit(f"{what} with prefix {args.prefix!r}")
    print(f"revoked {args.prefix} (the API stops accepting it within 30 s)")


def _token_key_generate(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.crypto import generate_key

    print(generate_key())


def _token_key_rotate(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.db import connections

    cipher = settings.cipher()
    count = _with_db(settings.database_url, lambda c: connections.reseal_tokens(c, cipher.reseal))
    print(f"re-encrypted the tokens of {count} connections under the first key of WEARSYNC_TOKEN_KEYS")


def _api_key_create(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.db import keys as keys_db

    application = args.application or args.name
    key = _with_db(
        settings.database_url,
        lambda c: keys_db.create_api_key(c, application, args.name, operator=args.operator),
    )
    print(key)
    print("Store this key now: it is not shown again (only its hash is kept).", file=sys.stderr)


def _link_ttl(text: str) -> int:
    seconds = int(text)
    if not 60 <= seconds <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"must be 60 to {MAX_TTL_S} seconds")
    return seconds


def _connect_link(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.connect_links import mint
    from wearsync.db import operators
    from wearsync.redirects import redirect_allowed

    if args.redirect_uri and not redirect_allowed(args.redirect_uri, settings.redirect_allowlist):
        sys.exit(f"error: WEARSYNC_OAUTH_REDIRECT_ALLOWLIST does not allow {args.redirect_uri}")
    app_id = _with_db(settings.database_url, lambda c: operators.application_of_user(c, args.application, args.user_id))
    if app_id is None:
        sys.exit(f"error: application {args.application!r} has no user {args.user_id}")
    url, expires_at = mint(settings, app_id, args.user_id, args.redirect_uri, args.ttl)
    print(url)
    print(f"Valid until {expires_at:%Y-%m-%d %H:%M} UTC: send it to the user.", file=sys.stderr)


def _events_tail(settings: Settings, args: argparse.Namespace) -> None:
    from rich.console import Console

    from wearsync.tail import Refused, tail

    key = args.key or os.environ.get("WEARSYNC_KEY")
    if not key:
        sys.exit("error: no API key: pass --key or set WEARSYNC_KEY")
    query = {name: value for name, value in (("user_id", args.user), ("type", args.type), ("after", args.after))
             if value is not None}  # fmt: skip
    url = (args.url or settings.public_url).rstrip("/")
    try:
        asyncio.run(tail(url, key, query, Console(), as_json=args.json, follow=args.follow))
    except Refused as e:
        sys.exit(f"error: the API refused the stream: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


def _events_sink(settings: Settings, args: argparse.Namespace) -> None:
    from rich.console import Console

    from wearsync.sink import SECRET_ENV, create_sink_app

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        sys.exit(f"error: set {SECRET_ENV} to the endpoint's signing secret (whsec_…, shown when it was created)")
    _serve(create_sink_app(secret, Console()), args, "sink")


def _dev(settings: Settings, args: argparse.Namespace) -> None:
    from wearsync.dev import run_dev

    run_dev(settings, args.data_dir, api_port=args.port, sim_port=args.sim_port, sink_port=args.sink_port,
            real_rate_limits=args.real_rate_limits)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wearsync", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--fd", type=int, help="serve on this inherited listening socket instead (wearsync dev)")
    api.set_defaults(run=_api)
    worker = sub.add_parser("worker", help="run the arq worker")
    worker.add_argument("--check", action="store_true", help="exit 0 if this host's worker is alive, else 1")
    worker.set_defaults(run=_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    sim = sub.add_parser("sim", help="serve the provider simulators on one port")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--fd", type=int, help="serve on this inherited listening socket instead (wearsync dev)")
    sim.set_defaults(run=_sim)
    keys = sub.add_parser("api-key", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="what the key is for")
    # --application everywhere (as in sync and tasks); --app, its first spelling here, stays an alias.
    create.add_argument("--application", "--app", help="the application (tenant) it belongs to; default: --name")
    create.add_argument(
        "--operator", action="store_true", help="the key may also manage applications and keys over the API"
    )
    create.set_defaults(run=_api_key_create)
    listing = keys.add_parser("list", help="list keys: prefix, name, application, created, last used, revoked")
    listing.add_argument("--application", "--app", help="only this application's keys")
    listing.set_defaults(run=_api_key_list)
    revoke = keys.add_parser("revoke", help="revoke the key with this prefix (as `list` shows it)")
    revoke.add_argument("prefix")
    revoke.set_defaults(run=_api_key_revoke)
    token_key = sub.add_parser("token-key", help="keys that encrypt stored OAuth tokens")
    token_actions = token_key.add_subparsers(dest="action", required=True)
    token_actions.add_parser("generate", help="print a new key (for WEARSYNC_TOKEN_KEYS)").set_defaults(
        run=_token_key_generate
    )
    token_actions.add_parser(
        "rotate", help="re-encrypt every stored token under the first key of WEARSYNC_TOKEN_KEYS"
    ).set_defaults(run=_token_key_rotate)
    link = sub.add_parser("connect-link", help="print a link to the hosted connect page for a user")
    link.add_argument("user_id", type=uuid.UUID, help="the user's id, as the API names it")
    link.add_argument("--application", "--app", required=True, help="the user's application")
    link.add_argument("--redirect-uri", help="where the flow ends (default: wearsync's own result page)")
    link.add_argument("--ttl", type=_link_ttl, default=DEFAULT_TTL_S, metavar="SECONDS",
                      help=f"how long the link works, 60 to {MAX_TTL_S} (default: {DEFAULT_TTL_S})")  # fmt: skip
    link.set_defaults(run=_connect_link)
    dev = sub.add_parser("dev", help="run everything locally with a demo user (make run)")
    dev.add_argument("--data-dir", default=".wearsync", help="where embedded PostgreSQL and Redis keep data")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--sim-port", type=int, default=8090)
    dev.add_argument("--sink-port", type=int, default=8070, help="the webhook sink's")
    real_limits = "the providers' own rate limits in the simulators and our limiter (default: high ones)"
    dev.add_argument("--real-rate-limits", action="store_true", help=real_limits)
    dev.set_defaults(run=_dev)
    events = sub.add_parser("events", help="your application's events").add_subparsers(dest="action", required=True)
    tail = events.add_parser("tail", help="follow the application's live event stream, one line per event")
    tail.add_argument("--url", help="the API (default: WEARSYNC_PUBLIC_URL)")
    tail.add_argument("--key", help="the application's API key (default: WEARSYNC_KEY)")
    tail.add_argument("--user", type=uuid.UUID, help="one user's events only")
    tail.add_argument("--type", help="these event types only, comma-separated (e.g. sync.succeeded,sync.failed)")
    tail.add_argument("--after", help="start after this position (an event's stream id); 0: from the log's start")
    tail.add_argument("--no-follow", dest="follow", action="store_false", help="stop once the events so far are out")
    tail.add_argument("--json", action="store_true", help="each event's JSON as it came, one per line")
    tail.set_defaults(run=_events_tail)
    sink = events.add_parser("sink", help=f"receive webhooks here, verify and print them ({SINK_SECRET_HELP})")
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=8070)
    sink.add_argument("--fd", type=int, help="serve on this inherited listening socket instead (wearsync dev)")
    sink.set_defaults(run=_events_sink)
    operate.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    service = args.command in ("api", "worker", "sim")  # long-running: one JSON object per line
    try:
        settings = Settings()
    except ValidationError as e:  # logged in the command's default format, without the values (secrets)
        configure_logging("json" if service else "console")
        errors = [f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in e.errors(include_url=False)]
        structlog.get_logger(__name__).critical("invalid settings", errors=errors)
        sys.exit(2)
    configure_logging(settings.log_format or ("json" if service else "console"), settings.log_level)
    capture_stray_output()
    args.run(settings, args)
