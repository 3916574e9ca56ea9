"""Apps over a real store: a DuckDB file per test, the real HTTP app, fixed time."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.auth.keys import create_key
from parley.errors import STORE_UNAVAILABLE
from parley.settings import Settings
from parley.store.port import Store, open_store
from tests.factories import WS, member

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)

# Linux's memory file system, where the tests' files go when it has room for them.
MEMORY_FS = Path("/dev/shm")
MEMORY_FS_ROOM = 8 * 2**30


def pytest_configure(config: pytest.Config) -> None:
    """Put ``tmp_path``, and the temporary files of the CLI and servers the tests start, on
    the memory file system, unless told where (``--basetemp``, ``TMPDIR``) or it is small
    (Docker gives 64 MB by default). The stores are the same DuckDB files and chdb
    directories; only writing them costs less. A run of the suite writes about 116,000
    files and directories: on the 2-core machine it took 855 s rather than 926. A passing
    test's files are removed after it (``tmp_path_retention_policy``), so they hold the
    memory of about one test per process at a time (``make test`` runs two)."""
    if config.option.basetemp or "TMPDIR" in os.environ:
        return
    try:
        room = shutil.disk_usage(MEMORY_FS).free
    except OSError:  # no such file system here
        return
    if room >= MEMORY_FS_ROOM and os.access(MEMORY_FS, os.W_OK | os.X_OK):
        os.environ["TMPDIR"] = str(MEMORY_FS)  # inherited by the processes the tests start
        tempfile.tempdir = None  # read TMPDIR again


# Every store the endpoint tests run against.
STORE_KINDS = ["duckdb", "chdb"]


def store_url_for(kind: str, directory: Path) -> str:
    return {
        "duckdb": f"duckdb:///{directory}/parley-data/parley.duckdb",
        "chdb": f"chdb:///{directory}/parley-chdb",
    }[kind]


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def settings(store_url: str) -> Settings:
    return Settings(database_url=store_url)


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    app = create_app(settings, store=store, clock=lambda: NOW)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def ingest_key(store: Store) -> str:
    return create_key(store, org="acme", ingest=True)


@pytest.fixture
def ingest(client: TestClient, ingest_key: str) -> Callable[..., dict[str, Any]]:
    """POST events through the real endpoint; fails the test unless every event succeeds."""

    def send(*events: dict[str, Any], expect_ok: bool = True) -> dict[str, Any]:
        response = client.post("/api/v2/ingest", json={"batch": list(events)}, headers=bearer(ingest_key))
        assert response.status_code == 207, response.text
        body = response.json()
        if expect_ok:
            assert body["errors"] == [], body["errors"]
        return body

    return send


@pytest.fixture
def member_key(store: Store) -> Callable[..., str]:
    def make(member_id: int, *, workspace: str = WS, org: str = "acme") -> str:
        return create_key(store, org=org, workspace_id=workspace, member_id=member_id)

    return make


@pytest.fixture
def admin(ingest: Callable[..., dict[str, Any]], member_key: Callable[..., str]) -> dict[str, str]:
    """Headers of member 1, an admin of the workspace."""
    ingest(member(1, "admin"))
    return bearer(member_key(1))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_unavailable(response) -> None:
    """The store's failure: a 503 telling the client to come back, in the endpoint's error shape."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "30"
    assert STORE_UNAVAILABLE in response.json().values()
