"""The DuckDB store's reads never wait for a checkpoint.

DuckDB holds up a scan of a table with an index (a primary key included) until a running
checkpoint ends when the scan's conditions are on exactly one column: that is the only
kind of scan it reads an index for, and it takes the table's checkpoint lock to do so. At
scale M under ingestion such a read waited up to 2.3 s (docs/benchmarks.md, "Reads during
a live server's checkpoints"). So every read of such a table puts conditions on two
columns or more, or on none, even where DuckDB's statistics drop a condition that every
row meets: in a store of one org, ``org = 'acme'`` (see ``never_waits``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.auth.keys import create_key
from parley.settings import Settings
from parley.store.duckdb import DuckDBStore
from tests.conftest import NOW, bearer
from tests.factories import WS, member, one_of_each, read_urls


class _Recorded:
    """A real DuckDB connection that notes every statement run through it or through the
    cursors it makes."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[tuple[str, Any]]):
        self._con = con
        self._statements = statements

    def cursor(self) -> _Recorded:
        return _Recorded(self._con.cursor(), self._statements)

    def execute(self, sql: str, parameters: Any = None) -> Any:
        self._statements.append((sql, parameters))
        return self._con.execute(sql, parameters)

    def sql(self, sql: str, *, params: Any = None) -> Any:
        self._statements.append((sql, params))
        return self._con.sql(sql, params=params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """(table, type of scan, how many columns its conditions are on) of each table scan of a
    profiled plan: DuckDB lists a scan's conditions one column at a time."""
    info = node.get("extra_info", {})
    if "Table" in info:
        filters = info.get("Filters") or []
        yield info["Table"].split(".")[-1], info["Type"], 1 if isinstance(filters, str) else len(filters)
    for child in node.get("children", []):
        yield from _scans(child)


def test_no_read_scans_a_table_with_an_index_by_one_column(tmp_path: Path):
    store = DuckDBStore(tmp_path / "parley.duckdb")  # one org, one workspace
    try:
        app = create_app(Settings(database_url=store.url), store=store, clock=lambda: NOW)
        with TestClient(app) as client:
            events = [member(1, "admin"), *one_of_each(NOW - timedelta(days=2))]
            ingest = bearer(create_key(store, org="acme", ingest=True))
            assert client.post("/api/v2/ingest", json={"batch": events}, headers=ingest).json()["errors"] == []
            admin = bearer(create_key(store, org="acme", workspace_id=WS, member_id=1))
            real = store._con
            statements: list[tuple[str, Any]] = []
            store._con = _Recorded(real, statements)  # type: ignore[assignment]
            store._idle_cursors.clear()
            try:
                for url in read_urls(NOW):
                    assert client.get(url, headers=admin).status_code == 200, url
                cost = next(url for url in read_urls(NOW) if "/user-cost/" in url)
                assert client.get(cost, headers=admin).json() == {"total_cost": 0.25}
            finally:
                store._con = real
        indexed = {
            table
            for (table,) in real.execute(
                "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                "UNION SELECT table_name FROM duckdb_indexes()"
            ).fetchall()
        }
        shapes = []
        for sql, params in statements:
            if sql.startswith("USE "):  # a new cursor choosing the store's database, not a read
                continue
            plan = json.loads(real.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()[0][1])
            shapes.append({scan for op in plan["operator"] for scan in _scans(op) if scan[0] in indexed})
    finally:
        store.close()
    scanned = set().union(*shapes)
    # The tables with an index that the endpoints read (the ledgers, user_numbers and
    # parley_meta are read by ingestion and start-up alone).
    assert {table for table, _, _ in scanned} == {"api_keys", "chat_state", "member_names", "user_state"}
    assert {scan for scan in scanned if scan[2] == 1} == set()
