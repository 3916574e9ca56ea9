"""The embedded store: one DuckDB file, one writer, a read cursor per thread.

DuckDB admits one writing process per file. Inside the process, writes go through
one connection under a lock (as Datasette funnels SQLite writes through one
writer), while each read borrows a cursor no other statement is using. A transaction
that commits has reached DuckDB's write-ahead log, so an acknowledged event
survives a crash of the process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from parley.ingest.events import Event
from parley.metrics.chats.query import ChatQuery
from parley.store import schema
from parley.store.chat_sql import ChatSql, times_as_text
from parley.store.dialect import DuckDBDialect
from parley.store.duckdb_sql import DuckDBChatSql, DuckDBSeriesSql
from parley.store.duckdb_state import (
    ASIDE,
    CHAT_STATE_DDL,
    CLEAR_COMPLETE_WAITING,
    CLUSTERED,
    CLUSTERED_SOURCES,
    DERIVED_TABLES,
    PEOPLE_TABLES,
    REORDERED,
    REORDERED_SOURCES,
    IfRows,
    IfWrote,
    Rewrite,
    Statement,
    fill_first_message_sql,
    fold_cost_days_sql,
    lookups_sql,
    mark_waiting_sql,
    queue_state_sql,
    queued_rows_sql,
    reorder_sql,
    sort_newest_sql,
    state_sql,
    unqueue_state_sql,
)
from parley.store.group_commit import GroupCommit, Key
from parley.store.port import (
    ApiKeyRecord,
    MemberState,
    NotRemembered,
    StoreLocked,
    StoreOutcome,
    StoreUnavailable,
)
from parley.store.sql_store import ALL_API_KEYS, SqlStore, key_records

log = logging.getLogger("parley.store")

DUCKDB_TYPES = {
    schema.STR: "VARCHAR",
    schema.INT: "BIGINT",
    schema.BOOL: "BOOLEAN",
    schema.TIME: "TIMESTAMP",
    schema.JSON: "VARCHAR",
    schema.STR_LIST: "VARCHAR[]",
}

DIALECT = DuckDBDialect()
# Each export batch is one statement with a fixed cost (it joins the whole chat relation):
# at scale M, batches of 20,000 exported 188,000 rows/s where 5,000 gave 150,000, for
# 24 MB more peak RSS (234 MB). 50,000 measured no clearly faster (231k and 257k rows/s
# against 217k and 180k for a first export of 39,956 chats) for 25 MB more.
EXPORT_BATCH_ROWS = 20_000
# Exports of up to this many chats are read whole and sorted by Arrow (``DuckDBStore.export_chats``),
# which holds every row twice for a moment (the rows and their sorted copy): 34 to 38 MB for
# the 39,966 chats of scale M's largest workspace (DuckDB's own sort of the formatted rows
# took 42 to 44), so about 95 MB at this limit.
EXPORT_WHOLE_ROWS = 100_000
# The checkpoint at closing is logged at INFO from this much log (``_checkpoint``).
CLOSING_LOGGED_BYTES = 1_000_000
# The store checkpoints once its write-ahead log holds this many bytes (``_checkpoint_if_due``),
CHECKPOINT_BYTES = 256_000_000
# and this many while a bulk load runs (``DuckDBStore.bulk_load``).
BULK_CHECKPOINT_BYTES = 1_000_000_000
# DuckDB's own threshold, set beyond reach: DuckDB never checkpoints by itself.
NO_AUTOMATIC_CHECKPOINT = "1000TB"
# Rows a row group holds, for the row groups written from now on (DuckDB's default is
# 122,880). The zone maps of a row group are what a read's conditions prune by, and every
# read of a workspace, a user or a month scans whole row groups: at scale M the 30-day
# chats search scanned 453,172 messages for a workspace's month of about 50,000, and a
# user's cost three row groups for a few rows. With a quarter of the rows a row group, in
# process on copies of the same tables in the same order: the 30-day search's page 11.71
# -> 9.89 ms, the list's 8.52 -> 6.30, a light user's cost 1.53 -> 1.10; whole benches
# alternated, the search's p50 36.71 and 38.57 ms against 52.86, a bulk load 3 checkpoints
# rather than 7, the store 5% larger (benchmarks.md, "Row groups of 32,768 rows; runs 132
# to 134"). DuckDB keeps no such size in the file: the store attaches its file with it
# each time it opens (``_connect``).
ROW_GROUP_SIZE = 32_768
# The name the store's file is attached under, in its connections.
CATALOG = "store"
# The ``parley_meta`` key under which a store closed cleanly keeps, for each table of
# CLUSTERED, where its run of rows in order began and how many it holds (``_runs_kept``).
RUNS_KEY = "runs_in_order"
# The ``parley_meta`` key of a store whose activity waits only for what it lacks of its
# session (see ``_TRACE_ACTIVITY``): one written before is cleared of the other marks once.
WAITS_FOR_WHAT_IT_LACKS_KEY = "activity_waits_for_what_it_lacks"
# Most members remembered for authentication; past it, forget all and start over.
AUTH_CACHE_ENTRIES = 4096
# The kinds of what ``_AuthCache`` remembers: every key at once, and each member.
KEYS, MEMBER = "keys", "member"

_DDL_FIXED = """
CREATE TABLE IF NOT EXISTS parley_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS event_ledger (
    org VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org, event_id)
);
CREATE TABLE IF NOT EXISTS entity_ledger (
    org VARCHAR NOT NULL,
    entity_key VARCHAR NOT NULL,
    PRIMARY KEY (org, entity_key)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY,
    secret_hash VARCHAR NOT NULL,
    org VARCHAR NOT NULL,
    workspace_id VARCHAR,
    member_id BIGINT,
    ingest BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
"""


def _table_ddl(table: schema.Table) -> str:
    cols = ",\n    ".join(f"{c.name} {DUCKDB_TYPES[c.type]}" for c in table.columns)
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n    {cols}\n);"


# Failures of the machine rather than of what a statement holds.
MACHINE_ERRORS = (duckdb.IOException, duckdb.OutOfMemoryException)


def _connect(path: Path, config: dict[str, str | int]) -> duckdb.DuckDBPyConnection:
    """A connection to a DuckDB of ``config`` with the store's file attached as ``CATALOG``,
    its row groups of ``ROW_GROUP_SIZE`` rows, and used by default. What DuckDB spills goes
    beside the file, as for a file opened directly (an in-memory DuckDB's own place is
    ``.tmp`` in the working directory)."""
    con = duckdb.connect(config={**config, "temp_directory": f"{path}.tmp"})
    try:
        con.execute(f"ATTACH ? AS {CATALOG} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})", [str(path)])
        con.execute(f"USE {CATALOG}")
    except duckdb.ResourceInUseException as err:  # where DuckDB would have shared the file's instance
        con.close()
        raise StoreLocked(f"{path} is open already in this process") from err
    except duckdb.IOException as err:
        con.close()
        if "lock" in str(err).lower():
            raise StoreLocked(
                f"{path} is held by another process; run the command through the "
                "Parley server that holds it, or stop that process"
            ) from err
        raise StoreUnavailable(f"{path} could not be opened: {err}") from None
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Commit what the block does, or roll all of it back if it raises.

    A commit that fails (its write-ahead log could not be written: a full disk) stores
    nothing, nor does a statement that fails for the machine's sake (an I/O error, no
    memory left). Both raise ``StoreUnavailable``, the store's failure, rather than
    DuckDB's error, which ingestion would take for a fault of one of the events and look
    for it event by event, each failing in turn.
    """
    con.begin()
    try:
        yield con
    except BaseException as exc:
        with suppress(duckdb.TransactionException):  # none active: DuckDB ended it already
            con.rollback()
        if isinstance(exc, MACHINE_ERRORS):
            raise StoreUnavailable(f"the store could not write: {exc}") from exc
        raise
    try:
        con.commit()
    except duckdb.Error as err:
        raise StoreUnavailable(f"the store could not commit: {err}") from err


# The event types whose rows go to the people's tables (see ``DuckDBStore._store_events``).
PEOPLE_TYPES = frozenset(t for t, table in schema.TABLE_FOR_TYPE.items() if table.name in PEOPLE_TABLES)

PART_UNAVAILABLE = "the store could not write this event now (the server's log says why): send it again later"


def _part_unavailable(
    outcome: tuple[set[Key], dict[Key, str]], events: list[Event], exc: StoreUnavailable
) -> tuple[set[Key], dict[Key, str]]:
    """``outcome`` of one part of a batch, with each of ``events``, the other part, which
    the store could not write (``exc``), refused with ``PART_UNAVAILABLE``."""
    log.error(
        "the store could not write part of a batch (%d events); they are refused, to be sent again: %s",
        len(events),
        exc,
    )
    stored, failed = outcome
    return stored, failed | dict.fromkeys(((e.org, e.id) for e in events), PART_UNAVAILABLE)


def _run(con: duckdb.DuckDBPyConnection, statements: Iterable[Statement]) -> None:
    """Execute ``statements`` in order, those of an ``IfRows`` only if its relation has a row
    (else its ``otherwise``), those of an ``IfWrote`` only if its statement wrote one."""
    for statement in statements:
        if isinstance(statement, IfRows):
            if con.execute(f"SELECT EXISTS (FROM {statement.relation})").fetchall()[0][0]:
                _run(con, statement.statements)
            else:
                _run(con, statement.otherwise)
        elif isinstance(statement, IfWrote):
            if con.execute(statement.statement).fetchall()[0][0]:
                _run(con, statement.statements)
        else:
            con.execute(statement)


def _registered(
    con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], use: Callable[[dict[str, str]], object]
) -> None:
    """``use`` the ``tables`` registered on ``con``, given the name of each (in the order of
    ``schema.TABLES``); nothing if there are none."""
    sources = {table.name: f"new_{table.name}" for table in schema.TABLES if table.name in tables}
    if not sources:
        return
    try:
        for name, source in sources.items():
            con.register(source, tables[name])
        use(sources)
    finally:
        for source in sources.values():
            con.unregister(source)


def _state_of(con: duckdb.DuckDBPyConnection, sources: dict[str, str]) -> None:
    """Keep the state derived from rows stored already, in ``sources`` (each table with rows,
    to the relation holding them): the batch's look-ups, then ``state_sql``.

    Every row is stored before any state is kept, so that the state kept from each table
    finds what the other tables bring (an observation its trace, a trace its session).
    """
    lookups, drops = lookups_sql(sources)
    _run(con, lookups)
    _run(con, state_sql(sources))
    _run(con, drops)


def _joined(batches: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    """The rows of ``batches`` table by table."""
    names = {name for tables in batches for name in tables}
    return {name: pa.concat_tables([tables[name] for tables in batches if name in tables]) for name in names}


def _keep_state(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
    """Keep the state of rows stored with their events queued (``queue_state_sql``), and take
    those events off the queue, in one transaction."""
    with _transaction(con):

        def keep(sources: dict[str, str]) -> None:
            _state_of(con, sources)
            con.execute(unqueue_state_sql(sources))

        _registered(con, tables, keep)


def _last_rowids(con: duckdb.DuckDBPyConnection, tables: Iterable[str] = CLUSTERED) -> dict[str, int]:
    """The largest rowid of each of ``tables`` (-1 for an empty one)."""
    tables = list(tables)
    row = con.execute(f"SELECT {', '.join(f'(SELECT max(rowid) FROM {t})' for t in tables)}").fetchall()[0]
    return {table: -1 if last is None else last for table, last in zip(tables, row, strict=True)}


def _cost_rows(con: duckdb.DuckDBPyConnection) -> int:
    """How many rows ``user_cost_days`` holds (0.4 ms for scale M's 4.9M)."""
    return int(con.execute("SELECT count(*) FROM user_cost_days").fetchall()[0][0])


def _meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """The value ``parley_meta`` keeps under ``key``, None when it keeps none."""
    row = con.execute("SELECT value FROM parley_meta WHERE key = ?", [key]).fetchone()
    return None if row is None else row[0]


def _keep_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO parley_meta VALUES (?, ?)", [key, value])


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The names of ``table``'s columns (none when it does not exist)."""
    rows = con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]).fetchall()
    return {name for (name,) in rows}


def _text_uncompressed(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``message_text`` stores its text uncompressed, as ``MESSAGE_TEXT_DDL`` makes it
    (the table's definition is the one place DuckDB tells a column's compression)."""
    (ddl,) = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'message_text'").fetchone()
    return "using compression uncompressed" in ddl.lower()


class _AuthCache:
    """The keys and members requests authenticate with, remembered between requests.

    Every request looks up its key and its member: two statements that cost about 3 ms
    of the 12 ms a light endpoint takes at scale M (DuckDB plans each one afresh), paid
    again by every request. Remembering them is safe because this process is the only
    writer of its file, so the store knows every change: ``forget`` is called with the
    kind that changed (the first item of an entry's key) once a transaction that stored
    member events, or a key, has committed. A look-up notes the generation before it reads
    and keeps its answer only if no ``forget`` came between, so an answer read before a
    change is never kept after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._entries: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= AUTH_CACHE_ENTRIES:
                    self._entries.clear()
                self._entries[key] = value
        return value

    def remembered(self, key: tuple[Any, ...]) -> Any:
        """The value remembered for ``key``, never loading it: raises ``NotRemembered``."""
        with self._lock:
            if key in self._entries:
                return self._entries[key]
        raise NotRemembered(key)

    def forget(self, kind: str) -> None:
        """Forget the entries of ``kind`` (``KEYS`` or ``MEMBER``)."""
        with self._lock:
            self._generation += 1
            self._entries = {key: value for key, value in self._entries.items() if key[0] != kind}


class DuckDBStore(SqlStore):
    dialect = DIALECT
    chat_sql_class = DuckDBChatSql
    series_sql_class = DuckDBSeriesSql
    # How many stored observations between two folds of user_cost_days: this many, or one
    # for every ``fold_share`` rows the table held after the last fold, whichever is more.
    fold_every_observations = 500_000
    fold_share = 2
    # ``reorder`` rewrites an org's rows of a table once it has one new row for this many stored.
    reorder_share = 8
    # A table's newest rows are put in order (``_sort_newest``) once about this many came,
    # together with the rest of the run they join, until the run holds about
    # ``sorted_run_rows``; the rows after it begin the next run.
    sort_newest_rows = 250_000
    sorted_run_rows = 1_000_000
    # A group of several callers' batches is answered once its rows are stored, and the state
    # kept from them (``duckdb_state.state_sql``) is kept for this many such groups at once
    # (by a thread of the store's own, once the group that fills them is answered), or once
    # ingestion pauses for ``state_wait_s`` (see ``_store_events``). 20 rather than 10: the
    # bench's live mix at scale M over HTTP, 4.7% more events/s (the medians of six pairs,
    # each pair for 20), the groups' callers waiting for the state 11.5 ms a group rather
    # than 17 (benchmarks.md, "HTTP ingest: where a phase's seconds go").
    state_every_groups = 20
    state_wait_s = 0.25

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        checkpoint_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.url = f"duckdb:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"{self.path} could not be opened: {err}") from None
        # The store checkpoints when its write-ahead log passes ``checkpoint_bytes``, not
        # DuckDB at a commit (see ``_checkpoint_if_due``). Each checkpoint rewrites the
        # ledgers' indexes: at scale M (28.5M events) DuckDB's default 16 MiB made ingestion
        # pay 557 ms a 20,000-event batch in commits, 130 ms with 256 MB (15,500 -> 20,900
        # events/s). The cost: up to 256 MB of log to replay after a crash, and as much
        # committed data held in memory until the checkpoint.
        config: dict[str, str | int] = {"checkpoint_threshold": NO_AUTOMATIC_CHECKPOINT}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._con = _connect(self.path, config)
        # No progress bar: a long statement (filling a new table when an older store is
        # opened) would otherwise draw one into the server's output.
        self._con.execute("SET enable_progress_bar = false")
        self._write_lock = threading.Lock()
        # ``PARLEY_DUCKDB_CHECKPOINT_MB`` (None: CHECKPOINT_BYTES); a bulk load raises it while
        # it runs (``bulk_load``).
        steady = CHECKPOINT_BYTES if checkpoint_bytes is None else checkpoint_bytes
        self.checkpoint_bytes = self._steady_checkpoint_bytes = steady
        # Concurrent callers' batches stored together (see ``ingest``).
        self._commits = GroupCommit(self._write_lock, self._store_events)
        # The people's part of a batch, written beside the rest (see ``_store_events``).
        self._people_con = self._cursor()
        self._people_con.execute("SET enable_progress_bar = false")
        self._people_writer = ThreadPoolExecutor(1, thread_name_prefix="parley-people-writer")
        # Every read cursor opened (closed with the store), and those no statement is using.
        self._cursors_lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._idle_cursors: list[duckdb.DuckDBPyConnection] = []
        self._observations_since_fold = 0
        self._cost_rows_after_fold = 0  # counted once the tables exist
        # Per table of REORDERED and org, about how many rows this process added since
        # ``reorder`` last rewrote them (a message without content adds none).
        self._added: dict[str, dict[str, int]] = {table: defaultdict(int) for table in REORDERED}
        # Per table of CLUSTERED: about how many rows came since its newest rows were put in
        # order, how many the run they join holds in order, and the largest rowid before that
        # run (see ``_sort_newest``). Not counted in bulk loads.
        self._unsorted = dict.fromkeys(CLUSTERED, 0)
        self._in_run = dict.fromkeys(CLUSTERED, 0)
        self._bulk_loading = False
        # The rows of committed batches whose state waits (each a part's tables; see
        # ``_store_events``), how many groups stored them, when the last did, the timer that
        # keeps their state once ingestion pauses, and the thread that keeps it once
        # ``state_every_groups`` groups wait.
        self._state_waiting: list[dict[str, pa.Table]] = []
        self._groups_waiting = 0
        self._last_waiting_at = 0.0
        self._state_timer: threading.Timer | None = None
        self._state_keeper: threading.Thread | None = None
        self._closed = False
        self._auth = _AuthCache()
        try:
            self._migrate()
            self._keep_queued_state()
            self._cost_rows_after_fold = _cost_rows(self._con)
            self._sorted_upto = _last_rowids(self._con)
            self._runs_kept()
        except BaseException:
            # Released at once, not when the cycle collector finds this store (``_commits``
            # refers back to it): the same store can be opened again straight away.
            self._con.close()
            raise

    # -- plumbing -----------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the store's database: a cursor starts in the in-memory
        database that the store's file is attached to (``_connect``)."""
        cursor = self._con.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    def _migrate(self) -> None:
        """Create what is missing, in one transaction: a crash part-way leaves the store as it was."""
        with self._write_lock, self._writing() as con:
            self._migrate_in(con)

    def _migrate_in(self, con: duckdb.DuckDBPyConnection) -> None:
        had = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        state_columns = _columns(con, "chat_state")
        con.execute(_DDL_FIXED)
        con.execute(CHAT_STATE_DDL)
        kept = _meta(con, "schema_version")
        version = int(kept) if kept is not None else 0
        if version > schema.SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this Parley "
                f"({schema.SCHEMA_VERSION}): upgrade Parley"
            )
        for table in schema.TABLES:
            con.execute(_table_ddl(table))
        if "revoked_at" not in _columns(con, "api_keys"):
            con.execute("ALTER TABLE api_keys ADD COLUMN revoked_at TIMESTAMP")
        # State a store made by an older Parley lacks is filled from the events it holds.
        if "tool_names" in state_columns:  # kept in chat_tools now (see CHAT_TOOLS_DDL)
            con.execute("ALTER TABLE chat_state DROP COLUMN tool_names")
        if state_columns and "first_message_at" not in state_columns:
            con.execute("ALTER TABLE chat_state ADD COLUMN first_message_at TIMESTAMP")
            con.execute(fill_first_message_sql())
        if "message_text" in had and ("created_at" not in _columns(con, "message_text") or not _text_uncompressed(con)):
            # Written before search bounded messages by time, or before its text was stored
            # uncompressed (see MESSAGE_TEXT_DDL): made again from the messages.
            con.execute("DROP TABLE message_text")
            had -= {"message_text"}
        if "user_activity" in had and "user_no" not in _columns(con, "user_activity"):
            # Written before users were numbered: made again from the events, numbers first.
            con.execute("DROP TABLE user_activity")
            con.execute("DROP TABLE IF EXISTS user_state")
            had -= {"user_activity", "user_state"}
        if "user_activity" in had and "waiting" not in _columns(con, "user_activity"):
            # Written before activity was marked waiting for its session: marked now.
            con.execute("ALTER TABLE user_activity ADD COLUMN waiting BOOLEAN NOT NULL DEFAULT false")
            con.execute(mark_waiting_sql())
        if "user_activity" in had and _meta(con, WAITS_FOR_WHAT_IT_LACKS_KEY) is None:
            con.execute(CLEAR_COMPLETE_WAITING)
        if "user_cost_days" in had and "user_md5" not in _columns(con, "user_cost_days"):
            # Written before a user's rows were found by user_md5 (or kept their
            # observations): made again from the events.
            con.execute("DROP TABLE user_cost_days")
            con.execute("DROP TABLE cost_pending")
            had -= {"user_cost_days", "cost_pending"}
        if "user_state" in had and "user_md5" not in _columns(con, "user_state"):
            # Written before a batch found its users' rows by user_md5: made again from the events.
            con.execute("DROP TABLE user_state")
            had -= {"user_state"}
        for name, ddl, fills in DERIVED_TABLES:
            con.execute(ddl)
            if name not in had:
                _run(con, fills)
        _keep_meta(con, WAITS_FOR_WHAT_IT_LACKS_KEY, "1")
        _keep_meta(con, "schema_version", str(schema.SCHEMA_VERSION))

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        """Run a read on an idle cursor, lent to this statement alone.

        Cursors are pooled rather than kept per thread: the server's worker threads come
        and go (AnyIO ends one idle for 10 s), and a cursor kept per thread outlived its
        thread until the store closed (about 15 KB each: 2,000 added 29 MB).
        """
        with self._cursors_lock:
            cursor = self._idle_cursors.pop() if self._idle_cursors else None
        if cursor is None:
            cursor = self._cursor()
            with self._cursors_lock:
                self._cursors.append(cursor)
        try:
            return cursor.execute(sql, params).fetchall()
        except MACHINE_ERRORS as err:
            raise StoreUnavailable(f"the store could not read: {err}") from err
        finally:
            with self._cursors_lock:
                self._idle_cursors.append(cursor)

    def close(self) -> None:
        with self._write_lock, self._cursors_lock:
            self._closed = True
            if self._state_timer is not None:
                self._state_timer.cancel()
            self._keep_waiting_state()
            self._people_writer.shutdown()
            self._people_con.close()
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            self._idle_cursors.clear()
            try:
                self._keep_runs()
                # A store opened and closed again, with a log of a few kilobytes, says so at DEBUG only.
                self._checkpoint("closing", info_from=CLOSING_LOGGED_BYTES)
            except duckdb.Error:  # a full disk: the next opening replays the log
                log.exception("the checkpoint at closing failed; the write-ahead log keeps every event")
            finally:
                self._con.close()

    # -- ingestion ----------------------------------------------------------------

    def ingest(self, events: Sequence[Event]) -> StoreOutcome:
        """Store new events durably, skipping ids already stored for their org.

        Concurrent callers commit together (``GroupCommit``): one caller at a time stores
        every batch waiting (in two transactions at once, see ``_store_events``), so the
        fixed cost of a transaction (ledger look-ups, the chat-state merge, the commit) is
        paid once for all of them. Each caller returns only once the transactions holding
        its events have committed.
        """
        return self._commits.ingest(events)

    def _fold_due(self) -> bool:
        """Whether enough observations came since the last fold of ``user_cost_days``.

        A fold reads the whole table (1.04 s for the 4.8M rows of scale M), so a fixed
        number of observations between folds made the folding of a stream grow with the
        store, as its size times the events: at scale M a fold held ingestion up for a
        second every 500,000 observations. Waiting also for a share of the table's rows
        keeps a fold's cost per observation the same at any size. An observation adds a
        row at most, so once that share is the larger count, the table grows by at most
        that share between folds.
        """
        due = max(self.fold_every_observations, self._cost_rows_after_fold // self.fold_share)
        return self._observations_since_fold >= due

    def _fold_cost_days(self) -> None:
        """Fold crowded days of ``user_cost_days`` (see ``fold_cost_days_sql``) in a transaction
        of their own, after the events are committed; the caller holds the write lock.

        Scale M, every 500,000 observations: 1.6 to 2.6 s a fold, and a heavy user's 365-day
        cost 47 to 58 ms p50 under 4 clients against 298 to 346 with a row per day per batch
        (both measured when a user's days were found through an index, before 2026-12-04).
        A fold that fails changes nothing (the sums are the same either way): it is logged
        and tried again after the next batch, and the events stay acknowledged.
        """
        try:
            with self._writing() as con:
                _run(con, fold_cost_days_sql())
                rows = _cost_rows(con)
        except (duckdb.Error, StoreUnavailable):
            log.exception("folding user_cost_days failed; the store is unchanged and will try again")
            return
        self._observations_since_fold = 0
        self._cost_rows_after_fold = rows

    @contextmanager
    def _writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction (``_transaction``), then a checkpoint if one is due; the
        caller holds the write lock."""
        with _transaction(self._con) as con:
            yield con
        self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        """Checkpoint once the write-ahead log holds ``checkpoint_bytes``; the caller holds
        the write lock, and the events the log holds are committed already.

        The store checkpoints, not DuckDB at a commit, by the log's size after a write's
        transaction, with a larger threshold while a bulk load runs (``bulk_load``). DuckDB
        holds up a scan of a table with an index (a primary key included) for the whole of a
        checkpoint when the scan's conditions are on exactly one column, which is the only
        kind it reads an index for. On a server at scale M taking about 30,000 events/s over
        HTTP, checkpoints came every 15 to 20 s and took 0.5 to 2.7 s, and a user's cost and
        cohorts waited for them, up to 2.3 s. So every read of such a table keeps conditions
        on two columns or more (``never_waits``), or has none (the keys, read whole by
        ``_all_api_keys``). A checkpoint that fails is logged, and tried again after the
        next write; the log keeps the events.
        """
        if self._logged_bytes() < self.checkpoint_bytes:
            return
        try:
            self._checkpoint("checkpoint")
        except duckdb.Error:
            log.exception("checkpoint failed; the write-ahead log keeps every event, and it is tried again")

    def _logged_bytes(self) -> int:
        """The write-ahead log's size, 0 when there is none."""
        try:
            return os.stat(f"{self.path}.wal").st_size
        except FileNotFoundError:
            return 0

    def _checkpoint(self, what: str, *, info_from: int = 0) -> None:
        """Checkpoint, and log how long it took, at INFO once the log held ``info_from``
        bytes (DEBUG below): writes wait for the whole of it, so that a request held up for
        seconds shows beside it in the server's log. At scale M a checkpoint takes seconds
        however little the log holds (DuckDB writes the ledgers' whole indexes again,
        duckdb/duckdb#24848)."""
        logged, started = self._logged_bytes(), time.perf_counter()
        self._con.execute("CHECKPOINT")
        log.log(
            logging.INFO if logged >= info_from else logging.DEBUG,
            "%s: %.1f MB of write-ahead log written into the store in %.2f s",
            what,
            logged / 1e6,
            time.perf_counter() - started,
        )

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Checkpoint after each gigabyte of write-ahead log rather than each 256 MB (or the
        configured size, if larger) while a bulk load runs in this process.

        Each checkpoint writes the ledgers' whole indexes again (duckdb/duckdb#24848), so
        its cost grows with the store: loading scale M (28.3M events) took 20 checkpoints
        of 1.2 to 4.3 s, 50 and 54 s in two loads of 310 and 323 s. With 1 GB: 5 of 4.5 to
        10.9 s, 33 and 36 s, and loads of 302 and 304 s (4% quicker), the loader's peak RSS
        4.3 GB against 3.4, and up to a gigabyte of log to replay after a crash (6.6 s for
        923 MB). 2 GB was no quicker (302 s, 5.5 GB). A server keeps 256 MB unless configured
        (``PARLEY_DUCKDB_CHECKPOINT_MB``): a checkpoint holds up the writes that wait for it.

        Nor are the newest rows put in order as they come (``_sort_newest``): a load's rows
        stay in the order it brings them (an export's, mostly org by org), and ``reorder``
        rewrites those of the tables whose reads need it when the load ends.
        """
        with self._write_lock:
            self._keep_waiting_state()
            self.checkpoint_bytes = max(BULK_CHECKPOINT_BYTES, self._steady_checkpoint_bytes)
            self._bulk_loading = True
        try:
            yield
        finally:
            with self._write_lock:
                self.checkpoint_bytes = self._steady_checkpoint_bytes
                self._bulk_loading = False
                self._newest_sorted(self._last_rowids_or_marks())

    def reorder(self) -> None:
        """Rewrite in their order (``REORDERED``: mostly time) the rows of each org in those
        tables that took at least one new row for every ``reorder_share`` it holds since they
        were last rewritten, each table and org in a transaction of its own (see
        ``reorder_sql``).

        Not done as events arrive: sorting each org as its rows doubled made loading the
        largest org of scale M 12 to 13% slower, more than the sorts themselves took. Once
        at the end of a bulk load it costs a sort of each org's rows (0.76 s for 1.8M).
        Rows that came over HTTP since count too: a live stream interleaves orgs, and the
        rewrite gathers each org's rows. Ingestion waits while it runs, and it is logged at
        INFO with its rows and time: at the end of a bulk load, seconds at scale M between
        the last line stored and the command's end. A rewrite that fails changes nothing
        and is logged: the rows stay as they arrived.
        """
        rewritten: dict[str, int] = defaultdict(int)
        with self._write_lock:
            started = time.perf_counter()
            self._keep_waiting_state()  # the rows its state adds are rewritten with the rest
            for table, added_by_org in self._added.items():
                for org, added in sorted(added_by_org.items()):
                    if (rows := self._reorder(table, org, added)) is not None:
                        del added_by_org[org]
                        rewritten[table] += rows
            if rewritten:
                log.info(
                    "reorder: %d rows of %s rewritten in their order in %.2f s",
                    sum(rewritten.values()),
                    ", ".join(sorted(rewritten)),
                    time.perf_counter() - started,
                )

    def _last_rowids_or_marks(self, tables: Iterable[str] = CLUSTERED) -> dict[str, int]:
        """The largest rowid of each of ``tables``, or where they were last marked if the
        store cannot read them: the next sort then rewrites more rows than it needs, no fewer."""
        try:
            return _last_rowids(self._con, tables)
        except duckdb.Error:
            log.exception("reading the tables' last rowids failed; their marks stay")
            return {table: self._sorted_upto[table] for table in tables}

    def _runs_kept(self) -> None:
        """Take up the runs of rows in order where the store's last clean close left them
        (``_keep_runs``), and forget them in the store: a process that ends without closing
        leaves none, and the next one counts from the rows it finds, as it would without.

        Before, each opening took every row it found as in order, so the rows a server took
        since its last rewrite stayed as they came for good: up to 250,000 rows of each
        table at every restart (a deployment, the bench's second server). A mark past a
        table's last row, or for a table the store does not know, is ignored; runs that
        cannot be read or forgotten are logged, and the opening counts from the rows.
        """
        try:
            kept = _meta(self._con, RUNS_KEY)
            if kept is None:
                return
            self._con.execute("DELETE FROM parley_meta WHERE key = ?", [RUNS_KEY])
            runs = {table: (int(mark), int(in_run)) for table, (mark, in_run) in orjson.loads(kept).items()}
        except (duckdb.Error, ValueError, TypeError, AttributeError):
            log.exception("the runs of rows in order kept at closing could not be read; counting from the rows")
            return
        for table, (mark, in_run) in runs.items():
            if table not in self._sorted_upto or not -1 <= mark <= self._sorted_upto[table]:
                continue
            after = self._con.execute(f"SELECT count(*) FROM {table} WHERE rowid > ?", [mark]).fetchall()[0][0]
            self._sorted_upto[table] = mark
            self._in_run[table] = min(in_run, after)
            self._unsorted[table] = after - self._in_run[table]

    def _keep_runs(self) -> None:
        """Keep each table's run of rows in order in ``parley_meta`` for the next opening
        (``_runs_kept``); the caller holds the write lock, and is closing the store. A store
        that cannot write it is closed all the same: the next opening counts from its rows."""
        runs = {table: [self._sorted_upto[table], self._in_run[table]] for table in CLUSTERED}
        try:
            _keep_meta(self._con, RUNS_KEY, orjson.dumps(runs).decode())
        except duckdb.Error:
            log.exception("keeping the runs of rows in order failed; the next opening counts from the rows")

    def _newest_sorted(self, upto: dict[str, int]) -> None:
        """Mark the rows up to ``upto`` (by table) as put in order, the rows after them to
        begin a run; the caller holds the write lock."""
        for table, last in upto.items():
            self._sorted_upto[table] = last
            self._unsorted[table] = 0
            self._in_run[table] = 0

    def _reorder(self, table: str, org: str, added: int) -> int | None:
        """Rewrite ``org``'s rows of ``table`` if it took enough new ones; how many rows it
        rewrote, or None if it did not."""
        held = self._con.execute(f"SELECT count(*) FROM {table} WHERE org = ?", [org]).fetchall()[0][0]
        if added * self.reorder_share < held:
            return None
        if not self._rewrite(table, reorder_sql(table), {"org": org}, f"the {table} rows of org {org!r}"):
            return None
        # The rows of other orgs written since the last run stay as they are.
        self._newest_sorted(self._last_rowids_or_marks((table,)))
        return held

    def _sort_newest(self, table: str) -> None:
        """Rewrite the rows of ``table`` written since the last time in its order (see
        ``sort_newest_sql``), in a transaction of its own; the caller holds the write lock.

        Scale M's data set, fed as it happened (every table rewritten in the order of time,
        all orgs interleaved), read with every table's runs of 1,000,000 rows in this order
        against without, 4 clients, 4 orgs of 5 workspaces, p50 in two rounds: over 365
        days the chats search 252 and 360 ms against 1,160 and 1,535, the assistants' usage
        149 and 205 against 386 and 539, cohorts 209 and 301 against 334 and 553, a user's
        cost 38 and 55 against 179 and 301 (benchmarks.md, "A store fed as it goes").
        Putting 1,000,000 messages in order takes about 2.7 s, as many rows of the other
        large tables 0.9 to 1.8, and holds ingestion up meanwhile.

        The rows that came are put in order with the run they join, every
        ``sort_newest_rows``, until it holds ``sorted_run_rows``: a store fed as it goes then
        keeps at most 250,000 rows of a table as they came, where runs of 1,000,000 alone
        left up to 1,000,000. A read whose conditions a workspace's rows meet takes whole
        vectors of 2,048 rows from DuckDB's compressed columns, and in rows as they came the
        rows it wants are spread over every vector. Scale M's data set with its newest
        1,700,000 events sent over HTTP as the bench sends them, the 30-day chats search
        took 64.3 to 75.6 ms p50 under 4 clients with runs of 1,000,000 alone, 52.6 to 56.8
        with runs rewritten as they grow (benchmarks.md, "Runs of rows in order rewritten
        as they grow"). A run rewritten as it grows sorts 2.5 times the rows that runs of
        1,000,000 alone sort, and keeps their size for the reads over a year. A rewrite that
        fails is tried again once as many rows came again.
        """
        self._in_run[table] += self._unsorted[table]
        self._unsorted[table] = 0
        mark = {"mark": self._sorted_upto[table]}
        done = self._rewrite(table, sort_newest_sql(table), mark, f"the newest {table} rows")
        if done and self._in_run[table] >= self.sorted_run_rows:
            self._newest_sorted(self._last_rowids_or_marks((table,)))

    def _rewrite(self, table: str, rewrite: Rewrite, params: dict[str, Any], rows: str) -> bool:
        """Write rows of ``table`` again in its order (``reorder_sql``, ``sort_newest_sql``)
        in a transaction of their own; whether it did. A rewrite that fails changes nothing
        and is logged, naming ``rows``. The caller holds the write lock, and marks the rows
        in order once committed (``_newest_sorted``): inside the transaction the new rows
        have rowids of its own."""
        try:
            with self._writing() as con:
                last = con.execute(f"SELECT max(rowid) FROM {table}").fetchall()[0][0]
                bounded = {**params, "last": last}
                if rewrite.aside is None:
                    written = con.execute(rewrite.copy, params).fetchall()[0][0]
                    removed = con.execute(rewrite.delete, bounded).fetchall()[0][0]
                else:
                    con.execute(rewrite.aside, bounded)
                    removed = con.execute(rewrite.delete, bounded).fetchall()[0][0]
                    written = con.execute(rewrite.copy).fetchall()[0][0]
                    con.execute(f"DROP TABLE {ASIDE}")
                if removed != written:  # never seen; the transaction then changes nothing
                    raise duckdb.InvalidInputException(f"wrote {written} of {rows}, removed {removed}")
        except (duckdb.Error, StoreUnavailable):
            log.exception("rewriting %s failed; the store is unchanged", rows)
            return False
        return True

    def _store_events(self, events: list[Event], batches: int = 1) -> tuple[set[Key], dict[Key, str]]:
        """(keys newly stored, reasons for keys the engine refused) of distinct ``events``, of
        ``batches`` callers, as ``GroupCommit`` hands them; the caller holds the write lock.

        The events of the people's tables (``PEOPLE_TABLES``) and the others are stored by
        two transactions at once, the people's on a connection of their own in a thread of
        its own: each claims its own events' ledger keys, and the state each keeps reads
        nothing the other writes. DuckDB runs the two side by side (it holds no lock of
        Python's), where one transaction kept one core busy and left the other to the
        clients: a live mix's transaction of 4,000 events at scale M, 177 against 138 ms
        in process (benchmarks.md, "Two transactions a group"). Each part commits or rolls
        back as a whole, as one transaction did. If both fail for the store's sake (a full
        disk), that is raised: nothing was stored. If one alone does, the other's events are
        stored all the same, and each of its own is refused with ``PART_UNAVAILABLE``, to be
        sent again. What follows a commit (``_stored``: counts, folds, rewrites) and a
        checkpoint run once both have ended.

        A lone caller's batch keeps its state in the transaction that stores its rows, so
        that a client that sends and then reads sees what it sent. A group of several
        callers' batches stores its rows and queues its events (``state_queue``), and is
        answered; the state of such groups is kept ``state_every_groups`` at a time
        (``_keep_state_beside``), or once no group came for ``state_wait_s``, or by the
        next lone caller. About 86 ms of a group is fixed whatever its rows, mostly its
        state's statements, paid so once for several groups: ten of them, the bench's live
        mix at scale M, 200,000 events over HTTP, 30,688 to 39,705 events/s against 21,787 to
        24,165 (benchmarks.md, "The state of several groups kept at once"); twenty since
        (``state_every_groups``).
        """
        keep_state = batches == 1 or self.state_every_groups <= 1
        people: list[Event] = []
        others: list[Event] = []
        for event in events:
            (people if event.type in PEOPLE_TYPES else others).append(event)
        committed: list[schema.ColumnBatch] = []
        store = partial(self._store_isolating, keep_state=keep_state)
        try:
            if not people or not others:
                return store(events, self._con, committed)
            beside = self._people_writer.submit(store, people, self._people_con, committed)
            try:
                mine = store(others, self._con, committed)
            except StoreUnavailable as exc:
                wait([beside])
                if beside.exception() is not None:
                    raise
                return _part_unavailable(beside.result(), others, exc)
            except BaseException:
                wait([beside])
                raise
            try:
                theirs = beside.result()
            except StoreUnavailable as exc:
                return _part_unavailable(mine, people, exc)
            return mine[0] | theirs[0], mine[1] | theirs[1]
        finally:
            for batch in committed:
                self._stored(batch)
            if keep_state:
                self._keep_waiting_state()
            elif committed:
                self._state_waiting += [batch.tables for batch in committed if batch.tables]
                self._groups_waiting += 1
                self._last_waiting_at = time.monotonic()
                if self._groups_waiting >= self.state_every_groups:
                    self._keep_state_beside()
                else:
                    self._keep_state_later(self.state_wait_s)
            self._checkpoint_if_due()

    def _keep_state_beside(self) -> None:
        """Have the waiting state kept by a thread of the store's own as soon as it takes the
        write lock, so that the callers of the group that filled ``state_every_groups`` are
        answered first, and their next batches are parsed and validated while it is kept;
        the caller holds the write lock. Kept here and now once twice as many groups wait
        (the thread has not had the lock meanwhile).

        Kept before the group's answer, the state of 10 groups (130 to 230 ms at scale M)
        held up the 4 clients' next batches, whose parsing and validation (about 10 ms each,
        Python's, one at a time) then came after it: over HTTP, the bench's live mix 6%
        quicker this way, the median of six pairs (-8 to +20%; 8% in six pairs of a first
        version, +1 to +11%; benchmarks.md, "Reads after the state of several groups, and
        the server's cycle collector").
        """
        if self._groups_waiting >= 2 * self.state_every_groups:
            self._keep_waiting_state()
        elif self._state_keeper is None or not self._state_keeper.is_alive():
            self._state_keeper = threading.Thread(target=self._keep_state_now, name="parley-state-keeper", daemon=True)
            self._state_keeper.start()

    def _keep_state_now(self) -> None:
        """The store's thread of ``_keep_state_beside``: keep what waits, unless the store closed."""
        with self._write_lock:
            if not self._closed:
                self._keep_waiting_state()
                self._checkpoint_if_due()

    def _keep_state_later(self, delay: float) -> None:
        """Have the waiting state kept once no group came for ``state_wait_s`` (a timer
        ``delay`` from now, unless one runs); the caller holds the write lock."""
        if self._state_timer is None or not self._state_timer.is_alive():
            self._state_timer = threading.Timer(delay, self._keep_state_if_paused)
            self._state_timer.daemon = True
            self._state_timer.start()

    def _keep_state_if_paused(self) -> None:
        with self._write_lock:
            if self._closed or not self._state_waiting:
                return
            left = self._last_waiting_at + self.state_wait_s - time.monotonic()
            if left > 0:
                self._state_timer = None
                self._keep_state_later(left)
                return
            self._keep_waiting_state()
            self._checkpoint_if_due()

    def _keep_waiting_state(self) -> None:
        """Keep the state of the rows stored without it (``_state_waiting``), all at once, in
        two transactions side by side as a group's rows are stored; the caller holds the
        write lock. Never raises: a failure for the store's sake (a full disk) leaves the
        state waiting, to be kept later (and the queue holds it for the next opening);
        the engine's refusal keeps each batch's alone, and a batch whose state the engine
        still refuses is logged and taken off the queue, its events stored and answered
        but missing from the state."""
        if not self._state_waiting:
            return
        waiting, self._state_waiting, self._groups_waiting = self._state_waiting, [], 0
        people = [tables for tables in waiting if tables.keys() <= PEOPLE_TABLES]
        others = [tables for tables in waiting if not tables.keys() <= PEOPLE_TABLES]
        beside = self._people_writer.submit(self._keep_state_of, self._people_con, people) if people else None
        left = self._keep_state_of(self._con, others) if others else []
        if beside is not None:
            left += beside.result()
        if left:
            self._state_waiting = left + self._state_waiting
            self._groups_waiting += 1
            if not self._closed:
                self._keep_state_later(self.state_wait_s)

    def _keep_state_of(
        self, con: duckdb.DuckDBPyConnection, batches: list[dict[str, pa.Table]]
    ) -> list[dict[str, pa.Table]]:
        """Keep the state of ``batches`` (tables of one part) on ``con``: together, else
        each alone if the engine refuses; the batches whose state must wait (the store
        unavailable) are returned."""
        try:
            _keep_state(con, _joined(batches))
            return []
        except StoreUnavailable:
            log.exception("keeping the state of stored events failed; it is kept later")
            return batches
        except (duckdb.Error, pa.ArrowException, OverflowError):
            if len(batches) == 1:
                log.exception("the store refused the state of a batch of stored events; it is left out")
                try:
                    with _transaction(con):
                        _registered(con, batches[0], lambda sources: con.execute(unqueue_state_sql(sources)))
                except (duckdb.Error, StoreUnavailable):
                    log.exception("taking those events off the state queue failed; the next opening tries again")
                return []
            return [left for batch in batches for left in self._keep_state_of(con, [batch])]

    def _keep_queued_state(self) -> None:
        """Keep the state of the events ``state_queue`` holds (stored and answered before a
        crash, their state not kept yet), in one transaction, as the store opens."""
        with self._write_lock, self._writing() as con:
            if not con.execute("SELECT EXISTS (FROM state_queue)").fetchall()[0][0]:
                return
            sources = {}
            for table in schema.TABLES:
                into = f"queued_{table.name}"
                if con.execute(queued_rows_sql(table.name, into)).fetchall()[0][0]:  # the rows it wrote
                    sources[table.name] = into
            queued = con.execute("SELECT count(*) FROM state_queue").fetchall()[0][0]
            _state_of(con, sources)
            con.execute("DELETE FROM state_queue")
            for table in schema.TABLES:
                con.execute(f"DROP TABLE queued_{table.name}")
            log.info("kept the state of %d events stored before the store last closed", queued)

    def _store_isolating(
        self,
        events: list[Event],
        con: duckdb.DuckDBPyConnection,
        committed: list[schema.ColumnBatch],
        *,
        keep_state: bool = True,
    ) -> tuple[set[Key], dict[Key, str]]:
        """``_store_events`` of ``events`` on ``con``, in one transaction unless the engine
        refuses one of them: then each alone, so that its neighbours still land. Each
        batch committed is added to ``committed``. ``keep_state``: keep the state of its
        rows in the same transaction, else queue their events (see ``_store_rows``)."""
        try:
            return set(self._store_batch(events, con, committed, keep_state=keep_state)), {}
        except (duckdb.Error, pa.ArrowException, OverflowError):
            if len(events) == 1:
                return set(), {(events[0].org, events[0].id): "the store refused this event"}
            stored: set[Key] = set()
            failed: dict[Key, str] = {}
            for event in events:
                one_stored, one_failed = self._store_isolating([event], con, committed, keep_state=keep_state)
                stored |= one_stored
                failed |= one_failed
            return stored, failed

    def _store_batch(
        self,
        events: list[Event],
        con: duckdb.DuckDBPyConnection,
        committed: list[schema.ColumnBatch],
        *,
        keep_state: bool = True,
    ) -> list[Key]:
        """Store distinct events in one transaction on ``con`` and add the batch to
        ``committed``; the caller holds the write lock.

        The ledgers' keys are first claimed by plain inserts, which the primary keys check
        through their indexes. If one is stored already the insert fails, and the batch is
        stored again skipping the keys stored: ``ON CONFLICT DO NOTHING``, which DuckDB plans
        as a join with a scan of the org's ledger rows, whatever the batch's size (about
        160 ms a statement for the entities of the largest org of scale M, against 1.5 ms
        for a plain insert of 1,000 keys). Only a batch that repeats an event or an entity
        pays that scan.
        """
        try:
            batch = schema.column_batch(events)
            with _transaction(con):
                self._store_columns(con, batch, keep_state=keep_state)
        except duckdb.ConstraintException:
            return self._store_skipping_stored(events, con, committed, keep_state=keep_state)
        committed.append(batch)
        return batch.keys

    def ingest_columns(self, batch: schema.ColumnBatch) -> list[Key] | None:
        """Store a batch built by ``schema.column_batch`` in one transaction and return its
        keys; or store nothing and return None if one of its events or entities is stored
        already or the engine refuses a row (the caller then stores its events through
        ``ingest``, which finds which).

        The bulk loader's path: its batches are built in other processes while this one
        stores (see ``parley.ingest.service.ingest_chunks``).
        """
        with self._write_lock:
            try:
                with self._writing() as con:
                    self._store_columns(con, batch)
            except (duckdb.Error, pa.ArrowException, OverflowError):
                return None
            self._stored(batch)
        return batch.keys

    def _store_columns(
        self, con: duckdb.DuckDBPyConnection, batch: schema.ColumnBatch, *, keep_state: bool = True
    ) -> None:
        """Claim the batch's ids and entities by plain inserts, then store its rows."""
        now = datetime.now(UTC).replace(tzinfo=None)
        con.register("ledger_batch", batch.ledger)
        con.execute("INSERT INTO event_ledger SELECT org, event_id, type, ? FROM ledger_batch", [now])
        con.unregister("ledger_batch")
        if batch.entities.num_rows:
            con.register("entity_batch", batch.entities)
            con.execute("INSERT INTO entity_ledger SELECT org, entity_key FROM entity_batch")
            con.unregister("entity_batch")
        self._store_rows(con, batch.tables, keep_state=keep_state)

    def _store_skipping_stored(
        self,
        events: list[Event],
        con: duckdb.DuckDBPyConnection,
        committed: list[schema.ColumnBatch],
        *,
        keep_state: bool = True,
    ) -> list[Key]:
        """Store the events whose id and entity are not stored yet, in one transaction on
        ``con``, and add the batch to ``committed``."""
        now = datetime.now(UTC).replace(tzinfo=None)
        with _transaction(con):
            con.register("ledger_batch", schema.event_ledger_rows(events))
            new_ids = set(
                con.execute(
                    "INSERT INTO event_ledger SELECT org, event_id, type, ? FROM ledger_batch "
                    "ON CONFLICT DO NOTHING RETURNING org, event_id",
                    [now],
                ).fetchall()
            )
            con.unregister("ledger_batch")
            batch = schema.column_batch(self._new_entities(con, [e for e in events if (e.org, e.id) in new_ids]))
            self._store_rows(con, batch.tables, keep_state=keep_state)
        committed.append(batch)
        return batch.keys

    @staticmethod
    def _store_rows(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], *, keep_state: bool = True) -> None:
        """Insert each table's rows, then keep the state derived from them (``_state_of``),
        or, not ``keep_state``, queue their events for it to be kept later."""

        def insert(sources: dict[str, str]) -> None:
            for name, source in sources.items():
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {source}")
            if keep_state:
                _state_of(con, sources)
            else:
                con.execute(queue_state_sql(sources))

        _registered(con, tables, insert)

    def _stored(self, batch: schema.ColumnBatch) -> None:
        """Note what a committed batch added (rows to reorder, members to forget), and fold
        the user cost days once enough observations came; the caller holds the write lock."""
        for table, sources in REORDERED_SOURCES.items():
            for name in sources:
                if name in batch.tables:
                    per_org = pc.value_counts(batch.tables[name]["org"])
                    orgs, rows = per_org.field("values").to_pylist(), per_org.field("counts").to_pylist()
                    for org, count in zip(orgs, rows, strict=True):
                        self._added[table][org] += count
        if "members" in batch.tables:  # committed: from now on a reader sees the new members
            self._auth.forget(MEMBER)
        if "observations" in batch.tables:
            self._observations_since_fold += batch.tables["observations"].num_rows
        if self._fold_due():
            self._fold_cost_days()
        if self._bulk_loading:
            return
        for table, sources in CLUSTERED_SOURCES.items():
            self._unsorted[table] += sum(batch.tables[name].num_rows for name in sources if name in batch.tables)
            if self._unsorted[table] >= self.sort_newest_rows:
                self._sort_newest(table)

    @staticmethod
    def _new_entities(con: duckdb.DuckDBPyConnection, events: list[Event]) -> list[Event]:
        """The events whose entity (for creates) is not stored yet, claiming those entities;
        upserts always pass. Of events of one entity, the first is the one stored."""
        keyed = [(event, schema.entity_key(event)) for event in events]
        first: dict[tuple[str, str], Event] = {}
        for event, key in keyed:
            if key is not None:
                first.setdefault((event.org, key), event)
        if not first:
            return events
        con.register("entity_batch", schema.entity_ledger_rows((org, key, e.id) for (org, key), e in first.items()))
        new = con.execute(
            "INSERT INTO entity_ledger SELECT org, entity_key FROM entity_batch "
            "ON CONFLICT DO NOTHING RETURNING org, entity_key"
        ).fetchall()
        con.unregister("entity_batch")
        winners = {id(first[key]) for key in new}
        return [event for event, key in keyed if key is None or id(event) in winners]

    # -- keys -------------------------------------------------------------------

    def find_api_key(self, key_id: str, *, remembered_only: bool = False) -> ApiKeyRecord | None:
        keys = self._auth.remembered((KEYS,)) if remembered_only else self._auth.get((KEYS,), self._all_api_keys)
        return keys.get(key_id)

    def _all_api_keys(self) -> dict[str, ApiKeyRecord]:
        """Every key by id, read by a scan without a condition.

        Read whole, an unknown id is answered from memory like a known one. And the read
        never waits for a checkpoint: DuckDB holds up a scan of a table with an index whose
        conditions are on one column, as the look-up of one key by its primary key was,
        until a running checkpoint ends (see ``_checkpoint_if_due``). The table holds a row
        per key made with ``parley keys``: 10,000 keys are read in 13 ms (one key by its
        index 0.4), once after each new key.
        """
        return key_records(self._fetchall(ALL_API_KEYS, {}))

    def get_member(
        self, *, org: str, workspace_id: str, member_id: int, remembered_only: bool = False
    ) -> MemberState | None:
        key = (MEMBER, org, workspace_id, member_id)
        if remembered_only:
            return self._auth.remembered(key)
        return self._auth.get(key, partial(super().get_member, org=org, workspace_id=workspace_id, member_id=member_id))

    def create_api_key(self, record: ApiKeyRecord) -> None:
        with self._write_lock, self._writing() as con:
            con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                [
                    record.key_id,
                    record.secret_hash,
                    record.org,
                    record.workspace_id,
                    record.member_id,
                    record.ingest,
                    record.created_at,
                ],
            )
        self._auth.forget(KEYS)

    def _store_revocation(self, revoked: ApiKeyRecord) -> None:
        with self._writing() as con:
            con.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [revoked.revoked_at, revoked.key_id])
        self._auth.forget(KEYS)

    # -- chats --------------------------------------------------------------------

    def export_chats(
        self,
        *,
        org: str,
        workspace_id: str,
        query: ChatQuery,
        batch_rows: int = EXPORT_BATCH_ROWS,
        whole_up_to: int = EXPORT_WHOLE_ROWS,
    ) -> Generator[pa.RecordBatch, None, None]:
        """Every matching chat, in order, in batches of ``batch_rows``.

        Up to ``whole_up_to`` chats are read by one statement, times left as timestamps,
        put in order by Arrow's sort, and their times formatted batch by batch
        (``times_as_text``); more are numbered first and formatted a range at a time
        (``_export_in_ranges``), so that memory stays flat however many match. The count
        that chooses is one more statement (2.6 ms for the largest workspace of scale M,
        warm).

        Arrow rather than an ORDER BY: DuckDB's sort moved every row's text through it,
        times formatted included. The largest workspace of scale M in process, with the
        server's allocator, in a slow hour: the sorted statement 145 to 174 ms, against
        61 to 70 for reading the rows unsorted, 6 to 7 for Arrow's sort, 20 to 22 for
        taking the rows in order and 33 to 36 for formatting the times.
        """
        # A cursor of its own: the stream is consumed from whichever thread serves it, and
        # what it leaves (a result, a temporary table) is seen by no other connection.
        cursor = self._cursor()
        try:
            counted, params = self._chat_sql(org, workspace_id, query)
            total = cursor.execute(counted.count(query), params.values).fetchall()[0][0]
            if total <= whole_up_to:
                sql, params = self._chat_sql(org, workspace_id, query, like=counted)
                statement = f"""
                WITH {sql.relation()}
                SELECT {sql.export_columns()} FROM chats WHERE {sql.where(query)}
                """
                rows = cursor.sql(statement, params=params.values).to_arrow_table()
                rows = rows.take(pc.sort_indices(rows, sort_keys=sql.export_sort_keys(query)))
                for batch in rows.to_batches(max_chunksize=batch_rows):
                    yield times_as_text(batch)
            else:
                yield from self._export_in_ranges(cursor, org, workspace_id, query, batch_rows, like=counted)
        finally:
            cursor.close()

    def _export_in_ranges(
        self,
        cursor: duckdb.DuckDBPyConnection,
        org: str,
        workspace_id: str,
        query: ChatQuery,
        batch_rows: int,
        *,
        like: ChatSql,
    ) -> Iterator[pa.RecordBatch]:
        """An export without ever sorting whole rows.

        First the matching ids alone are numbered in order (16 bytes a chat, in a
        temporary table of the export's own cursor), without the member names unless a
        filter reads them (3.3 ms less of 9.7 for the 39,966 chats of the largest workspace
        at scale M); then the rows are formatted a range of numbers at a time. ``like`` is
        the builder that counted the matching chats, whose look-up is taken again.
        """
        sql, params = self._chat_sql(org, workspace_id, query, like=like)
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE export_order AS
            WITH {sql.relation_for(query)}
            SELECT id, row_number() OVER (ORDER BY {sql.order(query)}) AS position
            FROM chats WHERE {sql.where(query)}
            """,
            params.values,
        )
        total = cursor.execute("SELECT count(*) FROM export_order").fetchall()[0][0]
        for start in range(0, total, batch_rows):
            rows_sql, row_params = self._chat_sql(org, workspace_id)
            first, last = row_params.add(start + 1, "int"), row_params.add(start + batch_rows, "int")
            # The rows come back in join order and are put in place by Arrow: an
            # ORDER BY here made DuckDB hold a sort's memory on top (about 12 MB more
            # peak RSS over an export of 1M chats).
            statement = f"""
            WITH {rows_sql.relation()}
            SELECT o.position AS position, {rows_sql.export_columns()}
            FROM export_order o JOIN chats USING (id)
            WHERE o.position BETWEEN {first} AND {last}
            """
            rows = cursor.sql(statement, params=row_params.values).to_arrow_table()
            in_order = rows.take(pc.sort_indices(rows["position"])).drop_columns(["position"])
            for batch in in_order.to_batches():
                yield times_as_text(batch)
