"""Starting an import: the upload, on disk and checked by the API, becomes a queued task."""

import asyncio
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
from arq import ArqRedis

from wearsync.db import imports as db
from wearsync.db import tasks
from wearsync.imports.apple_health import SOURCE
from wearsync.imports.jobs import upload_path
from wearsync.models import TaskStatus
from wearsync.queue import enqueue_task
from wearsync.settings import Settings


class ImportOpen(Exception):
    """The user already has an import of this source queued or running."""

    def __init__(self, task_id: UUID) -> None:
        super().__init__(f"An Apple Health import of this user is already queued or running: task {task_id}")
        self.task_id = task_id


async def start_import(
    db_pool: asyncpg.Pool, queue: ArqRedis, settings: Settings, app_id: UUID, user_id: UUID, upload: Path
) -> UUID:
    """The task importing `upload` (checked already), which moves to the task's own path; its job
    queued. ImportOpen while the user has one queued or running; TooManyOpenTasks past the caps."""
    task_id = uuid4()
    destination = upload_path(settings, task_id)
    # Before the task exists: a worker never finds a task without its file.
    await asyncio.to_thread(upload.rename, destination)
    try:
        created_id, created = await db.create_import_task(
            db_pool, task_id=task_id, app_id=app_id, user_id=user_id, source=SOURCE,
            max_open_per_user=settings.max_open_tasks_per_user, max_open_per_app=settings.max_open_tasks_per_app,
        )  # fmt: skip
        if not created:
            raise ImportOpen(created_id)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    try:
        await enqueue_task(queue, str(task_id))
    except Exception:
        await tasks.finish_task(db_pool, task_id, TaskStatus.FAILED, None, "could not enqueue the task")
        destination.unlink(missing_ok=True)
        raise
    return task_id
