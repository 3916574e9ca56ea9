"""The engine-neutral table layout, and events turned into Arrow batches for it.

Every contract event type lands in an append-only table. Each row carries the
tenant (``org``), the event id and the event ``ts``; latest-wins state for the
``*.upsert`` types is derived at query time from ``(ts, event_id)``, so arrival
order never matters. Each engine adapter renders these logical column types in
its own DDL (see ``duckdb.py``), so the layout is written once.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from parley.ingest.events import CHAT_UPDATE_FIELDS, ChatUpdate, Event

# Incremented when a store this version writes would be misread by an older Parley, which
# then refuses to open it. 2: DuckDB keeps tool names in chat_tools, no longer in chat_state (an
# older Parley would add the list column back and keep names chat_tools never sees). 3: DuckDB's
# user activity and state name users by number (an older Parley would fail on every session). 4:
# DuckDB's message text carries each message's time and chat state its oldest message's (an
# older Parley would fail on every message). 5: DuckDB keeps each member's newest name in
# member_names (an older Parley would store member events without it, whose names would then
# stay old). 6: keys carry a revocation time, revoked_at (an older Parley would let a revoked
# key in). 7: DuckDB keeps user_cost_days a row per user, day and model, named by user_md5 (an
# older Parley would refuse every batch with an observation). 8: DuckDB's user_state carries
# user_md5, by which a batch finds its users' rows (an older Parley would refuse every batch
# with a user upsert). 9: DuckDB's user activity marks the rows waiting for their session (an
# older Parley would refuse every batch with a session, trace or feedback). 10: DuckDB queues
# the events whose state is still to be kept, in state_queue (an older Parley would never
# keep it).
SCHEMA_VERSION = 10

# Logical column types, mapped to engine types by each adapter.
STR, INT, BOOL, TIME, JSON, STR_LIST = "str", "int", "bool", "time", "json", "str_list"

ARROW_TYPES = {
    STR: pa.string(),
    INT: pa.int64(),
    BOOL: pa.bool_(),
    TIME: pa.timestamp("us"),
    JSON: pa.string(),
    STR_LIST: pa.list_(pa.string()),
}

MICROS = 1_000_000
# Costs are kept as integer pico-dollars so that sums are exact and identical on
# every engine, whatever order they are added in.
PICO_USD = 10**12


@dataclass(frozen=True)
class Column:
    """A stored column: either a body field held as it is (``field``), or a value that
    ``get`` computes from each event."""

    name: str
    type: str
    get: Callable[[Event], Any] | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if (self.get is None) == (self.field is None):
            raise ValueError(f"column {self.name!r} needs a body field or a getter, not both or neither")


@dataclass(frozen=True)
class Table:
    name: str
    event_types: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in self.columns])

    @functools.cached_property
    def _body_fields(self) -> pa.StructType:
        return pa.struct({c.field: ARROW_TYPES[c.type] for c in self.columns if c.field is not None})

    def to_arrow(self, events: Iterable[Event]) -> pa.Table:
        """The events as this table's rows. The body fields are read in one pass of Arrow
        over the bodies' dicts (a field a body lacks is null); each other column calls its
        ``get`` an event at a time."""
        rows = list(events)
        bodies = pa.array([e.body.__dict__ for e in rows], self._body_fields)
        return pa.table(
            [
                bodies.field(c.field) if c.field is not None else pa.array(map(c.get, rows), ARROW_TYPES[c.type])
                for c in self.columns
            ],
            schema=self.arrow_schema,
        )


def _field(name: str, type_: str, field: str | None = None) -> Column:
    """A column that holds body field ``field`` (by default ``name``) as it is."""
    return Column(name, type_, field=field or name)


def _json(field: str) -> Callable[[Event], Any]:
    def get(e: Event) -> str | None:
        value = getattr(e.body, field, None)
        return None if value is None else orjson.dumps(value).decode()

    return get


def _seconds_to_us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * MICROS)


def _call_duration_us(e: Event) -> int | None:
    body = e.body
    if body.duration_seconds is not None:
        return _seconds_to_us(body.duration_seconds)
    if body.ended_at is not None:
        delta = body.ended_at - body.started_at
        return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds
    return None


def _cost_pusd(e: Event) -> int | None:
    cost = e.body.cost_usd
    return None if cost is None else round(cost * PICO_USD)


METADATA_TEXT_SEPARATOR = "\x1f"  # unit separator: a search never spans two values


def _scalars(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif isinstance(value, str):
        yield value
    elif value is not None:
        yield orjson.dumps(value).decode()


def _metadata_text(e: Event) -> str | None:
    """Every scalar value of the metadata, for search over "any metadata value"."""
    metadata = getattr(e.body, "metadata", None)
    return None if metadata is None else METADATA_TEXT_SEPARATOR.join(_scalars(metadata))


def _chat_fields_set(e: Event) -> list[str]:
    if isinstance(e.body, ChatUpdate):
        return sorted(e.body.model_fields_set.intersection(CHAT_UPDATE_FIELDS))
    return list(CHAT_UPDATE_FIELDS)


def _tool_names(e: Event) -> list[str] | None:
    calls = e.body.tool_calls
    return None if calls is None else [c.name for c in calls]


def _tool_calls_json(e: Event) -> str | None:
    calls = e.body.tool_calls
    if calls is None:
        return None
    return orjson.dumps([c.model_dump() for c in calls]).decode()


ENVELOPE = (
    Column("org", STR, lambda e: e.org),
    Column("event_id", STR, lambda e: e.id),
    Column("ts", TIME, lambda e: e.timestamp),
)


def _table(name: str, event_types: tuple[str, ...], *columns: Column) -> Table:
    return Table(name, event_types, ENVELOPE + columns)


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns read straight from body fields: "name:type name:type ..."."""
    out = []
    for item in spec.split():
        name, typ = item.split(":")
        out.append(Column(name, typ, _json(name)) if typ == JSON else _field(name, typ))
    return tuple(out)


TABLES: tuple[Table, ...] = (
    _table("workspaces", ("workspace.upsert",), *_cols("workspace_id:str name:str")),
    _table(
        "members",
        ("member.upsert",),
        *_cols("workspace_id:str member_id:int name:str kind:str role:str scopes:str_list"),
        *_cols("is_anonymous:bool"),
    ),
    _table(
        "assistants",
        ("assistant.upsert",),
        *_cols("assistant_id:str name:str workspace_id:str member_id:int"),
    ),
    _table("users", ("user.upsert",), *_cols("user_id:str registered_at:time name:str")),
    _table(
        "chat_events",
        ("chat.upsert", "chat.update"),
        Column("op", STR, lambda e: e.type.removeprefix("chat.")),
        *_cols("workspace_id:str chat_id:int owner_member_id:int assistant_member_id:int"),
        *_cols("chat_type:str channel:str title:str metadata:json archived:bool"),
        *_cols("needs_response:bool paused:bool muted:bool is_test:bool created_at:time"),
        Column("metadata_text", STR, _metadata_text),
        Column("fields_set", STR_LIST, _chat_fields_set),
    ),
    _table(
        "messages",
        ("message.create",),
        *_cols("workspace_id:str chat_id:int message_id:str role:str sender_member_id:int"),
        *_cols("assistant_name:str content:str"),
        Column("tool_names", STR_LIST, _tool_names),
        Column("tool_calls", JSON, _tool_calls_json),
        *_cols("created_at:time"),
    ),
    _table(
        "calls",
        ("call.create",),
        *_cols("workspace_id:str call_id:str assistant_id:str assistant_name:str"),
        *_cols("started_at:time ended_at:time"),
        Column("duration_us", INT, _call_duration_us),
    ),
    _table(
        "sessions",
        ("session.create",),
        *_cols("session_id:str user_id:str mentor_id:str started_at:time"),
    ),
    _table(
        "traces",
        ("trace.create",),
        *_cols("trace_id:str session_id:str user_id:str mentor_id:str"),
        _field("traced_at", TIME, "timestamp"),
    ),
    _table(
        "observations",
        ("observation.create",),
        *_cols("observation_id:str trace_id:str"),
        _field("obs_type", STR, "type"),
        *_cols("model:str input_tokens:int output_tokens:int"),
        Column("cost_pusd", INT, _cost_pusd),
        *_cols("start_time:time"),
    ),
    _table(
        "feedback",
        ("feedback.create",),
        *_cols("feedback_id:str user_id:str rating:str mentor_id:str session_id:str comment:str"),
        *_cols("created_at:time"),
    ),
)

# A create event describes one entity, named by these body fields. An entity is stored
# once: a later event for it, under any event id, is a duplicate (the first one stands).
ENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "message.create": ("workspace_id", "message_id"),
    "call.create": ("workspace_id", "call_id"),
    "session.create": ("session_id",),
    "trace.create": ("trace_id",),
    "observation.create": ("observation_id",),
    "feedback.create": ("feedback_id",),
}
KEY_SEPARATOR = "\x1f"


def _entity_key_getter(event_type: str, fields: tuple[str, ...]) -> Callable[[Any], str]:
    """The entity key of a body of ``event_type``: the type and ``fields`` (text, each an
    id), joined by ``KEY_SEPARATOR``."""
    prefix = event_type + KEY_SEPARATOR
    read = operator.attrgetter(*fields)
    if len(fields) == 1:
        return lambda body: prefix + read(body)
    return lambda body: prefix + KEY_SEPARATOR.join(read(body))


# Built once per type: a key joined from a generator of ``str`` calls was a fifth of a
# batch's Arrow columns over HTTP (py-spy, a live mix at scale M).
_ENTITY_KEYS = {event_type: _entity_key_getter(event_type, fields) for event_type, fields in ENTITY_FIELDS.items()}


def entity_key(event: Event) -> str | None:
    """The entity a create event describes, as one string (None for upserts and updates)."""
    key = _ENTITY_KEYS.get(event.type)
    return None if key is None else key(event.body)


def event_ledger_rows(events: Sequence[Event]) -> pa.Table:
    """The events' org, id and type as the event ledger's columns (its time of storing apart)."""
    return pa.table(
        {
            "org": pa.array([e.org for e in events], pa.string()),
            "event_id": pa.array([e.id for e in events], pa.string()),
            "type": pa.array([e.type for e in events], pa.string()),
        }
    )


def entity_ledger_rows(claims: Iterable[tuple[str, str, str]]) -> pa.Table:
    """(org, entity key, the id of the event claiming it) as the entity ledger's columns.

    Typed arrays from lists: building them from ``zip(*claims)``'s tuples took 14 to 18 ms
    a 20,000-key batch of the first two columns, this 2 to 3 ms.
    """
    rows = list(claims)
    return pa.table(
        {
            "org": pa.array([org for org, _, _ in rows], pa.string()),
            "entity_key": pa.array([key for _, key, _ in rows], pa.string()),
            "event_id": pa.array([event_id for _, _, event_id in rows], pa.string()),
        }
    )


TABLE_FOR_TYPE: dict[str, Table] = {t: table for table in TABLES for t in table.event_types}
TABLE_BY_NAME: dict[str, Table] = {table.name: table for table in TABLES}


@dataclass(frozen=True)
class ColumnBatch:
    """Events turned into the Arrow tables they are stored as, ready for plain inserts.

    Built from the events of one batch: the first event of each (org, id) is claimed in
    the event ledger, and kept unless its entity (see ``ENTITY_FIELDS``) came earlier in
    the batch; the others are ``repeated``. Plain Arrow and Python values, so a batch
    can be built in another process.
    """

    keys: list[tuple[str, str]]  # (org, id) of each event kept, in order
    repeated: int  # events left out: an id or an entity met before in the batch
    ledger: pa.Table  # event_ledger's org, event_id, type of each event's first copy
    entities: pa.Table  # entity_ledger's org, entity_key, event_id of each create event kept
    tables: dict[str, pa.Table]  # table name -> its rows, for the tables the batch fills


def column_batch(events: Iterable[Event]) -> ColumnBatch:
    """The ``ColumnBatch`` of ``events``, in their order."""
    builder = ColumnBatchBuilder()
    builder.add(events)
    return builder.build()


class ColumnBatchBuilder:
    """A ``ColumnBatch`` built a part at a time: ``add`` each part's events, in order, then
    ``build``. The batch is the one ``column_batch`` builds of all the parts' events (an
    id or an entity met in an earlier part is repeated), but each part's columns are
    built as it is added, so that its events may die before the next part's are made.

    A bulk loader's worker so keeps about 1,000 events alive rather than a chunk's 20,000
    (each part's memory, likely still in the cache, used again by the next): its lines
    checked and their columns built a part at a time took 12.1 us an event against 13.8
    (benchmarks.md, "A chunk's columns built a part at a time").
    """

    def __init__(self) -> None:
        self._seen_ids: set[tuple[str, str]] = set()
        self._seen_entities: set[tuple[str, str]] = set()
        self._keys: list[tuple[str, str]] = []
        self._repeated = 0
        self._ledgers: list[pa.Table] = []
        self._entities: list[pa.Table] = []
        self._tables: dict[str, list[pa.Table]] = {}

    def add(self, events: Iterable[Event]) -> None:
        """Build the columns of the next part's ``events``."""
        claimed: list[Event] = []
        entity_keys: list[tuple[str, str, str]] = []
        by_table: dict[str, list[Event]] = {}  # the events kept, by table
        for event in events:
            key = (event.org, event.id)
            if key in self._seen_ids:
                self._repeated += 1
                continue
            self._seen_ids.add(key)
            claimed.append(event)
            entity = entity_key(event)
            if entity is not None:
                if (event.org, entity) in self._seen_entities:
                    self._repeated += 1
                    continue
                self._seen_entities.add((event.org, entity))
                entity_keys.append((event.org, entity, event.id))
            self._keys.append(key)
            by_table.setdefault(TABLE_FOR_TYPE[event.type].name, []).append(event)
        self._ledgers.append(event_ledger_rows(claimed))
        self._entities.append(entity_ledger_rows(entity_keys))
        for name, rows in by_table.items():
            self._tables.setdefault(name, []).append(TABLE_BY_NAME[name].to_arrow(rows))

    def build(self) -> ColumnBatch:
        """The batch of every part added, each table's parts in one chunk of Arrow."""
        if not self._ledgers:
            self.add(())
        return ColumnBatch(
            keys=self._keys,
            repeated=self._repeated,
            ledger=_joined(self._ledgers),
            entities=_joined(self._entities),
            tables={t.name: _joined(self._tables[t.name]) for t in TABLES if t.name in self._tables},
        )


def _joined(parts: list[pa.Table]) -> pa.Table:
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).combine_chunks()


def joined_batches(batches: Sequence[ColumnBatch]) -> ColumnBatch | None:
    """``batches`` as one batch, in their order; or None if two of them claim the same
    event id or entity, which one batch never does (stored one after the other, the later
    one's copy is a duplicate)."""
    ledger = pa.concat_tables([b.ledger for b in batches])
    entities = pa.concat_tables([b.entities for b in batches])
    if not (_distinct(ledger, "org", "event_id") and _distinct(entities, "org", "entity_key")):
        return None
    names = dict.fromkeys(name for b in batches for name in b.tables)  # in order, once each
    return ColumnBatch(
        keys=[key for b in batches for key in b.keys],
        repeated=sum(b.repeated for b in batches),
        ledger=ledger,
        entities=entities,
        tables={name: pa.concat_tables([b.tables[name] for b in batches if name in b.tables]) for name in names},
    )


def _distinct(table: pa.Table, *columns: str) -> bool:
    """Whether no two rows of ``table`` share their values of ``columns``.

    On the calling thread: a bulk load's storing process runs this for each group of
    chunks while its workers keep both cores busy, and waited for Arrow's threads, which
    waited their turn behind the workers (py-spy, a load of 467,621 events onto scale M's
    store: 0.57 s waited, where its own thread computes for 0.45). In a quiet process one
    thread is as quick: 13.5 ms for 160,000 rows against 15."""
    return table.group_by(list(columns), use_threads=False).aggregate([]).num_rows == table.num_rows
