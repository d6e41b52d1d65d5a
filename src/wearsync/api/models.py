"""Request models: every query, path and body the API accepts is validated by one of these."""

import re
from datetime import UTC
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wearsync.connect_links import DEFAULT_TTL_S, MAX_TTL_S
from wearsync.db.events import EVENT_TYPES
from wearsync.models import (
    PageOffset,
    PageSize,
    ProviderName,
    Requested,
    SyncParams,
    TaskStatus,
    UnixSeconds,
    check_range,
    unix_or_iso,
)
from wearsync.providers import PROVIDERS
from wearsync.redirects import parse_allowlist
from wearsync.settings import DATA_SOURCES, IMPORT_SOURCES


def _one_of(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names[:-1]) + f" or '{names[-1]}'"


def _registered(name: Any) -> Any:
    if name not in PROVIDERS:
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": _one_of(list(PROVIDERS))})
    return name


def _source(name: Any) -> Any:
    if name not in PROVIDERS and name not in IMPORT_SOURCES:
        expected = _one_of([*PROVIDERS, *IMPORT_SOURCES])
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


# A provider's name: one of the registry (wearsync.providers.PROVIDERS, which holds ProviderName's).
KnownProvider = Annotated[
    str, AfterValidator(_registered), WithJsonSchema({"type": "string", "enum": [p.value for p in ProviderName]})
]
# The `provider` of stored rows: a provider, or a kind of file users import.
DataSource = Annotated[str, AfterValidator(_source), WithJsonSchema({"type": "string", "enum": list(DATA_SOURCES)})]

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def _query_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("must be true, false, 1 or 0")


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
# Documented as what clients send: Unix seconds, or an ISO 8601 date or date-time of a year
# Unix seconds from 0 reach (1970 to 9999).
_YEARS = r"^(19[7-9][0-9]|[2-9][0-9]{3})-"
_IsoDate = Annotated[str, WithJsonSchema({"type": "string", "format": "date", "pattern": _YEARS})]
_IsoDateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time", "pattern": _YEARS})]
UnixTime = Annotated[
    UnixSeconds | None,
    BeforeValidator(unix_or_iso, json_schema_input_type=UnixSeconds | _IsoDate | _IsoDateTime | None),
]


class SyncRequest(BaseModel):
    """Path and query of `POST /api/v1/{provider}/users/{user_id}/sync`, as the contract says."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    provider: KnownProvider
    user_id: UUID
    data_type: Requested = Field(
        "all", description="`workouts`, `247` (sleep, recovery, activity samples) or `all` the provider supports"
    )
    run_async: QueryBool = Field(
        True, alias="async", description="`false`: the sync runs inside the request, which answers per-type results"
    )
    # Absent: continue from where the last sync got to (all data on a first sync); 0: all data.
    since: UnixSeconds | None = Field(
        None, description="Suunto: Unix seconds to sync from; 0: all; absent: since the last sync"
    )
    limit: PageSize = Field(50, description="Suunto: items per upstream request")
    offset: PageOffset = Field(0, description="Suunto: pagination offset")
    filter_by_modification_time: QueryBool = Field(True, description="Suunto: by modification time, not creation")
    samples: QueryBool = Field(False, description="Polar: include samples (heart rate, speed, ...)")
    zones: QueryBool = Field(False, description="Polar: include heart-rate zones")
    route: QueryBool = Field(False, description="Polar: include the GPS route")
    summary_start_time: UnixTime = Field(None, description="Garmin: start of the range (Unix seconds or ISO 8601)")
    summary_end_time: UnixTime = Field(None, description="Garmin: end of the range (Unix seconds or ISO 8601)")

    @model_validator(mode="after")
    def _start_before_end(self) -> "SyncRequest":
        check_range(self.summary_start_time, self.summary_end_time)
        return self

    def params(self) -> SyncParams:
        """The sync's parameters, as the domain takes them."""
        return SyncParams.model_validate(self.model_dump(include=set(SyncParams.model_fields)))


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")  # PostgreSQL text cannot hold them
    return value


# The pattern says it in the OpenAPI document (so schema-driven clients and fuzzers know it).
Text = Annotated[str, Field(pattern=r"^[^\x00]*$"), BeforeValidator(_no_nul)]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UUID | None = None
    external_id: Text | None = Field(None, min_length=1, max_length=255)


# What an OAuth token is made of (RFC 6750's b64token is a subset): visible ASCII, which an HTTP
# header can carry; anything else could never be sent to the provider.
Token = Annotated[str, Field(pattern=r"^[\x21-\x7e]+$")]


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: Token = Field(min_length=1, max_length=8192)
    refresh_token: Token | None = Field(None, max_length=8192)
    expires_at: AwareDatetime | None = None
    provider_user_id: Text | None = Field(
        None, min_length=1, max_length=255,
        description="the provider's id of the account, if you know it: the provider is asked whose the tokens"
        " are in any case, and a different answer is refused (422); Polar needs it (x_user_id)",
    )  # fmt: skip
    scopes: list[Annotated[Text, Field(max_length=255)]] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _expires_in_range(self) -> "ConnectionIn":
        """Stored in UTC: 9999-12-31T23:00-05:00 is a moment of year 10000 there, which no
        datetime holds."""
        if self.expires_at is not None:
            try:
                self.expires_at.astimezone(UTC)
            except OverflowError:
                raise ValueError("expires_at must be within the years 1 to 9999 in UTC") from None
        return self


class UserPath(BaseModel):
    user_id: UUID


class ConnectionPath(BaseModel):
    user_id: UUID
    provider: KnownProvider


_MOVE = (
    "the upstream account is connected to another user of this application: true moves it to this user"
    " (that connection is deactivated, its data stays), false (the default) refuses with 409"
)


class ConnectionPut(ConnectionPath):
    """`PUT /api/v1/users/{user_id}/connections/{provider}?move=`."""

    move: bool = Field(False, description=_MOVE)


class TaskPath(BaseModel):
    task_id: UUID


# Documented, not validated, by these: the webhook receivers check what their provider sends.
class WebhookPath(BaseModel):
    provider: KnownProvider = Field(description="answered with 404 for any other, and for garmin and strava")


class UnsignedWebhookPath(BaseModel):
    """The webhook of a provider that signs nothing: the secret in its URL is the check."""

    provider: Literal["garmin", "strava"] = Field(description="answered with 404 for any other")
    path_secret: str = Field(description="WEARSYNC_GARMIN_WEBHOOK_PATH_SECRET or WEARSYNC_STRAVA_WEBHOOK_PATH_SECRET")


class StravaChallengeQuery(BaseModel):
    """Strava's subscription validation request."""

    path_secret: str = Field(description="WEARSYNC_STRAVA_WEBHOOK_PATH_SECRET; answered with 404 for any other")
    hub_mode: Literal["subscribe"] = Field(alias="hub.mode")
    hub_challenge: str = Field(alias="hub.challenge")
    hub_verify_token: str = Field(alias="hub.verify_token")


REDIRECT_URI_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x7e]+$"


class AuthorizeQuery(BaseModel):
    """`GET /api/v1/oauth/{provider}/authorize`: whom to connect, and where to send them back."""

    model_config = ConfigDict(extra="ignore")

    provider: KnownProvider
    user_id: UUID
    redirect_uri: str = Field(
        max_length=2048, pattern=REDIRECT_URI_PATTERN,
        description="where the user ends up, with the outcome in the query; an absolute http(s) URL that"
        " WEARSYNC_OAUTH_REDIRECT_ALLOWLIST allows (else 403)",
    )  # fmt: skip
    move: bool = Field(False, description=_MOVE.replace("409", "error=account_in_use"))


_VISIBLE, _PRINTABLE = r"^[\x21-\x7e]+$", r"^[\x20-\x7e]*$"


class CallbackQuery(BaseModel):
    """`GET /api/v1/oauth/{provider}/callback`, as the provider sends the browser back: a code, or
    an error (providers add parameters of their own: ignored, but Strava's accepted `scope`)."""

    model_config = ConfigDict(extra="ignore")

    provider: KnownProvider
    # ASCII, as OAuth 2 has them (RFC 6749 A.5-A.8), and short enough that the whole query stays
    # within the request line aiohttp reads (8190 bytes) even with every character percent-encoded.
    state: str = Field(max_length=256, pattern=_VISIBLE, description="the state the authorization started with")
    code: str | None = Field(None, max_length=1024, pattern=_VISIBLE, description="the authorization code")
    error: str | None = Field(None, max_length=128, pattern=_VISIBLE, description="the provider's error instead")
    error_description: str | None = Field(None, max_length=512, pattern=_PRINTABLE)
    scope: str | None = Field(None, max_length=512, pattern=_PRINTABLE, description="the scopes accepted (Strava)")


# ---- the read API ---------------------------------------------------------------------------

# Units: heart_rate and resting_heart_rate bpm, steps count, energy kcal, spo2 percent, hrv_rmssd and
# hrv_sdnn ms (Apple Health measures SDNN).
SampleType = Literal["heart_rate", "resting_heart_rate", "steps", "energy", "spo2", "hrv_rmssd", "hrv_sdnn"]
PAGE_LIMIT, SAMPLES_PAGE_LIMIT = 100, 1000


class ListQuery(BaseModel):
    """Path and query of a list of a user's data, e.g. `GET /api/v1/users/{user_id}/workouts`."""

    model_config = ConfigDict(extra="forbid")  # a misspelt filter is an error, not all the data

    user_id: UUID
    start: UnixTime = Field(None, description="Rows whose time is at or after this (Unix seconds or ISO 8601)")
    end: UnixTime = Field(None, description="Rows whose time is before this (Unix seconds or ISO 8601)")
    provider: DataSource | None = Field(None, description="One provider's rows only (`apple_health`: imported ones)")
    cursor: str | None = Field(None, max_length=200, description="The previous page's `next_cursor`")
    order: Literal["time", "changes"] = Field(
        "time",
        description="`time`: by the rows' time, oldest first; `changes`: the change feed, rows in the order"
        " they were stored or last changed (committed), its `next_cursor` never null: poll with it for what"
        " changed since",
    )
    limit: int = Field(50, ge=1, le=PAGE_LIMIT, description="Rows per page")
    include_raw: QueryBool = Field(False, description="Add each row's upstream JSON, as the provider sent it")

    @model_validator(mode="after")
    def _start_before_end(self) -> "ListQuery":
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class SamplesQuery(ListQuery):
    type: SampleType = Field(description="The time series to read")
    limit: int = Field(50, ge=1, le=SAMPLES_PAGE_LIMIT, description="Samples per page")


# ---- the dashboard and the hosted connect page ------------------------------------------------


class ConnectLinkIn(BaseModel):
    """`POST /api/v1/users/{user_id}/connect-link`: where the flow ends, and how long the link works."""

    model_config = ConfigDict(extra="forbid")

    redirect_uri: str | None = Field(
        None, max_length=2048, pattern=REDIRECT_URI_PATTERN,
        description="where the user ends up, with the outcome in the query as after `GET /api/v1/oauth/{provider}"
        "/authorize`; WEARSYNC_OAUTH_REDIRECT_ALLOWLIST must allow it (else 403). Absent: wearsync's own result page",
    )  # fmt: skip
    ttl_s: int = Field(DEFAULT_TTL_S, ge=60, le=MAX_TTL_S, description="seconds the link works for")


class ConnectPagePath(BaseModel):
    """A page of the hosted connect flow: the link's user, and its signed token."""

    user_id: UUID
    token: str = Field(description="the token of a link made by `POST /api/v1/users/{user_id}/connect-link`")


class ConnectStartPath(ConnectPagePath):
    provider: KnownProvider


class ConnectResultQuery(BaseModel):
    """Where a flow from a link without a redirect URI ends (the callback's outcome parameters)."""

    status: Literal["connected", "error"]
    provider: KnownProvider
    error: str | None = Field(None, description="the error code, as the OAuth callback names it")


DASHBOARD_LIMIT = 200


class DashboardUsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=DASHBOARD_LIMIT, description="users per page, newest first")
    offset: int = Field(0, ge=0, le=1_000_000, description="users to skip")
    external_id: Text | None = Field(None, min_length=1, max_length=255, description="only the user with this one")


class DashboardTasksQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = Field(None, description="one status only")
    limit: int = Field(50, ge=1, le=DASHBOARD_LIMIT, description="tasks, newest first")


class DashboardListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=DASHBOARD_LIMIT, description="rows, newest first")


# ---- the live stream ------------------------------------------------------------------------


_ONE_TYPE = rf"\s*({'|'.join(re.escape(t) for t in EVENT_TYPES)})\s*"
_EVENT_TYPES_PATTERN = rf"^{_ONE_TYPE}(,{_ONE_TYPE})*$"
_POSITION_PATTERN = r"^(0|[0-9]{1,19}-[0-9]{1,19})$"  # a place in the event log: `<tx>-<id>`, or 0 (its start)


class StreamQuery(BaseModel):
    """`GET /api/v1/events/stream`: which of the application's events, from where."""

    model_config = ConfigDict(extra="forbid")

    user_id: UUID | None = Field(None, description="One user's events only")
    type: str | None = Field(
        None,
        max_length=300,  # the request line stays within aiohttp's 8190 bytes, every character percent-encoded
        description="Event types, comma-separated (e.g. `data.created,data.updated`); absent: all",
        json_schema_extra={"pattern": _EVENT_TYPES_PATTERN},  # documented; the validator names an unknown one
    )
    after: str | None = Field(
        None,
        pattern=_POSITION_PATTERN,
        description="Start after this position (an event's SSE `id`); `0`: from the start of the log; absent:"
        " from now. The `Last-Event-ID` header, which reconnecting clients send, wins over it",
    )
    follow: QueryBool = Field(True, description="`false`: end the stream once it has sent every event settled now")

    @field_validator("type")
    @classmethod
    def _known_types(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = sorted({t.strip() for t in value.split(",")} - set(EVENT_TYPES))
            if unknown:
                raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")
        return value

    def types(self) -> list[str] | None:
        return None if self.type is None else sorted({t.strip() for t in self.type.split(",")})


# ---- users and their tasks ------------------------------------------------------------------


class UsersQuery(BaseModel):
    """`GET /api/v1/users`: the application's users, a page at a time."""

    model_config = ConfigDict(extra="forbid")

    external_id: Text | None = Field(
        None, min_length=1, max_length=255, description="Only the user with this external id (none: an empty page)"
    )
    cursor: str | None = Field(None, max_length=200, description="The previous page's `next_cursor`")
    limit: int = Field(50, ge=1, le=PAGE_LIMIT, description="Users per page, oldest first")


class UserPatch(BaseModel):
    """`PATCH /api/v1/users/{user_id}`: what changes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"external_id": "customer-42"}]})

    external_id: Text | None = Field(
        min_length=1, max_length=255, description="your id of the user, unique in the application; null clears it"
    )


class UserTasksQuery(BaseModel):
    """`GET /api/v1/users/{user_id}/tasks`: a user's tasks, newest first, a page at a time."""

    model_config = ConfigDict(extra="forbid")

    user_id: UUID
    status: TaskStatus | None = Field(None, description="One status only")
    provider: DataSource | None = Field(None, description="One provider's tasks only (`apple_health`: imports)")
    cursor: str | None = Field(None, max_length=200, description="The previous page's `next_cursor`")
    limit: int = Field(50, ge=1, le=PAGE_LIMIT, description="Tasks per page, newest first")


# ---- applications and API keys (operator keys only) ------------------------------------------


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "acme-fitness"}]})

    name: Text = Field(min_length=1, max_length=255, description="unique among applications")


class ApplicationPath(BaseModel):
    application_id: UUID


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "backend", "operator": False}]})

    name: Text = Field(min_length=1, max_length=255, description="what the key is for")
    operator: bool = Field(False, description="true: the key may manage applications and keys too")


class KeyPath(ApplicationPath):
    prefix: str = Field(max_length=64, description="the key's first 10 characters, as listed")


def _allowlist_entry(entry: str) -> str:
    parse_allowlist(entry)  # ValueError naming what is wrong
    if "," in entry:
        raise ValueError("one URL per entry")
    return entry


class SettingsPatch(BaseModel):
    """`PATCH /api/v1/applications/{application_id}/settings`: only the fields sent change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"redirect_allowlist": ["https://app.example.com/connected"], "providers": ["garmin", "polar"]}
            ]
        },
    )

    redirect_allowlist: (
        list[Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_allowlist_entry)]] | None
    ) = Field(
        None,
        max_length=100,
        description="where its OAuth flows may send users back, as WEARSYNC_OAUTH_REDIRECT_ALLOWLIST entries;"
        " null: that setting",
    )
    providers: list[KnownProvider] | None = Field(
        None, max_length=20, description="the providers its users may connect and sync; null: every configured one"
    )
