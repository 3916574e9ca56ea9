"""A plain-Python model of chat state and chat filters, written from the contract.

It replays the events the tests send (in ``(timestamp, id)`` order) and evaluates
filters over the resulting chats, so the tests can compare Parley's answers with
answers computed without any of Parley's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

UPDATABLE = ("title", "metadata", "archived", "needs_response", "paused", "muted", "is_test", "assistant_member_id")
FLAG_DEFAULTS = {"archived": False, "needs_response": False, "paused": False, "muted": False, "is_test": False}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


@dataclass
class ChatState:
    id: int
    fields: dict[str, Any] = field(default_factory=dict)
    has_upsert: bool = False
    updated_at: datetime | None = None
    message_ids: set[str] = field(default_factory=set)
    last_message_at: datetime | None = None
    senders: set[int] = field(default_factory=set)
    contents: list[str] = field(default_factory=list)
    tool_names: set[str] = field(default_factory=set)


class World:
    """Chats, members and messages of one workspace, as the events describe them."""

    def __init__(self, events: list[dict[str, Any]], workspace: str) -> None:
        ordered = sorted(events, key=lambda e: (utc(e["timestamp"]), e["id"]))
        self.chats: dict[int, ChatState] = {}
        self.members: dict[int, dict[str, Any]] = {}
        for event in ordered:
            body = event["body"]
            if body.get("workspace_id") != workspace:
                continue
            ts = utc(event["timestamp"])
            kind = event["type"]
            if kind == "member.upsert":
                self.members[body["member_id"]] = body
            elif kind in ("chat.upsert", "chat.update"):
                chat = self.chats.setdefault(body["chat_id"], ChatState(body["chat_id"]))
                if kind == "chat.upsert":
                    chat.has_upsert = True
                    for key in ("owner_member_id", "chat_type", "channel"):
                        chat.fields[key] = body[key]
                    chat.fields["created_at"] = utc(body["created_at"])
                    for key in UPDATABLE:
                        chat.fields[key] = body.get(key, FLAG_DEFAULTS.get(key))
                else:
                    for key in UPDATABLE:
                        if key in body:
                            chat.fields[key] = body[key]
                chat.updated_at = ts if chat.updated_at is None else max(chat.updated_at, ts)
            elif kind == "message.create":
                chat = self.chats.setdefault(body["chat_id"], ChatState(body["chat_id"]))
                chat.message_ids.add(body["message_id"])
                created = utc(body["created_at"])
                chat.last_message_at = created if chat.last_message_at is None else max(chat.last_message_at, created)
                if body.get("sender_member_id") is not None:
                    chat.senders.add(body["sender_member_id"])
                if body.get("content") is not None:
                    chat.contents.append(body["content"])
                for call in body.get("tool_calls") or []:
                    chat.tool_names.add(call["name"])

    def existing(self) -> list[ChatState]:
        return [c for c in self.chats.values() if c.has_upsert]

    def row(self, chat: ChatState) -> dict[str, Any]:
        """The chat as the list endpoint should show it (camelCase)."""
        f = chat.fields
        owner = self.members.get(f["owner_member_id"])
        assistant = self.members.get(f["assistant_member_id"]) if f["assistant_member_id"] is not None else None
        return {
            "id": chat.id,
            "title": f["title"],
            "chatType": f["chat_type"],
            "channel": f["channel"],
            "ownerMemberId": f["owner_member_id"],
            "ownerName": owner["name"] if owner else None,
            "assistantMemberId": f["assistant_member_id"],
            "assistantName": assistant["name"] if assistant else None,
            "archived": f["archived"],
            "needsResponse": f["needs_response"],
            "paused": f["paused"],
            "muted": f["muted"],
            "isTest": f["is_test"],
            "isAnonymous": owner.get("is_anonymous", False) if owner else None,
            "messageCount": len(chat.message_ids),
            "lastMessageAt": iso(chat.last_message_at),
            "createdAt": iso(f["created_at"]),
            "updatedAt": iso(chat.updated_at),
            "metadata": f["metadata"],
        }

    # -- filters ------------------------------------------------------------------

    def value(self, chat: ChatState, name: str) -> Any:
        row = self.row(chat)
        if name in ("createdAt", "updatedAt", "lastMessageAt"):
            return None if row[name] is None else utc(row[name])
        return row[name]

    def matches(self, chat: ChatState, params: dict[str, Any], *, member_id: int, can_read_all: bool) -> bool:
        row = self.row(chat)
        if not can_read_all and row["ownerMemberId"] != member_id:
            return False
        if params.get("mine") == "true" and row["ownerMemberId"] != member_id:
            return False
        for param, key, default in (
            ("archived", "archived", "false"),
            ("isTest", "isTest", "false"),
            ("needsResponse", "needsResponse", None),
            ("paused", "paused", None),
        ):
            wanted = params.get(param, default)
            if wanted is not None and row[key] != (wanted == "true"):
                return False
        if "isAnonymous" in params and bool(row["isAnonymous"]) != (params["isAnonymous"] == "true"):
            return False
        for param in ("channel", "chatType"):
            if param in params and row[param] != params[param]:
                return False
        if "assistantMemberId" in params and row["assistantMemberId"] != int(params["assistantMemberId"]):
            return False
        if "memberId" in params:
            member = int(params["memberId"])
            if row["ownerMemberId"] != member and member not in chat.senders:
                return False
        if params.get("search"):
            needle = params["search"].lower()
            texts = [row["title"] or "", *metadata_values(row["metadata"]), *chat.contents]
            if not any(needle in text.lower() for text in texts):
                return False
        created = utc(row["createdAt"])
        if "createdAfter" in params and created < utc(params["createdAfter"]):
            return False
        if "createdBefore" in params and created > utc(params["createdBefore"]):
            return False
        return not ("filters" in params and not self.rule(chat, orjson.loads(params["filters"])))

    def rule(self, chat: ChatState, node: dict[str, Any]) -> bool:
        if "and" in node:
            return all(self.rule(chat, child) for child in node["and"])
        if "or" in node:
            return any(self.rule(chat, child) for child in node["or"])
        name, op, wanted = node["field"], node["op"], node["value"]
        if name.startswith("metadata."):
            metadata = self.row(chat)["metadata"] or {}
            return metadata_rule(metadata.get(name.removeprefix("metadata.")), op, wanted)
        actual = self.value(chat, name)
        if name in ("createdAt", "updatedAt", "lastMessageAt"):
            wanted = (
                [utc(v) for v in wanted] if isinstance(wanted, list) else (wanted if op == "exists" else utc(wanted))
            )
        return field_rule(actual, op, wanted)


def metadata_values(metadata: Any) -> list[str]:
    if isinstance(metadata, dict):
        return [v for item in metadata.values() for v in metadata_values(item)]
    if isinstance(metadata, list):
        return [v for item in metadata for v in metadata_values(item)]
    if metadata is None:
        return []
    if isinstance(metadata, str):
        return [metadata]
    return [orjson.dumps(metadata).decode()]


def _same_kind(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool)
    if isinstance(wanted, int | float):
        return isinstance(actual, int | float)
    return isinstance(actual, str) and isinstance(wanted, str)


def metadata_rule(actual: Any, op: str, wanted: Any) -> bool:
    if op == "exists":
        return (actual is not None) == wanted
    if op == "neq":
        return not metadata_rule(actual, "eq", wanted)
    if op == "nin":
        return not any(metadata_rule(actual, "eq", w) for w in wanted)
    if op == "in":
        return any(metadata_rule(actual, "eq", w) for w in wanted)
    if op == "contains":
        return isinstance(actual, str) and wanted.lower() in actual.lower()
    if not _same_kind(actual, wanted):
        return False
    return compare(actual, op, wanted)


def field_rule(actual: Any, op: str, wanted: Any) -> bool:
    if op == "exists":
        return (actual is not None) == wanted
    if op == "neq":
        return not field_rule(actual, "eq", wanted)
    if op == "nin":
        return not any(field_rule(actual, "eq", w) for w in wanted)
    if op == "in":
        return any(field_rule(actual, "eq", w) for w in wanted)
    if actual is None:
        return False
    if op == "contains":
        return wanted.lower() in actual.lower()
    return compare(actual, op, wanted)


def compare(actual: Any, op: str, wanted: Any) -> bool:
    return {
        "eq": actual == wanted,
        "gt": actual > wanted,
        "gte": actual >= wanted,
        "lt": actual < wanted,
        "lte": actual <= wanted,
    }[op]


def sort_rows(rows: list[dict[str, Any]], sort_by: str, descending: bool) -> list[dict[str, Any]]:
    """NULLs last in both directions; ties by id in the same direction."""
    present = [r for r in rows if r[sort_by] is not None]
    missing = [r for r in rows if r[sort_by] is None]
    key = (lambda r: (utc(r[sort_by]), r["id"])) if sort_by.endswith("At") else (lambda r: (r[sort_by], r["id"]))
    present.sort(key=key, reverse=descending)
    missing.sort(key=lambda r: r["id"], reverse=descending)
    return present + missing
