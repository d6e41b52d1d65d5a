"""`make run` (= `wearsync dev`) end to end: the real processes come up, the curl commands it
prints work as printed, the demo user's Suunto sync lands every simulated record, and Ctrl-C
stops everything."""

import asyncio
import os
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
import yarl

from tests.conftest import with_database
from tests.helpers import wait_until
from wearsync.db.migrate import migrate
from wearsync.providers import PROVIDERS


@dataclass
class DevRun:
    process: asyncio.subprocess.Process
    database_url: str
    output: list[str] = field(default_factory=list)
    banner: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(self.output)

    async def read_output(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.output.append(line.decode(errors="replace"))
            if "Ctrl-C stops everything" in self.output[-1]:
                self.banner.set()


@pytest.fixture
async def dev_run(servers: tuple[str, str]) -> AsyncIterator[DevRun]:
    admin_dsn, redis_url = servers
    name = f"wearsync_dev_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    env = os.environ | {
        "DATABASE_URL": with_database(admin_dsn, name),
        "REDIS_URL": redis_url,
        "WEARSYNC_QUEUE_NAME": f"wearsync-dev-test:{uuid.uuid4().hex}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", "dev", "--port", "0", "--sim-port", "0", "--sink-port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    run = DevRun(process, env["DATABASE_URL"])
    reader = asyncio.ensure_future(run.read_output())
    try:
        yield run
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await reader
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def printed_commands(banner: str, key: str) -> list[list[str]]:
    """The curl commands of the banner, continuation lines joined, `$WEARSYNC_KEY` expanded."""
    text = banner.replace("\\\n", " ")
    return [shlex.split(line.strip().replace("$WEARSYNC_KEY", key)) for line in text.splitlines()
            if line.strip().startswith("curl ")]  # fmt: skip


async def run_curl(session: aiohttp.ClientSession, argv: list[str]) -> Any:
    """Do what a curl command line says (-X, -H, URL), without needing curl on the machine."""
    method, headers, url = "GET", {}, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, value = next(args).split(":", 1)
            headers[name] = value.strip()
        elif arg == "-s":
            continue
        else:
            url = arg
    assert url is not None, argv
    async with session.request(method, url, headers=headers) as resp:
        assert resp.status == 200, f"{argv}: {resp.status} {await resp.text()}"
        return await resp.json()


async def poll_task(session: aiohttp.ClientSession, task_command: list[str], task_id: str) -> Any:
    """Run the printed task command for `task_id` until the task is final."""
    argv = [arg.replace("TASK_ID", task_id) for arg in task_command]

    async def final() -> Any:
        task = await run_curl(session, argv)
        return task if task["status"] in ("succeeded", "partial", "failed") else None

    return await wait_until(final, f"task {task_id} final")


async def connect_by_oauth(
    session: aiohttp.ClientSession, banner: str, authorize: list[str], task_command: list[str]
) -> None:
    """The printed OAuth flow, as a browser would follow it: the authorization URL with the
    simulator's login_hint, back to wearsync's callback, on to the redirect URI, connected."""
    hint = re.search(r"with (&login_hint=\w+) added", banner)
    assert hint, banner
    url = (await run_curl(session, authorize))["authorization_url"] + hint.group(1)
    async with session.get(url, allow_redirects=False) as at_provider:
        assert at_provider.status == 302, await at_provider.text()
        callback = at_provider.headers["Location"]
    async with session.get(callback, allow_redirects=False) as at_wearsync:
        assert at_wearsync.status == 302, await at_wearsync.text()
        outcome = yarl.URL(at_wearsync.headers["Location"])
    assert str(outcome.with_query(None)) == "http://localhost:3000/connected", outcome
    assert (outcome.query["provider"], outcome.query["status"]) == ("strava", "connected"), outcome
    first_sync = await poll_task(session, task_command, outcome.query["task_id"])
    assert first_sync["status"] == "succeeded", first_sync


async def operator_cli(banner: str, key: str) -> None:
    """The printed operator commands, with the printed environment: a sync waited for, then the
    task list that shows it."""
    lines = [line.strip() for line in banner[banner.index("# the operator CLI") :].splitlines()[1:4]]
    assert lines[0].startswith("export "), lines
    env = os.environ | dict(pair.split("=", 1) for pair in shlex.split(lines[0].removeprefix("export ")))
    outputs = []
    for line in lines[1:]:
        cli = await asyncio.create_subprocess_exec(
            *shlex.split(line), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, (line, out.decode())
        outputs.append(out.decode())
    task_id = outputs[0].split()[0]  # `sync` prints the task id first
    assert "succeeded" in outputs[0], outputs[0]
    assert task_id[:8] in outputs[1], outputs[1]


async def sink_and_tail(run: DevRun, banner: str, key: str, webhook_demo: list[str], first_task: str) -> None:
    """The sink, registered as the demo application's endpoint, printed the events delivered to
    it (the demo's connections, the first sync's end), each verified, and refuses a forged one;
    the printed `events tail` prints an event as it happens, and Ctrl-C ends it."""

    async def sink_lines(*words: str) -> list[str]:
        return [line for line in run.text.splitlines() if line.startswith("sink ") and all(w in line for w in words)]

    async def connected() -> set[str] | None:
        lines = await sink_lines("connection.created", "verified")
        providers = {p for line in lines for p in PROVIDERS if f"  {p}" in line}
        return providers if providers >= set(PROVIDERS) else None

    await wait_until(connected, "the demo's connections printed by the sink")
    await wait_until(lambda: sink_lines("sync.succeeded", first_task[:8]), "the first sync's end printed by the sink")
    sink_url = re.search(r"sink\s+(http://\S+)", banner)
    assert sink_url, banner
    headers = {"webhook-id": "msg_forged", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sink_url.group(1)}/webhooks", data=b'{"type": "sync.succeeded"}', headers=headers) as resp,
    ):
        assert resp.status == 401, await resp.text()
    await wait_until(lambda: sink_lines("refused a delivery"), "the sink saying it refused")

    command = next(line.strip() for line in banner.splitlines() if " events tail " in line)
    tail = await asyncio.create_subprocess_exec(
        *shlex.split(command.replace("$WEARSYNC_KEY", key)), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert tail.stdout is not None
    assert tail.stderr is not None
    try:
        said = (await asyncio.wait_for(tail.stderr.readline(), 60)).decode()
        assert said.startswith("following the events of http://"), said  # connected: it starts now
        async with aiohttp.ClientSession() as session:
            workout = (await run_curl(session, webhook_demo))["workout"]["workoutKey"]
        lines: list[str] = []
        while not any("data.created" in line and "suunto workouts: 1 record" in line for line in lines):
            lines.append((await asyncio.wait_for(tail.stdout.readline(), 60)).decode())
        assert workout
        assert all(" user " in line for line in lines), lines
    finally:
        tail.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(tail.wait(), 30) == 130


async def suunto_api_calls(session: aiohttp.ClientSession, sim_url: str) -> list[dict[str, Any]]:
    async with session.get(f"{sim_url}/_sim/requests", params={"provider": "suunto"}) as resp:
        return [call for call in await resp.json() if call["app"] == "api"]


async def test_make_run_demo_end_to_end(dev_run: DevRun) -> None:
    try:
        await asyncio.wait_for(dev_run.banner.wait(), 60)
    except TimeoutError:
        pytest.fail(f"wearsync dev printed no banner:\n{dev_run.text[-3000:]}")
    start_up, banner = dev_run.text.split("wearsync is running", 1)
    # The banner comes last: after the processes' start-up lines and the demo's set-up requests,
    # each line labelled with the process that wrote it.
    said = {(line.partition(" | ")[0], line.partition("] ")[2].split("  ")[0]) for line in start_up.splitlines()}
    assert ("worker", "Starting worker for 1 functions: process_webhook [arq.worker]") in said, start_up  # last up
    assert ("sim   ", "simulators listening") in said, start_up
    api_lines = [line for line in start_up.splitlines() if line.startswith("api    | ")]
    assert "API listening" in api_lines[0], start_up
    assert "path=/api/v1/webhooks/strava/***" in api_lines[-1], start_up  # the demo's last request
    key = re.search(r"API key\s+(\S+)", banner)
    user = re.search(r"demo user\s+(\S+)", banner)
    sim = re.search(r"simulators\s+(\S+)", banner)
    assert key, banner
    assert user, banner
    assert sim, banner
    commands = printed_commands(banner, key.group(1))
    assert len(commands) == 9, banner
    assert re.search(r"dashboard\s+http://\S+/dashboard\s", banner), banner

    async with aiohttp.ClientSession() as session:
        queued = await run_curl(session, commands[0])
        assert (queued["success"], queued["async"]) == (True, True)
        task = await poll_task(session, commands[1], queued["task_id"])
        assert task["status"] == "succeeded", task
        in_request = await run_curl(session, commands[2])
        assert (in_request["success"], in_request["details"]) == (True, {"workouts": True})
        workouts = await run_curl(session, commands[3])
        times = [w["start_time"] for w in workouts["data"]]
        assert (len(times), times == sorted(times), bool(workouts["next_cursor"])) == (5, True, True), workouts
        samples = await run_curl(session, commands[4])
        assert [s["type"] for s in samples["data"]] == ["heart_rate"] * 5, samples
        connections = await run_curl(session, commands[5])
        assert sorted(c["provider"] for c in connections) == ["garmin", "polar", "strava", "suunto", "whoop"]
        loop = next(line for line in banner.splitlines() if line.strip().startswith("for p in "))
        providers, _, template = loop.strip().removeprefix("for p in ").partition("; do ")
        template = template.removesuffix("; echo; done")
        every = {}
        for provider in providers.split():
            argv = shlex.split(template.replace("$WEARSYNC_KEY", key.group(1)).replace("$p", provider))
            every[provider] = (await run_curl(session, argv))["task_id"]
        for provider, task_id in every.items():
            other = await poll_task(session, commands[1], task_id)
            assert other["status"] == "succeeded", (provider, other)
        async with session.get(f"{sim.group(1)}/_sim/suunto/users/demo/records") as resp:
            served = await resp.json()

    # Every simulated workout and 24/7 record of the demo user is in PostgreSQL.
    conn = await asyncpg.connect(dev_run.database_url)
    try:
        counts = {
            table: await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE user_id = $1 AND provider = 'suunto'", uuid.UUID(user.group(1))
            )
            for table in ("workouts", "sleep_sessions", "recoveries", "daily_activity")
        }
        workout_keys = {r["provider_record_id"] for r in await conn.fetch(
            "SELECT provider_record_id FROM workouts WHERE provider = 'suunto'")}  # fmt: skip
        assert await migrate(conn) == []
        # Garmin's backfill arrives by webhook; and the printed webhook demo lands a new workout.
        async with aiohttp.ClientSession() as session:
            notified = await run_curl(session, commands[6])
        new_key = notified["workout"]["workoutKey"]

        async def all_landed() -> tuple[set[str], int] | None:
            pulled = {r["provider"] for r in await conn.fetch("SELECT DISTINCT provider FROM workouts")}
            landed = await conn.fetchval("SELECT count(*) FROM workouts WHERE provider_record_id = $1", new_key)
            return (pulled, landed) if pulled == {"garmin", "strava", "polar", "suunto", "whoop"} and landed else None

        pulled, landed = await wait_until(all_landed, "every provider's workouts and the webhook's new one stored")
    finally:
        await conn.close()
    assert workout_keys == {w["workoutKey"] for w in served["workouts"]}
    assert counts["workouts"] == len(served["workouts"]) > 100
    assert counts["sleep_sessions"] == len(served["sleep"]) > 0
    assert counts["recoveries"] == len(served["recovery"]) > 0
    assert task["progress"]["data_247"]["records"]["daily_activity"] == counts["daily_activity"] > 0
    assert pulled == {"garmin", "strava", "polar", "suunto", "whoop"}
    assert landed == 1
    # The processes log readable lines here (JSON is the services' default elsewhere), labelled;
    # arq's routine lines (a cron job's every run) are at DEBUG, so not among them.
    lines = dev_run.text.splitlines()
    requests = [line for line in lines if "[info     ] request" in line]
    assert requests, dev_run.text
    assert all(line.startswith("api    | ") for line in requests), requests
    assert not [line for line in lines if line.partition(" | ")[2].startswith("{")]
    assert not [line for line in lines if " cron:" in line and "Starting worker" not in line]

    async with aiohttp.ClientSession() as session:
        await connect_by_oauth(session, banner, commands[7], commands[1])
        # The printed connect link opens the hosted connect page, which offers every provider.
        link = await run_curl(session, commands[8])
        async with session.get(link["url"]) as page:
            assert page.status == 200, await page.text()
            offered = re.findall(r'<li data-provider="(\w+)">', await page.text())
        assert offered == ["garmin", "polar", "strava", "suunto", "whoop"], offered
    await operator_cli(banner, key.group(1))
    await sink_and_tail(dev_run, banner, key.group(1), commands[6], queued["task_id"])

    # make run's rate limits are high in the simulators and in our limiter: well past Suunto's real
    # 100 calls per 15 minutes, every sync in the request still succeeds and no call is refused.
    from_scratch = [arg.replace("limit=100", "limit=10&since=0") for arg in commands[2]]  # 32 calls each
    async with aiohttp.ClientSession() as session:
        while len(calls := await suunto_api_calls(session, sim.group(1))) <= 120:
            assert (await run_curl(session, from_scratch))["success"] is True
    assert {call["status"] for call in calls} == {200}

    # Ctrl-C (SIGINT to the terminal's process group) stops everything, cleanly.
    os.killpg(dev_run.process.pid, signal.SIGINT)
    assert await asyncio.wait_for(dev_run.process.wait(), 30) == 0, dev_run.text[-2000:]
