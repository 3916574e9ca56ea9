"""Events may arrive in any order (contract 2): the demo's events shuffled give every
answer the same events give sent in order, on both stores, over HTTP and by the bulk
loader."""

from __future__ import annotations

import random

import orjson
import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.auth.keys import create_key
from parley.demo import generate, workspaces
from parley.ingest.service import Chunk, LinesReport, ingest_chunks
from parley.settings import Settings
from parley.store.port import Store, open_store
from tests.conftest import bearer, store_url_for
from tests.test_equivalence import END, SCALE, assert_same_answers, loaded_clients


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
    lines through 2 worker processes, stored 4 chunks at a time, then put in order."""
    by_org: dict[str, list] = {}
    for event in generate(SCALE, seed=3, end=END):
        by_org.setdefault(event.pop("org"), []).append(event)
    lines = [orjson.dumps({**event, "org": org}) for org, batch in shuffled(by_org) for event in batch]
    chunks = [Chunk(i + 1, lines[i : i + 400], 0) for i in range(0, len(lines), 400)]
    report = LinesReport()
    for _, chunk_report in ingest_chunks(store, chunks, org=None, workers=2, together=4):
        report.merge(chunk_report)
    store.reorder()
    sent_twice = len(lines) - len({(org, event["id"]) for org, batch in by_org.items() for event in batch})
    assert (report.accepted, report.duplicates, report.rejected) == (len(lines) - sent_twice, sent_twice, [])
    ws = workspaces(SCALE, seed=3)[0]
    admin = create_key(store, org=ws.org, workspace_id=ws.workspace_id, member_id=ws.admin_member_id)
    with TestClient(create_app(Settings(database_url=url), store=store, clock=lambda: END)) as client:
        yield client, bearer(admin)
    store.close()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The events in order into DuckDB, and shuffled into DuckDB and chdb over HTTP and
    into DuckDB by the bulk loader (chdb admits one data directory a process: this
    module opens no other)."""

    def opened(kind: str, name: str):
        url = store_url_for(kind, tmp_path_factory.mktemp(name))
        return url, open_store(url)

    in_order = loaded_clients({"duckdb": opened("duckdb", "in-order")})
    later = loaded_clients({kind: opened(kind, f"shuffled-{kind}") for kind in ("duckdb", "chdb")}, shuffled)
    bulk = bulk_loaded(*opened("duckdb", "bulk"))
    (reference, ws, _, _), (stores, _, _, _) = next(in_order), next(later)
    yield reference["duckdb"], {**stores, "bulk": next(bulk)}, ws
    for loading in (in_order, later, bulk):
        next(loading, None)


@pytest.mark.parametrize("kind", ["duckdb", "chdb", "bulk"])
def test_every_endpoint_answers_the_same_whatever_the_arrival_order(loaded, kind):
    reference, stores, ws = loaded
    assert_same_answers({"in order": reference, "shuffled": stores[kind]}, ws, "in order", "shuffled")
