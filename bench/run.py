"""`make bench` (= `python -m bench.run`): every measurement in one run, then the table (printed,
and written to bench/results.md with the plot bench/results.png).

Options: `--only NAME ...` runs some measurements (enqueue, calls, wall, ingest, memory); the
files are then left alone unless `--write` is given.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from bench import measure, report
from bench.harness import ROOT, Processes, Run, bench_run, servers

TIMEOUT_S = 900  # the whole run; each wait inside has its own, shorter timeout
MEASUREMENTS = ("enqueue", "calls", "wall", "ingest", "memory")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def measure_all(run: Run, only: set[str]) -> report.Results:
    results = report.Results()
    if "enqueue" in only:
        log("(1) enqueue: 500 connected users, then POST .../sync under load (no worker running)")
        results.enqueue = e = await measure.enqueue(run)
        rates = ", ".join(f"{load.rate:.0f}" for load in e.closed_runs)
        log(f"    {rates} req/s with {e.concurrency} clients; p99 {e.open.p99_ms:.1f} ms at {e.open.rate:.0f}/s")
    if "calls" in only:
        log("(4) upstream calls: a first sync and a re-sync of an unchanged account")
        results.calls = c = await measure.upstream_calls(run)
        log(f"    first {c.per_type(c.first)}, re-sync {c.per_type(c.again)}")
    if "wall" in only:
        log("(3) wall time with 100 ms upstream latency: latency-bound, then rate-limit-bound")
        results.wall = await measure.wall_time(run, "latency", repeats=3)
        results.wall += await measure.wall_time(run, "rate-limit", rate_limit=(20, 2))
        for w in results.wall:
            log(f"    {w.case}: {w.sync_s:.2f} s vs bound {w.bound_s:.2f} s ({w.ratio:.2f}x), calls {w.calls}")
    if "ingest" in only:
        log("(2) ingest: 5,000 workouts and 365 days of 24/7 data through one worker, 3 accounts")
        results.ingest = await measure.ingest(run)
        for i in results.ingest:
            log(f"    {i.workouts_per_s:.0f} workouts/s, {i.samples_per_s:.0f} samples/s")
    if "memory" in only:
        log("(5) worker memory: 300 workouts + 42 days, then 3,000 workouts + 420 days")
        results.memory = [
            await measure.worker_memory(run, "small", 300, 42),
            await measure.worker_memory(run, "10x", 3000, 420),
        ]
        for m in results.memory:
            log(f"    {m.account}: peak {m.peak_mb:.0f} MB ({m.rows} rows in {m.sync_s:.1f} s)")
    return results


async def main_async(admin_dsn: str, redis_url: str, processes: Processes, only: set[str]) -> report.Results:
    async with asyncio.timeout(TIMEOUT_S), bench_run(admin_dsn, redis_url, processes) as run:
        log(f"database wearsync_bench_{run.run_id}, simulators at {run.sim.url}, logs in .wearsync/bench/logs")
        return await measure_all(run, only)


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit.stdout.strip() or "unknown") + (" (+ uncommitted changes in src/)" if dirty.stdout else ""),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "python": sys.version.split()[0],
    }


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--write", action="store_true", help="write the files even with --only")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    processes = Processes()
    meta = machine()
    started = time.monotonic()
    try:
        with servers() as (admin_dsn, redis_url, origin):
            log(origin)
            results = asyncio.run(main_async(admin_dsn, redis_url, processes, set(args.only)))
    finally:
        processes.close()  # whatever happened: no process of ours outlives the run
    results.meta = meta | {"servers": origin, "duration_s": time.monotonic() - started}
    print(report.table(results))
    if set(args.only) == set(MEASUREMENTS) or args.write:
        report.write(results)
        log("wrote bench/results.md and bench/results.png")


if __name__ == "__main__":
    main()
