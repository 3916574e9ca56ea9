"""Events may arrive in any order (contract 2): the demo's events shuffled give every
answer the same events give sent in order, on both stores, over HTTP and by the bulk
loader."""

from __future__ import annotations

import random

import orjson
import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.ingest.service import Chunk, LinesReport, ingest_chunks
from parley.settings import Settings
from parley.store.port import Store, open_store
from tests.conftest import STORE_KINDS, store_url_for
from tests.test_equivalence import END, admin_headers, demo_by_org, endpoint_urls, loaded_clients


def shuffled(by_org: dict[str, list]) -> list[tuple[str, list]]:
    """Every event in a random order, the orgs interleaved, in batches of 1 to 700 events,
    one event in twenty sent twice. Of the demo's events at this scale (checked once by
    hand): about 1,100 messages before their chat, 1,100 observations before their trace,
    600 traces before their session, 77 chat updates before the chat, and a chat's two
    updates in either order."""
    rng = random.Random(11)
    events = [(org, event) for org, batch in by_org.items() for event in batch]
    events += rng.sample(events, len(events) // 20)
    rng.shuffle(events)
    batches, start = [], 0
    while start < len(events):
        taken = events[start : start + rng.randint(1, 700)]
        start += len(taken)
        for org in sorted({org for org, _ in taken}):
            batches.append((org, [event for o, event in taken if o == org]))
    return batches


def bulk_loaded(url: str, store: Store):
    """The same events shuffled, loaded as ``parley ingest`` loads a file: chunks of 400
    lines through 2 worker processes, stored 4 chunks at a time, then put in order. The
    store is closed however the load ends (chdb admits one data directory a process: one
    left open would fail the chdb tests after it)."""
    by_org = demo_by_org()
    lines = [orjson.dumps({**event, "org": org}) for org, batch in shuffled(by_org) for event in batch]
    chunks = [Chunk(i + 1, lines[i : i + 400], 0) for i in range(0, len(lines), 400)]
    try:
        report = LinesReport()
        for _, chunk_report in ingest_chunks(store, chunks, org=None, workers=2, together=4):
            report.merge(chunk_report)
        store.reorder()
        sent_twice = len(lines) - len({(org, event["id"]) for org, batch in by_org.items() for event in batch})
        assert (report.accepted, report.duplicates, report.rejected) == (len(lines) - sent_twice, sent_twice, [])
        admin = admin_headers(store)
        with TestClient(create_app(Settings(database_url=url), store=store, clock=lambda: END)) as client:
            yield client, admin
    finally:
        store.close()


def answers(client: TestClient, key: dict[str, str], urls: list[str]) -> dict[str, tuple[int, bytes]]:
    got = {}
    for url in urls:
        response = client.get(url, headers=key)
        got[url] = (response.status_code, response.content)
    return got


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The workspace, the URLs of ``test_equivalence`` and their answers, of the events
    sent in order to DuckDB (each store is closed once read: chdb admits one data
    directory a process)."""
    url = store_url_for("duckdb", tmp_path_factory.mktemp("in-order"))
    loading = loaded_clients({"duckdb": (url, open_store(url))})
    stores, ws, _, _ = next(loading)
    client, key = stores["duckdb"]
    urls = endpoint_urls(client, key, ws)
    expected = answers(client, key, urls)
    next(loading, None)
    assert len(urls) >= 40 and {status for status, _ in expected.values()} == {200}
    return urls, expected


@pytest.mark.parametrize("path", ["http", "bulk"])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_every_endpoint_answers_the_same_whatever_the_arrival_order(reference, tmp_path, kind, path):
    urls, expected = reference
    url = store_url_for(kind, tmp_path)
    store = open_store(url)
    if path == "http":
        loading = loaded_clients({kind: (url, store)}, shuffled)
        client, key = next(loading)[0][kind]
    else:
        loading = bulk_loaded(url, store)
        client, key = next(loading)
    try:
        got = answers(client, key, urls)
    finally:
        next(loading, None)
    for url in urls:
        assert got[url] == expected[url], url
