"""What the outgoing webhooks' API takes and answers (api/webhook_endpoints.py), and the events
it sends: each type's body, for the OpenAPI document's `webhooks`."""

from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, create_model

from wearsync.db.events import EVENT_TYPES
from wearsync.models import ProviderName

EventType = Literal[
    "sync.succeeded", "sync.partial", "sync.failed", "data.created", "data.updated", "data.deleted",
    "connection.created", "connection.deactivated", "backfill.completed", "endpoint.disabled", "endpoint.test",
]  # fmt: skip
assert get_args(EventType) == EVENT_TYPES
EventId = Annotated[str, Field(pattern=r"^evt_[0-9a-f]{32}$", description="An event's id (its `webhook-id`)")]
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
Url = Annotated[
    str,
    Field(
        max_length=2048,
        pattern=r"^https?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:" + _PORT + r")?(/[!-~]*)?$",
        description="http(s)://host[:port][/path] (a host name or IPv4 address; none private or loopback)",
    ),
]
EventTypes = Annotated[
    list[EventType], Field(min_length=1, description="The event types it takes; absent or null: all of them")
]
_FORBID = ConfigDict(extra="forbid")


# ---- requests -------------------------------------------------------------------------------


class EndpointIn(BaseModel):
    model_config = _FORBID
    url: Url
    event_types: EventTypes | None = None
    description: str = Field("", max_length=500)


class EndpointPatch(BaseModel):
    """The fields to change; `enabled: true` turns on an endpoint disabled for its failures."""

    model_config = _FORBID
    url: Url | None = None
    event_types: EventTypes | None = None
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = None


class EndpointPath(BaseModel):
    endpoint_id: UUID


class RotateIn(BaseModel):
    model_config = _FORBID
    overlap_s: int | None = Field(
        None, ge=0, le=7 * 86400, description="How long the old secret still signs (default: a day)"
    )


class ReplayOne(BaseModel):
    """One event, whatever its type."""

    model_config = _FORBID
    event_id: EventId


class ReplayRange(BaseModel):
    """The events of a time range (`until`: none, up to now) of the types the endpoint takes."""

    model_config = _FORBID
    since: AwareDatetime
    until: AwareDatetime | None = None


class ReplayIn(RootModel[ReplayOne | ReplayRange]):
    """What to deliver again, each with a fresh retry period."""


class EventPath(BaseModel):
    event_id: EventId


# ---- responses ------------------------------------------------------------------------------


class Endpoint(BaseModel):
    id: UUID
    url: str
    event_types: list[EventType] | None
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="Its first failed attempt since its last success")
    last_success_at: datetime | None
    previous_secret_until: datetime | None = Field(description="Until when the secret it replaced still signs")
    created_at: datetime
    updated_at: datetime


class EndpointCreated(Endpoint):
    secret: str = Field(description="whsec_...: verifies the signatures; shown only now")


class SecretRotated(Endpoint):
    secret: str = Field(description="The new secret; the old one signs too until previous_secret_until")


class TestSent(BaseModel):
    event_id: str = Field(description="The endpoint.test event sent to this endpoint")


class Replayed(BaseModel):
    replayed: int = Field(description="Deliveries made due (at most 10000 per call: replay the rest after)")


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The answer's status; null: none came (see error)")
    latency_ms: float
    response: str | None = Field(description="The answer's first 1024 bytes")
    error: str | None


class DeliveryOut(BaseModel):
    endpoint_id: UUID
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    finished_at: datetime | None


class EventDeliveries(BaseModel):
    event_id: str
    type: EventType
    created_at: datetime
    deliveries: list[DeliveryOut]


# ---- the events sent: {"type", "timestamp", "data"}; data.user_id is the user's id --------------


class _Data(BaseModel):
    user_id: UUID | None = Field(description="The user's id as the API shows it (null: about no user)")


class TypeOutcome(BaseModel):
    status: str
    records: dict[str, int]
    error: str | None


class SyncData(_Data):
    task_id: UUID
    provider: ProviderName
    status: Literal["succeeded", "partial", "failed"]
    error: str | None
    counts: dict[str, int] = Field(description="Records stored, per kind (workouts, sleep, recovery, ...)")
    data_types: dict[str, TypeOutcome]


class RecordRef(BaseModel):
    id: int = Field(description="The row's id in the data lists")
    provider_record_id: str


class SampleRange(BaseModel):
    sample_type: str
    start: datetime
    end: datetime
    count: int


class DataData(_Data):
    provider: ProviderName
    kind: Literal["workouts", "sleep", "recovery", "daily_activity", "samples"]
    task_id: UUID | None = Field(description="The sync that wrote them; null: a provider's webhook")
    records: list[RecordRef] | None = Field(None, description="The records (all kinds but samples)")
    ranges: list[SampleRange] | None = Field(None, description="Samples: per type, the range written")


class ConnectionData(_Data):
    provider: ProviderName
    provider_user_id: str | None = None
    scopes: list[str] | None = None
    reason: str | None = Field(None, description="connection.deactivated: why (refresh refused, deregistered, ...)")


class BackfillData(_Data):
    task_id: UUID
    provider: Literal["garmin"]
    status: Literal["succeeded", "partial", "failed"]
    error: str | None
    windows_requested: int
    windows_delivered: int


class EndpointData(_Data):
    endpoint_id: UUID
    url: str
    reason: str | None = None
    failing_since: datetime | None = None


EVENT_DATA: dict[str, tuple[type[_Data], str]] = {
    **{t: (SyncData, f"A sync task ended ({t.removeprefix('sync.')})") for t in ("sync.succeeded", "sync.partial",
                                                                                  "sync.failed")},
    "data.created": (DataData, "Records stored for the first time, per kind, one event per page"),
    "data.updated": (DataData, "Stored records that changed upstream, per kind, one event per page"),
    "data.deleted": (DataData, "Records deleted upstream, and here"),
    "connection.created": (ConnectionData, "A user connected a provider (or connected it again)"),
    "connection.deactivated": (ConnectionData, "A connection stopped working, and why"),
    "backfill.completed": (BackfillData, "A Garmin sync's backfill ended: its windows delivered or waited out"),
    "endpoint.disabled": (EndpointData, "One of your endpoints failed throughout its deliveries' retries"),
    "endpoint.test": (EndpointData, "Sent by POST /webhook-endpoints/{id}/test"),
}  # fmt: skip
assert set(EVENT_DATA) == set(EVENT_TYPES)


def event_model(event_type: str) -> type[BaseModel]:
    """The body of an event of this type, as pydantic describes it."""
    data, summary = EVENT_DATA[event_type]
    name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Event"
    kind: Any = Literal[event_type]
    return create_model(name, __doc__=summary, type=(kind, ...), timestamp=(datetime, ...), data=(data, ...))
