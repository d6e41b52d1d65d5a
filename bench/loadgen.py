"""The enqueue load generator, run as its own process (`python -m bench.loadgen < spec.json`) so
that it does not share the API's CPU. It prints one JSON object: latencies, statuses, elapsed.

Request k syncs user `users[k % len(users)]` with `limit=1 + (k // len(users)) % 100`, so every
request up to len(users) * 100 has parameters no open task has: none is coalesced, each inserts a
task and enqueues a job.

Two modes: closed loop (`concurrency` clients, each sending its next request when the last one
answered: the throughput) and open loop (`rate` requests per second sent on schedule whatever
the answers: the latency at that load, without the closed loop's coordinated omission).
"""

import asyncio
import json
import resource
import sys
import time
from typing import Any

import aiohttp


def urls(spec: dict[str, Any], first: int, count: int) -> list[str]:
    users: list[str] = spec["users"]
    base = f"{spec['url']}/api/v1/suunto/users"
    return [
        f"{base}/{users[k % len(users)]}/sync?limit={1 + (k // len(users)) % 100}" for k in range(first, first + count)
    ]


class Recorder:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}

    async def post(self, url: str) -> None:
        started = time.perf_counter()
        try:
            async with self.session.post(url) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            status = type(e).__name__
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def closed_loop(recorder: Recorder, todo: list[str], concurrency: int) -> None:
    pending = iter(todo)

    async def client() -> None:
        for url in pending:
            await recorder.post(url)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def open_loop(recorder: Recorder, todo: list[str], rate: float) -> None:
    started = time.perf_counter()
    sent: list[asyncio.Task[None]] = []
    for i, url in enumerate(todo):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(recorder.post(url)))
    await asyncio.gather(*sent)


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    concurrency: int | None = spec.get("concurrency")
    rate: float | None = spec.get("rate")
    connector = aiohttp.TCPConnector(limit=concurrency or 256)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"X-API-Key": spec["key"]}) as s:
        first = int(spec["first"])
        if spec.get("warmup"):  # connections opened, the API's pool filled; not counted
            await closed_loop(Recorder(s), urls(spec, first, spec["warmup"]), concurrency or 64)
            first += spec["warmup"]
        recorder = Recorder(s)
        todo = urls(spec, first, spec["requests"])
        cpu_before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if rate:
            await open_loop(recorder, todo, rate)
        else:
            await closed_loop(recorder, todo, concurrency or 64)
        elapsed = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    return {
        "requests": len(todo),
        "elapsed_s": elapsed,
        "rate": len(todo) / elapsed,
        "statuses": recorder.statuses,
        "latencies_ms": recorder.latencies_ms,
        "cpu_s": cpu,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
