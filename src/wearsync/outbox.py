"""Outgoing webhooks: events sent to the applications' endpoints, signed per Standard Webhooks.

Each worker process runs a Dispatcher beside its arq jobs, with slots, a database pool and an HTTP
session of its own, so that slow or dead endpoints never hold up a sync. PostgreSQL is the truth
(db/deliveries.py): the dispatcher claims due deliveries for a while, sends each (the event's id as
`webhook-id`, the same on every attempt, so a receiver drops duplicates), and records every answer
in batches: a 2xx delivers, anything else (a redirect too: none is followed), a timeout or a
closed connection is tried again with exponential backoff and jitter for
WEARSYNC_EVENTS_RETRY_FOR_S (3 days). A worker that dies mid-delivery leaves its claims due again
once they lapse, for any worker: at least once, never lost. One user's events of a claim go to an
endpoint one after the other, in order, and the first that fails puts the rest back; a slow or dead
endpoint holds at most WEARSYNC_EVENTS_MAX_IN_FLIGHT_PER_ENDPOINT of a worker's slots.
"""

import asyncio
import base64
import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from time import perf_counter
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook
from yarl import URL

from wearsync.crypto import TokenCipher
from wearsync.db import TRANSIENT_DB_ERRORS, create_pool
from wearsync.db.deliveries import Attempt, Backoff, claim_due, record
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

RESPONSE_EXCERPT_BYTES = 1024
CLAIM_GATHER_S = 0.005


def new_secret() -> str:
    """A signing secret in Standard Webhooks' form: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# ---- where events may be sent ---------------------------------------------------------------


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def refused_url(url: str, allow_private: bool) -> str | None:
    """Why events may not be sent to `url`, or None: it must be http(s) with a host; unless
    `allow_private`, the host may not be, or resolve to, a private, loopback, link-local or other
    non-public address. A name that does not resolve now is allowed (each delivery checks again)."""
    try:
        parsed = URL(url)
    except ValueError:
        return "not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "not an http or https URL with a host"
    if allow_private:
        return None
    host = parsed.host
    literal = _ip(host)
    if literal is not None:
        return None if _public(literal) else f"{host} is a private, loopback or otherwise non-public address"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        async with asyncio.timeout(3):
            infos = await asyncio.get_running_loop().getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return None
    private = sorted({str(info[4][0]) for info in infos if not _public(str(info[4][0]))})
    return f"{host} resolves to a non-public address ({', '.join(private)})" if private else None


class PublicResolver(AbstractResolver):
    """Name resolution that refuses a name resolving to a non-public address, at each connection
    (a name that changed since the endpoint was registered gets nowhere private)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        if not found or any(not _public(r["host"]) for r in found):
            raise OSError(f"{host} resolves to a non-public address")
        return found

    async def close(self) -> None:
        await self._resolver.close()


# ---- the dispatcher -------------------------------------------------------------------------


class Dispatcher:
    """Sends due deliveries until cancelled (see the module's docstring)."""

    def __init__(self, settings: Settings, db: asyncpg.Pool, session: aiohttp.ClientSession) -> None:
        self.settings, self.db, self.session = settings, db, session
        self.cipher: TokenCipher = settings.cipher()
        self.backoff = Backoff(
            settings.events_retry_first_s, settings.events_retry_longest_s, settings.events_retry_for_s
        )
        # A claim outlasts an attempt and its recording; past it, a dead worker's claims are due again.
        self.hold_s = 2 * settings.events_timeout_s + 5
        self.in_flight: dict[UUID, int] = {}
        self.attempts: list[Attempt] = []
        self.put_back: list[tuple[int, UUID, int]] = []
        self.sending: set[asyncio.Task[None]] = set()
        self.room = asyncio.Event()  # a send finished: there may be room for more
        self.results = asyncio.Event()  # attempts wait to be recorded
        self.signers: dict[str, Webhook] = {}
        self.hosts: dict[str, str | None] = {}
        self.private_ok = settings.events_allow_private_urls

    async def run(self) -> None:
        recorder = asyncio.create_task(self._record_loop())
        try:
            await self._claim_loop()
        finally:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def stop(self, grace_s: float) -> None:
        """After cancelling `run`: the sends under way get `grace_s` to finish, then their
        attempts are recorded (those cut off are sent again once their claim lapses)."""
        if self.sending:
            _, late = await asyncio.wait(self.sending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await self._record()

    async def _claim_loop(self) -> None:
        limit, per_endpoint = self.settings.events_max_in_flight, self.settings.events_max_in_flight_per_endpoint
        pause = self.settings.events_poll_s
        while True:
            free = limit - sum(self.in_flight.values())
            claimed = 0
            if free > 0:
                try:
                    rows = await claim_due(self.db, free, self.in_flight, per_endpoint, self.hold_s)
                    pause = self.settings.events_poll_s
                except TRANSIENT_DB_ERRORS as e:
                    log.warning("events: could not claim deliveries, trying again", error=repr(e), retry_in_s=pause)
                    rows, pause = [], min(2 * pause, 5.0)
                except Exception:
                    log.exception("events: claiming deliveries failed, trying again", retry_in_s=pause)
                    rows, pause = [], min(2 * pause, 5.0)
                claimed = len(rows)
                for _, group in groupby(rows, key=lambda r: (r["endpoint_id"], r["user_id"])):
                    self._start(list(group))
            if claimed and claimed == free:
                continue  # more may be due
            # Until a send ends (or a pause passed), and a moment more: one claim for several.
            self.room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.room.wait()
                    await asyncio.sleep(CLAIM_GATHER_S)

    def _start(self, group: list[asyncpg.Record]) -> None:
        endpoint_id: UUID = group[0]["endpoint_id"]
        self.in_flight[endpoint_id] = self.in_flight.get(endpoint_id, 0) + len(group)
        task = asyncio.create_task(self._send_group(endpoint_id, group))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send_group(self, endpoint_id: UUID, group: Sequence[asyncpg.Record]) -> None:
        """One user's deliveries to one endpoint, in order; the first that fails puts the rest back."""
        try:
            for i, row in enumerate(group):
                attempt = await self._send(row)
                self.attempts.append(attempt)
                self.results.set()
                if not attempt.delivered:
                    self.put_back.extend((r["event_id"], endpoint_id, r["claims"]) for r in group[i + 1 :])
                    break
        except Exception:  # a bug: the claims lapse, and the deliveries are sent again then
            log.exception("events: sending deliveries failed", endpoint_id=str(endpoint_id))
        finally:
            left = self.in_flight[endpoint_id] - len(group)
            if left:
                self.in_flight[endpoint_id] = left
            else:
                del self.in_flight[endpoint_id]
            self.room.set()

    def _literal_host(self, url: str) -> str | None:
        """The URL's host if it is an IP address (names are checked as they resolve)."""
        if url not in self.hosts:
            self.hosts[url] = _ip(URL(url).host or "")
        return self.hosts[url]

    def _signer(self, sealed: str) -> Webhook:
        signer = self.signers.get(sealed)
        if signer is None:
            secret = self.cipher.open(sealed)
            assert secret is not None
            signer = self.signers[sealed] = Webhook(secret)
        return signer

    async def _send(self, row: asyncpg.Record) -> Attempt:
        event_id, endpoint_id, url, body = row["event_id"], row["endpoint_id"], row["url"], row["body"].encode()
        now = datetime.now(UTC)
        signers = [self._signer(s) for s in (row["secret"], row["previous_secret"]) if s]
        headers = {
            "content-type": "application/json",
            "webhook-id": row["public_id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(s.sign(row["public_id"], now, body) for s in signers),
        }
        started = perf_counter()

        def attempt(**outcome: Any) -> Attempt:
            return Attempt(event_id, endpoint_id, row["claims"], now, (perf_counter() - started) * 1000, **outcome)

        if not self.private_ok and (host := self._literal_host(url)) is not None and not _public(host):
            return attempt(error=f"{host} is not a public address")
        try:
            async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                excerpt = await resp.content.read(RESPONSE_EXCERPT_BYTES)
                return attempt(status_code=resp.status, response=excerpt.decode("utf-8", "replace"))
        except TimeoutError:
            return attempt(error=f"no answer within {self.settings.events_timeout_s} s")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return attempt(error=f"{type(e).__name__}: {e}"[:500])

    async def _record_loop(self) -> None:
        pause = 0.05
        while True:
            await self.results.wait()
            await asyncio.sleep(pause)  # gather a batch
            try:
                await self._record()
                pause = 0.05
            except TRANSIENT_DB_ERRORS as e:
                log.warning("events: could not record deliveries, trying again", error=repr(e))
                pause = min(2 * pause, 5.0)
            except Exception:  # a bug: dropped, and the deliveries are sent again once their claims lapse
                log.exception("events: recording deliveries failed, they are sent again later")
                self.attempts, self.put_back = [], []

    async def _record(self) -> None:
        attempts, put_back = self.attempts, self.put_back
        if not attempts and not put_back:
            self.results.clear()
            return
        self.attempts, self.put_back = [], []
        self.results.clear()
        try:
            async with self.db.acquire() as conn:
                disabled = await record(conn, attempts, put_back, self.backoff)
        except BaseException:
            self.attempts[:0], self.put_back[:0] = attempts, put_back  # kept for the next try
            self.results.set()
            raise
        if disabled:
            log.warning("events: endpoints disabled, failing throughout their deliveries' retries", count=disabled)


async def start_dispatcher(settings: Settings) -> tuple[Dispatcher, asyncio.Task[None]]:
    """A dispatcher with its own database pool and HTTP session (no redirects followed, each
    attempt bounded by WEARSYNC_EVENTS_TIMEOUT_S, private addresses refused unless allowed)."""
    db = await create_pool(
        settings.database_url, min_size=0, max_size=3, connect_timeout_s=settings.db_connect_timeout_s,
        acquire_timeout_s=settings.db_acquire_timeout_s,
    )  # fmt: skip
    resolver: AbstractResolver = DefaultResolver() if settings.events_allow_private_urls else PublicResolver()
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.events_timeout_s),
        connector=aiohttp.TCPConnector(
            limit=settings.events_max_in_flight, limit_per_host=settings.events_max_in_flight_per_endpoint,
            resolver=resolver,
        ),
        headers={"User-Agent": "wearsync-webhooks"},
    )  # fmt: skip
    dispatcher = Dispatcher(settings, db, session)
    return dispatcher, asyncio.create_task(dispatcher.run())


async def stop_dispatcher(dispatcher: Dispatcher, task: asyncio.Task[None], grace_s: float) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await dispatcher.stop(grace_s)
    await dispatcher.session.close()
    await dispatcher.db.close()
