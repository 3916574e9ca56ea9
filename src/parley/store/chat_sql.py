"""The chat relation's filters, sorts and export columns, compiled to SQL with bound
parameters, the same for every engine.

A chat's state is latest-wins: each field takes its value from the newest event (by
``ts``, then ``event_id``) that set it, so an update that arrives late but happened
early never overwrites newer state. A chat exists once a ``chat.upsert`` for it is
stored. Each engine's subclass builds the relation that holds it: the DuckDB store keeps
it as events arrive (``DuckDBChatSql``), ClickHouse folds it from the events at query
time (``ClickHouseChatSql``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from parley.ingest.events import CHAT_UPDATE_FIELDS
from parley.metrics.chats.query import ChatQuery, Group, Node, Rule
from parley.store.dialect import Dialect, Params

# Request field names -> columns of the chat relation, and their logical types.
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("id", "int"),
    "title": ("title", "str"),
    "chatType": ("chat_type", "str"),
    "channel": ("channel", "str"),
    "ownerMemberId": ("owner_member_id", "int"),
    "assistantMemberId": ("assistant_member_id", "int"),
    "archived": ("archived", "bool"),
    "needsResponse": ("needs_response", "bool"),
    "paused": ("paused", "bool"),
    "muted": ("muted", "bool"),
    "isTest": ("is_test", "bool"),
    "createdAt": ("created_at", "time"),
    "updatedAt": ("updated_at", "time"),
    "lastMessageAt": ("last_message_at", "time"),
    "messageCount": ("message_count", "int"),
}
SORT_COLUMNS = {
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "lastMessageAt": "last_message_at",
    "id": "id",
    "title": "title",
}
CHAT_LIST_COLUMNS = (
    "id",
    "title",
    "chat_type",
    "channel",
    "owner_member_id",
    "owner_name",
    "assistant_member_id",
    "assistant_name",
    "archived",
    "needs_response",
    "paused",
    "muted",
    "is_test",
    "is_anonymous",
    "message_count",
    "last_message_at",
    "created_at",
    "updated_at",
    "metadata",
)
# The export shows the list's columns, in the same (the contract's) order; these are its times.
EXPORT_TIMES = ("last_message_at", "created_at", "updated_at")
EXPORT_TIME_COLUMNS = tuple(CHAT_LIST_COLUMNS.index(column) for column in EXPORT_TIMES)
UPSERT_ONLY = ("owner_member_id", "chat_type", "channel", "created_at")
UPDATABLE = CHAT_UPDATE_FIELDS  # the fields a chat.update may set
# The request fields read from the chat's messages rather than its own events.
MESSAGE_FIELDS = frozenset({"messageCount", "lastMessageAt"})
# The owner's and assistant's names, joined onto chat state ``s`` from ``member_state``.
MEMBER_COLUMNS = "o.name AS owner_name, o.is_anonymous AS is_anonymous, a.name AS assistant_name"
MEMBER_JOINS = (
    "LEFT JOIN member_state o ON o.member_id = s.owner_member_id "
    "LEFT JOIN member_state a ON a.member_id = s.assistant_member_id"
)
CMP = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Bounds a statement's own conditions put on a chat's ``created_at`` (inclusive; None: none).
CreatedBounds = tuple[datetime | None, datetime | None]
UNBOUNDED: CreatedBounds = (None, None)


@dataclass(frozen=True)
class Backdated:
    """What a store found before compiling a search since a time (``backdated_probe``):
    the oldest first message of the chats created since then whose first message is
    older, None when there is no such chat."""

    oldest: datetime | None


class ChatSql:
    """Builds the chat relation and its filters for one workspace.

    ``backdated`` is what the store looked up for the query's search since a time
    (None: not looked up, and the search then reads those chats' messages in full).
    """

    def __init__(
        self, dialect: Dialect, params: Params, *, org: str, workspace_id: str, backdated: Backdated | None = None
    ) -> None:
        self.d = dialect
        self.p = params
        self.org = params.add(org, "str")
        self.ws = params.add(workspace_id, "str")
        self.backdated = backdated

    def tenant(self, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return f"{prefix}org = {self.org} AND {prefix}workspace_id = {self.ws}"

    def relation(self, *, members: bool = True, messages: bool = True, created: CreatedBounds = UNBOUNDED) -> str:
        """CTEs ending in ``chats``: one row per existing chat (a chat exists once a
        ``chat.upsert`` for it is stored), with the columns ``COLUMNS`` filters on, the
        list's (``CHAT_LIST_COLUMNS``) and ``metadata_text``. ``members=False`` may leave
        the names and anonymity out, and ``messages=False`` the message count and the
        last message's time, for a statement that neither filters on them nor sorts by
        them nor returns them (see ``relation_for``). ``created``: the bounds that the
        statement's own conditions put on ``created_at``; an engine may leave out of the
        relation chats created outside them."""
        raise NotImplementedError

    def relation_for(self, q: ChatQuery, *, created: CreatedBounds | None = None) -> str:
        """The relation for a statement that returns only the chat's own columns, with
        what ``where(q)`` and ``order(q)`` read of the rest. ``created``: as in
        ``relation``, by default the bounds of ``q``'s own."""
        bounds = created_bounds(q) if created is None else created
        return self.relation(members=self.reads_members(q), messages=self.reads_messages(q), created=bounds)

    def tool_names(self, q: ChatQuery) -> str:
        """The distinct names of the tools called in the chats ``q`` selects, unordered."""
        raise NotImplementedError

    @staticmethod
    def reads_members(q: ChatQuery) -> bool:
        """Whether ``where(q)`` or ``order(q)`` needs the member columns of the relation."""
        return q.is_anonymous is not None

    @staticmethod
    def reads_messages(q: ChatQuery) -> bool:
        """Whether ``where(q)`` or ``order(q)`` needs the message columns of the relation."""
        return q.sort_by in MESSAGE_FIELDS or (q.rule is not None and not MESSAGE_FIELDS.isdisjoint(_fields(q.rule)))

    def count(self, q: ChatQuery) -> str:
        """The statement counting the chats ``q`` selects."""
        return f"WITH {self.relation_for(q)} SELECT count(*) FROM chats WHERE {self.where(q)}"

    def member_state(self) -> str:
        """The ``member_state`` CTE: each member's newest name and anonymity."""
        d = self.d
        return f"""member_state AS (
            SELECT member_id,
                   {d.latest("name", "true")} AS name,
                   {d.latest("is_anonymous", "true")} AS is_anonymous
            FROM members
            WHERE {self.tenant()}
            GROUP BY member_id
        )"""

    # -- filters ------------------------------------------------------------------

    def where(self, q: ChatQuery) -> str:
        p, conds = self.p, []
        if q.owner_member_id is not None:
            conds.append(f"owner_member_id = {p.add(q.owner_member_id, 'int')}")
        flags = (
            ("archived", q.archived),
            ("is_test", q.is_test),
            ("needs_response", q.needs_response),
            ("paused", q.paused),
        )
        for column, value in flags:
            if value is not None:
                conds.append(f"coalesce({column}, false) = {p.add(value, 'bool')}")
        if q.is_anonymous is not None:
            conds.append(f"coalesce(is_anonymous, false) = {p.add(q.is_anonymous, 'bool')}")
        if q.channel is not None:
            conds.append(f"channel = {p.add(q.channel, 'str')}")
        if q.chat_type is not None:
            conds.append(f"chat_type = {p.add(q.chat_type, 'str')}")
        if q.assistant_member_id is not None:
            conds.append(f"assistant_member_id = {p.add(q.assistant_member_id, 'int')}")
        if q.member_id is not None:
            member = p.add(q.member_id, "int")
            conds.append(
                f"(owner_member_id = {member} OR id IN "
                f"(SELECT chat_id FROM messages WHERE {self.tenant()} AND sender_member_id = {member}))"
            )
        since = None if q.created_after is None else p.add(q.created_after, "time")
        if q.search is not None:
            needle = p.add(q.search, "str")
            conds.append(
                f"({self.d.icontains('title', needle)} OR {self.d.icontains('metadata_text', needle)} "
                f"OR id IN ({self.chats_saying(needle, since)}))"
            )
        if since is not None:
            conds.append(f"created_at >= {since}")
        if q.created_before is not None:
            conds.append(f"created_at <= {p.add(q.created_before, 'time')}")
        if q.rule is not None:
            conds.append(self.node(q.rule))
        return " AND ".join(f"({c})" for c in conds) or "TRUE"

    def chats_saying(self, needle: str, since: str | None) -> str:
        """A query for the ids of chats with a message containing ``needle`` (any case),
        among them every such chat created at or after ``since`` (when not None)."""
        raise NotImplementedError

    def backdated_probe(self, since: datetime) -> str | None:
        """A query (one row, one value) for ``Backdated.oldest`` of a search since ``since``;
        None where the engine's ``chats_saying`` does not use it."""
        return None

    def node(self, node: Node) -> str:
        if isinstance(node, Group):
            joiner = " AND " if node.kind == "and" else " OR "
            return "(" + joiner.join(self.node(child) for child in node.children) + ")"
        positive = self._positive(node)
        if node.op in ("neq", "nin"):
            return f"NOT coalesce({positive}, false)"
        return f"coalesce({positive}, false)"

    def _positive(self, rule: Rule) -> str:
        """The rule's test, with neq/nin read as eq/in (the caller negates)."""
        op = {"neq": "eq", "nin": "in"}.get(rule.op, rule.op)
        if (key := rule.metadata_key) is not None:
            return self._metadata(key, rule, op)
        column, type_ = COLUMNS[rule.field]
        if op == "exists":
            return f"{column} IS NOT NULL" if rule.value else f"{column} IS NULL"
        if op == "contains":
            return self.d.icontains(column, self.p.add(rule.value, "str"))
        if op == "in":
            return f"{column} IN ({', '.join(self.p.add(v, type_) for v in rule.value)})"
        return f"{column} {CMP[op]} {self.p.add(rule.value, type_)}"

    def _metadata(self, metadata_key: str, rule: Rule, op: str) -> str:
        d = self.d
        key = self.p.add(d.meta_key(metadata_key), "str")
        if op == "exists":
            present = d.meta_present("metadata", key)
            return present if rule.value else f"NOT {present}"
        if op == "contains":
            return d.icontains(d.meta_str("metadata", key), self.p.add(rule.value, "str"))
        values = rule.value if op == "in" else (rule.value,)
        tests = []
        for value in values:
            if isinstance(value, bool):
                expr, typed = d.meta_bool("metadata", key), self.p.add(value, "bool")
            elif isinstance(value, int | float):
                expr, typed = d.meta_num("metadata", key), self.p.add(float(value), "float")
            else:
                expr, typed = d.meta_str("metadata", key), self.p.add(value, "str")
            tests.append(f"coalesce({expr} {CMP['eq' if op == 'in' else op]} {typed}, false)")
        return "(" + " OR ".join(tests) + ")"

    def export_columns(self) -> str:
        """The export's columns, in the contract's order, ready for a CSV writer once
        ``times_as_text`` has formatted their times.

        Times leave as timestamps, text as stored (the CSV writer guards what a
        spreadsheet would read as a formula). Numbers and booleans stay typed and the
        writer renders them (unquoted, booleans as ``true``/``false``): as text, they
        were ten more string columns for DuckDB to build a batch, about a fifth of the
        export's time. They are named c0, c1, ... so that ORDER BY still sees the raw
        columns (the CSV header is written by the caller).
        """
        return ", ".join(f"{column} AS c{i}" for i, column in enumerate(CHAT_LIST_COLUMNS))

    def order(self, q: ChatQuery) -> str:
        direction = "DESC" if q.descending else "ASC"
        column = SORT_COLUMNS[q.sort_by]
        if column == "id":
            return f"id {direction}"
        return f"{column} {direction} NULLS LAST, id {direction}"

    @staticmethod
    def export_sort_keys(q: ChatQuery) -> list[tuple[str, str]]:
        """``order`` as Arrow's sort keys over the columns of ``export_columns`` (times
        left as timestamps): Arrow puts nulls last in either direction by default, and
        compares text by its UTF-8 bytes, that is by code point, as DuckDB does."""
        direction = "descending" if q.descending else "ascending"
        column = SORT_COLUMNS[q.sort_by]
        keys = [(f"c{CHAT_LIST_COLUMNS.index(column)}", direction)]
        if column != "id":
            keys.append((f"c{CHAT_LIST_COLUMNS.index('id')}", direction))
        return keys


def times_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of ``ChatSql.export_columns`` with its times as the export writes them:
    ISO 8601 in UTC with T and Z, microseconds only when not zero.

    Both engines' times come in as instants: DuckDB's naive UTC, ClickHouse's
    ``timestamp[us, tz=UTC]``, cast to naive UTC first (the same instants; cast to text
    as they are, those would end in a Z already). Arrow's cast writes
    ``2024-05-01 12:30:00.000000`` (26 characters: four-digit years, six fractional
    digits). Done on the rows in order rather than by the engine in the statement,
    whose text DuckDB's sort or Arrow's take then carried: the largest workspace of
    scale M, in process, DuckDB's sorted statement 108.6 -> 61.5 ms with times left as
    timestamps, and 16.3 here. (Options only, no Arrow scalars: making one from a Python
    value imports pandas where it is installed, about 0.4 s on a server's first export.)
    """
    columns = batch.columns
    for i in EXPORT_TIME_COLUMNS:
        naive = pc.cast(columns[i], pa.timestamp("us"))
        text = pc.binary_replace_slice(pc.cast(naive, pa.string()), 10, 11, "T")
        text = pc.binary_replace_slice(text, 26, 26, "Z")
        columns[i] = pc.replace_substring(text, ".000000Z", "Z")
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def created_bounds(q: ChatQuery) -> CreatedBounds:
    """The bounds ``ChatSql.where(q)`` puts on ``created_at``."""
    return q.created_after, q.created_before


def _fields(node: Node) -> Iterator[str]:
    """The request fields a rule tree names."""
    if isinstance(node, Rule):
        yield node.field
    else:
        for child in node.children:
            yield from _fields(child)
