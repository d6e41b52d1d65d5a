"""The paging helpers: bounded concurrency, fetching that goes on while a page is written, the
end of a list found without waste, failures raised after the calls in flight land; and the
clients that page long lists keep as many pages in flight as allowed."""

import asyncio
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import Factory
from wearsync.providers import PROVIDERS
from wearsync.providers.errors import ListShifted
from wearsync.providers.paging import each_concurrently, offset_pages, time_windows
from wearsync.settings import Settings
from wearsync.sim.common import Fault, SimState

Client = TestClient[web.Request, web.Application]


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


async def settle() -> None:
    """Let every callback the loop has ready run, and those they schedule (a bounded number of
    loop turns, no clock): a pipeline that would start more fetches has started them by then."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_exactly_concurrency_pages_are_in_flight_while_none_has_answered(concurrency: int) -> None:
    answers: dict[int, asyncio.Future[int]] = {}

    async def fetch(item: int) -> int:
        answers[item] = asyncio.get_running_loop().create_future()
        return await answers[item]

    async def drain() -> list[int]:
        return [item async for item in each_concurrently(range(10), fetch, concurrency=concurrency)]

    reader = asyncio.create_task(drain())
    for answered in range(10):
        await settle()
        # Never more, and never fewer while the list has more: the calls that are not answered yet.
        assert len(answers) - answered == min(concurrency, 10 - answered)
        answers[answered].set_result(answered)
    assert await reader == list(range(10))


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_pages_waiting_for_a_busy_writer_stay_within_one_more_than_the_width(concurrency: int) -> None:
    """The module's bound: fetched pages the caller has not taken yet and calls in flight are
    together at most `concurrency + 1`; the page the caller is writing comes on top."""
    started: list[int] = []
    writing = asyncio.Event()
    written = asyncio.Event()

    async def fetch(item: int) -> int:
        started.append(item)
        return item

    async def drain() -> list[int]:
        taken: list[int] = []
        async for item in each_concurrently(range(20), fetch, concurrency=concurrency):
            if not taken:
                writing.set()
                await written.wait()  # a slow write of the first page: the rest must wait, bounded
            taken.append(item)
        return taken

    reader = asyncio.create_task(drain())
    await writing.wait()
    await settle()
    assert len(started) == 1 + concurrency + 1  # the page being written, and the bound
    written.set()
    assert await reader == list(range(20))
    assert started == list(range(20))


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


@pytest.mark.parametrize("max_fetches", [0, 1, 3])
async def test_each_concurrently_makes_no_more_calls_than_its_budget(max_fetches: int) -> None:
    asked: list[int] = []

    async def fetch(item: int) -> int:
        asked.append(item)
        return item

    got = [item async for item in each_concurrently(range(10), fetch, concurrency=2, max_fetches=max_fetches)]
    assert (sorted(got), sorted(asked)) == (list(range(max_fetches)), list(range(max_fetches)))


async def test_each_concurrently_fetches_every_item_whatever_its_value() -> None:
    async def fetch(item: object) -> object:
        return item

    items = [0, "", False, (), "x"]  # falsy values are items like any other
    assert [item async for item in each_concurrently(items, fetch, concurrency=1)] == items


def test_time_windows_cut_a_range_into_consecutive_half_open_windows() -> None:
    t0, hour = datetime(2024, 5, 1, tzinfo=UTC), timedelta(hours=1)
    assert time_windows(t0, t0 + 2 * hour, hour) == [(t0, t0 + hour), (t0 + hour, t0 + 2 * hour)]
    assert time_windows(t0, t0 + 90 * timedelta(minutes=1), hour) == [(t0, t0 + hour), (t0 + hour, t0 + 1.5 * hour)]
    assert time_windows(t0, t0, hour) == []  # an empty range: no call at all
    assert time_windows(t0 + hour, t0, hour) == []


async def test_a_reader_that_stops_early_leaves_no_fetch_running_and_no_error() -> None:
    """Closed mid-way (a job slice done, a failure in the writer), the pages fetched and not read
    are dropped and the fetches in flight cancelled, quietly."""
    never = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []

    async def fetch(item: int) -> int:
        started.append(item)
        if item >= 2:  # 0 and 1 answer at once; the rest wait until cancelled
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(item)
                raise
        return item

    pages = each_concurrently(range(10), fetch, concurrency=3)
    async with aclosing(pages):
        async for _ in pages:
            await settle()  # page 1 is fetched meanwhile and waits, unread
            break
    # 0 read; 1 fetched, waiting unread; 2 to 4 in flight (the width): those three cancelled
    assert (sorted(started), sorted(cancelled)) == ([0, 1, 2, 3, 4], [2, 3, 4])


# ---- the clients keep as many pages in flight as allowed ---------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "history"),
    [("suunto", "/v3/workouts", 600), ("strava", "/api/v3/athlete/activities", 1500)],
)
async def test_a_long_list_is_fetched_with_every_allowed_page_in_flight(
    client: Client, factory: Factory, sim_state: SimState, settings: Settings, provider: str, path: str, history: int
) -> None:
    """After the first page (which goes alone: it may be the only one), the simulator holds the
    next calls until `page_concurrency` of them are in flight together: its peak is an event
    count, so a client fetching fewer at a time fails here whatever the machine's speed."""
    width = PROVIDERS[provider].settings(settings).page_concurrency
    assert width > 1
    key, user_id, sim_user = await factory.connected_user(provider)
    sim_state.provider(provider).user_history[sim_user] = {"workouts": history}
    sim_state.faults.append(Fault(provider, path, "gather", count=width, skip=1))
    resp = await client.post(
        f"/api/v1/{provider}/users/{user_id}/sync?data_type=workouts&async=false", headers={"X-API-Key": key}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["details"] == {"workouts": True}
    assert sim_state.peak_in_flight[provider] == width
    assert len([r for r in sim_state.requests if r["path"].startswith(path)]) > width + 1  # a long list
