"""A store that cannot write (a full disk) refuses what it cannot keep, whole, and says so.

The processes run with a limit on the size of any file they write (``prlimit --fsize``):
the write-ahead log then cannot grow, as on a full disk. Before, ingestion took DuckDB's
failed commit for a fault of one of the events and stored the batch event by event,
each failing in turn: a 207 of "the store refused this event" (status 500) per event,
and 1,000 transactions for a batch of 1,000.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import httpx
import pytest

from parley.errors import STORE_UNAVAILABLE
from parley.store.duckdb import PART_UNAVAILABLE
from tests.conftest import bearer
from tests.factories import T0, WS, event, iso, member, messages
from tests.processes import run_cli, running_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="util-linux's prlimit is not installed"),
]

# Past the fresh store's file (about 1.3 MB): room for a few batches in the log, not all.
LIMIT = 4_000_000


def stored_messages(path: Path) -> int:
    return stored(path)["messages"]


def stored(path: Path) -> dict[str, int]:
    """How many messages and traces the store holds."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in ("messages", "traces")
        }


def test_an_ingest_the_store_cannot_write_is_a_503_and_nothing_of_it_is_kept(tmp_path: Path):
    path = tmp_path / "parley.duckdb"
    url = f"duckdb:///{path}"
    ingest_key = run_cli(url, "keys", "create", "--org", "acme", "--ingest").stdout.split()[-1]
    member_key = run_cli(url, "keys", "create", "--org", "acme", "--workspace", WS, "--member", "1").stdout.split()[-1]
    usage = f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage?from_date=2024-05-01&to_date=2024-05-01"
    acknowledged, refused = 0, []
    with running_server(url, file_size_limit=LIMIT) as (base, _):
        ingest = bearer(ingest_key)
        assert httpx.post(f"{base}/api/v2/ingest", json={"batch": [member(1, "admin")]}, headers=ingest).is_success
        for b in range(100):
            batch = messages(b * 500, 500)
            response = httpx.post(f"{base}/api/v2/ingest", json={"batch": batch}, headers=ingest, timeout=60)
            if response.status_code == 503:
                refused = batch
                break
            # Every batch before is stored whole.
            assert response.status_code == 207, response.text
            assert response.json()["errors"] == []
            assert [s["status"] for s in response.json()["successes"]] == [201] * 500
            acknowledged += 500
        assert refused, "the store never filled up"
        assert acknowledged > 0
        assert response.headers["retry-after"] == "30"
        assert response.json() == {
            "detail": "the store cannot answer now (the server's log says why); "
            "nothing of this request was done: send it again later"
        }
        # Reads go on, and count what was acknowledged.
        read = httpx.get(base + usage, headers=bearer(member_key))
        assert read.json() == {"data": {"Bot": [{"x": "2024-05-01", "y": acknowledged}]}}
    assert stored_messages(path) == acknowledged
    # With room again, the batch sent again is stored whole.
    with running_server(url) as (base, _):
        response = httpx.post(f"{base}/api/v2/ingest", json={"batch": refused}, headers=ingest, timeout=60)
        assert response.status_code == 207, response.text
        assert [s["status"] for s in response.json()["successes"]] == [201] * 500
    assert stored_messages(path) == acknowledged + 500


def traces(first: int, count: int) -> list[dict]:
    """Traces ``first`` to ``first + count - 1`` of user u1, their ids 250 characters long;
    event ids ``t<n>``."""
    return [
        event("trace.create", {"trace_id": f"{n}-".ljust(250, "x"), "user_id": "u1", "timestamp": iso(T0)}, id=f"t{n}")
        for n in range(first, first + count)
    ]


def test_a_batch_of_chats_and_people_acknowledges_only_what_the_store_kept(tmp_path: Path):
    # A batch's messages and its traces are written by two transactions at once (the
    # chats' part and the people's, ``DuckDBStore._store_events``); on a full disk both
    # may fail, or one alone. Every event is acknowledged (201) only if stored; the rest
    # are refused whole (503) or each with the part's reason (500), and sent again with
    # room, each is stored once.
    path = tmp_path / "parley.duckdb"
    url = f"duckdb:///{path}"
    ingest = bearer(run_cli(url, "keys", "create", "--org", "acme", "--ingest").stdout.split()[-1])
    acknowledged = {"messages": 0, "traces": 0}
    refused: list[dict] = []
    with running_server(url, file_size_limit=LIMIT) as (base, _):
        for b in range(100):
            batch = messages(b * 400, 400) + traces(b * 100, 100)
            table = {e["id"]: "messages" if e["type"] == "message.create" else "traces" for e in batch}
            response = httpx.post(f"{base}/api/v2/ingest", json={"batch": batch}, headers=ingest, timeout=60)
            if response.status_code == 503:
                assert response.json() == {"detail": STORE_UNAVAILABLE}
                refused = batch
                break
            assert response.status_code == 207, response.text
            body = response.json()
            for success in body["successes"]:
                assert success["status"] == 201
                acknowledged[table[success["id"]]] += 1
            assert {(e["status"], e["message"]) for e in body["errors"]} <= {(500, PART_UNAVAILABLE)}
            refused = [e for e in batch if e["id"] in {error["id"] for error in body["errors"]}]
            if refused:  # one part written, the other refused: each of the refused part's events
                assert {table[e["id"]] for e in refused} in ({"messages"}, {"traces"})
                assert len(refused) == (400 if table[refused[0]["id"]] == "messages" else 100)
                break
        assert refused, "the store never filled up"
        assert acknowledged["messages"] > 0
    assert stored(path) == acknowledged
    with running_server(url) as (base, _):
        response = httpx.post(f"{base}/api/v2/ingest", json={"batch": refused}, headers=ingest, timeout=60)
        assert response.json()["errors"] == []
        assert [s["status"] for s in response.json()["successes"]] == [201] * len(refused)
    for e in refused:
        acknowledged[table[e["id"]]] += 1
    assert stored(path) == acknowledged


# 10 chunks of 20,000 lines. The first is stored alone, all in the write-ahead log (7.3 MB,
# under the limit of 8 MB); the next 8 together, and DuckDB writes the rows of a
# transaction's full row groups straight into the store's file, compressed: 12.3 MB for
# those 160,000, past the limit whichever file they go to. With 100,000 lines the 80,000
# after the first took 6.6 to 6.8 MB of the file (the same data, varying from run to run)
# beside the fresh store's 1.3: at the limit, and a CI run stored them all.
BULK_LINES = 200_000


def bulk_store(tmp_path: Path) -> tuple[Path, str, Path]:
    """A store with an ingest key of acme, and a file of ``BULK_LINES`` messages for it."""
    path = tmp_path / "parley.duckdb"
    url = f"duckdb:///{path}"
    run_cli(url, "keys", "create", "--org", "acme", "--ingest")
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps({**e, "org": "acme"}) + "\n" for e in messages(0, BULK_LINES, padding=10)))
    return path, url, lines


def assert_stopped_part_way(full: subprocess.CompletedProcess, path: Path) -> int:
    """The load stopped with the store's reason, how far it got and the resume hint; what
    it kept, some: the lines it reported, which are lines 1 to the last it names."""
    assert full.returncode == 1, full.stdout + full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the store could not commit: "), last
    assert "File too large" in last
    stopped = re.search(
        r"; stopped after line (\d+), every line up to it stored \(as reported\); "
        r"loading the same lines again adds the rest$",
        last,
    )
    assert stopped is not None, last
    kept = stored_messages(path)
    assert 0 < kept < BULK_LINES
    assert full.stdout == f"accepted {kept}, duplicates 0, rejected 0\n"
    assert int(stopped[1]) == kept  # one message a line
    return kept


def assert_loaded_the_rest(again: subprocess.CompletedProcess, path: Path, kept: int) -> None:
    assert again.stdout.strip().splitlines()[-1] == f"accepted {BULK_LINES - kept}, duplicates {kept}, rejected 0"
    assert stored_messages(path) == BULK_LINES


def test_a_bulk_load_the_store_cannot_write_stops_with_the_reason_and_loads_the_rest_later(tmp_path: Path):
    path, url, lines = bulk_store(tmp_path)
    full = run_cli(url, "ingest", str(lines), file_size_limit=2 * LIMIT, check=False)
    kept = assert_stopped_part_way(full, path)
    assert "refused" not in full.stderr  # no line taken for a bad one: the report says "rejected 0"
    assert_loaded_the_rest(run_cli(url, "ingest", str(lines)), path, kept)


def test_a_bulk_load_through_a_server_that_cannot_write_names_the_cause_as_without_one(tmp_path: Path):
    # The operator channel is the operator's own: its 503 gives the cause, which the CLI
    # reports as it does when it opens the store itself.
    path, url, lines = bulk_store(tmp_path)
    with running_server(url, file_size_limit=2 * LIMIT):
        full = run_cli(url, "ingest", str(lines), check=False)  # the server holds the store: through it
    kept = assert_stopped_part_way(full, path)
    with running_server(url):
        again = run_cli(url, "ingest", str(lines))
    assert_loaded_the_rest(again, path, kept)  # the store read once the server has let it go
