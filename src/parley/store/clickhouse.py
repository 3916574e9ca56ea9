"""The ClickHouse store: the same tables and queries on ClickHouse's engine.

Two transports run the very same SQL: ``chdb:///dir`` embeds ClickHouse's engine
in the process (what the tests use, and a valid single-node deployment), and
``clickhouse://user:pass@host:8123/db`` talks to a server or cluster over HTTP
through clickhouse-connect.

Layout: every event table is a MergeTree ordered by tenant then event time and
partitioned by month, so range filters prune. Idempotency is checked against two
ledgers before rows are written (one writer per process, under a lock); a batch's
events are claimed in the ledger before their rows are inserted, so that the rows of a
batch cut short are looked for when it is sent again, and only the missing ones
stored. The ledgers are ReplacingMergeTree tables: their repeated rows collapse in the
background. Chat
state is folded at query time with ``argMaxIf`` over the chat events (ClickHouse
aggregates a million chats in well under a second).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from parley.ingest.events import Event
from parley.metrics.chats.query import ChatQuery
from parley.store import schema
from parley.store.chat_sql import (
    CHAT_LIST_COLUMNS,
    MEMBER_COLUMNS,
    MEMBER_JOINS,
    UNBOUNDED,
    UPDATABLE,
    UPSERT_ONLY,
    ChatSql,
    CreatedBounds,
    times_as_text,
)
from parley.store.dialect import Params
from parley.store.group_commit import GroupCommit, Key
from parley.store.port import ApiKeyRecord, StoreLocked, StoreOutcome, StoreUnavailable
from parley.store.series_sql import SeriesSql
from parley.store.sql_store import SqlStore
from parley.timeseries import ZoneSpan, utc_naive

CH_TYPES = {
    "str": "String",
    "int": "Int64",
    "float": "Float64",
    "bool": "Bool",
    "time": "DateTime64(6, 'UTC')",  # bound values are UTC, whatever the server's zone
    "date": "Date",
    "str_list": "Array(String)",
    "int_list": "Array(Int64)",
}
COLUMN_TYPES = {
    schema.STR: "Nullable(String)",
    schema.INT: "Nullable(Int64)",
    schema.BOOL: "Nullable(Bool)",
    schema.TIME: "Nullable(DateTime64(6, 'UTC'))",
    schema.JSON: "Nullable(String)",
    schema.STR_LIST: "Array(String)",
}
NOT_NULL = {"org": "String", "event_id": "String", "ts": "DateTime64(6, 'UTC')"}
# A batch may span any number of months (a backfill of years): ClickHouse refuses an
# insert into more than 100 partitions by default.
QUERY_SETTINGS = {"join_use_nulls": 1, "max_partitions_per_insert_block": 0}
EXPORT_BATCH_ROWS = 10_000
ID_COLUMN = f"c{CHAT_LIST_COLUMNS.index('id')}"  # of ChatSql.export_columns
# Statements at once on the embedded engine (a connection each): two cores' worth and a
# little more, so that a request's short statements fill the gaps of another's.
CHDB_CONNECTIONS = 4

log = logging.getLogger(__name__)


class ClickHouseDialect:
    def placeholder(self, name: str, type_: str) -> str:
        return f"{{{name}:{CH_TYPES[type_]}}}"

    def latest(self, expr: str, where: str) -> str:
        # A tuple is never NULL, so an explicit null value still wins when it is newest.
        return f"argMaxIf(tuple({expr}), (ts, event_id), {where}).1"

    def arg_max_if(self, expr: str, key: str, where: str) -> str:
        return f"argMaxIf({expr}, {key}, {where})"

    def unnest(self, list_expr: str) -> str:
        return f"arrayJoin({list_expr})"

    def has(self, list_expr: str, value_sql: str) -> str:
        return f"has({list_expr}, {value_sql})"

    def icontains(self, haystack: str, needle: str) -> str:
        return f"(positionCaseInsensitiveUTF8({haystack}, {needle}) > 0)"

    def meta_str(self, json_col: str, key_sql: str) -> str:
        return f"if(JSONType({json_col}, {key_sql}) = 'String', JSONExtractString({json_col}, {key_sql}), NULL)"

    def meta_num(self, json_col: str, key_sql: str) -> str:
        return (
            f"if(JSONType({json_col}, {key_sql}) IN ('Int64', 'UInt64', 'Double'), "
            f"JSONExtractFloat({json_col}, {key_sql}), NULL)"
        )

    def meta_bool(self, json_col: str, key_sql: str) -> str:
        return f"if(JSONType({json_col}, {key_sql}) = 'Bool', JSONExtractBool({json_col}, {key_sql}) = 1, NULL)"

    def meta_present(self, json_col: str, key_sql: str) -> str:
        return f"coalesce(JSONType({json_col}, {key_sql}) != 'Null', false)"

    def meta_key(self, key: str) -> str:
        return key

    def text(self, expr: str) -> str:
        return f"toString({expr})"

    def bucket_key(self, expr: str, granularity: str, zone: ZoneSpan | None, params: Params) -> str:
        tz_sql = "'UTC'" if zone is None else params.add(zone.name, "str")
        # Functions that keep the whole range of a DateTime64: ``toDate``, ``toMonday`` and
        # ``toStartOfHour`` give a Date or DateTime, which wrap or saturate outside 1970 to
        # 2149 (2106 for DateTime): a call in 2200 would count on a day of 2020.
        if granularity == "hourly":
            return f"toDateTime64(toTimeZone(dateTrunc('hour', {expr}, {tz_sql}), 'UTC'), 6, 'UTC')"
        if granularity == "weekly":
            return f"toDate32({expr}, {tz_sql}) - (toDayOfWeek({expr}, 0, {tz_sql}) - 1)"
        return f"toDate32({expr}, {tz_sql})"


DIALECT = ClickHouseDialect()


def _ranked(table: str, key: str, where: str) -> str:
    """The rows of ``table`` meeting ``where``, each with its ``rank`` among the rows of its
    ``key``: 1, 2, ... in the order of their events' ``(ts, event_id)``, which ``_newest``
    reads."""
    rank = f"row_number() OVER (PARTITION BY {key} ORDER BY ts, event_id) AS rank"
    return f"(SELECT *, {rank} FROM {table} WHERE {where})"


def _newest(column: str, condition: str) -> str:
    """Aggregated over ``_ranked`` rows: the value of ``column`` in the newest row meeting
    ``condition``, null when that value is null or no row meets it.

    ``argMaxIf`` passes over null values, so the newest value's nullness is found apart, a
    flag aggregated by a number. ``ClickHouseDialect.latest`` carries each value in a tuple
    by the pair ``(ts, event_id)``, which took 2.7 times as long for the chats' state (the
    largest workspace of scale M, 67,442 events of 50,000 chats: 406 against 147 ms, the
    four fields only an upsert sets taken as one tuple) and 1.5 times for the users'
    registrations (an org's 50,000: 46 against 32 ms).
    """
    return f"if(argMaxIf(isNull({column}), rank, {condition}), NULL, argMaxIf({column}, rank, {condition}))"


class ClickHouseChatSql(ChatSql):
    """Chat state folded from the chat events at query time."""

    def relation(self, *, members: bool = True, messages: bool = True, created: CreatedBounds = UNBOUNDED) -> str:
        # A CTE left unused still costs its scan when joined, so each is written only when
        # wanted: without the messages' counts, the chats needing a response and the tool
        # names took 41 and 44 ms rather than 55 and 68 in chdb (the S bench's largest
        # workspace, 23,000 messages).
        d = self.d
        since, before = (None if bound is None else self.p.add(bound, "time") for bound in created)
        chosen = f"{self.tenant()}{self._created_within(since, before)}"
        upserted = "op = 'upsert'"
        set_by = {c: d.has("fields_set", repr(c)) for c in UPDATABLE}
        set_by["metadata_text"] = set_by["metadata"]
        fields = [f"{_newest(c, condition)} AS {c}" for c, condition in set_by.items()]
        # Read from the projection ``chat_messages`` (``PROJECTIONS``): keep its grouping
        # and aggregates, or the statement reads every message of the workspace again.
        message_stats = f"""
        message_stats AS (
            SELECT chat_id, count() AS message_count, max(created_at) AS last_message_at
            FROM messages WHERE {chosen}
            GROUP BY chat_id
        ),"""
        message_columns = ", coalesce(m.message_count, 0) AS message_count, m.last_message_at AS last_message_at"
        return f"""
        chat_state AS (
            SELECT * EXCEPT upsert, {", ".join(f"upsert.{i} AS {c}" for i, c in enumerate(UPSERT_ONLY, start=1))}
            FROM (
                SELECT chat_id, argMaxIf(tuple({", ".join(UPSERT_ONLY)}), rank, {upserted}) AS upsert,
                       {", ".join(fields)}, max(ts) AS updated_at, countIf({upserted}) AS upserts
                FROM {_ranked("chat_events", "chat_id", chosen)}
                GROUP BY chat_id
            )
        ),
        {message_stats if messages else ""}
        {f"{self.member_state()}," if members else ""}
        chats AS (
            SELECT s.chat_id AS id,
                   {", ".join(f"s.{c} AS {c}" for c in (*UPSERT_ONLY, *set_by))},
                   s.updated_at AS updated_at
                   {message_columns if messages else ""}
                   {f", {MEMBER_COLUMNS}" if members else ""}
            FROM chat_state s
            {"LEFT JOIN message_stats m ON m.chat_id = s.chat_id" if messages else ""}
            {MEMBER_JOINS if members else ""}
            WHERE s.upserts > 0
        )"""

    def _created_within(self, since: str | None, before: str | None) -> str:
        """A condition on ``chat_id``, with its leading AND, keeping the chats that have an
        upsert created within the bounds (placeholders, inclusive), empty when there are
        none. A chat's ``created_at`` is its newest upsert's, so the chats kept include
        every chat created within them, each with all its events, and a fold of theirs
        reads those chats alone.

        At scale M (the largest workspace: 50,000 chats, 5,447 of them created in the
        bench's 30 days), in process, runs of the old and new code interleaved: the 30-day
        chats list 317 to 354 -> 97 to 132 ms, 828 to 1,159 -> 431 to 498 under 4 threads;
        the search 285 to 400 -> 147 to 190; the daily creation 117 to 133 -> 57 to 76.
        Over 365 days every chat is kept: the list and the search took as long as before
        within the runs' spread (the search 332 to 434 against 294 to 426).
        """
        if since is None and before is None:
            return ""
        conditions = [self.tenant(), "op = 'upsert'"]
        if since is not None:
            conditions.append(f"created_at >= {since}")
        if before is not None:
            conditions.append(f"created_at <= {before}")
        return f" AND chat_id IN (SELECT chat_id FROM chat_events WHERE {' AND '.join(conditions)})"

    def chats_saying(self, needle: str, since: str | None) -> str:
        # Every message of the workspace: no oldest-message time per chat bounds it here.
        # Kept to the chats created since ``since`` (``_created_within``), the search took
        # as long at 30 days (185 and 204 ms against 200 and 181) and longer at 365 (471
        # and 494 against 417 and 399).
        return f"SELECT chat_id FROM messages WHERE {self.tenant()} AND {self.d.icontains('content', needle)}"

    def tool_names(self, q: ChatQuery) -> str:
        return f"""
        WITH {self.relation_for(q)}
        SELECT DISTINCT name FROM (
            SELECT {self.d.unnest("tool_names")} AS name FROM messages
            WHERE {self.tenant()} AND chat_id IN (SELECT id FROM chats WHERE {self.where(q)})
        )
        """


class ClickHouseSeriesSql(SeriesSql):
    """Activity and user cost resolved through sessions at query time (nothing is updated in place)."""

    def _activity(self, mentor_id: str | None) -> str:
        # Traces and feedback meet the org's sessions in one join: ClickHouse builds a join's
        # table of sessions each time it is written. (A feedback always names its user, so
        # only its mentor ever comes from its session.)
        mentor = "" if mentor_id is None else f"WHERE mentor_id = {self.p.add(mentor_id, 'str')}"
        return f"""
        {self._people()},
        all_activity AS (
            SELECT user_id, mentor_id, started_at AS at
            FROM sessions WHERE org = {self.org} AND {self.in_range("started_at")}
            UNION ALL
            SELECT coalesce(e.user_id, s.user_id), coalesce(e.mentor_id, s.mentor_id), e.at
            FROM (
                SELECT user_id, mentor_id, session_id, traced_at AS at
                FROM traces WHERE org = {self.org} AND {self.in_range("traced_at")}
                UNION ALL
                SELECT user_id, mentor_id, session_id, created_at
                FROM feedback WHERE org = {self.org} AND {self.in_range("created_at")}
            ) e
            LEFT JOIN session_people s ON s.session_id = e.session_id
        ),
        activity AS (SELECT * FROM all_activity {mentor})"""

    def _costs(self, user_id: str) -> str:
        # A trace is the user's by its own user_id, else by its session's: no join with
        # every session of the org, only a look-up in the user's few sessions.
        subject = self.p.add(user_id, "str")
        return f"""costs AS (
            SELECT model, input_tokens, output_tokens, cost_pusd, 1 AS n
            FROM observations
            WHERE org = {self.org} AND trace_id IN (
                SELECT trace_id FROM traces
                WHERE org = {self.org} AND {self.in_range("traced_at")}
                  AND (user_id = {subject}
                       OR (user_id IS NULL AND session_id IN (
                           SELECT session_id FROM sessions WHERE org = {self.org} AND user_id = {subject}
                       )))
            )
        )"""

    def user_cost_by_model(self, user_id: str) -> str:
        # ``costs`` is read once: ClickHouse runs a CTE at each of its references.
        uncosted = "cost_pusd IS NULL"
        return f"""
        WITH {self._costs(user_id)}
        SELECT model, toString(sum(toInt128(coalesce(cost_pusd, 0)))),
               toString(sumIf(toInt128(coalesce(input_tokens, 0)), {uncosted})),
               toString(sumIf(toInt128(coalesce(output_tokens, 0)), {uncosted})),
               toUInt64(sumIf(n, {uncosted}))
        FROM costs GROUP BY model
        """

    def cohorts(self, granularity: str, tz: str, mentor_id: str | None) -> str:
        # The users' registrations are folded from their events at each reading: one join
        # folds them once, where the two branches of the cohorts without a mentor folded them
        # twice (in chdb at scale S, 0.1 to 7 ms of 31 to 53 a request; at scale M, 28 to 59 ms
        # of 150 to 201 over 30 and 7 days, and within 7% over 365; benchmarks.md).
        return self._cohorts_in_one_join(granularity, tz, mentor_id)

    def _registered(self, condition: str) -> str:
        return f"""(
            SELECT user_id, registered_at FROM (
                SELECT user_id, {_newest("registered_at", "true")} AS registered_at
                FROM {_ranked("users", "user_id", f"org = {self.org}")}
                GROUP BY user_id
            ) WHERE {condition}
        )"""


# -- transports ------------------------------------------------------------------------

# ClickHouse's codes (ErrorCodes.cpp, which never renumbers) for a statement failing for
# the machine's or the server's sake rather than its own: it may succeed later, once the
# cause is mended or the load has passed.
MACHINE_ERRORS = {
    74: "CANNOT_READ_FROM_FILE_DESCRIPTOR",
    75: "CANNOT_WRITE_TO_FILE_DESCRIPTOR",
    159: "TIMEOUT_EXCEEDED",
    172: "CANNOT_CREATE_DIRECTORY",
    173: "CANNOT_ALLOCATE_MEMORY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    204: "CANNOT_FSYNC",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    745: "SERVER_OVERLOADED",
}


def _error_code(err: Exception) -> int | None:
    code = getattr(err, "code", None)  # clickhouse-connect's errors carry it
    if isinstance(code, int):
        return code
    found = re.match(r"Code: (\d+)\.", str(err))  # chdb's message begins with it
    return int(found[1]) if found else None


@contextmanager
def _machine_failures(unreachable: type[Exception] | None = None) -> Iterator[None]:
    """Raise ``StoreUnavailable``, the store's failure, for a statement failing for the
    machine's sake (``MACHINE_ERRORS``: a full disk, no memory, a server overloaded), or
    for an ``unreachable`` error without a code (a server that does not answer): a 503
    telling the client to come back, rather than a 500."""
    try:
        yield
    except Exception as err:
        code = _error_code(err)
        if code in MACHINE_ERRORS or (code is None and unreachable and isinstance(err, unreachable)):
            raise StoreUnavailable(f"ClickHouse cannot do it now: {err}") from err
        raise


class Transport(Protocol):
    def query(self, sql: str, params: dict[str, Any]) -> pa.Table: ...

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def insert(self, table: str, rows: pa.Table) -> None: ...

    def writing(self) -> AbstractContextManager[None]:
        """The calling thread's statements in the block are the store's writer's."""
        ...

    def close(self) -> None: ...


def _text(value: Any) -> str:
    """A parameter value in ClickHouse's text format (what chdb's binding expects)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_quoted(v) for v in value) + "]"
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def _time_text(value: datetime) -> str:
    """A naive UTC time as DateTime64(6) text, years of four digits: ``strftime``'s
    ``%Y`` (which clickhouse-connect renders with too) gives ``1-01-01`` for year 1."""
    return value.isoformat(sep=" ", timespec="microseconds")


def http_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters for clickhouse-connect, which escapes the rest itself; times as text."""
    return {k: _time_text(v) if isinstance(v, datetime) else v for k, v in params.items()}


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _text(value)


class ChdbTransport:
    """The embedded engine through a few connections, so that statements of several
    threads run at once (chdb runs each connection's statements in parallel with the
    others'; one connection runs one at a time), and one connection more for the writer.

    The store writes one batch at a time (under its write lock), a dozen statements or more
    a batch; on the shared connections each waited for a free one behind the reads. With a
    connection of its own, on chdb at scale M with ten readers polling the server, 4 clients'
    batches went in 2.0 to 2.5 times quicker (1,387 and 1,996 events/s against 676 and 810),
    the reads about as quick (benchmarks.md, "ClickHouse at scale M, a whole bench").
    """

    def __init__(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"{path} could not be made a chdb data directory: {err}") from None
        self._path = path
        try:
            first = self._connect()
        except RuntimeError as err:
            # chdb admits one process per data directory, like DuckDB per file.
            raise StoreLocked(
                f"{path} could not be opened ({err}); if another process holds it, run the command through "
                "the Parley server that holds it, or stop that process"
            ) from err
        self._idle = [first]  # the most recently used first out, so one thread keeps to one
        self._opened = [first]
        self._slots = threading.BoundedSemaphore(CHDB_CONNECTIONS)
        self._guard = threading.Lock()
        self._closed = False
        self._writer: Any = None  # made at the first write: a server that only reads needs none
        self._writer_held = threading.Lock()
        self._local = threading.local()  # .writer: the writer's connection, in a writing thread

    def _connect(self) -> Any:
        import chdb

        connection = chdb.connect(str(self._path))
        for name, value in QUERY_SETTINGS.items():
            connection.query(f"SET {name} = {value}")
        return connection

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._writer_held:
            with self._guard:
                if self._closed:
                    raise RuntimeError(f"the chdb store at {self._path} is closed")
            if self._writer is None:
                self._writer = self._connect()
                with self._guard:
                    self._opened.append(self._writer)
            self._local.writer = self._writer
            try:
                yield
            finally:
                self._local.writer = None

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        writer = getattr(self._local, "writer", None)
        if writer is not None:
            with _machine_failures():
                yield writer
            return
        with self._slots:
            with self._guard:
                if self._closed:
                    raise RuntimeError(f"the chdb store at {self._path} is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._connect()
                with self._guard:
                    self._opened.append(connection)
            try:
                with _machine_failures():
                    yield connection
            finally:
                with self._guard:
                    self._idle.append(connection)

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        with self._connection() as connection:
            return connection.query(sql, "ArrowTable", params={k: _text(v) for k, v in params.items()})

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._connection() as connection:
            connection.query(sql, params={k: _text(v) for k, v in (params or {}).items()})

    def insert(self, table: str, rows: pa.Table) -> None:
        # From the Arrow table itself (the Python table function finds ``rows`` here by
        # name). Not chdb's streaming insert (``send_insert``), whose ``finish`` reports
        # the rows written even when writing the part failed (no space left, too many
        # partitions): acknowledged, and lost.
        columns = ", ".join(rows.column_names)
        with self._connection() as connection:
            connection.query(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM Python(rows)")

    def close(self) -> None:
        """Close every connection once the statements running on them have ended."""
        self._writer_held.acquire()
        for _ in range(CHDB_CONNECTIONS):
            self._slots.acquire()
        try:
            with self._guard:
                self._closed = True
                for connection in self._opened:
                    connection.close()
                self._opened.clear()
                self._idle.clear()
                self._writer = None
        finally:
            for _ in range(CHDB_CONNECTIONS):
                self._slots.release()
            self._writer_held.release()


class ConnectTransport:
    """A clickhouse-connect client: a ClickHouse server over HTTP (``over_http``), or in
    the tests its chdb backend, which drives the same client methods, parameter binding
    and Arrow conversions as the HTTP one."""

    def __init__(self, client: Any) -> None:
        from clickhouse_connect.driver.exceptions import OperationalError

        self._client = client
        self._unreachable = OperationalError  # how the client says the server did not answer

    @classmethod
    def over_http(cls, url: str) -> ConnectTransport:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error as ClickHouseError

        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 8123
        try:
            client = clickhouse_connect.get_client(
                host=host,
                port=port,
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                database=parts.path.lstrip("/") or "default",
                settings=QUERY_SETTINGS,
                # No session: the client gives itself one by default, and ClickHouse runs one
                # statement at a time in a session (SESSION_IS_LOCKED for a second), which the
                # client enforces itself (a ProgrammingError): the server's requests at once,
                # each on its own thread, would fail. Nothing here needs a session's state.
                autogenerate_session_id=False,
            )
        except ClickHouseError as err:  # it connects at once, to learn the server's settings
            raise StoreUnavailable(f"ClickHouse at {host}:{port} could not be reached: {err}") from None
        return cls(client)

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        with _machine_failures(self._unreachable):
            return self._client.query_arrow(sql, parameters=http_params(params))

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with _machine_failures(self._unreachable):
            self._client.command(sql, parameters=http_params(params or {}))

    def insert(self, table: str, rows: pa.Table) -> None:
        # Batched on the server, and acknowledged only once written.
        with _machine_failures(self._unreachable):
            self._client.insert_arrow(table, rows, settings={"async_insert": 1, "wait_for_async_insert": 1})

    def writing(self) -> AbstractContextManager[None]:
        return nullcontext()  # the server runs the requests of its clients at once itself

    def close(self) -> None:
        self._client.close()


# -- the store -------------------------------------------------------------------------

# Each insert's part, and its directory, synced to the disk before the insert returns: an
# acknowledged event outlives the machine's crash or a power cut, as DuckDB's log, synced
# at each commit, makes it. ClickHouse syncs neither by default, and the server sets a
# part that a power cut left unwritten aside as broken when it starts again: events
# answered, which their clients will not send again. The price, and how an operator who
# keeps replicas instead turns it off: docs/clickhouse.md, "Durability".
DURABLE_INSERTS = "fsync_after_insert = 1, fsync_part_directory = 1"

# Parley's tables beside those of ``schema.TABLES``, each with the statements that make it
# and bring one made by an older Parley up to date, in order.
_FIXED_DDL = {
    "parley_meta": (
        "CREATE TABLE IF NOT EXISTS parley_meta (key String, value String) ENGINE = ReplacingMergeTree "
        f"ORDER BY key SETTINGS {DURABLE_INSERTS}",
    ),
    "event_ledger": (
        "CREATE TABLE IF NOT EXISTS event_ledger (org String, event_id String, type String, "
        "ingested_at DateTime64(6, 'UTC'), before_rows Bool DEFAULT false) "
        f"ENGINE = ReplacingMergeTree ORDER BY (org, event_id) SETTINGS {DURABLE_INSERTS}",
        # Made when an event's ledger entry was written after its rows (see ``_insert``).
        "ALTER TABLE event_ledger ADD COLUMN IF NOT EXISTS before_rows Bool DEFAULT false",
        # The time of the row a claim ``before_rows`` promises; made when claims did not keep it.
        "ALTER TABLE event_ledger ADD COLUMN IF NOT EXISTS ts Nullable(DateTime64(6, 'UTC'))",
    ),
    "entity_ledger": (
        "CREATE TABLE IF NOT EXISTS entity_ledger (org String, entity_key String, event_id Nullable(String)) "
        f"ENGINE = ReplacingMergeTree ORDER BY (org, entity_key) SETTINGS {DURABLE_INSERTS}",
        # The event claiming the entity; made when claims did not keep it.
        "ALTER TABLE entity_ledger ADD COLUMN IF NOT EXISTS event_id Nullable(String)",
    ),
    "api_keys": (
        "CREATE TABLE IF NOT EXISTS api_keys (key_id String, secret_hash String, org String, "
        "workspace_id Nullable(String), member_id Nullable(Int64), ingest Bool, created_at DateTime64(6, 'UTC'), "
        "revoked_at Nullable(DateTime64(6, 'UTC'))) ENGINE = ReplacingMergeTree ORDER BY key_id "
        f"SETTINGS {DURABLE_INSERTS}",
        # Made before keys could be revoked.
        "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS revoked_at Nullable(DateTime64(6, 'UTC'))",
    ),
}


# Aggregate projections, by table: (name, query). ClickHouse keeps each in every part of
# its table, written with the part's rows and merged with them, and a statement that
# groups the table's rows by the projection's keys reads it instead of the rows, exactly.
# ``chat_messages`` holds each chat's message count and newest message (``message_stats``
# in ``ClickHouseChatSql.relation``): a chats list read every message of the workspace.
PROJECTIONS = {
    "messages": (
        "chat_messages",
        "SELECT org, workspace_id, chat_id, count(), max(created_at) GROUP BY org, workspace_id, chat_id",
    ),
}
# A lightweight delete (a refused batch withdrawn, ``_withdraw``) of a table with a
# projection rebuilds the projection of the parts it touches; ClickHouse refuses such a
# delete by default (``throw``).
PROJECTION_SETTINGS = "lightweight_mutation_projection_mode = 'rebuild'"


def _table_ddl(table: schema.Table) -> str:
    cols = ", ".join(f"{c.name} {NOT_NULL.get(c.name, COLUMN_TYPES[c.type])}" for c in table.columns)
    projection = PROJECTIONS.get(table.name)
    if projection is not None:
        cols += f", PROJECTION {projection[0]} ({projection[1]})"
    return (
        f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}) ENGINE = MergeTree "
        f"PARTITION BY toYYYYMM(ts) ORDER BY (org, ts, event_id) SETTINGS {DURABLE_INSERTS}"
        + ("" if projection is None else f", {PROJECTION_SETTINGS}")
    )


def _key_row(record: ApiKeyRecord) -> pa.Table:
    return pa.table(
        {
            "key_id": [record.key_id],
            "secret_hash": [record.secret_hash],
            "org": [record.org],
            "workspace_id": pa.array([record.workspace_id], pa.string()),
            "member_id": pa.array([record.member_id], pa.int64()),
            "ingest": [record.ingest],
            "created_at": pa.array([record.created_at], pa.timestamp("us")),
            "revoked_at": pa.array([record.revoked_at], pa.timestamp("us")),
        }
    )


def _with_row_times(ledger: pa.Table, tables: dict[str, pa.Table]) -> pa.Table:
    """``ledger``'s claims, each with the time (``ts``) of its event's row in ``tables``,
    null for an event with no row there (its entity came before it). In no set order."""
    rows = [table.select(["org", "event_id", "ts"]) for table in tables.values()]
    if not rows:
        return ledger.append_column("ts", pa.nulls(ledger.num_rows, pa.timestamp("us")))
    return ledger.join(pa.concat_tables(rows), keys=["org", "event_id"], join_type="left outer")


def _naive_utc(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC, the stores' common currency."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


class ClickHouseStore(SqlStore):
    dialect = DIALECT
    chat_sql_class = ClickHouseChatSql
    series_sql_class = ClickHouseSeriesSql

    def __init__(self, transport: Transport, url: str) -> None:
        self.url = url
        self._transport = transport
        self._write_lock = threading.Lock()
        # Concurrent callers' batches stored together (see ``ingest``).
        self._commits = GroupCommit(self._write_lock, self._store_events)
        try:
            self._migrate()
        except BaseException:
            # Released at once, not when the cycle collector finds this store (``_commits``
            # refers back to it): the same store can be opened again straight away.
            self._transport.close()
            raise

    def _migrate(self) -> None:
        for statements in _FIXED_DDL.values():
            for ddl in statements:
                self._transport.command(ddl)
        found = self._fetchall("SELECT value FROM parley_meta FINAL WHERE key = 'schema_version'", {})
        if found and int(found[0][0]) > schema.SCHEMA_VERSION:
            raise RuntimeError(f"this store has schema version {found[0][0]}; upgrade Parley")
        for table in schema.TABLES:
            self._transport.command(_table_ddl(table))
        for table, (name, query) in PROJECTIONS.items():
            self._add_projection(table, name, query)
        self._make_inserts_durable()
        if not found or int(found[0][0]) < schema.SCHEMA_VERSION:
            # Of a meta key's rows, FINAL keeps the newest: this one.
            self._transport.insert(
                "parley_meta", pa.table({"key": ["schema_version"], "value": [str(schema.SCHEMA_VERSION)]})
            )

    def _add_projection(self, table: str, name: str, query: str) -> None:
        """Give ``table``, made before its projection ``name``, the projection: its parts
        written from now on have it, and the others get it by a mutation in the background.
        Until a part has it, a statement reads that part's rows instead (same answer).

        A table that is not a MergeTree, a cluster's Distributed front, is left alone: the
        operator adds the projection to its local tables (docs/clickhouse.md, "A cluster").
        """
        here = "database = currentDatabase()"
        (engine, known), *_ = self._fetchall(
            f"SELECT engine, (SELECT count() FROM system.projections WHERE {here} AND table = {{t:String}}"
            f" AND name = {{n:String}}) FROM system.tables WHERE {here} AND name = {{t:String}}",
            {"t": table, "n": name},
        )
        if known or not engine.endswith("MergeTree"):
            return
        self._transport.command(f"ALTER TABLE {table} MODIFY SETTING {PROJECTION_SETTINGS}")
        self._transport.command(f"ALTER TABLE {table} ADD PROJECTION IF NOT EXISTS {name} ({query})")
        self._transport.command(f"ALTER TABLE {table} MATERIALIZE PROJECTION {name}")

    def _make_inserts_durable(self) -> None:
        """Give ``DURABLE_INSERTS`` to Parley's tables made before Parley asked for it.

        A table whose settings name ``fsync_after_insert`` already keeps them: an operator
        who turned it off (``= 0``) is not overruled. Nor is a table that is not a
        MergeTree, a cluster's Distributed front (its local tables are the operator's).
        """
        names = [*_FIXED_DDL, *(table.name for table in schema.TABLES)]
        for (table,) in self._fetchall(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)} "
            "AND endsWith(engine, 'MergeTree') AND position(engine_full, 'fsync_after_insert') = 0",
            {"names": names},
        ):
            self._transport.command(f"ALTER TABLE {table} MODIFY SETTING {DURABLE_INSERTS}")

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        table = _naive_utc(self._transport.query(sql, params))
        columns = [column.to_pylist() for column in table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def close(self) -> None:
        self._transport.close()

    def reorder(self) -> None:
        """Nothing to do: each part is written in its table's sorting key order (org, then
        time), and the engine merges parts in that order itself."""

    # -- ingestion ----------------------------------------------------------------

    def ingest(self, events: Sequence[Event]) -> StoreOutcome:
        """Store new events, skipping ids already stored for their org.

        Concurrent callers' batches are stored together (``GroupCommit``): one set of
        look-ups and one insert a table for all of them, where each batch paid its own.
        ClickHouse makes a part of each insert and merges them in the background, and its
        documentation asks for fewer, larger inserts. A write that fails stores each batch
        alone again, so that only the caller whose batch ClickHouse refuses sees it fail.
        """
        return self._commits.ingest(events)

    def _store_events(self, events: list[Event], batches: int = 1) -> tuple[set[Key], dict[Key, str]]:
        """Store distinct events (the caller holds the write lock): the keys stored now.
        ``batches`` (how many callers' batches they come from) changes nothing here: the
        state a read needs is folded when it reads."""
        first = {(e.org, e.id): e for e in events}
        with self._transport.writing():
            claims = self._claims(first)
            cut_short = self._without_rows([first[key] for key, before_rows in claims.items() if before_rows])
            fresh = [e for key, e in first.items() if key not in claims or key in cut_short]
            keyed = [(e, schema.entity_key(e)) for e in fresh]
            firsts: dict[tuple[str, str], Event] = {}
            for event, key in keyed:
                if key is not None:
                    firsts.setdefault((event.org, key), event)
            # An event cut short may have claimed its entity before the cut (see
            # ``_insert``): that claim is its own, and it keeps the entity. Another event's
            # claim, made in between, takes it.
            claimers = self._entity_claimers(firsts)
            winners = {
                id(e)
                for key, e in firsts.items()
                if key not in claimers or ((e.org, e.id) in cut_short and claimers[key] & {e.id, None})
            }
            stored = [e for e, key in keyed if key is None or id(e) in winners]
            new_entities = [(org, key, e.id) for (org, key), e in firsts.items() if id(e) in winners]
            self._insert(
                schema.column_batch(stored).tables,
                schema.event_ledger_rows(fresh),
                schema.entity_ledger_rows(new_entities),
            )
        return {(e.org, e.id) for e in stored}, {}

    def ingest_columns(self, batch: schema.ColumnBatch) -> list[tuple[str, str]] | None:
        ids = dict.fromkeys(zip(batch.ledger["org"].to_pylist(), batch.ledger["event_id"].to_pylist(), strict=True))
        entities = dict.fromkeys(
            zip(batch.entities["org"].to_pylist(), batch.entities["entity_key"].to_pylist(), strict=True)
        )
        with self._write_lock, self._transport.writing():
            if self._claims(ids) or self._entity_claimers(entities):
                return None
            self._insert(batch.tables, batch.ledger, batch.entities)
        return batch.keys

    def _insert(self, tables: dict[str, pa.Table], ledger: pa.Table, entities: pa.Table) -> None:
        """Store a batch: its events claimed in the ledger, then its entities and its rows.

        ClickHouse has no transaction across tables. The events with a row in ``tables``
        are claimed ``before_rows``, with their row's time, and each entity with the id
        of the event claiming it: if the batch is cut short (the process killed, the
        server gone), sending it again finds them claimed, looks for their rows where they
        were stored (``_without_rows``) and stores those missing, once, each keeping the
        entity it claimed. A batch an insert refuses (too many parts, say) is deleted
        again at once, so that nothing of it is kept; if that fails too, it is left cut
        short.
        """
        if not ledger.num_rows:
            return
        claims = _with_row_times(ledger, tables)
        now = pa.array([datetime.now(UTC).replace(tzinfo=None)] * claims.num_rows, pa.timestamp("us"))
        before_rows = pc.is_valid(claims["ts"])
        self._transport.insert(
            "event_ledger", claims.append_column("ingested_at", now).append_column("before_rows", before_rows)
        )
        written: list[str] = []
        try:
            if entities.num_rows:
                self._transport.insert("entity_ledger", entities)
                written.append("entity_ledger")
            for name, rows in tables.items():
                self._transport.insert(name, _no_null_lists(rows))
                written.append(name)
        except Exception as err:
            self._withdraw(written, ledger, entities, err)
            raise

    def _withdraw(self, written: list[str], ledger: pa.Table, entities: pa.Table, cause: Exception) -> None:
        """Delete what a batch whose insert failed with ``cause`` stored: its entities, the
        rows of its ``written`` tables, and last its claims, which stand until then."""
        events = zip(ledger["org"].to_pylist(), ledger["event_id"].to_pylist(), strict=True)
        try:
            if "entity_ledger" in written:
                keys = zip(entities["org"].to_pylist(), entities["entity_key"].to_pylist(), strict=True)
                self._delete(["entity_ledger"], "entity_key", keys)
            self._delete([*(t for t in written if t != "entity_ledger"), "event_ledger"], "event_id", list(events))
        except Exception as err:
            log.error(
                "a batch's insert failed (%s), and what it stored in %s could not be deleted (%s): "
                "it stays until the batch is sent again, which stores each of its events once",
                cause,
                ", ".join(written),
                err,
            )

    def _delete(self, tables: list[str], column: str, keys: Iterable[tuple[str, str]]) -> None:
        """Delete the rows of ``tables`` whose org and ``column`` are among ``keys``."""
        by_org = _by_org(keys)
        for table in tables:
            for org, values in by_org.items():
                self._transport.command(
                    f"DELETE FROM {table} "
                    f"WHERE org = {{org:String}} AND {column} IN (SELECT arrayJoin({{keys:Array(String)}}))",
                    {"org": org, "keys": values},
                )

    def _claims(self, events: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Of ``events`` (org, id), those claimed in the ledger: whether each was claimed
        before its rows were written (whose rows may then be missing)."""
        claims: dict[tuple[str, str], bool] = {}
        for org, ids in _by_org(events).items():
            rows = self._fetchall(
                "SELECT event_id, max(before_rows) FROM event_ledger "
                "WHERE org = {org:String} AND event_id IN (SELECT arrayJoin({ids:Array(String)})) GROUP BY event_id",
                {"org": org, "ids": ids},
            )
            claims.update(((org, event_id), bool(before)) for event_id, before in rows)
        return claims

    def _without_rows(self, events: Sequence[Event]) -> set[tuple[str, str]]:
        """The (org, id) of ``events`` with no row in their table: of a batch cut short.

        A row is looked for at its event's time, then, if not there, at the times its
        claims promised (a resend stamped anew), unless a claim made before the ledger
        kept times promises none. A resend finding its rows at their times, the common
        case, pays for the first look alone."""
        own = {(e.org, e.id): [utc_naive(e.timestamp)] for e in events}
        missing = self._not_at(events, own)
        promised = {key: times for key, times in self._promised(missing).items() if set(times) != set(own[key])}
        if not promised:
            return missing
        return (missing - promised.keys()) | self._not_at([e for e in events if (e.org, e.id) in promised], promised)

    def _not_at(self, events: Sequence[Event], times: dict[tuple[str, str], list[datetime]]) -> set[tuple[str, str]]:
        """The (org, id) of ``events`` with no row in their table between the first and the
        last of their ``times``, a range that lets the look-up prune."""
        by_table: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_table[schema.TABLE_FOR_TYPE[event.type].name].append(event)
        missing = {(e.org, e.id) for e in events}
        for table, group in by_table.items():
            bounds = [t for e in group for t in times[(e.org, e.id)]]
            for org, ids in _by_org((e.org, e.id) for e in group).items():
                rows = self._fetchall(
                    f"SELECT DISTINCT event_id FROM {table} WHERE org = {{org:String}} "
                    "AND ts BETWEEN {first:DateTime64(6, 'UTC')} AND {last:DateTime64(6, 'UTC')} "
                    "AND event_id IN (SELECT arrayJoin({ids:Array(String)}))",
                    {"org": org, "first": min(bounds), "last": max(bounds), "ids": ids},
                )
                missing.difference_update((org, event_id) for (event_id,) in rows)
        return missing

    def _promised(self, events: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[datetime]]:
        """Of ``events`` (org, id), those whose claims before their rows kept the rows'
        time (see ``_insert``): the first and the last such time of each."""
        promised: dict[tuple[str, str], list[datetime]] = {}
        for org, ids in _by_org(events).items():
            rows = self._fetchall(
                "SELECT event_id, min(ts), max(ts) FROM event_ledger "
                "WHERE org = {org:String} AND event_id IN (SELECT arrayJoin({ids:Array(String)})) "
                "AND before_rows AND ts IS NOT NULL GROUP BY event_id",
                {"org": org, "ids": ids},
            )
            promised.update(((org, event_id), [first, last]) for event_id, first, last in rows)
        return promised

    def _entity_claimers(self, keys: dict[tuple[str, str], Any]) -> dict[tuple[str, str], set[str | None]]:
        """Of entity ``keys`` (org, key), those claimed in the ledger: the ids of the events
        claiming each (None for a claim made before the ledger kept them)."""
        claimers: dict[tuple[str, str], set[str | None]] = defaultdict(set)
        for org, values in _by_org(keys).items():
            # IN a subquery, so the keys become a hash set: `IN {keys:Array(String)}` (or
            # has()) took time growing with the ledger when a batch's keys spread over the
            # key range (20,000 message keys against a 200,000-key ledger: 30 s, against
            # 0.15 s this way), which made bulk loads quadratic.
            rows = self._fetchall(
                "SELECT DISTINCT entity_key, event_id FROM entity_ledger "
                "WHERE org = {org:String} AND entity_key IN (SELECT arrayJoin({keys:Array(String)}))",
                {"org": org, "keys": values},
            )
            for key, event_id in rows:
                claimers[(org, key)].add(event_id)
        return dict(claimers)

    # -- keys ---------------------------------------------------------------------

    def create_api_key(self, record: ApiKeyRecord) -> None:
        with self._write_lock, self._transport.writing():
            self._transport.insert("api_keys", _key_row(record))

    def _store_revocation(self, revoked: ApiKeyRecord) -> None:
        # A second row of the key, which the engine's merges keep in the end (the newest).
        self._transport.insert("api_keys", _key_row(revoked))

    # -- chats --------------------------------------------------------------------

    def export_chats(
        self, *, org: str, workspace_id: str, query: ChatQuery, batch_rows: int = EXPORT_BATCH_ROWS
    ) -> Generator[pa.RecordBatch, None, None]:
        """Sorted ids first, then rows a batch of ids at a time (as the DuckDB store does),
        put in the ids' order by Arrow. ClickHouse's ``ORDER BY indexOf(ids, id)`` searched
        the batch's list for each row: at scale M, 200 of a batch's 350 ms (10,000 of the
        largest workspace's 50,000 chats)."""
        sql, params = self._chat_sql(org, workspace_id, query)
        ordered = (
            f"WITH {sql.relation_for(query)} SELECT id FROM chats WHERE {sql.where(query)} ORDER BY {sql.order(query)}"
        )
        ids = [row[0] for row in self._fetchall(ordered, params.values)]
        for start in range(0, len(ids), batch_rows):
            chunk = ids[start : start + batch_rows]
            rows_sql, row_params = self._chat_sql(org, workspace_id)
            ids_param = row_params.add(chunk, "int_list")
            statement = f"""
            WITH {rows_sql.relation()}
            SELECT {rows_sql.export_columns()} FROM chats
            WHERE id IN {ids_param}
            """
            rows = self._transport.query(statement, row_params.values)
            found = rows.column(ID_COLUMN)
            position = pc.index_in(found, value_set=pa.array(chunk, found.type))
            for batch in rows.take(pc.sort_indices(position)).to_batches():
                yield times_as_text(batch)


def _by_org(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The keys of ``(org, key)`` pairs, by org."""
    by_org: dict[str, list[str]] = defaultdict(list)
    for org, key in pairs:
        by_org[org].append(key)
    return by_org


def _no_null_lists(table: pa.Table) -> pa.Table:
    """ClickHouse arrays are never NULL: an absent list is stored empty."""
    columns = []
    for column in table.columns:
        if pa.types.is_list(column.type) and column.null_count:
            empty = pa.scalar([], column.type)
            column = pc.if_else(pc.is_null(column), empty, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)
