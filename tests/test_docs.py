"""The README documents every setting, its two commands are what CI runs, and the OpenAPI
document describes every parameter and every field of every body."""

from __future__ import annotations

from pathlib import Path

from parley.app import create_app
from parley.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"PARLEY_{name.upper()}" not in readme]
    assert missing == []


def test_every_setting_has_help_text():
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert "make test" in ci


def test_every_parameter_of_the_api_is_described_in_its_openapi_document():
    """What /docs shows a user trying the API: each path and query parameter says what it does."""
    schema = create_app(Settings(database_url="duckdb:///unused.duckdb")).openapi()
    undescribed = [
        (method.upper(), path, parameter["name"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert undescribed == []


def test_every_field_of_every_body_is_described_in_the_openapi_document():
    """The schemas of the answers and of the ingestion body, and the schemas they hold,
    describe each field."""
    schema = create_app(Settings(database_url="duckdb:///unused.duckdb")).openapi()
    components = schema["components"]["schemas"]

    def referenced(value) -> set[str]:
        if isinstance(value, dict):
            own = {value["$ref"].rsplit("/", 1)[-1]} if "$ref" in value else set()
            return own.union(*(referenced(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(referenced(v) for v in value))
        return set()

    bodies = referenced(list(schema["paths"].values()))
    while (more := referenced([components[name] for name in bodies]) - bodies) != set():
        bodies |= more
    assert {"IngestRequest", "ChatUpsert", "ToolCall", "ChatPage", "Chat", "ErrorField"} <= bodies
    undescribed = [
        (name, field)
        for name in sorted(bodies)
        for field, spec in components[name].get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undescribed == []
