"""A `wearsync` process writes one format only: what Python itself would print in plain text (a
warning, an uncaught exception in the process or a thread, an exception it can only report as
ignored, a future whose error nobody read) is logged through the same chain, one JSON line each."""

import asyncio
import json
import sys
from typing import Any

import pytest

from tests.conftest import process_env
from wearsync.settings import Settings

STRAY_OUTPUT = """
import asyncio, threading, warnings
from wearsync.logging import capture_stray_output, configure_logging

configure_logging("json")
capture_stray_output()
warnings.warn("a warning", UserWarning)

class Broken:
    def __del__(self):
        raise RuntimeError("raised in __del__")

Broken()
thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
thread.start()
thread.join()

async def lose_an_error():
    asyncio.get_running_loop().create_future().set_exception(ValueError("nobody read this"))

asyncio.run(lose_an_error())
raise RuntimeError("the end")
"""


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, stderr and stdout parsed line by line as JSON, as text)."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    lines = [json.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON
    assert process.returncode is not None
    return process.returncode, lines, text


def logged(lines: list[dict[str, Any]], event: str) -> dict[str, Any]:
    (line,) = [line for line in lines if event in line["event"]]
    return line


async def test_what_python_would_print_in_plain_text_is_logged_as_json() -> None:
    code, lines, _ = await run(sys.executable, "-c", STRAY_OUTPUT)
    assert code == 1
    assert logged(lines, "UserWarning: a warning")["logger"] == "py.warnings"
    ignored = logged(lines, "Exception ignored")
    assert "Broken.__del__" in ignored["object"]
    assert "RuntimeError: raised in __del__" in ignored["exception"]
    thread = logged(lines, "uncaught exception in a thread")
    assert thread["thread"] == "doomed"
    assert "ZeroDivisionError" in thread["exception"]
    assert "ValueError: nobody read this" in logged(lines, "Future exception was never retrieved")["exception"]
    assert "RuntimeError: the end" in logged(lines, "uncaught exception, the process ends")["exception"]


@pytest.mark.parametrize(
    ("overrides", "code", "event", "says"),
    [
        ({"token_keys": ""}, 1, "uncaught exception, the process ends", "TokenKeyError"),
        ({"job_timeout_s": "soon-ish"}, 2, "invalid settings", "job_timeout_s: Input should be a valid integer"),
    ],
    ids=["no-token-key", "invalid-setting"],
)
async def test_a_worker_that_cannot_start_says_why_in_json(
    settings: Settings, overrides: dict[str, str], code: int, event: str, says: str
) -> None:
    exit_code, lines, text = await run(
        sys.executable, "-m", "wearsync", "worker", env=process_env(settings, **overrides)
    )
    assert exit_code == code, text
    assert says in json.dumps(logged(lines, event))
    assert "soon-ish" not in text  # settings' values may be secrets: never logged


ARQ_LINES = """
import logging, sys
from wearsync.logging import configure_logging

configure_logging("json", sys.argv[1])
arq = logging.getLogger("arq.worker")  # each line as arq's worker logs it
arq.info("%6.2fs → %s(%s)%s", 0.37, "cron:reap_lost_tasks", "", "")
arq.info("%6.2fs ← %s ● %s", 0.01, "cron:reap_lost_tasks", 0)
arq.info("recording health: %s", "Dec-04 13:30:51 j_complete=6 j_failed=0 j_retried=0 j_ongoing=0 queued=0")
arq.info("%6.2fs → %s(%s)%s", 0.44, "8438aa0c:sync_task", "'8438aa0c'", "")
arq.info("%6.2fs ← %s ● %s", 1.11, "8438aa0c:sync_task", "{'workouts': True}")
"""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_arqs_routine_lines_cron_runs_and_health_are_at_debug(level: str) -> None:
    code, lines, _ = await run(sys.executable, "-c", ARQ_LINES, level)
    assert code == 0
    said = [(line["level"], line["event"].strip()) for line in lines]
    routine = [
        ("debug", "0.37s → cron:reap_lost_tasks()"),
        ("debug", "0.01s ← cron:reap_lost_tasks ● 0"),
        ("debug", "recording health: Dec-04 13:30:51 j_complete=6 j_failed=0 j_retried=0 j_ongoing=0 queued=0"),
    ]
    jobs = [
        ("info", "0.44s → 8438aa0c:sync_task('8438aa0c')"),
        ("info", "1.11s ← 8438aa0c:sync_task ● {'workouts': True}"),
    ]
    assert said == (routine + jobs if level == "DEBUG" else jobs)
