"""What a chat list or export asks for, validated: filters, the rule tree, sort, page.

Everything here is engine-neutral. The request's names are checked against
allow-lists and its values against each field's type; the store compiles the
result into SQL with bound parameters (``store/chat_sql.py``), so nothing from
the request is ever spliced into SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from parley.errors import BadRequest
from parley.timeseries import plus_as_space, stored_instant

CHAT_TYPES = ("assignment", "manager", "dm", "testing")
SORT_FIELDS = ("createdAt", "updatedAt", "lastMessageAt", "id", "title")
MAX_GROUP_DEPTH = 5
MAX_RULE_NODES = 200
MAX_LIST_VALUES = 1000
MAX_TEXT_CHARS = 1000

# The filterable fields and their value types.
FIELD_TYPES: dict[str, str] = {
    "id": "int",
    "title": "str",
    "chatType": "chat_type",
    "channel": "str",
    "ownerMemberId": "int",
    "assistantMemberId": "int",
    "archived": "bool",
    "needsResponse": "bool",
    "paused": "bool",
    "muted": "bool",
    "isTest": "bool",
    "createdAt": "time",
    "updatedAt": "time",
    "lastMessageAt": "time",
    "messageCount": "int",
}
METADATA_PREFIX = "metadata."
OPS = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "contains", "exists")
ORDER_OPS = ("gt", "gte", "lt", "lte")
TEXT_TYPES = ("str", "chat_type", "metadata")


@dataclass(frozen=True, slots=True)
class Rule:
    field: str  # a FIELD_TYPES key, or "metadata.<key>"
    op: str
    value: Any  # typed: int, str, bool, naive-UTC datetime, float, or a tuple of those

    @property
    def metadata_key(self) -> str | None:
        return self.field.removeprefix(METADATA_PREFIX) if self.field.startswith(METADATA_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Group:
    kind: Literal["and", "or"]
    children: tuple[Rule | Group, ...]


Node = Rule | Group


@dataclass(frozen=True, slots=True)
class ChatQuery:
    """Everything that selects and orders chats, for list and export alike."""

    owner_member_id: int | None = None  # set when only one member's own chats are visible
    archived: bool | None = False
    is_test: bool | None = False
    needs_response: bool | None = None
    paused: bool | None = None
    is_anonymous: bool | None = None
    channel: str | None = None
    chat_type: str | None = None
    member_id: int | None = None
    assistant_member_id: int | None = None
    search: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    rule: Node | None = None
    sort_by: str = "createdAt"
    descending: bool = True


def parse_instant(value: str, name: str) -> datetime:
    """An ISO-8601 datetime with an offset, as naive UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not an ISO-8601 datetime{plus_as_space(value.strip())}") from None
    if moment.tzinfo is None or len(value.strip()) <= 10:
        raise BadRequest(f"{name}: {value!r} needs a time and an offset (Z or +02:00)")
    return stored_instant(moment, name=name, value=value)


def parse_filters(text: str) -> Node:
    """The ``filters`` JSON, checked against the allow-lists; 400 names the bad part."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("filters: not valid JSON") from None
    counter = [0]
    return _parse_node(raw, "filters", 0, counter)


def _parse_node(raw: Any, where: str, depth: int, counter: list[int]) -> Node:
    counter[0] += 1
    if counter[0] > MAX_RULE_NODES:
        raise BadRequest(f"filters: more than {MAX_RULE_NODES} rules and groups")
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: must be an object, a rule or an and/or group")
    group_keys = [k for k in ("and", "or") if k in raw]
    if group_keys:
        if len(raw) != 1:
            raise BadRequest(f"{where}: a group has exactly one key, and or or")
        kind = group_keys[0]
        if depth + 1 > MAX_GROUP_DEPTH:
            raise BadRequest(f"{where}: groups nest at most {MAX_GROUP_DEPTH} deep")
        items = raw[kind]
        if not isinstance(items, list) or not items:
            raise BadRequest(f"{where}.{kind}: must be a non-empty list")
        children = tuple(_parse_node(item, f"{where}.{kind}[{i}]", depth + 1, counter) for i, item in enumerate(items))
        return Group(kind, children)
    if set(raw) != {"field", "op", "value"}:
        raise BadRequest(f"{where}: a rule has exactly the keys field, op and value")
    return _parse_rule(raw["field"], raw["op"], raw["value"], where)


def _parse_rule(field: Any, op: Any, value: Any, where: str) -> Rule:
    if not isinstance(field, str):
        raise BadRequest(f"{where}.field: must be a string")
    if field.startswith(METADATA_PREFIX):
        if not field[len(METADATA_PREFIX) :]:
            raise BadRequest(f"{where}.field: metadata.<key> needs a key")
        kind = "metadata"
    elif field in FIELD_TYPES:
        kind = FIELD_TYPES[field]
    else:
        allowed = ", ".join(FIELD_TYPES)
        raise BadRequest(f"{where}.field: unknown field {field!r} (use {allowed} or metadata.<key>)")
    if op not in OPS:
        raise BadRequest(f"{where}.op: unknown op {op!r} (use {', '.join(OPS)})")
    if op == "exists":
        if not isinstance(value, bool):
            raise BadRequest(f"{where}.value: exists takes true or false")
        return Rule(field, op, value)
    if op == "contains":
        if kind not in TEXT_TYPES:
            raise BadRequest(f"{where}.op: contains applies to text fields, not {field}")
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
            raise BadRequest(f"{where}.value: contains takes a non-empty string")
        return Rule(field, op, value)
    if op in ORDER_OPS and kind == "bool":
        raise BadRequest(f"{where}.op: {op} does not apply to the boolean field {field}")
    if op in ("in", "nin"):
        if not isinstance(value, list) or not value or len(value) > MAX_LIST_VALUES:
            raise BadRequest(f"{where}.value: {op} takes a non-empty list of at most {MAX_LIST_VALUES}")
        typed = tuple(_typed(v, kind, f"{where}.value[{i}]", op) for i, v in enumerate(value))
        return Rule(field, op, typed)
    return Rule(field, op, _typed(value, kind, f"{where}.value", op))


def _typed(value: Any, kind: str, where: str, op: str) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**63 - 1:
            raise BadRequest(f"{where}: must be an integer")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: must be true or false")
        return value
    if kind == "time":
        if not isinstance(value, str):
            raise BadRequest(f"{where}: must be an ISO-8601 datetime with offset")
        return parse_instant(value, where)
    if kind == "chat_type":
        if value not in CHAT_TYPES:
            raise BadRequest(f"{where}: unknown chat type {value!r} (use {', '.join(CHAT_TYPES)})")
        return value
    if kind == "str":
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
            raise BadRequest(f"{where}: must be a string")
        return value
    # metadata values: a string, a number or a boolean; order ops need a string or a number.
    if isinstance(value, bool):
        if op in ORDER_OPS:
            raise BadRequest(f"{where}: {op} needs a number or a string")
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and value != value:  # NaN cannot come from JSON, but be sure
            raise BadRequest(f"{where}: must be a finite number")
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT_CHARS:
        return value
    raise BadRequest(f"{where}: metadata values are strings, numbers or booleans")
