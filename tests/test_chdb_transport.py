"""The embedded engine's transport: statements of several threads run at once, the writer's
beside every reader's, and closing waits for them."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from parley.store.clickhouse import CHDB_CONNECTIONS, ChdbTransport

RUNNING = (
    "SELECT count() AS n FROM system.processes "
    "WHERE query LIKE '%long-statement%' AND query NOT LIKE '%system.processes%'"
)


def test_a_statement_runs_while_another_thread_s_runs(tmp_path: Path):
    # The server answers each request on a thread of its own. With one statement at a time
    # on the engine (as the transport once ran them), the look-up below waited for the long
    # statement to end, and so never saw it running.
    transport = ChdbTransport(tmp_path / "engine")
    try:
        long = threading.Thread(target=transport.query, args=("SELECT sleep(2) AS s, 'long-statement' AS m", {}))
        long.start()
        seen = 0
        deadline = time.monotonic() + 10  # a guard against a hang, not a timing
        while not seen and long.is_alive() and time.monotonic() < deadline:
            seen = transport.query(RUNNING, {}).to_pylist()[0]["n"]
        long.join()
        assert seen == 1
    finally:
        transport.close()


@pytest.mark.parametrize("writing", [False, True], ids=["a-reader-s", "the-writer-s"])
def test_closing_waits_for_the_statements_running(tmp_path: Path, writing: bool):
    # The server closes its store as it stops, while a request may still be reading or writing.
    transport = ChdbTransport(tmp_path / "engine")
    answers = []

    def run() -> None:
        with transport.writing() if writing else contextlib.nullcontext():
            answers.append(transport.query("SELECT sleep(1) AS s, 'long-statement' AS m", {}).to_pylist())

    long = threading.Thread(target=run)
    long.start()
    deadline = time.monotonic() + 10  # a guard against a hang, not a timing
    while long.is_alive() and not transport.query(RUNNING, {}).to_pylist()[0]["n"] and time.monotonic() < deadline:
        pass
    transport.close()
    long.join()
    assert answers == [[{"s": 0, "m": "long-statement"}]]
    with pytest.raises(RuntimeError, match="is closed"):
        transport.query("SELECT 1 AS n", {})
    with pytest.raises(RuntimeError, match="is closed"), transport.writing():
        pass
    transport.close()  # again: nothing left to close


def test_the_writer_runs_while_every_shared_connection_is_busy(tmp_path: Path):
    # The store writes under ``writing()``. On the shared connections a write waited behind
    # the reads for one to be free: here it would have seen none of the long statements.
    transport = ChdbTransport(tmp_path / "engine")
    try:
        long = [
            threading.Thread(target=transport.query, args=("SELECT sleep(2) AS s, 'long-statement' AS m", {}))
            for _ in range(CHDB_CONNECTIONS)
        ]
        for thread in long:
            thread.start()
        seen = 0
        deadline = time.monotonic() + 10  # a guard against a hang, not a timing
        with transport.writing():
            while seen < CHDB_CONNECTIONS and any(t.is_alive() for t in long) and time.monotonic() < deadline:
                seen = transport.query(RUNNING, {}).to_pylist()[0]["n"]
        for thread in long:
            thread.join()
        assert seen == CHDB_CONNECTIONS
    finally:
        transport.close()
