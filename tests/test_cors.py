"""Browsers on the origins the operator names may call the API (CORS); no others, and by
default none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from parley.app import create_app
from parley.auth.keys import create_key
from parley.cli import app as cli
from parley.settings import Settings
from parley.store.port import Store
from tests.conftest import NOW, bearer
from tests.factories import WS, member

ADMIN = "https://admin.example.com"
URL = "/analytics/calls/by-assistant"
PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}


@pytest.fixture
def open_client(store_url: str, store: Store) -> Iterator[TestClient]:
    settings = Settings(database_url=store_url, cors_origins=[ADMIN, "http://localhost:5173"])
    with TestClient(create_app(settings, store=store, clock=lambda: NOW)) as test_client:
        yield test_client


def test_a_named_origin_may_call_and_read_the_answers_errors_included(open_client, store, ingest_key):
    preflight = open_client.options(URL, headers={"Origin": ADMIN, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ADMIN
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers  # keys are headers, not cookies
    open_client.post("/api/v2/ingest", json={"batch": [member(1, "admin")]}, headers=bearer(ingest_key))
    key = create_key(store, org="acme", workspace_id=WS, member_id=1)
    answered = open_client.get(URL, headers={"Origin": ADMIN, **bearer(key)})
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ADMIN
    # An error is readable by the page too, so that it can say why.
    refused = open_client.get(URL, headers={"Origin": ADMIN, **bearer("prl_0000000000000000_x")})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ADMIN


def test_another_origin_is_refused_its_preflight_and_given_no_cors_headers(open_client):
    preflight = open_client.options(URL, headers={"Origin": "https://evil.example.com", **PREFLIGHT})
    assert (preflight.status_code, preflight.text) == (400, "Disallowed CORS origin")
    answered = open_client.get(URL, headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in answered.headers


def test_by_default_no_origin_may(client):
    assert client.options(URL, headers={"Origin": ADMIN, **PREFLIGHT}).status_code == 405
    assert "access-control-allow-origin" not in client.get(URL, headers={"Origin": ADMIN}).headers


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("https://admin.example.com", ["https://admin.example.com"]),
        (" https://a.example.com , http://localhost:5173,", ["https://a.example.com", "http://localhost:5173"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_the_setting_is_a_comma_separated_list(monkeypatch, value: str, origins: list[str]):
    monkeypatch.setenv("PARLEY_CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


@pytest.mark.parametrize("value", ["https://admin.example.com/", "admin.example.com", "https://a.example.com/app"])
def test_an_origin_with_a_path_or_no_scheme_stops_the_cli_with_the_variable_named(tmp_path, value: str):
    env = {
        "PARLEY_CORS_ORIGINS": f"http://localhost:5173,{value}",
        "PARLEY_DATABASE_URL": f"duckdb:///{tmp_path}/p.duckdb",
    }
    result = CliRunner().invoke(cli, ["keys", "list"], env=env)
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == (
        f"error: PARLEY_CORS_ORIGINS='http://localhost:5173,{value}': Value error, '{value}' is not an origin: give "
        "scheme and host (and port), with no path or trailing slash, such as https://admin.example.com, or *"
    )
