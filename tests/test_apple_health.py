"""Apple Health export imports (issue 17): an export.zip uploaded, imported by the worker into the
common tables, deduplicated on re-import; bad uploads refused at once, bad exports failing their
task with the reason and storing nothing."""

import os
import uuid
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Factory, start_worker, wait_for_task
from wearsync.api.app import create_app
from wearsync.imports import jobs
from wearsync.imports.apple_health import parse_date, read_export
from wearsync.imports.archive import ExportStream, TooLarge, find_export
from wearsync.imports.jobs import sweep_uploads
from wearsync.settings import Settings
from wearsync.sim.apple_health import EXPORT_XML, FOOTER, HEADER, ExportSummary, write_export, write_zip

Client = TestClient[web.Request, web.Application]
TABLES = {"workouts": "workouts", "sleep": "sleep_sessions", "daily_activity": "daily_activity"}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"import_dir": tmp_path / "imports"})


async def upload(client: Client, key: str, user_id: str, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        f"/api/v1/users/{user_id}/imports/apple-health", data=body, headers={"X-API-Key": key, **headers}
    )
    return resp.status, await resp.json()


async def stored(db: asyncpg.Pool) -> dict[str, Any]:
    counts: dict[str, Any] = {kind: await db.fetchval(f"SELECT count(*) FROM {t}") for kind, t in TABLES.items()}
    rows = await db.fetch("SELECT sample_type, count(*) AS n FROM samples GROUP BY sample_type")
    counts["samples"] = {r["sample_type"]: r["n"] for r in rows}
    return counts


def expected(summary: ExportSummary) -> dict[str, Any]:
    return {"workouts": summary.workouts, "sleep": summary.sleep, "daily_activity": summary.daily_activity,
            "samples": dict(summary.samples)}  # fmt: skip


def export_xml(*elements: str) -> str:
    return HEADER.replace("{export_date}", "2024-05-01 10:00:00 +0200") + "".join(elements) + FOOTER


def heart_rate(start: str = "2024-04-01 08:02:11 +0200", value: str = "72") -> str:
    return (
        f' <Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Watch" unit="count/min"'
        f' creationDate="{start}" startDate="{start}" endDate="{start}" value="{value}"/>\n'
    )


async def queued_import(client: Client, factory: Factory, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A new user's one-record export uploaded while no worker runs, so its task stays queued: the
    application's key and the upload's answer."""
    key = await factory.api_key()
    user_id = await factory.user(key)
    path = tmp_path / "export.zip"
    write_zip(path, {EXPORT_XML: export_xml(heart_rate())})
    status, answer = await upload(client, key, user_id, path.read_bytes())
    assert status == 202, answer
    return key, answer


async def test_an_export_is_imported_once_however_often_it_is_uploaded(
    client: Client, factory: Factory, db: asyncpg.Pool, worker: Worker, settings: Settings, tmp_path: Path
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    export = tmp_path / "export.zip"
    summary = write_export(export, days=12)
    status, answer = await upload(client, key, user_id, export.read_bytes(), **{"Content-Type": "application/zip"})
    assert status == 202, answer
    task = await wait_for_task(client, key, answer["task_id"])
    assert task["status"] == "succeeded", task
    assert (task["provider"], task["result"]) == ("apple_health", {"import": True})
    progress = task["progress"]["import"]
    assert progress["bytes_read"] == progress["bytes_total"] == summary.xml_bytes
    assert progress["records"]["samples"] == sum(summary.samples.values())
    assert progress["skipped"]["HKQuantityTypeIdentifierEnvironmentalAudioExposure"] > 0
    assert await stored(db) == expected(summary)
    assert not list(settings.import_dir.iterdir())  # the upload is deleted once imported
    before = await db.fetch("SELECT provider_record_id, updated_at FROM workouts ORDER BY 1")

    # The same export again, as a form this time: nothing added, nothing rewritten.
    form = aiohttp.FormData()
    form.add_field("file", export.read_bytes(), filename="export.zip", content_type="application/zip")
    status, answer = await upload(client, key, user_id, form)
    assert status == 202, answer
    assert (await wait_for_task(client, key, answer["task_id"]))["status"] == "succeeded"
    assert await stored(db) == expected(summary)
    assert await db.fetch("SELECT provider_record_id, updated_at FROM workouts ORDER BY 1") == before

    # What the read API serves: the new sample types, the source as a provider.
    resp = await client.get(
        f"/api/v1/users/{user_id}/samples?type=hrv_sdnn&provider=apple_health&limit=1000", headers={"X-API-Key": key}
    )
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["data"]) == summary.samples["hrv_sdnn"]


async def test_what_is_stored_of_a_hand_made_export(
    client: Client, factory: Factory, db: asyncpg.Pool, worker: Worker, tmp_path: Path
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    xml = export_xml(
        heart_rate("2024-04-01 08:02:11 +0200", "72"),
        heart_rate("2024-04-01T06:02:11Z", "75"),  # the same instant, written another way: the later wins
        heart_rate("2024-04-01 08:03:00.250 +02:00", "80"),
        ' <Record type="HKQuantityTypeIdentifierStepCount" sourceName="Wa\x0btch" unit="count"'  # a stray \x0b
        ' startDate="2024-04-01 09:00:00 +0200" endDate="2024-04-01 09:10:00 +0200" value="512"/>\n',
        ' <Workout workoutActivityType="HKWorkoutActivityTypeRunning" duration="30" durationUnit="min"'
        ' totalDistance="3.1" totalDistanceUnit="mi" totalEnergyBurned="1200" totalEnergyBurnedUnit="kJ"'
        ' sourceName="Watch" startDate="2024-04-01 18:00:00 +0200" endDate="2024-04-01 18:30:00 +0200">\n'
        '  <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" average="150" minimum="90" maximum="180"'
        ' unit="count/min"/>\n'
        "  <Location latitude='1' longitude='2'/>\n"
        " </Workout>\n",
    )
    path = tmp_path / "export.zip"
    write_zip(path, {"apple_health_export/导出.xml": xml, "apple_health_export/export_cda.xml": "<x/>"})
    status, answer = await upload(client, key, user_id, path.read_bytes())
    assert status == 202, answer
    assert (await wait_for_task(client, key, answer["task_id"]))["status"] == "succeeded"
    samples = await db.fetch("SELECT sample_type, recorded_at, value, raw FROM samples ORDER BY recorded_at")
    assert [(s["sample_type"], s["recorded_at"].isoformat(), s["value"]) for s in samples] == [
        ("heart_rate", "2024-04-01T06:02:11+00:00", 75.0),
        ("heart_rate", "2024-04-01T06:03:00.250000+00:00", 80.0),
        ("steps", "2024-04-01T07:00:00+00:00", 512.0),
    ]
    assert samples[2]["raw"]["sourceName"] == "Watch"
    workout = await db.fetchrow("SELECT * FROM workouts")
    assert workout is not None
    assert (workout["sport"], workout["duration_s"], workout["utc_offset_minutes"]) == ("running", 1800.0, 120)
    assert workout["distance_m"] == pytest.approx(3.1 * 1609.344)
    assert workout["energy_kcal"] == pytest.approx(1200 / 4.184)
    assert (workout["avg_hr"], workout["min_hr"], workout["max_hr"]) == (150.0, 90.0, 180.0)
    day = await db.fetchrow("SELECT day, steps FROM daily_activity")
    assert day is not None
    assert (day["day"].isoformat(), day["steps"]) == ("2024-04-01", 512)


async def test_an_upload_that_is_no_export_is_refused_at_once(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    no_export = tmp_path / "other.zip"
    write_zip(no_export, {"apple_health_export/export_cda.xml": "<x/>"})
    export = tmp_path / "export.zip"
    write_zip(export, {EXPORT_XML: export_xml(heart_rate())})
    cut = export.read_bytes()[:-30]  # the zip's central directory cut off
    for body, status, detail in [
        (b"", 422, "Request body is required"),
        (b"PK\x03\x04 not really", 422, "not a zip archive"),
        (cut, 422, "not a zip archive"),
        (no_export.read_bytes(), 422, "no export.xml"),
    ]:
        got_status, got = await upload(client, key, user_id, body)
        assert (got_status, detail in got["detail"]) == (status, True), (status, detail, got)
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 0
    assert not list(settings.import_dir.iterdir())  # nothing left on disk


async def test_too_large_uploads_and_zip_bombs_are_refused(
    aiohttp_client: Any, factory: Factory, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    key = await factory.api_key()
    user_id = await factory.user(key)
    bomb = tmp_path / "bomb.zip"  # 2 MB of XML in a few KB
    write_zip(bomb, {EXPORT_XML: export_xml(*(heart_rate() for _ in range(10_000)))})
    assert bomb.stat().st_size < 50_000
    capped = settings.model_copy(update={"import_max_xml_bytes": 1_000_000, "import_max_upload_bytes": 60_000})
    client = await aiohttp_client(create_app(capped))
    status, answer = await upload(client, key, user_id, bomb.read_bytes())
    assert (status, "over the limit of 1000000" in answer["detail"]) == (413, True), answer
    status, answer = await upload(client, key, user_id, b"x" * 70_000)
    assert (status, "larger than 60000 bytes" in answer["detail"]) == (413, True), answer

    async def chunked() -> Any:  # no Content-Length: counted as it comes
        for _ in range(70):
            yield b"x" * 1000

    status, answer = await upload(client, key, user_id, chunked())
    assert status == 413, answer
    assert await db.fetchval("SELECT count(*) FROM sync_tasks") == 0
    assert not list(settings.import_dir.iterdir())


def _read_all(stream: Any) -> None:
    while stream.read(1 << 14):
        pass


def test_a_zip_that_lies_about_its_size_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    write_zip(path, {EXPORT_XML: export_xml(*(heart_rate() for _ in range(1000)))})
    entry = find_export(path, 10**9)
    with ExportStream(path, entry, 50_000, 10**6) as stream, pytest.raises(TooLarge, match="zip bomb"):
        _read_all(stream)


BILLION_LAUGHS = (
    export_xml(heart_rate())
    .replace(
        "<!DOCTYPE HealthData [\n",
        '<!DOCTYPE HealthData [\n<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">\n'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9)),
    )
    .replace('sourceName="Watch"', 'sourceName="&j;"')
)
HUGE_WORKOUT = (
    '<Workout workoutActivityType="x" sourceName="a" startDate="2024-04-01 08:05:00 +0200"'
    ' endDate="2024-04-01 08:05:00 +0200">' + '<MetadataEntry key="k" value="v"/>' * 5000 + "</Workout>"
)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (export_xml(heart_rate(), heart_rate("2024-04-01 08:05:00 +0200"))[:-40], "export.xml is cut short"),
        (export_xml(heart_rate(), "<Record>\n"), "not well-formed XML (Opening and ending tag mismatch"),
        ('<?xml version="1.0"?>\n<Workouts><Record type="x"/></Workouts>\n', "its root element is <Workouts>"),
        (BILLION_LAUGHS, "not well-formed XML (Maximum entity amplification factor exceeded"),
        (export_xml(heart_rate(), heart_rate("01/04/2024 08:05")), "line 68: Record startDate: '01/04/2024 08:05'"),
        (export_xml(heart_rate(), heart_rate("2024-04-01 08:05:00")), "is not a date and time with a UTC offset"),
        (export_xml(heart_rate(), heart_rate(value="NaN")), "value 'NaN' is not a finite number"),
        (export_xml(heart_rate(), heart_rate(value="seventy")), "HeartRate value could not convert"),
        (export_xml(heart_rate(), HUGE_WORKOUT), "an element of more than 65536 bytes"),
    ],
    ids=[
        "truncated",
        "mismatched",
        "not-health-data",
        "billion-laughs",
        "odd-date",
        "no-offset",
        "nan",
        "not-a-number",
        "huge-element",
    ],
)
async def test_an_export_that_cannot_be_read_fails_its_task_storing_nothing(
    client: Client, factory: Factory, db: asyncpg.Pool, worker: Worker, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, xml: str, reason: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(jobs, "MAX_ELEMENT_BYTES", 65536)
    monkeypatch.setattr(jobs, "BATCH_ROWS", 1)  # the good record before is written, then rolled back
    key = await factory.api_key()
    user_id = await factory.user(key)
    path = tmp_path / "export.zip"
    write_zip(path, {EXPORT_XML: xml})
    status, answer = await upload(client, key, user_id, path.read_bytes())
    assert status == 202, answer
    task = await wait_for_task(client, key, answer["task_id"])
    assert (task["status"], reason in task["error"]) == ("failed", True), task
    assert task["progress"]["import"]["status"] == "failed"
    assert await stored(db) == {"workouts": 0, "sleep": 0, "daily_activity": 0, "samples": {}}
    assert not list(settings.import_dir.iterdir())


async def test_one_import_at_a_time_per_user_and_only_for_the_apps_own_users(
    client: Client, factory: Factory, db: asyncpg.Pool, tmp_path: Path
) -> None:
    key, other_key = await factory.api_key("acme"), await factory.api_key("other")
    user_id = await factory.user(key)
    path = tmp_path / "export.zip"
    write_zip(path, {EXPORT_XML: export_xml(heart_rate())})
    assert (await upload(client, other_key, user_id, path.read_bytes())) == (404, {"detail": "User not found"})
    assert (await upload(client, key, str(uuid.uuid4()), path.read_bytes())) == (404, {"detail": "User not found"})
    status, first = await upload(client, key, user_id, path.read_bytes())  # no worker: it stays queued
    assert status == 202, first
    status, second = await upload(client, key, user_id, path.read_bytes())
    assert (status, first["task_id"] in second["detail"]) == (409, True), second
    resp = await client.get(f"/api/v1/tasks/{first['task_id']}", headers={"X-API-Key": other_key})
    assert resp.status == 404


def test_dates_in_the_forms_exports_and_other_tools_write() -> None:
    canonical = parse_date("2021-12-11 18:04:47 -0700")
    for text in (
        "2021-12-11T18:04:47-07:00",
        "2021-12-12T01:04:47Z",
        "2021-12-11 18:04:47 -07:00",
        "2021-12-11T18:04:47.000-0700",
        " 2021-12-12 01:04:47 +0000 ",
    ):
        assert parse_date(text) == canonical, text
    assert parse_date("2021-12-11 18:04 -0700") == canonical.replace(second=0)
    for bad in ("2021-12-11 18:04:47", "11/12/2021 18:04:47 -0700", "2021-13-11 18:04:47 -0700", "", "yesterday"):
        with pytest.raises(ValueError, match="not a date and time with a UTC offset"):
            parse_date(bad)


def test_the_generated_export_reads_as_it_was_written(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    summary = write_export(path, days=5)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [EXPORT_XML]
    counts: dict[str, int] = {}
    elements = 0
    with ExportStream(path, find_export(path, 10**9), 10**9, 10**6) as stream:
        for batch in read_export(stream, 1000):
            elements += batch.elements
            for kind, n in batch.counts().items():
                counts[kind] = counts.get(kind, 0) + n
    assert elements == summary.records
    assert counts == {"samples": sum(summary.samples.values()), "workouts": summary.workouts,
                      "sleep": summary.sleep, "daily_activity": summary.daily_activity}  # fmt: skip


async def test_uploads_nothing_will_import_are_swept(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    _, answer = await queued_import(client, factory, tmp_path)
    queued = settings.import_dir / f"{answer['task_id']}.zip"
    ended = settings.import_dir / f"{uuid.uuid4()}.zip"  # a task that is gone
    cut_off = settings.import_dir / "upload-1.part"
    fresh = settings.import_dir / "upload-2.part"
    for stray in (ended, cut_off, fresh):
        stray.write_bytes(b"x")
    hour_ago = os.stat(queued).st_mtime - 3700
    for old in (queued, ended, cut_off):
        os.utime(old, (hour_ago, hour_ago))
    assert await sweep_uploads(db, settings) == 2
    assert sorted(p.name for p in settings.import_dir.iterdir()) == sorted([queued.name, fresh.name])


@given(st.text(max_size=40))
def test_any_text_is_a_date_with_an_offset_or_refused(text: str) -> None:
    try:
        parsed = parse_date(text)
    except ValueError:
        return
    assert parsed.utcoffset() is not None


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.timezones()).map(lambda d: d.replace(microsecond=0)))
def test_the_health_apps_dates_read_back_as_written(moment: datetime) -> None:
    if moment.utcoffset() is None or moment.utcoffset() % timedelta(minutes=1):  # type: ignore[operator]
        return  # the export's form has whole minutes of offset
    assert parse_date(moment.strftime("%Y-%m-%d %H:%M:%S %z")) == moment


async def test_a_worker_that_does_not_share_the_upload_directory_says_so(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    key, answer = await queued_import(client, factory, tmp_path)
    async with start_worker(settings.model_copy(update={"import_dir": tmp_path / "elsewhere"})):
        task = await wait_for_task(client, key, answer["task_id"])
    assert task["status"] == "failed"
    assert "WEARSYNC_IMPORT_DIR must be one directory the API and the workers share" in task["error"]


async def test_an_import_cut_off_run_after_run_is_given_up(
    client: Client, factory: Factory, db: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    key, answer = await queued_import(client, factory, tmp_path)
    # As if it had been started this often and cut off each time (a job timeout, a killed worker).
    await db.execute("UPDATE sync_tasks SET attempts = $1", 2 * settings.job_max_tries)
    async with start_worker(settings):
        task = await wait_for_task(client, key, answer["task_id"])
    assert task["status"] == "failed"
    assert task["error"].startswith(f"gave up after {2 * settings.job_max_tries} runs that did not finish")
    assert await db.fetchval("SELECT count(*) FROM samples") == 0
    assert not list(settings.import_dir.iterdir())
