"""The API's one error type, its JSON responses, and pydantic validation that names the field."""

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from arq.connections import ArqRedis
from pydantic import BaseModel, ValidationError

from wearsync.deps import Deps
from wearsync.models import validation_detail

M = TypeVar("M", bound=BaseModel)

DEPS = web.AppKey("deps", Deps)
QUEUE = web.AppKey("queue", ArqRedis)
APP_ID = web.RequestKey("app_id", UUID)  # the application (tenant) of the request's API key
# API key hash -> (application id, valid until, monotonic)
KEY_CACHE = web.AppKey("api_key_cache", dict[bytes, tuple[UUID, float]])


class ApiError(Exception):
    """Answered as `{"detail": detail}` with this status by the error middleware."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


def validate(model: type[M], data: Any, locations: dict[str, str] | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, validation_detail(e, locations)) from None


async def json_body(request: web.Request, *, optional: bool = False) -> Any:
    if not await request.read():
        if optional:
            return {}
        raise ApiError(422, "Request body is required")
    try:
        return await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ApiError(400, "Request body is not valid JSON") from None
