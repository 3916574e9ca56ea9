"""Times at the edges of what Parley stores, through every endpoint that takes a range.

Ingestion accepts instants from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z.
An event on either edge is counted by a range naming its local day, in any zone whose
days there can be named, and a range no event can fall in is a 400 with its reason,
never a 500. An event of 2200 counts on its own day on both engines (ClickHouse's
``toDate`` would put it in 2020).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.binding import bind_query

from parley.store.clickhouse import http_params
from tests.factories import WS, iso, one_of_each

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
FAR = datetime(2200, 6, 4, 5, 30, tzinfo=UTC)  # a Wednesday
ORG = "/api/ai-analytics/orgs/acme/users/u1"
COHORTS, FEEDBACK, COST = f"{ORG}/user-cohorts-over-time/", f"{ORG}/user-feedback/", f"{ORG}/user-cost/"
USAGE = f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage"
CHATS = f"/api/v2/w/{WS}/chats"
OUTSIDE = "is outside the times Parley stores (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)"


def _get(client, headers, path: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _calls(client, headers, **params: str) -> list[tuple[str, int, float]]:
    body = _get(client, headers, "/analytics/calls/by-assistant", **params)
    return [(a["assistant_id"], a["total_calls"], a["total_duration_minutes"]) for a in body["data"]["assistants"]]


def _chats_total(client, headers, **params: str) -> int:
    return _get(client, headers, CHATS, pageSize="1", **params)["total"]


def _created_at(moment: datetime) -> str:
    return json.dumps({"field": "createdAt", "op": "eq", "value": iso(moment)})


def test_the_first_instant_is_counted_on_its_day(client, ingest, admin):
    ingest(*one_of_each(EARLIEST))
    day = {"start_date": "0001-01-01", "end_date": "0001-01-01"}
    assert _calls(client, admin, **day) == [("a1", 1, 1.0)]
    # No start: the default 30 days are cut at the first instant, not a 500.
    assert _calls(client, admin, end_date="0001-01-05") == [("a1", 1, 1.0)]
    assert _calls(client, admin, start_date="0001-01-02", end_date="0001-01-05") == []
    # In Tokyo the instant is 09:18:59 of 0001-01-01 (the zone's first offset, +09:18:59);
    # the day's first instant, 0000-12-31T14:41:01Z, is cut to the first stored one.
    tokyo = _get(client, admin, USAGE, from_date="0001-01-01", to_date="0001-01-02", tz="Asia/Tokyo")
    assert tokyo == {"data": {"Helper": [{"x": "0001-01-02", "y": 0}, {"x": "0001-01-01", "y": 1}]}}
    cohorts = _get(client, admin, COHORTS, start_date="0001-01-01", end_date="0001-01-02", tz="Asia/Tokyo")
    assert cohorts == {
        "periods": ["0001-01-01T00:00:00+09:18:59", "0001-01-02T00:00:00+09:18:59"],
        "new_users": [1, 0],
        "veteran_users": [0, 0],
    }
    weekly = _get(client, admin, FEEDBACK, start_date="0001-01-01", end_date="0001-01-09", aggregation="weekly")
    assert weekly == [
        [
            {"period": "0001-01-01T00:00:00Z", "feedback_count": 1, "positive": 1, "negative": 0},
            {"period": "0001-01-08T00:00:00Z", "feedback_count": 0, "positive": 0, "negative": 0},
        ]
    ]
    assert _get(client, admin, COST, **day) == {"total_cost": 0.25}
    assert _chats_total(client, admin, filters=_created_at(EARLIEST)) == 1
    assert _chats_total(client, admin, createdAfter=iso(EARLIEST)) == 1


def test_the_last_instant_is_counted_on_its_day(client, ingest, admin):
    ingest(*one_of_each(LATEST))
    day = {"start_date": "9999-12-31", "end_date": "9999-12-31"}
    assert _calls(client, admin, **day) == [("a1", 1, 1.0)]
    assert _calls(client, admin, start_date="9999-12-30", end_date="9999-12-30") == []
    # 18:59:59.999999 of 9999-12-31 in New York; the day's end, in 10000, is cut to the last stored instant.
    new_york = _get(client, admin, USAGE, from_date="9999-12-31", to_date="9999-12-31", tz="America/New_York")
    assert new_york == {"data": {"Helper": [{"x": "9999-12-31", "y": 1}]}}
    # In Tokyo it is already 10000-01-01: 9999-12-31 there ends at 14:59:59.999999Z, before it.
    assert _get(client, admin, USAGE, from_date="9999-12-31", to_date="9999-12-31", tz="Asia/Tokyo") == {"data": {}}
    hourly = _get(client, admin, COHORTS, start_date="9999-12-31T22:00:00Z", end_date=iso(LATEST), aggregation="hourly")
    assert hourly == {
        "periods": ["9999-12-31T22:00:00Z", "9999-12-31T23:00:00Z"],
        "new_users": [0, 1],
        "veteran_users": [0, 0],
    }
    daily = _get(client, admin, FEEDBACK, start_date="9999-12-30", end_date="9999-12-31", tz="America/New_York")
    assert [(p["period"], p["feedback_count"]) for p in daily[0]] == [
        ("9999-12-30T00:00:00-05:00", 0),
        ("9999-12-31T00:00:00-05:00", 1),
    ]
    assert _get(client, admin, COST, **day) == {"total_cost": 0.25}
    assert _chats_total(client, admin, filters=_created_at(LATEST)) == 1
    assert _chats_total(client, admin, createdBefore=iso(LATEST)) == 1


def test_an_event_of_2200_counts_on_its_own_day_hour_and_week(client, ingest, admin):
    ingest(*one_of_each(FAR))
    day = {"start_date": "2200-06-04", "end_date": "2200-06-04"}
    assert _calls(client, admin, **day) == [("a1", 1, 1.0)]
    usage = _get(client, admin, USAGE, from_date="2200-06-04", to_date="2200-06-05")
    assert usage == {"data": {"Helper": [{"x": "2200-06-05", "y": 0}, {"x": "2200-06-04", "y": 1}]}}
    weekly = _get(client, admin, COHORTS, start_date="2200-06-04", end_date="2200-06-10", aggregation="weekly")
    assert weekly == {
        "periods": ["2200-06-02T00:00:00Z", "2200-06-09T00:00:00Z"],
        "new_users": [1, 0],
        "veteran_users": [0, 0],
    }
    # 11:15 in Kathmandu (+05:45): its hour began at 05:15Z.
    hourly = _get(
        client,
        admin,
        FEEDBACK,
        start_date="2200-06-04T04:00:00Z",
        end_date="2200-06-04T06:00:00Z",
        aggregation="hourly",
        tz="Asia/Kathmandu",
    )
    assert [(p["period"], p["feedback_count"]) for p in hourly[0]] == [
        ("2200-06-04T09:00:00+05:45", 0),
        ("2200-06-04T10:00:00+05:45", 0),
        ("2200-06-04T11:00:00+05:45", 1),
    ]
    assert _get(client, admin, COST, **day) == {"total_cost": 0.25}


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (
            "/analytics/calls/by-assistant",
            {"start_date": "0001-01-01T00:00:00+01:00"},
            f"start_date: '0001-01-01T00:00:00+01:00' {OUTSIDE}",
        ),
        (USAGE, {"to_date": "9999-12-31T23:00:00-05:00"}, f"to_date: '9999-12-31T23:00:00-05:00' {OUTSIDE}"),
        (CHATS, {"createdAfter": "9999-12-31T23:00:00-05:00"}, f"createdAfter: '9999-12-31T23:00:00-05:00' {OUTSIDE}"),
        (
            f"{CHATS}/export",
            {"filters": json.dumps({"field": "createdAt", "op": "gte", "value": "0001-01-01T00:30:00+01:00"})},
            f"filters.value: '0001-01-01T00:30:00+01:00' {OUTSIDE}",
        ),
        (
            COHORTS,
            {"start_date": "9999-12-31T12:00:00Z", "end_date": "9999-12-31T23:59:59Z", "tz": "Asia/Tokyo"},
            "the range from start_date to end_date reaches past the years 1 to 9999 in Asia/Tokyo, "
            "where its days could not be named",
        ),
        (
            FEEDBACK,
            {"start_date": "0001-01-01", "end_date": "0001-01-01", "tz": "Asia/Tokyo", "aggregation": "hourly"},
            "the first local hour of the range from start_date to end_date starts before 0001-01-01T00:00:00Z "
            "in Asia/Tokyo, where an hourly series cannot name it",
        ),
    ],
)
def test_a_range_no_stored_time_can_fall_in_is_a_400_with_its_reason(client, admin, path, params, message):
    response = client.get(path, params=params, headers=admin)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body.get("detail", body.get("message")) == message


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(1, 1, 1), "0001-01-01 00:00:00.000000"),
        (datetime(999, 12, 31, 23, 59, 59, 999999), "0999-12-31 23:59:59.999999"),
        (datetime(2024, 5, 1, 23, 59, 59, 999999), "2024-05-01 23:59:59.999999"),
    ],
)
def test_times_reach_a_clickhouse_server_with_four_digit_years_and_their_microseconds(moment, text):
    # clickhouse-connect's own binding of the HTTP adapter's parameters (it renders a
    # datetime with strftime, whose %Y gives "1-01-01", which the server refuses).
    params = http_params({"p0": moment, "p1": "left as it is"})
    assert params["p1"] == "left as it is"  # clickhouse-connect escapes text itself
    _, bound = bind_query("SELECT {p0:DateTime64(6, 'UTC')}", {"p0": params["p0"]})
    assert bound == {"param_p0": text}
