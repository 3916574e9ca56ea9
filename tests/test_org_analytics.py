"""Org analytics (seed 003, contract 5.4): cohorts, LLM cost per user, feedback over time."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from parley.auth.keys import create_key
from parley.store.duckdb import DuckDBStore
from tests.conftest import bearer
from tests.factories import WS, event, iso, member, one_of_each
from tests.series_reference import day_bounds, label, periods

BASE = "/api/ai-analytics/orgs/acme/users/me"
D = datetime(2024, 5, 1, tzinfo=UTC)


def user(user_id: str, registered: datetime, ts: datetime | None = None):
    return event("user.upsert", {"user_id": user_id, "registered_at": iso(registered)}, ts=ts or registered)


def session(sid: str, user_id: str, at: datetime, mentor: str | None = None):
    body = {"session_id": sid, "user_id": user_id, "started_at": iso(at)}
    if mentor:
        body["mentor_id"] = mentor
    return event("session.create", body, ts=at)


def trace(tid: str, at: datetime, user_id: str | None = None, session_id: str | None = None, mentor: str | None = None):
    body = {"trace_id": tid, "timestamp": iso(at)}
    for key, value in (("user_id", user_id), ("session_id", session_id), ("mentor_id", mentor)):
        if value is not None:
            body[key] = value
    return event("trace.create", body, ts=at)


def feedback(
    fid: str,
    user_id: str,
    at: datetime,
    rating: str = "positive",
    mentor: str | None = None,
    session_id: str | None = None,
):
    body = {"feedback_id": fid, "user_id": user_id, "rating": rating, "created_at": iso(at)}
    if mentor:
        body["mentor_id"] = mentor
    if session_id:
        body["session_id"] = session_id
    return event("feedback.create", body, ts=at)


def observation(oid: str, trace_id: str, at: datetime, *, cost=None, model=None, tokens_in=None, tokens_out=None):
    body = {"observation_id": oid, "trace_id": trace_id, "type": "generation", "start_time": iso(at)}
    for key, value in (
        ("cost_usd", cost),
        ("model", model),
        ("input_tokens", tokens_in),
        ("output_tokens", tokens_out),
    ):
        if value is not None:
            body[key] = value
    return event("observation.create", body, ts=at)


def get(client, headers, path, **params):
    response = client.get(f"{BASE}/{path}/", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# -- cohorts ----------------------------------------------------------------------


def test_cohorts_hand_worked(client, ingest, admin, store):
    ingest(
        user("first-instant", D),  # registered on the range's first instant: new on day 1
        user("last-instant", D + timedelta(days=3) - timedelta(microseconds=1)),  # last instant: new on day 3
        user("too-late", D + timedelta(days=3)),
        user("quiet-new", D + timedelta(days=1, hours=3)),  # active nowhere: new on day 2 all the same
        user("vet-a", D - timedelta(days=30)),
        user("vet-b", D - timedelta(microseconds=1)),  # just before the range: a veteran
        user("vet-outside", D - timedelta(days=5)),  # active only outside the range
        user("late-registration", D + timedelta(days=1), ts=D - timedelta(days=1)),
        user("late-registration", D - timedelta(days=9), ts=D),  # the newer upsert says: a veteran
        session("s1", "vet-a", D + timedelta(hours=1), mentor="m1"),
        session("s2", "vet-a", D + timedelta(hours=2)),  # twice the same day: counted once
        trace("t1", D + timedelta(days=1, hours=1), session_id="s1"),  # vet-a through its session, day 2
        trace("t2", D + timedelta(days=1), user_id="vet-b"),
        feedback("f1", "vet-b", D + timedelta(days=2)),
        feedback("f2", "late-registration", D + timedelta(days=2), mentor="m2"),
        session("s3", "vet-outside", D - timedelta(hours=1)),
        session("s4", "vet-outside", D + timedelta(days=3)),
        session("s5", "first-instant", D + timedelta(days=1), mentor="m1"),
        # Active with m1 on the range's last instant, registered on it too: new with m1 on day 3.
        session("s6", "last-instant", D + timedelta(days=3) - timedelta(microseconds=1), mentor="m1"),
        # Active with m1 in the range, registered after it: neither new nor a veteran.
        session("s7", "too-late", D + timedelta(days=1), mentor="m1"),
    )
    body = get(client, admin, "user-cohorts-over-time", start_date="2024-05-01", end_date="2024-05-03")
    assert body == {
        "periods": ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"],
        "new_users": [1, 1, 1],
        "veteran_users": [1, 2, 2],
    }
    mentored = get(
        client, admin, "user-cohorts-over-time", start_date="2024-05-01", end_date="2024-05-03", mentor_id="m1"
    )
    # New with m1: first-instant and last-instant, the two registered in range and active with m1.
    # Veterans with m1: vet-a on day 1 (s1) and day 2 (t1 via s1).
    assert mentored == {
        "periods": ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"],
        "new_users": [1, 0, 1],
        "veteran_users": [1, 1, 0],
    }
    weekly = get(
        client, admin, "user-cohorts-over-time", start_date="2024-05-01", end_date="2024-05-03", aggregation="weekly"
    )
    assert weekly == {"periods": ["2024-04-29T00:00:00Z"], "new_users": [3], "veteran_users": [3]}
    # The store itself answers only days with users: vet-outside, a veteran with no activity
    # in range, is in no day (not under a day of None). The span's end is its last instant.
    last = D + timedelta(days=3) - timedelta(microseconds=1)
    span = {"org": "acme", "start": D.replace(tzinfo=None), "end": last.replace(tzinfo=None)}
    assert store.user_cohorts(**span, granularity="daily", tz="UTC", mentor_id=None) == (
        {date(2024, 5, 1): 1, date(2024, 5, 2): 1, date(2024, 5, 3): 1},
        {date(2024, 5, 1): 1, date(2024, 5, 2): 2, date(2024, 5, 3): 2},
    )


def test_a_session_arriving_after_its_traces_and_feedback_still_names_their_people(client, ingest, admin):
    ingest(
        user("vet", D - timedelta(days=10)),
        trace("t1", D + timedelta(hours=5), session_id="s1"),  # user and mentor from s1, not yet stored
        trace("t2", D + timedelta(days=1), user_id="vet", session_id="s1"),  # mentor from s1
        feedback("f1", "vet", D + timedelta(days=2), session_id="s1"),  # mentor from s1
    )
    params = {"start_date": "2024-05-01", "end_date": "2024-05-03", "mentor_id": "m1"}
    before = get(client, admin, "user-cohorts-over-time", **params)
    assert before["veteran_users"] == [0, 0, 0]  # nothing links them to m1 yet
    ingest(session("s1", "vet", D - timedelta(days=1), mentor="m1"))  # started before the range
    assert get(client, admin, "user-cohorts-over-time", **params) == {
        "periods": ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"],
        "new_users": [0, 0, 0],
        "veteran_users": [1, 1, 1],
    }
    assert [p["feedback_count"] for p in get(client, admin, "user-feedback", **params)[0]] == [0, 0, 1]


def test_rows_naming_a_session_of_days_before_take_from_it_only_what_they_lack(client, ingest, admin):
    # s1 is stored ten days before the rows naming it, beyond the day of sessions a batch
    # looks among first: a batch looks it up for the rows that lack its user or mentor. A
    # batch a row, so that each row's look-up is its own.
    ingest(user("vet", D - timedelta(days=20)), user("ann", D - timedelta(days=20)))
    ingest(session("s1", "vet", D - timedelta(days=10), mentor="m1"))
    day = timedelta(days=1)
    ingest(trace("t1", D + timedelta(hours=1), user_id="vet", session_id="s1"))  # the mentor of s1
    ingest(
        trace("t2", D + timedelta(hours=2), user_id="ann", session_id="s1", mentor="m2"),  # its own
        feedback("f1", "ann", D + timedelta(hours=3), mentor="m2", session_id="s1"),  # its own
    )
    ingest(trace("t3", D + day, session_id="s1"))  # the user and mentor of s1
    ingest(observation("o4", "t4", D, cost=4))  # waits for its trace, then for the trace's user
    ingest(trace("t4", D + day, session_id="s1", mentor="m3"))  # the user of s1
    ingest(feedback("f2", "vet", D + 2 * day, session_id="s1"))  # the mentor of s1
    # Their traces already stored: the observations' batch looks s1 up for t3's user only.
    ingest(observation("o3", "t3", D, cost=1), observation("o2", "t2", D, cost=2))
    days = {"start_date": "2024-05-01", "end_date": "2024-05-03"}
    veterans = {
        mentor: get(client, admin, "user-cohorts-over-time", **days, **({"mentor_id": mentor} if mentor else {}))
        for mentor in ("m1", "m2", "m3", None)
    }
    assert {m: v["veteran_users"] for m, v in veterans.items()} == {
        "m1": [1, 1, 1],  # t1, t3, f2: vet
        "m2": [1, 0, 0],  # t2 and f1: ann
        "m3": [0, 1, 0],  # t4: vet
        None: [2, 1, 1],
    }
    feedback_by_mentor = {m: get(client, admin, "user-feedback", **days, mentor_id=m)[0] for m in ("m1", "m2")}
    assert {m: [p["feedback_count"] for p in f] for m, f in feedback_by_mentor.items()} == {
        "m1": [0, 0, 1],
        "m2": [1, 0, 0],
    }
    costs = {who: get(client, admin, "user-cost", **days, username=who) for who in ("vet", "ann")}
    assert costs == {"vet": {"total_cost": 5.0}, "ann": {"total_cost": 2.0}}


def test_the_newest_registration_wins_whatever_the_batch_it_arrives_in(client, ingest, admin):
    ingest(user("u", D + timedelta(days=1), ts=D + timedelta(hours=2)))  # the newest upsert: new on day 2
    ingest(user("u", D - timedelta(days=5), ts=D + timedelta(hours=1)))  # an older one, arriving later
    ingest(session("s", "u", D + timedelta(days=2)))
    body = get(client, admin, "user-cohorts-over-time", start_date="2024-05-01", end_date="2024-05-03")
    assert (body["new_users"], body["veteran_users"]) == ([0, 1, 0], [0, 0, 0])


def _generate_org(rng: random.Random, start: datetime, days: int):
    users = {f"u{n}": start + timedelta(seconds=rng.randrange(-40 * 86_400, days * 86_400)) for n in range(60)}
    mentors = ["m1", "m2", "m3"]
    events = [user(u, at) for u, at in users.items()]
    sessions = {}
    for n in range(150):
        u, m = rng.choice(list(users)), rng.choice([*mentors, None])
        at = start + timedelta(seconds=rng.randrange(-5 * 86_400, (days + 5) * 86_400))
        sessions[f"s{n}"] = (u, m, at)
        events.append(session(f"s{n}", u, at, mentor=m))
    for n in range(200):
        at = start + timedelta(seconds=rng.randrange(-3 * 86_400, (days + 3) * 86_400))
        sid = rng.choice([*sessions, None])
        kind = rng.random()
        if kind < 0.4 and sid:
            events.append(trace(f"t{n}", at, session_id=sid))
        else:
            events.append(
                trace(f"t{n}", at, user_id=rng.choice(list(users)), session_id=sid, mentor=rng.choice([*mentors, None]))
            )
    for n in range(150):
        at = start + timedelta(seconds=rng.randrange(-3 * 86_400, (days + 3) * 86_400))
        sid = rng.choice([*sessions, None, None])
        events.append(
            feedback(
                f"f{n}",
                rng.choice(list(users)),
                at,
                rng.choice(["positive", "negative"]),
                mentor=rng.choice([*mentors, None]),
                session_id=sid,
            )
        )
    return events


def _activity(events):
    """(user, mentor, instant) for every session, trace and feedback, resolved through sessions."""
    sessions = {e["body"]["session_id"]: e["body"] for e in events if e["type"] == "session.create"}
    out = []
    for e in events:
        b = e["body"]
        if e["type"] == "session.create":
            out.append((b["user_id"], b.get("mentor_id"), b["started_at"]))
        elif e["type"] in ("trace.create", "feedback.create"):
            s = sessions.get(b.get("session_id"), {})
            at = b["timestamp"] if e["type"] == "trace.create" else b["created_at"]
            out.append((b.get("user_id") or s.get("user_id"), b.get("mentor_id") or s.get("mentor_id"), at))
    return [(u, m, datetime.fromisoformat(at)) for u, m, at in out if u is not None]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("aggregation", ["hourly", "daily", "weekly"])
@pytest.mark.parametrize("mentor", [None, "m2"])
def test_cohorts_and_feedback_match_a_plain_python_reference(client, ingest, admin, store, tz, aggregation, mentor):
    rng = random.Random(31)
    start = datetime(2024, 3, 6, tzinfo=UTC)  # the window holds the US DST change of 2024-03-10
    events = _generate_org(rng, start, 8)
    arrival = events[:]
    random.Random(5).shuffle(arrival)  # traces and feedback often arrive before their sessions
    for i in range(0, len(arrival), 100):
        ingest(*arrival[i : i + 100])
        if i == 300:  # as a bulk load ends: the sessions of traces stored so far come later
            store.reorder()
    zone = ZoneInfo(tz)
    first, last = ("2024-03-09", "2024-03-11") if aggregation == "hourly" else ("2024-03-07", "2024-03-12")
    lo, hi = day_bounds(first, last, zone)
    labels = periods(lo, hi, aggregation, zone)
    registered = {
        e["body"]["user_id"]: datetime.fromisoformat(e["body"]["registered_at"])
        for e in events
        if e["type"] == "user.upsert"
    }
    activity = [(u, m, at) for u, m, at in _activity(events) if lo <= at <= hi and (mentor is None or m == mentor)]
    new, veteran = defaultdict(int), defaultdict(set)
    active_users = {u for u, _, _ in activity}
    for u, at in registered.items():
        if lo <= at <= hi and (mentor is None or u in active_users):
            new[label(at, aggregation, zone)] += 1
    for u, _, at in activity:
        if u in registered and registered[u] < lo:
            veteran[label(at, aggregation, zone)].add(u)
    params = {"start_date": first, "end_date": last, "aggregation": aggregation, "tz": tz}
    if mentor:
        params["mentor_id"] = mentor
    assert get(client, admin, "user-cohorts-over-time", **params) == {
        "periods": labels,
        "new_users": [new[p] for p in labels],
        "veteran_users": [len(veteran[p]) for p in labels],
    }
    sessions = {e["body"]["session_id"]: e["body"] for e in events if e["type"] == "session.create"}
    counts = defaultdict(lambda: [0, 0, 0])
    for e in events:
        if e["type"] != "feedback.create":
            continue
        b = e["body"]
        at = datetime.fromisoformat(b["created_at"])
        m = b.get("mentor_id") or sessions.get(b.get("session_id"), {}).get("mentor_id")
        if lo <= at <= hi and (mentor is None or m == mentor):
            row = counts[label(at, aggregation, zone)]
            row[0] += 1
            row[1 if b["rating"] == "positive" else 2] += 1
    assert get(client, admin, "user-feedback", **params) == [
        [
            {"period": p, "feedback_count": counts[p][0], "positive": counts[p][1], "negative": counts[p][2]}
            for p in labels
        ]
    ]


def test_feedback_hand_worked_with_every_period_present(client, ingest, admin):
    ingest(
        feedback("f1", "u1", D + timedelta(hours=1), "positive"),
        feedback("f2", "u2", D + timedelta(hours=1, minutes=59), "negative"),
        feedback("f3", "u2", D + timedelta(hours=3), "positive", mentor="m9"),
    )
    body = get(
        client,
        admin,
        "user-feedback",
        start_date="2024-05-01T00:00:00Z",
        end_date="2024-05-01T03:30:00Z",
        aggregation="hourly",
    )
    assert body == [
        [
            {"period": "2024-05-01T00:00:00Z", "feedback_count": 0, "positive": 0, "negative": 0},
            {"period": "2024-05-01T01:00:00Z", "feedback_count": 2, "positive": 1, "negative": 1},
            {"period": "2024-05-01T02:00:00Z", "feedback_count": 0, "positive": 0, "negative": 0},
            {"period": "2024-05-01T03:00:00Z", "feedback_count": 1, "positive": 1, "negative": 0},
        ]
    ]
    kolkata = get(
        client,
        admin,
        "user-feedback",
        start_date="2024-05-01",
        end_date="2024-05-01",
        tz="Asia/Kolkata",
        mentor_id="m9",
    )
    assert kolkata == [[{"period": "2024-05-01T00:00:00+05:30", "feedback_count": 1, "positive": 1, "negative": 0}]]


# -- cost -------------------------------------------------------------------------


def _shipped_prices() -> dict[str, tuple[Decimal, Decimal]]:
    raw = json.loads(resources.files("parley").joinpath("data/model_prices.json").read_text(), parse_float=Decimal)
    return {k: (Decimal(v["input"]), Decimal(v["output"])) for k, v in raw.items() if not k.startswith("_")}


def test_cost_hand_worked(client, ingest, admin, caplog):
    ingest(
        # An observation that arrives before its trace.
        observation("o1", "t1", D, cost=0.0123456),
        trace("t1", D + timedelta(hours=1), user_id="alice"),
        # A trace that gets its user only through its session, priced from tokens:
        # gpt-4o-mini-2024-07-18 takes the gpt-4o-mini price: 1000 x 0.15/M + 500 x 0.60/M = 0.00045.
        session("s1", "alice", D),
        trace("t2", D + timedelta(hours=2), session_id="s1"),
        observation("o2", "t2", D, model="GPT-4o-mini-2024-07-18", tokens_in=1000, tokens_out=500),
        # An unknown model with no cost counts 0, and so does a span with nothing, or a
        # generation with tokens but no model.
        observation("o3", "t2", D, model="my-own-model", tokens_in=10**6),
        observation("o4", "t2", D),
        observation("o7", "t2", D, tokens_in=300, tokens_out=20),
        observation("o8", "t2", D, model="my-tool-model"),
        # Someone else's trace, and alice's trace outside the range.
        trace("t3", D, user_id="bob"),
        observation("o5", "t3", D, cost=5),
        trace("t4", D + timedelta(days=2), user_id="alice"),
        observation("o6", "t4", D, cost=7),
    )
    with caplog.at_level("WARNING", logger="parley.cost"):
        got = get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-02", username="alice")
    assert got == {"total_cost": 0.012796}
    # o3's tokens (an unknown model) and o7's (no model) had no cost and no price: the log
    # names them, most tokens first. o4 and o8, with no tokens, cost 0 whatever the price:
    # o4 is among the no-model observations without a cost; o8's model is left out.
    assert caplog.messages == [
        "user-cost: tokens of alice in org acme with no cost and no known model price were counted as 0:"
        " 'my-own-model' 1,000,000 input and 0 output tokens (1 observation without a cost);"
        " no model 300 input and 20 output tokens (2 observations without a cost)"
    ]
    bob = client.get(
        "/api/ai-analytics/orgs/acme/users/alice/user-cost/",
        params={"start_date": "2024-05-01", "end_date": "2024-05-01", "username": "bob"},
        headers=admin,
    )
    assert bob.json() == {"total_cost": 5.0}
    alice_path = client.get(
        "/api/ai-analytics/orgs/acme/users/alice/user-cost/",
        params={"start_date": "2024-05-01T00:00:00Z", "end_date": "2024-05-03T00:00:00Z"},
        headers=admin,
    )
    assert alice_path.json() == {"total_cost": 7.012796}
    nobody = get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-02", username="nobody")
    assert nobody == {"total_cost": 0.0}


def test_cost_prices_a_routers_or_a_clouds_model_name_by_the_model_in_it(client, ingest, admin):
    # A million tokens in and a million out: each observation costs its input and output
    # prices per million added up.
    names = {
        "openai/gpt-4o-mini": Decimal("0.75"),  # a router's name: 0.15 + 0.60
        "publishers/google/models/gemini-1.5-pro-002": Decimal("6.25"),  # 1.25 + 5.00
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0": Decimal("18"),  # Bedrock's: 3 + 15
        "anthropic/claude-3.5-sonnet": Decimal("18"),  # the router's spelling, an entry of its own
        "o1-pro-2025-03-19": Decimal("750"),  # o1-pro's 150 + 600, not o1's 15 + 60
        "claude-opus-4-5-20251101": Decimal("30"),  # 5 + 25, not claude-opus-4's 15 + 75
        "ft:gpt-4o-mini:acme::x1": Decimal("0"),  # fine-tuned, priced otherwise: not priced
    }
    events = [trace("t1", D, user_id="ann")]
    for n, name in enumerate(names):
        events.append(observation(f"o{n}", "t1", D, model=name, tokens_in=10**6, tokens_out=10**6))
    ingest(*events)
    got = get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-01", username="ann")
    assert got == {"total_cost": float(sum(names.values()))} == {"total_cost": 823.0}


def test_a_batch_finds_traces_and_sessions_both_in_itself_and_stored_before(client, ingest, admin):
    # The DuckDB store looks for the traces and sessions a batch names among the batch's
    # own first, and reads the stored ones only for the rest: each observation below
    # needs a different mix, and each one missed leaves a distinct total.
    ingest(session("s1", "ann", D, mentor="m1"), trace("t1", D, session_id="s1"), observation("o1", "t1", D, cost=1))
    ingest(
        trace("t2", D, user_id="ben"),
        observation("o2", "t2", D, cost=2),  # its trace in this batch
        observation("o3", "t1", D, cost=4),  # its trace stored before, the user its session's
        trace("t3", D, session_id="s1"),
        observation("o4", "t3", D, cost=8),  # its trace in this batch, its session stored before
        session("s2", "cat", D),
        trace("t4", D, session_id="s2"),
        observation("o5", "t4", D, cost=16),  # trace and session in this batch
        feedback("f1", "ann", D + timedelta(days=1), session_id="s1"),  # mentor from s1, stored before
        feedback("f2", "cat", D + timedelta(days=1), session_id="s2", mentor="m1"),
        feedback("f3", "ann", D + timedelta(days=1)),  # no session
    )
    totals = {
        who: get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-01", username=who)
        for who in ("ann", "ben", "cat")
    }
    assert totals == {"ann": {"total_cost": 13.0}, "ben": {"total_cost": 2.0}, "cat": {"total_cost": 16.0}}
    params = {"start_date": "2024-05-02", "end_date": "2024-05-02", "mentor_id": "m1"}
    assert [p["feedback_count"] for p in get(client, admin, "user-feedback", **params)[0]] == [2]  # f1, f2


def test_a_batch_finds_the_traces_and_sessions_it_names_stored_days_before_it(client, ingest, admin):
    # The DuckDB store reads the stored rows of the day before the batch's first, then
    # the rest of the table for what it has not found: a batch here names some of each.
    later = D + timedelta(days=3, hours=12)
    ingest(session("s1", "ann", D, mentor="m1"), trace("t1", D, session_id="s1"), observation("o1", "t1", D, cost=1))
    ingest(session("s2", "cat", later - timedelta(hours=1)), trace("t2", later - timedelta(hours=1), session_id="s2"))
    ingest(
        observation("o2", "t1", later, cost=2),  # its trace 3 days before, the user its session's
        trace("t3", later, session_id="s1"),  # its session 3 days before
        observation("o3", "t3", later, cost=4),
        observation("o4", "t2", later, cost=8),  # its trace an hour before
        trace("t4", later, session_id="s2"),  # its session an hour before
        observation("o5", "t4", later, cost=16),
        feedback("f1", "ann", later, session_id="s1"),  # the mentor of a session 3 days before
        feedback("f2", "cat", later, session_id="s2"),  # no mentor
    )
    days = {"early": ("2024-05-01", "2024-05-01"), "late": ("2024-05-04", "2024-05-04")}
    totals = {
        (who, when): get(client, admin, "user-cost", start_date=start, end_date=end, username=who)["total_cost"]
        for who in ("ann", "cat")
        for when, (start, end) in days.items()
    }
    # A trace's cost counts on the trace's day, for its session's user.
    assert totals == {("ann", "early"): 3.0, ("ann", "late"): 4.0, ("cat", "early"): 0.0, ("cat", "late"): 24.0}
    params = {"start_date": "2024-05-04", "end_date": "2024-05-04", "mentor_id": "m1"}
    assert [p["feedback_count"] for p in get(client, admin, "user-feedback", **params)[0]] == [1]  # f1


def test_a_batch_naming_more_sessions_than_a_scan_takes_as_a_list_finds_each(client, ingest, admin):
    # Each later batch names 60 sessions stored an hour before it, more than the 50 keys
    # DuckDB pushes into a scan as a list: the DuckDB store finds them among the recent
    # sessions by row id (``_recent``), in a batch that brings a session of its own and in
    # one that brings none (the look-up's two statements).
    earlier = D + timedelta(days=3, hours=11)
    later = earlier + timedelta(hours=1)
    ingest(*(session(f"s{i}", f"u{i}", earlier + timedelta(seconds=i)) for i in range(120)))
    for first, new_session in ((0, [session("s-new", "u-new", later)]), (60, [])):
        named = range(first, first + 60)
        ingest(
            *new_session,
            *(trace(f"t{i}", later, session_id=f"s{i}") for i in named),
            *(observation(f"o{i}", f"t{i}", later, cost=i + 1) for i in named),
        )
    costs = {
        who: get(client, admin, "user-cost", start_date="2024-05-04", end_date="2024-05-04", username=who)
        for who in ("u0", "u1", "u59", "u60", "u61", "u119", "u-new")
    }
    # Each trace's cost counts for its session's user.
    assert {who: cost["total_cost"] for who, cost in costs.items()} == {
        "u0": 1.0,
        "u1": 2.0,
        "u59": 60.0,
        "u60": 61.0,
        "u61": 62.0,
        "u119": 120.0,
        "u-new": 0.0,
    }


# Ranges for the cost reference: whole days, and date-times that cut days (and hours) in two.
COST_RANGES = [
    ("2024-05-03", "2024-05-07"),
    ("2024-05-02T13:30:00Z", "2024-05-08T05:15:30Z"),
    ("2024-05-04T06:00:00Z", "2024-05-04T18:00:00Z"),
    ("2024-05-03T10:00:00+05:30", "2024-05-05T23:59:59Z"),
    ("2024-05-01T00:00:00Z", "2024-05-11T00:00:00Z"),
]


def _instant(bound: str, *, is_end: bool) -> datetime:
    if "T" in bound:
        return datetime.fromisoformat(bound.replace("Z", "+00:00"))
    day = datetime.fromisoformat(bound).replace(tzinfo=UTC)
    return day + timedelta(days=1) - timedelta(microseconds=1) if is_end else day


def test_cost_matches_a_plain_python_reference(client, ingest, admin, store):
    rng = random.Random(77)
    prices = _shipped_prices()
    models = [*prices, "gpt-4o-2024-08-06", "CLAUDE-3-HAIKU-20240307", "unknown-model", None]
    models += ["openai/GPT-4o-mini", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "ft:gpt-4o-mini:acme::x1"]
    events, traces, costs = [], {}, []  # costs: (owner, trace time, USD)
    events.append(session("s-a", "ann", D))
    for n in range(120):
        at = D + timedelta(seconds=rng.randrange(0, 86_400 * 10))
        owner = rng.choice(["ann", "ben", None])
        traces[f"t{n}"] = (owner or "ann", at)
        events.append(trace(f"t{n}", at, user_id=owner, session_id="s-a" if owner is None else None))
    for n in range(400):
        tid = rng.choice(list(traces))
        owner, at = traces[tid]
        model = rng.choice(models)
        tin, tout = rng.randrange(0, 5000), rng.randrange(0, 2000)
        cost = round(rng.uniform(0, 0.1), 6) if rng.random() < 0.4 else None
        events.append(observation(f"o{n}", tid, at, cost=cost, model=model, tokens_in=tin, tokens_out=tout))
        if cost is not None:
            costs.append((owner, at, Decimal(str(cost))))
        elif model is not None:
            name = model.lower()
            tails = [name] + [name[i + 1 :] for i, char in enumerate(name) if char in "/."]
            matches = [p for p in prices if any(tail.startswith(p) for tail in tails)]
            if matches:
                pin, pout = prices[max(matches, key=len)]
                costs.append((owner, at, (pin * tin + pout * tout) / 10**6))
    random.Random(9).shuffle(events)  # sessions after their traces, traces after their observations
    for i in range(0, len(events), 50):
        ingest(*events[i : i + 50])
        if i == 250:  # the DuckDB store's rows so far put in user order, the rest appended after them
            store.reorder()
    for start, end in COST_RANGES:
        lo, hi = _instant(start, is_end=False), _instant(end, is_end=True)
        for who in ("ann", "ben"):
            expected = sum((usd for owner, at, usd in costs if owner == who and lo <= at <= hi), Decimal(0))
            got = get(client, admin, "user-cost", start_date=start, end_date=end, username=who)
            assert got == {"total_cost": float(round(expected, 6))}, (who, start, end)


def test_a_duckdb_user_cost_reads_the_users_rows_that_reorder_keeps_together(tmp_path):
    # No index: the rows carry the user's md5 and day, and ``reorder`` writes each org's rows
    # in that order, so that the zone maps of the user's md5 leave one row group to scan.
    from parley.ingest.events import validate_event

    store = DuckDBStore(tmp_path / "parley.duckdb")
    users = ["ann", "ben", "cat"]
    try:
        events = []
        for day in range(3):  # each day's traces in turn: a row per user, day and model
            for n, who in enumerate(users):
                at = D + timedelta(days=day, hours=n)
                tid = f"t{day}{who}"
                events += [trace(tid, at, user_id=who), observation(f"o{tid}", tid, at, cost=n + 1)]
                events.append(observation(f"x{tid}", tid, at, model="gpt-4o", tokens_in=1000))
        store.ingest([validate_event(e, "acme") for e in events])
        store.ingest([validate_event(e, "globex") for e in events[:6]])
        rows = "SELECT org, user_md5, day, model FROM user_cost_days ORDER BY rowid"
        assert store._fetchall("SELECT count(*) FROM user_cost_days", {})[0][0] == 3 * 3 * 2 + 2 * 2
        store.reorder()
        acme = [row[1:3] for row in store._fetchall(rows, {}) if row[0] == "acme"]
        assert acme == sorted(acme) and len(acme) == 18  # the user's md5, then the day
        md5 = {who: store._fetchall("SELECT md5_number($k)", {"k": f"4:acme{who}"})[0][0] for who in users}
        assert {who: sum(1 for m, _ in acme if m == md5[who]) for who in users} == {"ann": 6, "ben": 6, "cat": 6}
        prices = [("gpt-4o", 2_500_000, 10_000_000)]
        span = {"start": D.replace(tzinfo=None), "end": (D + timedelta(days=3)).replace(tzinfo=None)}
        for n, who in enumerate(users):  # three days of n + 1 USD and 1,000 gpt-4o input tokens
            expected = 3 * ((n + 1) * 10**12 + 1000 * 2_500_000)
            assert store.user_cost(org="acme", user_id=who, prices=prices, **span) == (expected, {}), who
        assert store.user_cost(org="globex", user_id="ben", prices=[], **span) == (
            2 * 10**12,
            {"gpt-4o": (1, 1000, 0)},
        )  # day 0 only
        indexes = "SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'user_cost_days'"
        assert store._fetchall(indexes, {}) == [(0,)]
    finally:
        store.close()


def test_cost_counts_only_the_users_own_traces_of_this_org(client, ingest, admin, store):
    from parley.ingest.events import validate_event

    ingest(
        session("s1", "alice", D),
        trace("t1", D, session_id="s1"),  # alice's through her session
        observation("o1", "t1", D, cost=1),
        trace("t2", D, user_id="bob", session_id="s1"),  # bob's own, though in alice's session
        observation("o2", "t2", D, cost=2),
        trace("t3", D, session_id="s-unknown"),  # a session never seen: nobody's
        observation("o3", "t3", D, cost=4),
    )
    # Another org with the same ids: never part of acme's answers.
    other = [session("s1", "alice", D), trace("t1", D, session_id="s1"), observation("o1", "t1", D, cost=8)]
    store.ingest([validate_event(e, "globex") for e in other])
    for who, cost in (("alice", 1.0), ("bob", 2.0), ("carol", 0.0)):
        got = get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-01", username=who)
        assert got == {"total_cost": cost}, who


def test_cost_of_a_user_with_thousands_of_traces(client, ingest, admin):
    # A heavy user: 3,000 traces in one day, half of them hers only through her session.
    events = [session("s-big", "whale", D)]
    for n in range(3000):
        at = D + timedelta(seconds=n)
        events.append(trace(f"t{n}", at, session_id="s-big" if n % 2 else None, user_id=None if n % 2 else "whale"))
        events.append(observation(f"o{n}", f"t{n}", at, cost=n / 1000))
    for i in range(0, len(events), 1000):
        ingest(*events[i : i + 1000])
    got = get(client, admin, "user-cost", start_date="2024-05-01", end_date="2024-05-01", username="whale")
    assert got == {"total_cost": float(sum(Decimal(n) / 1000 for n in range(3000)))}


def test_an_operator_price_table_overrides_the_shipped_one(tmp_path, store, ingest_key):
    from fastapi.testclient import TestClient

    from parley.app import create_app
    from parley.settings import Settings

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o": {"input": 1, "output": 1}, "house-model": {"input": 2, "output": 0}}))
    app = create_app(Settings(database_url=store.url, model_prices=prices), store=store)
    key = create_key(store, org="acme", workspace_id=WS, member_id=1)
    with TestClient(app) as client:
        batch = [
            member(1, "admin"),
            trace("t", D, user_id="u"),
            observation("o1", "t", D, model="gpt-4o", tokens_in=10**6, tokens_out=10**6),
            observation("o2", "t", D, model="house-model-v2", tokens_in=500_000),
        ]
        client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
        got = client.get(
            f"{BASE}/user-cost/",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01", "username": "u"},
            headers=bearer(key),
        )
        assert got.json() == {"total_cost": 3.0}


def test_unpriced_models_are_logged_once_an_hour_for_each_org(store, caplog):
    """A dashboard reading users' costs every minute: each org's unpriced model is logged
    on its first read, again after an hour, and not on the reads between."""
    from fastapi.testclient import TestClient

    from parley.app import create_app
    from parley.ingest.events import validate_event
    from parley.settings import Settings

    for org in ("acme", "globex"):
        events = [
            member(1, "admin"),
            trace("t1", D, user_id="alice"),
            observation("o1", "t1", D, model="house-model", tokens_in=100),
            trace("t2", D, user_id="bob"),
            observation("o2", "t2", D, model="house-model", tokens_in=5),
            observation("o3", "t2", D, model="lab-model", tokens_out=7),
            observation("o4", "t2", D, cost=0.5),
        ]
        store.ingest([validate_event(e, org) for e in events])
    keys = {org: bearer(create_key(store, org=org, workspace_id=WS, member_id=1)) for org in ("acme", "globex")}
    now = [datetime(2024, 6, 1, 12, tzinfo=UTC)]
    app = create_app(Settings(database_url=store.url), store=store, clock=lambda: now[0])

    def logged(who: str, org: str = "acme", cost: float = 0.0) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="parley.cost"):
            got = client.get(
                f"/api/ai-analytics/orgs/{org}/users/me/user-cost/",
                params={"start_date": "2024-05-01", "end_date": "2024-05-01", "username": who},
                headers=keys[org],
            )
        assert got.json() == {"total_cost": cost}  # whatever is logged
        return caplog.messages

    def line(who: str, models: str, org: str = "acme") -> list[str]:
        return [
            f"user-cost: tokens of {who} in org {org} with no cost and no known model price were counted as 0: {models}"
        ]

    house = "'house-model' {:,} input and 0 output tokens (1 observation without a cost)"
    lab = "'lab-model' 0 input and 7 output tokens (1 observation without a cost)"
    with TestClient(app) as client:
        assert logged("alice") == line("alice", house.format(100))
        assert logged("alice") == []
        # bob's house-model tokens were logged for acme a moment ago: only his lab-model is.
        assert logged("bob", cost=0.5) == line("bob", lab)
        assert logged("bob", org="globex", cost=0.5) == line("bob", f"{lab}; {house.format(5)}", org="globex")
        now[0] += timedelta(minutes=59, seconds=59)
        assert logged("bob", cost=0.5) == []
        now[0] += timedelta(seconds=1)
        assert logged("bob", cost=0.5) == line("bob", f"{lab}; {house.format(5)}")
        assert logged("alice") == []


def test_the_unpriced_log_forgets_past_its_limit_and_when_the_clock_goes_back():
    from parley.metrics.org_analytics import UnpricedLog
    from parley.pricing import Unpriced

    unpriced_log, left, at = UnpricedLog(limit=2), Unpriced(1, 10, 0), datetime(2024, 6, 1)
    assert unpriced_log.due("acme", {"m1": left, None: left}, at) == {"m1": left, None: left}
    assert unpriced_log.due("acme", {"m1": left, None: left}, at) == {}
    assert unpriced_log.due("globex", {"m1": left}, at) == {"m1": left}  # past the limit: acme's forgotten
    assert unpriced_log.due("acme", {"m1": left, None: left}, at) == {"m1": left, None: left}
    assert unpriced_log.due("acme", {"m1": left}, at - timedelta(seconds=1)) == {"m1": left}


def test_a_bad_price_table_is_refused_at_start(tmp_path):
    from parley.pricing import load_prices

    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"m": {"input": -1, "output": 1}}))
    with pytest.raises(ValueError, match="not a model price table"):
        load_prices(bad)


# -- rights and parameters -----------------------------------------------------------

ENDPOINTS = ["user-cohorts-over-time", "user-cost", "user-feedback"]
RANGE = {"start_date": "2024-05-01", "end_date": "2024-05-02"}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("role", "scopes", "status"),
    [
        ("superadmin", [], 200),
        ("admin", [], 200),
        ("controller", [], 403),
        ("curator", [], 403),
        ("basic", [], 403),
        ("basic", ["org_analytics:read"], 200),
        ("controller", ["org_analytics:read"], 200),
    ],
)
def test_org_rights(client, ingest, member_key, path, role, scopes, status):
    ingest(member(3, role, scopes=scopes))
    response = client.get(f"{BASE}/{path}/", params=RANGE, headers=bearer(member_key(3)))
    assert response.status_code == status, response.text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unknown_org_keys_and_parameters(client, admin, ingest_key, path):
    url = f"{BASE}/{path}/"
    assert client.get(f"/api/ai-analytics/orgs/globex/users/me/{path}/", params=RANGE, headers=admin).status_code == 404
    assert client.get(url, params=RANGE).status_code == 401
    assert client.get(url, params=RANGE, headers=bearer(ingest_key)).status_code == 403
    missing = client.get(url, params={"start_date": "2024-05-01"}, headers=admin)
    assert missing.status_code == 400 and "end_date is required" in missing.json()["detail"]
    backwards = client.get(url, params={"start_date": "2024-05-02", "end_date": "2024-05-01"}, headers=admin)
    assert backwards.status_code == 400
    if path != "user-cost":
        bad = client.get(url, params={**RANGE, "aggregation": "monthly"}, headers=admin)
        assert bad.status_code == 400 and "aggregation" in bad.json()["detail"]
        long = client.get(
            url, params={"start_date": "2024-05-01", "end_date": "2024-06-05", "aggregation": "hourly"}, headers=admin
        )
        assert long.status_code == 400 and "31 days" in long.json()["detail"]


def _reopened_after(path, events, *statements):
    """A DuckDB store holding ``events``, changed by ``statements`` into what an older
    Parley wrote, opened again."""
    import duckdb

    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    store = DuckDBStore(path)
    assert ingest_batch(store, org="acme", batch=events).errors == []
    store.close()
    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement)
    return DuckDBStore(path)


def _reopened_without(path, events, *tables):
    """A DuckDB store holding ``events``, as a Parley without ``tables`` wrote it, opened again."""
    return _reopened_after(path, events, *(f"DROP TABLE {table}" for table in tables))


def test_a_duckdb_store_made_before_user_activity_and_state_fills_them_when_opened(tmp_path):
    path = tmp_path / "parley.duckdb"
    events = [
        user("vet", D + timedelta(days=1), ts=D - timedelta(days=20)),
        user("vet", D - timedelta(days=10), ts=D - timedelta(days=10)),  # the newer upsert: a veteran
        trace("t1", D + timedelta(days=1), session_id="s1"),
        session("s1", "vet", D + timedelta(hours=1), mentor="m1"),
        feedback("f1", "vet", D + timedelta(days=2), session_id="s1"),
    ]
    span = {"org": "acme", "start": D.replace(tzinfo=None), "end": (D + timedelta(days=3)).replace(tzinfo=None)}
    store = _reopened_without(path, events, "user_activity", "user_state")
    try:
        new, veterans = store.user_cohorts(**span, granularity="daily", tz="UTC", mentor_id="m1")
    finally:
        store.close()
    assert new == {}
    assert sorted(veterans.values()) == [1, 1, 1]  # vet with m1 on each day: s1, t1 through s1, f1 through s1


def _waiting_rows(store):
    """(session id, user id, mentor id, waiting) of every stored trace's and feedback's activity."""
    return store._con.execute(
        "SELECT a.session_id, u.user_id, a.mentor_id, a.waiting FROM user_activity a"
        " LEFT JOIN user_numbers u USING (org, user_no) WHERE a.session_id IS NOT NULL ORDER BY ALL"
    ).fetchall()


def test_duckdb_activity_stored_before_its_session_waits_for_it_and_no_other_row_waits(tmp_path):
    # A trace or feedback whose session is not stored yet keeps a NULL user or mentor and is
    # marked waiting; the session, in a later batch, fills it in and clears the mark. The
    # batch's own sessions and those stored before resolve their rows at once, which never
    # wait, nor do those naming no session, nor those with their own user and mentor.
    from parley.ingest.service import ingest_batch

    store = DuckDBStore(tmp_path / "parley.duckdb")

    def store_in(*events):
        assert ingest_batch(store, org="acme", batch=list(events)).errors == []

    try:
        store_in(user("vet", D - timedelta(days=10)), session("s0", "ann", D, mentor="m0"))
        store_in(
            trace("t1", D + timedelta(hours=1), session_id="s1"),  # s1 comes later
            feedback("f1", "vet", D + timedelta(hours=2), session_id="s1"),
            trace("t9", D + timedelta(hours=3), session_id="s9"),  # s9 never comes
            trace("t0", D + timedelta(hours=4), session_id="s0"),  # s0 stored before
            trace("t2", D + timedelta(hours=5), session_id="s2"),  # s2 in the same batch
            session("s2", "bob", D + timedelta(hours=5), mentor="m2"),
            trace("tx", D + timedelta(hours=6), user_id="cat"),  # no session
            trace("t3", D + timedelta(hours=7), user_id="dan", session_id="s3", mentor="m3"),  # needs nothing of s3
            trace("t4", D + timedelta(hours=8), user_id="dan", session_id="s9"),  # a mentor of s9
            feedback("f9", "dan", D + timedelta(hours=9), mentor="m3", session_id="s9"),  # nothing of s9
        )
        before = _waiting_rows(store)
        store_in(session("s1", "vet", D, mentor="m1"), session("s3", "eve", D, mentor="m9"))
        after = _waiting_rows(store)
        span = {"org": "acme", "start": D.replace(tzinfo=None), "end": (D + timedelta(days=1)).replace(tzinfo=None)}
        _, veterans = store.user_cohorts(**span, granularity="hourly", tz="UTC", mentor_id="m1")
    finally:
        store.close()
    assert before == [  # NULLs sort last
        ("s0", "ann", "m0", False),
        ("s1", "vet", None, True),
        ("s1", None, None, True),
        ("s2", "bob", "m2", False),
        ("s3", "dan", "m3", False),
        ("s9", "dan", "m3", False),
        ("s9", "dan", None, True),
        ("s9", None, None, True),
    ]
    assert after == [
        ("s0", "ann", "m0", False),
        ("s1", "vet", "m1", False),
        ("s1", "vet", "m1", False),
        ("s2", "bob", "m2", False),
        ("s3", "dan", "m3", False),  # its own, not s3's
        ("s9", "dan", "m3", False),
        ("s9", "dan", None, True),
        ("s9", None, None, True),
    ]
    # vet with m1: s1 at 00:00, then t1 and f1 through s1 at 01:00 and 02:00
    assert veterans == {D.replace(tzinfo=None) + timedelta(hours=h): 1 for h in (0, 1, 2)}


def test_a_duckdb_store_whose_activity_has_no_waiting_mark_marks_it_when_opened(tmp_path):
    # A store written before the mark: opened, its rows whose session is not stored are
    # marked waiting, so that the session, when it comes, still fills them in.
    from parley.ingest.service import ingest_batch

    events = [
        user("vet", D - timedelta(days=10)),
        trace("t1", D + timedelta(hours=1), session_id="s1"),  # s1 comes after the upgrade
        session("s0", "vet", D + timedelta(hours=2), mentor="m1"),
        trace("t0", D + timedelta(days=1), session_id="s0"),
    ]
    store = _reopened_after(  # as Parley 8 left it
        tmp_path / "parley.duckdb",
        events,
        "ALTER TABLE user_activity DROP COLUMN waiting",
        "UPDATE parley_meta SET value = '8' WHERE key = 'schema_version'",
    )
    span = {"org": "acme", "start": D.replace(tzinfo=None), "end": (D + timedelta(days=2)).replace(tzinfo=None)}
    try:
        opened = _waiting_rows(store)
        assert ingest_batch(store, org="acme", batch=[session("s1", "vet", D, mentor="m1")]).errors == []
        _, veterans = store.user_cohorts(**span, granularity="hourly", tz="UTC", mentor_id="m1")
    finally:
        store.close()
    assert opened == [("s0", "vet", "m1", False), ("s1", None, None, True)]
    # vet with m1: s1 at 00:00, t1 through s1 at 01:00, s0 at 02:00, t0 through s0 the next day
    assert sorted(veterans) == [D.replace(tzinfo=None) + timedelta(hours=h) for h in (0, 1, 2, 24)]


def test_a_duckdb_store_whose_activity_waited_with_its_own_user_and_mentor_clears_it_when_opened(tmp_path):
    # A store written before only the rows lacking a user or mentor waited: opened once, its
    # rows with both are waiting no more, the others still wait, and their session fills
    # them in.
    from parley.ingest.service import ingest_batch

    events = [
        user("vet", D - timedelta(days=10)),
        trace("t1", D + timedelta(hours=1), session_id="s1"),  # s1 comes after the upgrade
        trace("t2", D + timedelta(hours=2), user_id="vet", session_id="s1"),
        trace("t3", D + timedelta(hours=3), user_id="vet", session_id="s1", mentor="m1"),
        feedback("f4", "vet", D + timedelta(hours=4), mentor="m1", session_id="s8"),  # s8 never comes
    ]
    store = _reopened_after(  # as Parley left it before 2026-12-06
        tmp_path / "parley.duckdb",
        events,
        "UPDATE user_activity SET waiting = true WHERE session_id IS NOT NULL",
        "DELETE FROM parley_meta WHERE key = 'activity_waits_for_what_it_lacks'",
    )
    span = {"org": "acme", "start": D.replace(tzinfo=None), "end": (D + timedelta(days=1)).replace(tzinfo=None)}
    try:
        opened = _waiting_rows(store)
        assert ingest_batch(store, org="acme", batch=[session("s1", "vet", D, mentor="m1")]).errors == []
        resolved = _waiting_rows(store)
        _, veterans = store.user_cohorts(**span, granularity="hourly", tz="UTC", mentor_id="m1")
    finally:
        store.close()
    assert opened == [
        ("s1", "vet", "m1", False),
        ("s1", "vet", None, True),
        ("s1", None, None, True),
        ("s8", "vet", "m1", False),
    ]
    assert resolved == [("s1", "vet", "m1", False)] * 3 + [("s8", "vet", "m1", False)]
    # vet with m1: s1 at 00:00, t1 to t3 through s1 or their own at 01:00 to 03:00, f4 at 04:00
    assert sorted(veterans) == [D.replace(tzinfo=None) + timedelta(hours=h) for h in range(5)]


def test_a_duckdb_store_whose_activity_names_users_by_id_numbers_them_when_opened(tmp_path):
    import duckdb

    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"
    events = [
        user("vet", D - timedelta(days=10)),
        user("ann", D + timedelta(hours=5)),  # registered in range: new on day 1
        session("s1", "vet", D + timedelta(hours=1)),
        session("s2", "ann", D + timedelta(hours=6)),
        trace("t1", D + timedelta(days=1), session_id="s1"),  # vet through s1
        trace("t2", D + timedelta(days=1, hours=2), user_id="bob"),  # bob never registered: in no cohort
        feedback("f1", "vet", D + timedelta(days=2)),
    ]
    store = DuckDBStore(path)
    assert ingest_batch(store, org="acme", batch=events).errors == []
    store.close()
    with duckdb.connect(str(path)) as con:  # as Parley 2 left it: users named by id
        con.execute("DROP TABLE user_numbers")
        con.execute("DROP TABLE user_activity")
        con.execute(
            "CREATE TABLE user_activity (org VARCHAR NOT NULL, session_id VARCHAR, user_id VARCHAR,"
            " mentor_id VARCHAR, active_at TIMESTAMP NOT NULL)"
        )
        con.execute("DROP TABLE user_state")
        con.execute(
            "CREATE TABLE user_state (org VARCHAR NOT NULL, user_id VARCHAR NOT NULL, registered_at TIMESTAMP,"
            " version VARCHAR NOT NULL, PRIMARY KEY (org, user_id))"
        )
        con.execute("UPDATE parley_meta SET value = '2' WHERE key = 'schema_version'")
    store = DuckDBStore(path)
    span = {"org": "acme", "start": D.replace(tzinfo=None), "end": (D + timedelta(days=3)).replace(tzinfo=None)}
    try:
        new, veterans = store.user_cohorts(**span, granularity="daily", tz="UTC", mentor_id=None)
        numbers = store._con.execute("SELECT user_id, user_no FROM user_numbers ORDER BY user_no").fetchall()
        assert ingest_batch(store, org="acme", batch=[session("s3", "cat", D + timedelta(days=2))]).errors == []
        after = store._con.execute("SELECT user_id, user_no FROM user_numbers ORDER BY user_no").fetchall()
    finally:
        store.close()
    assert new == {date(2024, 5, 1): 1}
    assert veterans == {date(2024, 5, 1): 1, date(2024, 5, 2): 1, date(2024, 5, 3): 1}
    assert numbers == [("ann", 1), ("bob", 2), ("vet", 3)]
    assert after == [*numbers, ("cat", 4)]


def test_a_duckdb_batch_of_new_users_inserts_them_and_one_naming_a_stored_user_merges(tmp_path):
    # A batch whose users have no row yet is inserted plainly; one naming a stored user (by
    # user_md5) takes the merge, newest registration winning. A plain insert of a stored user
    # would break the primary key, and the batch would be refused.
    from parley.ingest.service import ingest_batch

    store = DuckDBStore(tmp_path / "parley.duckdb")
    day = timedelta(days=1)

    def store_in(org, *events):
        assert ingest_batch(store, org=org, batch=list(events)).errors == []

    def state():
        rows = "SELECT org, user_id, registered_at, user_md5 FROM user_state ORDER BY org, user_id"
        return [(org, who, at.day, md5) for org, who, at, md5 in store._con.execute(rows).fetchall()]

    def md5(org, who):
        return store._con.execute("SELECT md5_number(?)", [f"{len(org)}:{org}{who}"]).fetchall()[0][0]

    try:
        store_in("acme", user("ann", D + day, ts=D + day), user("bob", D + 2 * day, ts=D + 2 * day))  # both new
        store_in("globex", user("ann", D + 4 * day))  # another org's ann: new too
        # ann stored: merged, her later registration wins; cat new, in the same batch.
        store_in("acme", user("ann", D + 5 * day, ts=D + 5 * day), user("cat", D + 3 * day))
        store_in("acme", user("bob", D, ts=D))  # older than bob's stored registration: kept as it was
        store_in("acme", user("dan", D + 6 * day))
        assert state() == [
            ("acme", "ann", 6, md5("acme", "ann")),
            ("acme", "bob", 3, md5("acme", "bob")),
            ("acme", "cat", 4, md5("acme", "cat")),
            ("acme", "dan", 7, md5("acme", "dan")),
            ("globex", "ann", 5, md5("globex", "ann")),
        ]
    finally:
        store.close()


def test_a_duckdb_store_whose_user_state_lacks_user_md5_makes_it_again_when_opened(tmp_path):
    import duckdb

    from parley.ingest.service import ingest_batch

    path = tmp_path / "parley.duckdb"
    store = DuckDBStore(path)
    assert ingest_batch(store, org="acme", batch=[user("ann", D), user("bob", D + timedelta(days=1))]).errors == []
    assert (
        ingest_batch(store, org="acme", batch=[user("ann", D + timedelta(days=2), ts=D + timedelta(days=2))]).errors
        == []
    )
    store.close()
    with duckdb.connect(str(path)) as con:  # as Parley 7 left it
        con.execute("ALTER TABLE user_state DROP COLUMN user_md5")
        con.execute("UPDATE parley_meta SET value = '7' WHERE key = 'schema_version'")
    store = DuckDBStore(path)
    rows = "SELECT user_id, registered_at, user_md5 = md5_number('4:acme' || user_id) FROM user_state ORDER BY 1"
    try:
        remade = [(who, at.day, same) for who, at, same in store._con.execute(rows).fetchall()]
        # A stored user's later registration and a new user, each found (or not) by user_md5.
        batch = [user("bob", D + timedelta(days=4), ts=D + timedelta(days=4)), user("cat", D)]
        assert ingest_batch(store, org="acme", batch=batch).errors == []
        after = [(who, at.day, same) for who, at, same in store._con.execute(rows).fetchall()]
    finally:
        store.close()
    assert remade == [("ann", 3, True), ("bob", 2, True)]
    assert after == [("ann", 3, True), ("bob", 5, True), ("cat", 1, True)]


def test_reorder_rewrites_in_time_order_the_activity_of_orgs_that_grew_by_an_eighth(tmp_path):
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    store = DuckDBStore(tmp_path / "parley.duckdb")

    def sessions(org, hours):
        return [session(f"{org}-{h}", "u1", D + timedelta(hours=h)) for h in hours]

    def stored_hours(org):
        sql = "SELECT active_at FROM user_activity WHERE org = ? ORDER BY rowid"
        rows = store._con.execute(sql, [org]).fetchall()
        return [int((at.replace(tzinfo=UTC) - D) / timedelta(hours=1)) for (at,) in rows]

    def store_in(org, events):
        assert ingest_batch(store, org=org, batch=events).errors == []

    try:
        store_in("acme", [user("u1", D - timedelta(days=10)), *sessions("acme", [16, 1, 4, 2])])
        store_in("globex", sessions("globex", [3, 1, 2]))
        store_in("acme", sessions("acme", [5, 9, 3, 7, 6, 10, 8, 12, 11, 13, 15, 14]))
        assert stored_hours("acme") == [16, 1, 4, 2, 5, 9, 3, 7, 6, 10, 8, 12, 11, 13, 15, 14]  # as they came
        store.reorder()
        assert stored_hours("acme") == list(range(1, 17))
        assert stored_hours("globex") == [1, 2, 3]
        store_in("acme", sessions("acme", [18]))
        store.reorder()
        assert stored_hours("acme")[-2:] == [16, 18]  # one new row of 17: not worth a rewrite yet
        store_in("acme", sessions("acme", [17]))
        store_in("globex", sessions("globex", [0]))
        store.reorder()
        assert stored_hours("acme")[-3:] == [16, 18, 17]  # two new of 18
        assert stored_hours("globex") == [0, 1, 2, 3]  # one new of 4
        store_in("acme", sessions("acme", [0]))
        store_in("acme", [trace("t1", D + timedelta(hours=19), session_id="late")])  # its session comes later
        store.reorder()
        assert stored_hours("acme") == list(range(20))  # four new of 20: the rows since the last rewrite count
        store_in("acme", [session("late", "u2", D + timedelta(hours=20))])
        cohorts = store._con.execute(
            "SELECT u.user_id, a.active_at FROM user_activity a LEFT JOIN user_numbers u USING (org, user_no)"
            " WHERE a.org = 'acme' AND a.active_at > ?",
            [(D + timedelta(hours=18)).replace(tzinfo=None)],
        ).fetchall()
        assert sorted((u, at.hour) for u, at in cohorts) == [("u2", 19), ("u2", 20)]  # the trace's user came
    finally:
        store.close()


def test_reorder_rewrites_sessions_and_traces_in_time_order_and_later_batches_find_them(tmp_path):
    # A load may bring a user's sessions and traces together, their times interleaved; a
    # later batch's look-ups read the stored rows of the day before it first (``_recent``),
    # which the zone maps of ``ts`` narrow to a few row groups only once the rows are in
    # time order. The rows rewritten are found by the look-ups all the same.
    from parley.ingest.service import ingest_batch

    store = DuckDBStore(tmp_path / "parley.duckdb")
    hour = timedelta(hours=1)

    def stored_hours(table, org):
        rows = store._con.execute(f"SELECT ts FROM {table} WHERE org = ? ORDER BY rowid", [org]).fetchall()
        return [int((at.replace(tzinfo=UTC) - D) / hour) for (at,) in rows]

    def store_in(org, events):
        assert ingest_batch(store, org=org, batch=events).errors == []

    def cost(who):
        span = {"start": D.replace(tzinfo=None), "end": (D + timedelta(days=1)).replace(tzinfo=None)}
        return store.user_cost(org="acme", user_id=who, prices=[], **span)

    try:
        store_in(
            "acme", [session(f"s{h}", who, D + h * hour) for h, who in ((5, "ann"), (1, "ann"), (4, "bob"), (2, "bob"))]
        )
        store_in("acme", [trace(f"t{h}", D + h * hour, session_id=s) for h, s in ((6, "s5"), (3, "s1"), (7, "s2"))])
        store_in("globex", [session("s3", "cat", D + 3 * hour), session("s0", "cat", D)])
        assert (stored_hours("sessions", "acme"), stored_hours("traces", "acme")) == ([5, 1, 4, 2], [6, 3, 7])
        store.reorder()
        assert (stored_hours("sessions", "acme"), stored_hours("traces", "acme")) == ([1, 2, 4, 5], [3, 6, 7])
        assert stored_hours("sessions", "globex") == [0, 3]
        # A trace naming a session rewritten, observations naming traces rewritten and the new one.
        later = D + 8 * hour
        store_in("acme", [trace("t8", later, session_id="s4"), observation("o8", "t8", later, cost=2)])
        store_in("acme", [observation("o6", "t6", later, cost=3), observation("o7", "t7", later, cost=5)])
        # Each trace's cost counts for its session's user: ann's t6 (s5); bob's t8 (s4) and t7 (s2).
        assert (cost("ann"), cost("bob"), cost("cat")) == ((3 * 10**12, {}), (7 * 10**12, {}), (0, {}))
    finally:
        store.close()


def test_a_duckdb_store_made_before_user_cost_days_fills_them_when_opened(tmp_path):
    from parley.ingest.service import ingest_batch

    path = tmp_path / "parley.duckdb"
    day = {"org": "acme", "user_id": "ann", "prices": [("gpt-4o", 2_500_000, 10_000_000)]}
    whole = {"start": D.replace(tzinfo=None), "end": (D + timedelta(days=1)).replace(tzinfo=None)}
    stored = [
        session("s1", "ann", D),
        trace("t1", D + timedelta(hours=1), session_id="s1"),  # ann's through her session
        observation("o1", "t1", D, cost=1.5),
        observation("o2", "t1", D, model="gpt-4o", tokens_in=1000, tokens_out=100),  # 2,500,000,000 + 1,000,000,000
        observation("o3", "t2", D, cost=4),  # its trace comes after the store is opened again
        trace("t3", D + timedelta(hours=2), session_id="s2"),  # its session too
        observation("o4", "t3", D, cost=8),
    ]
    store = _reopened_without(path, stored, "user_cost_days", "cost_pending")
    try:
        assert store.user_cost(**day, **whole) == (1_500_000_000_000 + 3_500_000_000, {})
        later = [trace("t2", D + timedelta(hours=3), user_id="ann"), session("s2", "ann", D)]
        assert ingest_batch(store, org="acme", batch=later).errors == []
        assert store.user_cost(**day, **whole) == (13_500_000_000_000 + 3_500_000_000, {})
    finally:
        store.close()


def test_utc_days_whole_and_cut():
    from parley.store.duckdb_sql import utc_days

    def day(n: int) -> date:
        return date(2024, 5, n)

    def at(n: int, *clock: int) -> datetime:
        return datetime(2024, 5, n, *clock)

    end_of = (23, 59, 59, 999_999)
    assert utc_days(at(1), at(3, *end_of)) == ([day(1), day(2), day(3)], [])
    assert utc_days(at(1, 13, 30), at(4, 5, 15)) == ([day(2), day(3)], [day(1), day(4)])
    assert utc_days(at(4, 6), at(4, 18)) == ([], [day(4)])
    assert utc_days(at(1), at(2)) == ([day(1)], [day(2)])  # the end's midnight is an instant of day 2


def test_a_cost_steps_changes_run_only_when_the_step_has_rows(tmp_path):
    # A trace or session that completes no waiting observation leaves its step empty, a
    # batch of known users needs no numbering; the statements that would change nothing
    # then are not run (DuckDB would plan each one).
    import duckdb

    from parley.store.duckdb import _run
    from parley.store.duckdb_state import IfRows, IfWrote, lookups_sql, record_cost_sql

    con = duckdb.connect(str(tmp_path / "steps.duckdb"))
    con.execute("CREATE TABLE log (n INTEGER)")
    con.execute("CREATE TEMP TABLE step (n INTEGER)")
    guarded = IfRows("step", ("INSERT INTO log SELECT n FROM step", "INSERT INTO log VALUES (-1)"))
    _run(con, ["INSERT INTO log VALUES (0)", guarded])
    assert con.execute("SELECT n FROM log ORDER BY n").fetchall() == [(0,)]  # no -1: not run
    con.execute("INSERT INTO step VALUES (7)")
    _run(con, [guarded])
    assert con.execute("SELECT n FROM log ORDER BY n").fetchall() == [(-1,), (0,), (7,)]

    # A statement that writes no row leaves what it guards unrun; one that writes a row runs it.
    def writes(above: int) -> IfWrote:
        return IfWrote(f"INSERT INTO log SELECT n * 10 FROM step WHERE n > {above}", ("INSERT INTO log VALUES (-2)",))

    _run(con, [writes(7)])  # the step holds 7 alone
    assert con.execute("SELECT n FROM log ORDER BY n").fetchall() == [(-1,), (0,), (7,)]
    _run(con, [writes(6)])
    assert con.execute("SELECT n FROM log ORDER BY n").fetchall() == [(-2,), (-1,), (0,), (7,), (70,)]
    # Every cost step guards what it changes by the rows its step wrote, and always drops its table.
    for table in ("observations", "traces", "sessions"):
        changes, drop = record_cost_sql(table, f"new_{table}")
        assert changes.statement.startswith("CREATE TEMP TABLE cost_step") and drop == "DROP TABLE cost_step"
        assert isinstance(changes, IfWrote)
        assert any("INSERT INTO user_cost_days" in statement for statement in changes.statements)
    # Numbering a batch's users is guarded too (their numbers are looked up first).
    lookups, _ = lookups_sql({"sessions": "new_sessions"})
    numbering = [s for s in lookups if isinstance(s, IfRows)]
    assert len(numbering) == 1 and any("INSERT INTO user_numbers" in s for s in numbering[0].statements)


def test_folding_a_crowded_day_keeps_the_users_cost(tmp_path):
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore
    from parley.store.duckdb_state import FOLD_ROWS

    store = DuckDBStore(tmp_path / "parley.duckdb")
    store.fold_every_observations = 10**9  # no fold until this test asks for one
    prices = [("gpt-4o", 2_500_000, 10_000_000)]  # pico-dollars per input and output token
    span = {"org": "acme", "user_id": "ann", "start": D.replace(tzinfo=None), "prices": prices}
    span["end"] = span["start"] + timedelta(days=1) - timedelta(microseconds=1)
    try:
        assert ingest_batch(store, org="acme", batch=[trace("t", D + timedelta(hours=5), user_id="ann")]).errors == []
        expected = 0
        for i in range(1, 31):  # one batch each: 15 rows of ann's day and model gpt-4o, 15 without a model
            if i % 2 == 0:
                obs = observation(f"o{i}", "t", D, cost=i / 100)
                expected += i * 10**10
            else:
                obs = observation(f"o{i}", "t", D, model="gpt-4o", tokens_in=1000 * i, tokens_out=10 * i)
                expected += 1000 * i * 2_500_000 + 10 * i * 10_000_000
            assert ingest_batch(store, org="acme", batch=[obs]).errors == []
        for i in range(3):
            unknown = observation(f"u{i}", "t", D, model="house-model", tokens_in=7)
            assert ingest_batch(store, org="acme", batch=[unknown]).errors == []
        rows = "SELECT count(*) FROM user_cost_days"
        assert store._fetchall(rows, {})[0][0] == 33
        assert store.user_cost(**span) == (expected, {"house-model": (3, 21, 0)})
        with store._write_lock:
            store._fold_cost_days()
        assert store._fetchall(rows, {})[0][0] == 5  # one for each model of more than FOLD_ROWS rows; house-model's 3
        assert store.user_cost(**span) == (expected, {"house-model": (3, 21, 0)})
        # A range that cuts the day reads the folded day's observations (the trace is at 05:00).
        morning = span["start"] + timedelta(hours=4), span["start"] + timedelta(hours=6)
        assert store.user_cost(**{**span, "start": morning[0], "end": morning[1]}) == (
            expected,
            {"house-model": (3, 21, 0)},
        )
        assert store.user_cost(**{**span, "start": morning[1]}) == (0, {})
        # Folding happens by itself once enough observations are stored.
        store.fold_every_observations = FOLD_ROWS + 2
        for i in range(FOLD_ROWS + 2):
            more = observation(f"m{i}", "t", D, cost=1)
            assert ingest_batch(store, org="acme", batch=[more]).errors == []
        assert store._fetchall(rows, {})[0][0] == 5
        assert store.user_cost(**span) == (expected + (FOLD_ROWS + 2) * 10**12, {"house-model": (3, 21, 0)})
    finally:
        store.close()


def test_folds_wait_for_a_share_of_the_cost_days_rows(tmp_path):
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"
    rows = "SELECT count(*) FROM user_cost_days"
    ten_days = {"org": "acme", "user_id": "ann", "prices": [], "start": D.replace(tzinfo=None)}
    ten_days["end"] = ten_days["start"] + timedelta(days=10) - timedelta(microseconds=1)

    def one_by_one(store, day: int, first: int, count: int) -> None:
        for i in range(first, first + count):
            assert ingest_batch(store, org="acme", batch=[observation(f"x{i}", f"t{day}", D, cost=1)]).errors == []

    store = DuckDBStore(path)
    store.fold_every_observations = 10**9
    try:
        # Ten days of ann's, a trace and an observation each: ten rows no fold can join.
        days = [D + timedelta(days=i) for i in range(10)]
        batch = [trace(f"t{i}", at, user_id="ann") for i, at in enumerate(days)]
        batch += [observation(f"o{i}", f"t{i}", at, cost=1) for i, at in enumerate(days)]
        assert ingest_batch(store, org="acme", batch=batch).errors == []
        with store._write_lock:
            store._fold_cost_days()
        assert store._fetchall(rows, {})[0][0] == 10
        # 2 observations would be due, but the table's 10 rows ask for 10 (a share of 1).
        store.fold_every_observations, store.fold_share = 2, 1
        one_by_one(store, 0, 0, 9)
        assert store._fetchall(rows, {})[0][0] == 19  # a row a batch, none folded yet
        one_by_one(store, 0, 9, 1)
        assert store._fetchall(rows, {})[0][0] == 10  # day 0's 11 rows folded into one
        assert store.user_cost(**ten_days) == (20 * 10**12, {})
    finally:
        store.close()
    # A store opened again counts the rows it holds.
    store = DuckDBStore(path)
    store.fold_every_observations, store.fold_share = 2, 1
    try:
        one_by_one(store, 1, 10, 9)
        assert store._fetchall(rows, {})[0][0] == 19
        one_by_one(store, 1, 19, 1)
        assert store._fetchall(rows, {})[0][0] == 10
        assert store.user_cost(**ten_days) == (30 * 10**12, {})
    finally:
        store.close()


def test_cost_days_of_an_org_whose_name_is_not_ascii(store):
    from parley.ingest.service import ingest_batch

    # The day's key counts the org's length in bytes, in Python and in SQL alike.
    batch = [trace("t", D, user_id="ann"), observation("o", "t", D, cost=2)]
    assert ingest_batch(store, org="zürich-ö", batch=batch).errors == []
    start = D.replace(tzinfo=None)
    whole_day = {"start": start, "end": start + timedelta(days=1) - timedelta(microseconds=1)}
    for org, expected in (("zürich-ö", 2 * 10**12), ("zürich", 0)):
        assert store.user_cost(org=org, user_id="ann", prices=[], **whole_day) == (expected, {}), org


# user_cost_days as Parley wrote it before: without each day's observations, then found by
# an index on each user's day.
_UNCOSTED = "uncosted STRUCT(model VARCHAR, input_tokens HUGEINT, output_tokens HUGEINT, n BIGINT)[] NOT NULL"
_EARLIER_COST_DAYS = [
    f"CREATE TABLE user_cost_days (day_key VARCHAR NOT NULL, cost_pusd HUGEINT NOT NULL, {_UNCOSTED})",
    f"CREATE TABLE user_cost_days (day_key VARCHAR NOT NULL, cost_pusd HUGEINT NOT NULL, {_UNCOSTED},"
    " observations STRUCT(traced_at TIMESTAMP, model VARCHAR, input_tokens BIGINT, output_tokens BIGINT,"
    " cost_pusd BIGINT)[] NOT NULL); CREATE INDEX user_cost_days_key ON user_cost_days (day_key)",
]


@pytest.mark.parametrize("ddl", _EARLIER_COST_DAYS, ids=["without-observations", "by-day-key"])
def test_cost_days_written_by_an_earlier_parley_are_made_again(tmp_path, ddl):
    stored = [trace("t", D + timedelta(hours=5), user_id="ann"), observation("o", "t", D, cost=3)]
    store = _reopened_without(tmp_path / "parley.duckdb", stored, "user_cost_days", "cost_pending")
    path = store.path
    with store._write_lock:
        store._con.execute("DROP TABLE user_cost_days")
        store._con.execute(ddl)
    store.close()
    from parley.store.duckdb import DuckDBStore

    store = DuckDBStore(path)
    try:
        start = D.replace(tzinfo=None)
        cut = {"start": start + timedelta(hours=4), "end": start + timedelta(hours=6)}
        assert store.user_cost(org="acme", user_id="ann", prices=[], **cut) == (3 * 10**12, {})
        assert "user_md5" in {
            name for (name,) in store._fetchall("SELECT name FROM pragma_table_info('user_cost_days')", {})
        }
    finally:
        store.close()


@pytest.mark.parametrize("name", ["user-cohorts-over-time", "user-cost", "user-feedback"])
def test_each_path_is_served_without_its_trailing_slash_too_not_redirected(client, ingest, admin, name):
    ingest(*one_of_each(D + timedelta(hours=12)))
    url = f"/api/ai-analytics/orgs/acme/users/u1/{name}"
    params = {"start_date": "2024-05-01", "end_date": "2024-05-01"}
    with_slash = client.get(url + "/", params=params, headers=admin, follow_redirects=False)
    without = client.get(url, params=params, headers=admin, follow_redirects=False)
    assert with_slash.status_code == 200
    assert (without.status_code, without.json()) == (200, with_slash.json())
    expected = {
        "user-cohorts-over-time": {"periods": ["2024-05-01T00:00:00Z"], "new_users": [1], "veteran_users": [0]},
        "user-cost": {"total_cost": 0.25},
        "user-feedback": [[{"period": "2024-05-01T00:00:00Z", "feedback_count": 1, "positive": 1, "negative": 0}]],
    }
    assert with_slash.json() == expected[name]  # u1, registered that day, its generation and its feedback
