"""What every provider client shares: its description as data and the context a sync runs in."""

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol
from uuid import UUID

import asyncpg
import structlog
from pydantic import Field
from typing_extensions import TypeVar

from wearsync.crypto import TokenCipher
from wearsync.models import DataType, SyncParams
from wearsync.providers.errors import (
    JobSliceDone,
    ListShifted,
    MalformedPayload,
    TooManyItems,
    UpstreamAuthError,
    UpstreamError,
)
from wearsync.providers.http import Bucket, HttpClient, Params
from wearsync.providers.tokens import TokenSet
from wearsync.records import Record
from wearsync.settings import WEBHOOK_PATH_SECRET, ProviderSettings, Settings
from wearsync.storable import MAX_KEY_CHARS, check_storable, check_text, json_text

log = structlog.get_logger(__name__)

# How often a list that moved while it was paged is listed again before its data type fails.
RELISTS = 2


class UnsignedWebhookSettings(ProviderSettings):
    """The settings of a provider that signs no webhook (Garmin, Strava): its deliveries are taken
    only at a URL whose last segment is our secret, WEARSYNC_<P>_WEBHOOK_PATH_SECRET, a random
    string of yours (16 or more URL-safe characters) in the URL registered at the provider; unset,
    its webhook answers 404 to every delivery."""

    webhook_path_secret: str = Field("", pattern=WEBHOOK_PATH_SECRET)

    def path_secret(self) -> str:
        return self.webhook_path_secret


# The shape a call expects its body to be: (dict or list, what it is called in the error).
Shape = tuple[type[dict[str, Any]] | type[list[Any]], str]

# A provider's settings class (its module's subclass of ProviderSettings).
C = TypeVar("C", bound=ProviderSettings, default=ProviderSettings)


@dataclass(frozen=True)
class Connection:
    user_id: UUID
    provider: str
    provider_user_id: str
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: list[str]
    application_id: UUID | None = None  # whose share of the provider's rate limit its calls take

    @classmethod
    def from_row(cls, row: asyncpg.Record, cipher: TokenCipher) -> "Connection":
        """The connection as stored, its tokens decrypted."""
        fields = {f: row[f] for f in cls.__dataclass_fields__}
        fields["access_token"] = cipher.open(row["access_token"])
        fields["refresh_token"] = cipher.open(row["refresh_token"])
        return cls(**fields)


@dataclass
class PageBudget:
    """The pages one job may store (None: no limit), shared by its task's data types; none more
    once `stopping` (its worker was told to stop: the page in hand is stored, the rest of the task
    goes on in a new job)."""

    pages: int | None
    stored: int = 0
    stopping: Callable[[], bool] = lambda: False

    def left(self) -> int | None:
        if self.stopping():
            return 0
        return None if self.pages is None else self.pages - self.stored

    def spend(self) -> None:
        self.stored += 1
        self.check()

    def check(self) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise JobSliceDone(self.stored, stopping=self.stopping())


class Tokens(Protocol):
    """A connection's tokens during one task (wearsync.credentials.Credentials)."""

    async def token(self) -> str:
        """An access token that is not about to expire."""
        ...

    async def refresh(self, stale: str) -> None:
        """Replace the `stale` access token, unless that happened already."""
        ...


@dataclass
class SyncContext(Generic[C]):
    """Everything one data type of one sync needs, and the port a provider module talks through:
    upstream calls go through `get_json` / `request_json` (token, refresh on 401, shared rate
    limit), and everything it keeps through the storage methods below (`save_page`, ...), which
    wearsync.store implements over PostgreSQL. No provider module touches the database itself.
    A webhook event, connecting and disconnecting a user get a context too, whose task_id is None."""

    task_id: UUID | None  # None when a webhook event, not a sync task, is being processed
    # When the task first started: a fixed "now" for ranges, so a rerun cuts the same pages.
    started_at: datetime
    data_type: DataType
    params: SyncParams
    connection: Connection
    config: C  # the provider's settings: hosts, credentials, its own tunables
    http: HttpClient
    credentials: Tokens
    bucket: Bucket | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every data call
    # Pages stored by an earlier run of this task (page key -> items): a rerun skips them.
    done: Mapping[str, int] = field(default_factory=dict)
    # Where the last successful sync of this type got to (provider-specific), and where this one
    # will have got to once it succeeds: saved only then (`advance_cursor`).
    cursor: Mapping[str, Any] | None = None
    new_cursor: dict[str, Any] | None = None
    # Pages one job may store before the rest goes to a new job at the back of the queue
    # (fairness between users); shared by the task's data types. None: no limit (sync calls).
    page_budget: "PageBudget | None" = None

    def advance_cursor(self, value: dict[str, Any]) -> None:
        self.new_cursor = value

    def fetch_allowance(self) -> int | None:
        """How many more pages this job may fetch (None: no limit). Asked before paging starts:
        with the budget spent, the data type waits for the next job rather than fetching
        nothing and looking complete."""
        if self.page_budget is None:
            return None
        self.page_budget.check()
        return self.page_budget.left()

    async def get_json(
        self, url: str, *, params: Params | None = None, ok: Collection[int] = (), expect: Shape | None = None
    ) -> Any:
        return await self.request_json("GET", url, params=params, ok=ok, expect=expect)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        empty_ok: bool = False,
        ok: Collection[int] = (),
        expect: Shape | None = None,
    ) -> Any:
        """A data call with the connection's token; a 401 refreshes the token once and retries.
        A status in `ok` is the provider's way to say there is nothing (404: gone, 409: done
        already): None. `expect` (type, what): any other body than a `type` is MalformedPayload,
        "GET <url> returned no <what>"."""
        for attempt in (1, 2):
            token = await self.credentials.token()
            headers = {**self.headers, "Authorization": f"Bearer {token}"}
            try:
                body = await self.http.request_json(
                    method, url, params=params, headers=headers, json_body=json_body, bucket=self.bucket,
                    empty_ok=empty_ok,
                )  # fmt: skip
            except UpstreamAuthError as e:
                if e.status in ok:
                    return None
                if e.status != 401 or attempt == 2:
                    raise
                await self.credentials.refresh(token)
                continue
            except UpstreamError as e:
                if e.status in ok:
                    return None
                raise
            if expect is not None and not isinstance(body, expect[0]):
                raise MalformedPayload(f"{method} {url} returned no {expect[1]}: {str(body)[:200]}")
            return body
        raise AssertionError("unreachable")

    async def list_again_if_moved(self, listing: Callable[[Mapping[str, int]], Awaitable[None]]) -> None:
        """`listing(done)` pages a list, skipping the pages in `done`, and raises ListShifted when the
        list moved under it. Then it runs again from the start with the type's progress started
        over (at most RELISTS times; the upserts make the pages read again harmless), and a list
        that keeps moving fails the data type, saying so."""
        done = self.done
        for listed in range(1, RELISTS + 2):
            try:
                return await listing(done)
            except ListShifted as e:
                if listed > RELISTS:
                    raise ListShifted(
                        f"{e} while it was paged, {listed} times in a row; the next sync tries again"
                    ) from e
                log.info(
                    "list moved while it was paged, listing it again", data_type=self.data_type.value, error=str(e)
                )
            done = {}
            await self.restart_progress()

    # ---- storage: a provider's only way to the database, implemented by wearsync.store ---------

    async def save_page(
        self, records: Sequence[Record], page_key: str | None = None, items: int = 0, overwrite: bool = True
    ) -> int:
        """Store one upstream page and count it, in one transaction, so progress never claims a
        record that is not stored; `page_key` (with the page's item count) marks it done for a
        rerun of the task to skip. `overwrite=False`: records already stored are left as they are.
        The rows inserted or changed."""
        raise NotImplementedError

    async def set_pages_total(self, pages_total: int) -> None:
        """How many pages the data type has, where the provider says it up front."""
        raise NotImplementedError

    async def restart_progress(self) -> None:
        """The data type's progress starts over (its list is paged again from the start)."""
        raise NotImplementedError

    async def delete_record(self, kind: str, record_id: str, *, raw_field: str | None = None) -> int:
        """Delete the user's row of a kind (workouts, sleep, recovery) from this provider whose
        provider_record_id is `record_id` (or, with `raw_field`, whose raw JSON has it there),
        with its data; how many rows went."""
        raise NotImplementedError

    async def stored_raw(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """The raw upstream JSON of the user's row of a kind with this provider_record_id."""
        raise NotImplementedError

    async def deactivate(self, reason: str) -> None:
        """The connection ends (the user withdrew our access upstream): its syncs stop."""
        raise NotImplementedError

    async def set_scopes(self, scopes: Sequence[str]) -> None:
        """The scopes the user grants us now."""
        raise NotImplementedError

    async def save_cursor(self, value: dict[str, Any]) -> None:
        """Store the data type's cursor now (`advance_cursor` stores it when a sync succeeds)."""
        raise NotImplementedError

    async def expect_delivery(self, kind: str, start: datetime, end: datetime, status: str, page_key: str) -> None:
        """Record a request for data that comes later by webhook (Provider.deliveries): a window
        of a kind of data, as the provider answered it (`status`), and the task's page it marks
        done, in one transaction."""
        raise NotImplementedError

    async def delivered(self, kind: str, starts: Sequence[datetime]) -> None:
        """Data of a kind starting at these times has come: the windows asked for that it falls
        in count as delivered, and the tasks that awaited them end once they have all they asked."""
        raise NotImplementedError


def num(value: Any) -> float | None:
    """An optional upstream number as a float (None stays None)."""
    return None if value is None else float(value)


def integer(value: Any) -> int | None:
    """An optional upstream number as an int (None stays None)."""
    return None if value is None else int(value)


def map_page(items: Sequence[Any], mapper: Callable[[Any], Record | Sequence[Record]]) -> list[Record]:
    """Map one upstream page to rows, each one PostgreSQL stores (`check_storable`); a record we
    cannot read fails the data type, clearly."""
    rows: list[Record] = []
    for item in items:
        try:
            mapped = mapper(item)
            mapped_rows = list(mapped) if isinstance(mapped, Sequence) else [mapped]
            raws: set[int] = set()  # rows of one item often share its raw JSON: checked once
            for row in mapped_rows:
                check_storable(row, raw=id(row.raw) not in raws)
                raws.add(id(row.raw))
        # OverflowError, OSError: a number or date beyond what datetime and timedelta hold.
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, OSError) as e:
            raise MalformedPayload(f"unreadable record ({type(e).__name__}: {e}): {str(item)[:200]}") from e
        rows.extend(mapped_rows)
    return rows


SyncFunction = Callable[[SyncContext[C]], Awaitable[None]]


@dataclass(frozen=True)
class WebhookEvent:
    """One event of a webhook delivery, as stored before it is acknowledged."""

    kind: str  # e.g. "activities.push", "activity.create", "workout.updated"
    provider_user_id: str  # the provider's id of the user, which names our connection
    dedupe_key: str  # the same event delivered twice has the same key
    payload: dict[str, Any]
    items: int = 1  # the records or notifications it carries (a Garmin push: its summaries)


@dataclass(frozen=True)
class Webhook(Generic[C]):
    """How a provider's webhook deliveries are checked, split into events and processed.

    `verify` raises WebhookRejected for a bad or missing signature; `parse` raises
    MalformedPayload for a body it cannot read; `process` runs in the worker with a context
    whose task_id is None (webhook events are not sync tasks)."""

    verify: Callable[[Mapping[str, str], bytes, C, Settings], None]
    parse: Callable[[Any], list[WebhookEvent]]
    process: Callable[[SyncContext[C], WebhookEvent], Awaitable[str | None]]  # optional detail to record
    max_body_bytes: int = 64 * 1024  # more than the provider ever sends (an event names a record)
    # Records and notifications one delivery may carry (WebhookEvent.items): more is refused (413).
    max_items: int = 100
    # The provider signs nothing: only a delivery to the URL with our secret last segment is its
    # (WEARSYNC_P_WEBHOOK_PATH_SECRET); any other URL of it answers 404.
    path_secret: bool = False

    def events(self, payload: Any) -> list[WebhookEvent]:
        """The delivery's events as `parse` reads them, each one PostgreSQL stores as it is;
        MalformedPayload for anything else (NUL characters, NaN, ids longer than any provider's);
        TooManyItems for more records or notifications than `max_items`."""
        events = self.parse(payload)
        if (items := sum(event.items for event in events)) > self.max_items:
            raise TooManyItems(f"{items} records or notifications in one delivery, at most {self.max_items}")
        for event in events:
            try:
                check_text(event.kind)
                # A connection's provider_user_id is at most as long (api/models.py); the key,
                # made of ids, must fit an index entry.
                if len(check_text(event.provider_user_id)) > MAX_KEY_CHARS:
                    raise ValueError(f"a user id longer than {MAX_KEY_CHARS} characters")
                if len(check_text(event.dedupe_key)) > 2 * MAX_KEY_CHARS:
                    raise ValueError(f"an event key longer than {2 * MAX_KEY_CHARS} characters")
                json_text(event.payload)
            except ValueError as e:
                raise MalformedPayload(f"unstorable {event.kind[:50]!r} event: {e}") from None
        return events


@dataclass(frozen=True)
class Deliveries(Generic[C]):
    """How a sync that only asks for data (SyncContext.expect_delivery) ends: it stays running
    until every window it asked for has had a delivery (SyncContext.delivered), then succeeds, or
    until `wait_s` has passed, then each data type with a window nothing came into fails with
    `nothing_delivered` (formatted with `wait` and `windows`)."""

    wait_s: Callable[[C], float]
    data_type_of: Callable[[str], DataType]  # the data type of a kind of data asked for
    nothing_delivered: str


@dataclass(frozen=True)
class Provider(Generic[C]):
    """A provider as data: what it supports, how its data arrives, how its OAuth server takes our
    credentials, its settings, and the client functions that sync each data type."""

    name: str
    supports: frozenset[DataType]
    delivery: str  # "pull" or "webhook"
    token_path: str  # on the provider's auth host
    config: type[C]  # its settings (WEARSYNC_<P>_*): hosts, credentials, rate limits, tunables
    client_auth: str = "basic"  # "basic" (HTTP Basic) or "body" (client_id/client_secret in the form)
    refresh_params: Mapping[str, str] = field(default_factory=dict)  # extra fields of a refresh grant
    sync: Mapping[DataType, SyncFunction[C]] = field(default_factory=dict)
    # The SyncParams fields its syncs read (ctx.params); a task records only these.
    params: tuple[str, ...] = ()
    # Headers every data call carries besides the bearer token (Suunto's subscription key).
    api_headers: Callable[[C], dict[str, str]] = lambda config: {}
    webhook: Webhook[C] | None = None
    # Upstream calls an incremental sync of an unchanged account costs: what the scheduler plans with.
    incremental_calls: int = 5
    # How to learn the provider's id of a token's user where the token response does not say it
    # (Whoop, Garmin): what the connection must store for webhooks to find it.
    user_id: Callable[[HttpClient, C, str], Awaitable[str]] | None = None
    # How the account of tokens handed to `PUT .../connections/{p}` is learnt where `user_id` cannot
    # (Suunto, Polar): (the tokens as handed, provider_user_id what the caller says, and our user's
    # id) -> the tokens to store, with provider_user_id as the provider says it; AccountUnconfirmed
    # when the provider does not confirm it.
    identify: Callable[[HttpClient, C, TokenSet, UUID], Awaitable[TokenSet]] | None = None
    # Connecting a user (wearsync.oauth): the authorization page's path on the provider's authorize
    # host, the scopes we ask for (joined by scope_separator), extra query parameters, PKCE (S256).
    authorize_path: str = "/oauth/authorize"
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    pkce: bool = False
    # What must happen upstream once a user is connected (Polar: register the user with our app),
    # and how a disconnect withdraws our access upstream; both with the new connection's context.
    on_connect: SyncFunction[C] | None = None
    revoke: SyncFunction[C] | None = None
    # A provider whose sync only asks for data that comes later by webhook (Garmin's backfills).
    deliveries: "Deliveries[C] | None" = None

    def settings(self, settings: Settings) -> C:
        """Its settings, as loaded into `settings.providers`."""
        config = settings.providers[self.name]
        assert isinstance(config, self.config), f"{self.name}'s settings are a {type(config).__name__}"
        return config

    def task_params(self, params: SyncParams) -> dict[str, Any]:
        """The parameters a task of this provider records: those it reads."""
        return params.model_dump(include=set(self.params))

    def bucket(self, settings: Settings, tenant: UUID | None = None, user: UUID | None = None) -> Bucket:
        """Its shared rate-limit bucket: the documented limits unless WEARSYNC_<P>_RATE_LIMITS says;
        calls for application `tenant` take that application's share, and of it, `user`'s."""
        limits = self.settings(settings).rate_limits
        return Bucket(self.name, limits, "" if tenant is None else str(tenant), "" if user is None else str(user))
