"""Domain types shared by the API, the worker and the provider clients."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


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


class SyncParams(BaseModel):
    """The parameters a sync runs with, stored on its task as JSON so that an async job and a
    sync call do exactly the same thing. Times are Unix seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Suunto. None (not given): continue from the connection's cursor; 0: all available data.
    since: int | None = None
    limit: int = 50
    offset: int = 0
    filter_by_modification_time: bool = True
    # Polar
    samples: bool = False
    zones: bool = False
    route: bool = False
    # Garmin
    summary_start_time: int | None = None
    summary_end_time: int | None = None


# Which of SyncParams' fields a provider reads; the task records only these.
PROVIDER_PARAMS: dict[str, tuple[str, ...]] = {
    "garmin": ("summary_start_time", "summary_end_time"),
    "strava": (),
    "polar": ("samples", "zones", "route"),
    "suunto": ("since", "limit", "offset", "filter_by_modification_time"),
    "whoop": (),
}


def params_for(provider: str, params: SyncParams) -> dict[str, Any]:
    return params.model_dump(include=set(PROVIDER_PARAMS[provider]))
