"""`make soak` (= `python -m bench.soak`): many users syncing at once, bounded in time, on loopback.

The bench's real processes (simulators, one API, `--workers` workers; bench/harness.py) against
PostgreSQL and Redis. `--users` users, spread evenly over the five providers, are made and
connected through the API with one API key, as a client does. The simulators then answer every
call `--latency-ms` late and fail `--error-rate` of them with a 500, their rate limits (and ours)
out of reach so that the run is bounded by work, not by waiting. Each round, every user's sync is
asked for at once (round 1: first syncs; later rounds: re-syncs, which must store nothing twice);
a round ends when every task is final, Garmin's backfills are delivered and every webhook event
is processed. Meanwhile the resident memory (RSS) of the API and of each worker is sampled.

Checks (any failure: exit status 1): every task ended, and succeeded; each user's stored rows are
exactly the simulator's records, per data type (bench/expected.py); every webhook delivery was
taken; errors were injected and every one was retried; memory stayed flat (see `memory_verdict`).
The counts and the verdict are printed and written to bench/soak.md (`--no-write`: not written).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import aiohttp

from bench import expected
from bench.harness import Child, Deployment, Processes, Run, bench_run, proc_status_kb, servers
from bench.run import machine
from wearsync.dev import _connect
from wearsync.settings import PROVIDER_NAMES, webhook_path

HERE = Path(__file__).resolve().parent
NO_LIMIT = (1_000_000, 900)  # rate limits (the simulators' and ours) that the run never reaches
# Each simulated user's account: small, so that 1,000 of them sync in minutes on 2 shared cores,
# yet every data type has records (Polar's older exercises lie outside what a sync fetches).
HISTORY = {
    "garmin": {"workouts": 6, "days_247": 3},
    "strava": {"workouts": 25},
    "polar": {"workouts": 8, "older_workouts": 2},
    "suunto": {"workouts": 25, "days_247": 3},
    "whoop": {"workouts": 10, "days_247": 5},
}
FINAL = ("succeeded", "partial", "failed")
# What the workers log (JSON lines) when they retry or wait, counted from their logs.
LOG_EVENTS = {
    "upstream call failed": "upstream calls retried",
    "upstream rate limited, waiting": "429s waited out",
    "rate limited, deferring the task": "tasks deferred (rate limit)",
    "task continues in a new job": "tasks continued in a new job",
    "database unavailable, retrying the task": "tasks retried (database)",
    "sync task crashed": "sync tasks crashed",
    "webhook event crashed": "webhook events crashed",
}


class RoundFailed(Exception):
    """A round could not finish: out of time, or a process died."""


@dataclass(frozen=True)
class Config:
    users: int = 1000
    rounds: int = 2
    workers: int = 2
    latency_s: float = 0.05
    error_rate: float = 0.01
    timeout_s: float = 900.0  # the whole run
    sample_every_s: float = 0.5
    settle_s: float = 2.0  # idle time before RSS is taken at the start and after each round
    memory_tolerance: float = 0.05  # RSS growth allowed from the end of round 1 to the end
    connect_concurrency: int = 16
    # Every round with users of its own (first syncs every round) instead of re-syncs of round 1's.
    fresh_users: bool = False
    sync_concurrency: int = 64


@dataclass
class User:
    provider: str
    sim_user: str
    user_id: str = ""
    task_ids: list[str] = field(default_factory=list)


@dataclass
class Round:
    number: int
    tasks: int
    sync_s: float  # from the first sync asked for until all tasks were final
    settled_s: float  # ... until the webhooks were delivered and processed too
    upstream: dict[str, Counter[str]]  # provider -> status (200, 429, fault:status, ...) -> calls
    finished: bool = True


@dataclass
class Memory:
    process: str
    start_mb: float  # idle, before the first round
    round_end_mb: list[float]  # idle, after each round
    peak_mb: float  # the kernel's high-water mark (VmHWM)

    @property
    def end_mb(self) -> float:
        return self.round_end_mb[-1]

    @property
    def growth_mb(self) -> float:
        """From the end of the first round (every code path run, the largest working set seen)."""
        return self.end_mb - self.round_end_mb[0]


@dataclass
class Result:
    config: Config
    meta: dict[str, Any] = field(default_factory=dict)
    connect_s: float = 0.0
    rounds: list[Round] = field(default_factory=list)
    tasks: dict[str, Counter[str]] = field(default_factory=dict)  # provider -> status -> tasks
    attempts: Counter[int] = field(default_factory=Counter)  # attempts -> tasks
    open_tasks: list[str] = field(default_factory=list)  # not final when the run gave up
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows
    differences: list[str] = field(default_factory=list)  # per user and table, where rows differ
    users_checked: int = 0
    webhook_events: Counter[str] = field(default_factory=Counter)  # status -> events
    deliveries: Counter[str] = field(default_factory=Counter)  # "provider status" -> deliveries
    logged: Counter[str] = field(default_factory=Counter)  # LOG_EVENTS label -> lines
    retried_by_reason: Counter[str] = field(default_factory=Counter)
    memory: list[Memory] = field(default_factory=list)
    trace: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (s, process -> MB)
    duration_s: float = 0.0
    error: str = ""  # what stopped the run early, if anything

    def upstream(self, status: str | None = None) -> int:
        """Calls the simulators answered (with `status` only, if given), all rounds."""
        return sum(n for r in self.rounds for c in r.upstream.values() for s, n in c.items() if status in (None, s))


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
    return Round(number, len(users), sync_s, settled_s, upstream)


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


def memory_verdict(memory: Memory, tolerance: float) -> tuple[bool | None, str]:
    """Flat: at the end, idle, no more than `tolerance` above where it was, idle, after round 1.
    Round 1 runs every code path and holds the largest working set (first syncs carry all the
    rows); later rounds can only add what is kept, which is what a leak does. With one round
    there is nothing to compare: None."""
    if len(memory.round_end_mb) < 2:
        return None, "not judged: one round (the verdict compares later rounds with the first)"
    allowed = memory.round_end_mb[0] * tolerance
    flat = memory.growth_mb <= allowed
    return flat, f"{memory.growth_mb:+.1f} MB after round 1 (allowed {allowed:.1f} MB)"


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
            rows[table] = [(r["key"], json.loads(r["raw"])) for r in found]
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
            await run.sim.set_webhook(
                "garmin", dep.api_url + webhook_path("garmin", run.env["WEARSYNC_GARMIN_WEBHOOK_PATH_SECRET"])
            )
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
    result.duration_s = time.monotonic() - started
    return result


def _children(dep: Deployment) -> dict[str, Child]:
    return {c.name.removeprefix(f"{dep.name}-"): c for c in [dep.api, *dep.workers]}


# ---- the report ---------------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _counts(counts: Counter[str] | dict[str, int], sep: str = " ") -> str:
    return ", ".join(f"{k}{sep}{_n(n)}" for k, n in counts.items()) or "none"


def _what_was_run(c: Config) -> str:
    accounts = "; ".join(f"{p} {', '.join(f'{k} {v}' for k, v in h.items())}" for p, h in HISTORY.items())
    rounds = (
        "every round with users of its own (first syncs every round)"
        if c.fresh_users
        else "round 1: first syncs; then re-syncs of the same users"
    )
    fresh = " --fresh-users" if c.fresh_users else ""
    return (
        f"`python -m bench.soak --users {c.users} --rounds {c.rounds} --workers {c.workers} "
        f"--latency-ms {c.latency_s * 1000:.0f} --error-rate {c.error_rate}{fresh}`: "
        f"{c.users:,} users ({c.users // len(PROVIDER_NAMES):,} per provider) made and connected through the API, "
        f"then {c.rounds} round(s) of every user's sync asked for at once ({rounds}), against simulators answering "
        f"every call {c.latency_s * 1000:.0f} ms late and {c.error_rate:.1%} of them with a 500, rate limits (theirs "
        f"and ours) at {NO_LIMIT[0]:,} per {NO_LIMIT[1]} s. One API and {c.workers} worker(s), default settings "
        f"otherwise, no scheduled syncs. Each simulated account: {accounts}."
    )


def _count_rows(result: Result) -> list[tuple[str, str]]:
    statuses = Counter[str]()
    for counts in result.tasks.values():
        statuses.update(counts)
    users_differing = len({d.split(",")[0] for d in result.differences})
    rows = [("users connected", f"{_n(result.config.users)} in {result.connect_s:.1f} s")]
    rows += [(f"round {r.number}: tasks", f"{_n(r.tasks)}, all final after {r.sync_s:.1f} s, webhooks processed "
              f"after {r.settled_s:.1f} s" if r.finished else f"{_n(r.tasks)}, NOT finished (see above)")
             for r in result.rounds]  # fmt: skip
    rows.append(("tasks by status", _counts(Counter(dict(statuses.most_common())))))
    rows += [(f"{p} tasks", _counts(counts)) for p, counts in sorted(result.tasks.items())]
    rows.append(("tasks by attempts", _counts({str(a): n for a, n in sorted(result.attempts.items())}, ": ")))
    rows += [(f"rows in {table}", _n(n)) for table, n in result.rows.items()]
    rows.append(("users whose rows equal the simulators' records",
                 f"{_n(result.users_checked - users_differing)} of {_n(result.users_checked)}"))  # fmt: skip
    for r in result.rounds:
        calls = {p: sum(r.upstream.get(p, Counter()).values()) for p in PROVIDER_NAMES}
        rows.append((f"round {r.number}: upstream calls", f"{_n(sum(calls.values()))} ({_counts(calls)})"))
    rows.append(("upstream errors injected (500)", _n(result.upstream("fault:status"))))
    rows.append(("upstream calls retried", f"{_n(sum(result.retried_by_reason.values()))} "
                 f"({_counts(result.retried_by_reason, ': ')})"))  # fmt: skip
    rows += [(label, _n(n)) for label, n in sorted(result.logged.items()) if label != "upstream calls retried"]
    rows.append(("webhook deliveries", _counts(dict(sorted(result.deliveries.items())), ": ")))
    rows.append(("webhook events", _counts(result.webhook_events)))
    rows.append(("duration", f"{result.duration_s:.0f} s in all"))
    return rows


def _memory_rows(result: Result) -> list[str]:
    rounds = max((len(m.round_end_mb) for m in result.memory), default=0)
    lines = [
        "| process | start (idle) | " + "".join(f"end of round {i + 1} | " for i in range(rounds)) + "peak | verdict |",
        "| --- | --- | " + "--- | " * rounds + "--- | --- |",
    ]
    for m in result.memory:
        flat, how = memory_verdict(m, result.config.memory_tolerance)
        ends = "".join(f"{mb:.1f} | " for mb in m.round_end_mb)
        lines.append(f"| {m.process} | {m.start_mb:.1f} | {ends}{m.peak_mb:.1f} | {_verdict_word(flat)}: {how} |")
    return lines


def _timeline(result: Result, rows: int = 12) -> list[str]:
    """The sampled RSS at about `rows` evenly spaced instants of the rounds."""
    if not result.trace:
        return []
    names = list(result.trace[0][1])
    step = max(1, len(result.trace) // rows)
    picked = result.trace[::step] + ([result.trace[-1]] if (len(result.trace) - 1) % step else [])
    lines = ["| s into the rounds | " + " | ".join(names) + " |", "| --- | " + "--- | " * len(names)]
    lines += [f"| {t:.0f} | " + " | ".join(f"{mb.get(n, 0):.1f}" for n in names) + " |" for t, mb in picked]
    return lines


def report(result: Result, failed: list[str]) -> str:
    meta = result.meta
    load = meta.get("load", (0.0,))[0]
    verdict = "**PASSED**" if not failed else "**FAILED**:\n\n" + "\n".join(f"- {f}" for f in failed)
    lines = [
        "# `make soak` results",
        "",
        f"{meta.get('date', '?')}, commit {meta.get('commit', '?')}; {meta.get('cpus', '?')} CPUs, load average "
        f"{load:.2f} at the start; {meta.get('servers', '')}; the run took {result.duration_s:.0f} s. How to run it "
        "and what is checked: [README.md](README.md#make-soak).",
        "",
        verdict,
        "",
        "## What was run",
        "",
        _what_was_run(result.config),
        "",
        "## Counts",
        "",
        "| what | count |",
        "| --- | --- |",
        *(f"| {what} | {count} |" for what, count in _count_rows(result)),
        "",
        "## Memory (RSS, MB)",
        "",
        *_memory_rows(result),
        "",
        memory_note(result),
        "",
        *_timeline(result),
        "",
    ]
    return "\n".join(lines)


def _verdict_word(flat: bool | None) -> str:
    return "-" if flat is None else "flat" if flat else "GREW"


def memory_note(result: Result) -> str:
    c = result.config
    later_tasks = max(1, c.users * (len(result.rounds) - 1))
    threshold = ", ".join(f"{m.process} {m.round_end_mb[0] * c.memory_tolerance * 1024 / later_tasks:.0f} KB"
                          for m in result.memory)  # fmt: skip
    return (
        f"Sampled every {c.sample_every_s} s ({len(result.trace)} samples); start and ends are taken idle "
        f"({c.settle_s:g} s after the work is done), the peak is the kernel's high-water mark. Verdict: flat when "
        f"the RSS at the end is within {c.memory_tolerance:.0%} of the RSS at the end of round 1. Round 1 runs every "
        "code path and holds the largest working set (first syncs carry all the rows), so a bounded process ends "
        "every later round where it ended the first, give or take the allocator's fragmentation; what a leak keeps "
        "grows with every task. "
        + (
            f"Over the later rounds' {later_tasks:,} tasks, the tolerance lets through a leak of at most about "
            f"{threshold} per task. "
            + (
                "Every round stored rows (`--fresh-users`), so memory kept per stored row would show too."
                if c.fresh_users
                else "Re-syncs store few rows: `--fresh-users` (rows stored every round) also looks for memory kept "
                "per stored row."
            )
            if len(result.rounds) > 1
            else "With one round there is nothing to compare: no verdict."
        )
    )


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
    args = parser.parse_args()
    if args.users < len(PROVIDER_NAMES) or args.rounds < 1:
        parser.error(f"--users must be at least {len(PROVIDER_NAMES)} and --rounds at least 1")
    config = Config(users=args.users, rounds=args.rounds, workers=args.workers, latency_s=args.latency_ms / 1000,
                    error_rate=args.error_rate, timeout_s=args.timeout_s,
                    memory_tolerance=args.memory_tolerance, fresh_users=args.fresh_users)  # fmt: skip
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
