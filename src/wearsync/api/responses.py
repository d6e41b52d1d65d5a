"""Response models: the JSON each view returns, for the OpenAPI document (api/openapi.py).

Views build their JSON themselves (the contract fixes its exact form); these models describe it,
and tests/test_api_fuzz.py checks every response of the running API against them. A field that
is always present has no default; clients may meet fields added later."""

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from wearsync.api.models import DataSource, KnownProvider, SampleType
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


TaskType = DataType | Literal["import"]  # `import`: an import's one step


class TypeProgress(BaseModel):
    status: Literal["queued", "running", "waiting", "awaiting_delivery", "succeeded", "failed"] = Field(
        description="awaiting_delivery: asked for, the data comes later by webhook (Garmin)"
    )
    pages: int = Field(description="upstream pages stored so far (an import: batches written)")
    pages_total: int | None = Field(description="pages this sync will fetch, when the provider says")
    records: dict[str, int] = Field(description="rows stored, by kind (workouts, sleep, ...)")
    error: str | None
    resumes_at: datetime | None = Field(
        None, description="while `waiting` for a rate limit: when the sync goes on (the task stays running)"
    )
    bytes_read: int | None = Field(None, description="an import: bytes of export.xml read so far (uncompressed)")
    bytes_total: int | None = Field(None, description="an import: bytes of export.xml in all")
    skipped: dict[str, int] | None = Field(None, description="an import: records of types not imported, by type")


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
    delivered: int = Field(description="windows something has been delivered into")
    awaiting: int = Field(description="windows the running task still waits for (0 once it has ended)")
    deliveries_due_at: datetime | None = Field(
        description="while the task waits: when it stops waiting and ends partial, naming what never came"
    )
    windows: list[BackfillWindow]


class Task(BaseModel):
    task_id: UUID
    user_id: UUID
    provider: DataSource
    mode: Literal["async", "sync", "scheduled"]
    data_types: list[TaskType]
    params: dict[str, Any] = Field(description="the sync parameters the provider reads")
    status: TaskStatus
    progress: dict[TaskType, TypeProgress]
    result: dict[TaskType, bool] | None = Field(description="per data type, once the task is final")
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    duration_s: float | None
    backfill: Backfill | None = Field(None, description="Garmin tasks only")


class User(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c2a4e-8d3b-4f7a-9c1e-2b5d8e0f4a17",
                    "external_id": "customer-42",
                    "created_at": "2026-01-05T09:30:00+00:00",
                }
            ]
        }
    )

    id: UUID
    external_id: str | None
    created_at: datetime


class UserPage(BaseModel):
    data: list[User] = Field(description="oldest first")
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; null on the last page")


class TaskPage(BaseModel):
    data: list[Task] = Field(description="newest first (a Garmin task's `backfill`: at /api/v1/tasks/{task_id})")
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; null on the last page")


class Connection(BaseModel):
    """A user's connection to a provider. Its tokens never leave the service."""

    user_id: UUID
    provider: DataSource
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

    provider: DataSource
    user_id: UUID
    authorization_url: str = Field(description="the provider's authorization page, with our client id, scopes, state")
    state: str = Field(description="single use; bound to the user and your application")
    expires_at: datetime = Field(description="the user must come back from the provider by then")


class Disconnected(BaseModel):
    user_id: UUID
    provider: DataSource
    active: Literal[False]
    upstream_revoked: bool = Field(description="the provider withdrew our access to the account")
    upstream_error: str | None = Field(description="why not, when it did not (the connection is inactive all the same)")
    revocation: Literal["revoked", "retrying", "failed", "not_offered", "shared"] = Field(
        description="`retrying`: the provider could not be told now (down, slow, rate limiting); workers try "
        "again for hours (WEARSYNC_REVOKE_MAX_TRIES), keeping the tokens that needs (encrypted) until then; "
        "`failed`: the provider refused for good; `not_offered`: it has no way to revoke; `shared`: not asked, as"
        " another application's connection uses the account (our grant upstream is one for all)"
    )


class Revocation(BaseModel):
    provider: DataSource
    upstream_revoked: bool = Field(description="the provider withdrew our access to the account")
    upstream_error: str | None = Field(description="why not, when it did not")
    revocation: Literal["revoked", "retrying", "failed", "not_offered", "shared"] = Field(
        description="`retrying`: the provider could not be told now (down, slow, rate limiting); workers try "
        "again for hours (WEARSYNC_REVOKE_MAX_TRIES), keeping the tokens that needs (encrypted) until then; "
        "`failed`: the provider refused for good; `not_offered`: it has no way to revoke; `shared`: not asked, as"
        " another application's connection uses the account (our grant upstream is one for all)"
    )


class DeletedRows(BaseModel):
    workouts: int
    sleep: int
    recovery: int
    daily: int
    samples: int


class UserDeleted(BaseModel):
    user_id: UUID
    deleted: DeletedRows = Field(description="data rows deleted, by kind")
    connections: list[Revocation] = Field(description="the user's active connections, each revoked upstream first")


# ---- the read API: one shape per kind of data ------------------------------------------------
# Units: seconds, metres, kcal, bpm, m/s, watts, percent. Instants are UTC; utc_offset_minutes is
# the user's offset from UTC at the time, when the provider says. A value the provider did not
# give is null.


class StoredRecord(BaseModel):
    id: int = Field(description="wearsync's id of the row; ties in time are ordered by it")
    provider: DataSource
    provider_record_id: str = Field(description="the provider's id of the record (unique per user and provider)")
    created_at: datetime = Field(description="when wearsync first stored the record")
    updated_at: datetime = Field(description="when wearsync last stored a change of it upstream")
    raw: dict[str, Any] | None = Field(None, description="the provider's JSON of it, only with `include_raw=true`")


class WorkoutRecord(StoredRecord):
    """A workout (Strava activity, Polar exercise, ...); listed by `start_time`."""

    sport: str = Field(description="normalized sport: running, cycling, swimming, ..., other")
    provider_sport: str | None = Field(description="the provider's own name or code of the sport")
    name: str | None
    start_time: datetime
    end_time: datetime
    utc_offset_minutes: int | None
    duration_s: float | None
    distance_m: float | None
    energy_kcal: float | None
    steps: int | None
    avg_hr: float | None
    max_hr: float | None
    min_hr: float | None
    avg_speed_mps: float | None
    max_speed_mps: float | None
    ascent_m: float | None
    descent_m: float | None
    max_altitude_m: float | None
    min_altitude_m: float | None
    avg_power_w: float | None
    max_power_w: float | None
    avg_cadence: float | None = Field(description="revolutions or steps per minute, as the provider counts")
    max_cadence: float | None
    device_name: str | None


class SleepRecord(StoredRecord):
    """A sleep period (a night or a nap); listed by `start_time`."""

    start_time: datetime
    end_time: datetime
    utc_offset_minutes: int | None
    is_nap: bool
    duration_s: float | None
    deep_s: float | None
    light_s: float | None
    rem_s: float | None
    awake_s: float | None
    score: float | None = Field(description="the provider's sleep score, 0-100")
    avg_hr: float | None
    min_hr: float | None
    avg_hrv_ms: float | None
    respiratory_rate: float | None = Field(description="breaths per minute")
    spo2_percent: float | None


class RecoveryRecord(StoredRecord):
    """A recovery or readiness measurement; listed by `recorded_at`."""

    recorded_at: datetime
    utc_offset_minutes: int | None
    score: float | None = Field(description="0-100")
    resting_hr: float | None
    hrv_rmssd_ms: float | None
    spo2_percent: float | None
    skin_temp_c: float | None
    stress_state: str | None


class DailyRecord(StoredRecord):
    """One day's activity totals; listed by `day` (`start`/`end` select the days whose midnight,
    UTC, is in [start, end))."""

    day: date
    steps: int | None
    energy_kcal: float | None = Field(description="total: active and resting")
    active_energy_kcal: float | None
    distance_m: float | None


class SampleRecord(BaseModel):
    """One point of a time series; listed by `recorded_at`, then provider."""

    provider: DataSource
    type: SampleType
    recorded_at: datetime
    value: float = Field(
        description="heart_rate and resting_heart_rate bpm, steps count, energy kcal, spo2 percent, hrv_rmssd and"
        " hrv_sdnn ms"
    )
    raw: dict[str, Any] | None = Field(None, description="the JSON it came from, only with `include_raw=true`")


Item = TypeVar("Item", bound=BaseModel)


class Page(BaseModel, Generic[Item]):
    data: list[Item] = Field(description="oldest first; with `order=changes`, in the order they were stored or changed")
    next_cursor: str | None = Field(
        description="pass it as `cursor` for the next page; null on the last page. With `order=changes` never"
        " null: the position in the change feed, to poll with (with `order=changes` again) for what changes next"
    )


class WorkoutPage(Page[WorkoutRecord]):
    pass


class SleepPage(Page[SleepRecord]):
    pass


class RecoveryPage(Page[RecoveryRecord]):
    pass


class DailyPage(Page[DailyRecord]):
    pass


class SamplePage(Page[SampleRecord]):
    pass


# ---- the dashboard and the hosted connect page ------------------------------------------------


class ConnectLink(BaseModel):
    user_id: UUID
    url: str = Field(description="the page to send the user to: {WEARSYNC_PUBLIC_URL}/connect/{user_id}?token=...")
    expires_at: datetime


class ConnectionHealth(BaseModel):
    """A connection without its tokens, with what its syncs say about it."""

    provider: KnownProvider
    provider_user_id: str
    active: bool
    inactive_reason: str | None = Field(description="why it stopped: the user must connect again")
    expires_at: datetime | None = Field(description="when the access token expires (it is refreshed when needed)")
    scopes: list[str]
    created_at: datetime
    last_sync_at: datetime | None = Field(description="when its last sync that succeeded (fully or partly) ended")
    last_sync_status: Literal["succeeded", "partial"] | None
    last_error_at: datetime | None = Field(description="when its last failed or partial sync ended")
    last_error: str | None
    open_task_id: UUID | None = Field(description="its latest queued or running task")
    open_task_status: Literal["queued", "running"] | None
    waiting_until: datetime | None = Field(description="while that task waits for a rate limit: when it goes on")


class DashboardUser(BaseModel):
    id: UUID
    external_id: str | None
    created_at: datetime
    connections: list[ConnectionHealth]


class DashboardUsers(BaseModel):
    total: int = Field(description="the application's users")
    data: list[DashboardUser]


class DashboardTask(BaseModel):
    task_id: UUID
    user_id: UUID
    provider: DataSource
    status: TaskStatus
    data_types: list[DataType]
    progress: dict[DataType, TypeProgress]
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DashboardTasks(BaseModel):
    data: list[DashboardTask]


class DashboardWebhookEvent(BaseModel):
    id: int
    provider: KnownProvider
    kind: str = Field(examples=["activities.push", "workout.created"])
    provider_user_id: str
    user_id: UUID
    status: Literal["pending", "processed", "ignored", "failed"]
    detail: str | None = Field(description="why it was ignored or failed")
    attempts: int
    received_at: datetime
    processed_at: datetime | None


class DashboardWebhookEvents(BaseModel):
    data: list[DashboardWebhookEvent]


# ---- the live stream ------------------------------------------------------------------------


class StreamedEvent(BaseModel):
    """An event as a stream message's `data` carries it: the body a webhook carries (the Standard
    Webhooks layout), plus the event's id."""

    id: str = Field(description="the event's id, a webhook's `webhook-id`: deduplicate by it")
    type: str = Field(description="e.g. `sync.succeeded`, `data.created`, `connection.deactivated`")
    timestamp: datetime = Field(description="when the event was written, with the change it reports")
    data: dict[str, Any] = Field(description="`user_id`, the user's id (null for none), and what the type tells")


class StreamMessage(BaseModel):
    """One server-sent event of `GET /api/v1/events/stream`: an event, or (with neither `event`
    nor `data`) only the position the stream starts from."""

    id: str = Field(description="the position in the event log (`<tx>-<id>`): send it back as `Last-Event-ID`")
    event: str | None = Field(None, description="the event's type")
    data: Annotated[
        str | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": StreamedEvent.model_json_schema(),
                    },
                    {"type": "null"},
                ]
            }
        ),
    ] = None
    retry: int | None = Field(None, description="how long a client waits before it reconnects, in ms")


class DashboardDelivery(BaseModel):
    """One of the application's events, sent (or being sent) to one of its webhook endpoints."""

    event_id: str = Field(examples=["evt_5f0c..."])
    type: str = Field(examples=["sync.succeeded"])
    created_at: datetime
    endpoint_id: UUID
    url: str
    status: Literal["pending", "succeeded", "failed"] = Field(description="failed: given up")
    attempts: int
    due_at: datetime = Field(description="while pending: when it is tried (again)")
    finished_at: datetime | None
    last_attempt_at: datetime | None
    status_code: int | None = Field(description="the last attempt's answer; null: none came (see error)")
    error: str | None


class DashboardDeliveries(BaseModel):
    data: list[DashboardDelivery]


# ---- applications and API keys ----------------------------------------------------------------


class Application(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6e8d3c-5f1a-4c2e-9d7b-3a8f6e1c2d40",
                    "name": "acme-fitness",
                    "created_at": "2026-01-05T09:00:00+00:00",
                }
            ]
        }
    )

    id: UUID
    name: str
    created_at: datetime


class ApiKey(BaseModel):
    prefix: str = Field(description="the key's first 10 characters: it names the key (the key itself is not kept)")
    name: str
    operator: bool = Field(description="may manage applications and keys")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "ws_3q2-Vb0l...",
                    "prefix": "ws_3q2-Vb0",
                    "name": "backend",
                    "operator": False,
                    "created_at": "2026-01-05T09:00:00+00:00",
                    "last_used_at": None,
                    "revoked_at": None,
                }
            ]
        }
    )

    key: str = Field(description="the key, shown this once: send it as X-API-Key")


class KeyRevoked(BaseModel):
    prefix: str
    revoked: bool


class ApplicationSettings(BaseModel):
    redirect_allowlist: list[str] | None = Field(description="null: WEARSYNC_OAUTH_REDIRECT_ALLOWLIST applies")
    providers: list[str] | None = Field(description="null: every configured provider")
