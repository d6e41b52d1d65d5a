"""Concurrent paging helpers: independent pages are fetched together under a bound and yielded
as they arrive, so records are written page by page and memory does not grow with history.

Fetching goes on while the caller writes a page: a finished fetch starts the next one at once
(not when the caller asks for the next page), so upstream calls and database writes overlap.
At most `concurrency` calls are in flight, and in flight and waiting together at most one more."""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from wearsync.providers.core import SyncContext, map_page
from wearsync.providers.errors import ListShifted
from wearsync.records import Record

T = TypeVar("T")
A = TypeVar("A")
K = TypeVar("K")


@dataclass
class _Pipeline(Generic[K, T]):
    """Fetches keyed by K, refilled from `next_key` as they finish, their outcomes queued."""

    fetch: Callable[[K], Awaitable[T]]
    next_key: Callable[[], K | None]  # None: nothing more to start for now
    width: Callable[[], int]  # calls allowed in flight now
    on_result: Callable[[K, T], None] = lambda key, result: None
    allowance: int | None = None  # fetches this job may still start (its page budget)
    running: dict["asyncio.Future[T]", K] = field(default_factory=dict)
    ready: "asyncio.Queue[tuple[K, asyncio.Future[T]]]" = field(default_factory=asyncio.Queue)
    closing: bool = False  # shutting down: finished fetches are not queued any more
    stopped: bool = False  # a fetch failed: nothing new starts

    def start_more(self) -> None:
        while (
            not self.closing
            and not self.stopped
            and len(self.running) < self.width()
            # One page more than the width may be fetched while the caller writes one: calls and
            # writes overlap, and a list's unknown end costs few speculative calls.
            and (len(self.running) + self.ready.qsize() < self.width() + 1)
        ):
            if self.allowance is not None and self.allowance <= 0:
                return
            key = self.next_key()
            if key is None:
                return
            if self.allowance is not None:
                self.allowance -= 1
            future = asyncio.ensure_future(self.fetch(key))
            self.running[future] = key
            future.add_done_callback(self._finished)

    def _finished(self, future: "asyncio.Future[T]") -> None:
        key = self.running.pop(future)
        if self.closing:
            return
        if not future.cancelled() and future.exception() is None:
            self.on_result(key, future.result())
        else:
            self.stopped = True
        self.ready.put_nowait((key, future))
        self.start_more()

    async def results(self) -> AsyncGenerator[tuple[K, T]]:
        """Outcomes as they finish. After a failed fetch nothing new starts, the fetches in flight
        still land (each cost an upstream call), and then the failure is raised to the caller."""
        failure: BaseException | None = None
        try:
            self.start_more()
            while self.running or not self.ready.empty():
                key, future = await self.ready.get()
                error = None if future.cancelled() else future.exception()
                if error is not None or future.cancelled():
                    failure = failure or error or asyncio.CancelledError()
                    self.stopped = True
                    continue
                self.start_more()  # a waiting slot freed
                yield key, future.result()
            if failure is not None:
                raise failure
        finally:
            self.closing = True
            await _abandon(self.running)
            while not self.ready.empty():  # retrieve outcomes nobody will read
                _, future = self.ready.get_nowait()
                if not future.cancelled():
                    future.exception()


async def _abandon(tasks: Iterable["asyncio.Future[Any]"]) -> None:
    """Cancel what still runs and collect every outcome, so no failure goes unretrieved."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def offset_pages(
    fetch: Callable[[int], Awaitable[list[T]]],
    *,
    start: int,
    limit: int,
    concurrency: int,
    done: Mapping[int, int] | None = None,
    max_fetches: int | None = None,
    record_key: Callable[[T], str | None] | None = None,
) -> AsyncGenerator[tuple[int, list[T]]]:
    """(offset, page) of an offset/limit list, `concurrency` requests in flight. The list's length
    is not known up front: the first short page marks the end, and no page past it is requested.
    Until a full page shows there is more, one request goes alone, so a small or unchanged history
    costs one call, not `concurrency` (upstream calls are the scarce resource). Offsets in `done`
    (offset -> items, stored by an earlier run) are not fetched again; no more than `max_fetches`
    calls are made (the job's page budget: calls made for pages it cannot store are wasted).

    Offsets are positions in a list that may change while it is paged. With `record_key`, a record
    met on two pages raises ListShifted: whatever moved it may also have moved another record past
    a page boundary, unseen. (A record that moves from ahead of the pages read to behind them
    always shows up twice: the list's length stays, so the pages hold as many places as it has
    records, and one missed means another read twice. Only this run's pages are compared: those
    in `done` were read by an earlier job.)"""
    known = done or {}
    state = {"next": start, "end": -1, "width": 1}  # end -1: not known yet

    def learn(offset: int, items: int) -> None:
        if items < limit:
            end = offset + limit
            state["end"] = end if state["end"] < 0 else min(state["end"], end)
        else:
            state["width"] = concurrency

    def next_offset() -> int | None:
        while state["end"] < 0 or state["next"] < state["end"]:
            offset = state["next"]
            state["next"] += limit
            if offset not in known:
                return offset
            learn(offset, known[offset])  # as if fetched again
        return None

    pipeline: _Pipeline[int, list[T]] = _Pipeline(
        fetch, next_offset, lambda: state["width"], lambda offset, page: learn(offset, len(page)), max_fetches
    )
    seen: dict[str, int] = {}  # record key -> the offset of the page it was on
    # Closed with this generator (a reader that stops early): the fetches in flight are cancelled
    # now, not whenever the garbage collector finalizes the pipeline's generator.
    async with aclosing(pipeline.results()) as results:
        async for offset, page in results:
            keys = [record_key(item) for item in page] if record_key is not None else []
            for key in keys:
                if key is not None and seen.setdefault(key, offset) != offset:
                    raise ListShifted(f"record {key} was listed at offsets {seen[key]} and {offset}: the list moved")
            if page:
                yield offset, page


async def save_offset_list(
    ctx: SyncContext[Any],
    fetch: Callable[[int], Awaitable[list[T]]],
    mapper: Callable[[T], Record | Sequence[Record]],
    *,
    start: int,
    limit: int,
    concurrency: int,
    record_key: Callable[[T], str | None],
    page_key: Callable[[int], str],
    page_offset: Callable[[str], int | None],
) -> None:
    """Store an offset/limit list (`offset_pages`) page by page, each under `page_key(offset)`,
    skipping the pages an earlier run stored (`page_offset(key)`: the offset of a stored page's
    key, None for another list's); listed again from the start when it moved (see
    `SyncContext.list_again_if_moved`)."""

    async def listing(done: Mapping[str, int]) -> None:
        stored = {offset: items for key, items in done.items() if (offset := page_offset(key)) is not None}
        pages = offset_pages(
            fetch, start=start, limit=limit, concurrency=concurrency, done=stored,
            max_fetches=ctx.fetch_allowance(), record_key=record_key,
        )  # fmt: skip
        async with aclosing(pages):
            async for offset, page in pages:
                await ctx.save_page(map_page(page, mapper), page_key(offset), len(page))

    await ctx.list_again_if_moved(listing)


async def each_concurrently(
    items: Iterable[A], fetch: Callable[[A], Awaitable[T]], *, concurrency: int, max_fetches: int | None = None
) -> AsyncGenerator[T]:
    """fetch(item) for every item (not None), `concurrency` at a time, yielding results as they
    complete; at most `max_fetches` of them."""
    todo: Iterator[A] = iter(items)
    sentinel = object()

    def next_item() -> A | None:
        item = next(todo, sentinel)
        return None if item is sentinel else item  # type: ignore[return-value]

    pipeline: _Pipeline[A, T] = _Pipeline(fetch, next_item, lambda: concurrency, allowance=max_fetches)
    async with aclosing(pipeline.results()) as results:  # as in offset_pages
        async for _, result in results:
            yield result


def time_windows(start: datetime, end: datetime, max_span: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive half-open windows no longer than max_span."""
    windows = []
    while start < end:
        windows.append((start, min(start + max_span, end)))
        start += max_span
    return windows
