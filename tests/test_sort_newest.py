"""A DuckDB store fed as events happen puts its newest rows in order every so many rows:
each org's, and in it each workspace's, together (``DuckDBStore._sort_newest``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from parley.ingest.service import ingest_batch
from parley.metrics.chats.query import ChatQuery
from parley.store.duckdb import DuckDBStore
from parley.store.duckdb_state import sort_newest_sql
from tests.factories import T0, WS, WS_OTHER, call, event, iso

ORGS = ("globex", "acme")  # globex first: arrival order is not the sorted order
WORKSPACES = (WS_OTHER, WS)
# The first 8 calls of ``_arrivals`` (hours 0 and 1, both orgs, both workspaces) put in
# order as one run, worked by hand: org, then workspace, then hour.
FIRST_EIGHT_CALLS_IN_ORDER = [
    ("acme", WS, "c0-acme-1"),
    ("acme", WS, "c1-acme-1"),
    ("acme", WS_OTHER, "c0-acme-2"),
    ("acme", WS_OTHER, "c1-acme-2"),
    ("globex", WS, "c0-globex-1"),
    ("globex", WS, "c1-globex-1"),
    ("globex", WS_OTHER, "c0-globex-2"),
    ("globex", WS_OTHER, "c1-globex-2"),
]


def _session(sid: str, user_id: str, hour: int):
    at = T0 + timedelta(hours=hour)
    return event("session.create", {"session_id": sid, "user_id": user_id, "started_at": iso(at)}, ts=at)


def _arrivals(hours: range) -> list[tuple[str, list]]:
    """Hour by hour, each org's batch: a call of 60 s in each workspace and a session, as
    a live platform sends them, every org's and workspace's interleaved."""
    return [
        (
            org,
            [
                call(f"c{hour}-{org}-{ws[-1]}", "a1", T0 + timedelta(hours=hour), workspace=ws, duration=60)
                for ws in WORKSPACES
            ]
            + [_session(f"s{hour}-{org}", f"u{hour}", hour)],
        )
        for hour in hours
        for org in ORGS
    ]


def _stored(store: DuckDBStore, sql: str) -> list[tuple]:
    return store._con.execute(sql).fetchall()


def _calls(store: DuckDBStore) -> list[tuple]:
    return _stored(store, "SELECT org, workspace_id, call_id FROM calls ORDER BY rowid")


def _activity(store: DuckDBStore) -> list[tuple]:
    return _stored(store, "SELECT org, hour(active_at) FROM user_activity ORDER BY rowid")


def _in_runs(rows: list[tuple], run: int, key) -> list[tuple]:
    """``rows`` as they came, each whole run of ``run`` of them sorted by ``key``."""
    whole = len(rows) - len(rows) % run
    return [row for start in range(0, whole, run) for row in sorted(rows[start : start + run], key=key)] + rows[whole:]


def _call_key(row: tuple) -> tuple:
    """A call row's place in a run: org, workspace, then the hour in its id (c<hour>-...)."""
    org, workspace_id, call_id = row
    return org, workspace_id, int(call_id[1 : call_id.index("-")])


def _expected_calls(arrivals: list[tuple[str, list]]) -> list[tuple]:
    return [(org, e["body"]["workspace_id"], e["body"]["call_id"]) for org, batch in arrivals for e in batch[:-1]]


def _store(arrivals: list[tuple[str, list]], store: DuckDBStore) -> None:
    for org, batch in arrivals:
        assert ingest_batch(store, org=org, batch=batch).errors == []


def _sorting(store: DuckDBStore, every: int, run: int | None = None) -> DuckDBStore:
    """``store``, putting its newest rows in order every ``every`` rows, in runs of ``run``
    (by default ``every``: each run put in order once)."""
    store.sort_newest_rows = every
    store.sorted_run_rows = every if run is None else run
    return store


def test_the_newest_rows_are_put_in_order_by_org_and_workspace_every_so_many(tmp_path):
    arrivals = _arrivals(range(5))  # 10 batches: 20 calls, 10 sessions (each a row of activity)
    store = _sorting(DuckDBStore(tmp_path / "parley.duckdb"), 8)
    try:
        _store(arrivals, store)
        calls, activity = _calls(store), _activity(store)
        totals = {
            (org, ws): store.calls_by_assistant(
                org=org,
                workspace_id=ws,
                start=T0.replace(tzinfo=None),
                end=(T0 + timedelta(days=1)).replace(tzinfo=None),
            )
            for org in ORGS
            for ws in WORKSPACES
        }
        distinct = _stored(store, "SELECT count(*), count(DISTINCT event_id) FROM calls")
    finally:
        store.close()
    # Two calls a batch: every 4 batches the 8 newest calls are rewritten by org, workspace
    # and time, and the last 4 (two batches) wait for the next run.
    came = _expected_calls(arrivals)
    assert calls == _in_runs(came, 8, key=_call_key)
    assert calls[:8] == FIRST_EIGHT_CALLS_IN_ORDER
    assert calls[16:] == came[16:]  # as they came
    # One session a batch, each a row of activity: the first 8 by org and time, 2 as they came.
    hours = [(org, 10 + hour) for hour in range(5) for org in ORGS]
    assert activity == _in_runs(hours, 8, key=tuple)
    assert activity[:4] == [("acme", 10), ("acme", 11), ("acme", 12), ("acme", 13)]
    # Nothing lost or written twice, and the reads count what came: 5 calls of 60 s each.
    assert distinct == [(20, 20)]
    for key, rows in totals.items():
        assert [(r.assistant_id, r.total_calls, r.total_duration_us) for r in rows] == [("a1", 5, 300_000_000)], key


def test_a_run_is_put_in_order_again_as_it_grows_until_it_is_whole(tmp_path):
    arrivals = _arrivals(range(5))  # 10 batches: 20 calls, 10 sessions
    store = _sorting(DuckDBStore(tmp_path / "parley.duckdb"), 4, run=8)
    try:
        _store(arrivals[:3], store)  # 6 calls: the first 4 put in order, 2 as they came
        after_three = _calls(store)
        _store(arrivals[3:], store)
        calls, activity = _calls(store), _activity(store)
        distinct = _stored(store, "SELECT count(*), count(DISTINCT event_id) FROM calls")
    finally:
        store.close()
    came = _expected_calls(arrivals)
    assert after_three == sorted(came[:4], key=_call_key) + came[4:6]
    # At 8 calls the run of 8 is put in order as one, not as two runs of 4; the next runs
    # begin after it, and the last 4 calls, the first of a run not yet whole, are put in
    # order in turn.
    assert calls == _in_runs(came[:16], 8, key=_call_key) + sorted(came[16:], key=_call_key)
    assert calls[:8] == FIRST_EIGHT_CALLS_IN_ORDER
    assert calls[16:] == [
        ("acme", WS, "c4-acme-1"),
        ("acme", WS_OTHER, "c4-acme-2"),
        ("globex", WS, "c4-globex-1"),
        ("globex", WS_OTHER, "c4-globex-2"),
    ]
    # A row of activity a batch: a whole run of 8 in order, and 2 waiting for the next 4.
    hours = [(org, 10 + hour) for hour in range(5) for org in ORGS]
    assert activity == _in_runs(hours[:8], 8, key=tuple) + hours[8:]
    assert distinct == [(20, 20)]


def test_a_bulk_loads_rows_stay_as_they_came_and_the_rows_after_it_are_counted_from_its_end(tmp_path):
    loaded, live = _arrivals(range(3)), _arrivals(range(3, 7))  # 12 calls, then 16
    store = _sorting(DuckDBStore(tmp_path / "parley.duckdb"), 8)
    try:
        with store.bulk_load():
            _store(loaded, store)
        assert _calls(store) == _expected_calls(loaded)  # 12 calls, none put in order
        _store(live[:3], store)
        after_three = _calls(store)
        _store(live[3:], store)
        calls = _calls(store)
    finally:
        store.close()
    came = _expected_calls(loaded + live)
    assert after_three == came[:18]  # 6 calls since the load: fewer than 8
    assert calls[:12] == came[:12]  # the load's, untouched
    assert calls[12:] == _in_runs(came[12:], 8, key=_call_key)
    assert calls[12:] != came[12:]


def test_a_store_closed_and_opened_again_goes_on_with_its_run(tmp_path):
    path = tmp_path / "parley.duckdb"
    first, then = _arrivals(range(3)), _arrivals(range(3, 7))
    store = _sorting(DuckDBStore(path), 8)
    try:
        _store(first, store)  # 12 calls: 8 put in order, 4 waiting
    finally:
        store.close()
    store = _sorting(DuckDBStore(path), 8)
    try:
        _store(then, store)  # 16 more: the 4 waiting and the first 4 make the next run of 8
        calls = _calls(store)
    finally:
        store.close()
    came = _expected_calls(first + then)
    # Runs of 8 over all 28 calls, as if one process had taken them; 4 still waiting.
    assert calls == _in_runs(came, 8, key=_call_key)
    # Not runs counted again from the opening: the 4 left by the first process stayed as
    # they came that way.
    assert calls != _in_runs(came[:12], 8, key=_call_key) + _in_runs(came[12:], 8, key=_call_key)


def test_a_store_that_ended_without_closing_counts_from_the_rows_it_holds(tmp_path):
    # A process that ends without closing (killed after its last commit) keeps no runs;
    # the runs kept at the last close were forgotten by the opening that took them up.
    path = tmp_path / "parley.duckdb"
    arrivals = _arrivals(range(7))  # 14 batches, 28 calls
    store = _sorting(DuckDBStore(path), 8)
    try:
        _store(arrivals[:6], store)  # 12 calls: 8 put in order, 4 waiting
    finally:
        store.close()
    store = _sorting(DuckDBStore(path), 8)
    _store(arrivals[6:7], store)  # 2 more: 6 waiting
    store._con.close()  # ends without closing the store
    store = _sorting(DuckDBStore(path), 8)
    try:
        _store(arrivals[7:], store)  # 14 more: counted from the opening, a run of 8 and 6 waiting
        calls = _calls(store)
    finally:
        store.close()
    came = _expected_calls(arrivals)
    assert calls == _in_runs(came[:12], 8, key=_call_key) + came[12:14] + _in_runs(came[14:], 8, key=_call_key)


def _chats_arrivals(hours: range) -> list[tuple[str, list]]:
    """Hour by hour, each org's batch: in each workspace chat ``hour + 1`` created that
    hour, and a message in chat 1, which writes that chat's row again at the table's end."""

    def batch(org: str, hour: int) -> list:
        at = T0 + timedelta(hours=hour)
        chats = [
            event(
                "chat.upsert",
                {
                    "workspace_id": ws,
                    "chat_id": hour + 1,
                    "owner_member_id": 1,
                    "chat_type": "dm",
                    "channel": "web",
                    "title": f"{org} {hour}",
                    "created_at": iso(at),
                },
                ts=at,
            )
            for ws in WORKSPACES
        ]
        said = [
            event(
                "message.create",
                {
                    "workspace_id": ws,
                    "chat_id": 1,
                    "message_id": f"m{hour}",
                    "role": "user",
                    "content": "hi",
                    "created_at": iso(at),
                },
                ts=at,
            )
            for ws in WORKSPACES
        ]
        return chats + said

    return [(org, batch(org, hour)) for hour in hours for org in ORGS]


def _chat_rows(store: DuckDBStore) -> list[tuple]:
    return _stored(store, "SELECT org, workspace_id, chat_id, message_count FROM chat_state ORDER BY rowid")


def test_the_chats_written_again_as_messages_come_are_put_in_order_too(tmp_path):
    arrivals = _chats_arrivals(range(4))  # 8 batches, each 2 chat events and 2 messages: 32 counted
    store = _sorting(DuckDBStore(tmp_path / "parley.duckdb"), 32)
    try:
        _store(arrivals[:7], store)
        before = _chat_rows(store)
        _store(arrivals[7:], store)  # the 32nd counted: the 16 chats put in order
        in_order = _chat_rows(store)
        _store(_chats_arrivals(range(4, 5))[:1], store)  # globex, hour 4: chats 5, chat 1 again
        after = _chat_rows(store)
        page, total = store.list_chats(
            org="globex", workspace_id=WS, query=ChatQuery(sort_by="id", descending=False), limit=10, offset=0
        )
    finally:
        store.close()
    # Worked by hand: each org's, then each workspace's chats 1 to 4 by the hour they were
    # created, newest first; chat 1 has the 4 messages of hours 0 to 3, the others none.
    expected = [
        (org, ws, chat, 4 if chat == 1 else 0)
        for org in ("acme", "globex")
        for ws in (WS, WS_OTHER)
        for chat in range(4, 0, -1)
    ]
    assert in_order == expected
    # As they came: the 7th batch's (globex, hour 3) chats last, chat 1 moved there by its message.
    assert sorted(before[-4:]) == [
        ("globex", WS, 1, 4),
        ("globex", WS, 4, 0),
        ("globex", WS_OTHER, 1, 4),
        ("globex", WS_OTHER, 4, 0),
    ]
    assert sorted(before) != before
    # The run stays in order, less chat 1 of globex's workspaces, which the next batch's
    # messages moved after it, with its new chats.
    assert after[:14] == [row for row in expected if row[:3] not in {("globex", WS, 1), ("globex", WS_OTHER, 1)}]
    assert sorted(after[14:]) == [
        ("globex", WS, 1, 5),
        ("globex", WS, 5, 0),
        ("globex", WS_OTHER, 1, 5),
        ("globex", WS_OTHER, 5, 0),
    ]
    assert total == 5
    assert [(c["id"], c["title"], c["message_count"]) for c in page] == [
        (1, "globex 0", 5),
        (2, "globex 1", 0),
        (3, "globex 2", 0),
        (4, "globex 3", 0),
        (5, "globex 4", 0),
    ]


def test_a_chat_rewrite_that_fails_leaves_the_chats_as_they_were_and_the_next_one_runs(tmp_path):
    arrivals = _chats_arrivals(range(2))  # 4 batches: 8 chats, chat 1 of each workspace messaged twice
    store = _sorting(DuckDBStore(tmp_path / "parley.duckdb"), 1_000)  # no rewrite while storing
    try:
        _store(arrivals, store)
        came = _chat_rows(store)
        mark = {"mark": -1}
        # Set aside and deleted, then a copy the engine refuses: the transaction changes nothing.
        broken = replace(sort_newest_sql("chat_state"), copy="INSERT INTO chat_state SELECT * FROM no_such_table")
        failed = store._rewrite("chat_state", broken, mark, "the chats")
        after_failure = _chat_rows(store)
        done = store._rewrite("chat_state", sort_newest_sql("chat_state"), mark, "the chats")
        in_order = _chat_rows(store)
    finally:
        store.close()
    assert came != sorted(came)  # as they came: globex's first
    assert failed is False
    assert after_failure == came
    assert done is True
    assert sorted(in_order) == sorted(came)
    assert in_order == [  # org, workspace, then creation, newest first: chat 2 before chat 1
        (org, ws, chat, 2 if chat == 1 else 0) for org in ("acme", "globex") for ws in (WS, WS_OTHER) for chat in (2, 1)
    ]
