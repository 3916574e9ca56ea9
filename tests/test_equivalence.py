"""The same events give byte-identical answers from DuckDB and from ClickHouse (chdb)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.auth.keys import create_key
from parley.demo import Scale, generate, workspaces
from parley.settings import Settings
from parley.store.port import Store, open_store
from tests.conftest import bearer, store_url_for

END = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
SCALE = Scale(2, 2, 60, 20, 4, 150, 6, 120, 80, 300, 2, 2, 150)


Arrival = Callable[[dict[str, list]], list[tuple[str, list]]]


def in_order(by_org: dict[str, list]) -> list[tuple[str, list]]:
    """Each org's events as the generator made them, org after org, 2,000 to a batch."""
    return [(org, events[i : i + 2000]) for org, events in by_org.items() for i in range(0, len(events), 2000)]


def demo_by_org() -> dict[str, list]:
    """The demo's events at ``SCALE``, by org, each without its "org"."""
    by_org: dict[str, list] = {}
    for event in generate(SCALE, seed=3, end=END):
        by_org.setdefault(event.pop("org"), []).append(event)
    return by_org


def demo_workspace():
    """The demo's first workspace, whose admin reads every answer compared."""
    return workspaces(SCALE, seed=3)[0]


def admin_headers(store: Store) -> dict[str, str]:
    ws = demo_workspace()
    return bearer(create_key(store, org=ws.org, workspace_id=ws.workspace_id, member_id=ws.admin_member_id))


def loaded_clients(opened: dict[str, tuple[str, Store]], arrival: Arrival = in_order):
    """The demo's events sent through the real app to each store, in the batches of
    ``arrival`` (which may name orgs of its own); yields per kind the client and an
    admin's headers, the workspace, the events by org and the ingest keys."""
    by_org = demo_by_org()
    ws = demo_workspace()
    out, ingest_keys, entered = {}, {}, []
    try:
        for kind, (url, store) in opened.items():
            admin = admin_headers(store)
            client = TestClient(create_app(Settings(database_url=url), store=store, clock=lambda: END))
            client.__enter__()
            entered.append(client)
            for org, batch in arrival(by_org):
                if (kind, org) not in ingest_keys:
                    ingest_keys[(kind, org)] = create_key(store, org=org, ingest=True)
                key = bearer(ingest_keys[(kind, org)])
                response = client.post("/api/v2/ingest", json={"batch": batch}, headers=key)
                assert response.status_code == 207 and response.json()["errors"] == []
            out[kind] = (client, admin)
        yield out, ws, by_org, ingest_keys
    finally:  # however the load ends: chdb admits one data directory a process
        for client in entered:
            client.__exit__(None, None, None)
        for _, store in opened.values():
            store.close()


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    opened = {}
    for kind in ("duckdb", "chdb"):
        url = store_url_for(kind, tmp_path_factory.mktemp(kind))
        opened[kind] = (url, open_store(url))
    yield from loaded_clients(opened)


def _urls(ws, mentor: str) -> list[str]:
    chats = f"/api/v2/w/{ws.workspace_id}/chats"
    org = f"/api/ai-analytics/orgs/{ws.org}/users/user000001"
    filters = orjson.dumps(
        {
            "or": [
                {"field": "metadata.priority", "op": "eq", "value": "high"},
                {
                    "and": [
                        {"field": "messageCount", "op": "gte", "value": 5},
                        {"field": "chatType", "op": "neq", "value": "dm"},
                    ]
                },
            ]
        }
    ).decode()
    urls = [
        "/analytics/calls/by-assistant",
        "/analytics/calls/by-assistant?start_date=2024-04-20&end_date=2024-06-15",
        f"/api/v2/org/{ws.org}/workspace/{ws.workspace_id}/metrics/assistants_usage",
        f"/api/v2/org/{ws.org}/workspace/{ws.workspace_id}/metrics/assistants_usage?from_date=2024-04-20&to_date=2024-05-20&tz=America/New_York",
        f"{chats}?pageSize=500",
        f"{chats}?pageSize=500&archived=true&sortBy=title&sortOrder=asc",
        f"{chats}?pageSize=500&sortBy=lastMessageAt&search=refund",
        f"{chats}?pageSize=500&memberId=3&sortBy=updatedAt",
        f"{chats}?pageSize=50&page=2&needsResponse=true",
        f"{chats}?pageSize=500&filters={filters}",
        f"{chats}?pageSize=500&isAnonymous=true&isTest=true",
        f"{chats}/export",
        f"{chats}/export?archived=true&sortBy=title",
        f"{chats}/needs-response",
        f"{chats}/stats/daily-creation",
        f"{chats}/stats/daily-creation?tz=Asia/Kolkata&archived=true",
        f"{chats}/tool-call-names",
    ]
    for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
        for aggregation, first, last in (
            ("hourly", "2024-05-01", "2024-05-03"),
            ("daily", "2024-04-20", "2024-06-15"),
            ("weekly", "2024-04-01", "2024-06-15"),
        ):
            base = f"start_date={first}&end_date={last}&aggregation={aggregation}&tz={tz}"
            urls += [f"{org}/user-cohorts-over-time/?{base}", f"{org}/user-feedback/?{base}"]
        urls.append(f"{org}/user-feedback/?start_date=2024-05-01&end_date=2024-05-31&tz={tz}&mentor_id={mentor}")
        urls.append(
            f"{org}/user-cohorts-over-time/?start_date=2024-05-01&end_date=2024-05-31&tz={tz}&mentor_id={mentor}"
        )
    for user in ("user000001", "user000002", "user000017", "nobody"):
        urls.append(f"{org}/user-cost/?start_date=2024-04-16&end_date=2024-06-15&username={user}")
        urls.append(
            f"{org}/user-cost/?start_date=2024-05-01T06:00:00Z&end_date=2024-05-20T18:30:00%2B02:00&username={user}"
        )
    return urls


def endpoint_urls(client: TestClient, key: dict[str, str], ws) -> list[str]:
    """The URLs the comparisons read; mentors are the demo's assistants: the busiest one,
    as ``client`` answers, filters the mentor's."""
    calls = client.get("/analytics/calls/by-assistant", headers=key).json()["data"]["assistants"]
    return _urls(ws, calls[0]["assistant_id"])


def assert_same_answers(stores, ws, reference: str, other: str) -> None:
    (ref, ref_key), (ch, ch_key) = stores[reference], stores[other]
    compared = 0
    for url in endpoint_urls(ref, ref_key, ws):
        a, b = ref.get(url, headers=ref_key), ch.get(url, headers=ch_key)
        assert a.status_code == 200, (url, a.text[:300])
        assert (b.status_code, b.content) == (a.status_code, a.content), url
        compared += 1
    assert compared >= 40


def test_every_endpoint_answers_the_same_on_both_stores(clients):
    stores, ws, _, _ = clients
    assert_same_answers(stores, ws, "duckdb", "chdb")


def test_the_answers_are_not_empty(clients):
    stores, ws, _, _ = clients
    duck, key = stores["duckdb"]
    chats = duck.get(f"/api/v2/w/{ws.workspace_id}/chats?pageSize=500", headers=key).json()
    assert chats["total"] > 50
    export = duck.get(f"/api/v2/w/{ws.workspace_id}/chats/export", headers=key).text
    assert export.count("\n") == chats["total"] + 1
    cohorts = duck.get(
        f"/api/ai-analytics/orgs/{ws.org}/users/me/user-cohorts-over-time/"
        "?start_date=2024-04-20&end_date=2024-06-15&aggregation=weekly",
        headers=key,
    ).json()
    assert sum(cohorts["new_users"]) > 0 and sum(cohorts["veteran_users"]) > 0


def test_answers_do_not_change_when_clickhouse_merges(clients):
    """Merges happen "at an unknown time": force them all, and every answer stays the same."""
    stores, ws, by_org, ingest_keys = clients
    (ch, ch_key), (duck, duck_key) = stores["chdb"], stores["duckdb"]
    urls = endpoint_urls(duck, duck_key, ws)
    before = [ch.get(url, headers=ch_key).content for url in urls]
    store = ch.app.state.store
    for (table,) in store._fetchall("SELECT name FROM system.tables WHERE database = currentDatabase()", {}):
        store._transport.command(f"OPTIMIZE TABLE {table} FINAL")
    # Re-sending events after the merge is still a no-op.
    org = ws.org
    again = ch.post("/api/v2/ingest", json={"batch": by_org[org][:2000]}, headers=bearer(ingest_keys[("chdb", org)]))
    assert {s["status"] for s in again.json()["successes"]} == {200}
    after = [ch.get(url, headers=ch_key).content for url in urls]
    assert after == before
