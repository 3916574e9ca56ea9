"""Schemathesis over the app's own OpenAPI: no 5xx, responses match the schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from parley.app import create_app
from parley.auth.keys import create_key
from parley.settings import Settings
from parley.store.port import open_store
from tests.conftest import NOW, bearer
from tests.factories import T0, WS, call, member

# Schemathesis parametrizes the test when the module is collected, from the schema alone,
# which FastAPI writes without starting the app: no store is opened until the test runs.
# (Loading it from a running app, as before, opened a store at collection, and a
# collection alone, such as `pytest --collect-only`, left it in the temporary directory.)
schema = schemathesis.openapi.from_dict(create_app(Settings(database_url="duckdb:///unused.duckdb")).openapi())


@dataclass(frozen=True)
class Api:
    app: FastAPI
    keys: dict[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The app over a real DuckDB file with a little data, and a key of each kind."""
    url = f"duckdb:///{tmp_path_factory.mktemp('fuzz')}/parley.duckdb"
    store = open_store(url)
    try:
        app = create_app(Settings(database_url=url), store=store, clock=lambda: NOW)
        keys = {
            "ingest": create_key(store, org="acme", ingest=True),
            "member": create_key(store, org="acme", workspace_id=WS, member_id=1),
        }
        with TestClient(app) as client:
            batch = [member(1, "admin"), call("c1", "a1", T0, duration=60), call("c2", "a2", T0)]
            stored = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(keys["ingest"]))
            assert stored.status_code == 207 and stored.json()["errors"] == [], stored.text
        yield Api(app, keys)
    finally:
        store.close()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, api: Api):
    key = api.keys["ingest"] if case.path == "/api/v2/ingest" else api.keys["member"]
    case.headers = {**(case.headers or {}), **bearer(key)}
    case.call_and_validate(
        app=api.app,  # in process, through Schemathesis' ASGI transport
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.response_schema_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.status_code_conformance,
        ],
    )
