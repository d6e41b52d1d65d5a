"""The dashboard and the hosted connect page in a real browser: Playwright driving the system's
Chromium (`apt-get install chromium`; Playwright's own browser download is not used) against the
API, the worker and the simulators on real sockets.

Without Chromium these tests skip, saying so; with WEARSYNC_REQUIRE_BROWSER set (as `.ci/run`
sets it, after installing Chromium) a missing browser fails them instead."""

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import Factory
from tests.sink import Sink, running_sink
from tests.test_event_delivery import register
from wearsync.settings import Settings
from wearsync.sim.common import SimState

Client = TestClient[web.Request, web.Application]
CHROMIUM = Path(os.environ.get("WEARSYNC_CHROMIUM", "/usr/bin/chromium"))
SMALL_HISTORY = {"workouts": 12, "days_247": 6}


def browser_missing() -> str | None:
    if CHROMIUM.exists():
        return None
    return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set WEARSYNC_CHROMIUM)"


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if missing := browser_missing():
        if os.environ.get("WEARSYNC_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}; WEARSYNC_REQUIRE_BROWSER is set, so the browser tests may not skip")
        pytest.skip(missing)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium: Browser) -> AsyncIterator[Page]:
    """A fresh browser profile (its own sessionStorage); a script error on any page fails the test."""
    context = await chromium.new_context()
    context.set_default_timeout(30_000)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    await context.close()
    assert not errors, errors


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A webhook endpoint of the application's (tests/sink.py)."""
    async with running_sink(Sink(secrets=[])) as running:
        yield running


@pytest.fixture
def public(client: Client, settings: Settings) -> Client:
    """The test client, with WEARSYNC_PUBLIC_URL naming its real address (providers redirect there)."""
    settings.public_url = str(client.make_url("")).rstrip("/")
    return client


async def stored_in_window(db: asyncpg.Pool, table: str, column: str, user_id: str, days: int) -> int:
    """Rows of the user the dashboard plots for the last `days` days (from that day's UTC midnight)."""
    since = (datetime.now(UTC) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    extra = " AND NOT is_nap AND duration_s > 0" if table == "sleep_sessions" else ""
    count: int = await db.fetchval(
        f"SELECT count(*) FROM {table} WHERE user_id = $1 AND {column} >= $2{extra}", uuid.UUID(user_id), since
    )
    return count


async def test_sign_in_then_sync_now_follows_the_task_to_the_plots(
    public: Client, factory: Factory, settings: Settings, worker: Worker, db: asyncpg.Pool, sim_state: SimState,
    page: Page, sink: Sink,
) -> None:  # fmt: skip
    sim_user = f"d{uuid.uuid4().hex[:10]}"
    sim_state.provider("suunto").user_history[sim_user] = SMALL_HISTORY
    key = await factory.api_key()
    user_id = await factory.user(key, external_id="runner-1")
    await factory.connect(key, user_id, "suunto", sim_user)
    sim_state.provider("whoop").user_history[sim_user] = SMALL_HISTORY
    await factory.connect(key, user_id, "whoop", sim_user)
    other_key, other_user, _ = await factory.connected_user("strava", application="another-app")
    endpoint = (await register(public, key, sink.url, event_types=["sync.succeeded"]))["id"]

    await page.goto(f"{settings.public_url}/dashboard")
    await page.fill("#key", "ws_not-a-key")
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#login-error:has-text('That key is not valid')")
    await page.fill("#key", key)
    await page.click("#login-form button[type=submit]")
    row = page.locator(f"#users tr[data-user='{user_id}']")
    await row.wait_for()
    assert "runner-1" in await row.inner_text()
    assert await page.locator(f"#users tr[data-user='{other_user}']").count() == 0  # another application's
    assert await page.locator("#users-total").inner_text() == "(1)"
    assert await page.locator("#users-more").is_hidden()  # every user is shown
    await page.fill("#external-id", "nobody-has-this")
    await page.click("#users-filter button")
    await page.wait_for_selector("#users-total:has-text('(0)')")
    await page.fill("#external-id", "runner-1")
    await page.click("#users-filter button")
    await page.wait_for_selector("#users-total:has-text('(1)')")

    await row.locator("a").click()
    await page.wait_for_selector("#plot-workouts .empty:has-text('No workouts')")
    connection = page.locator("#user-connections tr[data-provider='suunto']")
    assert "never" in await connection.inner_text()  # no sync yet
    await connection.locator("button.sync-now").click()
    status = page.locator("#sync-status")
    await page.wait_for_selector("#sync-status[data-plotted]")  # the task ended and the plots were redrawn
    assert await status.get_attribute("data-state") == "succeeded", await status.inner_text()
    task_id = await status.get_attribute("data-plotted")
    assert await status.get_attribute("data-task") == task_id

    # The plots show what the sync stored: every workout and night of the window, none twice.
    workouts = await stored_in_window(db, "workouts", "start_time", user_id, 90)
    nights = await stored_in_window(db, "sleep_sessions", "end_time", user_id, 90)
    assert workouts > 0
    assert nights > 0
    plot = page.locator("#plot-workouts")
    assert await plot.get_attribute("data-total") == str(workouts)
    bars = [float(v or 0) for v in await plot.locator("rect.bar").evaluate_all("bs => bs.map(b => b.dataset.value)")]
    assert sum(bars) == workouts
    assert await page.locator("#plot-sleep rect.bar").count() == nights
    assert "No resting heart rate" in await page.locator("#plot-resting-hr").inner_text()  # Suunto has none
    # The connection's health and the task list say so too.
    await page.wait_for_selector(f"#tasks tr[data-task='{task_id}'][data-status='succeeded']")
    await page.wait_for_selector("#user-connections tr[data-provider='suunto'] td:has-text('(succeeded)')")
    # Whoop's recoveries carry the resting heart rate: its sync draws that plot.
    await page.locator("#user-connections tr[data-provider='whoop'] button.sync-now").click()
    await page.wait_for_selector(f"#sync-status[data-plotted]:not([data-plotted='{task_id}'])")
    assert await status.get_attribute("data-state") == "succeeded", await status.inner_text()
    resting = await db.fetchval(
        "SELECT count(*) FROM recoveries WHERE user_id = $1 AND resting_hr IS NOT NULL", uuid.UUID(user_id)
    )
    assert resting > 0
    assert await page.locator("#plot-resting-hr circle.dot").count() == resting
    assert await page.locator("#plot-resting-hr polyline.line").count() == 1

    # The application's webhook endpoint got the syncs' ends, as the deliveries list says.
    await page.wait_for_selector(f"#endpoints tr[data-endpoint='{endpoint}'] td:has-text('enabled')")
    await page.wait_for_selector("#deliveries tr[data-status='succeeded']:has-text('sync.succeeded')")
    assert await page.locator("#deliveries tr[data-status]").count() == len(sink.delivered()) == 2

    # A shorter window: the plots are drawn again with that window's rows.
    await page.select_option("#window", "30")
    await page.wait_for_selector(f"#user[data-drawn='{user_id} 30']")
    in_30_days = await stored_in_window(db, "workouts", "start_time", user_id, 30)
    assert await plot.get_attribute("data-total") == str(in_30_days)

    # Signing out forgets the key: a reload asks for one again.
    await page.click("#sign-out")
    await page.reload()
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.evaluate("sessionStorage.length") == 0
    assert other_key  # used above, by another application


async def connect_through(page: Page, link_url: str, provider: str, sim_user: str, decision: str) -> None:
    """On the connect page: the provider's button, then its consent page and the user's decision."""
    await page.goto(link_url)
    item = page.locator(f"li[data-provider='{provider}']")
    assert "not connected" in await item.inner_text()
    await item.locator("a.button").click()
    await page.wait_for_selector(f"h1:has-text('Authorize access to your {provider.capitalize()} account')")
    await page.fill("input[name=login_hint]", sim_user)
    await page.click(f"button[value={decision}]")


async def test_the_connect_page_approve_and_deny_in_a_browser(
    public: Client, factory: Factory, settings: Settings, worker: Worker, db: asyncpg.Pool, page: Page
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    resp = await public.post(f"/api/v1/users/{user_id}/connect-link", headers={"X-API-Key": key})
    link = (await resp.json())["url"]

    await connect_through(page, link, "suunto", "says-no", "deny")
    await page.wait_for_selector("h1:has-text('Not connected')")
    assert "You declined to share your data with us at Suunto" in await page.inner_text("main")
    assert page.url.startswith(f"{settings.public_url}/connect/result?")
    assert await db.fetchval("SELECT count(*) FROM provider_connections") == 0

    await connect_through(page, link, "strava", f"a{uuid.uuid4().hex[:10]}", "approve")
    await page.wait_for_selector("h1:has-text('Strava is connected')")
    assert await db.fetchval("SELECT active FROM provider_connections WHERE provider = 'strava'") is True
    await page.goto(link)  # back on the page: Strava is connected now, Suunto still is not
    assert "connected" in await page.inner_text("li[data-provider='strava'] .ok")
    assert "not connected" in await page.inner_text("li[data-provider='suunto']")
