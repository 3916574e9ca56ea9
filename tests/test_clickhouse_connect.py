"""The ClickHouse store through clickhouse-connect, the client it reaches a server with.

No ClickHouse server runs here. The client's chdb backend stands in for one here: the
same client methods, parameter binding and Arrow conversions as over HTTP, in process,
on ClickHouse's own engine, with a session whose settings last (which some of these
tests change). The tests of ingestion and of the time range's edges run again on it,
through the fixtures below. The store over real HTTP, as production reaches a server, is
``tests/test_clickhouse_http.py``'s. (chdb holds one engine a process, so each store here
is closed before the next opens, and none is open beside the chdb transport's.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest

from parley.store.clickhouse import QUERY_SETTINGS, ClickHouseStore, ConnectTransport
from parley.store.port import Store
from tests.test_clickhouse_inserts import assert_refused_whole
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


def test_the_transport_raises_what_the_engine_refuses(tmp_path: Path):
    assert_refused_whole(connect_transport(tmp_path / "engine"))
