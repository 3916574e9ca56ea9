"""The DuckDB store's reads: the chat relation and the time series over the state it
keeps as events arrive (``duckdb_state``), rather than folding events at query time as
``ClickHouseChatSql`` and ``ClickHouseSeriesSql`` do.

The shared builders (``ChatSql``, ``SeriesSql``) hold the filters, sorts and metrics
both engines run; what is here names DuckDB's tables and its ways around its own
behaviour (``never_waits``).
"""

from __future__ import annotations

from datetime import date, datetime, time

from parley.metrics.chats.query import ChatQuery
from parley.store.chat_sql import (
    MEMBER_COLUMNS,
    MEMBER_JOINS,
    UNBOUNDED,
    UPDATABLE,
    UPSERT_ONLY,
    ChatSql,
    CreatedBounds,
)
from parley.store.duckdb_state import cost_user_md5
from parley.store.series_sql import SeriesSql
from parley.timeseries import ONE_DAY

# The columns of ``chat_state`` that the chat relation takes.
STATE_COLUMNS = (
    *UPSERT_ONLY,
    *UPDATABLE,
    "metadata_text",
    "updated_at",
    "message_count",
    "last_message_at",
)


def never_waits(alias: str = "", *, key: str | None = None) -> str:
    """A condition true of every row of a DuckDB table with an index, on its row id, that
    keeps a scan of it from waiting out a running checkpoint.

    DuckDB takes a table's checkpoint lock before a scan whose conditions are on exactly one
    column (the only kind of scan it reads an index for), so such a scan waits until a
    running checkpoint ends: up to 2.3 s at scale M under ingestion. And it drops a
    condition that the table's statistics show every row meets: ``org = 'acme'`` in a store
    of one org, a range that holds every row. Its statistics say nothing of the row id, so
    this condition stays, and makes two columns with any of the read's own that they cannot
    prove: a workspace's id (a UUID, of which they hold the first 8 bytes).
    ``key``: also ``key = key``, on a column never null, for a read whose own conditions
    may all be dropped (a comparison a row: the chats list took 10% longer with one).
    """
    prefix = f"{alias}." if alias else ""
    row_id = f"{prefix}rowid >= 0"
    return row_id if key is None else f"{row_id} AND {prefix}{key} = {prefix}{key}"


class DuckDBChatSql(ChatSql):
    """The chat relation from ``chat_state``, the members' names from ``member_names``
    (the base class groups the member events per query), the search from ``message_text``
    and the tool names from ``chat_tools``: all kept by the store as events arrive."""

    def member_state(self) -> str:
        return (
            "member_state AS (SELECT member_id, name, is_anonymous FROM member_names"
            f" WHERE {self.tenant()} AND {never_waits()})"
        )

    def relation(self, *, members: bool = True, messages: bool = True, created: CreatedBounds = UNBOUNDED) -> str:
        """CTEs ending in ``chats``: one row per existing chat, every exported field.

        ``chat_state`` holds each chat's latest-wins state, kept by the store as
        events arrive; member names and anonymity are folded here (members are few).
        A chat exists once upserted, and only an upsert sets ``created_at`` (testing it
        reads 8 bytes a chat where the upsert's version string costs about 30).
        ``members=False`` leaves the names and anonymity out, for a statement that
        neither filters on them nor returns them (see ``relation_for``). The message
        columns are kept in ``chat_state`` too, and cost nothing to keep: ``messages`` is
        not read. ``created`` is not needed: the statement's own condition on
        ``created_at`` reads the state's column, 8 bytes a chat.
        """
        return f"""
        {f"{self.member_state()}," if members else ""}
        chats AS (
            SELECT s.chat_id AS id, {", ".join(f"s.{c}" for c in STATE_COLUMNS)}
                   {f", {MEMBER_COLUMNS}" if members else ""}
            FROM chat_state s {MEMBER_JOINS if members else ""}
            WHERE {self.tenant("s")} AND s.created_at IS NOT NULL AND {never_waits("s")}
        )"""

    def tool_names(self, q: ChatQuery) -> str:
        """The distinct names of the tools called in the chats ``q`` selects, unordered
        (from ``chat_tools``, kept by the store as messages arrive)."""
        return f"""
        WITH {self.relation_for(q)}
        SELECT DISTINCT name FROM chat_tools
        WHERE {self.tenant()} AND chat_id IN (SELECT id FROM chats WHERE {self.where(q)})
        """

    def chats_saying(self, needle: str, since: str | None) -> str:
        """A query for the ids of chats with a message containing ``needle`` (any case),
        among them every such chat created at or after ``since`` (when not None).

        ``message_text`` holds each message's content lower-cased as it was stored
        (scanning it takes half the time of lower-casing every message per query), and
        its time, in time order per workspace once ``reorder`` has run. A chat created
        since ``since`` has its messages written since, but for the few chats whose
        oldest message is older than the chat: only their messages are read from
        further back, from the oldest of them when ``self.backdated`` says it (the
        time bounds the scan), in full when it was not looked up. When it says there
        is no such chat, that second scan is left out: a search at 30 days in the
        largest workspaces of scale M, 4 threads in process, 40 to 47 -> 36 to 38 ms
        p50, the look-up included.
        """
        says = f"{self.tenant()} AND contains(content_lower, lower({needle}))"
        if since is None:
            return f"SELECT chat_id FROM message_text WHERE {says}"
        recent = f"SELECT chat_id FROM message_text WHERE {says} AND created_at >= {since}"
        if self.backdated is not None and self.backdated.oldest is None:
            return recent
        bound = "" if self.backdated is None else f" AND created_at >= {self.p.add(self.backdated.oldest, 'time')}"
        older = f"SELECT chat_id {self._backdated_chats(since)}"
        return f"{recent} UNION ALL SELECT chat_id FROM message_text WHERE {says}{bound} AND chat_id IN ({older})"

    def backdated_probe(self, since: datetime) -> str | None:
        """A query (one row, one value) for ``Backdated.oldest`` of a search since ``since``."""
        return f"SELECT min(first_message_at) {self._backdated_chats(self.p.add(since, 'time'))}"

    def _backdated_chats(self, since: str) -> str:
        """FROM and WHERE of the chats created since ``since`` whose oldest message is older."""
        return (
            f"FROM chat_state WHERE {self.tenant()} AND created_at >= {since} AND first_message_at < {since}"
            f" AND {never_waits()}"
        )


class DuckDBSeriesSql(SeriesSql):
    """Activity, registrations and user cost from ``user_activity``, ``user_state`` and
    ``user_cost_days``, kept by the store as events arrive."""

    def _activity(self, mentor_id: str | None) -> str:
        """CTEs ending in ``activity``: (user_id, mentor_id, at) of each session, trace and feedback in range.

        Read from ``user_activity``, where the store keeps each one's people resolved and
        names users by number: ``user_id`` here is that number, as in ``registered``.
        """
        mentor = "" if mentor_id is None else f"AND mentor_id = {self.p.add(mentor_id, 'str')}"
        return f"""
        activity AS (
            SELECT user_no AS user_id, mentor_id, active_at AS at FROM user_activity
            WHERE org = {self.org} AND {self.in_range("active_at")} {mentor}
        )"""

    def _registered(self, condition: str) -> str:
        """The org's users whose latest registration time (``registered_at``) meets
        ``condition``: (``user_id``, the user's number as in ``activity``; ``registered_at``),
        from ``user_state``.

        Each branch of the cohorts reads only the users it counts. The scan never waits out a
        checkpoint (``never_waits``).
        """
        return (
            "(SELECT user_no AS user_id, registered_at FROM user_state"
            f" WHERE org = {self.org} AND {condition} AND {never_waits(key='user_no')})"
        )

    def user_cost_by_model(self, user_id: str) -> str:
        """Read from ``user_cost_days`` (kept at ingestion): the rows of the UTC days wholly
        in range, and the observations of a day the range cuts (a range given in date-times),
        each checked against the range.

        The user's rows are found by ``user_md5``, whose zone maps leave one row group of the
        org's rows that ``reorder`` put in order (and each row group written since), then by
        day. The scan has conditions on several columns of a table without an index, so it
        never waits for a checkpoint (see ``never_waits``). A cut day's observations are
        read by the row ids of its rows: a scan with the observations among its columns read
        them from every row group it scanned (the user's two cut days over 30 days at scale
        M, in rows never put in order: 35 ms, against 11 by row id; 1.2 and 1.6 in order).

        The sums leave as DuckDB's 128-bit integers, which the Python client reads as ints,
        and are never NULL (a group has a row, every column of it a number), so neither
        casts nor ``coalesce`` wrap them: at scale M they took 0.1 to 0.25 ms of a user's 30
        days in the store (1.3 to 1.6 ms with them, 1.1 to 1.4 without), in its planning.
        """
        whole, cut = utc_days(self.start_at, self.end_at)
        user = f"org = {self.org} AND user_md5 = {cost_user_md5(self.org, self.p.add(user_id, 'str'))}"
        parts = []
        if whole:
            first, last = self.p.add(whole[0], "date"), self.p.add(whole[-1], "date")
            parts.append(
                "SELECT model, cost_pusd, input_tokens, output_tokens, n FROM user_cost_days"
                f" WHERE {user} AND day BETWEEN {first} AND {last}"
            )
        if cut:
            days = " OR ".join(f"day = {self.p.add(day, 'date')}" for day in cut)
            uncosted = "o.cost_pusd IS NULL"
            tokens = [f"if({uncosted}, coalesce(o.{side}_tokens, 0), 0)" for side in ("input", "output")]
            parts.append(
                f"SELECT model, coalesce(o.cost_pusd, 0), {', '.join(tokens)}, CAST({uncosted} AS INTEGER)"
                " FROM (SELECT model, unnest(observations) AS o FROM user_cost_days"
                f" WHERE rowid IN (SELECT rowid FROM user_cost_days WHERE {user} AND ({days})))"
                f" WHERE {self.in_range('o.traced_at')}"
            )
        return f"""
        SELECT model, sum(cost_pusd), sum(input_tokens), sum(output_tokens), sum(n)
        FROM ({" UNION ALL ".join(parts)}) AS costs(model, cost_pusd, input_tokens, output_tokens, n)
        GROUP BY model
        """


def utc_days(start: datetime, end: datetime) -> tuple[list[date], list[date]]:
    """The UTC days of ``[start, end]`` (naive UTC, both inclusive): those wholly inside
    it, and those it cuts (at most two, the first and the last)."""
    first, last = start.date(), end.date()
    days = [first + ONE_DAY * i for i in range((last - first).days + 1)]
    cut = set()
    if start.time() != time.min:
        cut.add(first)
    if end.time() != time.max:
        cut.add(last)
    return [d for d in days if d not in cut], sorted(cut)
