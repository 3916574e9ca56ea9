"""A realistic, seeded data set for ``parley demo`` and ``parley bench``.

Several orgs and workspaces; assistants with power-law popularity; chats and
messages following a daily and weekly rhythm; tool calls; voice calls with and
without durations; end users, sessions, traces, observations with and without
cost, and feedback. Events stream out one at a time, so the set can be as large
as the disk allows. The same seed and end time always give the same events.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ROLES = ("superadmin", "admin", "controller", "curator", "basic")
ROLE_WEIGHTS = (1, 2, 3, 3, 20)
CHAT_TYPES = ("assignment", "manager", "dm", "testing")
CHAT_TYPE_WEIGHTS = (50, 15, 30, 5)
CHANNELS = ("web", "slack", "whatsapp", "email", "api")
CHANNEL_WEIGHTS = (50, 20, 15, 10, 5)
TOOLS = (
    "search_docs",
    "create_ticket",
    "lookup_order",
    "send_email",
    "get_weather",
    "book_meeting",
    "query_crm",
    "refund_payment",
)
ASSISTANT_NAMES = (
    "Sales Bot",
    "Support Bot",
    "Onboarding Guide",
    "Billing Helper",
    "Research Assistant",
    "Tutor",
    "HR Concierge",
    "Code Reviewer",
    "Travel Planner",
    "Legal Drafts",
)
MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "claude-3-haiku",
    "llama-3-70b",
    "in-house-v2",
)
TOPICS = (
    "refund for order",
    "password reset",
    "pricing question",
    "integration help",
    "invoice copy",
    "bug report",
    "feature request",
    "shipping delay",
)
# Hour-of-day activity (UTC), a working-day curve, and a quieter weekend.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 11, 11, 10, 11, 11, 10, 9, 7, 5, 4, 3, 2, 2, 1)
WEEKDAY_WEIGHTS = (10, 11, 11, 10, 9, 4, 3)


@dataclass(frozen=True)
class Scale:
    orgs: int
    workspaces_per_org: int
    days: int
    members_per_workspace: int
    assistants_per_workspace: int
    chats_per_workspace: int
    messages_per_chat: int  # mean
    calls_per_workspace: int
    users_per_org: int
    sessions_per_org: int
    traces_per_session: float  # mean
    observations_per_trace: float  # mean
    feedback_per_org: int


SCALES: dict[str, Scale] = {
    "demo": Scale(2, 2, 90, 30, 6, 500, 8, 300, 300, 1_500, 2, 2, 400),
    "S": Scale(2, 2, 365, 50, 8, 3_000, 8, 2_500, 2_500, 25_000, 2, 2, 6_000),
    "M": Scale(4, 5, 365, 200, 10, 50_000, 10, 50_000, 50_000, 500_000, 2.5, 2, 125_000),
    # One workspace of a million chats, for the export's memory bound (`parley bench --scale export`).
    "export": Scale(1, 1, 365, 50, 4, 1_000_000, 2, 100, 100, 100, 1, 1, 100),
}


def _power_law(n: int, exponent: float = 1.3) -> list[float]:
    return list(itertools.accumulate(1 / (rank**exponent) for rank in range(1, n + 1)))


class _Clock:
    """Draws moments in [end - days, end) with a daily and weekly rhythm."""

    def __init__(self, rng: random.Random, end: datetime, days: int) -> None:
        self.rng = rng
        start_day = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.days = [start_day + timedelta(days=i) for i in range(days + 1)]
        self.end = end
        growth = [1 + i / max(days, 1) for i in range(len(self.days))]  # platforms grow
        self.day_cum = list(
            itertools.accumulate(WEEKDAY_WEIGHTS[d.weekday()] * g for d, g in zip(self.days, growth, strict=True))
        )
        self.hour_cum = list(itertools.accumulate(HOUR_WEIGHTS))

    def draw(self) -> datetime:
        rng = self.rng
        while True:
            day = rng.choices(self.days, cum_weights=self.day_cum)[0]
            hour = rng.choices(range(24), cum_weights=self.hour_cum)[0]
            moment = day + timedelta(hours=hour, seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000))
            if moment < self.end:
                return moment


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class _Emitter:
    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def __call__(self, org: str, kind: str, moment: datetime, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "org": org,
            "id": f"ev-{next(self.counter)}",
            "type": kind,
            "timestamp": _iso(moment),
            "body": body,
        }


@dataclass
class DemoWorkspace:
    org: str
    workspace_id: str
    name: str
    admin_member_id: int
    basic_member_id: int


def workspaces(scale: Scale, seed: int = 7) -> list[DemoWorkspace]:
    """The workspaces ``generate`` creates, with a known admin and basic member each."""
    rng = random.Random(f"{seed}-workspaces")
    out = []
    for o in range(scale.orgs):
        org = ("acme", "globex", "initech", "umbrella", "hooli", "stark")[o % 6] + ("" if o < 6 else str(o))
        for w in range(scale.workspaces_per_org):
            ws_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            out.append(DemoWorkspace(org, ws_id, f"{org.title()} workspace {w + 1}", 1, 2))
    return out


def user_id(n: int) -> str:
    """The id of an org's ``n``-th end user (from 1)."""
    return f"user{n:06d}"


def generate(scale: Scale, *, seed: int = 7, end: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every event of the data set, as ingestion envelopes carrying their ``org``."""
    end = (end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rng = random.Random(seed)
    clock = _Clock(rng, end, scale.days)
    emit = _Emitter()
    start = clock.days[0]
    all_ws = workspaces(scale, seed)
    for o in range(scale.orgs):
        org_ws = all_ws[o * scale.workspaces_per_org : (o + 1) * scale.workspaces_per_org]
        org = org_ws[0].org
        mentors: list[tuple[str, str]] = []
        for ws in org_ws:
            yield from _workspace_events(rng, clock, emit, scale, ws, start, mentors)
        yield from _org_user_events(rng, clock, emit, scale, org, start, end, mentors)


def _workspace_events(
    rng: random.Random,
    clock: _Clock,
    emit: _Emitter,
    scale: Scale,
    ws: DemoWorkspace,
    start: datetime,
    mentors: list[tuple[str, str]],
) -> Iterator[dict[str, Any]]:
    org, ws_id = ws.org, ws.workspace_id
    yield emit(org, "workspace.upsert", start, {"workspace_id": ws_id, "name": ws.name})
    humans = list(range(1, scale.members_per_workspace + 1))
    for member_id in humans:
        role = {1: "admin", 2: "basic"}.get(member_id) or rng.choices(ROLES, ROLE_WEIGHTS)[0]
        body = {
            "workspace_id": ws_id,
            "member_id": member_id,
            "name": f"Member {member_id}",
            "kind": "human",
            "role": role,
            "scopes": ["chats:admin"] if role == "controller" and rng.random() < 0.3 else [],
            "is_anonymous": member_id > 2 and rng.random() < 0.1,
        }
        yield emit(org, "member.upsert", start, body)
    assistants = []
    names = rng.sample(ASSISTANT_NAMES, min(scale.assistants_per_workspace, len(ASSISTANT_NAMES)))
    for i, name in enumerate(names):
        member_id = 10_000 + i
        assistant_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        assistants.append((assistant_id, name, member_id))
        mentors.append((assistant_id, name))
        yield emit(
            org,
            "member.upsert",
            start,
            {
                "workspace_id": ws_id,
                "member_id": member_id,
                "name": name,
                "kind": "assistant",
                "role": "basic",
            },
        )
        yield emit(
            org,
            "assistant.upsert",
            start,
            {
                "assistant_id": assistant_id,
                "name": name,
                "workspace_id": ws_id,
                "member_id": member_id,
            },
        )
    popularity = _power_law(len(assistants))
    member_weights = _power_law(len(humans), 0.8)
    for chat_id in range(1, scale.chats_per_workspace + 1):
        created = clock.draw()
        assistant_id, assistant_name, assistant_member = rng.choices(assistants, cum_weights=popularity)[0]
        owner = rng.choices(humans, cum_weights=member_weights)[0]
        topic = rng.choice(TOPICS)
        chat = {
            "workspace_id": ws_id,
            "chat_id": chat_id,
            "owner_member_id": owner,
            "assistant_member_id": assistant_member,
            "chat_type": rng.choices(CHAT_TYPES, CHAT_TYPE_WEIGHTS)[0],
            "channel": rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0],
            "title": f"{topic.capitalize()} #{chat_id}",
            "metadata": {
                "priority": rng.choice(("low", "normal", "high")),
                "locale": rng.choice(("en", "de", "fr")),
            },
            "is_test": rng.random() < 0.03,
            "created_at": _iso(created),
        }
        yield emit(org, "chat.upsert", created, chat)
        moment = created
        n_messages = max(1, int(rng.expovariate(1 / scale.messages_per_chat)))
        for k in range(n_messages):
            moment = min(moment + timedelta(seconds=rng.randrange(5, 600)), clock.end)
            body: dict[str, Any] = {
                "workspace_id": ws_id,
                "chat_id": chat_id,
                "message_id": f"{ws_id[:8]}-{chat_id}-{k}",
                "created_at": _iso(moment),
            }
            if k % 2 == 0:
                body |= {
                    "role": "user",
                    "sender_member_id": owner,
                    "content": f"Hi, about my {topic}, case {rng.randrange(10_000)}",
                }
            else:
                body |= {
                    "role": "assistant",
                    "sender_member_id": assistant_member,
                    "content": f"Let me help with your {topic}.",
                }
                if rng.random() > 0.04:  # some platforms do not send the name
                    body["assistant_name"] = assistant_name
                if rng.random() < 0.66:  # a third of all messages carry tool calls
                    tools = rng.sample(TOOLS, rng.choice((1, 1, 1, 2)))
                    body["tool_calls"] = [{"name": t, "arguments": {"q": topic}} for t in tools]
            yield emit(org, "message.create", moment, body)
        if rng.random() < 0.35:
            update = {"workspace_id": ws_id, "chat_id": chat_id}
            roll = rng.random()
            if roll < 0.5:
                update["archived"] = True
            elif roll < 0.85:
                update["needs_response"] = True
            else:
                update |= {"needs_response": True, "muted": True}
            yield emit(org, "chat.update", moment, update)
    for n in range(scale.calls_per_workspace):
        began = clock.draw()
        assistant_id, assistant_name, _ = rng.choices(assistants, cum_weights=popularity)[0]
        seconds = round(rng.lognormvariate(5.3, 0.7), 1)
        call: dict[str, Any] = {
            "workspace_id": ws_id,
            "call_id": f"call-{ws_id[:8]}-{n}",
            "assistant_id": assistant_id,
            "assistant_name": assistant_name,
            "started_at": _iso(began),
        }
        roll = rng.random()
        if roll < 0.6:
            call["duration_seconds"] = seconds
        elif roll < 0.85:
            call["ended_at"] = _iso(began + timedelta(seconds=seconds))
        yield emit(org, "call.create", began, call)


def _org_user_events(
    rng: random.Random,
    clock: _Clock,
    emit: _Emitter,
    scale: Scale,
    org: str,
    start: datetime,
    end: datetime,
    mentors: list[tuple[str, str]],
) -> Iterator[dict[str, Any]]:
    users = [user_id(n) for n in range(1, scale.users_per_org + 1)]
    for user in users:
        # A third registered before the data set's window: veterans from day one.
        registered = start - timedelta(days=rng.randrange(1, 400)) if rng.random() < 0.33 else clock.draw()
        yield emit(
            org,
            "user.upsert",
            registered,
            {"user_id": user, "registered_at": _iso(registered), "name": user.title()},
        )
    mentor_cum = _power_law(len(mentors))
    user_cum = _power_law(len(users), 0.7)
    model_cum = _power_law(len(MODELS), 1.0)
    for s in range(scale.sessions_per_org):
        user = rng.choices(users, cum_weights=user_cum)[0]
        mentor_id, _ = rng.choices(mentors, cum_weights=mentor_cum)[0]
        began = clock.draw()
        session_id = f"s-{org}-{s}"
        yield emit(
            org,
            "session.create",
            began,
            {
                "session_id": session_id,
                "user_id": user,
                "mentor_id": mentor_id,
                "started_at": _iso(began),
            },
        )
        for t in range(max(1, int(rng.expovariate(1 / scale.traces_per_session)))):
            traced = min(began + timedelta(seconds=30 * t + rng.randrange(30)), end)
            trace_id = f"t-{org}-{s}-{t}"
            trace: dict[str, Any] = {
                "trace_id": trace_id,
                "session_id": session_id,
                "timestamp": _iso(traced),
            }
            if rng.random() < 0.5:  # the rest get their user and mentor through the session
                trace |= {"user_id": user, "mentor_id": mentor_id}
            yield emit(org, "trace.create", traced, trace)
            for k in range(max(1, int(rng.expovariate(1 / scale.observations_per_trace)))):
                obs: dict[str, Any] = {
                    "observation_id": f"o-{org}-{s}-{t}-{k}",
                    "trace_id": trace_id,
                    "type": "generation" if k == 0 or rng.random() < 0.6 else rng.choice(("span", "event")),
                    "start_time": _iso(traced),
                }
                if obs["type"] == "generation":
                    obs |= {
                        "model": rng.choices(MODELS, cum_weights=model_cum)[0],
                        "input_tokens": rng.randrange(50, 4000),
                        "output_tokens": rng.randrange(20, 1200),
                    }
                    if rng.random() < 0.5:
                        obs["cost_usd"] = round(rng.uniform(0.0001, 0.05), 6)
                yield emit(org, "observation.create", traced, obs)
    for f in range(scale.feedback_per_org):
        user = rng.choices(users, cum_weights=user_cum)[0]
        mentor_id, _ = rng.choices(mentors, cum_weights=mentor_cum)[0]
        moment = clock.draw()
        body = {
            "feedback_id": f"f-{org}-{f}",
            "user_id": user,
            "rating": "positive" if rng.random() < 0.7 else "negative",
            "mentor_id": mentor_id,
            "created_at": _iso(moment),
        }
        if rng.random() < 0.2:
            body["comment"] = rng.choice(("Great answer", "Not helpful", "=SUM(A1)", "Too slow, but right"))
        yield emit(org, "feedback.create", moment, body)
