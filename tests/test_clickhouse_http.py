"""The ClickHouse store over HTTP, opened from a ``clickhouse://`` URL as production opens it.

No ClickHouse server runs here: ``tests.clickhouse_http`` answers ClickHouse's HTTP
interface on ClickHouse's own engine (chdb), so the client's real requests go over a
real socket. The app's fixtures (``client``, ``ingest``, ``admin``) run on this store
through the ``store_url`` and ``store`` below.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from parley.store.port import Store, open_store
from tests.clickhouse_http import Front, clickhouse_http
from tests.conftest import assert_unavailable, bearer, store_url_for
from tests.factories import T0, call, days
from tests.test_equivalence import assert_same_answers, loaded_clients

CALLS = "/analytics/calls/by-assistant?start_date=2024-04-25&end_date=2024-05-10"


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    with clickhouse_http(tmp_path / "engine") as running:
        yield running


@pytest.fixture
def store_url(front: Front) -> str:
    return front.url


@pytest.fixture
def store(front: Front) -> Iterator[Store]:
    opened = open_store(front.url)
    yield opened
    opened.close()


def calls_and_minutes(client: TestClient, admin: dict[str, str]) -> tuple[int, float]:
    answer = client.get(CALLS, headers=admin)
    assert answer.status_code == 200, answer.text
    (assistant,) = answer.json()["data"]["assistants"]
    return assistant["total_calls"], assistant["total_duration_minutes"]


def test_every_endpoint_answers_as_the_embedded_store_does(tmp_path: Path, front: Front):
    duck_url = store_url_for("duckdb", tmp_path)
    opened = {"duckdb": (duck_url, open_store(duck_url)), "http": (front.url, open_store(front.url))}
    for stores, ws, _, _ in loaded_clients(opened):
        assert_same_answers(stores, ws, "duckdb", "http")
    assert set(front.sessions) == {None}


def test_requests_at_once_are_all_answered(front: Front, client: TestClient, ingest, admin: dict[str, str]):
    # The app answers each request on a thread of its own, all through the store's one
    # client. In a session (the client's default) the client refused a second statement
    # while one ran (a ProgrammingError: a 500), as ClickHouse does (SESSION_IS_LOCKED).
    ingest(*(call(f"c{i}", "a1", T0 + days(i % 3), duration=60.0 * (i + 1)) for i in range(6)))
    assert calls_and_minutes(client, admin) == (6, 21.0)  # 1 + 2 + ... + 6 minutes
    alone = client.get(CALLS, headers=admin)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.get(CALLS, headers=admin), range(24)))
    assert [(r.status_code, r.content) for r in answers] == [(200, alone.content)] * 24
    assert set(front.sessions) == {None}


def test_a_server_gone_is_a_503_and_answers_again_once_back(
    front: Front, client: TestClient, ingest, ingest_key: str, admin: dict[str, str]
):
    # A ClickHouse server out of reach (restarting, the network down): a 503 telling the
    # client to come back, for the key's look-up as for the rest; nothing of a batch sent
    # meanwhile is kept, and Parley answers again once the server is back, unrestarted.
    assert [s["status"] for s in ingest(call("c0", "a1", T0, duration=120.0))["successes"]] == [201]
    later = call("c1", "a1", T0 + days(1), duration=60.0)
    with front.gone():
        assert_unavailable(client.get(CALLS, headers=admin))
        assert_unavailable(client.post("/api/v2/ingest", json={"batch": [later]}, headers=bearer(ingest_key)))
    assert calls_and_minutes(client, admin) == (1, 2.0)
    assert [s["status"] for s in ingest(later)["successes"]] == [201]  # stored now: not taken for a duplicate
    assert calls_and_minutes(client, admin) == (2, 3.0)
