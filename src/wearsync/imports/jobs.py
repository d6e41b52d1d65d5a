"""An import task run by a worker, as a sync's job is (`sync_task`, so the reaper and retries
treat both alike).

The worker parses in a thread (the event loop stays free) that hands batches over a queue of two,
so parsing runs ahead of the writes by one batch at most; the writes are one transaction, so an
import stores everything or, failing, nothing. A job that dies (its worker killed, the database
lost) leaves the task running and the upload on disk: the rerun starts again from the top and the
upserts make it idempotent. The upload is deleted when the task ends.
"""

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from wearsync.db import TRANSIENT_DB_ERRORS, tasks
from wearsync.db import imports as db
from wearsync.imports.apple_health import SOURCE, Batch, read_export
from wearsync.imports.archive import BadExport, ExportStream, find_export
from wearsync.models import TaskStatus
from wearsync.providers.errors import JobSliceDone
from wearsync.records import DailyActivity, SleepSession, Workout
from wearsync.settings import Settings

log = structlog.get_logger(__name__)

# Rows parsed, then written with one COPY and one INSERT per table. Three batches are in memory at
# once (one read, one waiting, one written): 10,000 rows are about 7 MB.
BATCH_ROWS = 10_000
MAX_ELEMENT_BYTES = 32 << 20  # one element of export.xml (a workout with its route: a few MB)
IMPORTERS = frozenset({SOURCE})  # the `provider` of tasks that import a file


def upload_path(settings: Settings, task_id: UUID) -> Path:
    return settings.import_dir / f"{task_id}.zip"


async def sweep_uploads(db_pool: asyncpg.Pool, settings: Settings, older_than_s: float = 3600) -> int:
    """Delete the uploads nothing will import, once `older_than_s` old: a task's file whose task
    ended or is gone (its user deleted meanwhile, a worker lost between its end and the delete),
    and an upload cut off mid-way (`upload-*.part`: one still coming in is written to, so new).
    How many were deleted."""

    def old_files() -> list[Path]:
        cutoff = time.time() - older_than_s
        if not settings.import_dir.is_dir():
            return []
        return [p for p in settings.import_dir.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]

    old = await asyncio.to_thread(old_files)
    by_task: dict[UUID, Path] = {}
    doomed = [p for p in old if p.name.startswith("upload-") and p.suffix == ".part"]
    for path in old:
        with contextlib.suppress(ValueError):
            if path.suffix == ".zip":
                by_task[UUID(path.stem)] = path
    still_open = await db.open_import_ids(db_pool, list(by_task))
    doomed += [path for task_id, path in by_task.items() if task_id not in still_open]
    for path in doomed:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    if doomed:
        log.info("deleted uploads nothing will import", count=len(doomed))
    return len(doomed)


async def run_import(
    db_pool: asyncpg.Pool, settings: Settings, task: asyncpg.Record, stopping: asyncio.Event
) -> tuple[dict[str, bool], str]:
    """Import a started task's upload; its result and final status (a failure to read the export
    ends the task `failed`, naming why). Raises what a job should retry (a lost database) or
    continue in a new job (JobSliceDone: the worker is stopping), keeping the upload for it."""
    task_id: UUID = task["id"]
    path = upload_path(settings, task_id)
    await tasks.restart_type_progress(db_pool, task_id, db.IMPORT_TYPE)  # a rerun counts again from 0
    log.info("import started", source=task["provider"], user_id=str(task["user_id"]))
    try:
        if task["attempts"] > 2 * settings.job_max_tries:
            # Each run was cut off (a job timeout, a worker killed): the reaper would start it forever.
            raise BadExport(
                f"gave up after {task['attempts'] - 1} runs that did not finish: a worker killed or timed out"
                " each time (WEARSYNC_JOB_TIMEOUT_S bounds one import: a larger export needs more)"
            )
        if not path.exists():
            raise BadExport(
                f"the upload is not in {settings.import_dir}: WEARSYNC_IMPORT_DIR must be one directory"
                " the API and the workers share"
            )
        entry = await asyncio.to_thread(find_export, path, settings.import_max_xml_bytes)
        await _store(db_pool, settings, task, path, entry, stopping)
    except BadExport as e:
        log.warning("import failed", error=str(e))
        await tasks.update_type_progress(db_pool, task_id, db.IMPORT_TYPE, status="failed", error=str(e))
        await tasks.finish_task(db_pool, task_id, TaskStatus.FAILED, {db.IMPORT_TYPE: False}, str(e))
        path.unlink(missing_ok=True)
        return {db.IMPORT_TYPE: False}, TaskStatus.FAILED.value
    except Exception as e:
        if not isinstance(e, (JobSliceDone, *TRANSIENT_DB_ERRORS)):
            path.unlink(missing_ok=True)  # the job fails the task: nothing reruns it
        raise
    await tasks.update_type_progress(db_pool, task_id, db.IMPORT_TYPE, status="succeeded")
    await tasks.finish_task(db_pool, task_id, TaskStatus.SUCCEEDED, {db.IMPORT_TYPE: True}, None)
    path.unlink(missing_ok=True)
    log.info("import finished")
    return {db.IMPORT_TYPE: True}, TaskStatus.SUCCEEDED.value


class _Stopped(Exception):
    """The reading thread is told to stop: the writes failed."""


async def _store(
    db_pool: asyncpg.Pool, settings: Settings, task: asyncpg.Record, path: Path, entry: Any, stopping: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)
    stop = threading.Event()

    def hand(item: Batch | BaseException | None) -> None:
        handed = asyncio.run_coroutine_threadsafe(batches.put(item), loop)
        while True:
            try:
                handed.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    handed.cancel()
                    raise _Stopped from None

    def read() -> None:
        try:
            with ExportStream(path, entry, settings.import_max_xml_bytes, MAX_ELEMENT_BYTES) as stream:
                for batch in read_export(stream, BATCH_ROWS):
                    hand(batch)
            hand(None)
        except _Stopped:
            pass
        except BaseException as e:  # handed to the writer, which raises it
            with contextlib.suppress(_Stopped):
                hand(e)

    reader = loop.run_in_executor(None, read)
    try:
        await _write(db_pool, task, entry.file_size, batches, stopping)
    finally:
        stop.set()
        await reader


async def _write(
    db_pool: asyncpg.Pool,
    task: asyncpg.Record,
    total_bytes: int,
    batches: "asyncio.Queue[Batch | BaseException | None]",
    stopping: asyncio.Event,
) -> None:
    task_id, user_id = task["id"], task["user_id"]
    async with db_pool.acquire() as conn, conn.transaction():
        await db.create_staging(conn)
        while (batch := await batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            records: list[Workout | SleepSession | DailyActivity] = [*batch.workouts, *batch.sleep, *batch.daily]
            await db.write_batch(conn, user_id, task["provider"], task_id, batch.samples, records)
            await tasks.update_type_progress(
                db_pool, task_id, db.IMPORT_TYPE, pages=1, records=batch.counts(), bytes_read=batch.bytes_read,
                bytes_total=total_bytes, **({"skipped": batch.skipped} if batch.skipped else {}),
            )  # fmt: skip
            if stopping.is_set():  # rolled back: the new job starts again from the top
                raise JobSliceDone(0, stopping=True)
