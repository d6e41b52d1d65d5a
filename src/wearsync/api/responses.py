"""Response models: the JSON each view returns, for the OpenAPI document (api/openapi.py).

Views build their JSON themselves (the contract fixes its exact form); these models describe it,
and tests/test_api_fuzz.py checks every response of the running API against them. A field that
is always present has no default; clients may meet fields added later."""

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from wearsync.api.models import ProviderName
from wearsync.models import DataType, TaskStatus


class Error(BaseModel):
    """Every error: a status from 400 to 599 and one sentence saying what was wrong."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    postgres: str = Field(description="`ok`, or `unavailable: <error>` (then the status is 503)")
    redis: str


class SyncQueued(BaseModel):
    """Async mode (the default): the task is queued; read its progress at `/api/v1/tasks/{task_id}`."""

    success: Literal[True]
    async_: Literal[True] = Field(alias="async")
    task_id: UUID
    message: str = Field(examples=["Sync task queued for garmin. Check task status for results."])


class SyncResult(BaseModel):
    """Sync mode (`async=false`): the sync ran inside the request; 200 even when a type failed."""

    success: bool = Field(description="every requested data type synced")
    details: dict[DataType, bool] = Field(description="one entry per requested type the provider supports")
    task_id: UUID


class TypeProgress(BaseModel):
    status: Literal["queued", "running", "waiting", "succeeded", "failed"]
    pages: int = Field(description="upstream pages stored so far")
    pages_total: int | None = Field(description="pages this sync will fetch, when the provider says")
    records: dict[str, int] = Field(description="rows stored, by kind (workouts, sleep, ...)")
    error: str | None


class BackfillWindow(BaseModel):
    type: str = Field(description="Garmin summary type")
    start: int = Field(description="Unix seconds")
    end: int = Field(description="Unix seconds")
    status: Literal["accepted", "duplicate"]
    delivered_records: int
    last_delivery_at: datetime | None


class Backfill(BaseModel):
    """Garmin sends a sync's data later by webhook: what was asked for and what has come."""

    requested: int
    delivered: int
    windows: list[BackfillWindow]


class Task(BaseModel):
    task_id: UUID
    user_id: UUID
    provider: ProviderName
    mode: Literal["async", "sync", "scheduled"]
    data_types: list[DataType]
    params: dict[str, Any] = Field(description="the sync parameters the provider reads")
    status: TaskStatus
    progress: dict[DataType, TypeProgress]
    result: dict[DataType, bool] | None = Field(description="per data type, once the task is final")
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    duration_s: float | None
    backfill: Backfill | None = Field(None, description="Garmin tasks only")


class User(BaseModel):
    id: UUID
    external_id: str | None
    created_at: datetime


class Connection(BaseModel):
    """A user's connection to a provider. Its tokens never leave the service."""

    user_id: UUID
    provider: ProviderName
    provider_user_id: str
    expires_at: datetime | None
    scopes: list[str]
    active: bool
    inactive_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookReceipt(BaseModel):
    received: int = Field(description="events in the delivery")
    new: int = Field(description="events not seen before, each queued for the worker")


class StravaChallenge(BaseModel):
    hub_challenge: str = Field(alias="hub.challenge")


class AuthorizationStarted(BaseModel):
    """Send the user's browser to `authorization_url`; the provider sends it back to wearsync, which
    sends it on to your `redirect_uri` with the outcome."""

    provider: ProviderName
    user_id: UUID
    authorization_url: str = Field(description="the provider's authorization page, with our client id, scopes, state")
    state: str = Field(description="single use; bound to the user and your application")
    expires_at: datetime = Field(description="the user must come back from the provider by then")


class Disconnected(BaseModel):
    user_id: UUID
    provider: ProviderName
    active: Literal[False]
    upstream_revoked: bool = Field(description="the provider withdrew our access to the account")
    upstream_error: str | None = Field(description="why not, when it did not (the connection is inactive all the same)")
