"""`make soak` (= `python -m bench.soak`): many users syncing at once, bounded in time, on loopback.

The bench's real processes (simulators, one API, `--workers` workers; bench/harness.py) against
PostgreSQL and Redis. `--users` users, spread evenly over the five providers, are made and
connected through the API with one API key, as a client does. The simulators then answer every
call `--latency-ms` late and fail `--error-rate` of them with a 500, their rate limits (and ours)
out of reach so that the run is bounded by work, not by waiting. Each round, every user's sync is
asked for at once (round 1: first syncs; later rounds: re-syncs, which must store nothing twice),
and a new workout is recorded upstream for every Strava and Suunto user, which its simulator
delivers by webhook (bench/soak_events.py; Garmin's backfills come by push for half its users, by
ping for the others); a round ends when every task is final, Garmin's backfills are delivered and
every webhook event is processed. Meanwhile the resident memory (RSS) of the API and of each worker is sampled.

Then two tenants (bench/soak_tenants.py; `--no-tenants`: not run): one application floods
Whoop's rate limit while another's syncs must each end within a stated bound.

Checks (any failure: exit status 1): every task ended, and succeeded; each user's stored rows are
exactly the simulator's records, per data type (bench/expected.py), the delivered ones included;
every webhook delivery was taken; errors were injected and every one was retried; the second
application's bound was met; memory stayed flat (see `memory_verdict` in bench/soak_model.py).
The counts and the verdict are printed (bench/soak_report.py) and written to bench/soak.md
(`--no-write`: not written).
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp

from bench import expected, soak_events, soak_tenants
from bench.harness import Child, Deployment, Processes, Run, bench_run, proc_status_kb, servers
from bench.run import machine
from bench.soak_model import (
    HISTORY,
    LOG_EVENTS,
    NO_LIMIT,
    Config,
    Memory,
    Result,
    Round,
    User,
    memory_verdict,
)
from bench.soak_report import report
from wearsync.dev import _connect
from wearsync.models import ProviderName

PROVIDER_NAMES = tuple(p.value for p in ProviderName)

HERE = Path(__file__).resolve().parent


class RoundFailed(Exception):
    """A round could not finish: out of time, or a process died."""


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def limits_env() -> dict[str, str]:
    return {f"WEARSYNC_{p.upper()}_RATE_LIMITS": f"{NO_LIMIT[0]}/{NO_LIMIT[1]}" for p in PROVIDER_NAMES}


async def gather_bounded(limit: int, jobs: list[Callable[[], Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Any]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


# ---- set-up: the simulators, the users --------------------------------------------------------


async def configure_sims(run: Run, latency_s: float, error_rate: float) -> None:
    for provider in PROVIDER_NAMES:
        await run.sim.configure(provider, latency_s=latency_s, error_rate=error_rate, rate_limits=[list(NO_LIMIT)],
                                read_rate_limits=[list(NO_LIMIT)], history=HISTORY[provider])  # fmt: skip


async def connect_users(run: Run, dep: Deployment, config: Config, prefix: str = "soak") -> list[User]:
    """Users made and connected through the API (tokens from the simulators' OAuth servers, as an
    OAuth callback gets them), round-robin over the providers."""
    users = [User(PROVIDER_NAMES[i % len(PROVIDER_NAMES)], f"{prefix}{i:05d}") for i in range(config.users)]
    await soak_events.ping_half(run, [u.sim_user for u in users if u.provider == "garmin"])
    api = run.api(dep)
    async with aiohttp.ClientSession(headers={"X-API-Key": run.key}) as session:

        async def connect(user: User) -> None:
            user.user_id = await api.create_user(f"{user.sim_user}-{run.run_id}")
            await _connect(session, dep.api_url, user.provider, run.env, user.user_id, user.sim_user)

        await gather_bounded(config.connect_concurrency, [lambda u=u: connect(u) for u in users])  # type: ignore[misc]
    return users


# ---- a round: every user's sync at once, until all is settled -----------------------------------


async def _open_work(run: Run) -> tuple[int, int, int]:
    """(tasks not final, Garmin deliveries in flight, webhook events pending)."""
    tasks = await run.db.fetchval("SELECT count(*) FROM sync_tasks WHERE status IN ('queued', 'running')")
    events = await run.db.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'pending'")
    return tasks, (await run.sim.deliveries())["in_flight"], events


async def run_round(
    run: Run, dep: Deployment, users: list[User], number: int, config: Config, deadline: float
) -> Round:
    await run.sim.clear_requests()
    api = run.api(dep)
    started = time.monotonic()

    async def sync(user: User) -> None:
        user.task_ids.append(await api.sync(user.user_id, provider=user.provider))

    await gather_bounded(config.sync_concurrency, [lambda u=u: sync(u) for u in users])  # type: ignore[misc]
    log(f"round {number}: {len(users)} syncs asked for in {time.monotonic() - started:.1f} s")
    by_provider: dict[str, list[str]] = {}
    for user in users:
        by_provider.setdefault(user.provider, []).append(user.sim_user)
    emitted = await soak_events.emit_round_events(run, by_provider)
    log(f"round {number}: upstream events delivered: {dict(emitted)}")
    sync_s = 0.0
    last_report = time.monotonic()
    while True:
        tasks, deliveries, events = await _open_work(run)
        if not tasks and not sync_s:
            sync_s = time.monotonic() - started
        if not tasks and not deliveries and not events:
            break
        open_work = f"{tasks} tasks open, {deliveries} deliveries in flight, {events} events pending"
        if time.monotonic() > deadline:
            raise RoundFailed(f"round {number} not done in time: {open_work}")
        for child in _children(dep).values():
            if child.process.poll() is not None:
                raise RoundFailed(f"{child.name} exited ({child.process.returncode}) in round {number}: {open_work}")
        if time.monotonic() - last_report > 15:
            log(f"round {number}: {open_work}")
            last_report = time.monotonic()
        await asyncio.sleep(0.5)
    settled_s = time.monotonic() - started
    upstream = await upstream_calls(run)
    log(f"round {number}: tasks final in {sync_s:.1f} s, all settled in {settled_s:.1f} s, "
        f"{sum(sum(c.values()) for c in upstream.values())} upstream calls")  # fmt: skip
    return Round(number, len(users), sync_s, settled_s, upstream, events=emitted)


async def upstream_calls(run: Run) -> dict[str, Counter[str]]:
    """The calls the simulators answered since their log was last cleared: provider -> status -> calls."""
    return {p: Counter(str(r["status"]) for r in await run.sim.requests(p)) for p in PROVIDER_NAMES}


# ---- memory -------------------------------------------------------------------------------------


def _mb(pid: int, field_name: str) -> float:
    """A memory field of a process, in MB; 0 for a process that is gone."""
    try:
        return proc_status_kb(pid, field_name) / 1024
    except OSError:
        return 0.0


def rss_mb(dep: Deployment) -> dict[str, float]:
    return {name: _mb(c.pid, "VmRSS") for name, c in _children(dep).items()}


async def sample_memory(dep: Deployment, trace: list[tuple[float, dict[str, float]]], every_s: float) -> None:
    started = time.monotonic()
    while True:
        trace.append((time.monotonic() - started, rss_mb(dep)))
        await asyncio.sleep(every_s)


async def idle_rss(dep: Deployment, settle_s: float) -> dict[str, float]:
    """RSS once the processes have had a moment with nothing to do."""
    await asyncio.sleep(settle_s)
    return rss_mb(dep)


# ---- checks after the run -----------------------------------------------------------------------


async def check_user(run: Run, user: User) -> list[str]:
    """Differences between what the user's simulated account serves and the user's stored rows."""
    records = await run.sim.records(user.provider, user.sim_user)
    windows = [
        (r["summary_type"], int(r["start_time"].timestamp()), int(r["end_time"].timestamp()))
        for r in await run.db.fetch(
            "SELECT summary_type, start_time, end_time FROM garmin_backfills WHERE user_id = $1::uuid", user.user_id
        )
    ]
    want = expected.expected(user.provider, records, windows)
    rows: dict[str, list[tuple[expected.Key, Any]]] = {}
    for table in expected.TABLES:
        if table == "samples":
            found = await run.db.fetch(
                "SELECT sample_type, recorded_at, value FROM samples WHERE user_id = $1::uuid", user.user_id
            )
            rows[table] = [((r["sample_type"], r["recorded_at"]), r["value"]) for r in found]
        else:
            column = expected.key_column(user.provider, table)
            found = await run.db.fetch(
                f"SELECT {column} AS key, raw FROM {table} WHERE user_id = $1::uuid", user.user_id
            )
            rows[table] = [(r["key"], expected.as_listed(user.provider, json.loads(r["raw"]), records)) for r in found]
    return [
        f"{user.provider} user {user.sim_user} ({user.user_id}), {table}: "
        + ", ".join(f"{n} {what}" for what, n in diff.items() if n)
        + f" of {len(want[table])} expected"
        for table, diff in expected.compare(want, rows).items()
    ]


def read_logs(folder: Path, names: list[str]) -> tuple[Counter[str], Counter[str]]:
    """(LOG_EVENTS label -> lines, retry reason -> upstream calls retried) from JSON log files."""
    logged, reasons = Counter[str](), Counter[str]()
    for name in names:
        path = folder / f"{name}.log"
        with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as lines:
            for line in lines:
                if not line.startswith("{"):
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                label = LOG_EVENTS.get(entry.get("event", ""))
                if label:
                    logged[label] += 1
                if entry.get("event") == "upstream call failed":
                    reasons[str(entry.get("reason"))] += 1
    return logged, reasons


async def collect(run: Run, users: list[User], result: Result) -> None:
    rows = await run.db.fetch("SELECT provider, status::text, attempts FROM sync_tasks")
    for row in rows:
        result.tasks.setdefault(row["provider"], Counter())[row["status"]] += 1
        result.attempts[row["attempts"]] += 1
    result.open_tasks = [
        f"{r['provider']} task {r['id']}: {r['status']}"
        for r in await run.db.fetch(
            "SELECT id, provider, status::text FROM sync_tasks WHERE status IN ('queued', 'running')"
        )
    ]
    for table in expected.TABLES:
        result.rows[table] = await run.db.fetchval(f"SELECT count(*) FROM {table}")
    for row in await run.db.fetch("SELECT status, count(*) AS n FROM webhook_events GROUP BY status"):
        result.webhook_events[row["status"]] = row["n"]
    for sent in (await run.sim.deliveries())["sent"]:
        result.deliveries[f"{sent['provider']} {sent['status']}"] += sent["count"]
    result.event_kinds = await soak_events.event_counts(run)
    differences = await gather_bounded(4, [lambda u=u: check_user(run, u) for u in users])  # type: ignore[misc]
    result.differences = [d for found in differences for d in found]
    result.users_checked = len(users)


def _task_failures(result: Result) -> list[str]:
    config, failed = result.config, []
    total = sum(sum(c.values()) for c in result.tasks.values())
    if total != config.users * config.rounds:
        failed.append(f"{total} tasks recorded, {config.users * config.rounds} asked for")
    if result.open_tasks:
        failed.append(f"{len(result.open_tasks)} tasks never ended, e.g. {result.open_tasks[:3]}")
    not_succeeded = {f"{p} {s}": n for p, c in result.tasks.items() for s, n in c.items() if s != "succeeded"}
    if not_succeeded:
        failed.append(f"tasks that did not succeed: {not_succeeded}")
    return failed


def _data_failures(result: Result) -> list[str]:
    failed = []
    users = result.config.users * (result.config.rounds if result.config.fresh_users else 1)
    if result.users_checked != users:
        failed.append(f"rows checked for {result.users_checked} of {users} users")
    if result.differences:
        examples = result.differences[:5]
        failed.append(f"{len(result.differences)} user/table pairs differ from the simulators, e.g. {examples}")
    undelivered = {f"round {r.number}: {k}": n for r in result.rounds for k, n in r.events.items() if k[-4:] != " 200"}
    if undelivered:
        failed.append(f"upstream events whose webhook delivery was not taken: {undelivered}")
    refused = {k: n for k, n in result.deliveries.items() if not k.endswith(" 200")}
    if refused:
        failed.append(f"webhook deliveries not taken (status 0: no answer): {refused}")
    if set(result.webhook_events) - {"processed"}:
        failed.append(f"webhook events not processed: {dict(result.webhook_events)}")
    return failed


def _retry_failures(result: Result) -> list[str]:
    failed = []
    injected = result.upstream("fault:status")
    if result.config.error_rate and not injected:
        failed.append("no upstream error was injected")
    if result.retried_by_reason["HTTP 500"] != injected:
        failed.append(f"{injected} errors injected, {result.retried_by_reason['HTTP 500']} retried")
    crashes = {k: n for k, n in result.logged.items() if "crashed" in k}
    if crashes:
        failed.append(f"crashes logged: {crashes}")
    return failed


def failures(result: Result) -> list[str]:
    """Every check that failed, in words; none: the soak passed."""
    failed = [f"the run stopped early: {result.error}"] if result.error else []
    failed += _task_failures(result) + _data_failures(result) + _retry_failures(result)
    if result.flood is not None:
        failed += soak_tenants.failures(result.flood)
    for memory in result.memory:
        flat, how = memory_verdict(memory, result.config.memory_tolerance)
        if flat is False:
            failed.append(f"{memory.process} memory grew: {how}")
    return failed


# ---- the run ------------------------------------------------------------------------------------


async def soak(admin_dsn: str, redis_url: str, processes: Processes, config: Config) -> Result:
    """The whole soak; the result holds what was measured even when the run stopped early."""
    result = Result(config)
    started = time.monotonic()
    deadline = started + config.timeout_s
    async with bench_run(admin_dsn, redis_url, processes) as run:
        log(f"database wearsync_bench_{run.run_id}, simulators at {run.sim.url}, logs in {processes.log_dir}")
        await configure_sims(run, 0.0, 0.0)
        async with run.deployment("soak", limits_env(), workers=config.workers) as dep:
            await soak_events.register_webhooks(run, dep)
            users = await connect_users(run, dep, config)
            everyone = list(users)
            result.connect_s = time.monotonic() - started
            log(f"{len(users)} users connected in {result.connect_s:.1f} s; now {config.latency_s * 1000:.0f} ms "
                f"latency and {config.error_rate:.1%} errors upstream")  # fmt: skip
            await configure_sims(run, config.latency_s, config.error_rate)
            start_rss = await idle_rss(dep, config.settle_s)
            round_ends: list[dict[str, float]] = []
            sampler = asyncio.create_task(sample_memory(dep, result.trace, config.sample_every_s))
            try:
                for number in range(1, config.rounds + 1):
                    if config.fresh_users and number > 1:
                        users = await connect_users(run, dep, config, prefix=f"soak{number}x")
                        everyone += users
                    try:
                        result.rounds.append(await run_round(run, dep, users, number, config, deadline))
                    except RoundFailed as e:
                        result.error = str(e)
                        log(f"giving up: {e}")
                        result.rounds.append(Round(number, len(users), 0.0, 0.0, await upstream_calls(run), False))
                        round_ends.append(rss_mb(dep))
                        break
                    round_ends.append(await idle_rss(dep, config.settle_s))
            finally:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            peaks = {name: _mb(c.pid, "VmHWM") for name, c in _children(dep).items()}
            result.memory = [
                Memory(name, start_rss[name], [end[name] for end in round_ends] or [start_rss[name]], peaks[name])
                for name in start_rss
            ]
            names = [c.name for c in _children(dep).values()]
        # Checked with the API and workers stopped: nothing moves, and their connections are free.
        await configure_sims(run, 0.0, 0.0)  # the checks read the simulators' records
        log("checking every user's rows against the simulators")
        await collect(run, everyone, result)
        result.logged, result.retried_by_reason = read_logs(processes.log_dir, names)
        if config.flood is not None and not result.error:
            result.flood = await two_tenants(run, config, config.flood, result, users, deadline)
    result.duration_s = time.monotonic() - started
    return result


async def two_tenants(
    run: Run, config: Config, flood: soak_tenants.Flood, result: Result, users: list[User], deadline: float
) -> soak_tenants.FloodResult:
    """The flood and the second application's bound (bench/soak_tenants.py), as many flooding users
    as the rounds had of the provider, each needing as many calls as a first sync did in round 1."""
    count = sum(1 for u in users if u.provider == flood.provider)
    calls = sum(result.rounds[0].upstream.get(flood.provider, Counter()).values()) / max(1, count)
    log(f"two tenants: {count} {flood.provider} first syncs flooding, about {calls:.0f} calls each")
    await configure_sims(run, config.latency_s, 0.0)

    async def check(run: Run, provider: str, sim_user: str, user_id: str) -> list[str]:
        return await check_user(run, User(provider, sim_user, user_id))

    flooded = await soak_tenants.run_flood(run, limits_env(), config.workers, flood, calls, count, check, deadline)
    log(f"two tenants: {soak_tenants.rows(flooded)[-1][1]}")
    return flooded


def _children(dep: Deployment) -> dict[str, Child]:
    return {c.name.removeprefix(f"{dep.name}-"): c for c in [dep.api, *dep.workers]}


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    defaults = Config()
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="1: first syncs only")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_s * 1000)
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s, help="the whole run")
    parser.add_argument("--memory-tolerance", type=float, default=defaults.memory_tolerance)
    parser.add_argument("--fresh-users", action="store_true", help="every round: users of its own, first syncs")
    parser.add_argument("--no-write", action="store_true", help="leave bench/soak.md alone")
    parser.add_argument("--no-tenants", action="store_true", help="no second application's syncs during a flood")
    args = parser.parse_args()
    if args.users < len(PROVIDER_NAMES) or args.rounds < 1:
        parser.error(f"--users must be at least {len(PROVIDER_NAMES)} and --rounds at least 1")
    config = Config(users=args.users, rounds=args.rounds, workers=args.workers, latency_s=args.latency_ms / 1000,
                    error_rate=args.error_rate, timeout_s=args.timeout_s,
                    memory_tolerance=args.memory_tolerance, fresh_users=args.fresh_users,
                    flood=None if args.no_tenants else soak_tenants.Flood())  # fmt: skip
    signal.signal(signal.SIGTERM, _terminate)
    processes = Processes(log_dir=HERE.parent / ".wearsync" / "soak" / "logs")
    meta = machine()
    try:
        with servers() as (admin_dsn, redis_url, origin):
            log(origin)
            result = asyncio.run(soak(admin_dsn, redis_url, processes, config))
    finally:
        processes.close()
    result.meta = meta | {"servers": origin}
    failed = failures(result)
    text = report(result, failed)
    print(text)
    if not args.no_write:
        (HERE / "soak.md").write_text(text)
        log("wrote bench/soak.md")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
