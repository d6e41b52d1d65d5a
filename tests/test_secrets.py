"""Secrets: no token, key or signature in a log line; API keys listed by prefix, revoked, with
their last use."""

import argparse
import asyncio
import os
import sys
from argparse import Namespace
from types import SimpleNamespace

import asyncpg
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync import cli
from wearsync.api.common import KEY_CACHE
from wearsync.api.middlewares import KEY_CACHE_S
from wearsync.crypto import PREFIX, TokenKeyError, generate_key
from wearsync.db import connections
from wearsync.logging import redact_secrets
from wearsync.settings import Settings

Client = TestClient[web.Request, web.Application]


def test_log_lines_carry_no_secrets() -> None:
    event = redact_secrets(None, "info", {
        "event": "GET https://x/y failed: HTTP 401 (Authorization: Bearer abc.def.ghi)",
        "access_token": "plain-token",
        "headers": {"X-WHOOP-Signature": "c2ln", "Content-Type": "application/json"},
        "body": [{"refresh_token": "r-1"}, "key ws_" + "k" * 40],
        "count": 3,
    })  # fmt: skip
    rendered = str(event)
    for secret in ("abc.def.ghi", "plain-token", "c2ln", "r-1", "k" * 40):
        assert secret not in rendered
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["count"] == 3
    assert "HTTP 401" in event["event"]


def process_commands() -> list[str]:
    """Every command `wearsync` runs as a process (the API, the worker, the simulators, the
    operator commands, ...), read from its own argument parser."""
    (commands,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(commands.choices)


@pytest.mark.parametrize("command", process_commands())
def test_every_process_logs_through_the_redaction(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command's process logging, as `wearsync COMMAND` sets it up, redacts a secret from
    what it writes. (The command itself is not run; the test session's logging is restored.)"""
    ran: list[str] = []
    monkeypatch.setattr(cli, "capture_stray_output", lambda: None)  # a test process keeps its own hooks
    monkeypatch.setattr(
        cli,
        "parser",
        lambda: SimpleNamespace(
            parse_args=lambda argv: Namespace(command=command, run=lambda settings, args: ran.append(command))
        ),
    )
    saved = structlog.get_config()
    try:
        cli.main([command])
        assert ran, "the command was reached"
        structlog.get_logger("test").warning("token seen", access_token="s3cret-token", detail="Bearer abc.def")
    finally:
        structlog.configure(**saved)
    written = capsys.readouterr().err
    assert "token seen" in written
    assert "s3cret-token" not in written
    assert "abc.def" not in written


async def wearsync(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = os.environ | {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wearsync", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_api_keys_are_listed_by_prefix_used_and_revoked(
    client: Client, factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    code, out, err = await wearsync(settings, "api-key", "create", "--name", "ci", "--app", "acme")
    assert code == 0, err
    key = out.strip()
    assert "not shown again" in err
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE key_hash = sha256($1::bytea)", key.encode()) == 1
    user = await factory.user(key)
    _, listing, _ = await wearsync(settings, "api-key", "list", "--app", "acme")
    line = next(line for line in listing.splitlines() if line.startswith(key[:10]))
    assert "acme" in line
    assert "ci" in line
    assert line.split()[-1] == "-"  # not revoked
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE prefix = $1", key[:10]) is not None
    assert key not in listing  # only the prefix is ever shown

    code, out, _ = await wearsync(settings, "api-key", "revoke", key[:10])
    assert code == 0
    assert "revoked" in out
    client.app[KEY_CACHE].clear()  # as if KEY_CACHE_S had passed
    assert KEY_CACHE_S <= 30
    resp = await client.get(f"/api/v1/users/{user}", headers={"X-API-Key": key})
    assert (resp.status, await resp.json()) == (401, {"detail": "Invalid or missing API key"})
    code, _, err = await wearsync(settings, "api-key", "revoke", key[:10])
    assert code != 0
    assert "no active key" in err


async def test_tokens_are_encrypted_at_rest_and_keys_rotate(
    factory: Factory, settings: Settings, db: asyncpg.Pool
) -> None:
    await factory.connected_user("suunto")
    old = settings.cipher()
    row = await db.fetchrow("SELECT access_token, refresh_token FROM provider_connections")
    assert row is not None
    assert row["access_token"].startswith(PREFIX)
    assert row["refresh_token"].startswith(PREFIX)
    plain = old.open(row["access_token"])
    assert plain is not None
    assert plain.startswith("suunto.")
    assert plain not in row["access_token"]
    # A new key first, the old one still listed: rotate, then the new key alone reads everything.
    new_key = generate_key()
    both = Settings(token_keys=f"{new_key},{settings.token_keys}").cipher()
    async with db.acquire() as conn:
        assert await connections.reseal_tokens(conn, both.reseal) == 1
    rotated = await db.fetchval("SELECT access_token FROM provider_connections")
    assert rotated != row["access_token"]
    assert Settings(token_keys=new_key).cipher().open(rotated) == plain
    with pytest.raises(TokenKeyError, match="cannot be decrypted"):
        old.open(rotated)  # the old key alone no longer reads it
    with pytest.raises(TokenKeyError, match="not set"):
        Settings(token_keys="").cipher()
