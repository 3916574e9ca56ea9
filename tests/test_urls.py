"""Database URLs: which engine and which path each names (contract section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.store.urls import parse_database_url


@pytest.mark.parametrize(
    ("url", "engine", "path"),
    [
        ("duckdb:///srv/parley/parley.duckdb", "duckdb", Path("/srv/parley/parley.duckdb")),
        ("duckdb:///./parley-data/parley.duckdb", "duckdb", Path("parley-data/parley.duckdb")),
        ("duckdb:///../data/p.duckdb", "duckdb", Path("../data/p.duckdb")),
        ("duckdb:///~/p.duckdb", "duckdb", Path.home() / "p.duckdb"),
        # SQLAlchemy's absolute form named //srv/..., which Linux opens as /srv/... but
        # every message then showed with two slashes.
        ("duckdb:////srv/parley/parley.duckdb", "duckdb", Path("/srv/parley/parley.duckdb")),
        ("chdb:////srv/parley-chdb", "chdb", Path("/srv/parley-chdb")),
        ("chdb:///./parley-chdb", "chdb", Path("parley-chdb")),
    ],
)
def test_a_file_store_url_names_its_path(url: str, engine: str, path: Path):
    target = parse_database_url(url)
    assert (target.engine, target.path, target.url) == (engine, path, url)
    assert str(target.path) == str(path)  # the path as messages show it


def test_a_clickhouse_url_is_kept_whole():
    url = "clickhouse://user:secret@ch.internal:8123/parley"
    assert parse_database_url(url) == type(parse_database_url(url))("clickhouse", None, url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("parley.duckdb", "not a database URL: 'parley.duckdb' (expected duckdb:///path/file.duckdb)"),
        ("duckdb:///", "duckdb URL needs a path: 'duckdb:///'"),
        ("duckdb:////", "duckdb URL needs a path: 'duckdb:////'"),
        ("clickhouse:///parley", "clickhouse URL needs a host: 'clickhouse:///parley'"),
        ("sqlite:///p.db", "unknown database scheme 'sqlite': use duckdb, chdb or clickhouse"),
    ],
)
def test_a_url_naming_no_store_is_refused_with_the_reason(url: str, reason: str):
    with pytest.raises(ValueError) as refused:
        parse_database_url(url)
    assert str(refused.value) == reason
