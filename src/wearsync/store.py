"""The storage side of a provider's context: SyncContext's port, implemented over PostgreSQL.

Provider modules never import the database layer; what they keep (pages of records, progress,
cursors, deletions, the connection's state, requests for data that comes later) goes through
these methods, each one statement or one transaction.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic

import asyncpg

from wearsync import backfills
from wearsync.db import connections, garmin_backfills, tasks
from wearsync.db.records import delete_records, stored_raw, upsert_records
from wearsync.providers.core import C, Provider, SyncContext
from wearsync.records import RECORD_KIND, Record


@dataclass
class StoredContext(SyncContext[C], Generic[C]):
    """A SyncContext whose storage is the database."""

    provider: Provider[C] = field(kw_only=True)
    db: asyncpg.Pool = field(kw_only=True)

    async def save_page(
        self, records: Sequence[Record], page_key: str | None = None, items: int = 0, overwrite: bool = True
    ) -> int:
        counts: dict[str, int] = {}
        for record in records:
            kind = RECORD_KIND[type(record)]
            counts[kind] = counts.get(kind, 0) + 1
        done = {page_key: items} if page_key is not None else None
        async with self.db.acquire() as conn, conn.transaction():
            written = await upsert_records(
                conn, self.connection.user_id, self.connection.provider, records, self.task_id, overwrite
            )
            if self.task_id is not None:
                await tasks.update_type_progress(conn, self.task_id, self.data_type, pages=1, records=counts, done=done)
        if self.page_budget is not None:
            self.page_budget.spend()
        return written

    async def set_pages_total(self, pages_total: int) -> None:
        if self.task_id is not None:
            await tasks.update_type_progress(self.db, self.task_id, self.data_type, pages_total=pages_total)

    async def restart_progress(self) -> None:
        if self.task_id is not None:
            await tasks.restart_type_progress(self.db, self.task_id, self.data_type)

    async def delete_record(self, kind: str, record_id: str, *, raw_field: str | None = None) -> int:
        user_id, provider = self.connection.user_id, self.connection.provider
        if raw_field is None:
            return await delete_records(self.db, user_id, provider, kind, "r.provider_record_id = $3", record_id)
        return await delete_records(self.db, user_id, provider, kind, "r.raw->>$4 = $3", record_id, raw_field)

    async def stored_raw(self, kind: str, record_id: str) -> dict[str, Any] | None:
        return await stored_raw(self.db, self.connection.user_id, self.connection.provider, kind, record_id)

    async def deactivate(self, reason: str) -> None:
        await connections.deactivate_connection(self.db, self.connection.user_id, self.connection.provider, reason)

    async def set_scopes(self, scopes: Sequence[str]) -> None:
        await connections.set_scopes(self.db, self.connection.user_id, self.connection.provider, scopes)

    async def save_cursor(self, value: dict[str, Any]) -> None:
        user_id, provider = self.connection.user_id, self.connection.provider
        await connections.save_cursor(self.db, user_id, provider, self.data_type.value, value)

    async def expect_delivery(self, kind: str, start: datetime, end: datetime, status: str, page_key: str) -> None:
        assert self.task_id is not None, "data is asked for by sync tasks, never by webhook events"
        async with self.db.acquire() as conn, conn.transaction():
            await garmin_backfills.insert_garmin_backfill(
                conn, self.task_id, self.connection.user_id, kind, start, end, status
            )
            await tasks.update_type_progress(conn, self.task_id, self.data_type, pages=1, done={page_key: 0})

    async def delivered(self, kind: str, starts: Sequence[datetime]) -> None:
        user_id = self.connection.user_id
        if await garmin_backfills.mark_garmin_backfills_delivered(self.db, user_id, kind, starts):
            await backfills.settle_tasks(self.db, self.provider, self.config, user_id=user_id)
