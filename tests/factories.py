"""Deterministic builders for events and members: fixed ids, fixed times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

WS = "6f1c1a1e-0000-4000-8000-000000000001"
WS_OTHER = "6f1c1a1e-0000-4000-8000-000000000002"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

_ids = itertools.count(1)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(type_: str, body: dict[str, Any], *, ts: datetime = T0, id: str | None = None) -> dict[str, Any]:
    return {"id": id or f"e-{next(_ids)}", "type": type_, "timestamp": iso(ts), "body": body}


def member(
    member_id: int,
    role: str,
    *,
    workspace: str = WS,
    scopes: list[str] | None = None,
    ts: datetime = T0,
    anonymous: bool = False,
    id: str | None = None,
) -> dict[str, Any]:
    body = {
        "workspace_id": workspace,
        "member_id": member_id,
        "name": f"Member {member_id}",
        "kind": "human",
        "role": role,
        "scopes": scopes or [],
        "is_anonymous": anonymous,
    }
    return event("member.upsert", body, ts=ts, id=id)


def call(
    call_id: str,
    assistant_id: str,
    started: datetime,
    *,
    workspace: str = WS,
    name: str | None = None,
    duration: float | None = None,
    ended: datetime | None = None,
    ts: datetime | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workspace_id": workspace,
        "call_id": call_id,
        "assistant_id": assistant_id,
        "started_at": iso(started),
    }
    if name is not None:
        body["assistant_name"] = name
    if duration is not None:
        body["duration_seconds"] = duration
    if ended is not None:
        body["ended_at"] = iso(ended)
    return event("call.create", body, ts=ts or started, id=id)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def one_of_each(day: datetime) -> list[dict[str, Any]]:
    """An event of each kind the read endpoints count, all on ``day``: in workspace WS,
    chat 7 with an assistant message (Helper) that calls the tool "refund", and call c1 of
    assistant a1 (60 s); user u1 with session s1, trace t1, a generation costing 0.25 USD
    and a positive feedback."""
    chat = {
        "workspace_id": WS,
        "chat_id": 7,
        "owner_member_id": 1,
        "chat_type": "dm",
        "channel": "web",
        "title": "Refund please",
        "created_at": iso(day),
    }
    message = {
        "workspace_id": WS,
        "chat_id": 7,
        "message_id": "m1",
        "role": "assistant",
        "assistant_name": "Helper",
        "content": "a refund is on its way",
        "tool_calls": [{"name": "refund", "arguments": {}}],
        "created_at": iso(day),
    }
    return [
        event("chat.upsert", chat, ts=day),
        event("message.create", message, ts=day),
        call("c1", "a1", day, duration=60),
        event("user.upsert", {"user_id": "u1", "registered_at": iso(day)}, ts=day),
        event("session.create", {"session_id": "s1", "user_id": "u1", "started_at": iso(day)}, ts=day),
        event("trace.create", {"trace_id": "t1", "session_id": "s1", "timestamp": iso(day)}, ts=day),
        event(
            "observation.create",
            {"observation_id": "o1", "trace_id": "t1", "type": "generation", "start_time": iso(day), "cost_usd": 0.25},
            ts=day,
        ),
        event(
            "feedback.create",
            {"feedback_id": "f1", "user_id": "u1", "rating": "positive", "created_at": iso(day), "session_id": "s1"},
            ts=day,
        ),
    ]


def read_urls(now: datetime) -> list[str]:
    """A request to each read endpoint, for org acme, workspace WS and user u1: the week up
    to ``now`` (weekly feedback), the search over its 30 days."""
    span = f"start_date={(now - timedelta(days=6)).date()}&end_date={now.date()}"
    org = "/api/ai-analytics/orgs/acme/users/u1"
    chats = f"/api/v2/w/{WS}/chats"
    return [
        f"{chats}?search=refund&createdAfter={iso(now - timedelta(days=30))}",
        f"{chats}/export",
        f"{chats}/needs-response",
        f"{chats}/stats/daily-creation",
        f"{chats}/tool-call-names",
        f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage",
        "/analytics/calls/by-assistant",
        f"{org}/user-cohorts-over-time/?{span}",
        f"{org}/user-cost/?{span}",
        f"{org}/user-feedback/?{span}&aggregation=weekly",
        "/api/v2/me",
    ]


def filled(path: str) -> str:
    """An OpenAPI path template with its parameters filled: workspace WS of org acme, user me."""
    values = {"{workspace_uuid}": WS, "{workspace_id}": WS, "{org_id}": "acme", "{org}": "acme", "{user_id}": "me"}
    for name, value in values.items():
        path = path.replace(name, value)
    return path


def messages(first: int, count: int, *, padding: int = 400) -> list[dict[str, Any]]:
    """Messages ``first`` to ``first + count - 1`` of chat 1 in WS (Bot's), each ``padding``
    characters longer than its number needs; event ids ``e<n>``."""
    return [
        event(
            "message.create",
            {
                "workspace_id": WS,
                "chat_id": 1,
                "message_id": f"m{n}",
                "role": "assistant",
                "assistant_name": "Bot",
                "content": f"message {n} " + "x" * padding,
                "created_at": iso(T0),
            },
            id=f"e{n}",
        )
        for n in range(first, first + count)
    ]
