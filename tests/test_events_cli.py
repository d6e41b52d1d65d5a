"""`wearsync events tail` and `wearsync events sink` as real processes: the tail follows the stream
over HTTP, one line per event, and resumes after the last one when the stream ends under it
(nothing twice, nothing skipped); the sink verifies signatures as standardwebhooks makes them and
prints what it accepts. (tests/test_dev.py follows both as `make run` starts them.)"""

import asyncio
import json
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook

from tests.conftest import Factory, process_env
from tests.test_events_stream import emit, tenant
from wearsync.api import stream
from wearsync.outbox import new_secret
from wearsync.settings import Settings
from wearsync.sink import SECRET_ENV

Client = TestClient[web.Request, web.Application]
TIMEOUT_S = 60  # a process that says nothing for this long has failed


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"events_stream_poll_s": 0.02})


class Process:
    """A `wearsync` subprocess whose output is read a line at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> "Process":
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wearsync", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def line(self, stream: str = "stdout") -> str:
        reader = self.process.stdout if stream == "stdout" else self.process.stderr
        assert reader is not None
        line = (await asyncio.wait_for(reader.readline(), TIMEOUT_S)).decode()
        assert line, f"{stream} ended"
        return line.rstrip("\n")

    async def interrupt(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), TIMEOUT_S)


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


async def test_tail_prints_each_event_once_and_resumes_after_the_last_when_the_stream_ends(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, processes: list[Process]
) -> None:
    key, app_id, user_id = await tenant(factory, db, "acme")
    first = [await emit(db, app_id, user_id, "connection.created"), await emit(db, app_id, user_id, "sync.failed")]
    url = str(client.make_url("")).rstrip("/")
    env = process_env(settings, log_format="console") | {"WEARSYNC_KEY": key}
    processes.append(tail := await Process.start(env, "events", "tail", "--url", url, "--after", "0"))
    assert re.fullmatch(rf"following the events of {url} after 0-0", await tail.line("stderr"))
    lines = [await tail.line(), await tail.line()]
    assert "connection.created" in lines[0], lines
    assert "sync.failed" in lines[1], lines
    assert all(f" user {user_id[:8]}" in line for line in lines), lines

    # The API ends its streams (as when it shuts down): the tail asks again, after the last event.
    client.app[stream.CLOSING].set()
    resumed = await tail.line("stderr")
    assert re.fullmatch(rf"resumed the events of {url} after \d+-\d+", resumed), resumed
    client.app[stream.CLOSING].clear()
    later = await emit(db, app_id, user_id, "data.deleted")
    line = await tail.line()
    assert "data.deleted" in line, line  # not the first two again
    assert await tail.interrupt() == 130

    # --json --no-follow: every event's body as it came, then the end.
    processes.append(dump := await Process.start(env, "events", "tail", "--url", url, "--after", "0", "--json",
                                                 "--no-follow"))  # fmt: skip
    out, _ = await asyncio.wait_for(dump.process.communicate(), TIMEOUT_S)
    assert dump.process.returncode == 0
    assert [json.loads(line)["id"] for line in out.decode().splitlines()] == [*first, later]

    refused = await Process.start(env | {"WEARSYNC_KEY": "ws_nope"}, "events", "tail", "--url", url)
    _, err = await asyncio.wait_for(refused.process.communicate(), TIMEOUT_S)
    assert refused.process.returncode == 1
    assert err.decode().strip().endswith("error: the API refused the stream: 401: Invalid or missing API key")


async def test_the_sink_prints_what_verifies_marks_a_repeat_and_refuses_a_forgery(
    settings: Settings, processes: list[Process]
) -> None:
    secret = new_secret()
    env = process_env(settings, log_format="console") | {SECRET_ENV: secret}
    processes.append(sink := await Process.start(env, "events", "sink", "--port", "0"))
    listening = re.search(r"url=(http://\S+)", await sink.line("stderr"))
    assert listening, "the sink says where it listens"
    user_id = str(uuid.uuid4())
    event = {"type": "sync.succeeded", "timestamp": datetime.now(UTC).isoformat(),
             "data": {"user_id": user_id, "provider": "suunto", "task_id": str(uuid.uuid4()), "status": "succeeded",
                      "counts": {"workouts": 3}, "error": None}}  # fmt: skip
    body = json.dumps(event)
    now = datetime.now(UTC)
    signed = Webhook(secret).sign("evt_1", now, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signed,
               "content-type": "application/json"}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(f"{listening.group(1)}/webhooks", data=body, headers=headers) as resp:
                assert resp.status == 204, await resp.text()
        first, again = await sink.line(), await sink.line()
        assert re.search(
            rf"sync\.succeeded +user {user_id[:8]} +suunto task \w+: workouts 3 +\(evt_1, verified\)", first
        )
        assert again.endswith("(evt_1, verified, again)"), again
        forged = body.replace("succeeded", "failed")
        async with session.post(f"{listening.group(1)}/webhooks", data=forged, headers=headers) as resp:
            assert resp.status == 401, await resp.text()
            assert "signature" in (await resp.json())["detail"]
        refused = await sink.line()
        assert refused.startswith("refused a delivery to /webhooks"), refused
    assert await sink.interrupt() in (0, -signal.SIGINT)

    no_secret = await Process.start(process_env(settings), "events", "sink", "--port", "0")
    _, err = await asyncio.wait_for(no_secret.process.communicate(), TIMEOUT_S)
    assert no_secret.process.returncode == 1
    assert f"set {SECRET_ENV}" in err.decode()
