"""Schemathesis over the app's own OpenAPI: no 5xx, responses match the schema."""

from __future__ import annotations

import gc
import shutil
import tempfile

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from parley.app import create_app
from parley.auth.keys import create_key
from parley.settings import Settings
from parley.store.port import open_store
from tests.conftest import NOW
from tests.factories import T0, WS, call, member

# Schemathesis reads the schema when the module is collected, so the app (over a
# real DuckDB file with a little data) is built here and closed by the fixture below.
_DIR = tempfile.mkdtemp(prefix="parley-fuzz-")
_URL = f"duckdb:///{_DIR}/parley.duckdb"
_STORE = open_store(_URL)
_APP = create_app(Settings(database_url=_URL), store=_STORE, clock=lambda: NOW)
_KEYS = {
    "ingest": create_key(_STORE, org="acme", ingest=True),
    "member": create_key(_STORE, org="acme", workspace_id=WS, member_id=1),
}
with TestClient(_APP) as _client:
    _batch = [member(1, "admin"), call("c1", "a1", T0, duration=60), call("c2", "a2", T0)]
    _client.post("/api/v2/ingest", json={"batch": _batch}, headers={"Authorization": f"Bearer {_KEYS['ingest']}"})

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _close_store():
    yield
    _STORE.close()
    shutil.rmtree(_DIR, ignore_errors=True)
    # Drop every reference to the connection so the interpreter frees it before exit.
    globals().update(_STORE=None, _APP=None, _client=None, schema=None)
    gc.collect()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    key = _KEYS["ingest"] if case.path == "/api/v2/ingest" else _KEYS["member"]
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}
    case.call_and_validate(
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.response_schema_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.status_code_conformance,
        ]
    )
