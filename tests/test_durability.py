"""An acknowledged event survives the server being killed right after the answer."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import STORE_KINDS, store_url_for
from tests.factories import T0, WS, call, member
from tests.processes import run_cli, running_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_sigkill_after_acknowledgement_loses_nothing(tmp_path: Path, kind: str):
    url = store_url_for(kind, tmp_path)
    ingest_key = run_cli(url, "keys", "create", "--org", "acme", "--ingest").stdout.strip().splitlines()[-1]
    member_key = (
        run_cli(url, "keys", "create", "--org", "acme", "--workspace", WS, "--member", "1")
        .stdout.strip()
        .splitlines()[-1]
    )
    batches = [[member(1, "admin", id="m1")]] + [
        [call(f"c{b}-{i}", "a1", T0, duration=60, id=f"c{b}-{i}") for i in range(500)] for b in range(4)
    ]
    with running_server(url) as (base, process):
        for batch in batches:
            response = httpx.post(
                f"{base}/api/v2/ingest",
                json={"batch": batch},
                headers={"Authorization": f"Bearer {ingest_key}"},
            )
            assert response.status_code == 207 and len(response.json()["successes"]) == len(batch)
        process.send_signal(signal.SIGKILL)  # no shutdown, no checkpoint
        process.wait(timeout=10)
    with running_server(url) as (base, _):
        data = httpx.get(
            f"{base}/analytics/calls/by-assistant",
            params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
            headers={"Authorization": f"Bearer {member_key}"},
        ).json()
        assert data["data"]["assistants"][0]["total_calls"] == 2000
        assert data["data"]["assistants"][0]["total_duration_minutes"] == 2000.0


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


def test_the_duckdb_store_checkpoints_once_its_log_holds_checkpoint_bytes(tmp_path: Path):
    # The store checkpoints, not DuckDB at a commit, so that its reads know when one runs.
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
        assert ingest_batch(store, org="acme", batch=batch).errors == []
        logged = log.stat().st_size
        assert logged > 0  # under 256 MB: the log holds the batch
        store.checkpoint_bytes = logged + 1
        more = [call(f"d{i}", "a1", T0, duration=60) for i in range(200)]
        assert ingest_batch(store, org="acme", batch=more).errors == []
        assert not log.exists() or log.stat().st_size == 0  # past it: checkpointed after the commit
        assert store.count_events(org="acme") == 401
        # Every write of the store checkpoints when due, a key's creation too.
        store.checkpoint_bytes = 256_000_000
        key = create_key(store, org="acme", ingest=True)
        assert log.stat().st_size > 0
        store.checkpoint_bytes = 1
        create_key(store, org="acme", workspace_id=WS, member_id=1)
        assert not log.exists() or log.stat().st_size == 0
    finally:
        store.close()
    reopened = DuckDBStore(path)
    try:
        assert reopened.count_events(org="acme") == 401
        assert verify_key(reopened, key) is not None
    finally:
        reopened.close()
