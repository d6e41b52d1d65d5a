"""Domain types shared by the API, the worker and the provider clients."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator


class ProviderName(StrEnum):
    """The providers wearsync ships: each is a module under providers/ and one under sim/, listed
    in their registries (PROVIDERS, SIMULATORS) and in the database's check of provider names;
    tests/test_registry.py checks that all four agree."""

    GARMIN = "garmin"
    STRAVA = "strava"
    POLAR = "polar"
    SUUNTO = "suunto"
    WHOOP = "whoop"


# What a sync asks for: workouts, 247 data (sleep, recovery, activity samples), or all the
# provider supports.
Requested = Literal["workouts", "247", "all"]


class DataType(StrEnum):
    """A data type a sync can ask for; its value is the key used in `details` and progress."""

    WORKOUTS = "workouts"
    DATA_247 = "data_247"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


FINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.PARTIAL, TaskStatus.FAILED})


MAX_UNIX_S = 253402300799  # 9999-12-31T23:59:59Z


def unix_or_iso(value: Any) -> Any:
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


# The bounds of sync parameters, the same wherever a sync is asked for (the API, the CLI).
UnixSeconds = Annotated[int, Field(ge=0, le=MAX_UNIX_S)]
PageSize = Annotated[int, Field(ge=1, le=100)]
PageOffset = Annotated[int, Field(ge=0, le=10_000_000)]
UnixTime = Annotated[UnixSeconds | None, BeforeValidator(unix_or_iso)]


def check_range(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise ValueError("summary_start_time must not be after summary_end_time")


class SyncParams(BaseModel):
    """The parameters a sync runs with, stored on its task as JSON so that an async job and a
    sync call do exactly the same thing. Times are Unix seconds. Which of them a provider reads is
    its `Provider.params`; the task records only those."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # None (not given): continue from the connection's cursor; 0: all available data.
    since: UnixSeconds | None = Field(
        None, description="Unix time to sync from; 0: everything (default: since the last sync)"
    )
    limit: PageSize = Field(50, description="items per upstream request, 1-100 (default 50)")
    offset: PageOffset = Field(0, description="pagination offset (default 0)")
    filter_by_modification_time: bool = Field(
        True, description="filter by modification time rather than creation time (default: on)"
    )
    samples: bool = Field(False, description="include sample data")
    zones: bool = Field(False, description="include heart-rate zones")
    route: bool = Field(False, description="include the GPS route")
    summary_start_time: UnixTime = Field(None, description="backfill from: Unix time or ISO 8601 date")
    summary_end_time: UnixTime = Field(None, description="backfill until: Unix time or ISO 8601 date")

    @model_validator(mode="after")
    def _start_before_end(self) -> "SyncParams":
        check_range(self.summary_start_time, self.summary_end_time)
        return self


def validation_detail(error: ValidationError, locations: dict[str, str] | None = None) -> str:
    """One sentence per problem, each naming the parameter (and where it was: path, query, body);
    the API's 422s and the CLI's refusals say the same."""
    parts = []
    for e in error.errors(include_url=False):
        if not e["loc"]:  # a check across fields; its message names them
            parts.append(e["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in e["loc"]) or "body"
        where = (locations or {}).get(str(e["loc"][0]) if e["loc"] else "", "")
        parts.append(f"Invalid {where + ' ' if where else ''}parameter '{field}': {e['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_seconds: int

    def __str__(self) -> str:
        return f"{self.requests}/{self.per_seconds}s"


def parse_rate_limits(text: str) -> tuple[RateLimit, ...]:
    """`"100/900,1000/86400"` -> limits; an empty string means no limit."""
    limits = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        requests, _, seconds = part.partition("/")
        limit = RateLimit(int(requests), int(seconds))
        if limit.requests < 1 or limit.per_seconds < 1:
            raise ValueError(f"rate limit {part!r}: both numbers must be positive")
        limits.append(limit)
    return tuple(limits)
