"""Concurrent paging helpers: independent pages are fetched together under a bound and yielded
as they arrive, so records are written page by page and memory does not grow with history."""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")


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
) -> AsyncGenerator[tuple[int, list[T]]]:
    """(offset, page) of an offset/limit list, `concurrency` requests in flight. The list's length
    is not known up front: the first short page marks the end, and no page past it is requested.
    Until a full page shows there is more, one request goes alone, so a small or unchanged history
    costs one call, not `concurrency` (upstream calls are the scarce resource). Offsets in `done`
    (offset -> items, stored by an earlier run) are not fetched again."""
    done = done or {}
    next_offset, end = start, None
    in_flight = 1
    pending: dict[asyncio.Future[list[T]], int] = {}
    unread: list[asyncio.Future[list[T]]] = []
    try:
        while True:
            while len(pending) < in_flight and (end is None or next_offset < end):
                if next_offset in done:  # as if fetched again
                    if done[next_offset] < limit:
                        end = next_offset + limit if end is None else min(end, next_offset + limit)
                    else:
                        in_flight = concurrency
                else:
                    pending[asyncio.ensure_future(fetch(next_offset))] = next_offset
                next_offset += limit
            if not pending:
                return
            done_now, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            unread = sorted(done_now, key=pending.__getitem__, reverse=True)
            while unread:
                task = unread.pop()
                offset = pending.pop(task)
                page = task.result()
                if len(page) < limit:
                    end = offset + limit if end is None else min(end, offset + limit)
                else:
                    in_flight = concurrency
                if page:
                    yield offset, page
    finally:
        await _abandon([*pending, *unread])


async def each_concurrently(
    items: Iterable[A], fetch: Callable[[A], Awaitable[T]], *, concurrency: int
) -> AsyncGenerator[T]:
    """fetch(item) for every item, `concurrency` at a time, yielding results as they complete."""
    todo = iter(items)
    pending: set[asyncio.Future[T]] = set()
    unread: list[asyncio.Future[T]] = []
    try:
        while True:
            for item in todo:
                pending.add(asyncio.ensure_future(fetch(item)))
                if len(pending) >= concurrency:
                    break
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            unread = list(done)
            while unread:
                yield unread.pop().result()
    finally:
        await _abandon([*pending, *unread])


def time_windows(start: datetime, end: datetime, max_span: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive half-open windows no longer than max_span."""
    windows = []
    while start < end:
        windows.append((start, min(start + max_span, end)))
        start += max_span
    return windows
