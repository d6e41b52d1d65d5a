"""The real processes of one bench run, and small clients for them.

PostgreSQL and Redis come from DATABASE_URL / REDIS_URL, else they are the embedded servers,
started exactly as `wearsync dev` starts them (under .wearsync/bench). A run makes its own
database (dropped at the end); every deployment (one API and its workers) gets its own arq queue.
The simulators, the API and the workers are subprocesses (`python -m wearsync ...`), each in its
own process group, stopped when the run ends however it ends; their logs go to .wearsync/bench/logs.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from redis.asyncio import Redis

from wearsync.dev import (
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_SUBSCRIPTION_KEY,
    _start_postgres,
    _start_redis,
    dev_environment,
)

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".wearsync" / "bench"
LOG_DIR = DATA_DIR / "logs"
PROVIDER = "suunto"
FINAL = ("succeeded", "partial", "failed")


# ---- servers and processes --------------------------------------------------------------------


@contextlib.contextmanager
def servers(data_dir: Path = DATA_DIR) -> Iterator[tuple[str, str, str]]:
    """(admin DSN, Redis URL, where they come from): the environment's, else embedded ones."""
    dsn, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    origin = "PostgreSQL " + ("from DATABASE_URL" if dsn else "embedded")
    origin += ", Redis " + ("from REDIS_URL" if redis_url else "embedded (Valkey)")
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not dsn:
            dsn = _start_postgres(data_dir / "postgres", stack)
        if not redis_url:
            # Valkey snapshots now and then and reloads the snapshot when it starts: a run's keys,
            # deleted at its end, would come back. Nothing in the bench's own server is kept.
            (data_dir / "valkey" / "valkey.db").unlink(missing_ok=True)
            redis_url = _start_redis(data_dir / "valkey", stack)
        yield dsn, redis_url, origin


@dataclass
class Child:
    name: str
    process: "subprocess.Popen[bytes]"
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Processes:
    """Every subprocess of the run (logs in `log_dir`). `stop` asks one to exit (SIGINT) and kills
    its process group after a grace period; `close` does that for all that still run."""

    children: list[Child] = field(default_factory=list)
    log_dir: Path = LOG_DIR

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "wearsync", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace_s: float = 8.0) -> None:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)  # it, or anything it left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(5)
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in list(reversed(self.children)):
            self.stop(child, grace_s=3.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def wait_until_up(url: str, child: Child, timeout_s: float = 30.0) -> None:
    """Until `url` answers (below 500); fails at once if the child died."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} did not answer {url} within {timeout_s:.0f}s:\n{child.log_tail()}")
            await asyncio.sleep(0.1)


async def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 60.0) -> str:
    """`wearsync ARGS` to its end; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"wearsync {' '.join(args)} failed ({process.returncode}): {err.decode()[-2000:]}")
    return out.decode()


# ---- /proc: memory and CPU of a process (Linux) -------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/PID/status, e.g. VmRSS (resident now) or VmHWM (resident peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# ---- one run: database, simulators, API key; deployments come and go ----------------------------


@dataclass
class Deployment:
    name: str
    queue: str
    api_url: str
    api: Child
    workers: list[Child]


@dataclass
class Run:
    admin_dsn: str
    redis_url: str
    processes: Processes
    run_id: str
    dsn: str
    env: dict[str, str]
    sim: "Sim"
    db: asyncpg.Pool
    redis: Redis
    key: str
    session: aiohttp.ClientSession

    @contextlib.asynccontextmanager
    async def deployment(
        self, name: str, env: dict[str, str] | None = None, workers: int = 1
    ) -> AsyncIterator[Deployment]:
        """An API and `workers` workers on a queue of their own, with `env` over the run's."""
        queue = f"wearsync-bench:{self.run_id}:{name}"
        full_env = self.env | {"WEARSYNC_QUEUE_NAME": queue} | (env or {})
        port = free_port()
        children: list[Child] = []
        try:
            api = self.processes.start(f"{name}-api", ["api", "--port", str(port)], full_env)
            children.append(api)
            started = [self.processes.start(f"{name}-worker{i}", ["worker"], full_env) for i in range(workers)]
            children.extend(started)
            api_url = f"http://127.0.0.1:{port}"
            await wait_until_up(f"{api_url}/health", api)
            if started:
                await self._wait_for_workers(queue, started)
            yield Deployment(name, queue, api_url, api, started)
        finally:
            for child in reversed(children):
                self.processes.stop(child)

    async def _wait_for_workers(self, queue: str, workers: list[Child], timeout_s: float = 30.0) -> None:
        """A worker records its health under the queue once it has started and polls the queue."""
        deadline = time.monotonic() + timeout_s
        while not await self.redis.keys(f"{queue}:health-check:*"):
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker came up on {queue}:\n{workers[0].log_tail()}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3 * (len(workers) - 1))  # the others start alongside

    def api(self, deployment: Deployment) -> "Api":
        return Api(self.session, deployment.api_url, self.key)

    async def row_counts(self, user_id: str) -> dict[str, int]:
        tables = ("workouts", "samples", "sleep_sessions", "recoveries", "daily_activity")
        return {
            t: await self.db.fetchval(f"SELECT count(*) FROM {t} WHERE user_id = $1", uuid.UUID(user_id))
            for t in tables
        }


@contextlib.asynccontextmanager
async def bench_run(admin_dsn: str, redis_url: str, processes: Processes) -> AsyncIterator[Run]:
    """A fresh database (migrated by `wearsync migrate`), the simulators, and an API key (from
    `wearsync api-key create`); at the end the database is dropped and the run's Redis keys go."""
    run_id = uuid.uuid4().hex[:10]
    database = f"wearsync_bench_{run_id}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        dsn = with_database(admin_dsn, database)
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        # The simulators, whatever the shell says about provider hosts: never the real APIs.
        # No scheduled syncs: every sync is one a measurement asks for.
        # No webhook rate limit: the simulated Garmin pushes every backfill from one address, far
        # faster than a real one.
        env = dict(os.environ) | {"DATABASE_URL": dsn, "REDIS_URL": redis_url, "WEARSYNC_LOG_FORMAT": "json",
                                  "WEARSYNC_SCHEDULE_INTERVAL_S": "0", "WEARSYNC_WEBHOOK_RATE_LIMIT": ""}  # fmt: skip
        env |= dev_environment({}, sim_url)
        await run_cli(["migrate"], env)
        key = (await run_cli(["api-key", "create", "--name", f"bench-{run_id}"], env)).strip()
        sim_child = processes.start("sim", ["sim", "--port", str(sim_port)], env)
        redis = Redis.from_url(redis_url)
        try:
            await wait_until_up(f"{sim_url}/_sim/requests", sim_child)
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
                asyncpg.create_pool(dsn, min_size=4, max_size=4, max_inactive_connection_lifetime=0) as db,
            ):
                try:
                    yield Run(admin_dsn, redis_url, processes, run_id, dsn, env, Sim(session, sim_url),
                              db, redis, key, session)  # fmt: skip
                finally:
                    processes.close()  # no worker may enqueue or retry behind our back
                    await asyncio.wait_for(_forget_jobs(redis, db, run_id), 60)
        finally:
            processes.stop(sim_child)
            await redis.aclose()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'), 30)
        await admin.close()


async def _forget_jobs(redis: Redis, db: asyncpg.Pool, run_id: str) -> None:
    """Delete the run's arq jobs and results, queues, rate-limit counters and health checks."""
    ids = [str(r["id"]) for r in await db.fetch("SELECT id FROM sync_tasks")]
    prefixes = ("arq:job:", "arq:result:", "arq:retry:", "arq:in-progress:")
    for start in range(0, len(ids), 1000):
        await redis.delete(*[p + i for i in ids[start : start + 1000] for p in prefixes])
    keys = [k async for k in redis.scan_iter(match=f"wearsync-bench:{run_id}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])


# ---- clients ------------------------------------------------------------------------------------


@dataclass
class Sim:
    """The simulators' /_sim control API (Suunto's unless a method names another provider)."""

    session: aiohttp.ClientSession
    url: str

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        async with self.session.request(method, f"{self.url}{path}", json=json) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def reset(self, **knobs: Any) -> None:
        """No latency, errors, faults or rate limits of its own (unless `knobs` say), an empty log."""
        config = {"latency_s": 0, "error_rate": 0, "rate_limits": [[1_000_000, 900]]} | knobs
        await self._call("POST", f"/_sim/{PROVIDER}/config", config)
        await self._call("DELETE", "/_sim/faults")
        await self.clear_requests()

    async def set_history(self, user: str, workouts: int, days_247: int) -> None:
        await self._call("PUT", f"/_sim/{PROVIDER}/users/{user}/history", {"workouts": workouts, "days_247": days_247})

    async def configure(self, provider: str, **knobs: Any) -> None:
        """Set a provider's knobs (latency_s, error_rate, rate_limits, history, ...)."""
        await self._call("POST", f"/_sim/{provider}/config", knobs)

    async def requests(self, provider: str = PROVIDER) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = await self._call("GET", f"/_sim/requests?provider={provider}")
        return log

    async def records(self, provider: str, user: str) -> dict[str, Any]:
        """Everything the provider's simulator serves this user."""
        records: dict[str, Any] = await self._call("GET", f"/_sim/{provider}/users/{user}/records")
        return records

    async def set_webhook(self, provider: str, url: str, secret: str = "") -> None:
        await self._call("POST", f"/_sim/{provider}/webhook", {"url": url, "secret": secret})

    async def deliveries(self) -> dict[str, Any]:
        """Webhook deliveries the simulators have sent (by provider and status) and have in flight."""
        deliveries: dict[str, Any] = await self._call("GET", "/_sim/deliveries")
        return deliveries

    async def clear_requests(self) -> None:
        await self._call("DELETE", "/_sim/requests")

    async def tokens(self, user: str) -> dict[str, Any]:
        """The simulated user's tokens, by the authorization-code grant any `user-NAME` code passes."""
        form = {"grant_type": "authorization_code", "code": f"user-{user}", "redirect_uri": "http://localhost/"}
        auth = aiohttp.BasicAuth(SIM_CLIENT_ID, SIM_CLIENT_SECRET)
        async with self.session.post(f"{self.url}/{PROVIDER}/auth/oauth/token", data=form, auth=auth) as resp:
            resp.raise_for_status()
            tokens: dict[str, Any] = await resp.json()
            return tokens

    async def warm(self, tokens: dict[str, Any]) -> None:
        """One tiny data call, so the simulator builds (and caches) the user's history before a clock starts."""
        headers = {
            "Authorization": f"Bearer {tokens['access_token']}",
            "Ocp-Apim-Subscription-Key": SIM_SUBSCRIPTION_KEY,
        }
        url = f"{self.url}/{PROVIDER}/api/247/daily-activity-statistics"
        day = {"startdate": "1970-01-01T00:00:00", "enddate": "1970-01-02T00:00:00"}
        async with self.session.get(url, headers=headers, params=day) as resp:
            resp.raise_for_status()


@dataclass
class Api:
    session: aiohttp.ClientSession
    url: str
    key: str

    async def _call(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        headers = {"X-API-Key": self.key}
        async with self.session.request(
            method, f"{self.url}/api/v1{path}", json=json, params=params, headers=headers
        ) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def create_user(self, external_id: str) -> str:
        user_id: str = (await self._call("POST", "/users", {"external_id": external_id}))["id"]
        return user_id

    async def connect(self, user_id: str, tokens: dict[str, Any]) -> None:
        expires = datetime.now(UTC) + timedelta(seconds=int(tokens.get("expires_in", 86400)))
        body = {
            "access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token"),
            "expires_at": expires.isoformat(),
            "provider_user_id": tokens.get("user", "bench"),
            "scopes": ["workout"],
        }
        await self._call("PUT", f"/users/{user_id}/connections/{PROVIDER}", body)

    async def sync(self, user_id: str, *, provider: str = PROVIDER, **query: Any) -> str:
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
        task_id: str = (await self._call("POST", f"/{provider}/users/{user_id}/sync", params=params))["task_id"]
        return task_id

    async def wait(self, task_id: str, timeout_s: float = 120.0, poll_s: float = 0.02) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            task: dict[str, Any] = await self._call("GET", f"/tasks/{task_id}")
            if task["status"] in FINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['status']} after {timeout_s:.0f}s: {task}")
            await asyncio.sleep(poll_s)

    async def sync_and_wait(self, user_id: str, timeout_s: float = 120.0, **query: Any) -> dict[str, Any]:
        """The finished task, with `client_s`: from the POST to seeing it final, as a client does."""
        started = time.perf_counter()
        task = await self.wait(await self.sync(user_id, **query), timeout_s)
        task["client_s"] = time.perf_counter() - started
        if task["status"] != "succeeded":
            raise RuntimeError(f"sync failed: {task}")
        return task


async def connect_sim_user(run: Run, api: Api, name: str) -> str:
    """A wearsync user connected to simulated Suunto user `name`, whose history is then built."""
    user_id = await api.create_user(f"{name}-{uuid.uuid4().hex[:6]}")
    tokens = await run.sim.tokens(name)
    await api.connect(user_id, tokens)
    await run.sim.warm(tokens)
    return user_id
