"""State the DuckDB adapter keeps current as events are stored: chats, message text, users.

Chat lists and exports read one row per chat instead of folding every event at
query time. Each field carries the version of the event that set it (the event
timestamp, then its id, as one sortable string), and a merge only lets a newer
version replace an older one, so the state is the same whatever order events
arrive in. Message counts, the oldest and newest message times and the names of
the tools called are added as messages arrive (messages are deduplicated on their id
before they get here).

Message text is each message's content lower-cased with its time, for chat search.

User activity is one row per session, trace and feedback with its user and mentor
resolved, so that cohorts read one narrow table instead of joining every session;
user state is each user's latest registration time, by the same versions as chats.
Both name a user by a number of the store's own (``user_numbers``), not by the id.
User cost is each user's LLM cost per day, so that a user's cost over a range is a
few look-ups by key instead of a scan of every trace and observation of the org.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.store import schema
from parley.store.chat_sql import UPDATABLE, UPSERT_ONLY


@dataclass(frozen=True)
class IfRows:
    """Statements to run only if ``relation`` (a table of the transaction, or a subquery
    with its alias) has a row: otherwise they would change nothing, and DuckDB would
    still plan each one. ``otherwise`` runs when it has none."""

    relation: str
    statements: tuple[str, ...]
    otherwise: tuple[str, ...] = ()


@dataclass(frozen=True)
class IfWrote:
    """A statement that writes rows (``CREATE TABLE ... AS``, ``INSERT``), then statements to
    run only if it wrote one: DuckDB answers such a statement with the count of rows it
    wrote, so no probe of its table is needed (a probe took 2 to 3 ms on the 2-core machine)."""

    statement: str
    statements: tuple[str, ...]


Statement = str | IfRows | IfWrote  # run by ``parley.store.duckdb._run``

CHAT_STATE_DDL = """
CREATE TABLE IF NOT EXISTS chat_state (
    org VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    chat_id BIGINT NOT NULL,
    owner_member_id BIGINT,
    chat_type VARCHAR,
    channel VARCHAR,
    created_at TIMESTAMP,
    v_upsert VARCHAR,
    title VARCHAR,
    v_title VARCHAR,
    metadata VARCHAR,
    metadata_text VARCHAR,
    v_metadata VARCHAR,
    archived BOOLEAN,
    v_archived VARCHAR,
    needs_response BOOLEAN,
    v_needs_response VARCHAR,
    paused BOOLEAN,
    v_paused VARCHAR,
    muted BOOLEAN,
    v_muted VARCHAR,
    is_test BOOLEAN,
    v_is_test VARCHAR,
    assistant_member_id BIGINT,
    v_assistant_member_id VARCHAR,
    updated_at TIMESTAMP,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_message_at TIMESTAMP,
    first_message_at TIMESTAMP,
    PRIMARY KEY (org, workspace_id, chat_id)
);
"""

# The version of an event: its timestamp (fixed width) then its id, compared as text.
VERSION = "strftime(ts, '%Y%m%d%H%M%S%f') || ' ' || event_id"


def _latest(expr: str, where: str) -> str:
    return f"(arg_max({{'v': {expr}}}, version) FILTER (WHERE {where})).v"


def _is_newer(new: str, old: str) -> str:
    """Whether version ``new`` is newer than ``old``: a NULL version is never newer, and
    any version is newer than none."""
    return f"({new} IS NOT NULL AND ({old} IS NULL OR {new} > {old}))"


def _take_if_newer(table: str, version: str, *columns: str) -> list[str]:
    """SET expressions of an ``ON CONFLICT`` merge into ``table``: ``columns`` and ``version``
    take the incoming row's values when its ``version`` is newer (``_is_newer``), and keep
    the stored ones otherwise."""
    # Every SET expression reads the row as it was, so the version column can be among them.
    newer = _is_newer(f"excluded.{version}", f"{table}.{version}")
    return [f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {table}.{c} END" for c in (*columns, version)]


# The temporary table of a batch's chat-state merge (``merge_chat_state_sql``).
CHAT_MERGED = "chat_merged"


def merge_chat_state_sql(chat_events: str | None, messages: str | None) -> list[str]:
    """Statements that fold the chat events in ``chat_events`` and count the new messages in
    ``messages`` (either may be None) into ``chat_state``.

    The batch's chats are grouped once, a row each (``r``); their stored rows are found by
    the keys alone, by row id (``found``), read through those row ids, merged with the
    batch's into ``CHAT_MERGED`` with the row id each replaces, and written again: deleted,
    then inserted. DuckDB 2.0 runs an ``ON CONFLICT`` merge as a join that reads every
    column of every stored chat, and updates each column of each row it keeps: at scale M
    (993,000 chats) a live mix's transaction of 4,000 events, 310 chats, took 750 ms that
    way (the scan 1.04 s of CPU, the update of 26 columns 237 ms). Found by their keys,
    the same chats take about 20 ms, their rows read by row id 20, deleted 10 and inserted
    13. One statement makes the merged rows: as three, each with its temporary table (the
    grouped chats, the row ids found, the merged rows), they took 26 to 31 ms a
    transaction at scale M, against 22 to 23.
    """
    grouped = []
    if chat_events is not None:
        grouped.append(_chat_events_by_chat(chat_events))
    if messages is not None:
        grouped.append(_messages_by_chat(messages))
    # Both: a chat with events and no messages in the batch adds 0 to its count; one with
    # messages and no events brings NULL versions, never newer than the stored ones.
    if len(grouped) == 2:
        rows = f"""
        SELECT * EXCLUDE (message_count), coalesce(message_count, 0) AS message_count
        FROM ({grouped[0]}) e FULL OUTER JOIN ({grouped[1]}) m USING (org, workspace_id, chat_id)
        """
    else:
        (rows,) = grouped
    merged = _merged_chat_fields(events=chat_events is not None, messages=messages is not None)
    keys = "org, workspace_id, chat_id"
    return [
        f"""CREATE TEMP TABLE {CHAT_MERGED} AS
        WITH r AS MATERIALIZED ({rows}),
        found AS (SELECT s.rowid AS rid FROM chat_state s SEMI JOIN r USING ({keys}))
        SELECT o.rid, r.org, r.workspace_id, r.chat_id, {", ".join(merged)}
        FROM r
        LEFT JOIN (SELECT s.rowid AS rid, s.* FROM chat_state s SEMI JOIN found f ON s.rowid = f.rid) o
            ON o.org = r.org AND o.workspace_id = r.workspace_id AND o.chat_id = r.chat_id""",
        f"DELETE FROM chat_state s USING {CHAT_MERGED} m WHERE s.rowid = m.rid",
        f"INSERT INTO chat_state BY NAME SELECT * EXCLUDE (rid) FROM {CHAT_MERGED}",
        f"DROP TABLE {CHAT_MERGED}",
    ]


def _newer(version: str, *columns: str) -> list[str]:
    """Select expressions of ``columns`` and ``version``: the batch's (``r``) when its
    ``version`` is newer than the stored row's (``o``, ``_is_newer``; a chat not stored yet
    has none), the stored ones otherwise."""
    newer = _is_newer(f"r.{version}", f"o.{version}")
    return [f"CASE WHEN {newer} THEN r.{c} ELSE o.{c} END AS {c}" for c in (*columns, version)]


def _merged_chat_fields(*, events: bool, messages: bool) -> list[str]:
    """Select expressions of every column of ``chat_state`` but its keys, for the merge of the
    batch's chats (``r``, with events and messages as said) with their stored rows (``o``)."""
    fields: list[str] = []
    groups = [("v_upsert", UPSERT_ONLY)]
    groups += [(f"v_{c}", (c, "metadata_text") if c == "metadata" else (c,)) for c in UPDATABLE]
    for version, columns in groups:
        fields += _newer(version, *columns) if events else [f"o.{c}" for c in (*columns, version)]
    # greatest and least pass over a NULL: a chat keeps its times where the batch has none
    fields.append("greatest(o.updated_at, r.updated_at) AS updated_at" if events else "o.updated_at")
    if messages:
        fields += [
            "coalesce(o.message_count, 0) + r.message_count AS message_count",
            "greatest(o.last_message_at, r.last_message_at) AS last_message_at",
            "least(o.first_message_at, r.first_message_at) AS first_message_at",
        ]
    else:
        fields += ["coalesce(o.message_count, 0) AS message_count", "o.last_message_at", "o.first_message_at"]
    return fields


def _chat_events_by_chat(source: str) -> str:
    """Each chat's fields as the newest of its events in ``source`` that set each one,
    with those events' versions."""
    upserted = "op = 'upsert'"
    select = [f"{_latest(c, upserted)} AS {c}" for c in UPSERT_ONLY]
    select.append(f"max(version) FILTER (WHERE {upserted}) AS v_upsert")
    for column in UPDATABLE:
        is_set = f"list_contains(fields_set, '{column}')"
        select.append(f"{_latest(column, is_set)} AS {column}")
        select.append(f"max(version) FILTER (WHERE {is_set}) AS v_{column}")
    metadata_set = "list_contains(fields_set, 'metadata')"
    select.append(f"{_latest('metadata_text', metadata_set)} AS metadata_text")
    return f"""
    SELECT org, workspace_id, chat_id, {", ".join(select)}, max(ts) AS updated_at
    FROM (SELECT *, {VERSION} AS version FROM {source})
    GROUP BY org, workspace_id, chat_id
    """


def _messages_by_chat(source: str) -> str:
    """Each chat's count of the new messages in ``source``, and their newest and oldest times."""
    return f"""
    SELECT org, workspace_id, chat_id, count(*) AS message_count,
           max(created_at) AS last_message_at, min(created_at) AS first_message_at
    FROM {source}
    GROUP BY org, workspace_id, chat_id
    """


def fill_first_message_sql() -> str:
    """Each chat's oldest message time from the stored messages (a store made before the column)."""
    return """
    UPDATE chat_state s SET first_message_at = m.first_message_at
    FROM (
        SELECT org, workspace_id, chat_id, min(created_at) AS first_message_at
        FROM messages GROUP BY org, workspace_id, chat_id
    ) m
    WHERE s.org = m.org AND s.workspace_id = m.workspace_id AND s.chat_id = m.chat_id
    """


# -- tool names ---------------------------------------------------------------------------

# The tools each chat's messages call: a row per chat and name for each stored batch that
# calls it (a name recurs across batches; readers take the distinct names). Not a list in
# ``chat_state``: DuckDB's ON CONFLICT merge then read every chat's list of the org and
# rewrote the row, 137 ms for 1,000 messages of an org with 250,000 chats, against 8 ms
# for the counts alone.
CHAT_TOOLS_DDL = """
CREATE TABLE IF NOT EXISTS chat_tools (
    org VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    chat_id BIGINT NOT NULL,
    name VARCHAR NOT NULL
);
"""


def record_chat_tools_sql(source: str) -> str:
    """Add the tools the messages in ``source`` call (every stored message, to fill the table)."""
    return f"""
    INSERT INTO chat_tools
    SELECT DISTINCT org, workspace_id, chat_id, unnest(tool_names) FROM {source} WHERE len(tool_names) > 0
    """


# -- message text -------------------------------------------------------------------------

# The text is stored uncompressed, where DuckDB would pick a dictionary and FSST. A 30-day
# search reads row groups of a workspace's older messages and of every workspace's newest
# runs, where few rows meet its other conditions; the text it reads there costs far less
# plain than compressed. Scale M's message text, the same rows in the same row groups,
# in process: the 30-day scan 7.3 to 7.9 -> 4.7 to 4.8 ms on 2 threads (11.9 to 15.0 ->
# 7.3 to 8.3 on one), the whole page 20.5 to 21.5 -> 17.2 to 19.0. Over 365 days nearly
# every row read passes: the scan 21.8 to 23.0 -> 20.5 to 21.1, the page 38.3 to 42.7
# against 40.7 to 41.9. The column takes 386 MiB on disk against 79 (benchmarks.md, "Run
# 126; the search's text stored uncompressed").
MESSAGE_TEXT_DDL = """
CREATE TABLE IF NOT EXISTS message_text (
    org VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    chat_id BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    content_lower VARCHAR USING COMPRESSION uncompressed NOT NULL
);
"""


def record_message_text_sql(source: str) -> str:
    """Add the content of the messages in ``source``, lower-cased by the engine that will
    compare it, and their times, to ``message_text`` for chat search."""
    return f"""
    INSERT INTO message_text
    SELECT org, workspace_id, chat_id, created_at, lower(content) FROM {source} WHERE content IS NOT NULL
    """


def backfill_message_text_sql() -> str:
    """``message_text`` from every stored message, in the order ``reorder`` keeps (a store made before it)."""
    return f"{record_message_text_sql('messages')} ORDER BY org, {REORDERED['message_text']}"


# -- user numbers -------------------------------------------------------------------------

# Every user id the store has seen, per org, with a number of its own: user activity and
# state name users by it. Cohorts join a month of activity (200,000 rows at scale M) to
# the org's users and count distinct users per day; on 32-bit numbers instead of the id
# strings that query took 10.4 instead of 18.9 ms of CPU (one thread), 45% less.
USER_NUMBERS_DDL = """
CREATE TABLE IF NOT EXISTS user_numbers (
    org VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    user_no INTEGER NOT NULL,
    PRIMARY KEY (org, user_id)
);
"""


def number_users_sql(source: str, into: str = "user_numbers") -> str:
    """Give a number to each user id in ``source`` (rows with ``org`` and ``user_id``; a
    table or a subquery) that has none in ``into`` yet, and add it there.

    ``into`` is ``user_numbers`` or a batch's look-up of it (which holds every number
    its ids have; see ``lookups_sql``). Numbers follow the largest in ``user_numbers``.
    The caller holds the store's write lock, so no other transaction numbers users
    meanwhile, and only ids without a number are inserted: the primary key checks new
    keys only (see ``DuckDBStore._store_batch``). The ids with a number are found by a
    left join, which DuckDB builds from the batch's few ids: ``NOT EXISTS`` built a hash
    table of every numbered user instead (14 against 3.2 ms for 1,000 ids among 312,500
    at scale M).
    """
    return f"""
    INSERT INTO {into}
    SELECT n.org, n.user_id,
           (SELECT coalesce(max(user_no), 0) FROM user_numbers) + row_number() OVER (ORDER BY n.org, n.user_id)
    FROM (SELECT DISTINCT org, user_id FROM {source} WHERE user_id IS NOT NULL) n
    LEFT JOIN {into} x ON x.org = n.org AND x.user_id = n.user_id
    WHERE x.user_no IS NULL
    """


def _numbered(rows: str, numbers: str = "user_numbers") -> str:
    """``rows`` (org, session_id, user_id, mentor_id, active_at, waiting) with the user's
    number for its id, from ``numbers`` (``user_numbers`` or the rows of it a batch looked
    up): rows of ``user_activity``."""
    return f"""
    SELECT a.org, a.session_id, u.user_no, a.mentor_id, a.active_at, a.waiting
    FROM ({rows}) a(org, session_id, user_id, mentor_id, active_at, waiting)
    LEFT JOIN {numbers} u ON u.org = a.org AND u.user_id = a.user_id
    """


# -- user activity ------------------------------------------------------------------------

USER_ACTIVITY_DDL = """
CREATE TABLE IF NOT EXISTS user_activity (
    org VARCHAR NOT NULL,
    session_id VARCHAR,  -- the session a trace or feedback names; NULL on a session's own row
    user_no INTEGER,  -- see user_numbers
    mentor_id VARCHAR,
    active_at TIMESTAMP NOT NULL,
    waiting BOOLEAN NOT NULL DEFAULT false  -- stored before its session (see record_activity_sql)
);
"""

# A trace's user and mentor are its own, else its session's; a feedback's user is its
# own and its mentor its own, else its session's. ``{people}`` is the sessions to look in;
# a row that names a session not among them, and lacks what the session would give it,
# waits for it. A row with its own user and mentor needs nothing of its session: marked
# waiting, as it was until 2026-12-06, such rows of sessions never stored (a stream that
# sends few sessions) made each batch of sessions scan them all for its own (3M such
# traces: 53 ms a batch of 500 sessions against 25; benchmarks.md, "Activity that waits
# only for what it lacks").
_FROM_SESSION = {"traces": ("user_id", "mentor_id"), "feedback": ("mentor_id",)}


def _lacks(table: str, alias: str = "") -> str:
    """SQL true for a row of ``table`` that lacks something its session would give it (a
    trace's user or mentor, a feedback's mentor): the rows that wait for their session,
    and whose session a batch looks up (``lookups_sql``)."""
    return "(" + " OR ".join(f"{alias}{column} IS NULL" for column in _FROM_SESSION[table]) + ")"


_TRACE_ACTIVITY = f"""
SELECT t.org, t.session_id, coalesce(t.user_id, s.user_id), coalesce(t.mentor_id, s.mentor_id), t.traced_at,
       t.session_id IS NOT NULL AND s.session_id IS NULL AND {_lacks("traces", "t.")}
FROM {{source}} t LEFT JOIN {{people}} s ON s.org = t.org AND s.session_id = t.session_id
"""
_FEEDBACK_ACTIVITY = f"""
SELECT f.org, f.session_id, f.user_id, coalesce(f.mentor_id, s.mentor_id), f.created_at,
       f.session_id IS NOT NULL AND s.session_id IS NULL AND {_lacks("feedback", "f.")}
FROM {{source}} f LEFT JOIN {{people}} s ON s.org = f.org AND s.session_id = f.session_id
"""
_SESSION_ACTIVITY = "SELECT org, NULL, user_id, mentor_id, started_at, false FROM {source}"


def _named_in(table: str, key: str, source: str) -> str:
    """The rows of ``table`` whose ``key`` rows of ``source`` name, not every row stored.

    Joined on org and key, not on the key alone: the engine then skips the parts of the
    table that hold other orgs (the traces of 7,000 observations at scale M: 7 against
    48 ms for ``trace_id IN (...)``, the same ids recurring in every org).
    """
    return f"(SELECT x.* FROM {table} x SEMI JOIN {source} s ON s.org = x.org AND s.{key} = x.{key})"


def record_activity_sql(sources: dict[str, str]) -> list[str]:
    """Statements that add the sessions, traces and feedback just stored (``sources`` maps
    each table with rows in the batch to the relation holding them) to ``user_activity``,
    where cohorts read who was active when.

    They read the batch's look-ups (see ``lookups_sql``): its users are numbered already,
    and a trace's user, if not its own, is its session's. A trace or feedback stored
    before its session keeps a NULL user or mentor until the session arrives, marked
    ``waiting``; the session then fills them in and clears the mark. Sessions are stored
    once, so a resolved row never changes again, and the table is the same whatever the
    order of arrival. The update looks at waiting rows alone, which the zone maps of
    ``waiting`` find in a few row groups: it looked at the rows with a NULL user or
    mentor before, and once the table held one (a trace come before its session, or a
    session without a mentor) DuckDB read all of it for every batch of sessions, 6.8M
    rows at scale M, a median of 55 to 74 ms a transaction in the server against 1.6 to
    2.6 (benchmarks.md, "Activity waiting for its session"). One insert for the three
    tables: DuckDB plans each statement, about 6 ms apiece on the 2-core machine however
    few its rows, and a live stream's transactions bring all three.
    """
    activity = {"sessions": _SESSION_ACTIVITY, "traces": _TRACE_ACTIVITY, "feedback": _FEEDBACK_ACTIVITY}
    rows = [
        select.format(source=sources[table], people=SESSIONS_LOOKUP)
        for table, select in activity.items()
        if table in sources
    ]
    if not rows:
        return []
    statements = [f"INSERT INTO user_activity {_numbered(' UNION ALL '.join(rows), NUMBERS_LOOKUP)}"]
    if "sessions" in sources:
        sessions = f"SELECT org, session_id, user_id, mentor_id, started_at, false FROM {sources['sessions']}"
        statements.append(f"""
            UPDATE user_activity a
            SET user_no = coalesce(a.user_no, s.user_no), mentor_id = coalesce(a.mentor_id, s.mentor_id),
                waiting = false
            FROM ({_numbered(sessions, NUMBERS_LOOKUP)}) s
            WHERE a.waiting AND a.org = s.org AND a.session_id = s.session_id
            """)
    return statements


# The tables whose every stored row adds one row to ``user_activity``.
ACTIVITY_SOURCES = ("sessions", "traces", "feedback")

# Tables ``reorder`` rewrites org by org, with the order: in time order for the reads that
# filter on these times, a user's rows together for a user's cost (see ``USER_COST_DDL``).
# Each table's rows grow with the stored rows of others: user activity with sessions,
# traces and feedback; message text with messages; the cost days with observations. A
# chat's row is written again, at the table's end, by each batch that brings the chat's
# events or messages: ``chat_state`` counts those. Its chats go newest first, as the chats
# list's default order (see ``reorder_sql``). Sessions and traces go in time order for a
# batch's look-ups, which read the stored rows of the day before it first (``_recent``).
REORDERED = {
    "user_activity": "active_at",
    "message_text": "workspace_id, created_at",
    "user_cost_days": "user_md5, day",
    "chat_state": "workspace_id, created_at DESC",
    "sessions": "ts",
    "traces": "ts",
}
REORDERED_SOURCES = {
    "user_activity": ACTIVITY_SOURCES,
    "message_text": ("messages",),
    "user_cost_days": ("observations",),
    "chat_state": ("chat_events", "messages"),
    "sessions": ("sessions",),
    "traces": ("traces",),
}

# Tables of ``REORDERED`` and ``CLUSTERED`` with a primary key, which holds no row twice:
# their rows are set aside before they are deleted, then written back (``Rewrite.aside``).
KEYED = frozenset({"chat_state"})
# The temporary table a rewrite sets a keyed table's rows aside in.
ASIDE = "rows_aside"


@dataclass(frozen=True)
class Rewrite:
    """Statements that write rows of a table again in its order, in one transaction of their
    own (``DuckDBStore._rewrite``): ``copy`` returns how many rows it wrote, ``delete`` how
    many it removed, of those up to ``$last``, the largest rowid before the copy.

    ``copy`` writes the rows after the table's last one, then ``delete`` removes them where
    they were: the two name disjoint rows, since rowids do not move inside a transaction.
    A table with a primary key (``KEYED``) cannot hold a row and its copy: there ``aside``
    first copies the rows up to ``$last`` into ``ASIDE``, ``delete`` removes them, and
    ``copy`` writes them back from ``ASIDE``.
    """

    copy: str
    delete: str
    aside: str | None = None


def _in_order(table: str, rows: str, order: str) -> Rewrite:
    """The rewrite of the rows of ``table`` meeting ``rows`` (and up to ``$last``) in ``order``;
    a ``KEYED`` table's set aside first."""
    removed = f"{rows} AND rowid <= $last"
    if table in KEYED:
        return Rewrite(
            aside=f"CREATE OR REPLACE TEMP TABLE {ASIDE} AS SELECT * FROM {table} WHERE {removed}",
            delete=f"DELETE FROM {table} WHERE {removed}",
            copy=f"INSERT INTO {table} SELECT * FROM {ASIDE} ORDER BY {order}",
        )
    return Rewrite(
        copy=f"INSERT INTO {table} SELECT * FROM {table} WHERE {rows} ORDER BY {order}",
        delete=f"DELETE FROM {table} WHERE {removed}",
    )


def reorder_sql(table: str) -> Rewrite:
    """The rewrite of the rows of org ``$org`` in ``table`` (one of ``REORDERED``) in its order.

    A bulk load (an export from another system, a platform catching up) brings an org's
    events out of time order: their rows then give each row group a year of times, and a
    30-day cohort or search reads them all. Rewritten in order, each row group holds a few
    weeks.

    A load writes a workspace's chats in ``chat_state`` in the order it brings them, about
    the order of their ids: a month's chats were spread over every vector of the
    workspace's rows (at scale M the largest workspace's 2,377 chats of the month among the
    bulk load's rows lay in 25 vectors of 2,048 rows; 2 in this order). Newest first, the
    top 50 of a list in its default order, or by last message, is found among the first
    rows read, and the rest is passed over; oldest first, each row replaced the one before
    in the top 50. Scale M's loaded store, with and without its chats in this order, then
    the live mix over HTTP, in process, one request at a time: the 30-day search 20.1 ->
    18.3 ms of CPU, the 30-day list by last message 9.4 -> 8.0, that over 365 days 16.1 ->
    15.9 (17.4 oldest first) (benchmarks.md, "The chat state in order after a bulk load").

    The bench's load brings sessions and traces a user's at a time: each vector of 2,048
    rows held a year of times, and a live batch's look-ups of the day before it
    (``_recent``) read the whole table. In time order, at scale M, in process, a live
    mix's transactions of 4,000 events: the sessions' look-up about 6.5 ms against 12,
    the traces' 5 against 11.5 (benchmarks.md, "Sessions and traces in time order after a
    bulk load"). Putting scale M's 1.9M sessions and 4.4M traces in order took about 5 s.
    """
    return _in_order(table, "org = $org", REORDERED[table])


# The order a store fed as it goes puts its newest rows in (``sort_newest_sql``), by table:
# each org's rows together, and in each org a workspace's (where the table has them), then
# the order ``reorder`` keeps. Each table grows with the stored rows of these tables.
CLUSTERED = {
    **{t.name: "org, workspace_id, ts" if "workspace_id" in t.column_names else "org, ts" for t in schema.TABLES},
    "chat_tools": "org, workspace_id, chat_id",
    **{table: f"org, {order}" for table, order in REORDERED.items()},
}
# What a table's new rows are counted by.
CLUSTERED_SOURCES = {
    **{t.name: (t.name,) for t in schema.TABLES},
    "chat_tools": ("messages",),
    **REORDERED_SOURCES,
}


def sort_newest_sql(table: str) -> Rewrite:
    """The rewrite of the rows of ``table`` (one of ``CLUSTERED``) after rowid ``$mark`` in
    its order.

    Events that arrive as they happen are written in the order they come: every org's and
    workspace's rows of an hour interleaved. A read of one workspace's month then reads
    every workspace's rows of that month, and a user's cost every row of the range.
    Rewritten in this order every so many rows, each run of rows holds one org's and
    workspace's rows together, which the row groups' zone maps of ``org`` and
    ``workspace_id`` tell apart, and the runs stay in the order of time. ``chat_state``
    writes a chat's row again at its end for each batch that brings the chat's events or
    messages: its newest rows are the chats in use, every workspace's interleaved, and a
    run holds each workspace's together by the time they were created, newest first.
    """
    return _in_order(table, "rowid > $mark", CLUSTERED[table])


def backfill_activity_sql() -> str:
    """``user_activity`` from every stored session, trace and feedback (a store made before it)."""
    everything = f"""
    {_SESSION_ACTIVITY.format(source="sessions")}
    UNION ALL {_TRACE_ACTIVITY.format(source="traces", people="sessions")}
    UNION ALL {_FEEDBACK_ACTIVITY.format(source="feedback", people="sessions")}
    """
    return f"""
    INSERT INTO user_activity {_numbered(everything)}
    ORDER BY 1, 5  -- org by org, in time order: the org and range filters of cohorts skip the rest
    """


# An activity row (``a``) that lacks what its session would give it: ``_lacks`` of the
# row it was made from (a feedback's user is always its own).
_ACTIVITY_LACKS = "(a.user_no IS NULL OR a.mentor_id IS NULL)"


def mark_waiting_sql() -> str:
    """Mark the activity of the traces and feedback whose session is not stored (a store
    made before ``user_activity`` had ``waiting``)."""
    return f"""
    UPDATE user_activity a SET waiting = true
    WHERE a.session_id IS NOT NULL AND {_ACTIVITY_LACKS}
      AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.org = a.org AND s.session_id = a.session_id)
    """


# The activity marked waiting though it has its user and mentor (a store written before
# 2026-12-06, when such rows waited for their session too): it needs nothing of it.
CLEAR_COMPLETE_WAITING = f"UPDATE user_activity a SET waiting = false WHERE a.waiting AND NOT {_ACTIVITY_LACKS}"


# Every user id stored events name (a store made before ``user_numbers``).
STORED_PEOPLE = """(
    SELECT org, user_id FROM sessions UNION ALL SELECT org, user_id FROM traces
    UNION ALL SELECT org, user_id FROM feedback UNION ALL SELECT org, user_id FROM users
) people"""


# -- member names -------------------------------------------------------------------------

# Each member's newest name and anonymity, for the chat list and export (the owner's and
# assistant's names). Grouping the ``members`` events per request instead cost the chats
# list 1 to 1.5 ms of 10 (planning included) at scale M.
MEMBER_NAMES_DDL = """
CREATE TABLE IF NOT EXISTS member_names (
    org VARCHAR NOT NULL,
    workspace_id VARCHAR NOT NULL,
    member_id BIGINT NOT NULL,
    name VARCHAR,
    is_anonymous BOOLEAN,
    version VARCHAR NOT NULL,
    PRIMARY KEY (org, workspace_id, member_id)
);
"""


def merge_member_names_sql(source: str) -> str:
    """Fold the member upserts in ``source`` (every stored one, to fill the table) into
    ``member_names``: the newest event of a member wins, whatever the order of arrival."""
    return f"""
    INSERT INTO member_names BY NAME
    SELECT org, workspace_id, member_id, {_latest("name", "true")} AS name,
           {_latest("is_anonymous", "true")} AS is_anonymous, max(version) AS version
    FROM (SELECT *, {VERSION} AS version FROM {source})
    GROUP BY org, workspace_id, member_id
    ON CONFLICT (org, workspace_id, member_id) DO UPDATE SET
        {", ".join(_take_if_newer("member_names", "version", "name", "is_anonymous"))}
    """


# -- user state ---------------------------------------------------------------------------

USER_STATE_DDL = """
CREATE TABLE IF NOT EXISTS user_state (
    org VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    user_no INTEGER NOT NULL,  -- see user_numbers
    registered_at TIMESTAMP,
    version VARCHAR NOT NULL,
    user_md5 UHUGEINT NOT NULL,  -- see cost_user_md5: how a batch finds its users' rows
    PRIMARY KEY (org, user_id)
);
"""


def merge_users_sql(source: str, numbers: str = "user_numbers") -> str:
    """Fold the user upserts in ``source`` (every stored one, to fill the table) into
    ``user_state``; their ids are numbered already in ``numbers`` (``user_numbers`` or a
    batch's look-up of it, see ``lookups_sql``)."""
    merge = ", ".join(_take_if_newer("user_state", "version", "registered_at"))
    return f"{_insert_users(source, numbers)} ON CONFLICT (org, user_id) DO UPDATE SET {merge}"


def _insert_users(source: str, numbers: str) -> str:
    """The insert of each user of the upserts in ``source`` into ``user_state``, as its newest one."""
    return f"""
    INSERT INTO user_state BY NAME
    SELECT v.org, v.user_id, any_value(u.user_no) AS user_no,
           arg_max(v.registered_at, v.version) AS registered_at, max(v.version) AS version,
           {cost_user_md5("v.org", "v.user_id")} AS user_md5
    FROM (SELECT *, {VERSION} AS version FROM {source}) v
    JOIN {numbers} u ON u.org = v.org AND u.user_id = v.user_id
    GROUP BY v.org, v.user_id
    """


def merge_batch_users_sql(source: str) -> IfRows:
    """``merge_users_sql`` of a batch's upserts in ``source``, numbered in ``NUMBERS_LOOKUP``;
    a plain insert when none of their users has a row yet.

    DuckDB 2.0 runs an ``ON CONFLICT`` merge as a join that reads the key and version of
    every stored user, however few the batch brings: at scale M a live mix's transaction
    of 4,000 events, whose 13 upserts were all of new users, read 192,400 rows for it. A
    stored user is found by ``user_md5``, one integer column of the table, which any stored
    row with the same org and id has: if none matches, none of the users is stored, and
    the plain insert checks its keys through the primary key's index alone. That
    transaction's merge took 4.1 ms against 9.7 (benchmarks.md, "The users' merge: a plain
    insert when every user is new"). A match, even of another user whose md5 is the same,
    takes the merge, which is right whatever it finds.
    """
    md5s = f"SELECT DISTINCT {cost_user_md5('org', 'user_id')} AS user_md5 FROM {source}"
    stored = f"(SELECT 1 FROM user_state x SEMI JOIN ({md5s}) s ON s.user_md5 = x.user_md5) stored"
    return IfRows(
        stored, (merge_users_sql(source, NUMBERS_LOOKUP),), otherwise=(_insert_users(source, NUMBERS_LOOKUP),)
    )


# -- user cost ----------------------------------------------------------------------------

# Each user's LLM cost per UTC day of the trace and model: the cost of the observations
# that carry one, and the tokens of those that do not, to be priced when asked (the
# operator's price table can change; stored tokens cannot). Each stored batch adds one
# row per user, day and model it touches. There is no index: ``reorder`` keeps each org's
# rows in (user, day) order, by ``user_md5``, an integer the row-group zone maps can
# bound, so a user's cost scans the one row group that holds the user's rows, whatever
# the range (a user's id is text, of which the zone maps hold the first 8 bytes only).
# Found through an index on a day key instead, a user's 30 days took 30 look-ups of
# about 0.1 ms each at scale M. (A primary key merged ON CONFLICT kept one row per day
# but cost 150 to 225 ms a batch of 7,000 observations at scale M, against 9 to 11 ms
# for these appends.)
USER_COST_DDL = """
CREATE TABLE IF NOT EXISTS user_cost_days (
    org VARCHAR NOT NULL,
    user_md5 UHUGEINT NOT NULL,  -- see cost_user_md5
    day DATE NOT NULL,  -- the UTC day of the trace
    model VARCHAR,
    cost_pusd HUGEINT NOT NULL,  -- of the observations that carry a cost
    input_tokens HUGEINT NOT NULL,  -- of those that do not
    output_tokens HUGEINT NOT NULL,
    n BIGINT NOT NULL,  -- how many do not
    -- each observation, for a range given in date-times that cuts the day
    observations STRUCT(traced_at TIMESTAMP, input_tokens BIGINT, output_tokens BIGINT, cost_pusd BIGINT)[] NOT NULL
);
"""

# Observations whose user is not known yet: their trace is not stored, or it names no
# user and its session (``session_id``, ``traced_at`` set once the trace is) is not stored.
COST_PENDING_DDL = """
CREATE TABLE IF NOT EXISTS cost_pending (
    org VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    session_id VARCHAR,
    traced_at TIMESTAMP,
    model VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_pusd BIGINT
);
"""


def cost_user_md5(org: str, user_id: str) -> str:
    """SQL for ``user_cost_days.user_md5`` of the user ``user_id`` of ``org`` (columns or
    bound parameters): the ``md5_number`` of the org's length in bytes, then org and user
    id, so that no two (org, user) pairs share a key. Written once for the rows stored and
    the reads that look for them; of parameters DuckDB makes it a constant, which the zone
    maps compare."""
    return f"md5_number(strlen({org}) || ':' || {org} || {user_id})"


# A step's observations: (org, trace_id, session_id, traced_at, user_id, waiting, model,
# input_tokens, output_tokens, cost_pusd), ``waiting`` when the user can still arrive.
_STEP = "cost_step"
_OBSERVATION = "o.model, o.input_tokens, o.output_tokens, o.cost_pusd"


def _resolve(observations: str, traces: str, sessions: str) -> str:
    """Observations (``o``, with org and trace_id) with their trace's user, else its session's."""
    return f"""
    SELECT o.org, o.trace_id, t.session_id, t.traced_at, coalesce(t.user_id, s.user_id) AS user_id,
           t.trace_id IS NULL OR (t.user_id IS NULL AND t.session_id IS NOT NULL AND s.session_id IS NULL)
               AS waiting,
           {_OBSERVATION}
    FROM {observations} o
    LEFT JOIN {traces} t ON t.org = o.org AND t.trace_id = o.trace_id
    LEFT JOIN {sessions} s ON s.org = t.org AND s.session_id = t.session_id
    """


def _add_cost_days(source: str, *, in_order: bool = False) -> str:
    """Add the resolved observations of ``source`` to their users' days, a row per user, day
    and model; ``in_order``, in the order ``reorder`` keeps (filling the table whole)."""
    order = f"ORDER BY org, {REORDERED['user_cost_days']}" if in_order else ""
    return f"""
    INSERT INTO user_cost_days
    SELECT org, {cost_user_md5("org", "user_id")} AS user_md5, day, model, coalesce(sum(cost_pusd), 0),
           coalesce(sum(input_tokens) FILTER (WHERE cost_pusd IS NULL), 0),
           coalesce(sum(output_tokens) FILTER (WHERE cost_pusd IS NULL), 0),
           count(*) FILTER (WHERE cost_pusd IS NULL),
           list({_OBSERVED})
    FROM (SELECT *, CAST(traced_at AS DATE) AS day FROM {source} WHERE user_id IS NOT NULL AND traced_at IS NOT NULL)
    GROUP BY org, user_id, day, model
    {order}
    """


_OBSERVED = (
    "{'traced_at': traced_at, 'input_tokens': input_tokens, 'output_tokens': output_tokens, 'cost_pusd': cost_pusd}"
)


def _keep_waiting(source: str) -> str:
    return f"""
    INSERT INTO cost_pending
    SELECT org, trace_id, session_id, traced_at, model, input_tokens, output_tokens, cost_pusd
    FROM {source} WHERE waiting
    """


def _settle(step: str, settled: str | None, *, in_order: bool = False) -> list[Statement]:
    """Resolve the observations ``step`` selects: count the resolved ones into their days,
    drop the pending rows ``settled`` names (a DELETE's USING and WHERE), keep what still waits.

    ``settled`` names the same pending rows as ``step`` (the same join), so when the step
    is empty the statements after it would change nothing; they are then not run. In a
    live stream a trace or a session seldom completes an observation that waits for it
    (none of the first 120,000 of the bench's held events did), and DuckDB plans each
    statement however few rows it reads: the cost days' insert alone took 4 to 8 ms an
    empty step.
    """
    changes = [_add_cost_days(_STEP, in_order=in_order)]
    if settled is not None:
        changes.append(f"DELETE FROM cost_pending p USING {settled}")
    changes.append(_keep_waiting(_STEP))
    return [IfWrote(f"CREATE TEMP TABLE {_STEP} AS {step}", tuple(changes)), f"DROP TABLE {_STEP}"]


def record_cost_sql(table: str, source: str) -> list[Statement]:
    """Statements that bring each user's cost up to date with the observations, traces or
    sessions just stored in ``source``.

    An observation counts for its trace's user, else for the user of the trace's
    session, on the UTC day of the trace; until both are stored it waits in
    ``cost_pending``, and the trace or session that completes it moves it over.
    Observations, traces and sessions are stored once, so a counted observation never
    moves again and the days are the same whatever the order of arrival. The stored
    traces and sessions come from the batch's look-ups (see ``lookups_sql``).
    """
    if table == "observations":
        return _settle(_resolve(source, TRACES_LOOKUP, SESSIONS_LOOKUP), None)
    if table == "traces":
        return _settle(
            _resolve(_named_in("cost_pending", "trace_id", source), source, SESSIONS_LOOKUP),
            f"{source} t WHERE p.org = t.org AND p.trace_id = t.trace_id",
        )
    if table == "sessions":
        step = f"""
        SELECT p.org, p.trace_id, p.session_id, p.traced_at, s.user_id, false AS waiting,
               p.model, p.input_tokens, p.output_tokens, p.cost_pusd
        FROM cost_pending p JOIN {source} s ON s.org = p.org AND s.session_id = p.session_id
        """
        return _settle(step, f"{source} s WHERE p.org = s.org AND p.session_id = s.session_id")
    return []


# A user's day and model's rows are folded into one when they are more than this many.
FOLD_ROWS = 4
_COST_ROW = ("org", "user_md5", "day", "model")


def fold_cost_days_sql() -> list[str]:
    """Statements that fold each user's day and model with more than ``FOLD_ROWS`` rows in
    ``user_cost_days`` into one row (the same sums), so that a heavy user's year stays a
    few thousand rows: a user's cost reads each of the user's rows, and a scan of the rows
    written since ``reorder`` last ran reads every one of them. The folded rows are written
    after the others, out of user order until the next ``reorder``."""
    key, rows_key = ", ".join(_COST_ROW), ", ".join(f"d.{c}" for c in _COST_ROW)

    def same(a: str, b: str) -> str:
        return " AND ".join(f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}" for c in _COST_ROW)

    return [
        f"""
        CREATE TEMP TABLE cost_fold AS
        SELECT {rows_key}, sum(d.cost_pusd) AS cost_pusd,
               sum(d.input_tokens) AS input_tokens, sum(d.output_tokens) AS output_tokens, sum(d.n) AS n,
               flatten(list(d.observations)) AS observations
        FROM user_cost_days d
        SEMI JOIN (SELECT {key} FROM user_cost_days GROUP BY {key} HAVING count(*) > {FOLD_ROWS}) c ON {same("d", "c")}
        GROUP BY {rows_key}
        """,
        f"DELETE FROM user_cost_days d USING cost_fold f WHERE {same('d', 'f')}",
        "INSERT INTO user_cost_days SELECT * FROM cost_fold",
        "DROP TABLE cost_fold",
    ]


def backfill_cost_sql() -> list[Statement]:
    """``user_cost_days`` and ``cost_pending`` from every stored observation (a store made before them)."""
    return _settle(_resolve("observations", "traces", "sessions"), None, in_order=True)


# -- what the adapter runs ----------------------------------------------------------------

# The stored rows a batch's state statements read, looked up once per batch (temporary
# tables of the transaction; see ``lookups_sql``).
TRACES_LOOKUP = "batch_traces"
SESSIONS_LOOKUP = "batch_sessions"
NUMBERS_LOOKUP = "batch_numbers"
# How long before the rows naming them a batch's look-ups read the stored rows first.
RECENT = "1 DAY"
# The columns of the look-ups, the ones the state statements read: a scan reads no other.
_TRACE_COLUMNS = "org, trace_id, session_id, user_id, traced_at"
_SESSION_COLUMNS = "org, session_id, user_id, mentor_id"


def _union(selects: list[str]) -> str:
    return "(" + " UNION ALL ".join(selects) + ")"


def _look_up(
    lookup: str,
    table: str,
    columns: str,
    key: str,
    wanted: str,
    since: str,
    sources: dict[str, str],
    *,
    many_keys: bool = False,
) -> list[Statement]:
    """Statements that make ``lookup``, the ``columns`` of the stored rows of ``table`` whose
    ``key`` (with their org) a row of ``wanted`` names.

    When the batch brings rows of ``table`` they are looked for among those first, and the
    stored table is read only if a key is not found there. The batch's rows are stored
    already, and an entity is stored once, so the parts never hold the same row.

    Of the stored rows, the recent ones are read first: those of ``RECENT`` before the
    earliest of the rows naming them, whose time ``since`` gives. A live stream's traces
    name sessions begun moments before them, and observations traces, so each mostly
    comes in the same transaction as what it names or a recent one; the row groups' zone
    maps of ``ts`` then skip the rest of the table, and the whole table is read only for
    a key still not found. At scale M, a live transaction of 4,000 events: the sessions'
    look-up 4 ms against 32 for all of them, the traces' 5 to 6 against 12.
    """
    missing = _unmatched(wanted, lookup, key)
    if table in sources:
        found = [
            f"CREATE TEMP TABLE {lookup} AS SELECT {columns} FROM {_named_in(sources[table], key, wanted)}",
            f"INSERT INTO {lookup} {_recent(table, columns, key, missing, since, many_keys=many_keys)}",
        ]
    else:
        found = [f"CREATE TEMP TABLE {lookup} AS {_recent(table, columns, key, wanted, since, many_keys=many_keys)}"]
    stored = f"INSERT INTO {lookup} SELECT {columns} FROM {_named_in(table, key, missing)}"
    return [*found, IfRows(f"{missing} missing", (stored,))]


def _recent(table: str, columns: str, key: str, wanted: str, since: str, *, many_keys: bool) -> str:
    """The ``columns`` of the rows of ``table`` of ``RECENT`` before ``since`` whose ``key``
    (with their org) a row of ``wanted`` names.

    DuckDB pushes the keys a join wants into the scan of the other side: as a list when
    they are few rows (its ``dynamic_or_filter_threshold``, 50), else as their least and
    greatest. The observations' traces not in the batch are mostly none or a few, of an
    org or two, and the zone maps of org and id skip most row groups for them (8 of 40 for
    2 traces at scale M). The sessions a live mix's traces, feedback and observations'
    traces name are more (``many_keys``): 76 rows naming 16 sessions of every org in a
    transaction of 4,000 events. Pushed either way, they skip nothing, and the scan tests
    them on the key of every row it passes over: where a bulk load left a day's rows in
    every vector of the table (before ``reorder``), that day's sessions joined to 76 keys
    took 16 ms, against 4 with no join filter. Their recent keys are then made first
    (``MATERIALIZED``), which no join filter reaches, and the rows they match read by row
    id: that transaction's look-up 8.4 against 30.4 ms (benchmarks.md, "The sessions'
    look-up by row id"); with the sessions in time order, 5.1 against 7.5.
    """
    is_recent = f"ts >= {since} - INTERVAL {RECENT}"
    if not many_keys:
        return f"SELECT {columns} FROM {_named_in(f'(SELECT * FROM {table} WHERE {is_recent})', key, wanted)}"
    recent = f"SELECT rowid AS rid, org, {key} FROM {table} WHERE {is_recent}"
    ids = f"SELECT rid FROM {_named_in('recent', key, wanted)}"
    return f"SELECT {columns} FROM {table} WHERE rowid IN (WITH recent AS MATERIALIZED ({recent}) {ids})"


def _unmatched(wanted: str, found: str, key: str) -> str:
    """The (org, ``key``) of the rows of ``wanted`` with a ``key`` that ``found`` lacks, as a subquery."""
    return (
        f"(SELECT w.org, w.{key} FROM {wanted} w ANTI JOIN {found} f ON f.org = w.org AND f.{key} = w.{key}"
        f" WHERE w.{key} IS NOT NULL)"
    )


def lookups_sql(sources: dict[str, str]) -> tuple[list[Statement], list[str]]:
    """(statements that number the batch's users and look up the stored rows its state
    statements read, statements that drop the look-ups); ``sources`` maps each table
    with rows in the batch to the relation holding them, stored already.

    Each look-up reads its table once per batch (its recent rows, and the rest only for
    a key not found in them; see ``_look_up``): before, each statement that needed a
    session scanned the sessions again (a trace's activity, its cost, an observation's
    cost, a feedback's activity), and each numbered its own users and read
    ``user_numbers`` again.
    """

    def named(column: str, *tables: str) -> list[str]:
        return [f"SELECT org, {column} FROM {sources[t]}" for t in tables if t in sources]

    def earliest(*tables: str) -> str:
        """The earliest time of the batch's rows of ``tables``."""
        return "(SELECT min(ts) FROM " + _union([f"SELECT ts FROM {sources[t]}" for t in tables if t in sources]) + ")"

    statements: list[Statement] = []
    drops: list[str] = []
    if "observations" in sources:
        observations = sources["observations"]
        since = earliest("observations")
        statements += _look_up(TRACES_LOOKUP, "traces", _TRACE_COLUMNS, "trace_id", observations, since, sources)
        drops.append(f"DROP TABLE {TRACES_LOOKUP}")
    # The sessions whose user or mentor the batch's rows lack: a trace's user and mentor,
    # a feedback's mentor, and the user of an observation's trace. A row with its own needs
    # nothing of its session, and a session not found among the recent ones is looked for
    # in the whole table: traces with their own user and mentor naming sessions begun more
    # than a day before, or never stored, made each batch read every session (1M sessions:
    # 56 to 61 ms a batch of 500 traces against 26 to 29; benchmarks.md, "Activity that
    # waits only for what it lacks").
    naming = [
        f"SELECT org, session_id FROM {sources[table]} WHERE {_lacks(table)}"
        for table in _FROM_SESSION
        if table in sources
    ]
    if "observations" in sources:  # the sessions of the observations' traces
        naming.append(f"SELECT org, session_id FROM {TRACES_LOOKUP} WHERE user_id IS NULL")
    if naming:
        since = earliest("traces", "feedback", "observations")
        statements += _look_up(
            SESSIONS_LOOKUP, "sessions", _SESSION_COLUMNS, "session_id", _union(naming), since, sources, many_keys=True
        )
        drops.append(f"DROP TABLE {SESSIONS_LOOKUP}")
    people = named("user_id", "users", "sessions", "traces", "feedback")
    if naming:  # a trace's or feedback's user may be its session's
        people.append(f"SELECT org, user_id FROM {SESSIONS_LOOKUP}")
    if people:
        # The numbers the batch's users have, then numbers for those that have none, added
        # to the look-up first and from there to ``user_numbers``: one read of it in all.
        # Numbering runs only when one of them has no number: in a live stream users are
        # mostly known (the first 120,000 of the bench's held events, in 30 transactions,
        # named no new one), and the numbering took about 15 ms to plan and run for nothing.
        everyone = _union(people)
        numbers = _named_in("user_numbers", "user_id", everyone)
        unnumbered = f"{_unmatched(everyone, NUMBERS_LOOKUP, 'user_id')} unnumbered"
        numbering = (
            number_users_sql(f"{everyone} people", into=NUMBERS_LOOKUP),
            f"""INSERT INTO user_numbers SELECT * FROM {NUMBERS_LOOKUP}
                WHERE user_no > (SELECT coalesce(max(user_no), 0) FROM user_numbers)""",
        )
        statements += [
            f"CREATE TEMP TABLE {NUMBERS_LOOKUP} AS SELECT * FROM {numbers}",
            IfRows(unnumbered, numbering),
        ]
        drops.append(f"DROP TABLE {NUMBERS_LOOKUP}")
    return statements, drops


# The tables of the people: their look-ups, user numbers, activity, state and cost read
# these tables alone, and the state of the others (chats, message text and tool names,
# member names) reads none of them. So a batch's rows of these and its other rows may be
# stored by two transactions, each with its own events' ledger keys (an entity's key names
# its event type), and ``state_sql`` of one never needs the other's rows.
PEOPLE_TABLES = frozenset({"users", *ACTIVITY_SOURCES, "observations"})


def state_sql(sources: dict[str, str]) -> list[Statement]:
    """The statements that bring the kept state up to date with the rows just stored, in
    the transaction that stores them, after the batch's look-ups (``lookups_sql``):
    ``sources`` names the registered rows of each table the batch stored into, in the
    order of TABLES."""
    statements: list[Statement] = []
    if "chat_events" in sources or "messages" in sources:
        statements += merge_chat_state_sql(sources.get("chat_events"), sources.get("messages"))
    statements += record_activity_sql(sources)
    for table, source in sources.items():
        statements += _table_state_sql(table, source)
    return statements


def _table_state_sql(table: str, source: str) -> list[Statement]:
    """The state kept from one table's rows, besides ``chat_state`` and ``user_activity``."""
    if table == "messages":
        return [record_message_text_sql(source), record_chat_tools_sql(source)]
    if table == "users":
        return [merge_batch_users_sql(source)]
    if table == "members":
        return [merge_member_names_sql(source)]
    return record_cost_sql(table, source)


# -- state kept later -------------------------------------------------------------------

# The events whose rows are stored and answered for, and whose state (``state_sql``) is
# still to be kept: written in the transaction that stores their rows, emptied in the one
# that keeps their state, so that a crash in between loses none of it (the store keeps the
# state of what it names when it opens).
STATE_QUEUE_DDL = """
CREATE TABLE IF NOT EXISTS state_queue (
    org VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL
);
"""


def _keys_of(sources: dict[str, str]) -> str:
    return _union([f"SELECT org, event_id FROM {source}" for source in sources.values()])


def queue_state_sql(sources: dict[str, str]) -> str:
    """The statement that queues the events of the rows just stored in ``sources`` (each
    table with rows, to the relation holding them), their state to be kept later."""
    return f"INSERT INTO state_queue {_keys_of(sources)}"


def unqueue_state_sql(sources: dict[str, str]) -> str:
    """The statement that takes the events of ``sources`` off ``state_queue``, their state kept."""
    return f"DELETE FROM state_queue q USING {_keys_of(sources)} k WHERE q.org = k.org AND q.event_id = k.event_id"


def queued_rows_sql(table: str, into: str) -> str:
    """The statement that copies the rows of ``table`` whose events ``state_queue`` holds into
    the temporary table ``into``."""
    return (
        f"CREATE TEMP TABLE {into} AS SELECT t.* FROM {table} t"
        " SEMI JOIN state_queue q ON q.org = t.org AND q.event_id = t.event_id"
    )


# Tables of kept state: (name, DDL, the statements that fill it from the stored events
# when a store made before the table is opened).
DERIVED_TABLES: tuple[tuple[str, str, list[Statement]], ...] = (
    ("message_text", MESSAGE_TEXT_DDL, [backfill_message_text_sql()]),
    ("chat_tools", CHAT_TOOLS_DDL, [record_chat_tools_sql("messages")]),
    ("user_numbers", USER_NUMBERS_DDL, [number_users_sql(STORED_PEOPLE)]),
    ("user_activity", USER_ACTIVITY_DDL, [backfill_activity_sql()]),
    ("user_state", USER_STATE_DDL, [merge_users_sql("users")]),
    ("member_names", MEMBER_NAMES_DDL, [merge_member_names_sql("members")]),
    ("user_cost_days", USER_COST_DDL + COST_PENDING_DDL, backfill_cost_sql()),
    ("state_queue", STATE_QUEUE_DDL, []),
)
