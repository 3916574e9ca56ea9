"""DuckDB: a group of several callers' batches is answered once its rows are stored, and
the state kept from them (chat state, activity, users, cost days, search text, tool names,
member names) is kept for several groups at once (by a thread of the store's own), once
ingestion pauses, by the next lone caller, at closing, or, after a crash, when the store
opens (``DuckDBStore._store_events``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from parley.demo import Scale, generate
from parley.ingest.events import Event, validate_event
from parley.store.duckdb import DuckDBStore
from tests.test_ingest import _ingest_together, _wait_for_state

END = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
SCALE = Scale(2, 2, 20, 8, 3, 40, 5, 30, 30, 80, 2, 2, 40)
BATCH = 120

# Each kept table as rows that do not depend on how the state was grouped: users by id
# (their numbers follow the order they were numbered in), a user's cost days summed by
# day and model (a row per statement that added to it), the tools of a chat as a set.
STATE = {
    "chat_state": "SELECT * FROM chat_state",
    "user_activity": """SELECT a.org, a.session_id, n.user_id, a.mentor_id, a.active_at, a.waiting
        FROM user_activity a LEFT JOIN user_numbers n ON n.org = a.org AND n.user_no = a.user_no""",
    "user_state": "SELECT org, user_id, registered_at, version, user_md5 FROM user_state",
    "user_numbers": "SELECT org, user_id FROM user_numbers",
    "user_cost_days": """SELECT org, user_md5, day, model, sum(cost_pusd), sum(input_tokens),
        sum(output_tokens), sum(n), list_sort(flatten(list(observations)))::VARCHAR
        FROM user_cost_days GROUP BY ALL""",
    "cost_pending": "SELECT * FROM cost_pending",
    "message_text": "SELECT * FROM message_text",
    "chat_tools": "SELECT DISTINCT * FROM chat_tools",
    "member_names": "SELECT * FROM member_names",
    "state_queue": "SELECT * FROM state_queue",
}


def live_raw() -> list[list[tuple[str, dict[str, Any]]]]:
    """The demo's events in time order, every org's, in batches of one org each, as
    platforms stream them (sessions, traces, observations, feedback, chats, messages):
    (org, envelope) pairs."""
    events = sorted(generate(SCALE, seed=5, end=END), key=lambda e: (e["timestamp"], e["id"]))
    by_org: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    batches = []
    for raw in events:
        org = raw.pop("org")
        batch = by_org.setdefault(org, [])
        batch.append((org, raw))
        if len(batch) == BATCH:
            batches.append(by_org.pop(org))
    return batches + [batch for batch in by_org.values() if batch]


def validated(raw: list[list[tuple[str, dict[str, Any]]]]) -> list[list[Event]]:
    return [[validate_event(envelope, org) for org, envelope in batch] for batch in raw]


def live_batches() -> list[list[Event]]:
    return validated(live_raw())


def state(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted(store._fetchall(sql, {}), key=repr) for name, sql in STATE.items()}


def opened_state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """``state`` of the store at ``path``, opened (keeping what its queue holds) and closed."""
    with closing(DuckDBStore(path)) as store:
        return state(store)


def closed_state(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    """``store`` closed, which keeps what waits (its queue then empty), and its state read
    again from its file."""
    store.close()
    with duckdb.connect(str(store.path)) as con:
        assert con.execute("SELECT count(*) FROM state_queue").fetchall() == [(0,)]
    return opened_state(store.path)


def reference(path: Path, batches: list[list[Event]]) -> dict[str, list[tuple[Any, ...]]]:
    """The state of ``batches`` stored one at a time, each keeping its state as it is stored."""
    with closing(DuckDBStore(path)) as store:
        for batch in batches:
            store.ingest(batch)
        assert store._state_waiting == []
        return state(store)


def first_batches(tmp_path: Path, count: int) -> tuple[list[list[Event]], dict[str, list[tuple[Any, ...]]]]:
    """The first ``count`` live batches, and their ``reference`` state."""
    batches = live_batches()[:count]
    return batches, reference(tmp_path / "one-by-one.duckdb", batches)


def keeping(path: Path, every_groups: int, wait_s: float) -> DuckDBStore:
    """A store that keeps the state of ``every_groups`` groups at once, or ``wait_s`` after the last."""
    store = DuckDBStore(path)
    store.state_every_groups, store.state_wait_s = every_groups, wait_s
    return store


def in_groups(store: DuckDBStore, batches: list[list[Event]], size: int) -> None:
    for i in range(0, len(batches), size):
        _ingest_together(store, batches[i : i + size])


def test_the_state_of_groups_kept_at_once_is_the_state_of_batches_kept_one_by_one(tmp_path: Path):
    batches = live_batches()
    assert len(batches) >= 12 and len({e.type for batch in batches for e in batch}) >= 8
    expected = reference(tmp_path / "one-by-one.duckdb", batches)
    assert expected["user_activity"] and expected["user_cost_days"] and expected["chat_tools"]
    assert expected["state_queue"] == []

    store = keeping(tmp_path / "groups.duckdb", 3, 60.0)  # kept every third group, no timer
    in_groups(store, batches, 3)
    # By a thread of the store's own, once the third group's callers were answered.
    keeper = store._state_keeper
    assert keeper is not None and keeper.name == "parley-state-keeper"
    keeper.join(timeout=30)
    with store._write_lock:
        waiting = sum(table.num_rows for tables in store._state_waiting for table in tables.values())
        assert store._fetchall("SELECT count(*) FROM state_queue", {})[0][0] == waiting
        assert store._groups_waiting < 3
    assert closed_state(store) == expected


def test_the_group_that_finds_twice_the_groups_waiting_keeps_their_state_itself(tmp_path: Path):
    batches, expected = first_batches(tmp_path, 12)
    with closing(keeping(tmp_path / "groups.duckdb", 2, 60.0)) as store:
        # The store's thread, started and not yet taking the write lock (as when the next
        # groups' callers take it first).
        let_go = threading.Event()
        store._state_keeper = threading.Thread(target=let_go.wait)
        store._state_keeper.start()
        try:
            in_groups(store, batches[:9], 3)
            assert store._groups_waiting == 3  # the second and third found it started
            in_groups(store, batches[9:], 3)  # the fourth: twice 2
            assert store._groups_waiting == 0 and store._state_waiting == []
            assert state(store) == expected
        finally:
            let_go.set()


def test_closing_keeps_the_state_that_waits(tmp_path: Path):
    batches, expected = first_batches(tmp_path, 6)
    store = keeping(tmp_path / "groups.duckdb", 100, 60.0)  # neither the store's thread nor the timer
    in_groups(store, batches, 3)
    assert store._groups_waiting == 2 and store._state_keeper is None
    queued = store._fetchall("SELECT count(*) FROM state_queue", {})[0][0]
    assert queued == sum(map(len, batches))
    assert closed_state(store) == expected


def test_a_group_answered_before_its_state_keeps_it_once_ingestion_pauses(tmp_path: Path):
    batches, expected = first_batches(tmp_path, 3)
    with closing(keeping(tmp_path / "groups.duckdb", 100, 0.3)) as store:
        started = time.monotonic()
        in_groups(store, batches, 3)
        with store._write_lock:  # held while a state is kept: whether it was is settled here
            if store._state_waiting:  # answered, its events queued, their state not kept yet
                queued = store._fetchall("SELECT count(*) FROM state_queue", {})[0][0]
                assert queued == sum(map(len, batches)) and store._groups_waiting == 1
                assert store._fetchall("SELECT count(*) FROM user_activity", {}) == [(0,)]
        _wait_for_state(store)
        assert time.monotonic() - started >= store.state_wait_s
        assert state(store) == expected


def test_a_lone_caller_keeps_the_waiting_state_with_its_own(tmp_path: Path):
    batches, expected = first_batches(tmp_path, 7)
    with closing(keeping(tmp_path / "groups.duckdb", 100, 60.0)) as store:
        in_groups(store, batches[:6], 3)
        assert store._groups_waiting == 2
        store.ingest(batches[6])  # alone: answered once every state is kept
        assert store._state_waiting == [] and store._groups_waiting == 0
        assert state(store) == expected


CRASH = """
import os, sys
import orjson
from parley.ingest.events import validate_event
from parley.store.duckdb import DuckDBStore
from tests.test_ingest import _ingest_together

store = DuckDBStore(sys.argv[1])
store.state_every_groups, store.state_wait_s = 100, 600.0
raw = orjson.loads(open(sys.argv[2], "rb").read())
batches = [[validate_event(envelope, org) for org, envelope in batch] for batch in raw]
for i in range(0, len(batches), 3):
    _ingest_together(store, batches[i : i + 3])
print(store._fetchall("SELECT count(*) FROM state_queue", {})[0][0], flush=True)
os._exit(0)  # answered; no state kept, no closing, no checkpoint
"""


def test_the_state_of_events_answered_before_a_crash_is_kept_when_the_store_opens(tmp_path: Path):
    raw = live_raw()[:9]
    batches = validated(raw)
    expected = reference(tmp_path / "one-by-one.duckdb", batches)
    (tmp_path / "batches.json").write_bytes(orjson.dumps(raw))
    path = tmp_path / "crashed.duckdb"
    ran = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), str(tmp_path / "batches.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout.strip()) == sum(map(len, batches))  # every event answered, none kept
    assert opened_state(path) == expected
