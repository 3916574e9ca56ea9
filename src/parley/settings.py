"""Every setting Parley reads, declared once, each with its help text.

Values come from the environment with the ``PARLEY_`` prefix (for example
``PARLEY_DATABASE_URL``). ``tests/test_docs.py`` fails when a setting is not
documented in the README.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "duckdb:///./parley-data/parley.duckdb"
# An origin as a browser sends it: scheme, host and port, with no path (not even "/").
ORIGIN = re.compile(r"https?://[^/\s]+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description=(
            "Where Parley stores its data: duckdb:///path/file.duckdb (the embedded default), "
            "chdb:///path/dir or clickhouse://user:pass@host:8123/db."
        ),
    )
    host: str = Field("127.0.0.1", description="Address `parley serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `parley serve` listens on.")
    admin_socket: Path | None = Field(
        None,
        description=(
            "Unix socket through which the CLI reaches a running server (keys, ingest). "
            "Default: next to the embedded database file, `<file>.admin.sock`."
        ),
    )
    max_batch_events: int = Field(10_000, ge=1, description="Most events one ingestion request may carry (413 beyond).")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest ingestion request body in bytes, decompressed when gzip (413 beyond).",
    )
    duckdb_threads: int | None = Field(None, ge=1, description="Threads DuckDB may use per query (default: all cores).")
    duckdb_memory_limit: str | None = Field(
        None, description="DuckDB memory limit, such as `4GB` (default: DuckDB's own, 80% of RAM)."
    )
    duckdb_checkpoint_mb: int = Field(
        256,
        ge=1,
        description=(
            "The embedded store checkpoints once its write-ahead log holds this many megabytes. Every write "
            "waits for a checkpoint, which at tens of millions of events takes seconds however small the log: "
            "a larger value makes them rarer and each a little longer, for more memory and a longer replay "
            "after a crash; see docs/design.md."
        ),
    )
    model_prices: Path | None = Field(
        None,
        description=(
            "A JSON file of model prices (USD per million input/output tokens) that adds to or "
            "overrides the shipped table; see docs/design.md."
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info",
        description=(
            "Log level of Parley's own lines (every command's) and of uvicorn's (the server's): "
            "debug, info, warning, error or critical (any case)."
        ),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins whose web pages may call the API from a browser (CORS), comma-separated, "
            "such as `https://admin.example.com`, or `*` for any. Default: none."
        ),
    )

    @property
    def api_url(self) -> str:
        """Where a local client reaches ``parley serve``: a wildcard address (all
        interfaces) is reached at the loopback one."""
        wildcards = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (not bound here)
        host = wildcards.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [origin.strip() for origin in value.split(",") if origin.strip()]
        if isinstance(value, list):
            for origin in value:
                if origin != "*" and not (isinstance(origin, str) and ORIGIN.fullmatch(origin)):
                    raise ValueError(
                        f"{origin!r} is not an origin: give scheme and host (and port), with no path "
                        "or trailing slash, such as https://admin.example.com, or *"
                    )
        return value
