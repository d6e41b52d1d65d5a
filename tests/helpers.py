"""Helpers of the tests that are not fixtures."""

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg

T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    timeout_s: float = 120,
    detail: Callable[[], object] = lambda: "",
) -> T:
    """Poll `check` until it returns something true, and return that. The timeout only ends a test
    that would otherwise hang: it is no margin that a slow machine has to beat, so it is long; the
    failure names `what`, the last value seen and `detail()` (e.g. a process's output)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (found := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s (last: {found!r})\n{detail()}".rstrip())
        await asyncio.sleep(0.05)
    return found


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A TCP port of 127.0.0.1 that refuses connections: bound here and not listening, so no other
    program can take it meanwhile."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port: int = bound.getsockname()[1]
        yield port


async def settled(db: asyncpg.Pool, expected: int) -> list[asyncpg.Record]:
    """The webhook events, once `expected` of them have left `pending`."""

    async def handled() -> bool:
        return bool(await db.fetchval("SELECT count(*) >= $1 FROM webhook_events WHERE status <> 'pending'", expected))

    await wait_until(handled, f"{expected} webhook events handled")
    return await db.fetch("SELECT * FROM webhook_events ORDER BY id")
