"""For unit tests of one provider client against aioresponses: a SyncContext whose storage is
memory, tokens without a database, and the requests a test's upstream saw."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, overload
from uuid import uuid4

from aioresponses import aioresponses
from yarl import URL

from wearsync.credentials import Credentials
from wearsync.models import DataType, SyncParams
from wearsync.providers.core import Connection, Provider, SyncContext
from wearsync.providers.http import HttpClient
from wearsync.records import Record, Sample
from wearsync.settings import Settings

R = TypeVar("R", bound=Record)


class SavedPage(NamedTuple):
    key: str | None
    rows: list[Record]
    items: int


@dataclass
class RecordingContext(SyncContext[Any]):
    """A SyncContext whose pages land in memory instead of PostgreSQL."""

    credentials: "FakeCredentials"
    saved: list[SavedPage] = field(default_factory=list)  # every save_page, in order
    pages_total: int | None = None

    async def save_page(
        self, records: Sequence[Record], page_key: str | None = None, items: int = 0, overwrite: bool = True
    ) -> int:
        self.saved.append(SavedPage(page_key, list(records), items))
        return len(records)

    async def set_pages_total(self, pages_total: int) -> None:
        self.pages_total = pages_total

    @property
    def pages(self) -> list[list[Record]]:
        """The rows of each page saved."""
        return [page.rows for page in self.saved]

    @property
    def page_keys(self) -> list[tuple[str | None, int]]:
        """(page key, items) of each page saved."""
        return [(page.key, page.items) for page in self.saved]

    @overload
    def rows(self) -> list[Record]: ...
    @overload
    def rows(self, kind: type[R]) -> list[R]: ...
    def rows(self, kind: type[Any] | None = None) -> list[Any]:
        """Every row saved (of one record type if given)."""
        return [r for page in self.saved for r in page.rows if kind is None or isinstance(r, kind)]

    def ids(self) -> list[str]:
        """The provider's ids of the records saved, samples (which have none) aside."""
        return [r.provider_record_id for r in self.rows() if not isinstance(r, Sample)]


@dataclass
class FakeCredentials(Credentials):
    """Tokens without a database: a refresh hands out the next numbered token."""

    async def refresh(self, stale: str) -> None:
        self.refreshes += 1
        self.access_token = f"token-{self.refreshes + 1}"


def recording_context(
    provider: Provider[Any],
    http: HttpClient,
    settings: Settings,
    *,
    data_type: DataType = DataType.WORKOUTS,
    params: SyncParams | None = None,
    done: Mapping[str, int] | None = None,
    started_at: datetime | None = None,
    provider_user_id: str = "alice",
    refresh_token: str | None = "refresh-1",
    context: type[RecordingContext] = RecordingContext,  # a subclass, for a provider's extras
) -> RecordingContext:
    """A context for one data type of `provider`, holding access token `token-1`; started now
    unless `started_at` says when the task first started."""
    config = settings.providers[provider.name]
    connection = Connection(uuid4(), provider.name, provider_user_id, "token-1", refresh_token, None, [])
    credentials = FakeCredentials(provider, config, connection.user_id, "token-1", refresh_token, None, None, http)  # type: ignore[arg-type]  # no pool
    return context(
        task_id=uuid4(),
        started_at=started_at or datetime.now(UTC),
        data_type=data_type,
        params=params or SyncParams(),
        connection=connection,
        config=config,
        http=http,
        credentials=credentials,
        headers=provider.api_headers(config),
        done=done or {},
    )


def sent(m: aioresponses) -> list[tuple[str, URL, dict[str, Any]]]:
    """(method, URL, keyword arguments) of each request made, by URL."""
    return [(method, url, call.kwargs) for (method, url), calls in m.requests.items() for call in calls]
