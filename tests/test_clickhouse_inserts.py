"""An insert ClickHouse refuses raises, whatever stage refuses it: never acknowledged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from parley.store.clickhouse import ChdbTransport


def two_months() -> pa.Table:
    return pa.table({"i": [1, 2], "ts": pa.array([datetime(2024, 1, 1), datetime(2024, 2, 1)], pa.timestamp("us"))})


def assert_refused_whole(transport) -> None:
    """An insert refused as its parts are written raises and keeps nothing; then the
    transport is closed."""
    try:
        transport.command(
            "CREATE TABLE t (i Int64, ts DateTime64(6, 'UTC')) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY i"
        )
        # Refused as the parts are written, after every row was read: the stage chdb's
        # streaming insert reported as done.
        transport.command("SET max_partitions_per_insert_block = 1")
        with pytest.raises(Exception, match="Too many partitions"):
            transport.insert("t", two_months())
        assert transport.query("SELECT count() AS n FROM t", {}).to_pylist() == [{"n": 0}]
        transport.command("SET max_partitions_per_insert_block = 0")
        transport.insert("t", two_months())
        stored = transport.query("SELECT i, toString(ts) AS ts FROM t ORDER BY i", {}).to_pylist()
        assert stored == [{"i": 1, "ts": "2024-01-01 00:00:00.000000"}, {"i": 2, "ts": "2024-02-01 00:00:00.000000"}]
    finally:
        transport.close()


def test_the_embedded_transport_raises_what_the_engine_refuses(tmp_path: Path):
    assert_refused_whole(ChdbTransport(tmp_path / "engine"))
