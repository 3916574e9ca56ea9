"""The bulk loader's worker processes: a load through them stores what a load of one chunk
at a time stores, on a real DuckDB file and in the real chdb engine."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from parley.demo import SCALES, generate
from parley.ingest.events import Event
from parley.ingest.service import Chunk, LinesReport, ingest_chunks, ingest_lines, prepare_lines, validate_lines
from parley.store.port import Store, open_store
from tests.conftest import STORE_KINDS, store_url_for
from tests.processes import cli_env, demo_jsonl, multiprocessing_children, parley_command, still_alive

pytestmark = pytest.mark.slow

CHUNK = 400
TABLE_OF_TYPE = {
    "workspace.upsert": "workspaces",
    "member.upsert": "members",
    "assistant.upsert": "assistants",
    "user.upsert": "users",
    "chat.upsert": "chat_events",
    "chat.update": "chat_events",
    "message.create": "messages",
    "call.create": "calls",
    "session.create": "sessions",
    "trace.create": "traces",
    "observation.create": "observations",
    "feedback.create": "feedback",
}
# Columns that hold the time of storing, which two loads never share.
STORING_TIMES = {"ingested_at"}
TABLES_SQL = {
    "duckdb": "SELECT table_name FROM duckdb_tables() ORDER BY 1",
    "chdb": "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY 1",
}
COLUMNS_SQL = {
    "duckdb": "SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}' ORDER BY column_index",
    "chdb": "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}' ORDER BY position",
}


def _lines() -> tuple[list[bytes], dict[str, Any]]:
    """A demo data set's lines (every eighth event, so every type and some references
    to events left out) with a bad line, an invalid event, and events that repeat an id
    or an entity in their own chunk and in a later chunk; and what the load must report."""
    events = list(generate(SCALES["demo"], seed=3, end=datetime(2024, 6, 15, tzinfo=UTC)))[::8]
    lines = [orjson.dumps(e) for e in events]

    def message_in(chunk: int) -> int:
        """The index of a message well inside ``chunk``, away from its edges."""
        start = chunk * CHUNK + 20
        return next(i for i in range(start, start + CHUNK - 40) if events[i]["type"] == "message.create")

    bad_json = b'{"org": "acme", broken'
    invalid = orjson.dumps({**events[5], "id": "no-body", "type": "call.create", "body": {}})
    in_chunk, earlier = message_in(2), message_in(1)
    inserts = [  # (index in ``events``, line): each lands in that index's chunk
        (CHUNK + 30, lines[CHUNK + 25]),  # an id twice in one chunk
        (in_chunk + 1, orjson.dumps({**events[in_chunk], "id": "same-message"})),  # an entity twice
        (3 * CHUNK + 50, bad_json),
        (3 * CHUNK + 100, lines[2 * CHUNK + 10]),  # an id of chunk 2, stored with it in one group
        (4 * CHUNK + 50, invalid),
        (5 * CHUNK + 50, lines[1]),  # an id of the first chunk
        (7 * CHUNK + 50, orjson.dumps({**events[earlier], "id": "same-message-later"})),  # an entity of chunk 1
    ]
    for at, line in sorted(inserts, reverse=True):
        lines.insert(at, line)
    rejected = [lines.index(bad_json) + 1, lines.index(invalid) + 1]
    # Every id is claimed by its first copy, a repeated entity's too; every event is stored once.
    ids = {(e["org"], e["id"]) for e in events}
    ids |= {(events[in_chunk]["org"], "same-message"), (events[earlier]["org"], "same-message-later")}
    rows: dict[str, int] = {}
    for e in events:
        table = TABLE_OF_TYPE[e["type"]]
        rows[table] = rows.get(table, 0) + 1
    return lines, {"accepted": len(events), "duplicates": 5, "rejected": rejected, "ids": ids, "rows": rows}


def _chunks(lines: list[bytes]) -> list[Chunk]:
    return [Chunk(i + 1, lines[i : i + CHUNK], 0) for i in range(0, len(lines), CHUNK)]


def _contents(store: Store, kind: str) -> dict[str, list[str]]:
    """Every table's rows, without the times of storing, in a canonical order; a user's
    number (DuckDB's, handed out a batch at a time, so differently by batches of other
    sizes) shown as the user id it stands for."""

    def canonical(value: Any) -> Any:
        if isinstance(value, list):  # lists aggregated in parallel come in any order
            return sorted((canonical(v) for v in value), key=repr)
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        return value

    tables = [table for (table,) in store._fetchall(TABLES_SQL[kind], {})]
    numbered = {}
    if "user_numbers" in tables:
        numbered = {
            (org, no): user for org, user, no in store._fetchall("SELECT org, user_id, user_no FROM user_numbers", {})
        }
    out = {}
    for table in tables:
        names = [name for (name,) in store._fetchall(COLUMNS_SQL[kind].format(table=table), {})]
        kept = [name for name in names if name not in STORING_TIMES]
        rows = [list(row) for row in store._fetchall(f"SELECT {', '.join(kept)} FROM {table}", {})]
        if "user_no" in kept:
            org, no = kept.index("org"), kept.index("user_no")
            for row in rows:
                row[no] = numbered.get((row[org], row[no]), row[no])
        out[table] = sorted(repr(tuple(canonical(v) for v in row)) for row in rows)
    return out


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_load_through_worker_processes_stores_what_one_chunk_at_a_time_stores(tmp_path: Path, kind: str):
    lines, expected = _lines()
    chunks = _chunks(lines)

    # One store open at a time: chdb runs one embedded engine per process.
    one_at_a_time = open_store(store_url_for(kind, tmp_path / "reference"))
    try:
        reference, per_chunk = LinesReport(), []
        for chunk in chunks:
            per_chunk.append(ingest_lines(one_at_a_time, chunk.lines, first_line=chunk.first_line, org=None))
            reference.merge(per_chunk[-1])
        reference_contents = _contents(one_at_a_time, kind)
    finally:
        one_at_a_time.close()

    store = open_store(store_url_for(kind, tmp_path / "workers"))
    try:
        batches: list[int] = []  # the events of each batch the store took as columns
        by_columns = store.ingest_columns

        def noting(batch):  # the real method, its outcome noted
            keys = by_columns(batch)
            if keys is not None:
                batches.append(len(keys))
            return keys

        store.ingest_columns = noting  # type: ignore[method-assign]
        report, seen = LinesReport(), []
        for chunk, chunk_report in ingest_chunks(store, chunks, org=None, workers=2, together=4):
            seen.append(chunk.first_line)
            report.merge(chunk_report)
        contents = _contents(store, kind)
        ledger = set(store._fetchall("SELECT org, event_id FROM event_ledger", {}))
        rows = {table: store._fetchall(f"SELECT count(*) FROM {table}", {})[0][0] for table in expected["rows"]}
    finally:
        store.close()

    assert seen == [chunk.first_line for chunk in chunks]  # in file order
    for loaded in (report, reference):
        assert loaded.accepted == expected["accepted"]
        assert loaded.duplicates == expected["duplicates"]
        assert [line for line, _ in loaded.rejected] == expected["rejected"]
    assert report.rejected == reference.rejected
    # The first chunk is stored in this process, and the chunks after it 4 at a time: the
    # groups of chunks 1-4 (3 repeats an id of 2) and 5-8 (5 and 7 repeat an event or entity
    # stored before them) chunk by chunk, 3, 5 and 7 by events, every other group whole.
    assert len(chunks) == 13
    expected_batches = [per_chunk[i].accepted for i in (1, 2, 4, 6, 8)]
    expected_batches.append(sum(per_chunk[i].accepted for i in (9, 10, 11, 12)))
    assert batches == expected_batches
    assert ledger == expected["ids"]
    assert rows == expected["rows"]
    assert contents == reference_contents


def test_a_duckdb_bulk_load_checkpoints_less_often_until_it_ends(tmp_path: Path):
    lines, _ = _lines()
    store = open_store(f"duckdb:///{tmp_path}/bulk.duckdb")
    load = ingest_chunks(store, _chunks(lines)[:3], org=None, workers=1)
    abandoned = ingest_chunks(store, _chunks(lines)[3:6], org=None, workers=1)
    try:
        assert store.checkpoint_bytes == 256_000_000
        next(load)
        assert store.checkpoint_bytes == 1_000_000_000  # while the load runs
        assert len(list(load)) == 2
        assert store.checkpoint_bytes == 256_000_000
        next(abandoned)
        abandoned.close()  # a load given up halfway sets it back too
        assert store.checkpoint_bytes == 256_000_000
    finally:
        load.close()
        abandoned.close()
        store.close()


@pytest.mark.parametrize(("configured", "loading"), [(64_000_000, 1_000_000_000), (2_000_000_000, 2_000_000_000)])
def test_a_bulk_load_sets_back_the_configured_checkpoint_size(tmp_path: Path, configured: int, loading: int):
    # PARLEY_DUCKDB_CHECKPOINT_MB: a load raises it to a gigabyte while it runs, never lowers it.
    lines, _ = _lines()
    store = open_store(f"duckdb:///{tmp_path}/bulk.duckdb", checkpoint_bytes=configured)
    load = ingest_chunks(store, _chunks(lines)[:3], org=None, workers=1)
    try:
        assert store.checkpoint_bytes == configured
        next(load)
        assert store.checkpoint_bytes == loading
        assert len(list(load)) == 2
        assert store.checkpoint_bytes == configured
    finally:
        load.close()
        store.close()


def test_a_chunk_prepared_a_part_at_a_time_is_prepared_as_in_one_part():
    # The data set's chunks repeat an id and an entity a few lines apart, hold a line that
    # is not JSON and an invalid event: parts of 1 and 7 lines set them in other parts.
    lines, expected = _lines()
    rejected, keys, repeated = [], [], 0
    for chunk in _chunks(lines):
        whole = prepare_lines(chunk.lines, first_line=chunk.first_line, org=None, part_lines=CHUNK)
        assert whole.batch is not None
        rejected += [line for line, _ in whole.rejected]
        keys += whole.batch.keys
        repeated += whole.batch.repeated
        for part_lines in (1, 7):
            parts = prepare_lines(chunk.lines, first_line=chunk.first_line, org=None, part_lines=part_lines)
            assert parts.rejected == whole.rejected
            assert parts.batch is not None
            assert (parts.batch.keys, parts.batch.repeated) == (whole.batch.keys, whole.batch.repeated)
            for name in ("ledger", "entities"):
                assert getattr(parts.batch, name).equals(getattr(whole.batch, name)), name
            assert parts.batch.tables.keys() == whole.batch.tables.keys()
            for name, table in whole.batch.tables.items():
                assert parts.batch.tables[name].equals(table), name
                assert parts.batch.tables[name].column(0).num_chunks == 1
    # Repeated within their chunks: the id and the entity repeated in their own chunk. The
    # three repeated in a later chunk are each kept by both chunks (the store finds them):
    # two ids met twice, and an entity under an id of its own.
    assert rejected == expected["rejected"]
    assert repeated == 2
    assert len(keys) == expected["accepted"] + 3
    assert len(set(keys)) == expected["accepted"] + 1


def test_a_workers_chunk_is_prepared_with_the_cycle_collector_paused_and_left_as_it_was():
    lines, expected = _lines()
    chunk = _chunks(lines)[3]  # holds the line that is not JSON
    collections: list[int] = []
    events_met: list[int] = []  # the events alive in the young generation at each collection

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])
            events_met.append(sum(isinstance(o, Event) for o in gc.get_objects(generation=0)))

    threshold = gc.get_threshold()
    gc.set_threshold(50, *threshold[1:])  # a young collection every 50 new objects
    gc.callbacks.append(note)
    try:
        prepared = prepare_lines(chunk.lines, first_line=chunk.first_line, org=None)
        during, enabled_after = len(collections), gc.isenabled()
        validate_lines(chunk.lines, first_line=chunk.first_line, org=None)  # the same work, collected
        collected_without = len(collections) - during
        gc.disable()
        prepare_lines(chunk.lines, first_line=chunk.first_line, org=None)
        disabled_after = not gc.isenabled()
    finally:
        gc.enable()
        gc.callbacks.remove(note)
        gc.set_threshold(*threshold)

    # At most the one collection that the block's first new object after it starts, which
    # meets none of the chunk's events (they die in the block); the same lines validated
    # with the collector on start dozens, which meet them.
    assert during <= 1 and collected_without > 10
    assert events_met[:during] == [0] * during
    assert max(events_met[during : during + collected_without]) > 0
    assert (enabled_after, disabled_after) == (True, True)
    assert prepared.rejected == [
        (expected["rejected"][0], "not JSON: unexpected character, expected a string key at column 17")
    ]
    assert prepared.batch is not None and prepared.batch.repeated == 0
    assert sum(table.num_rows for table in prepared.batch.tables.values()) == CHUNK - 1


def test_a_bulk_load_killed_leaves_no_worker_behind(tmp_path: Path):
    # Its workers (and their resource tracker) waited forever for their next chunk, holding
    # 70 to 200 MB each, their parent gone. (So did they after a plain SIGTERM, which now
    # stops the load through its clean-up: tests/test_load_stop.py.)
    lines = demo_jsonl()
    assert lines.count(b"\n") > 40_000  # two whole chunks: a worker is started for the second
    loader = subprocess.Popen(
        parley_command("ingest", "-"),
        env=cli_env(store_url_for("duckdb", tmp_path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        loader.stdin.write(lines)  # and left open: the loader waits for its third chunk
        loader.stdin.flush()
        deadline = time.monotonic() + 60
        while True:
            workers = multiprocessing_children(loader.pid)
            if any(b"spawn_main" in command for _, command in workers):
                break
            assert loader.poll() is None and time.monotonic() < deadline, "no worker was started"
            time.sleep(0.02)
        time.sleep(1.5)  # its start done (imports, then its initializer), and the second chunk
        os.kill(loader.pid, signal.SIGKILL)
        assert loader.wait(timeout=30) == -signal.SIGKILL
        assert still_alive([pid for pid, _ in workers], within=30) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loader.pid, signal.SIGKILL)
        with contextlib.suppress(BrokenPipeError):
            loader.stdin.close()
        loader.wait()
