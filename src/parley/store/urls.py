"""Database URLs: which engine, and where (contract section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class DatabaseTarget:
    engine: str  # duckdb | chdb | clickhouse
    path: Path | None = None
    url: str = ""


def parse_database_url(url: str) -> DatabaseTarget:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r} (expected duckdb:///path/file.duckdb)")
    if scheme in ("duckdb", "chdb"):
        # duckdb:///abs/path names /abs/path; duckdb:///./rel and duckdb:///~/x are relative.
        # duckdb:////abs/path (SQLAlchemy's absolute form) names /abs/path too, not //abs/path.
        if rest.startswith(("/./", "/../", "/~")):
            raw = rest[1:]
        else:
            raw = "/" + rest.lstrip("/") if rest.startswith("//") else rest
        if raw in ("", "/"):
            raise ValueError(f"{scheme} URL needs a path: {url!r}")
        path = Path(raw)
        return DatabaseTarget(scheme, path.expanduser(), url)
    if scheme == "clickhouse":
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"clickhouse URL needs a host: {url!r}")
        return DatabaseTarget("clickhouse", None, url)
    raise ValueError(f"unknown database scheme {scheme!r}: use duckdb, chdb or clickhouse")
