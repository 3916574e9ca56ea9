"""Latest-wins chat state, kept current by the DuckDB adapter as events are stored.

Chat lists and exports read one row per chat instead of folding every event at
query time. Each field carries the version of the event that set it (the event
timestamp, then its id, as one sortable string), and a merge only lets a newer
version replace an older one, so the state is the same whatever order events
arrive in. Message counts and the newest message time are added as messages
arrive (messages are deduplicated on their id before they get here).
"""

from __future__ import annotations

from parley.store.chat_sql import UPDATABLE, UPSERT_ONLY

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
    PRIMARY KEY (org, workspace_id, chat_id)
);
"""

# The version of an event: its timestamp (fixed width) then its id, compared as text.
VERSION = "strftime(ts, '%Y%m%d%H%M%S%f') || ' ' || event_id"


def _latest(expr: str, where: str) -> str:
    return f"(arg_max({{'v': {expr}}}, version) FILTER (WHERE {where})).v"


def _newer(column: str) -> str:
    new, old = f"excluded.{column}", f"chat_state.{column}"
    return f"({new} IS NOT NULL AND ({old} IS NULL OR {new} > {old}))"


def _take_if_newer(version: str, *columns: str) -> list[str]:
    # Every SET expression reads the row as it was, so the version column can be among them.
    newer = _newer(version)
    return [f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE chat_state.{c} END" for c in (*columns, version)]


def merge_chat_events_sql(source: str) -> str:
    """Fold the chat events in ``source`` into ``chat_state``."""
    upserted = "op = 'upsert'"
    select = [f"{_latest(c, upserted)} AS {c}" for c in UPSERT_ONLY]
    select.append(f"max(version) FILTER (WHERE {upserted}) AS v_upsert")
    for column in UPDATABLE:
        is_set = f"list_contains(fields_set, '{column}')"
        select.append(f"{_latest(column, is_set)} AS {column}")
        select.append(f"max(version) FILTER (WHERE {is_set}) AS v_{column}")
    metadata_set = "list_contains(fields_set, 'metadata')"
    select.append(f"{_latest('metadata_text', metadata_set)} AS metadata_text")
    updates = _take_if_newer("v_upsert", *UPSERT_ONLY)
    for column in UPDATABLE:
        extra = ("metadata_text",) if column == "metadata" else ()
        updates += _take_if_newer(f"v_{column}", column, *extra)
    updates.append("updated_at = greatest(chat_state.updated_at, excluded.updated_at)")
    return f"""
    INSERT INTO chat_state BY NAME
    SELECT org, workspace_id, chat_id, {", ".join(select)}, max(ts) AS updated_at
    FROM (SELECT *, {VERSION} AS version FROM {source})
    GROUP BY org, workspace_id, chat_id
    ON CONFLICT (org, workspace_id, chat_id) DO UPDATE SET {", ".join(updates)}
    """


def merge_messages_sql(source: str) -> str:
    """Count the new messages in ``source`` into their chats' state."""
    return f"""
    INSERT INTO chat_state BY NAME
    SELECT org, workspace_id, chat_id, count(*) AS message_count, max(created_at) AS last_message_at
    FROM {source}
    GROUP BY org, workspace_id, chat_id
    ON CONFLICT (org, workspace_id, chat_id) DO UPDATE SET
        message_count = chat_state.message_count + excluded.message_count,
        last_message_at = greatest(chat_state.last_message_at, excluded.last_message_at)
    """
