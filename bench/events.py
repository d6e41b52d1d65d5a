"""`make bench` (after bench.run), or `python -m bench.events`: outgoing webhooks through a real
`wearsync worker` to a sink in this process (an aiohttp server verifying every signature with
standardwebhooks, as an integrator's would). Prints and writes bench/events.md:

1. delivery throughput: a backlog of events for one endpoint, made due at once; events received
   per second by the sink from one worker (goal: at least 2,000/s);
2. latency: pages of one workout written through the real write path (an upsert and its event in
   one statement) at 500 per second, open loop; from each commit's acknowledgement to the sink's
   receipt of its event, p50 and p99 (goal: p99 under 1 s);
3. a sync's throughput with an endpoint registered (taking every event type, delivered meanwhile
   by the same worker) against the same sync with none (goal: at least 90%).
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bench.harness import ROOT, Processes, Run, bench_run, cpu_seconds, servers
from bench.measure import NO_LIMIT, limits_env, percentile
from wearsync.db import events
from wearsync.db.records import upsert_records
from wearsync.records import Workout

GOAL_PER_S, GOAL_P99_S, GOAL_SYNC_SHARE = 2000, 1.0, 0.9
BACKLOG = 20_000
RATE, SECONDS = 500, 20
PARTS = ("throughput", "latency", "sync")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Sink:
    secret: str = ""
    received: dict[str, float] = field(default_factory=dict)  # webhook-id -> first receipt (monotonic)
    by_record: dict[str, float] = field(default_factory=dict)  # a workout's record id -> its event's receipt
    invalid: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        try:
            Webhook(self.secret).verify(body, dict(request.headers), json_parse=False)
        except Exception:
            self.invalid += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        self.received.setdefault(webhook_id, at)
        event = json.loads(body)
        for record in event["data"].get("records") or ():
            self.by_record.setdefault(record["provider_record_id"], at)
        self.arrived.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def running_sink() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    app = web.Application()
    app.router.add_post("/hook", sink.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield sink, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def postgres_cpu(run: Run) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend of the run's database (the worker's among them)."""
    rows = await run.db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    found = {}
    for row in rows:
        with contextlib.suppress(OSError):
            found[row["pid"]] = cpu_seconds(row["pid"])
    return found


async def forget_endpoints(run: Run) -> None:
    """Once every delivery is recorded (the worker writes its batches while it runs)."""
    for _ in range(600):
        if not await run.db.fetchval("SELECT count(*) FROM event_deliveries WHERE status = 'pending'"):
            break
        await asyncio.sleep(0.1)
    await run.db.execute("DELETE FROM webhook_endpoints")


async def register(run: Run, api_url: str, url: str, **body: Any) -> dict[str, Any]:
    resp = await run.session.post(
        f"{api_url}/api/v1/webhook-endpoints", json={"url": url, **body}, headers={"X-API-Key": run.key}
    )
    endpoint: dict[str, Any] = await resp.json()
    assert resp.status == 201, endpoint
    return endpoint


# ---- 1. throughput ------------------------------------------------------------------------------


async def throughput(run: Run) -> dict[str, float]:
    async with running_sink() as (sink, url), run.deployment("events-throughput") as dep:
        endpoint = await register(run, dep.api_url, url, event_types=["data.created"])
        sink.secret = endpoint["secret"]
        endpoint_id = uuid.UUID(endpoint["id"])
        await run.db.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = $1", endpoint_id)
        app_id = await run.db.fetchval("SELECT application_id FROM webhook_endpoints WHERE id = $1", endpoint_id)
        log(f"(1) a backlog of {BACKLOG:,} events of 1,000 users ...")
        await run.db.execute(
            events.reporting(
                "SELECT g FROM generate_series(1, $2) AS g",
                """SELECT $1::uuid, (md5((g % 1000)::text))::uuid, 'data.created', jsonb_build_object(
                    'provider', 'suunto', 'kind', 'workouts', 'task_id', NULL,
                    'records', jsonb_build_array(jsonb_build_object('id', g, 'provider_record_id', 'b' || g)))
                   FROM changed""",
            ),
            app_id,
            BACKLOG,
        )
        # Made for the endpoint while it was disabled: now it takes them, all due at once.
        await run.db.execute(
            "INSERT INTO event_deliveries (event_id, endpoint_id, user_id) SELECT id, $1, user_id FROM events"
            " WHERE application_id = $2 AND type = 'data.created'",
            endpoint_id,
            app_id,
        )
        started = time.monotonic()
        pg_cpu = await postgres_cpu(run)
        worker_cpu, own_cpu = cpu_seconds(dep.workers[0].pid), time.process_time()
        await run.db.execute("UPDATE webhook_endpoints SET enabled = true WHERE id = $1", endpoint_id)
        await sink.wait_for(BACKLOG, timeout_s=300)
        seconds = max(sink.received.values()) - started
        worker_cpu, own_cpu = cpu_seconds(dep.workers[0].pid) - worker_cpu, time.process_time() - own_cpu
        pg_cpu = {pid: cpu - pg_cpu.get(pid, 0.0) for pid, cpu in (await postgres_cpu(run)).items()}
        await forget_endpoints(run)
    assert sink.invalid == 0
    return {"events": BACKLOG, "seconds": seconds, "per_s": BACKLOG / seconds, "worker_cpu_s": worker_cpu,
            "sink_cpu_s": own_cpu, "postgres_cpu_s": sum(pg_cpu.values())}  # fmt: skip


# ---- 2. latency -----------------------------------------------------------------------------------


async def latency(run: Run) -> dict[str, float]:
    async with running_sink() as (sink, url), run.deployment("events-latency") as dep:
        endpoint = await register(run, dep.api_url, url, event_types=["data.created"])
        sink.secret = endpoint["secret"]
        api = run.api(dep)
        users = [uuid.UUID(await api.create_user(f"latency-{uuid.uuid4().hex[:8]}")) for _ in range(50)]
        total = RATE * SECONDS
        committed: dict[str, float] = {}
        start_time = datetime(2026, 1, 1, tzinfo=UTC)
        writers = await asyncpg.create_pool(run.dsn, min_size=32, max_size=32)
        log(f"(2) {total:,} pages of one workout at {RATE}/s, each with its event ...")

        async def write(i: int) -> None:
            record_id = f"lat-{i}"
            row = Workout(record_id, "running", None, start_time + timedelta(minutes=i),
                          start_time + timedelta(minutes=i, seconds=30), {"i": i})  # fmt: skip
            async with writers.acquire() as conn:
                await upsert_records(conn, users[i % len(users)], "suunto", [row])
            committed[record_id] = time.monotonic()

        began = time.monotonic()
        writes = []
        for i in range(total):
            delay = began + i / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writes.append(asyncio.create_task(write(i)))
        offered = total / (time.monotonic() - began)
        await asyncio.gather(*writes)
        await writers.close()
        await sink.wait_for(total, timeout_s=120)
        await forget_endpoints(run)
    lags = [sink.by_record[r] - at for r, at in committed.items()]
    return {"events": total, "offered_per_s": offered, "committed_per_s": total / (max(committed.values()) - began),
            "p50_s": statistics.median(lags),
            "p99_s": percentile(lags, 99), "max_s": max(lags)}  # fmt: skip


# ---- 3. a sync with and without an endpoint ---------------------------------------------------------


async def sync_share(run: Run, workouts: int = 3000, days_247: int = 120, repeats: int = 5) -> dict[str, Any]:
    await run.sim.reset()
    env = limits_env(NO_LIMIT) | {"WEARSYNC_SUUNTO_247_HISTORY_DAYS": str(days_247 + 2)}
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    delivered = 0
    async with running_sink() as (sink, url), run.deployment("events-sync", env) as dep:
        api = run.api(dep)
        sink.secret = (await register(run, dep.api_url, url))["secret"]
        for case in ("without", "with") * repeats:
            await run.db.execute("UPDATE webhook_endpoints SET enabled = $1", case == "with")
            name = f"bench-events-{case}-{uuid.uuid4().hex[:6]}"
            await run.sim.set_history(name, workouts, days_247)
            user_id = await api.create_user(name)
            await api.connect(user_id, await run.sim.tokens(name))
            log(f"(3) a sync of {workouts:,} workouts and {days_247} days, {case} an endpoint ...")
            started, worker_cpu = time.monotonic(), cpu_seconds(dep.workers[0].pid)
            task = await api.sync_and_wait(user_id, limit=100, timeout_s=300)
            seconds[case].append(time.monotonic() - started)
            cpu[case].append(cpu_seconds(dep.workers[0].pid) - worker_cpu)
            assert task["status"] == "succeeded", task
        made = await run.db.fetchval("SELECT count(*) FROM event_deliveries")
        await run.db.execute("UPDATE webhook_endpoints SET enabled = true")
        await sink.wait_for(made, timeout_s=120)
        delivered = len(sink.received)
        await forget_endpoints(run)
    without, with_ = statistics.median(seconds["without"]), statistics.median(seconds["with"])
    cpu_without, cpu_with = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    return {"without_s": without, "with_s": with_, "share": without / with_, "runs": seconds, "delivered": delivered,
            "cpu_without_s": cpu_without, "cpu_with_s": cpu_with, "cpu_share": cpu_without / cpu_with}  # fmt: skip


def report(t: dict[str, float], lat: dict[str, float], share: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    worker_us = 1e6 * t["worker_cpu_s"] / t["events"]
    pg_us = 1e6 * t["postgres_cpu_s"] / t["events"]
    sink_us = 1e6 * t["sink_cpu_s"] / t["events"]
    runs = "; ".join(f"{case}: {', '.join(f'{s:.2f}' for s in runs)} s" for case, runs in share["runs"].items())
    return f"""# Outgoing webhooks: measured

`make bench` (bench/events.py): one real `wearsync worker` delivering to a sink in the bench's
process (aiohttp, every signature verified with standardwebhooks) on this machine
({os.cpu_count()} CPUs, load average {load} at the end, shared with PostgreSQL, the API, the
simulators and whatever else ran).

| measure | value | goal |
| --- | --- | --- |
| delivery throughput, one worker ({t["events"]:,} events due at once, 1,000 users) | **{t["per_s"]:,.0f} events/s** ({t["seconds"]:.1f} s) | >= {GOAL_PER_S:,} ({verdict(t["per_s"] >= GOAL_PER_S)}) |
| CPU per event: worker / PostgreSQL / sink | {worker_us:.0f} µs / {pg_us:.0f} µs / {sink_us:.0f} µs | |
| the worker's ceiling on a core of its own | {1e6 / worker_us:,.0f} events/s | |
| commit to receipt at {lat["offered_per_s"]:.0f} events/s offered, {lat["committed_per_s"]:.0f}/s committed ({lat["events"]:,} pages, 50 users) | p50 {lat["p50_s"] * 1000:.0f} ms, **p99 {lat["p99_s"] * 1000:.0f} ms**, max {lat["max_s"] * 1000:.0f} ms | p99 < {GOAL_P99_S:.0f} s ({verdict(lat["p99_s"] < GOAL_P99_S)}) |
| a sync with an endpoint vs without (median of 5 each) | **{share["share"]:.0%}** ({share["with_s"]:.2f} s vs {share["without_s"]:.2f} s; {share["delivered"]:,} events delivered) | >= {GOAL_SYNC_SHARE:.0%} ({verdict(share["share"] >= GOAL_SYNC_SHARE)}) |
| the worker's CPU for that sync, without vs with (the share) | {share["cpu_without_s"]:.2f} s vs {share["cpu_with_s"]:.2f} s ({share["cpu_share"]:.0%}) | |

The wall-clock figures move with whatever else the machine runs (here, often much: the load
average says); the CPU each event took does not. Runs of the sync: {runs}: on a loaded machine a
sync's wall time varies more from run to run than an endpoint could change it, so the worker's
CPU for the sync (which the deliveries beside it add to) is the steadier measure. The latency is measured from the moment the writer saw its statement
(the page and its event, one statement) committed to the sink's receipt; the worker looks for due
deliveries every WEARSYNC_EVENTS_POLL_S (0.1 s) when idle, and at once while there are more.
"""  # noqa: E501


async def main_async(admin_dsn: str, redis_url: str, processes: Processes, only: set[str]) -> str | None:
    async with asyncio.timeout(1800), bench_run(admin_dsn, redis_url, processes) as run:
        if "throughput" in only:
            t = await throughput(run)
            log(f"    {t['per_s']:,.0f} events/s; CPU: worker {t['worker_cpu_s']:.1f} s, sink {t['sink_cpu_s']:.1f} s")
        if "latency" in only:
            lat = await latency(run)
            log(f"    p50 {lat['p50_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms")
        if "sync" in only:
            share = await sync_share(run)
            log(f"    {share['share']:.0%} of the throughput without an endpoint")
        return report(t, lat, share) if only == set(PARTS) else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    processes = Processes()
    try:
        with servers() as (admin_dsn, redis_url, origin):
            log(origin)
            text = asyncio.run(main_async(admin_dsn, redis_url, processes, set(args.only)))
    finally:
        processes.close()
    if text is None:
        return
    print(text)
    if not args.no_write:
        (ROOT / "bench" / "events.md").write_text(text)
        log("wrote bench/events.md")


if __name__ == "__main__":
    main()
