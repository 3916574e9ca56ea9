"""ClickHouse failing for its own sake (its load, its memory, its disk): a 503 telling the
client to come back, and nothing of a refused batch kept, on the embedded engine and
through clickhouse-connect.

The engine is made to refuse by its own settings: a table that allows one part per
partition refuses the next insert with TOO_MANY_PARTS (what a server whose merges lag
behind its inserts answers), and a memory limit of a kilobyte refuses a read with
MEMORY_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from parley.errors import STORE_UNAVAILABLE
from parley.store.port import Store, open_store
from tests.conftest import bearer, store_url_for
from tests.factories import T0, event, iso, messages, one_of_each
from tests.processes import run_cli
from tests.test_clickhouse_connect import URL, connect_store

TABLES = ["chat_events", "messages", "calls", "users", "sessions", "traces", "observations", "feedback"]


@pytest.fixture(params=["chdb", "connect"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for("chdb", tmp_path) if request.param == "chdb" else URL


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(store_url) if store_url.startswith("chdb") else connect_store(tmp_path / "engine")
    yield opened
    opened.close()


def rows_of(store: Store, table: str, ids: list[str]) -> int:
    sql = f"SELECT count() AS n FROM {table} WHERE event_id IN {{ids:Array(String)}}"
    return store._transport.query(sql, {"ids": ids}).to_pylist()[0]["n"]


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "30"
    assert STORE_UNAVAILABLE in response.json().values()  # each endpoint's error shape


def test_a_batch_refused_part_way_is_a_503_and_kept_nowhere_so_its_resend_counts_once(
    ingest, client, admin, ingest_key: str, store: Store
):
    day = T0 + timedelta(days=1)
    feedback = {"feedback_id": "f0", "user_id": "u0", "rating": "negative", "created_at": iso(day)}
    ingest(event("feedback.create", feedback, ts=day))
    batch = one_of_each(day)
    ids = [e["id"] for e in batch]
    # Feedback is the batch's last table: every other table's insert succeeds first.
    store._transport.command("ALTER TABLE feedback MODIFY SETTING parts_to_throw_insert = 1")

    assert_unavailable(client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)))
    assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 0)
    assert rows_of(store, "event_ledger", ids) == 0

    store._transport.command("ALTER TABLE feedback RESET SETTING parts_to_throw_insert")
    body = ingest(*batch)
    assert [s["status"] for s in body["successes"]] == [201] * len(batch)
    assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 1)
    dates = {"start_date": day.date().isoformat(), "end_date": day.date().isoformat()}
    answer = client.get("/analytics/calls/by-assistant", params=dates, headers=admin).json()["data"]
    assert [(a["assistant_id"], a["total_calls"]) for a in answer["assistants"]] == [("a1", 1)]


def test_a_read_the_engine_has_no_memory_for_is_a_503(ingest, client, admin, store: Store):
    ingest(*one_of_each(T0))
    store._transport.command("SET max_memory_usage = 1024")
    assert_unavailable(client.get("/analytics/calls/by-assistant", headers=admin))


def feedback_event(n: int) -> dict:
    body = {"feedback_id": f"f{n}", "user_id": "u1", "rating": "positive", "created_at": iso(T0)}
    return {**event("feedback.create", body, id=f"f{n}"), "org": "acme"}


def with_engine(url: str, *statements: str) -> dict[str, int]:
    """Run ``statements`` on the store at ``url``, and count its messages and feedback."""
    store = open_store(url)
    try:
        for statement in statements:
            store._transport.command(statement)
        count = "SELECT (SELECT count() FROM messages) AS messages, (SELECT count() FROM feedback) AS feedback"
        return store._transport.query(count, {}).to_pylist()[0]
    finally:
        store.close()


def test_a_bulk_load_clickhouse_refuses_stops_with_the_reason_keeps_nothing_and_loads_whole_later(tmp_path: Path):
    url = store_url_for("chdb", tmp_path)
    run_cli(url, "keys", "create", "--org", "acme", "--ingest")
    first, lines = tmp_path / "first.jsonl", tmp_path / "events.jsonl"
    first.write_text(json.dumps(feedback_event(0)) + "\n")
    run_cli(url, "ingest", str(first))
    batch = [*({**e, "org": "acme"} for e in messages(0, 999, padding=0)), feedback_event(1)]
    lines.write_text("".join(json.dumps(e) + "\n" for e in batch))
    assert with_engine(url, "ALTER TABLE feedback MODIFY SETTING parts_to_throw_insert = 1") == {
        "messages": 0,
        "feedback": 1,
    }

    refused = run_cli(url, "ingest", str(lines), check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ClickHouse cannot do it now: Code: 252."), last
    assert last.endswith(
        "(TOO_MANY_PARTS); the lines stored before it stay stored, and loading the file again adds the rest"
    )
    assert with_engine(url, "ALTER TABLE feedback RESET SETTING parts_to_throw_insert") == {
        "messages": 0,
        "feedback": 1,
    }

    again = run_cli(url, "ingest", str(lines))
    assert again.stdout.strip().splitlines()[-1] == "accepted 1000, duplicates 0, rejected 0"
    assert with_engine(url) == {"messages": 999, "feedback": 2}
