"""Request models: every query, path and body the API accepts is validated by one of these."""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from wearsync.models import SyncParams
from wearsync.settings import PROVIDER_NAMES

ProviderName = Literal["garmin", "strava", "polar", "suunto", "whoop"]
assert set(PROVIDER_NAMES) == set(ProviderName.__args__)  # type: ignore[attr-defined]

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}
MAX_UNIX_S = 253402300799  # 9999-12-31T23:59:59Z


def _query_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("must be true, false, 1 or 0")


def _unix_or_iso(value: Any) -> Any:
    """A Unix timestamp (seconds) or an ISO 8601 date or datetime, as Unix seconds."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"\d{1,12}", text):
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be a Unix timestamp or an ISO 8601 date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
UnixTime = Annotated[int | None, BeforeValidator(_unix_or_iso), Field(ge=0, le=MAX_UNIX_S)]


class SyncRequest(BaseModel):
    """Path and query of `POST /api/v1/{provider}/users/{user_id}/sync`, as the contract says."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    provider: ProviderName
    user_id: UUID
    data_type: Literal["workouts", "247", "all"] = "all"
    run_async: QueryBool = Field(True, alias="async")
    # Absent: continue from where the last sync got to (all data on a first sync); 0: all data.
    since: int | None = Field(None, ge=0, le=MAX_UNIX_S)
    limit: int = Field(50, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000_000)
    filter_by_modification_time: QueryBool = True
    samples: QueryBool = False
    zones: QueryBool = False
    route: QueryBool = False
    summary_start_time: UnixTime = None
    summary_end_time: UnixTime = None

    @model_validator(mode="after")
    def _start_before_end(self) -> "SyncRequest":
        start, end = self.summary_start_time, self.summary_end_time
        if start is not None and end is not None and start > end:
            raise ValueError("summary_start_time must not be after summary_end_time")
        return self

    def params(self) -> SyncParams:
        return SyncParams.model_validate(self.model_dump(include=set(SyncParams.model_fields)))


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UUID | None = None
    external_id: str | None = Field(None, min_length=1, max_length=255)


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: str = Field(min_length=1, max_length=8192)
    refresh_token: str | None = Field(None, max_length=8192)
    expires_at: AwareDatetime | None = None
    provider_user_id: str = Field(min_length=1, max_length=255)
    scopes: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list, max_length=100)


class UserPath(BaseModel):
    user_id: UUID


class ConnectionPath(BaseModel):
    user_id: UUID
    provider: ProviderName


class TaskPath(BaseModel):
    task_id: UUID
