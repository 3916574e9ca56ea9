"""The ClickHouse store through clickhouse-connect, the client it reaches a server with.

No ClickHouse server runs here. Two things stand in for one, both on ClickHouse's own
engine (chdb):
- ``tests.clickhouse_http``, an HTTP front answering ClickHouse's HTTP interface, which
  the store reaches as production does (``ConnectTransport.over_http``): the client's
  real requests over a real socket. Every endpoint is compared with the embedded store
  through it, and the server's requests at once must all be answered.
- the client's chdb backend (the same client methods, parameter binding and Arrow
  conversions as over HTTP, in process, with a session whose settings last), on which
  the tests of ingestion and of the time range's edges run again, through the fixtures
  below.
(chdb holds one engine a process, so each store here is closed before the next opens,
and none is open beside the chdb transport's.)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import clickhouse_connect
import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.auth.keys import create_key
from parley.settings import Settings
from parley.store.clickhouse import QUERY_SETTINGS, ClickHouseStore, ConnectTransport
from parley.store.port import Store, open_store
from tests.clickhouse_http import Front, clickhouse_http
from tests.conftest import NOW, bearer, store_url_for
from tests.factories import T0, WS, call, days, member
from tests.test_clickhouse_inserts import assert_refused_whole
from tests.test_equivalence import assert_same_answers, loaded_clients
from tests.test_ingest import (  # noqa: F401  (collected again here, on this store)
    test_a_batch_mixing_stored_and_new_events_stores_only_the_new,
    test_a_batch_spanning_more_than_100_months_is_stored_whole,
    test_an_id_repeated_inside_one_batch_is_stored_once,
    test_event_ids_are_per_org,
    test_one_bad_event_never_drops_its_neighbours,
    test_retrying_a_whole_batch_is_a_no_op_that_succeeds,
    test_the_latest_upsert_wins_whatever_the_arrival_order,
    test_times_with_offsets_are_stored_as_the_same_instant_in_utc,
    test_values_the_store_cannot_hold_are_a_400_for_that_event_only,
)
from tests.test_time_edges import (  # noqa: F401
    test_an_event_of_2200_counts_on_its_own_day_hour_and_week,
    test_the_first_instant_is_counted_on_its_day,
    test_the_last_instant_is_counted_on_its_day,
)

# What the settings name; the store the app is given is the one below.
URL = "clickhouse://default@localhost:8123/default"


def connect_transport(engine: Path) -> ConnectTransport:
    return ConnectTransport(clickhouse_connect.get_client(interface="chdb", path=str(engine), settings=QUERY_SETTINGS))


def connect_store(engine: Path) -> ClickHouseStore:
    return ClickHouseStore(connect_transport(engine), URL)


@pytest.fixture
def store_url() -> str:
    return URL


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = connect_store(tmp_path / "engine")
    yield opened
    opened.close()


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    with clickhouse_http(tmp_path / "engine") as running:
        yield running


def test_every_endpoint_answers_over_http_as_the_embedded_store_does(tmp_path: Path, front: Front):
    duck_url = store_url_for("duckdb", tmp_path)
    opened = {"duckdb": (duck_url, open_store(duck_url)), "http": (front.url, open_store(front.url))}
    for stores, ws, _, _ in loaded_clients(opened):
        assert_same_answers(stores, ws, "duckdb", "http")
    assert set(front.sessions) == {None}


def test_requests_at_once_over_http_are_all_answered(front: Front):
    # The app answers each request on a thread of its own, all through the store's one
    # client. In a session (the client's default) the client refused a second statement
    # while one ran (a ProgrammingError: a 500), as ClickHouse does (SESSION_IS_LOCKED).
    store = open_store(front.url)  # as production opens a clickhouse:// URL
    try:
        with TestClient(create_app(Settings(database_url=front.url), store=store, clock=lambda: NOW)) as client:
            ingest = bearer(create_key(store, org="acme", ingest=True))
            batch = [member(1, "admin")]
            batch += [call(f"c{i}", "a1", T0 + days(i % 3), duration=60.0 * (i + 1)) for i in range(6)]
            sent = client.post("/api/v2/ingest", json={"batch": batch}, headers=ingest)
            assert sent.status_code == 207 and sent.json()["errors"] == []
            admin = bearer(create_key(store, org="acme", workspace_id=WS, member_id=1))
            url = "/analytics/calls/by-assistant?start_date=2024-04-25&end_date=2024-05-10"
            alone = client.get(url, headers=admin)
            assert alone.status_code == 200
            (assistant,) = alone.json()["data"]["assistants"]
            assert (assistant["total_calls"], assistant["total_duration_minutes"]) == (6, 21.0)  # 1 + 2 + ... + 6

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: client.get(url, headers=admin), range(24)))
            assert [(r.status_code, r.content) for r in answers] == [(200, alone.content)] * 24
    finally:
        store.close()
    assert set(front.sessions) == {None}


def test_the_transport_raises_what_the_engine_refuses(tmp_path: Path):
    assert_refused_whole(connect_transport(tmp_path / "engine"))
