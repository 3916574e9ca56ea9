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
