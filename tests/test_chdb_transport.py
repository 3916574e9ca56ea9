"""The embedded engine's transport: statements of several threads run at once, and closing waits for them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from parley.store.clickhouse import ChdbTransport

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


def test_closing_waits_for_the_statements_running(tmp_path: Path):
    # The server closes its store as it stops, while a request may still be reading.
    transport = ChdbTransport(tmp_path / "engine")
    answers = []
    long = threading.Thread(
        target=lambda: answers.append(transport.query("SELECT sleep(1) AS s, 'long-statement' AS m", {}).to_pylist())
    )
    long.start()
    deadline = time.monotonic() + 10  # a guard against a hang, not a timing
    while long.is_alive() and not transport.query(RUNNING, {}).to_pylist()[0]["n"] and time.monotonic() < deadline:
        pass
    transport.close()
    long.join()
    assert answers == [[{"s": 0, "m": "long-statement"}]]
    with pytest.raises(RuntimeError, match="is closed"):
        transport.query("SELECT 1 AS n", {})
    transport.close()  # again: nothing left to close
