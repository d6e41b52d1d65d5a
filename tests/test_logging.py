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
