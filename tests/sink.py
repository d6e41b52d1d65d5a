"""A webhook receiver for the tests: a real aiohttp server on a port of its own that verifies every
request with standardwebhooks (as an integrator's would) and answers as its plan says: a fault
per attempt of each event, by the order events first arrive in."""

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# What the sink does with one attempt: answer 2xx (ok), 500, 404, a redirect (302 to another of
# its paths, which must never be reached), nothing until the sender gives up (hang), or close the
# connection without an answer (close).
Fault = str
FAULTS: tuple[Fault, ...] = ("500", "404", "redirect", "hang", "close")


@dataclass
class Receipt:
    webhook_id: str
    answer: Fault
    verified: bool
    body: bytes
    headers: dict[str, str]


@dataclass
class Sink:
    secrets: list[str]
    plan: Callable[[int], Sequence[Fault]] = lambda n: ()  # the faults of the n-th event to arrive
    hang_s: float = 5.0
    receipts: list[Receipt] = field(default_factory=list)
    order: dict[str, int] = field(default_factory=dict)  # webhook-id -> its place in arrival order
    strays: int = 0  # requests to where a redirect pointed
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event | None = None  # set: every request waits for it first (after being counted)

    def verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            with contextlib.suppress(WebhookVerificationError):
                Webhook(secret).verify(body, headers)
                return True
        return False

    async def receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        webhook_id = headers.get("webhook-id", "")
        place = self.order.setdefault(webhook_id, len(self.order))
        tries = sum(1 for r in self.receipts if r.webhook_id == webhook_id)
        faults = self.plan(place)
        answer = faults[tries] if tries < len(faults) else "ok"
        self.receipts.append(Receipt(webhook_id, answer, self.verified(body, headers), body, headers))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if answer == "500":
            return web.Response(status=500, text="sink broke")
        if answer == "404":
            return web.Response(status=404, text="no such hook")
        if answer == "redirect":
            raise web.HTTPFound("/elsewhere")
        if answer == "hang":
            await asyncio.sleep(self.hang_s)
        if answer == "close":
            assert request.transport is not None
            request.transport.close()
        return web.Response(status=204)

    async def stray(self, request: web.Request) -> web.Response:
        self.strays += 1
        return web.Response(status=200)

    def counts(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.receipts)

    def delivered(self) -> set[str]:
        return {r.webhook_id for r in self.receipts if r.answer == "ok"}

    async def wait_for(
        self, done: Callable[["Sink"], bool], timeout_s: float = 60, detail: Callable[[], str] = str
    ) -> None:
        """Until `done(self)` after a request arrived; failing after `timeout_s`, with `detail()`."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done(self):
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout_s} s: {self.counts()}\n{detail()}") from None

    def bodies(self, webhook_id: str) -> set[bytes]:
        return {r.body for r in self.receipts if r.webhook_id == webhook_id}


@contextlib.asynccontextmanager
async def running_sink(sink: Sink) -> AsyncIterator[Sink]:
    app = web.Application()
    app.router.add_post("/hook", sink.receive)
    app.router.add_route("*", "/elsewhere", sink.stray)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield sink
    finally:
        if sink.hold is not None:
            sink.hold.set()
        await runner.cleanup()


def body_of(receipt: Receipt) -> Any:
    return json.loads(receipt.body)
