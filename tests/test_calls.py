"""GET /analytics/calls/by-assistant (seed 002, contract 5.3)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from tests.conftest import NOW
from tests.factories import WS_OTHER, call, days, event

URL = "/analytics/calls/by-assistant"
D = datetime(2024, 5, 1, tzinfo=UTC)


def get(client, headers, **params):
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Calls by assistant fetched successfully"
    return body["data"]["assistants"]


def test_hand_worked_example(client, ingest, admin):
    ingest(
        event("assistant.upsert", {"assistant_id": "a1", "name": "Sales Bot"}),
        event("assistant.upsert", {"assistant_id": "a9", "name": "Idle Bot"}),  # no calls: not listed
        call("c1", "a1", D + timedelta(hours=9), duration=301.2, id="c1-first"),
        call("c2", "a1", D + timedelta(hours=10), ended=D + timedelta(hours=10, minutes=2, seconds=30)),
        call("c3", "a1", D + timedelta(hours=11)),  # no duration: counts, adds 0
        call("c4", "a2", D + timedelta(hours=12), name="Support Bot", duration=600),
        call("c5", "a1", D - timedelta(seconds=1), duration=999),  # before the range
        call("c6", "a3", D + timedelta(days=2) - timedelta(microseconds=1), name="Zeta"),  # last instant
        call("c7", "a4", D + timedelta(days=1), name="Alpha"),
        call("c8", "a1", D + timedelta(days=2), duration=999),  # just after the range
        call("c9", "a1", D + timedelta(hours=1), duration=999, workspace=WS_OTHER),  # another workspace
    )
    # The same call re-sent under a new event id is the same call: the first one stands.
    again = ingest(call("c1", "a1", D + timedelta(hours=9), duration=100, ts=D + days(1), id="c1-again"))
    assert again["successes"] == [{"id": "c1-again", "status": 200}]
    assistants = get(client, admin, start_date="2024-05-01", end_date="2024-05-02")
    assert assistants == [
        {
            "assistant_id": "a2",
            "assistant_name": "Support Bot",
            "total_calls": 1,
            "total_duration_minutes": 10.0,
            "total_duration_hours": 0.17,
            "avg_duration_minutes": 10.0,
        },
        {
            # 301.2 s + 150 s + 0 = 451.2 s = 7.52 min = 0.12533 h; 7.52 / 3 = 2.5067
            "assistant_id": "a1",
            "assistant_name": "Sales Bot",
            "total_calls": 3,
            "total_duration_minutes": 7.52,
            "total_duration_hours": 0.13,
            "avg_duration_minutes": 2.51,
        },
        {
            "assistant_id": "a4",
            "assistant_name": "Alpha",
            "total_calls": 1,
            "total_duration_minutes": 0.0,
            "total_duration_hours": 0.0,
            "avg_duration_minutes": 0.0,
        },
        {
            "assistant_id": "a3",
            "assistant_name": "Zeta",
            "total_calls": 1,
            "total_duration_minutes": 0.0,
            "total_duration_hours": 0.0,
            "avg_duration_minutes": 0.0,
        },
    ]


def test_datetime_bounds_are_inclusive_and_need_an_offset(client, ingest, admin):
    ingest(call("c1", "a1", D, duration=60), call("c2", "a1", D + timedelta(hours=1), duration=60))
    assert (
        get(client, admin, start_date="2024-05-01T10:00:00+10:00", end_date="2024-05-01T00:00:00Z")[0]["total_calls"]
        == 1
    )  # 10:00+10:00 is 00:00Z: both ends inclusive
    assert (
        get(client, admin, start_date="2024-05-01T00:00:00.000001Z", end_date="2024-05-01T01:00:00Z")[0]["total_calls"]
        == 1
    )
    response = client.get(URL, params={"start_date": "2024-05-01T00:00:00"}, headers=admin)
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "message": "start_date: datetime '2024-05-01T00:00:00' needs an offset (Z or +02:00)",
    }


def test_an_assistant_with_no_name_anywhere_is_named_by_its_id(client, ingest, admin):
    ingest(call("c1", "a-nameless", D, duration=60), call("c2", "a-blank", D, name="", duration=60))
    names = {a["assistant_id"]: a["assistant_name"] for a in get(client, admin, start_date="2024-05-01")}
    assert names == {"a-nameless": "a-nameless", "a-blank": "a-blank"}


def test_a_call_name_is_the_latest_call_s_when_no_assistant_is_registered(client, ingest, admin):
    ingest(
        call("c1", "a1", D, name="Old Name", duration=60),
        call("c2", "a1", D + timedelta(hours=1), name="New Name", duration=60),
        call("c3", "a1", D + timedelta(hours=2), duration=60),
    )
    assert get(client, admin, start_date="2024-05-01")[0]["assistant_name"] == "New Name"


def test_defaults_are_the_last_30_days_ending_now(client, ingest, admin):
    ingest(
        call("in-1", "a1", NOW - days(29), duration=60),
        call("in-2", "a1", NOW - days(30) + timedelta(seconds=1), duration=60),
        call("out-old", "a1", NOW - days(31), duration=60),
        call("out-future", "a1", NOW + timedelta(hours=1), duration=60),
    )
    assert [a["total_calls"] for a in get(client, admin)] == [2]
    # Only an end: the 30 days before it.
    end = (NOW - days(31)).date().isoformat()
    assert [a["total_calls"] for a in get(client, admin, end_date=end)] == [1]


def test_no_calls_gives_an_empty_list(client, admin):
    assert get(client, admin) == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"start_date": "2024-05-02", "end_date": "2024-05-01"}, "start_date is after end_date"),
        ({"start_date": "yesterday"}, "start_date: 'yesterday' is neither a date"),
        ({"end_date": "2024-02-30"}, "end_date: '2024-02-30' is not a valid date"),
        ({"start_date": "2023-01-01", "end_date": "2024-01-03"}, "spans more than 366 days"),
    ],
)
def test_bad_ranges_are_400_in_the_seed_envelope(client, admin, params, reason):
    response = client.get(URL, params=params, headers=admin)
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert reason in body["message"]
    assert set(body) == {"success", "message"}


def test_a_whole_leap_year_is_within_the_limit(client, admin):
    assert get(client, admin, start_date="2024-01-01", end_date="2024-12-31") == []


def test_matches_a_plain_python_reference_over_generated_calls(client, ingest, admin):
    rng = random.Random(2024)
    assistants = {f"as-{i}": f"Bot {i}" for i in range(5)}
    events, calls = [], []
    for n in range(600):
        assistant = rng.choice(list(assistants))
        started = D + timedelta(seconds=rng.randrange(60 * 86_400))
        roll = rng.random()
        if roll < 0.5:
            duration = round(rng.uniform(0, 900), rng.choice((0, 1, 3)))
            events.append(call(f"c{n}", assistant, started, name=assistants[assistant], duration=duration))
            seconds = Fraction(str(duration))
        elif roll < 0.8:
            ended = started + timedelta(seconds=rng.randrange(1, 900), microseconds=rng.randrange(1_000_000))
            events.append(call(f"c{n}", assistant, started, name=assistants[assistant], ended=ended))
            seconds = Fraction((ended - started) // timedelta(microseconds=1), 1_000_000)
        else:
            events.append(call(f"c{n}", assistant, started, name=assistants[assistant]))
            seconds = Fraction(0)
        calls.append((assistant, started, seconds))
    for i in range(0, len(events), 100):
        ingest(*events[i : i + 100])

    for _ in range(8):
        lo = D + timedelta(days=rng.randrange(0, 40))
        hi = lo + timedelta(days=rng.randrange(0, 30), hours=rng.randrange(24))
        totals: dict[str, list] = defaultdict(lambda: [0, Fraction(0)])
        for assistant, started, seconds in calls:
            if lo <= started <= hi:
                totals[assistant][0] += 1
                totals[assistant][1] += seconds
        expected = [
            {
                "assistant_id": a,
                "assistant_name": assistants[a],
                "total_calls": n,
                "total_duration_minutes": float(round(s / 60, 2)),
                "total_duration_hours": float(round(s / 3600, 2)),
                "avg_duration_minutes": float(round(s / 60 / n, 2)),
            }
            for a, (n, s) in sorted(totals.items(), key=lambda kv: (-kv[1][1], assistants[kv[0]], kv[0]))
        ]
        assert get(client, admin, start_date=lo.isoformat(), end_date=hi.isoformat()) == expected
