"""The five measurements, one function each. Every one starts its own deployment (an API and its
workers on a queue of their own) on the run's database and simulators, and syncs Suunto users."""

import asyncio
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from bench.harness import Api, Run, connect_sim_user, cpu_seconds, machine_cpu, proc_status_kb

T = TypeVar("T")
NO_LIMIT = (1_000_000, 900)  # a rate limit no measurement reaches, upstream and ours
PAGE_CONCURRENCY = 4  # WEARSYNC_SUUNTO_PAGE_CONCURRENCY's default, which the deployments keep


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def median_run(runs: list[T], key: Callable[[T], float]) -> T:
    """The run in the middle by `key` (of an odd number of runs: the median)."""
    return sorted(runs, key=key)[len(runs) // 2]


def limits_env(limit: tuple[int, int]) -> dict[str, str]:
    return {"WEARSYNC_SUUNTO_RATE_LIMITS": f"{limit[0]}/{limit[1]}"}


# ---- 1. enqueue -------------------------------------------------------------------------------


@dataclass
class Load:
    mode: str  # "closed" (N clients back to back) or "open" (a fixed offered rate)
    requests: int
    rate: float  # requests answered per second
    p50_ms: float
    p99_ms: float
    errors: int  # anything but 200
    api_cpu: float  # cores the API process used (1.0 = one core busy all the time)
    machine_cpu: float  # share of all the machine's cores busy
    loadgen_cpu: float  # cores the load generator used
    latencies_ms: list[float] = field(repr=False)


@dataclass
class Enqueue:
    users: int
    concurrency: int
    closed_runs: list[Load]  # the closed loop, repeated
    open: Load
    tasks: int  # tasks queued in PostgreSQL
    jobs: int  # jobs waiting in the arq queue

    @property
    def closed(self) -> Load:
        return median_run(self.closed_runs, lambda load: load.rate)


async def _connected_users(api: Api, count: int) -> list[str]:
    """`count` users with a Suunto connection each (placeholder tokens: no worker runs here)."""
    gate = asyncio.Semaphore(16)
    tokens = {"access_token": "bench-placeholder", "refresh_token": "bench-placeholder", "user": "bench"}

    async def one(i: int) -> str:
        async with gate:
            user_id = await api.create_user(f"bench-enqueue-{i}")
            await api.connect(user_id, tokens)
            return user_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _load(run: Run, api_pid: int, spec: dict[str, Any], timeout_s: float = 120.0) -> Load:
    """Run the load generator in its own process; the API's and the machine's CPU meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    api_cpu, (busy, total) = cpu_seconds(api_pid), machine_cpu()
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(spec).encode()), timeout_s)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err.decode()[-2000:]}")
    result = json.loads(out)
    busy2, total2 = machine_cpu()
    elapsed, latencies = result["elapsed_s"], result["latencies_ms"]
    return Load(
        mode="open" if spec.get("rate") else "closed",
        requests=result["requests"],
        rate=result["rate"],
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        errors=sum(n for status, n in result["statuses"].items() if status != "200"),
        # Both include the warm-up and the process start: a slight underestimate of the busy share.
        api_cpu=(cpu_seconds(api_pid) - api_cpu) / elapsed,
        machine_cpu=(busy2 - busy) / max(1, total2 - total),
        loadgen_cpu=result["cpu_s"] / elapsed,
        latencies_ms=latencies,
    )


async def enqueue(
    run: Run,
    users: int = 500,
    concurrency: int = 64,
    requests: int = 3000,
    repeats: int = 3,
    target_rate: float = 1500,
) -> Enqueue:
    """Async `POST .../sync` against one API process with no worker running, so the queue just
    fills: the most it answers with `concurrency` clients back to back (`repeats` times, after a
    warm-up), then p50/p99 latency at the target rate offered open-loop (or at 80% of the median
    of the most it answered, if that is less)."""
    async with run.deployment("enqueue", workers=0) as dep:
        api = run.api(dep)
        user_ids = await _connected_users(api, users)
        spec = {"url": dep.api_url, "key": run.key, "users": user_ids, "concurrency": concurrency}
        closed_runs, first, warmup = [], 0, 500
        for _ in range(repeats):
            closed_runs.append(
                await _load(run, dep.api.pid, spec | {"first": first, "warmup": warmup, "requests": requests})
            )
            first, warmup = first + warmup + requests, 0
        rate = min(target_rate, 0.8 * median_run(closed_runs, lambda load: load.rate).rate)
        opened = await _load(run, dep.api.pid, spec | {"first": first, "requests": int(rate * 2.5), "rate": rate})
        assert first + opened.requests <= users * 100, "requests would repeat parameters, and be coalesced"
        tasks = await run.db.fetchval("SELECT count(*) FROM sync_tasks WHERE status = 'queued'")
        jobs = await run.redis.zcard(dep.queue)
    return Enqueue(users, concurrency, closed_runs, opened, tasks, jobs)


# ---- upstream calls, from the simulator's request log --------------------------------------------

ENDPOINTS = {  # the simulator's path -> (data type, what it serves)
    "/v3/workouts/": ("workouts", "workouts"),
    "/247samples/sleep": ("247", "sleep"),
    "/247samples/recovery": ("247", "recovery"),
    "/247samples/activity": ("247", "activity samples"),
    "/247/daily-activity-statistics": ("247", "daily statistics"),
}


def data_calls(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data API calls of a request log (token calls left out)."""
    return [entry for entry in log if entry["path"] in ENDPOINTS]


def calls_by_endpoint(log: list[dict[str, Any]]) -> dict[str, int]:
    counts = {name: 0 for _, name in ENDPOINTS.values()}
    for entry in data_calls(log):
        counts[ENDPOINTS[entry["path"]][1]] += 1
    return counts


@dataclass
class Calls:
    workouts: int
    days_247: int
    history_days: int
    first: dict[str, int]  # endpoint -> calls
    again: dict[str, int]
    again_stored: dict[str, int]  # records the re-sync wrote, per kind

    @staticmethod
    def per_type(counts: dict[str, int]) -> dict[str, int]:
        types = {"workouts": 0, "247": 0}
        for data_type, name in ENDPOINTS.values():
            types[data_type] += counts[name]
        return types


async def upstream_calls(run: Run, workouts: int = 300, days_247: int = 42) -> Calls:
    """A first sync and a re-sync of the unchanged account, both as a client asks by default
    (`POST .../sync`, no parameters): the calls each made, per endpoint."""
    await run.sim.reset()
    await run.sim.set_history("bench-calls", workouts, days_247)
    async with run.deployment("calls", limits_env(NO_LIMIT)) as dep:
        api = run.api(dep)
        user_id = await connect_sim_user(run, api, "bench-calls")
        await run.sim.clear_requests()
        await api.sync_and_wait(user_id)
        first = calls_by_endpoint(await run.sim.requests())
        await run.sim.clear_requests()
        again = await api.sync_and_wait(user_id)
        second = calls_by_endpoint(await run.sim.requests())
    stored: dict[str, int] = {}
    for progress in again["progress"].values():
        for kind, n in (progress.get("records") or {}).items():
            stored[kind] = stored.get(kind, 0) + n
    return Calls(workouts, days_247, 90, first, second, stored)


# ---- 2. ingest --------------------------------------------------------------------------------


@dataclass
class Ingest:
    workouts: int
    days_247: int
    workouts_s: float  # the workouts sync, started to finished
    rows_247: dict[str, int]  # rows the 24/7 sync wrote, per table
    s_247: float
    calls: int
    worker_cpu_workouts: float  # cores the worker used meanwhile
    worker_cpu_247: float
    machine_cpu_247: float  # share of all the machine's cores busy during the 24/7 sync

    @property
    def workouts_per_s(self) -> float:
        return self.workouts / self.workouts_s

    @property
    def samples_per_s(self) -> float:
        return self.rows_247["samples"] / self.s_247

    @property
    def rows_247_per_s(self) -> float:
        return sum(self.rows_247.values()) / self.s_247


async def ingest(run: Run, workouts: int = 5000, days_247: int = 365, repeats: int = 3) -> list[Ingest]:
    """Large accounts (`repeats` of them, alike), each synced by one worker: the workouts (100 per
    page), then a year of 24/7 data; rows written per second of each sync. Nothing upstream limits
    it: no latency, and rate limits (the simulator's and ours) it never reaches."""
    await run.sim.reset()
    users = [f"bench-ingest-{k}" for k in range(repeats)]
    for user in users:
        await run.sim.set_history(user, workouts, days_247)
    env = limits_env(NO_LIMIT) | {"WEARSYNC_SUUNTO_247_HISTORY_DAYS": str(days_247 + 2)}
    async with run.deployment("ingest", env) as dep:
        return [await _ingest_one(run, run.api(dep), dep.workers[0].pid, user, workouts, days_247) for user in users]


async def _ingest_one(run: Run, api: Api, pid: int, user: str, workouts: int, days_247: int) -> Ingest:
    user_id = await connect_sim_user(run, api, user)
    await run.sim.clear_requests()
    cpu = cpu_seconds(pid)
    w = await api.sync_and_wait(user_id, data_type="workouts", limit=100, timeout_s=300)
    cpu_w = cpu_seconds(pid) - cpu
    rows_after_workouts = await run.row_counts(user_id)
    cpu, (busy, total) = cpu_seconds(pid), machine_cpu()
    d = await api.sync_and_wait(user_id, data_type="247", timeout_s=300)
    cpu_d, (busy2, total2) = cpu_seconds(pid) - cpu, machine_cpu()
    rows = await run.row_counts(user_id)
    calls = len(data_calls(await run.sim.requests()))
    rows_247 = {t: n - rows_after_workouts[t] for t, n in rows.items() if t != "workouts"}
    assert rows["workouts"] == workouts, f"{rows['workouts']} of {workouts} workouts stored"
    return Ingest(
        workouts=rows["workouts"],
        days_247=days_247,
        workouts_s=w["duration_s"],
        rows_247=rows_247,
        s_247=d["duration_s"],
        calls=calls,
        worker_cpu_workouts=cpu_w / w["client_s"],
        worker_cpu_247=cpu_d / d["client_s"],
        machine_cpu_247=(busy2 - busy) / max(1, total2 - total),
    )


# ---- 3. wall time against the lower bound -----------------------------------------------------


@dataclass
class WallTime:
    case: str
    latency_s: float
    rate_limit: tuple[int, int] | None  # (calls, window s) when it binds
    calls: dict[str, int]  # data type -> calls
    bound_latency_s: float
    bound_rate_s: float
    sync_s: float  # the task, started to finished
    client_s: float  # from the POST until the client saw it finished
    peak_in_flight: int
    throttled: int  # 429s the simulator answered
    # Between the first calls of successive 24/7 windows (4 calls each, k at a time): typically
    # L plus our own overhead per call, and the longest, where a page with data was written.
    round_s: float
    longest_round_s: float

    @property
    def bound_s(self) -> float:
        return max(self.bound_latency_s, self.bound_rate_s)

    @property
    def ratio(self) -> float:
        return self.sync_s / self.bound_s


def latency_bound(calls: dict[str, int], concurrency: int, latency_s: float) -> float:
    """The data types of a sync run side by side, each with `concurrency` calls in flight: each
    needs ceil(calls / concurrency) round trips at least."""
    return max(math.ceil(n / concurrency) * latency_s for n in calls.values() if n)


def rate_bound(calls: int, limit: tuple[int, int], started: float, latency_s: float) -> float:
    """`limit` = N calls per fixed W-second window aligned to the epoch (as Suunto counts, and our
    limiter): C calls need ceil(C/N) windows, so the last call starts no earlier than the start of
    the ceil(C/N)-th window counted from the one the sync started in, and answers L later."""
    n, window = limit
    if calls <= n:
        return 0.0
    first_window = math.floor(started / window)
    return (first_window + math.ceil(calls / n) - 1) * window - started + latency_s


def peak_in_flight(log: list[dict[str, Any]], latency_s: float) -> int:
    """Calls the simulator held at once, counting each as held for the simulated latency (a lower
    estimate: the log has arrival times only)."""
    arrivals = sorted(entry["at"] for entry in log)
    return max((sum(1 for t in arrivals if a - latency_s < t <= a) for a in arrivals), default=0)


async def wall_time(
    run: Run,
    case: str,
    latency_s: float = 0.1,
    rate_limit: tuple[int, int] | None = None,
    workouts: int = 1000,
    days_247: int = 42,
    history_days: int = 365,
    repeats: int = 1,
) -> list[WallTime]:
    """First syncs of every data type (100 workouts per page, `history_days` of 24/7 data) of
    `repeats` accounts alike, with `latency_s` on every upstream call, under `rate_limit` (the
    simulator's and ours) if given."""
    limit = rate_limit or NO_LIMIT
    await run.sim.reset(latency_s=latency_s, rate_limits=[list(limit)])
    users = [f"bench-wall-{case}-{k}" for k in range(repeats)]
    for user in users:
        await run.sim.set_history(user, workouts, days_247)
    env = limits_env(limit) | {"WEARSYNC_SUUNTO_247_HISTORY_DAYS": str(history_days)}
    async with run.deployment(f"wall-{case}", env) as dep:
        api = run.api(dep)
        return [await _wall_time_one(run, api, user, case, latency_s, rate_limit) for user in users]


async def _wall_time_one(
    run: Run, api: Api, user: str, case: str, latency_s: float, rate_limit: tuple[int, int] | None
) -> WallTime:
    limit = rate_limit or NO_LIMIT
    user_id = await connect_sim_user(run, api, user)
    if rate_limit:  # start in a fresh window: the warm-up call is not counted against the sync
        await asyncio.sleep(limit[1] - time.time() % limit[1] + 0.05)
    await run.sim.clear_requests()
    task = await api.sync_and_wait(user_id, limit=100)
    log = data_calls(await run.sim.requests())
    calls = {"workouts": 0, "247": 0}
    for entry in log:
        calls[ENDPOINTS[entry["path"]][0]] += 1
    started = datetime.fromisoformat(task["started_at"]).timestamp()
    window_starts: dict[str, float] = {}
    for entry in log:
        if ENDPOINTS[entry["path"]][0] == "247":
            window = entry["query"]["from"]
            window_starts[window] = min(entry["at"], window_starts.get(window, entry["at"]))
    starts = sorted(window_starts.values())
    rounds = [b - a for a, b in itertools.pairwise(starts)] or [0.0]
    return WallTime(
        case=case,
        latency_s=latency_s,
        rate_limit=rate_limit,
        calls=calls,
        bound_latency_s=latency_bound(calls, PAGE_CONCURRENCY, latency_s),
        bound_rate_s=rate_bound(sum(calls.values()), limit, started, latency_s),
        sync_s=task["duration_s"],
        client_s=task["client_s"],
        peak_in_flight=peak_in_flight(log, latency_s),
        throttled=sum(1 for entry in log if entry["status"] == 429),
        round_s=statistics.median(rounds),
        longest_round_s=max(rounds),
    )


# ---- 5. worker memory -------------------------------------------------------------------------


@dataclass
class Memory:
    account: str
    workouts: int
    days_247: int
    rows: int
    idle_mb: float  # resident after start-up, before the sync
    peak_mb: float  # VmHWM: the most it was ever resident
    sync_s: float
    trace: list[tuple[float, float]] = field(repr=False)  # (s since the sync was queued, MB resident)


async def _sample_rss(pid: int, trace: list[tuple[float, float]], every_s: float = 0.05) -> None:
    started = time.perf_counter()
    while True:
        trace.append((time.perf_counter() - started, proc_status_kb(pid, "VmRSS") / 1024))
        await asyncio.sleep(every_s)


async def worker_memory(run: Run, account: str, workouts: int, days_247: int) -> Memory:
    """Peak resident memory of a fresh worker through one full sync of an account (100 workouts
    per page, all of its 24/7 data), sampled every 50 ms and read from the kernel's peak (VmHWM)."""
    user = f"bench-memory-{account}"
    await run.sim.reset()
    await run.sim.set_history(user, workouts, days_247)
    env = limits_env(NO_LIMIT) | {"WEARSYNC_SUUNTO_247_HISTORY_DAYS": str(days_247 + 1)}
    async with run.deployment(f"memory-{account}", env) as dep:
        user_id = await connect_sim_user(run, run.api(dep), user)
        pid = dep.workers[0].pid
        await asyncio.sleep(1)  # settled after start-up
        idle = proc_status_kb(pid, "VmRSS") / 1024
        trace: list[tuple[float, float]] = []
        sampler = asyncio.create_task(_sample_rss(pid, trace))
        try:
            task = await run.api(dep).sync_and_wait(user_id, limit=100, timeout_s=300)
        finally:
            sampler.cancel()
        peak = proc_status_kb(pid, "VmHWM") / 1024
        rows = sum((await run.row_counts(user_id)).values())
    peak = max(peak, *(mb for _, mb in trace))
    return Memory(account, workouts, days_247, rows, idle, peak, task["duration_s"], trace)
