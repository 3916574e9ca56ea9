"""The storage port: everything endpoints and ingestion may ask of a store.

Endpoints never see a driver. Every tenant-scoped call takes the tenant as a
required keyword, so no query can be written without it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from parley.ingest.events import Event
from parley.metrics.chats.query import ChatQuery
from parley.store.schema import ColumnBatch

if TYPE_CHECKING:
    from parley.pricing import Unpriced
    from parley.settings import Settings


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    secret_hash: str
    org: str
    workspace_id: str | None  # None for an org ingestion key
    member_id: int | None
    ingest: bool
    created_at: datetime
    revoked_at: datetime | None = None  # naive UTC; a revoked key lets no one in


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member as its latest ``member.upsert`` left it."""

    workspace_id: str
    member_id: int
    name: str
    kind: str
    role: str
    scopes: tuple[str, ...]
    is_anonymous: bool


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What happened to each event handed to :meth:`Store.ingest`."""

    stored: list[str]  # ids newly stored
    duplicates: list[str]  # ids stored before: a no-op
    failed: dict[str, str]  # id -> reason, for events the engine refused


@dataclass(frozen=True, slots=True)
class CallsByAssistantRow:
    assistant_id: str
    assistant_name: str
    total_calls: int
    total_duration_us: int


class StoreLocked(RuntimeError):
    """The embedded store is held by another process."""


class StoreUnavailable(RuntimeError):
    """The store cannot be opened (a file that is no store), its server reached, or a
    write made durable (a full disk): what the call asked for was not done, and may be
    asked again once the cause is mended."""


class NotRemembered(LookupError):
    """A look-up told to answer from memory alone (``remembered_only``) has nothing
    remembered to answer with: ask again, letting it read the store."""


class Store(Protocol):
    url: str

    def ingest(self, events: Sequence[Event]) -> StoreOutcome:
        """Store new events durably, skipping ids already stored for their org."""

    def ingest_columns(self, batch: ColumnBatch) -> list[tuple[str, str]] | None:
        """Store a batch built by ``schema.column_batch`` durably and return the (org, id)
        of its events stored; or, if one of its ids or entities is stored already (or the
        engine refuses a row), store none of it and return None."""

    def create_api_key(self, record: ApiKeyRecord) -> None: ...

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Revoke the key at ``at`` (naive UTC) unless it is revoked already, and return
        its record as it then stands; None for an unknown id."""

    def find_api_key(self, key_id: str, *, remembered_only: bool = False) -> ApiKeyRecord | None:
        """The key's record, None for an unknown id. ``remembered_only``: answer from what
        the store remembers between requests and never read it (so that the event loop
        may ask), or raise ``NotRemembered``."""

    def get_member(
        self, *, org: str, workspace_id: str, member_id: int, remembered_only: bool = False
    ) -> MemberState | None:
        """The member as its latest upsert left it, None when not known; ``remembered_only``
        as for ``find_api_key``."""

    def calls_by_assistant(
        self, *, org: str, workspace_id: str, start: datetime, end: datetime
    ) -> list[CallsByAssistantRow]:
        """Calls whose ``started_at`` lies in ``[start, end]`` (naive UTC), per assistant."""

    def list_chats(
        self, *, org: str, workspace_id: str, query: ChatQuery, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of matching chats (snake_case columns) and the number that match."""

    def export_chats(self, *, org: str, workspace_id: str, query: ChatQuery) -> Generator[pa.RecordBatch, None, None]:
        """Every matching chat in export order, batch by batch, as columns a CSV writer
        takes as they are: text, numbers and booleans. Reading starts at the first batch;
        closing the generator ends the read at once."""

    def needs_response(self, *, org: str, workspace_id: str, owner_member_id: int | None) -> list[int]: ...

    def daily_chat_creation(
        self, *, org: str, workspace_id: str, query: ChatQuery, tz: str, start: datetime, end: datetime
    ) -> list[tuple[date, str, int]]:
        """(local day in ``tz``, chat type, count) for matching chats created in [start, end]."""

    def tool_call_names(self, *, org: str, workspace_id: str, owner_member_id: int | None) -> list[str]: ...

    def assistants_usage(
        self, *, org: str, workspace_id: str, start: datetime, end: datetime, tz: str
    ) -> list[tuple[str, date, int]]:
        """(assistant name or "unknown", local day, assistant messages) with any messages."""

    def user_cohorts(
        self, *, org: str, start: datetime, end: datetime, granularity: str, tz: str, mentor_id: str | None
    ) -> tuple[dict[Any, int], dict[Any, int]]:
        """New and veteran users per bucket key (see ``timeseries.Bucket``)."""

    def feedback_counts(
        self, *, org: str, start: datetime, end: datetime, granularity: str, tz: str, mentor_id: str | None
    ) -> dict[Any, tuple[int, int, int]]:
        """(feedback, positive, negative) per bucket key."""

    def user_cost(
        self, *, org: str, user_id: str, start: datetime, end: datetime, prices: list[tuple[str, int, int]]
    ) -> tuple[int, dict[str | None, Unpriced]]:
        """(cost in pico-dollars, the tokens that had no cost and no known price, by model;
        None for observations that name no model): ``pricing.price_by_model``."""

    def count_events(self, *, org: str) -> int: ...

    def holds_events(self) -> bool:
        """Whether any event of any org is stored."""

    def bulk_load(self) -> AbstractContextManager[None]:
        """A context that a bulk load in this process (``ingest_chunks``) runs in: the store
        may trade memory, and the time to recover from a crash, for speed while it lasts."""

    def reorder(self) -> None:
        """Lay out in time order what a bulk load stored out of it, so that range filters
        skip the rest; called when a bulk load (``parley ingest``, ``parley demo``) ends."""

    def close(self) -> None: ...


def open_store(
    url: str, *, threads: int | None = None, memory_limit: str | None = None, checkpoint_bytes: int | None = None
) -> Store:
    """Open the store a database URL names (contract section 3); ``threads``,
    ``memory_limit`` and ``checkpoint_bytes`` are DuckDB's (its own defaults if None)."""
    from parley.store.urls import parse_database_url

    target = parse_database_url(url)
    if target.engine == "duckdb":
        from parley.store.duckdb import DuckDBStore

        return DuckDBStore(target.path, threads=threads, memory_limit=memory_limit, checkpoint_bytes=checkpoint_bytes)
    from parley.store.clickhouse import ChdbTransport, ClickHouseStore, ConnectTransport

    if target.engine == "chdb":
        return ClickHouseStore(ChdbTransport(target.path), url)
    return ClickHouseStore(ConnectTransport.over_http(url), url)


def open_configured_store(settings: Settings) -> Store:
    """The store the settings name, with their limits for DuckDB."""
    return open_store(
        settings.database_url,
        threads=settings.duckdb_threads,
        memory_limit=settings.duckdb_memory_limit,
        checkpoint_bytes=settings.duckdb_checkpoint_mb * 1_000_000,
    )


__all__ = [
    "ApiKeyRecord",
    "CallsByAssistantRow",
    "MemberState",
    "Store",
    "StoreLocked",
    "StoreOutcome",
    "StoreUnavailable",
    "open_configured_store",
    "open_store",
]
