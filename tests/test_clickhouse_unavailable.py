"""ClickHouse failing for its own sake (its load, its memory, its disk): a 503 telling the
client to come back, and nothing of a refused batch kept, on the embedded engine and
through clickhouse-connect.

The engine is made to refuse by its own settings: a table that allows one part per
partition refuses the next insert with TOO_MANY_PARTS (what a server whose merges lag
behind its inserts answers), and a memory limit of a kilobyte refuses a read with
MEMORY_LIMIT_EXCEEDED.

A batch can also be cut short between two of its inserts (ClickHouse has no transaction
across tables): the Parley process killed, the server gone. ``Crash`` stands for that,
raised by the transport right after a chosen insert of the real engine: an exception no
handler of the store catches, so that nothing the store would do after it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from parley.ingest.events import validate_event
from parley.ingest.service import Chunk, ingest_batch, prepare_lines, store_prepared
from parley.store.port import Store, StoreOutcome, open_store
from tests.conftest import assert_unavailable, bearer, store_url_for
from tests.factories import T0, WS, event, iso, messages, one_of_each
from tests.processes import run_cli
from tests.test_chats_cases import chat, said
from tests.test_clickhouse_connect import URL, connect_store

# The tables of one_of_each's events, one event each, in the order the store inserts them.
TABLES = ["users", "chat_events", "messages", "calls", "sessions", "traces", "observations", "feedback"]
EVENT_TABLES = ["chat_events", "messages", "calls", "users", "sessions", "traces", "observations", "feedback"]


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


@pytest.mark.parametrize("deletes", ["allowed", "refused"])
def test_a_batch_refused_part_way_is_a_503_and_kept_nowhere_so_its_resend_counts_once(
    ingest, client, admin, ingest_key: str, store: Store, deletes: str
):
    day = T0 + timedelta(days=1)
    feedback = {"feedback_id": "f0", "user_id": "u0", "rating": "negative", "created_at": iso(day)}
    ingest(event("feedback.create", feedback, ts=day))
    batch = one_of_each(day)
    ids = [e["id"] for e in batch]
    # Feedback is the batch's last table: every other table's insert succeeds first.
    store._transport.command("ALTER TABLE feedback MODIFY SETTING parts_to_throw_insert = 1")
    if deletes == "refused":  # what was inserted cannot be deleted again either (SUPPORT_IS_DISABLED)
        with store._transport.writing():  # a setting of the session the store writes through
            store._transport.command("SET enable_lightweight_delete = 0")

    assert_unavailable(client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)))
    if deletes == "allowed":
        assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 0)
        assert rows_of(store, "event_ledger", ids) == 0
        statuses = [201] * len(batch)
    else:  # left cut short until the batch is sent again: only its feedback is missing
        assert {table: rows_of(store, table, ids) for table in TABLES} == {**dict.fromkeys(TABLES, 1), "feedback": 0}
        with store._transport.writing():
            store._transport.command("SET enable_lightweight_delete = 1")
        statuses = [200] * (len(batch) - 1) + [201]

    store._transport.command("ALTER TABLE feedback RESET SETTING parts_to_throw_insert")
    body = ingest(*batch)
    assert [s["status"] for s in body["successes"]] == statuses
    assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 1)
    dates = {"start_date": day.date().isoformat(), "end_date": day.date().isoformat()}
    answer = client.get("/analytics/calls/by-assistant", params=dates, headers=admin).json()["data"]
    assert [(a["assistant_id"], a["total_calls"]) for a in answer["assistants"]] == [("a1", 1)]


def chat_messages(client, admin: dict[str, str]) -> list[tuple[int, int, str]]:
    """Each chat of WS in the list: (id, message count, newest message's time)."""
    items = client.get(f"/api/v2/w/{WS}/chats", headers=admin).json()["items"]
    return [(c["id"], c["messageCount"], c["lastMessageAt"]) for c in items]


def test_a_refused_batchs_messages_leave_their_chats_counts_as_they_were(
    ingest, client, admin, ingest_key: str, store: Store
):
    """A chat's message count and newest message come from the ``chat_messages``
    projection: a refused batch's messages, deleted again, leave it too."""
    day = T0 + timedelta(days=1)
    feedback = {"feedback_id": "f0", "user_id": "u0", "rating": "negative", "created_at": iso(day)}
    ingest(chat(1, ts=T0, created=T0), said(1, "m1", T0, "hi"), said(1, "m2", day, "hi"))
    ingest(event("feedback.create", feedback, ts=day))
    assert chat_messages(client, admin) == [(1, 2, iso(day))]
    store._transport.command("ALTER TABLE feedback MODIFY SETTING parts_to_throw_insert = 1")
    later = day + timedelta(hours=1)
    batch = [said(1, "m3", later, "hi"), event("feedback.create", {**feedback, "feedback_id": "f1"}, ts=day)]

    assert_unavailable(client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)))
    assert rows_of(store, "messages", [batch[0]["id"]]) == 0
    assert chat_messages(client, admin) == [(1, 2, iso(day))]

    store._transport.command("ALTER TABLE feedback RESET SETTING parts_to_throw_insert")
    ingest(*batch)
    assert chat_messages(client, admin) == [(1, 3, iso(later))]


class Refused(Exception):
    """ClickHouse refusing an insert for what it holds."""


def test_a_batch_the_engine_refuses_fails_its_caller_alone_when_stored_with_others(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    """Batches that wait for the writer are stored in one write (``GroupCommit``). When
    ClickHouse refuses it, each batch is stored alone again: the refused one fails its
    caller, and nothing of it is kept; the other is stored, once."""
    good = [validate_event(e, "acme") for e in messages(0, 3, padding=0)]
    body = {"feedback_id": "f1", "user_id": "u1", "rating": "positive", "created_at": iso(T0)}
    refused = [validate_event(event("feedback.create", body, id="f1"), "acme")]
    real = store._transport.insert

    def insert(table: str, rows) -> None:
        if table == "feedback":  # the refused batch's only table
            raise Refused(table)
        real(table, rows)

    monkeypatch.setattr(store._transport, "insert", insert)
    outcomes: dict[str, StoreOutcome] = {}
    errors: dict[str, BaseException] = {}

    def send(name: str, events: list) -> None:
        try:
            outcomes[name] = store.ingest(events)
        except RuntimeError as err:
            errors[name] = err

    threads = [threading.Thread(target=send, args=args) for args in [("good", good), ("refused", refused)]]
    with store._write_lock:  # the writer is busy: both batches wait for it, and go together
        for n, thread in enumerate(threads, start=1):
            thread.start()
            while len(store._commits.pending) < n:
                time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=60)

    ids = [e.id for e in good]
    assert outcomes == {"good": StoreOutcome(ids, [], {})}
    assert list(errors) == ["refused"] and isinstance(errors["refused"].__cause__, Refused)
    assert rows_of(store, "messages", ids) == 3
    assert rows_of(store, "event_ledger", [*ids, "f1"]) == 3
    monkeypatch.undo()
    assert store.ingest(refused) == StoreOutcome(["f1"], [], {})
    assert store.ingest(good) == StoreOutcome([], ids, {})
    assert rows_of(store, "messages", ids) == 3
    assert rows_of(store, "feedback", ["f1"]) == 1


def feedback_event(n: int) -> dict:
    body = {"feedback_id": f"f{n}", "user_id": "u1", "rating": "positive", "created_at": iso(T0)}
    return {**event("feedback.create", body, id=f"f{n}"), "org": "acme"}


def messages_then_feedback(path: Path) -> list[bytes]:
    """Write 999 messages of acme and one feedback to ``path`` as JSONL; its lines."""
    batch = [*({**e, "org": "acme"} for e in messages(0, 999, padding=0)), feedback_event(1)]
    lines = [json.dumps(e).encode() for e in batch]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


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


class Crash(BaseException):
    """The process dying part way through a batch."""


def crash_after(store: Store, monkeypatch: pytest.MonkeyPatch, inserts: int) -> None:
    """Make ``store``'s transport die right after its next ``inserts`` inserts."""
    real = store._transport.insert
    done: list[str] = []

    def insert(table: str, rows) -> None:
        real(table, rows)
        done.append(table)
        if len(done) == inserts:
            raise Crash(done)

    monkeypatch.setattr(store._transport, "insert", insert)


# A batch of one_of_each is 10 inserts: the claims of its events in the ledger, its
# entities, then its events' rows, in the order of TABLES. A client that stamps its
# envelopes when it sends them resends the batch with later timestamps ("anew"): the rows
# stored before the crash are found where they were stored.
@pytest.mark.parametrize(
    ("inserts", "stamped"),
    [(1, "same"), (2, "same"), (5, "same"), (10, "same"), (5, "anew"), (10, "anew")],
)
def test_a_batch_cut_short_is_stored_once_when_sent_again(
    ingest, client, admin, store: Store, monkeypatch: pytest.MonkeyPatch, inserts: int, stamped: str
):
    events_before = store.count_events(org="acme")
    batch = one_of_each(T0)
    ids = [e["id"] for e in batch]
    crash_after(store, monkeypatch, inserts)
    with pytest.raises(Crash):
        ingest_batch(store, org="acme", batch=batch)
    monkeypatch.undo()
    stored = TABLES[: max(0, inserts - 2)]
    assert {table: rows_of(store, table, ids) for table in TABLES} == {table: int(table in stored) for table in TABLES}

    if stamped == "anew":  # another month: another partition of each table
        batch = [{**e, "timestamp": iso(T0 + timedelta(days=40))} for e in batch]
    body = ingest(*batch)  # the events stored before the crash are duplicates, the rest stored now
    assert [s["status"] for s in body["successes"]] == [200 if table in stored else 201 for table in EVENT_TABLES]
    assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 1)
    assert store.count_events(org="acme") == events_before + len(batch)
    dates = {"start_date": T0.date().isoformat(), "end_date": T0.date().isoformat()}
    answer = client.get("/analytics/calls/by-assistant", params=dates, headers=admin).json()["data"]
    assert [(a["assistant_id"], a["total_calls"]) for a in answer["assistants"]] == [("a1", 1)]

    again = ingest(*batch)
    assert [s["status"] for s in again["successes"]] == [200] * len(batch)
    assert {table: rows_of(store, table, ids) for table in TABLES} == dict.fromkeys(TABLES, 1)


def test_claims_made_before_the_ledgers_kept_times_and_claimers_are_the_resends_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    url = store_url_for("chdb", tmp_path)
    batch = one_of_each(T0)
    store = open_store(url)
    try:
        crash_after(store, monkeypatch, 5)  # claims, entities, users, chat_events, messages
        with pytest.raises(Crash):
            ingest_batch(store, org="acme", batch=batch)
        monkeypatch.undo()
        # As an older Parley left them: the rows' times and the entities' claimers not kept.
        store._transport.command("ALTER TABLE event_ledger DROP COLUMN ts")
        store._transport.command("ALTER TABLE entity_ledger DROP COLUMN event_id")
    finally:
        store.close()

    store = open_store(url)  # adds the columns back, null in the claims there
    try:
        outcome = store.ingest([validate_event(e, "acme") for e in batch])
        by_table = dict(zip(EVENT_TABLES, (e["id"] for e in batch), strict=True))
        assert sorted(outcome.duplicates) == sorted(by_table[t] for t in ["users", "chat_events", "messages"])
        assert len(outcome.stored) == len(batch) - 3
        assert {table: rows_of(store, table, [e["id"] for e in batch]) for table in TABLES} == dict.fromkeys(TABLES, 1)
    finally:
        store.close()


# Cut short after its claim and its entity's (2 inserts), the event keeps its entity: a
# copy under another id is a duplicate. Cut short after its claim alone (1 insert), the
# copy comes first to the entity, and the event sent again is the duplicate. Either way
# the entity is stored once.
@pytest.mark.parametrize(("inserts", "winner"), [(2, "first"), (1, "copy")])
def test_an_event_cut_short_and_a_copy_under_another_id_store_their_entity_once(
    ingest, store: Store, monkeypatch: pytest.MonkeyPatch, inserts: int, winner: str
):
    first, copy = messages(0, 1)[0], {**messages(0, 1)[0], "id": "copy"}
    crash_after(store, monkeypatch, inserts)
    with pytest.raises(Crash):
        ingest_batch(store, org="acme", batch=[first])
    monkeypatch.undo()

    assert [s["status"] for s in ingest(copy)["successes"]] == [201 if winner == "copy" else 200]
    assert [s["status"] for s in ingest(first)["successes"]] == [201 if winner == "first" else 200]
    assert [s["status"] for s in ingest(first, copy)["successes"]] == [200, 200]
    assert rows_of(store, "messages", ["e0", "copy"]) == 1
    assert rows_of(store, "messages", ["e0" if winner == "first" else "copy"]) == 1


def test_a_bulk_load_cut_short_is_loaded_once_when_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = store_url_for("chdb", tmp_path)
    path = tmp_path / "events.jsonl"
    lines = messages_then_feedback(path)
    store = open_store(url)
    try:
        crash_after(store, monkeypatch, 3)  # claims, entities, messages; not the feedback
        with pytest.raises(Crash):
            chunk = Chunk(1, lines, sum(map(len, lines)))
            store_prepared(store, chunk, prepare_lines(lines, first_line=1, org="acme"), org="acme")
        monkeypatch.undo()
    finally:
        store.close()
    assert with_engine(url) == {"messages": 999, "feedback": 0}

    again = run_cli(url, "ingest", str(path))
    assert again.stdout.strip().splitlines()[-1] == "accepted 1, duplicates 999, rejected 0"
    assert with_engine(url) == {"messages": 999, "feedback": 1}
    once_more = run_cli(url, "ingest", str(path))
    assert once_more.stdout.strip().splitlines()[-1] == "accepted 0, duplicates 1000, rejected 0"


def test_a_read_the_engine_has_no_memory_for_is_a_503(ingest, client, admin, store: Store):
    ingest(*one_of_each(T0))
    store._transport.command("SET max_memory_usage = 1024")
    assert_unavailable(client.get("/analytics/calls/by-assistant", headers=admin))


def test_a_bulk_load_clickhouse_refuses_stops_with_the_reason_keeps_nothing_and_loads_whole_later(tmp_path: Path):
    url = store_url_for("chdb", tmp_path)
    run_cli(url, "keys", "create", "--org", "acme", "--ingest")
    first, lines = tmp_path / "first.jsonl", tmp_path / "events.jsonl"
    first.write_text(json.dumps(feedback_event(0)) + "\n")
    run_cli(url, "ingest", str(first))
    messages_then_feedback(lines)
    assert with_engine(url, "ALTER TABLE feedback MODIFY SETTING parts_to_throw_insert = 1") == {
        "messages": 0,
        "feedback": 1,
    }

    refused = run_cli(url, "ingest", str(lines), check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ClickHouse cannot do it now: Code: 252."), last
    assert last.endswith(
        "(TOO_MANY_PARTS); stopped before any line was stored (as reported); loading the same lines again adds the rest"
    )
    assert refused.stdout == "accepted 0, duplicates 0, rejected 0\n"
    assert with_engine(url, "ALTER TABLE feedback RESET SETTING parts_to_throw_insert") == {
        "messages": 0,
        "feedback": 1,
    }

    again = run_cli(url, "ingest", str(lines))
    assert again.stdout.strip().splitlines()[-1] == "accepted 1000, duplicates 0, rejected 0"
    assert with_engine(url) == {"messages": 999, "feedback": 2}
