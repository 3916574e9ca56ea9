"""Events may arrive in any order (contract 2): the demo's events shuffled give every
answer the same events give sent in order, on both stores."""

from __future__ import annotations

import random

import pytest

from parley.store.port import open_store
from tests.conftest import store_url_for
from tests.test_equivalence import assert_same_answers, loaded_clients


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


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The events in order into DuckDB, and shuffled into DuckDB and chdb (which admits
    one data directory a process: this module opens no other)."""

    def opened(kind: str, name: str):
        url = store_url_for(kind, tmp_path_factory.mktemp(name))
        return url, open_store(url)

    in_order = loaded_clients({"duckdb": opened("duckdb", "in-order")})
    later = loaded_clients({kind: opened(kind, f"shuffled-{kind}") for kind in ("duckdb", "chdb")}, shuffled)
    (reference, ws, _, _), (stores, _, _, _) = next(in_order), next(later)
    yield reference["duckdb"], stores, ws
    for loading in (in_order, later):
        next(loading, None)


@pytest.mark.parametrize("kind", ["duckdb", "chdb"])
def test_every_endpoint_answers_the_same_whatever_the_arrival_order(loaded, kind):
    reference, stores, ws = loaded
    assert_same_answers({"in order": reference, "shuffled": stores[kind]}, ws, "in order", "shuffled")
