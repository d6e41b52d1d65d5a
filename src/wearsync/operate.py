"""Operators' commands: `wearsync sync`, `wearsync tasks`, `wearsync connections`.

Operators are trusted: they act across applications (tenants). `sync` records its task under the
user's own application, exactly as if that application's key had asked through the API (same
validation and messages, same coalescing, same queue); `--application NAME` makes sure the user
is that application's. Tokens are never read, let alone printed.

Exit codes: 0 done (with `--wait`: the task succeeded, or a Garmin sync asked for all its backfills,
whose deliveries end the task later); 1 the task ended `partial` or `failed`;
2 refused (bad input, unknown user, no active connection, unsupported data type): nothing started;
130 interrupted (Ctrl-C: a queued task goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field, ValidationError

from wearsync.models import (
    FINAL_STATUSES,
    ProviderName,
    Requested,
    SyncParams,
    TaskStatus,
    validation_detail,
)
from wearsync.providers import PROVIDERS
from wearsync.settings import Settings

if TYPE_CHECKING:  # the rest is imported when a command runs: `wearsync` starts fast for the others
    import asyncpg

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

EXIT_UNSUCCESSFUL, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 130
POLL_S = 0.25
BAR_WIDTH = 24


class Refused(Exception):
    """Input the command refuses with a message; nothing was started."""


class SyncCommand(SyncParams):
    """`wearsync sync`: what the API's sync request holds, with its bounds and its messages."""

    provider: ProviderName
    user_id: UUID
    data_type: Requested = "all"

    def params(self) -> SyncParams:
        return SyncParams.model_validate(self.model_dump(include=set(SyncParams.model_fields)))


class UserArg(BaseModel):
    user_id: UUID


class TaskFilter(BaseModel):
    """The filters of `wearsync tasks`."""

    status: TaskStatus | None = None
    provider: ProviderName | None = None
    user_id: UUID | None = None
    application: str | None = None
    limit: int = Field(20, ge=1, le=1000)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Refused(validation_detail(e)) from None


def _run(settings: Settings, check: Callable[[], T], work: Callable[[T, asyncpg.Pool], Awaitable[int]]) -> None:
    """Check the input (before connecting to anything), then run the command with a small
    database pool; exit with its code, or with 2 and the message of a refusal."""
    import asyncpg

    from wearsync.db import create_pool

    async def main(checked: T) -> int:
        try:
            db = await create_pool(settings.database_url, 1, 2)
        except (OSError, asyncpg.PostgresError) as e:
            print(f"error: cannot connect to PostgreSQL (DATABASE_URL): {e}", file=sys.stderr)
            return EXIT_UNSUCCESSFUL
        try:
            return await work(checked, db)
        finally:
            await db.close()

    try:
        code = asyncio.run(main(check()))
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_REFUSED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


# ---- wearsync sync ----------------------------------------------------------------------------


def sync_request(args: argparse.Namespace) -> SyncCommand:
    """The sync asked for on the command line: the API's checks and messages."""
    given = {name: getattr(args, name) for name in SyncParams.model_fields if getattr(args, name) is not None}
    data = {"provider": args.provider, "user_id": args.user_id, "data_type": args.data_type, **given}
    req = _validated(SyncCommand, data)
    for name in given:
        if name not in PROVIDERS[req.provider].params:
            print(f"note: {_spelled(name)} does not apply to {req.provider}; ignored", file=sys.stderr)
    return req


def _spelled(param: str) -> str:
    """How a sync parameter is spelled on the command line."""
    option = param.replace("_", "-")
    return f"--[no-]{option}" if SyncParams.model_fields[param].default is True else f"--{option}"


def _add_param_options(sync: argparse.ArgumentParser) -> None:
    """An option for each sync parameter, grouped by the provider that reads it (Provider.params);
    a flag that is on by default also takes --no-."""
    for provider in (p for p in PROVIDERS.values() if p.params):
        group = sync.add_argument_group(provider.name)
        for name in provider.params:
            info, option = SyncParams.model_fields[name], "--" + name.replace("_", "-")
            if info.annotation is not bool:
                group.add_argument(option, help=info.description)
            elif info.default:
                group.add_argument(option, action=argparse.BooleanOptionalAction, help=info.description)
            else:
                group.add_argument(option, action="store_true", default=None, help=info.description)


def _sync_command(settings: Settings, args: argparse.Namespace) -> None:
    _run(settings, lambda: sync_request(args), lambda req, db: _sync(settings, args, req, db))


async def _sync(settings: Settings, args: argparse.Namespace, req: SyncCommand, db: asyncpg.Pool) -> int:
    from arq import create_pool as create_redis_pool
    from arq.connections import RedisSettings

    from wearsync.db.operators import find_user
    from wearsync.tasks import SyncRefused, requested_types, start_sync

    user = await find_user(db, req.user_id, args.application)
    if user is None:
        raise Refused("User not found" + (f" in application {args.application!r}" if args.application else ""))
    queue = await create_redis_pool(RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.queue_name)
    try:
        data_types = requested_types(req.provider, req.data_type)
        task_id, created = await start_sync(
            db, queue, user["application_id"], req.provider, user["id"], data_types, req.params(), run_async=True
        )
    except SyncRefused as e:
        raise Refused(e.detail) from None
    finally:
        await queue.aclose()
    print(task_id)
    if created:
        print(f"Sync task queued for {req.provider} (application {user['application']}).", file=sys.stderr)
    else:
        print("The same sync is already queued or running: that is its task.", file=sys.stderr)
    if not args.wait:
        return 0
    # Ctrl-C ends the wait between two looks at the task, not inside one: a query cancelled in
    # flight could keep its connection, and the pool's close, waiting. A second one cancels.
    interrupted, waiting = asyncio.Event(), asyncio.current_task()
    assert waiting is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: waiting.cancel() if interrupted.is_set() else interrupted.set())
    try:
        task = await follow_task(db, task_id, sys.stdout, until=interrupted)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if task is None:
        print(f"Stopped waiting; task {task_id} goes on (wearsync tasks --user {req.user_id}).", file=sys.stderr)
        return EXIT_INTERRUPTED
    all_asked = {p.get("status") for p in task["progress"].values()} == {"awaiting_delivery"}
    return 0 if task["status"] == TaskStatus.SUCCEEDED or all_asked else EXIT_UNSUCCESSFUL


async def follow_task(
    db: asyncpg.Pool, task_id: UUID, out: TextIO, poll_s: float = POLL_S, until: asyncio.Event | None = None
) -> dict[str, Any] | None:
    """Show the task's progress until it ends; the final task, as the API describes it (None: `until`
    was set first)."""
    from wearsync.tasks import describe_task

    view = ProgressView(out)
    stop = until or asyncio.Event()
    while not stop.is_set():
        task = await describe_task(db, task_id)
        if task is None:  # deleted underneath us (its user was)
            raise Refused(f"task {task_id} no longer exists")
        view.show(task)
        if task["status"] in FINAL_STATUSES or _awaits_deliveries(task):
            view.finish(task)
            return task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll_s):
                await stop.wait()
    return None


def _awaits_deliveries(task: dict[str, Any]) -> bool:
    """A Garmin sync whose requests are done: its data comes by webhook, over hours, and the task
    ends then; not worth holding a terminal for."""
    statuses = {p.get("status") for p in task["progress"].values()}
    return "awaiting_delivery" in statuses and statuses <= {"awaiting_delivery", "failed"}


def _records_text(records: dict[str, int], data_type: str) -> str:
    total = sum(records.values())
    text = f"{total} record{'s' if total != 1 else ''}"
    if set(records) - {data_type}:
        text += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(records.items())) + ")"
    return text


def progress_line(data_type: str, progress: dict[str, Any], bar_width: int = BAR_WIDTH) -> str:
    """One data type's progress: a bar (full when it succeeded; empty dots while the number of
    pages is not known), its status, pages and records, and its error."""
    status, pages, total = progress.get("status", "queued"), progress.get("pages", 0), progress.get("pages_total")
    if status == "succeeded":
        fill = bar_width
    elif total:
        fill = min(bar_width, bar_width * pages // total)
    else:
        fill = 0
    bar = "#" * fill + ("-" if total or status == "succeeded" else ".") * (bar_width - fill)
    pages_text = f"{pages}/{total} pages" if total else f"{pages} page{'s' if pages != 1 else ''}"
    records = _records_text(progress.get("records", {}), data_type)
    line = f"{data_type:<9} [{bar}] {status:<9} {pages_text:>11}  {records}"
    if status == "waiting" and progress.get("resumes_at"):
        line += f"  resumes at {datetime.fromisoformat(progress['resumes_at']):%H:%M:%S} UTC"
    return line + (f"  error: {progress['error']}" if progress.get("error") else "")


class ProgressView:
    """Renders a task's progress on `out`: on a terminal, one line per data type redrawn in place;
    otherwise (a pipe, a log file), a line each time something changed."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.tty = out, out.isatty()
        self.started = time.monotonic()
        self.drawn = 0  # lines drawn last time (terminal)
        self.last: dict[str, str] = {}  # last line printed per key (pipe)

    def lines(self, task: dict[str, Any]) -> list[tuple[str, str]]:
        header = f"task {task['task_id']} ({task['provider']}): {task['status']}"
        if self.tty:
            header += f"  {time.monotonic() - self.started:.0f}s"
        items = [("", header)]
        items += [(t, progress_line(t, p)) for t, p in task["progress"].items()]
        return items

    def show(self, task: dict[str, Any]) -> None:
        items = self.lines(task)
        if self.tty:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the redraw
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join(f"{line[:width]}\x1b[K\n" for _, line in items))
            self.drawn = len(items)
        else:
            for key, line in items:
                if self.last.get(key) != line:
                    self.out.write(line + "\n")
                    self.last[key] = line
        self.out.flush()

    def finish(self, task: dict[str, Any]) -> None:
        took = f" in {task['duration_s']:.1f}s" if task["duration_s"] is not None else ""
        self.out.write(f"{task['status']}{took}" + (f": {task['error']}" if task["error"] else "") + "\n")
        backfill = task.get("backfill")
        if backfill:
            self.out.write(
                f"Garmin backfill: {backfill['requested']} window(s) requested, {backfill['delivered']} delivered"
                " so far (the data arrives by webhook)\n"
            )
            if backfill["deliveries_due_at"] is not None:
                self.out.write(
                    f"The task stays running until every window has had a delivery, or until"
                    f" {backfill['deliveries_due_at']:%Y-%m-%d %H:%M} UTC: wearsync tasks --user {task['user_id']}\n"
                )
        self.out.flush()


# ---- wearsync tasks, wearsync connections ----------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """A plain left-aligned table; the last column is not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for cells in [headers, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)) + "  " + cells[-1] + "\n")


def _shorten(text: str | None, width: int = 200) -> str:
    """On one line, and short: the last column of a table may wrap, but one error should not fill
    the screen (an upstream error carries up to 300 characters of the body)."""
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _tasks_command(settings: Settings, args: argparse.Namespace) -> None:
    data = {"status": args.status, "provider": args.provider, "user_id": args.user, "application": args.application}
    given = {k: v for k, v in data.items() if v is not None} | {"limit": args.limit}
    _run(settings, lambda: _validated(TaskFilter, given), _tasks)


async def _tasks(filters: TaskFilter, db: asyncpg.Pool) -> int:
    from wearsync.db.operators import recent_tasks

    rows = await recent_tasks(db, **filters.model_dump())
    cells = []
    for r in rows:
        took = r["finished_at"] - r["started_at"] if r["started_at"] and r["finished_at"] else None
        cells.append([
            str(r["id"]), r["provider"], str(r["user_id"]), r["status"], ",".join(r["data_types"]),
            _when(r["created_at"]), f"{took.total_seconds():.1f}s" if took is not None else "-", _shorten(r["error"]),
        ])  # fmt: skip
    headers = ["id", "provider", "user", "status", "data types", "created (UTC)", "duration", "error"]
    table(headers, cells, sys.stdout)
    return 0


def _connections_command(settings: Settings, args: argparse.Namespace) -> None:
    _run(settings, lambda: _validated(UserArg, {"user_id": args.user_id}), _connections)


async def _connections(path: UserArg, db: asyncpg.Pool) -> int:
    from wearsync.db.operators import connections_overview, find_user

    user = await find_user(db, path.user_id)
    if user is None:
        raise Refused("User not found")
    print(f"user {user['id']}  application {user['application']}  external id {user['external_id'] or '-'}")
    cells = []
    for c in await connections_overview(db, path.user_id):
        state = "active" if c["active"] else f"inactive ({c['inactive_reason'] or 'no reason recorded'})"
        last = f"{_when(c['last_sync_at'])} {c['last_sync_status']}" if c["last_sync_at"] else "never"
        scopes = ",".join(c["scopes"]) or "-"
        cells.append([c["provider"], c["provider_user_id"], state, scopes, _when(c["expires_at"]), last])
    headers = ["provider", "provider user", "state", "scopes", "token expires (UTC)", "last sync (UTC)"]
    table(headers, cells, sys.stdout)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sync`, `tasks` and `connections` with the `wearsync` parser."""
    sync = sub.add_parser(
        "sync",
        help="queue a sync as the API does (the user's own application); --wait follows it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("provider", help="garmin, strava, polar, suunto or whoop")
    sync.add_argument("user_id", help="our user id (UUID)")
    sync.add_argument("--data-type", default="all", help="workouts, 247 or all (default: all)")
    sync.add_argument("--wait", action="store_true", help="show progress per data type until the task ends")
    sync.add_argument("--application", help="refuse unless the user belongs to this application")
    _add_param_options(sync)
    sync.set_defaults(run=_sync_command)

    tasks = sub.add_parser("tasks", help="list recent sync tasks, newest first (every application)")
    tasks.add_argument("--status", help="queued, running, succeeded, partial or failed")
    tasks.add_argument("--provider")
    tasks.add_argument("--user", help="only this user's tasks (UUID)")
    tasks.add_argument("--application", help="only this application's tasks")
    tasks.add_argument("--limit", default="20", help="at most this many (default 20, at most 1000)")
    tasks.set_defaults(run=_tasks_command)

    connections = sub.add_parser("connections", help="a user's provider connections (never their tokens)")
    connections.add_argument("user_id", help="our user id (UUID)")
    connections.set_defaults(run=_connections_command)
