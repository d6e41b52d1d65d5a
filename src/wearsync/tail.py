"""`wearsync events tail`: an application's events as they happen, from its live stream
(`GET /api/v1/events/stream`), one line each: time, type, user and what happened, coloured on a
terminal (`--json`: each event's body as it came, one per line).

A connection that drops or an API that restarts costs nothing: the stream is asked again with the
last position received (`Last-Event-ID`), so every event is printed once, in order. `render` is
also how the local sink (wearsync.sink) prints the events delivered to it.
"""

import asyncio
import json
import sys
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from rich.console import Console
from rich.text import Text

RETRY_S = 1.0  # the pause before asking again, as the stream's `retry:` says
STYLES = {
    "sync.succeeded": "green", "sync.partial": "yellow", "sync.failed": "bold red", "data.created": "cyan",
    "data.updated": "blue", "data.deleted": "magenta", "connection.created": "green",
    "connection.deactivated": "red", "backfill.completed": "green",
}  # fmt: skip


class Refused(Exception):
    """The API refused the stream (a bad key, an unknown user, a bad parameter): no use asking again."""


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "nothing new"


def summary(event_type: str, data: Mapping[str, Any]) -> str:
    """What happened, in a few words."""
    provider = data.get("provider") or ""
    if event_type.startswith("sync."):
        error = f"; {data['error']}" if data.get("error") else ""
        return f"{provider} task {str(data.get('task_id'))[:8]}: {_counts(data.get('counts') or {})}{error}"
    if "records" in data:
        n = len(data["records"])
        return f"{provider} {data.get('kind')}: {n} record{'' if n == 1 else 's'}"
    if "ranges" in data:
        ranges = [f"{r['sample_type']} {r['count']} ({r['start'][:16]} to {r['end'][:16]})" for r in data["ranges"]]
        return f"{provider} samples: {', '.join(ranges)}"
    if event_type.startswith("connection."):
        return provider + (f": {data['reason']}" if data.get("reason") else "")
    if event_type == "backfill.completed":
        return f"{provider} windows delivered {data.get('windows_delivered')} of {data.get('windows_requested')}"
    rest = json.dumps({k: v for k, v in data.items() if k != "user_id"}, separators=(",", ":"))
    return rest if len(rest) <= 120 else rest[:119] + "…"


def render(event: Mapping[str, Any], note: str = "") -> Text:
    """One line of an event as the stream and the webhooks carry it (`type`, `timestamp`, `data`)."""
    event_type, data = str(event.get("type")), event.get("data") or {}
    try:
        at = datetime.fromisoformat(str(event.get("timestamp"))).strftime("%H:%M:%S")
    except ValueError:
        at = "--:--:--"
    line = Text(at, style="dim")
    line.append(f"  {event_type:<22}", style=STYLES.get(event_type, "bold"))
    user = data.get("user_id")
    line.append(f" user {str(user)[:8]}" if user else " application", style="dim")
    line.append(f"  {summary(event_type, data)}")
    if note:
        line.append(f"  ({note})", style="dim")
    return line


async def messages(lines: AsyncIterable[bytes]) -> AsyncIterator[dict[str, str]]:
    """Server-sent events' messages, each its fields (`id`, `event`, `data`, `retry`); comments skipped."""
    fields: dict[str, str] = {}
    async for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


async def tail(url: str, key: str, query: Mapping[str, str], out: Console, *, as_json: bool, follow: bool) -> None:
    """Print the stream's events until interrupted (or, not following, until it has sent what there is)."""
    last: list[str] = []  # the last position received: where to ask again from (Last-Event-ID)
    params = {**query, "follow": str(follow).lower()}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)  # keep-alives come every 15 s
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            headers = {"X-API-Key": key, **({"Last-Event-ID": last[0]} if last else {})}
            try:
                async with session.get(f"{url}/api/v1/events/stream", params=params, headers=headers) as resp:
                    if 400 <= resp.status < 500:
                        raise Refused(f"{resp.status}: {(await resp.json(content_type=None))['detail']}")
                    if resp.status == 200:
                        await _show(resp, url, out, as_json, last)
                        if not follow:
                            return
                    else:
                        _say(f"the API answered {resp.status}; asking again")
            except (aiohttp.ClientError, TimeoutError) as e:
                _say(f"stream lost ({type(e).__name__}); asking again")
            await asyncio.sleep(RETRY_S)


async def _show(resp: aiohttp.ClientResponse, url: str, out: Console, as_json: bool, last: list[str]) -> None:
    """Print the events of one connection to the stream, keeping the last position in `last`."""
    first = True
    async for message in messages(resp.content):
        if first:  # the stream's first message names where it starts
            _say(f"{'resumed' if last else 'following'} the events of {url} after {message.get('id')}")
            first = False
        if "data" in message:
            _print(out, message["data"], as_json)
        if "id" in message:
            last[:] = [message["id"]]


def _print(out: Console, data: str, as_json: bool) -> None:
    if as_json:
        out.print(data, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(render(json.loads(data)), soft_wrap=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
