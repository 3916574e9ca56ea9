"""A store on a host whose clock is not in UTC answers as one in UTC, whether the times
it is asked about are naive UTC (as the endpoints pass them) or aware, in any zone.

The host's zone is the ``TZ`` of a process of its own: DuckDB reads it when it starts.
Before times were bound as naive UTC (``dialect.Params.add``), DuckDB on a New York host
counted a call of 10:00Z as started after 10:30Z, and ClickHouse refused an aware bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parley.auth.keys import create_key
from parley.store.port import open_store
from tests.conftest import STORE_KINDS, bearer, store_url_for
from tests.factories import T0, WS, member, one_of_each
from tests.processes import running_server

ROOT = Path(__file__).resolve().parents[1]

# Stores one_of_each's events on T0 (10:00Z: call c1, chat 7 created), then asks for the
# calls and the chats from each bound to a day later.
ASK = """
import json, sys
from datetime import timedelta, timezone
from parley.ingest.service import ingest_batch
from parley.metrics.chats.query import ChatQuery
from parley.store.port import open_store
from tests.factories import T0, WS, one_of_each

store = open_store(sys.argv[1])
ingest_batch(store, org="acme", batch=one_of_each(T0))
kolkata = timezone(timedelta(hours=5, minutes=30))
bounds = {
    "09:30Z": T0 - timedelta(minutes=30),
    "10:30Z": T0 + timedelta(minutes=30),
    "10:30 naive": (T0 + timedelta(minutes=30)).replace(tzinfo=None),
    "15:29+05:30": (T0 - timedelta(minutes=1)).astimezone(kolkata),
    "15:31+05:30": (T0 + timedelta(minutes=1)).astimezone(kolkata),
}
end = T0 + timedelta(days=1)
answers = {}
for name, start in bounds.items():
    calls = store.calls_by_assistant(org="acme", workspace_id=WS, start=start, end=end)
    query = ChatQuery(created_after=start, created_before=end)
    chats = store.list_chats(org="acme", workspace_id=WS, query=query, limit=10, offset=0)[1]
    answers[name] = [sum(row.total_calls for row in calls), chats]
store.close()
print(json.dumps(answers))
"""


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_a_store_answers_alike_in_any_host_zone(kind: str, zone: str, tmp_path: Path) -> None:
    env = os.environ | {"TZ": zone, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", ASK, store_url_for(kind, tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # [calls, chats] started (created) at or after each bound: the call and the chat are of 10:00Z.
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "09:30Z": [1, 1],
        "10:30Z": [0, 0],
        "10:30 naive": [0, 0],
        "15:29+05:30": [1, 1],
        "15:31+05:30": [0, 0],
    }


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_server_in_new_york_stores_and_answers_in_utc(kind: str, tmp_path: Path) -> None:
    """``parley serve`` on a New York host: one_of_each's events of 10:00Z, sent to it, are
    counted on their UTC day and found by UTC bounds, and exported with their UTC time."""
    url = store_url_for(kind, tmp_path)
    store = open_store(url)
    ingest_key = create_key(store, org="acme", ingest=True)
    admin = bearer(create_key(store, org="acme", workspace_id=WS, member_id=1))
    store.close()
    with running_server(url, settings={"TZ": "America/New_York"}) as (base, _), httpx.Client(base_url=base) as client:
        sent = client.post(
            "/api/v2/ingest",
            json={"batch": [member(1, "admin"), *one_of_each(T0)]},
            headers=bearer(ingest_key),
        )
        assert sent.status_code == 207 and sent.json()["errors"] == [], sent.text

        def get(path: str) -> httpx.Response:
            response = client.get(path, headers=admin)
            assert response.status_code == 200, response.text
            return response

        calls = get("/analytics/calls/by-assistant?start_date=2024-05-01&end_date=2024-05-01").json()
        assert [(a["assistant_id"], a["total_calls"]) for a in calls["data"]["assistants"]] == [("a1", 1)]
        assert get("/analytics/calls/by-assistant?start_date=2024-04-30&end_date=2024-04-30").json()["data"] == {
            "assistants": []
        }
        chats = f"/api/v2/w/{WS}/chats"
        assert get(f"{chats}?createdAfter=2024-05-01T09:30:00Z").json()["total"] == 1
        assert get(f"{chats}?createdAfter=2024-05-01T10:30:00Z").json()["total"] == 0
        assert get(f"{chats}?createdAfter=2024-05-01T15:29:00%2B05:30").json()["total"] == 1
        usage = get(f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage?from_date=2024-05-01&to_date=2024-05-01")
        assert usage.json()["data"] == {"Helper": [{"x": "2024-05-01", "y": 1}]}
        cost = get("/api/ai-analytics/orgs/acme/users/u1/user-cost/?start_date=2024-05-01&end_date=2024-05-01")
        assert cost.json() == {"total_cost": 0.25}
        exported = get(f"{chats}/export").text.splitlines()
        assert len(exported) == 2 and '"2024-05-01T10:00:00Z"' in exported[1], exported
