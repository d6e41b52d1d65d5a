"""What every provider client shares: its description as data and the context a sync runs in."""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from wearsync.db import queries
from wearsync.db.records import upsert_records
from wearsync.models import DataType, SyncParams
from wearsync.providers.errors import MalformedPayload
from wearsync.providers.http import HttpClient
from wearsync.records import RECORD_KIND, Record
from wearsync.settings import ProviderSettings, Settings


@dataclass(frozen=True)
class Connection:
    user_id: UUID
    provider: str
    provider_user_id: str
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: list[str]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> "Connection":
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass
class SyncContext:
    """Everything one data type of one sync needs; `save_page` is the only way records land."""

    task_id: UUID
    data_type: DataType
    params: SyncParams
    connection: Connection
    config: ProviderSettings
    http: HttpClient
    db: asyncpg.Pool
    settings: Settings  # provider tunables (page concurrency, history reach, ...)

    async def save_page(self, records: Sequence[Record]) -> None:
        """Store one upstream page and count it, in one transaction, so progress never claims a
        record that is not stored."""
        counts: dict[str, int] = {}
        for record in records:
            kind = RECORD_KIND[type(record)]
            counts[kind] = counts.get(kind, 0) + 1
        async with self.db.acquire() as conn, conn.transaction():
            await upsert_records(conn, self.connection.user_id, self.connection.provider, records)
            await queries.update_type_progress(conn, self.task_id, self.data_type, pages=1, records=counts)

    async def set_pages_total(self, pages_total: int) -> None:
        await queries.update_type_progress(self.db, self.task_id, self.data_type, pages_total=pages_total)


def map_page(items: Sequence[Any], mapper: Callable[[Any], Record | Sequence[Record]]) -> list[Record]:
    """Map one upstream page to rows; a record we cannot read fails the data type, clearly."""
    rows: list[Record] = []
    for item in items:
        try:
            mapped = mapper(item)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedPayload(f"unreadable record ({type(e).__name__}: {e}): {str(item)[:200]}") from e
        if isinstance(mapped, Sequence):
            rows.extend(mapped)
        else:
            rows.append(mapped)
    return rows


SyncFunction = Callable[[SyncContext], Awaitable[None]]


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_seconds: int


@dataclass(frozen=True)
class Provider:
    """A provider as data: what it supports, how its data arrives, its limits, and the client
    functions that sync each data type (absent until its client exists)."""

    name: str
    supports: frozenset[DataType]
    delivery: str  # "pull" or "webhook"
    rate_limits: tuple[RateLimit, ...] = ()
    sync: Mapping[DataType, SyncFunction] = field(default_factory=dict)
