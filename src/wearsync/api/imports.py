"""POST /api/v1/users/{user_id}/imports/apple-health: an Apple Health export.zip, streamed to disk
(never whole in memory), checked, then imported by a worker on a task like a sync's."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import structlog
from aiohttp import BodyPartReader, web

from wearsync.api.common import APP_ID, DEPS, QUEUE, ApiError, json_response, validate
from wearsync.api.models import UserPath
from wearsync.api.views import OPEN_TASKS_RETRY_AFTER_S, own_user
from wearsync.db import imports as db
from wearsync.db.tasks import TooManyOpenTasks
from wearsync.imports.apple_health import SOURCE
from wearsync.imports.archive import BadExport, TooLarge, find_export
from wearsync.imports.uploads import ImportOpen, start_import

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20  # bytes written to disk at a time


async def apple_health(request: web.Request) -> web.Response:
    path = validate(UserPath, request.match_info, {"user_id": "path"})
    deps = request.app[DEPS]
    settings = deps.settings
    user_id = (await own_user(request, path.user_id))["id"]  # 404 before a byte of the body is read
    if (open_id := await db.open_import(deps.db, user_id, SOURCE)) is not None:
        raise ApiError(409, str(ImportOpen(open_id)))
    declared = request.content_length
    if declared is not None and declared > settings.import_max_upload_bytes:
        raise ApiError(413, _too_large(settings.import_max_upload_bytes))
    await asyncio.to_thread(settings.import_dir.mkdir, parents=True, exist_ok=True)
    upload = settings.import_dir / f"upload-{uuid4()}.part"
    try:
        size = await _receive(request, upload, settings.import_max_upload_bytes)
        try:
            await asyncio.to_thread(find_export, upload, settings.import_max_xml_bytes)
        except TooLarge as e:
            raise ApiError(413, str(e)) from None
        except BadExport as e:
            raise ApiError(422, str(e)) from None
        task_id = await start_import(deps.db, request.app[QUEUE], settings, request[APP_ID], user_id, upload)
    except ImportOpen as e:
        raise ApiError(409, str(e)) from None
    except TooManyOpenTasks as e:
        detail = f"The {e.scope} already has {e.limit} tasks queued or running; try again once some finish"
        raise ApiError(429, detail, {"Retry-After": str(OPEN_TASKS_RETRY_AFTER_S)}) from None
    finally:
        upload.unlink(missing_ok=True)  # moved to the task's own path when it was started
    log.info("import queued", task_id=str(task_id), source=SOURCE, bytes=size)
    return json_response(
        {
            "success": True,
            "async": True,
            "task_id": str(task_id),
            "message": "Apple Health import queued. Check task status for results.",
        },
        status=202,
    )


def _too_large(limit: int) -> str:
    return f"The upload is larger than {limit} bytes (WEARSYNC_IMPORT_MAX_UPLOAD_BYTES)"


async def _receive(request: web.Request, destination: Path, max_bytes: int) -> int:
    """The body (or, from a form, its `file` part) written to `destination`; its size."""
    size = 0
    buffer = bytearray()
    with destination.open("wb") as out:
        async for chunk in _body(request):
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, _too_large(max_bytes))
            buffer += chunk
            if len(buffer) >= _CHUNK:
                await asyncio.to_thread(out.write, buffer)
                buffer = bytearray()
        await asyncio.to_thread(out.write, buffer)
    if not size:
        raise ApiError(422, "Request body is required: the export.zip, as the body or a form's 'file' field")
    return size


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    if request.content_type != "multipart/form-data":
        while chunk := await request.content.read(_CHUNK):
            yield chunk
        return
    try:
        form = await request.multipart()
    except (ValueError, AssertionError) as e:
        raise ApiError(400, f"The form cannot be read: {e}") from None
    async for part in form:
        if isinstance(part, BodyPartReader) and part.name == "file":
            while chunk := await part.read_chunk(_CHUNK):
                yield chunk
            return
        if part is not None:
            await part.release()
    raise ApiError(422, "The form has no 'file' field: send the export.zip as 'file'")
