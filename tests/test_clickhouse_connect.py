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
from tests.conftest import NOW, assert_unavailable, bearer, store_url_for
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


CALLS = "/analytics/calls/by-assistant?start_date=2024-04-25&end_date=2024-05-10"


@pytest.fixture
def http_client(front: Front) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """The app on the store over HTTP, as production opens a clickhouse:// URL: its client,
    an ingest key's headers and the workspace admin's (member 1)."""
    store = open_store(front.url)
    try:
        with TestClient(create_app(Settings(database_url=front.url), store=store, clock=lambda: NOW)) as client:
            ingest = bearer(create_key(store, org="acme", ingest=True))
            assert send(client, ingest, member(1, "admin")) == [201]
            yield client, ingest, bearer(create_key(store, org="acme", workspace_id=WS, member_id=1))
    finally:
        store.close()


def send(client: TestClient, ingest: dict[str, str], *batch: dict) -> list[int]:
    sent = client.post("/api/v2/ingest", json={"batch": list(batch)}, headers=ingest)
    assert sent.status_code == 207 and sent.json()["errors"] == [], sent.text
    return [success["status"] for success in sent.json()["successes"]]


def calls_and_minutes(client: TestClient, admin: dict[str, str]) -> tuple[int, float]:
    answer = client.get(CALLS, headers=admin)
    assert answer.status_code == 200, answer.text
    (assistant,) = answer.json()["data"]["assistants"]
    return assistant["total_calls"], assistant["total_duration_minutes"]


def test_requests_at_once_over_http_are_all_answered(front: Front, http_client):
    # The app answers each request on a thread of its own, all through the store's one
    # client. In a session (the client's default) the client refused a second statement
    # while one ran (a ProgrammingError: a 500), as ClickHouse does (SESSION_IS_LOCKED).
    client, ingest, admin = http_client
    send(client, ingest, *(call(f"c{i}", "a1", T0 + days(i % 3), duration=60.0 * (i + 1)) for i in range(6)))
    assert calls_and_minutes(client, admin) == (6, 21.0)  # 1 + 2 + ... + 6 minutes
    alone = client.get(CALLS, headers=admin)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.get(CALLS, headers=admin), range(24)))
    assert [(r.status_code, r.content) for r in answers] == [(200, alone.content)] * 24
    assert set(front.sessions) == {None}


def test_a_server_gone_is_a_503_and_answers_again_once_back(front: Front, http_client):
    # A ClickHouse server out of reach (restarting, the network down): a 503 telling the
    # client to come back, for the key's look-up as for the rest; nothing of a batch sent
    # meanwhile is kept, and Parley answers again once the server is back, unrestarted.
    client, ingest, admin = http_client
    assert send(client, ingest, call("c0", "a1", T0, duration=120.0)) == [201]
    later = call("c1", "a1", T0 + days(1), duration=60.0)
    with front.gone():
        assert_unavailable(client.get(CALLS, headers=admin))
        assert_unavailable(client.post("/api/v2/ingest", json={"batch": [later]}, headers=ingest))
    assert calls_and_minutes(client, admin) == (1, 2.0)
    assert send(client, ingest, later) == [201]  # stored now: not taken for a duplicate
    assert calls_and_minutes(client, admin) == (2, 3.0)


def test_the_transport_raises_what_the_engine_refuses(tmp_path: Path):
    assert_refused_whole(connect_transport(tmp_path / "engine"))
