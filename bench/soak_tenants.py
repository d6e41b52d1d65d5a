"""`make soak`'s two tenants: while one application floods a provider, another's syncs must end
within a stated bound.

After the rounds, a deployment of its own (one API, the soak's workers) whose limiter gives the
provider (Whoop: a per-minute window in production) a limit that binds: `window_s`-second windows
of so many calls that the flood's first syncs need about `windows` of them. The soak's application
connects as many fresh users as the rounds had of that provider and asks for all their first syncs
at once (the flood); one window later, a second application (its own API key) asks for the first
syncs of `quiet_users` users (their workouts: a few calls each). Bound: each of those ends within
`bound_windows` windows of being asked for, while the flood still runs. It holds because the
limiter gives each active application (and each user within it) a fair share of every window,
from the moment its sync is queued, and a job waiting for its share gives its worker slot up:
without either, the second application's jobs wait behind every job of the flood.
"""

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.harness import Api, Deployment, Run, run_cli
from wearsync.dev import _connect

QUIET_HISTORY = {"workouts": 3, "days_247": 2}  # small accounts


@dataclass(frozen=True)
class Flood:
    provider: str = "whoop"
    window_s: int = 5
    windows: int = 10  # the flood's first syncs need about this many windows of calls
    bound_windows: int = 4  # the second application's syncs end within this many windows
    quiet_users: int = 3
    quiet_data_type: str = "workouts"  # what the second application syncs (a few calls a user)

    @property
    def bound_s(self) -> float:
        return self.bound_windows * self.window_s


@dataclass
class FloodResult:
    flood: Flood
    flood_users: int = 0
    limit: int = 0  # calls per window
    flood_tasks: Counter[str] = field(default_factory=Counter)  # status -> tasks
    flood_s: float = 0.0  # from the flood's syncs asked for until all were final
    quiet_tasks: Counter[str] = field(default_factory=Counter)
    quiet_s: list[float] = field(default_factory=list)  # each: from asked for to final
    flood_open: int = 0  # the flood's tasks still open when the second application's last sync ended
    differences: list[str] = field(default_factory=list)
    error: str = ""


# (run, provider, simulated user, wearsync user id) -> where the user's rows differ from the simulator's
Checker = Callable[[Run, str, str, str], Awaitable[list[str]]]


async def connect(run: Run, api_url: str, key: str, provider: str, names: list[str]) -> list[str]:
    """Fresh users of the key's application, connected to the simulated users `names`."""
    api = Api(run.session, api_url, key)
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:

        async def one(name: str) -> str:
            user_id = await api.create_user(name)
            await _connect(session, api_url, provider, run.env, user_id, name)
            return user_id

        return list(await asyncio.gather(*(one(n) for n in names)))


async def _wait_final(api: Api, task_ids: list[str], deadline: float) -> dict[str, dict[str, Any]]:
    tasks = {}
    for task_id in task_ids:
        tasks[task_id] = await api.wait(task_id, timeout_s=max(1.0, deadline - time.monotonic()), poll_s=0.1)
    return tasks


async def run_flood(
    run: Run, env: dict[str, str], workers: int, flood: Flood, calls_per_user: float, users: int, check: Checker,
    deadline: float,
) -> FloodResult:  # fmt: skip
    result = FloodResult(flood, flood_users=users)
    result.limit = max(4, math.ceil(users * calls_per_user / flood.windows))
    limits = {f"WEARSYNC_{flood.provider.upper()}_RATE_LIMITS": f"{result.limit}/{flood.window_s}"}
    quiet_key = (await run_cli(["api-key", "create", "--name", f"soak-quiet-{run.run_id}"], run.env)).strip()
    async with run.deployment("tenants", env | limits, workers=workers) as dep:
        try:
            await _flood(run, dep, flood, result, quiet_key, users, check, deadline)
        except (TimeoutError, RuntimeError) as e:
            result.error = str(e)
    return result


async def _flood(
    run: Run, dep: Deployment, flood: Flood, result: FloodResult, quiet_key: str, users: int, check: Checker,
    deadline: float,
) -> None:  # fmt: skip
    provider, api, quiet_api = flood.provider, run.api(dep), Api(run.session, dep.api_url, quiet_key)
    flood_names = [f"flood{i:05d}-{run.run_id}" for i in range(users)]
    quiet_names = [f"quiet{i:03d}-{run.run_id}" for i in range(flood.quiet_users)]
    for name in quiet_names:
        await run.sim._call("PUT", f"/_sim/{provider}/users/{name}/history", QUIET_HISTORY)
    flood_ids = await connect(run, dep.api_url, run.key, provider, flood_names)
    quiet_ids = await connect(run, dep.api_url, quiet_key, provider, quiet_names)
    started = time.monotonic()
    flood_tasks = list(await asyncio.gather(*(api.sync(u, provider=provider) for u in flood_ids)))
    await asyncio.sleep(flood.window_s)  # the flood has the limit to itself for a window

    async def quiet(user_id: str) -> dict[str, Any]:
        asked = time.monotonic()
        task_id = await quiet_api.sync(user_id, provider=provider, data_type=flood.quiet_data_type)
        task = await quiet_api.wait(task_id, timeout_s=deadline - asked)
        result.quiet_s.append(time.monotonic() - asked)
        return task

    quiet_tasks = await asyncio.gather(*(quiet(u) for u in quiet_ids))
    result.flood_open = await run.db.fetchval(
        "SELECT count(*) FROM sync_tasks WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'running')", flood_tasks
    )
    result.quiet_tasks = Counter(t["status"] for t in quiet_tasks)
    flood_final = await _wait_final(api, flood_tasks, deadline)
    result.flood_s = time.monotonic() - started
    result.flood_tasks = Counter(t["status"] for t in flood_final.values())
    for name, user_id in zip(quiet_names, quiet_ids, strict=True):  # what they synced, as served
        differences = await check(run, provider, name, user_id)
        result.differences += [d for d in differences if f", {flood.quiet_data_type}:" in d]


def failures(result: FloodResult) -> list[str]:
    f, failed = result.flood, []
    if result.error:
        failed.append(f"the two-tenant run stopped early: {result.error}")
    if set(result.flood_tasks) - {"succeeded"} or sum(result.flood_tasks.values()) != result.flood_users:
        failed.append(f"the flood's syncs: {dict(result.flood_tasks)} of {result.flood_users}")
    if set(result.quiet_tasks) - {"succeeded"} or sum(result.quiet_tasks.values()) != f.quiet_users:
        failed.append(f"the second application's syncs: {dict(result.quiet_tasks)} of {f.quiet_users}")
    if not result.quiet_s or max(result.quiet_s) > f.bound_s:
        slowest = f"{max(result.quiet_s):.1f} s" if result.quiet_s else "none ended"
        failed.append(f"the second application's syncs did not all end within {f.bound_s:g} s: slowest {slowest}")
    if not result.flood_open:
        failed.append("the flood had ended before the second application's syncs: no contention was measured")
    if result.differences:
        failed.append(f"the second application's rows differ from the simulator's: {result.differences[:3]}")
    return failed


def rows(result: FloodResult) -> list[tuple[str, str]]:
    f = result.flood
    met = "met" if result.quiet_s and max(result.quiet_s) <= f.bound_s else "NOT met"
    slowest = f"{max(result.quiet_s):.1f} s" if result.quiet_s else "-"
    return [
        (f"two tenants: {f.provider} limit", f"{result.limit} calls per {f.window_s} s"),
        ("two tenants: the flood", f"{result.flood_users} first syncs, all final after {result.flood_s:.1f} s: "
         + (", ".join(f"{s} {n}" for s, n in result.flood_tasks.items()) or "none")),
        ("two tenants: the second application", f"{f.quiet_users} first syncs asked for {f.window_s} s into the flood, "
         f"the slowest final after {slowest} (bound {f.bound_s:g} s, {f.bound_windows} windows: {met}), "
         f"{result.flood_open} of the flood's still open then"),
    ]  # fmt: skip


def describe(f: Flood) -> str:
    return (
        f"Then, in a deployment of its own, our limiter gives {f.provider} windows of {f.window_s} s holding "
        f"1/{f.windows} of the calls that the flood's first syncs need: the soak's application asks for as many "
        f"first {f.provider} syncs of fresh users as the rounds had, and {f.window_s} s later a second "
        f"application asks for {f.quiet_users} ({f.quiet_data_type} only, a few calls each), which must each end "
        f"within {f.bound_windows} windows while the flood still runs (bench/soak_tenants.py)."
    )
