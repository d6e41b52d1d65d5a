"""The paging helpers: bounded concurrency, fetching that goes on while a page is written, the
end of a list found without waste, failures raised after the calls in flight land."""

import asyncio

import pytest

from wearsync.providers.errors import ListShifted
from wearsync.providers.paging import each_concurrently, offset_pages


async def test_fetching_goes_on_while_the_caller_writes_a_page() -> None:
    started: list[int] = []

    async def fetch(item: int) -> int:
        started.append(item)
        return item

    fetched_while_writing = 0
    async for item in each_concurrently(range(6), fetch, concurrency=2):
        if item == 0:
            await asyncio.sleep(0.01)  # "writing": the pipeline refills meanwhile
            fetched_while_writing = len(started)
    assert sorted(started) == list(range(6))
    assert fetched_while_writing >= 3  # not just the two started before the first answer


async def test_in_flight_and_waiting_pages_stay_bounded() -> None:
    in_flight = peak = 0

    async def fetch(item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return item

    results = []
    async for item in each_concurrently(range(50), fetch, concurrency=3):
        await asyncio.sleep(0.005)  # a slow writer: finished pages wait, a bounded few
        results.append(item)
    assert sorted(results) == list(range(50))
    assert peak <= 3


async def test_offset_pages_stop_at_the_short_page_and_honour_max_fetches() -> None:
    served = {0: [1, 2], 2: [3, 4], 4: [5]}
    asked: list[int] = []

    async def fetch(offset: int) -> list[int]:
        asked.append(offset)
        return served.get(offset, [])

    pages = [page async for _, page in offset_pages(fetch, start=0, limit=2, concurrency=1)]
    assert pages == [[1, 2], [3, 4], [5]]
    assert asked == [0, 2, 4]  # one at a time: nothing asked past the short page
    asked.clear()
    limited = [page async for _, page in offset_pages(fetch, start=0, limit=2, concurrency=2, max_fetches=2)]
    assert (limited, sorted(asked)) == ([[1, 2], [3, 4]], [0, 2])


async def test_a_failure_stops_new_fetches_and_is_raised_after_the_ones_in_flight() -> None:
    asked: list[int] = []

    async def fetch(offset: int) -> list[int]:
        asked.append(offset)
        await asyncio.sleep(0.01 if offset != 4 else 0)
        if offset == 4:
            raise ValueError("page 4 is unreadable")
        return [offset] * 2

    landed = []

    async def drain() -> None:
        async for offset, _ in offset_pages(fetch, start=0, limit=2, concurrency=3):
            landed.append(offset)

    with pytest.raises(ValueError, match="page 4"):
        await drain()
    assert 2 in landed  # in flight when page 4 failed, and still delivered
    assert max(asked) <= 4 + 2 * 3  # nothing new started after the failure, beyond the window


async def test_a_record_on_two_pages_means_the_list_moved() -> None:
    listed = ["a", "b", "c", "d", "e"]

    async def fetch(offset: int) -> list[str]:
        page = listed[offset : offset + 2]
        if offset == 0:  # "a" changes once the first page is read: it moves to the end
            listed.append(listed.pop(0))
        return page

    async def read(record_key: bool) -> list[str]:
        pages = offset_pages(fetch, start=0, limit=2, concurrency=1, record_key=(lambda r: r) if record_key else None)
        return [r async for _, page in pages for r in page]

    assert await read(record_key=False) == ["a", "b", "d", "e", "a"]  # "c" fell between two pages
    listed[:] = ["a", "b", "c", "d", "e"]
    with pytest.raises(ListShifted, match="record a was listed at offsets 0 and 4: the list moved"):
        await read(record_key=True)
    listed[:] = ["a", "b", "c", "d", "e"]

    async def still(offset: int) -> list[str]:
        return listed[offset : offset + 2]

    pages = offset_pages(still, start=0, limit=2, concurrency=2, record_key=lambda r: r)
    assert [r async for _, page in pages for r in page] == listed  # an unchanged list reads as is
