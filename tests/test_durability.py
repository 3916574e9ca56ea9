"""An acknowledged event survives the server being killed right after the answer, or in
the middle of other clients' batches."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from parley.bench import _batches
from parley.demo import DemoWorkspace, generate, workspaces
from tests.conftest import STORE_KINDS, bearer, store_url_for
from tests.factories import T0, WS, call, member
from tests.processes import new_key, run_cli, running_server
from tests.test_equivalence import END, SCALE, _urls

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_sigkill_after_acknowledgement_loses_nothing(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    ingest_key = new_key(url, "--org", "acme", "--ingest")
    member_key = new_key(url, "--org", "acme", "--workspace", WS, "--member", "1")
    batches = [[member(1, "admin", id="m1")]] + [
        [call(f"c{b}-{i}", "a1", T0, duration=60, id=f"c{b}-{i}") for i in range(500)] for b in range(4)
    ]
    with running_server(url) as (base, process):
        for batch in batches:
            response = httpx.post(
                f"{base}/api/v2/ingest",
                json={"batch": batch},
                headers=bearer(ingest_key),
            )
            assert response.status_code == 207 and len(response.json()["successes"]) == len(batch)
        process.send_signal(signal.SIGKILL)  # no shutdown, no checkpoint
        process.wait(timeout=10)
    with running_server(url) as (base, _):
        data = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
            headers=bearer(member_key),
        ).json()
        assert data["data"]["assistants"][0]["total_calls"] == 2000
        assert data["data"]["assistants"][0]["total_duration_minutes"] == 2000.0


def _send_through_kills(url: str, batches: list[tuple[str, bytes]], keys: dict[str, str], kills: list[int]) -> None:
    """Four clients send ``batches``, each until it is acknowledged, as a platform retries;
    the server is SIGKILLed (and started again) once each count in ``kills`` of batches is
    acknowledged, with the clients' next batches on their way."""
    server, up, lock = {"base": ""}, threading.Event(), threading.Lock()
    acknowledged, failures, waiting = [0], [], iter(range(len(batches)))

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while (i := next(waiting, None)) is not None:
                org, body = batches[i]
                headers = {**bearer(keys[org]), "Content-Type": "application/json"}
                while True:
                    up.wait()
                    try:
                        response = http.post(f"{server['base']}/api/v2/ingest", content=body, headers=headers)
                    except httpx.HTTPError:  # killed before it answered: send the batch again
                        time.sleep(0.05)
                        continue
                    if response.status_code != 207 or response.json()["errors"]:
                        failures.append(f"batch {i}: {response.status_code} {response.text[:300]}")
                        return
                    break
                with lock:
                    acknowledged[0] += 1

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for kill_at in [*kills, None]:
        with running_server(url) as (base, process):
            server["base"] = base
            up.set()
            if not clients[0].is_alive():
                for thread in clients:
                    thread.start()
            if kill_at is None:
                for thread in clients:
                    thread.join(timeout=120)
                break
            deadline = time.monotonic() + 120
            while acknowledged[0] < kill_at and not failures:
                assert time.monotonic() < deadline, f"{acknowledged[0]} batches acknowledged, waiting for {kill_at}"
                time.sleep(0.005)
            up.clear()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert acknowledged[0] < len(batches) - 4  # batches still to send
    assert failures == [] and acknowledged[0] == len(batches)


def _answers(
    url: str, headers: dict[str, str], ws: DemoWorkspace
) -> tuple[dict[str, int], dict[str, tuple[int, bytes]]]:
    """From a server on ``url``: each assistant's calls since 2024-04-01, and the answer to
    each of the equivalence test's requests."""
    with running_server(url) as (base, _):
        calls = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-04-01", "end_date": "2024-06-15"},
            headers=headers,
        ).json()["data"]["assistants"]
        answered = {}
        for path in _urls(ws, calls[0]["assistant_id"]):
            response = httpx.get(base + path, headers=headers, timeout=60)
            answered[path] = (response.status_code, response.content)
    return {a["assistant_id"]: a["total_calls"] for a in calls}, answered


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_server_killed_while_four_clients_send_answers_as_a_bulk_load_of_the_same_events(tmp_path: Path, kind: str):
    """A live mix from four clients, the server SIGKILLed three times as they send: no event
    is lost and none counted twice. Every answer is that of a bulk load of the same events,
    each assistant's calls are those sent, and every event loaded again is a duplicate."""
    events = list(generate(SCALE, seed=13, end=END))  # 60 days up to 2024-06-15
    ws = workspaces(SCALE, seed=13)[0]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    bulk_url, killed_url = store_url_for(kind, tmp_path / "bulk"), store_url_for(kind, tmp_path / "killed")
    assert f"accepted {len(events)}, duplicates 0, rejected 0" in run_cli(bulk_url, "ingest", str(jsonl)).stdout
    member_args = ("--org", ws.org, "--workspace", ws.workspace_id, "--member", str(ws.admin_member_id))
    admins = {url: bearer(new_key(url, *member_args)) for url in (bulk_url, killed_url)}
    ingest_keys = {org: new_key(killed_url, "--org", org, "--ingest") for org in {e["org"] for e in events}}

    # Every org's events in time order, in batches of one org each, as the bench sends them.
    mix = sorted(events, key=lambda e: (e["timestamp"], e["id"]))
    batches = _batches([(e["org"], orjson.dumps({k: v for k, v in e.items() if k != "org"})) for e in mix], size=200)
    _send_through_kills(killed_url, batches, ingest_keys, kills=[8, 20, 33])

    sent_calls = Counter(
        e["body"]["assistant_id"]
        for e in events
        if e["type"] == "call.create" and e["body"]["workspace_id"] == ws.workspace_id
    )
    assert sum(sent_calls.values()) > 100
    killed_calls, killed = _answers(killed_url, admins[killed_url], ws)
    _, bulk = _answers(bulk_url, admins[bulk_url], ws)
    assert killed_calls == sent_calls
    assert [path for path in bulk if killed[path] != bulk[path]] == []
    assert sum(status == 200 and len(body) > 200 for status, body in bulk.values()) > 30
    # Every event is stored once: loaded again, each is a duplicate.
    again = run_cli(killed_url, "ingest", str(jsonl)).stdout
    assert f"accepted 0, duplicates {len(events)}, rejected 0" in again


# Every table of a ClickHouse store; each insert into them is synced before it returns.
CLICKHOUSE_TABLES = {
    "api_keys",
    "assistants",
    "calls",
    "chat_events",
    "entity_ledger",
    "event_ledger",
    "feedback",
    "members",
    "messages",
    "observations",
    "parley_meta",
    "sessions",
    "traces",
    "users",
    "workspaces",
}
SYNCED = ["fsync_after_insert = 1", "fsync_part_directory = 1"]


def _sync_settings(store) -> dict[str, list[str]]:
    """Each table's settings of syncing to the disk, as the engine reports them."""
    rows = store._fetchall("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()", {})
    return {name: re.findall(r"fsync_\w+ = \d", full) for name, full in rows}


def test_a_clickhouse_store_syncs_each_insert_to_the_disk_before_it_returns(tmp_path: Path):
    # ClickHouse syncs no part by default: the process killed loses nothing, but a power
    # cut could drop the part of an answered event.
    from parley.store.port import open_store

    url = store_url_for("chdb", tmp_path)
    store = open_store(url)
    try:
        assert _sync_settings(store) == dict.fromkeys(CLICKHOUSE_TABLES, SYNCED)
        # As an earlier Parley made it, and as an operator who keeps replicas instead left it.
        for table in ("messages", "event_ledger"):  # one of schema.TABLES, one of Parley's own
            store._transport.command(f"ALTER TABLE {table} RESET SETTING fsync_after_insert, fsync_part_directory")
        store._transport.command("ALTER TABLE calls MODIFY SETTING fsync_after_insert = 0")
        reset = _sync_settings(store)
        assert reset["messages"] == reset["event_ledger"] == []
    finally:
        store.close()
    store = open_store(url)
    try:
        unsynced_calls = ["fsync_after_insert = 0", "fsync_part_directory = 1"]
        assert _sync_settings(store) == dict.fromkeys(CLICKHOUSE_TABLES, SYNCED) | {"calls": unsynced_calls}
    finally:
        store.close()


def test_an_opening_that_fails_part_way_leaves_the_store_as_it_was(tmp_path: Path):
    import duckdb

    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"
    DuckDBStore(path).close()
    with duckdb.connect(str(path)) as con:  # a store made before message_text, with a row it cannot take
        con.execute("DROP TABLE message_text")
        con.execute("INSERT INTO messages (org, workspace_id, content) VALUES ('acme', 'w', 'no chat id')")
    with pytest.raises(duckdb.ConstraintException):
        DuckDBStore(path)  # filling message_text fails on that row
    with duckdb.connect(str(path)) as con:
        tables = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'message_text'"
        assert con.execute(tables).fetchall() == [(0,)]  # not left empty, to be skipped at the next opening
        con.execute("DELETE FROM messages")
    DuckDBStore(path).close()
    with duckdb.connect(str(path)) as con:
        assert con.execute(tables).fetchall() == [(1,)]


def test_duckdb_reads_from_threads_that_come_and_go_share_one_cursor(tmp_path: Path):
    # The server's worker threads end when idle: a read cursor must not outlive each one.
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    store = DuckDBStore(tmp_path / "parley.duckdb")
    try:
        batch = [member(1, "admin"), call("c1", "a1", T0), call("c2", "a1", T0)]
        assert ingest_batch(store, org="acme", batch=batch).errors == []
        counts: list[int] = []
        for _ in range(20):
            thread = threading.Thread(target=lambda: counts.append(store.count_events(org="acme")))
            thread.start()
            thread.join()
        assert counts == [3] * 20
        assert len(store._cursors) == 1
    finally:
        store.close()


def _checkpoints_logged(caplog, what: str) -> list[tuple[float, float]]:
    """(MB of log, seconds) of each checkpoint the DuckDB store logged as ``what``."""
    line = re.compile(rf"{what}: (\d+\.\d) MB of write-ahead log written into the store in (\d+\.\d\d) s")
    return [
        (float(found[1]), float(found[2]))
        for record in caplog.records
        if record.name == "parley.store"
        and record.levelname == "INFO"
        and (found := line.fullmatch(record.getMessage()))
    ]


def test_the_duckdb_store_checkpoints_once_its_log_holds_checkpoint_bytes(tmp_path: Path, caplog):
    # The store checkpoints, not DuckDB at a commit, so that its reads know when one runs,
    # and logs each checkpoint: writes wait for it, for seconds at scale M.
    from parley.auth.keys import create_key, verify_key
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"
    log = Path(f"{path}.wal")
    store = DuckDBStore(path)
    try:
        # DuckDB's own threshold is out of reach (1,000 TB).
        assert store._fetchall("SELECT current_setting('checkpoint_threshold')", {})[0][0] == "909.4 TiB"
        assert store.checkpoint_bytes == 256_000_000
        batch = [member(1, "admin")] + [call(f"c{i}", "a1", T0, duration=60) for i in range(200)]
        with caplog.at_level("INFO", logger="parley.store"):
            assert ingest_batch(store, org="acme", batch=batch).errors == []
        logged = log.stat().st_size
        assert logged > 0  # under 256 MB: the log holds the batch
        assert not [r for r in caplog.records if r.name == "parley.store"]  # no checkpoint, nothing logged
        store.checkpoint_bytes = logged + 1
        more = [call(f"d{i}", "a1", T0, duration=60) for i in range(200)]
        with caplog.at_level("INFO", logger="parley.store"):
            assert ingest_batch(store, org="acme", batch=more).errors == []
        assert not log.exists() or log.stat().st_size == 0  # past it: checkpointed after the commit
        ((mb, seconds),) = _checkpoints_logged(caplog, "checkpoint")
        assert logged / 1e6 < mb < 2 * logged / 1e6 and 0 <= seconds < 60  # both batches' log, not one
        assert store.count_events(org="acme") == 401
        # Every write of the store checkpoints when due, a key's creation too.
        store.checkpoint_bytes = 256_000_000
        key = create_key(store, org="acme", ingest=True)
        assert log.stat().st_size > 0
        store.checkpoint_bytes = 1
        create_key(store, org="acme", workspace_id=WS, member_id=1)
        assert not log.exists() or log.stat().st_size == 0
        store.checkpoint_bytes = 256_000_000
        assert ingest_batch(store, org="acme", batch=[call(f"e{i}", "a1", T0) for i in range(8_000)]).errors == []
        left = log.stat().st_size
        assert left > 1_000_000  # a log the closing's checkpoint logs at INFO
    finally:
        with caplog.at_level("INFO", logger="parley.store"):
            store.close()
    ((mb, _),) = _checkpoints_logged(caplog, "closing")
    assert left / 1e6 - 0.05 <= mb < left / 1e6 + 0.5
    reopened = DuckDBStore(path)
    try:
        assert reopened.count_events(org="acme") == 8_401
        assert verify_key(reopened, key) is not None
    finally:
        reopened.close()
