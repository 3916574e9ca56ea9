"""GET .../metrics/assistants_usage (seed 000, contract 5.1)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import bearer
from tests.factories import WS, WS_OTHER, event, iso, member
from tests.series_reference import day_bounds

URL = f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage"


def message(n: int, role: str, at: datetime, name: str | None = None, workspace: str = WS):
    body = {"workspace_id": workspace, "chat_id": 1, "message_id": f"m{n}", "role": role, "created_at": iso(at)}
    if name is not None:
        body["assistant_name"] = name
    return event("message.create", body, ts=at)


def usage(client, headers, **params):
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_hand_worked_example(client, ingest, admin):
    d = datetime(2024, 1, 1, tzinfo=UTC)
    ingest(
        message(1, "assistant", d + timedelta(hours=1), "GPT-4"),
        message(2, "assistant", d + timedelta(days=2, hours=23), "GPT-4"),
        message(3, "assistant", d + timedelta(days=2), "Claude"),
        message(4, "assistant", d + timedelta(days=1), ""),  # empty name: unknown
        message(5, "assistant", d + timedelta(days=1)),  # no name: unknown
        message(6, "user", d + timedelta(days=1), "GPT-4"),  # not an interaction
        message(7, "tool", d + timedelta(days=1), "Claude"),
        message(8, "assistant", d + timedelta(days=3), "GPT-4"),  # after the range
        message(9, "assistant", d - timedelta(microseconds=1), "GPT-4"),  # before it
        message(10, "assistant", d, "Other WS", workspace=WS_OTHER),
    )
    assert usage(client, admin, from_date="2024-01-01", to_date="2024-01-03") == {
        "Claude": [{"x": "2024-01-03", "y": 1}, {"x": "2024-01-02", "y": 0}, {"x": "2024-01-01", "y": 0}],
        "GPT-4": [{"x": "2024-01-03", "y": 1}, {"x": "2024-01-02", "y": 0}, {"x": "2024-01-01", "y": 1}],
        "unknown": [{"x": "2024-01-03", "y": 0}, {"x": "2024-01-02", "y": 2}, {"x": "2024-01-01", "y": 0}],
    }


def test_no_interaction_is_an_empty_object(client, admin):
    assert usage(client, admin, from_date="2024-01-01", to_date="2024-01-03") == {}


def test_default_range_is_30_days_ending_today(client, ingest, admin):
    # The test clock is 2024-06-15T12:00Z.
    ingest(
        message(1, "assistant", datetime(2024, 6, 15, 11, tzinfo=UTC), "A"),
        message(2, "assistant", datetime(2024, 5, 17, 0, tzinfo=UTC), "A"),
        message(3, "assistant", datetime(2024, 5, 16, 23, 59, tzinfo=UTC), "A"),
    )
    series = usage(client, admin)["A"]
    assert len(series) == 30
    assert (series[0], series[-1]) == ({"x": "2024-06-15", "y": 1}, {"x": "2024-05-17", "y": 1})


def test_days_are_local_days_in_tz(client, ingest, admin):
    # 2024-03-10T04:30Z is 23:30 on the 9th in New York, 10:00 on the 10th in Kolkata.
    ingest(message(1, "assistant", datetime(2024, 3, 10, 4, 30, tzinfo=UTC), "A"))
    for tz, day in (("UTC", "2024-03-10"), ("America/New_York", "2024-03-09"), ("Asia/Kolkata", "2024-03-10")):
        series = usage(client, admin, from_date="2024-03-09", to_date="2024-03-11", tz=tz)["A"]
        assert [p["x"] for p in series if p["y"]] == [day], tz


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_matches_a_plain_python_reference_across_dst(client, ingest, admin, tz):
    rng = random.Random(5)
    names = ["Alpha", "Beta", "", None, "Gamma", "Ümlaut"]
    start = datetime(2024, 3, 1, tzinfo=UTC)
    sent = []
    for _ in range(800):
        at = start + timedelta(seconds=rng.randrange(22 * 86_400))
        role = rng.choice(["assistant", "assistant", "user", "tool"])
        name = rng.choice(names)
        sent.append((role, name, at))
    batch = [message(n, role, at, name) for n, (role, name, at) in enumerate(sent)]
    for i in range(0, len(batch), 400):
        ingest(*batch[i : i + 400])
    zone = ZoneInfo(tz)
    lo, hi = day_bounds("2024-03-05", "2024-03-18", zone)
    days = [(lo + timedelta(days=i)).astimezone(zone).date().isoformat() for i in range(14)]
    counts: dict[str, Counter] = {}
    for role, name, at in sent:
        if role == "assistant" and lo <= at <= hi:
            counts.setdefault(name or "unknown", Counter())[at.astimezone(zone).date().isoformat()] += 1
    expected = {name: [{"x": day, "y": c[day]} for day in reversed(days)] for name, c in counts.items()}
    assert usage(client, admin, from_date="2024-03-05", to_date="2024-03-18", tz=tz) == expected


@pytest.mark.parametrize(
    ("role", "scopes", "status"),
    [
        ("superadmin", [], 200),
        ("admin", [], 200),
        ("controller", [], 200),
        ("curator", [], 200),
        ("basic", [], 403),
        ("basic", ["workspace_metrics:read"], 403),  # the role itself is refused
    ],
)
def test_role_matrix(client, ingest, member_key, role, scopes, status):
    ingest(member(2, role, scopes=scopes))
    assert client.get(URL, headers=bearer(member_key(2))).status_code == status


def test_wrong_org_or_workspace_is_404_and_keys_are_checked(client, ingest, admin, member_key, ingest_key):
    assert client.get(f"/api/v2/org/globex/workspace/{WS}/metrics/assistants_usage", headers=admin).status_code == 404
    assert (
        client.get(f"/api/v2/org/acme/workspace/{WS_OTHER}/metrics/assistants_usage", headers=admin).status_code == 404
    )
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=bearer(ingest_key)).status_code == 403
    assert client.get(URL, headers=bearer(member_key(42))).status_code == 403


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from_date": "2024-02-01", "to_date": "2024-01-01"}, "from_date is after to_date"),
        ({"from_date": "2023-01-01", "to_date": "2024-06-01"}, "spans more than 366 days"),
        ({"tz": "Nowhere/Town"}, "unknown time zone"),
        ({"to_date": "2024-06-01T00:00:00"}, "needs an offset"),
    ],
)
def test_bad_parameters_are_400(client, admin, params, reason):
    response = client.get(URL, params=params, headers=admin)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
