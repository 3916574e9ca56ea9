"""POST /api/v2/ingest: multi-status, idempotency, arrival order, limits (contract 2)."""

from __future__ import annotations

import copy
import gzip
import json
import re
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.auth.keys import create_key
from parley.demo import SCALES, generate
from parley.errors import PayloadTooLarge
from parley.ingest import events as ingest_events
from parley.ingest.events import EVENT_TYPES, Event, InvalidEvent, validate_batch, validate_event, validate_in_two_steps
from parley.ingest.router import gunzip
from parley.ingest.service import validate_lines
from parley.store.duckdb import DuckDBStore
from parley.store.port import Store, StoreOutcome
from parley.store.schema import STR, Column, ColumnBatch, ColumnBatchBuilder, column_batch, entity_key, joined_batches
from tests.conftest import bearer
from tests.factories import T0, WS, call, days, event, iso, member


def _calls_on_may_1(client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The calls by assistant of 2024-05-01 (the day of ``T0``), as ``headers``' member sees them."""
    response = client.get(
        "/analytics/calls/by-assistant", params={"start_date": "2024-05-01", "end_date": "2024-05-01"}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["assistants"]


def test_one_bad_event_never_drops_its_neighbours(client, ingest_key, store: Store):
    batch = [
        call("c1", "a1", T0, duration=60, id="good-1"),
        {"id": "bad-type", "type": "call.explode", "timestamp": "2024-05-01T10:00:00Z", "body": {}},
        call("c2", "a1", T0, duration=30, id="good-2"),
        {
            "id": "bad-body",
            "type": "call.create",
            "timestamp": "2024-05-01T10:00:00Z",
            "body": {"call_id": "x"},
        },
        {"id": "naive-ts", "type": "user.upsert", "timestamp": "2024-05-01T10:00:00", "body": {}},
        "not an object",
        call("c3", "a1", T0, duration=-5, id="negative-duration"),
    ]
    response = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
    assert response.status_code == 207
    body = response.json()
    assert body["successes"] == [{"id": "good-1", "status": 201}, {"id": "good-2", "status": 201}]
    errors = {(e["index"], e["id"]): e for e in body["errors"]}
    assert set(errors) == {
        (1, "bad-type"),
        (3, "bad-body"),
        (4, "naive-ts"),
        (5, None),
        (6, "negative-duration"),
    }
    assert all(e["status"] == 400 for e in body["errors"])
    assert "type" in errors[(1, "bad-type")]["message"]
    assert "body.workspace_id" in errors[(3, "bad-body")]["message"]
    assert "timezone" in errors[(4, "naive-ts")]["message"]
    assert "duration_seconds" in errors[(6, "negative-duration")]["message"]
    assert store.count_events(org="acme") == 2


def test_the_documented_body_describes_what_the_endpoint_takes(client, ingest_key):
    """/docs shows each event type's envelope and body (the endpoint reads the body itself,
    so FastAPI does not write it): the demo's events of every type conform to it; each
    required field, left out, makes both the schema and the endpoint refuse the event; and
    the example stores."""
    import jsonschema_rs

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    body = schemas["IngestRequest"]
    validator = jsonschema_rs.Draft202012Validator({**body, "components": {"schemas": schemas}})
    demo = [
        {k: v for k, v in e.items() if k != "org"}
        for e in generate(SCALES["demo"], seed=1, end=datetime(2024, 6, 1, tzinfo=UTC))
    ]
    assert {e["type"] for e in demo} == set(EVENT_TYPES)
    assert validator.is_valid({"batch": demo})
    first = {e["type"]: e for e in reversed(demo)}
    lacking = []
    for event_type, sample in first.items():
        envelope = schemas[body["properties"]["batch"]["items"]["discriminator"]["mapping"][event_type].split("/")[-1]]
        required = schemas[envelope["properties"]["body"]["$ref"].split("/")[-1]]["required"]
        for field in required:
            event = {**sample, "id": f"{sample['id']}-no-{field}"}
            event["body"] = {k: v for k, v in sample["body"].items() if k != field}
            assert not validator.is_valid({"batch": [event]}), (event_type, field)
            lacking.append(event)
    assert len(lacking) >= 30
    response = client.post("/api/v2/ingest", json={"batch": lacking}, headers=bearer(ingest_key))
    assert response.json()["successes"] == []
    assert [(e["index"], e["status"]) for e in response.json()["errors"]] == [(i, 400) for i in range(len(lacking))]
    stored = client.post("/api/v2/ingest", json=body["examples"][0], headers=bearer(ingest_key))
    assert stored.json() == {"successes": [{"id": "try-1", "status": 201}], "errors": []}


# A client may stamp its envelopes when it sends them: its retry then carries later times
# ("anew"), and is still the same events. (The ClickHouse store looked for them at the
# retry's times only, and stored each twice, until the thirty-fifth session.)
@pytest.mark.parametrize("stamped", ["same", "anew"])
def test_retrying_a_whole_batch_is_a_no_op_that_succeeds(client, ingest_key, store: Store, member_key, stamped):
    batch = [member(1, "admin", id="m-1"), call("c1", "a1", T0, duration=120, id="c-1")]
    first = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    if stamped == "anew":
        batch = [{**e, "timestamp": iso(T0 + timedelta(days=40))} for e in batch]
    again = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert [s["status"] for s in first["successes"]] == [201, 201]
    assert again == {"successes": [{"id": "m-1", "status": 200}, {"id": "c-1", "status": 200}], "errors": []}
    assert store.count_events(org="acme") == 2
    calls = _calls_on_may_1(client, bearer(member_key(1)))
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in calls] == [(1, 2.0)]


def test_a_batch_mixing_stored_and_new_events_stores_only_the_new(client, ingest_key, member_key):
    stored = [member(1, "admin", id="m-1"), call("c1", "a1", T0, duration=60, id="c-1")]
    client.post("/api/v2/ingest", json={"batch": stored}, headers=bearer(ingest_key))
    batch = [
        call("c2", "a1", T0, duration=120, id="c-2"),
        call("c1", "a1", T0, duration=60, id="c-1"),  # stored already
        call("c1", "a1", T0, duration=600, id="c-1-resent"),  # the stored call under a new event id
        call("c3", "a1", T0, duration=30, id="c-3"),
    ]
    body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert body == {
        "successes": [
            {"id": "c-2", "status": 201},
            {"id": "c-1", "status": 200},
            {"id": "c-1-resent", "status": 200},
            {"id": "c-3", "status": 201},
        ],
        "errors": [],
    }
    calls = _calls_on_may_1(client, bearer(member_key(1)))
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in calls] == [(3, (60 + 120 + 30) / 60)]


def test_an_id_repeated_inside_one_batch_is_stored_once(client, ingest_key, store: Store):
    batch = [call("c1", "a1", T0, duration=1, id="same"), call("c9", "a1", T0, duration=9, id="same")]
    body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert body["successes"] == [{"id": "same", "status": 201}, {"id": "same", "status": 200}]
    assert store.count_events(org="acme") == 1


def test_a_batch_of_chats_and_people_mixing_stored_and_new_events_stores_only_the_new(
    client, ingest_key, store: Store, member_key
):
    # On DuckDB the calls and the traces and sessions below are stored by two transactions
    # at once (the rest and the people's part); each finds its own stored events, and an id
    # sent twice under two types is one event, its first copy's.
    def trace(n: int, id: str) -> dict[str, Any]:
        return event("trace.create", {"trace_id": f"t{n}", "user_id": "u1", "timestamp": iso(T0)}, id=id)

    def session(n: int, id: str) -> dict[str, Any]:
        return event("session.create", {"session_id": f"s{n}", "user_id": "u1", "started_at": iso(T0)}, id=id)

    first = [member(1, "admin", id="m-1"), call("c1", "a1", T0, duration=60, id="c-1"), trace(1, "t-1")]
    client.post("/api/v2/ingest", json={"batch": first}, headers=bearer(ingest_key))
    batch = [
        call("c2", "a1", T0, duration=120, id="c-2"),
        trace(1, "t-1"),  # stored already
        call("c1", "a1", T0, duration=60, id="c-1"),  # stored already
        trace(2, "t-2"),
        session(1, "same"),
        call("c3", "a1", T0, duration=30, id="same"),  # the session's id: a repeat
        trace(1, "t-1-resent"),  # the stored trace under a new event id
    ]
    body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert body == {
        "successes": [
            {"id": "c-2", "status": 201},
            {"id": "t-1", "status": 200},
            {"id": "c-1", "status": 200},
            {"id": "t-2", "status": 201},
            {"id": "same", "status": 201},
            {"id": "same", "status": 200},
            {"id": "t-1-resent", "status": 200},
        ],
        "errors": [],
    }
    # m-1, c-1, t-1; then c-2, t-2, same, and t-1-resent's id (claimed, its entity not stored again)
    assert store.count_events(org="acme") == 3 + 4
    calls = _calls_on_may_1(client, bearer(member_key(1)))
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in calls] == [(2, (60 + 120) / 60)]


def test_event_ids_are_per_org(client, ingest_key, store: Store):
    from parley.auth.keys import create_key

    other_key = create_key(store, org="globex", ingest=True)
    batch = [call("c1", "a1", T0, duration=1, id="shared-id")]
    for key in (ingest_key, other_key):
        body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(key)).json()
        assert body["successes"] == [{"id": "shared-id", "status": 201}]
    assert store.count_events(org="acme") == store.count_events(org="globex") == 1


def test_an_event_naming_another_org_than_the_keys_is_refused_not_moved(client, ingest_key, store: Store):
    # As a bulk line naming another org than --org: stored in the key's org, it would
    # have sat among another tenant's data.
    batch = [
        {"org": "globex", **call("c1", "a1", T0, duration=1, id="theirs")},
        {"org": "acme", **call("c2", "a1", T0, duration=2, id="ours")},
        {"org": None, **call("c3", "a1", T0, duration=3, id="unnamed")},
        call("c4", "a1", T0, duration=4, id="plain"),
        {"org": 7, "type": "call.create"},
    ]
    body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert body == {
        "successes": [{"id": "ours", "status": 201}, {"id": "unnamed", "status": 201}, {"id": "plain", "status": 201}],
        "errors": [
            {
                "id": "theirs",
                "index": 0,
                "status": 400,
                "message": "event is for org 'globex', not this key's org 'acme'",
            },
            {"id": None, "index": 4, "status": 400, "message": "event is for org 7, not this key's org 'acme'"},
        ],
    }
    assert store.count_events(org="acme") == 3 and store.count_events(org="globex") == 0


def test_events_arriving_before_what_they_refer_to_are_kept(ingest, client, member_key, store: Store):
    # The call arrives before its assistant is registered, the member after its key exists.
    ingest(call("c1", "a1", T0, duration=90))
    key = member_key(7)
    forbidden = client.get("/analytics/calls/by-assistant", headers=bearer(key))
    assert forbidden.status_code == 403
    ingest(
        member(7, "controller"),
        event("assistant.upsert", {"assistant_id": "a1", "name": "Late Name"}),
    )
    data = client.get(
        "/analytics/calls/by-assistant",
        params={"start_date": "2024-05-01", "end_date": "2024-05-02"},
        headers=bearer(key),
    ).json()["data"]
    assert data["assistants"][0]["assistant_name"] == "Late Name"
    assert data["assistants"][0]["total_duration_minutes"] == 1.5


def test_the_latest_upsert_wins_whatever_the_arrival_order(ingest, client, member_key):
    key = member_key(3)
    url = "/analytics/calls/by-assistant"
    # Newest first: basic (latest) arrives before an older admin upsert.
    ingest(member(3, "basic", ts=T0 + days(2)))
    ingest(member(3, "admin", ts=T0))
    assert client.get(url, headers=bearer(key)).status_code == 403
    ingest(member(3, "curator", ts=T0 + days(3)))
    assert client.get(url, headers=bearer(key)).status_code == 200
    ingest(member(3, "basic", ts=T0 + days(1)))
    assert client.get(url, headers=bearer(key)).status_code == 200
    # Assistant names too: the newest upsert names the assistant.
    ingest(
        call("c1", "a1", T0, duration=60),
        event("assistant.upsert", {"assistant_id": "a1", "name": "Newest"}, ts=T0 + days(5)),
        event("assistant.upsert", {"assistant_id": "a1", "name": "Oldest"}, ts=T0 + days(4)),
    )
    data = client.get(url, params={"start_date": "2024-05-01"}, headers=bearer(key)).json()["data"]
    assert data["assistants"][0]["assistant_name"] == "Newest"


def test_a_batch_spanning_more_than_100_months_is_stored_whole(ingest, client, admin):
    # A backfill of years in one batch. ClickHouse refuses an insert into more than 100
    # partitions (months) unless told otherwise, and chdb's streaming insert took that
    # failure silently: every event acknowledged, none stored, and its ids taken.
    months = [datetime(2010 + m // 12, m % 12 + 1, 15, 12, tzinfo=T0.tzinfo) for m in range(150)]
    body = ingest(*[call(f"c{n}", "a1", started, duration=60) for n, started in enumerate(months)])
    assert [s["status"] for s in body["successes"]] == [201] * 150
    for year in range(2010, 2023):
        dates = {"start_date": f"{year}-01-01", "end_date": f"{year}-12-31"}
        response = client.get("/analytics/calls/by-assistant", params=dates, headers=admin)
        calls = [a["total_calls"] for a in response.json()["data"]["assistants"]]
        assert calls == [12 if year < 2022 else 6], (year, response.text)


def test_a_body_that_is_not_a_batch_is_a_400(client, ingest_key):
    for payload in (b"[]", b'{"events": []}', b'{"batch": {}}', b"not json", b""):
        response = client.post(
            "/api/v2/ingest",
            content=payload,
            headers={**bearer(ingest_key), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, payload
        assert response.json()["detail"]


def test_an_empty_batch_is_fine(client, ingest_key):
    response = client.post("/api/v2/ingest", json={"batch": []}, headers=bearer(ingest_key))
    assert response.status_code == 207
    assert response.json() == {"successes": [], "errors": []}


def test_more_than_10000_events_is_a_413(client, ingest_key, store: Store):
    batch = [call(f"c{i}", "a1", T0, duration=1) for i in range(10_001)]
    response = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
    assert response.status_code == 413
    assert "10000" in response.json()["detail"]
    assert store.count_events(org="acme") == 0


def test_exactly_10000_events_are_accepted(client, ingest_key, store: Store):
    batch = [call(f"c{i}", "a1", T0, duration=1, id=f"id-{i}") for i in range(10_000)]
    response = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
    assert response.status_code == 207
    assert len(response.json()["successes"]) == 10_000
    assert store.count_events(org="acme") == 10_000


def test_a_body_over_16_mib_is_a_413(client, ingest_key, store: Store):
    big = call("c1", "a1", T0, duration=1)
    big["body"]["padding"] = "x" * (16 * 1024 * 1024)
    payload = orjson.dumps({"batch": [big]})
    response = client.post(
        "/api/v2/ingest", content=payload, headers={**bearer(ingest_key), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert store.count_events(org="acme") == 0


def _post_encoded(client, key: str, content: bytes, encoding: str):
    headers = {**bearer(key), "Content-Type": "application/json", "Content-Encoding": encoding}
    return client.post("/api/v2/ingest", content=content, headers=headers)


def test_a_gzip_body_is_stored_as_the_plain_one_would_be(client, ingest_key, member_key, ingest):
    ingest(member(1, "admin"))
    calls = [call("c1", "a1", T0, duration=60, id="g1"), call("c2", "a1", T0, duration=30, id="g2")]
    body = orjson.dumps({"batch": calls})
    # Two gzip members, as concatenated files make: one body.
    two_members = gzip.compress(body[:40]) + gzip.compress(body[40:])
    response = _post_encoded(client, ingest_key, two_members, "gzip")
    assert response.status_code == 207, response.text
    assert response.json() == {"successes": [{"id": "g1", "status": 201}, {"id": "g2", "status": 201}], "errors": []}
    again = _post_encoded(client, ingest_key, gzip.compress(body), "X-GZIP")
    assert again.json()["successes"] == [{"id": "g1", "status": 200}, {"id": "g2", "status": 200}]
    calls = _calls_on_may_1(client, bearer(member_key(1)))
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in calls] == [(2, 1.5)]


def test_zero_bytes_after_a_gzip_member_are_padding_as_gzip_takes_them(client, ingest_key, member_key, ingest):
    # Written by tools that pad to a block; gzip -d, Python's gzip and `parley ingest` take
    # them, and the HTTP ingest answered 400 (trailing garbage, an "incorrect header check").
    ingest(member(1, "admin"))
    body = orjson.dumps({"batch": [call("c1", "a1", T0, duration=60, id="z1"), call("c2", "a1", T0, id="z2")]})
    padded = gzip.compress(body[:40]) + bytes(100) + gzip.compress(body[40:]) + bytes(512)
    assert gzip.decompress(padded) == body  # as Python's gzip reads it
    response = _post_encoded(client, ingest_key, padded, "gzip")
    assert response.status_code == 207, response.text
    assert response.json() == {"successes": [{"id": "z1", "status": 201}, {"id": "z2", "status": 201}], "errors": []}
    calls = _calls_on_may_1(client, bearer(member_key(1)))
    assert [(a["assistant_id"], a["total_calls"]) for a in calls] == [("a1", 2)]
    # Zeros, then what is not gzip: refused as ever.
    refused = _post_encoded(client, ingest_key, gzip.compress(body) + bytes(8) + b"xyz", "gzip")
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": "body is not valid gzip: Error -3 while decompressing data: incorrect header check"},
    )


def test_a_gzip_body_is_held_to_16_mib_once_decompressed(client, ingest_key, store: Store):
    big = call("c1", "a1", T0, duration=1)
    big["body"]["padding"] = "x" * (16 * 1024 * 1024)
    compressed = gzip.compress(orjson.dumps({"batch": [big]}))
    assert len(compressed) < 100_000  # small on the wire
    response = _post_encoded(client, ingest_key, compressed, "gzip")
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is over 16777216 bytes once decompressed"}
    assert store.count_events(org="acme") == 0


def test_a_gzip_bomb_is_refused_without_inflating_it():
    # 256 MiB of spaces in about 250 KB: refused once 16 MiB are out, holding about that.
    deflater = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    spaces = b" " * 2**20
    bomb = b"".join([deflater.compress(b'{"batch": [')] + [deflater.compress(spaces) for _ in range(256)])
    bomb += deflater.compress(b"]}") + deflater.flush()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="once decompressed"):
            gunzip(bomb, 16 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak


@pytest.mark.parametrize(
    ("encoding", "content", "status", "detail"),
    [
        (
            "gzip",
            b'{"batch": []}',
            400,
            "body is not valid gzip: Error -3 while decompressing data: incorrect header check",
        ),
        (
            "gzip",
            # mtime=0: the same bytes at every run, so the same test id (its bytes are in it)
            gzip.compress(b'{"batch": []}', mtime=0)[:-6],
            400,
            "body is not valid gzip: it ends before its stream does",
        ),
        ("br", b"xx", 415, "Content-Encoding 'br' is not supported: send the JSON plain or gzip"),
        ("deflate", b"xx", 415, "Content-Encoding 'deflate' is not supported: send the JSON plain or gzip"),
    ],
)
def test_a_body_that_is_not_gzip_as_it_says_or_in_another_encoding_is_refused(
    client, ingest_key, encoding, content, status, detail
):
    response = _post_encoded(client, ingest_key, content, encoding)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


@pytest.mark.parametrize("role", ["superadmin", "basic"])
def test_only_an_ingestion_key_may_ingest(client, ingest, member_key, role):
    ingest(member(1, role))
    response = client.post("/api/v2/ingest", json={"batch": [call("c1", "a1", T0)]}, headers=bearer(member_key(1)))
    assert response.status_code == 403
    assert response.json() == {"detail": "only an org ingestion key may ingest"}


def test_ingestion_needs_a_key(client):
    assert client.post("/api/v2/ingest", json={"batch": []}).status_code == 401
    response = client.post("/api/v2/ingest", json={"batch": []}, headers=bearer("prl_nope_nope"))
    assert response.status_code == 401


# A valid body of every event type.
ONE_OF_EACH: dict[str, dict[str, Any]] = {
    "workspace.upsert": {"workspace_id": WS, "name": "W"},
    "member.upsert": member(1, "admin")["body"],
    "assistant.upsert": {"assistant_id": "a1", "name": "Bot", "workspace_id": WS, "member_id": 9},
    "user.upsert": {"user_id": "u1", "registered_at": "2024-01-01T00:00:00+02:00", "name": "U"},
    "chat.upsert": {
        "workspace_id": WS,
        "chat_id": 1,
        "owner_member_id": 1,
        "chat_type": "dm",
        "channel": "web",
        "metadata": {"k": [1, 2]},
        "created_at": "2024-05-01T10:00:00Z",
    },
    "chat.update": {"workspace_id": WS, "chat_id": 1, "archived": True},
    "message.create": {
        "workspace_id": WS,
        "chat_id": 1,
        "message_id": "m1",
        "role": "assistant",
        "tool_calls": [{"name": "search", "arguments": {"q": 1}}, {"name": "noargs"}],
        "created_at": "2024-05-01T10:00:00Z",
    },
    "call.create": call("c1", "a1", T0)["body"],
    "session.create": {"session_id": "s1", "user_id": "u1", "started_at": "2024-05-01T10:00:00Z"},
    "trace.create": {"trace_id": "t1", "session_id": "s1", "timestamp": "2024-05-01T10:00:00Z"},
    "observation.create": {
        "observation_id": "o1",
        "trace_id": "t1",
        "type": "generation",
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 5,
        "start_time": "2024-05-01T10:00:00Z",
    },
    "feedback.create": {
        "feedback_id": "f1",
        "user_id": "u1",
        "rating": "positive",
        "created_at": "2024-05-01T10:00:00Z",
    },
}


def test_every_event_type_is_accepted(ingest, store: Store):
    body = ingest(*(event(t, b) for t, b in ONE_OF_EACH.items()))
    assert len(body["successes"]) == 12
    assert store.count_events(org="acme") == 12


SLASHED = "may not hold '/': it is a segment of the API's URL paths"


def test_a_workspace_holding_a_slash_is_refused_with_the_reason(ingest, store: Store):
    # A workspace is a segment of the API's paths (/api/v2/w/{workspace}/chats): such an
    # event was stored, and no request could read its workspace (404 Not Found).
    slashed = [
        event(t, body | {"workspace_id": "team/1"}, id=f"slashed-{t}")
        for t, body in ONE_OF_EACH.items()
        if "workspace_id" in body
    ]
    assert len(slashed) == 7
    body = ingest(call("c1", "a1", T0, id="good"), *slashed, expect_ok=False)
    assert body["successes"] == [{"id": "good", "status": 201}]
    assert [(e["id"], e["status"], e["message"]) for e in body["errors"]] == [
        (e["id"], 400, f"body.workspace_id: {SLASHED}") for e in slashed
    ]
    assert store.count_events(org="acme") == 1


def test_a_bulk_line_of_an_org_holding_a_slash_is_refused_with_the_reason():
    lines = [orjson.dumps({"org": org, **call("c1", "a1", T0, id=f"c-{org}")}) for org in ("acme", "team/1")]
    checked = validate_lines(lines, first_line=1, org=None)
    assert [(line_no, e.org, e.id) for line_no, e in checked.events] == [(1, "acme", "c-acme")]
    assert checked.rejected == [(2, f"org: {SLASHED}")]
    # And every line, when --org names such an org.
    lines = [orjson.dumps(call("c1", "a1", T0))]
    assert validate_lines(lines, first_line=1, org="team/1").rejected == [(1, f"org: {SLASHED}")]


def test_a_key_for_an_org_or_workspace_holding_a_slash_is_refused(store: Store):
    with pytest.raises(ValueError, match=f"^org {re.escape(SLASHED)}$"):
        create_key(store, org="team/1", ingest=True)
    with pytest.raises(ValueError, match=f"^workspace {re.escape(SLASHED)}$"):
        create_key(store, org="acme", workspace_id="team/1", member_id=1)
    assert store.list_api_keys() == []


def test_a_chat_update_must_change_something(ingest):
    body = ingest(event("chat.update", {"workspace_id": WS, "chat_id": 1}), expect_ok=False)
    assert body["successes"] == []
    assert "at least one of" in body["errors"][0]["message"]


# Values a changed event's fields are given: every JSON kind, some of them valid somewhere.
FIELD_VALUES = [
    None, "", "x", "dm", "web", "admin", "human", "generation", "positive", "user", WS,
    0, -1, 7, 2**62, 2**63, 1.5, -0.5, True, False, [], ["a"], [{"name": "t"}], {}, {"k": "v"},
    "2024-05-01T10:00:00", "2024-05-01T10:00:00Z", "2024-05-01T12:00:00+02:00", "9999-12-31T23:59:59-05:00",
    *EVENT_TYPES,
]  # fmt: skip
REMOVED = object()
FIELD_NAMES = sorted({"id", "type", "timestamp", "body"} | {name for body in ONE_OF_EACH.values() for name in body})


def _changed(type_: str, changes: list[tuple[bool, str, Any]]) -> dict[str, Any]:
    """A valid event of ``type_`` with each (in its body?, field, value or REMOVED) applied."""
    raw = event(type_, copy.deepcopy(ONE_OF_EACH[type_]), id="e-1")
    for in_body, name, value in changes:
        into = raw["body"] if in_body and isinstance(raw.get("body"), dict) else raw
        if value is REMOVED:
            into.pop(name, None)
        else:
            into[name] = copy.deepcopy(value)
    return raw


def _decision(validate, raw: dict[str, Any]) -> tuple:
    """What a validation made of ``raw``, every value and its kind spelled out (an equal
    datetime may have another offset; a model's fields set matter to chat updates)."""
    try:
        e = validate(copy.deepcopy(raw), "acme")
    except InvalidEvent as err:
        return ("refused", err.reason, err.event_id)
    return _spelled(e)


def _spelled(e: Event) -> tuple:
    body = tuple((name, repr(value)) for name, value in e.body)
    return ("kept", e.org, e.id, e.type, e.timestamp.isoformat(), type(e.body), body, e.body.model_fields_set)


def _in_a_body(raw: dict[str, Any], org: str) -> Event:
    """``raw`` alone in a request's body: the event ``validate_batch`` reads from it, or the
    one orjson's parse and ``validate_event`` make where it reads none."""
    body = orjson.dumps({"batch": [raw]})
    events = validate_batch(body, org)
    return validate_event(orjson.loads(body)["batch"][0], org) if events is None else events[0]


def _assert_decided_alike(raw: dict[str, Any]) -> str:
    decided = _decision(validate_in_two_steps, raw)
    assert _decision(validate_event, raw) == decided, raw
    assert _decision(_in_a_body, raw) == decided, raw
    if decided[0] == "kept":  # and the one validation kept it, not the two steps again; the body read in one pass
        ingest_events._TYPED_EVENT.validate_python(raw)
        assert validate_batch(orjson.dumps({"batch": [raw]}), "acme") is not None
    return decided[0]


def test_the_one_validation_decides_as_the_envelope_and_then_its_body_do_for_each_change():
    """Every valid event with one field (of the envelope or the body, its own or another
    type's) removed or set to each of FIELD_VALUES: kept or refused alike, the same values."""
    decisions = Counter()
    for type_ in ONE_OF_EACH:
        for in_body, names in ((False, ["id", "type", "timestamp", "body"]), (True, FIELD_NAMES)):
            for name in names:
                for value in [REMOVED, *FIELD_VALUES]:
                    decisions[_assert_decided_alike(_changed(type_, [(in_body, name, value)]))] += 1
    assert decisions["kept"] > 1000 and decisions["refused"] > 1000


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ONE_OF_EACH)),
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(FIELD_NAMES), st.sampled_from([REMOVED, *FIELD_VALUES])), max_size=4
    ),
)
def test_the_one_validation_decides_as_the_envelope_and_then_its_body_do_for_changes_together(type_, changes):
    _assert_decided_alike(_changed(type_, changes))


# Every JSON value Python's json module writes: NaN, infinities, integers of any size.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, JSON_VALUES)
def test_a_body_read_in_one_pass_makes_the_events_orjson_s_way_makes(metadata, arguments):
    """Free JSON values in a chat's metadata and a tool call's arguments: the events that
    ``validate_batch`` reads from a body are those of orjson's parse and ``validate_event``
    (1 and 1.0 apart, a long integer as orjson's float); a body orjson refuses, it reads none."""
    chat = event("chat.upsert", ONE_OF_EACH["chat.upsert"] | {"metadata": {"m": metadata}}, id="e-1")
    tool_calls = [{"name": "t", "arguments": arguments}]
    message = event("message.create", ONE_OF_EACH["message.create"] | {"tool_calls": tool_calls}, id="e-2")
    body = json.dumps({"batch": [chat, message]}).encode()
    events = validate_batch(body, "acme")
    try:
        raws = orjson.loads(body)["batch"]
    except orjson.JSONDecodeError:
        assert events is None
        return
    if events is not None:
        assert [_spelled(e) for e in events] == [_decision(validate_event, raw) for raw in raws]


def test_the_demo_s_events_are_read_in_one_pass_as_orjson_s_way_reads_them():
    """Up to 300 events of each type from the demo's org acme, each naming its org."""
    acme = [
        raw for raw in generate(SCALES["demo"], seed=3, end=datetime(2026, 6, 1, tzinfo=UTC)) if raw["org"] == "acme"
    ]
    raws = [raw for type_ in EVENT_TYPES for raw in [raw for raw in acme if raw["type"] == type_][:300]]
    assert Counter(raw["type"] for raw in raws).keys() == set(EVENT_TYPES)
    events = validate_batch(orjson.dumps({"batch": raws}), "acme")
    assert events is not None
    assert [_spelled(e) for e in events] == [_decision(validate_event, raw) for raw in raws]


def test_a_good_event_naming_another_org_is_refused_among_good_ones(client, ingest_key, store: Store):
    # Every event valid, so the body is read in one pass (``validate_batch``) until the
    # org named is found; then it goes orjson's way, which says why.
    batch = [call(f"c{i}", "a1", T0, duration=1, id=f"id-{i}") for i in range(3)]
    batch[1] = {"org": "globex", **batch[1]}
    batch[2] = {"org": "acme", **batch[2]}
    body = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key)).json()
    assert body == {
        "successes": [{"id": "id-0", "status": 201}, {"id": "id-2", "status": 201}],
        "errors": [
            {"id": "id-1", "index": 1, "status": 400, "message": "event is for org 'globex', not this key's org 'acme'"}
        ],
    }
    assert store.count_events(org="acme") == 2 and store.count_events(org="globex") == 0


def test_a_number_that_orjson_refuses_is_a_400_for_the_body_as_ever(client, ingest_key, store: Store):
    chat = event("chat.upsert", ONE_OF_EACH["chat.upsert"], id="e-1")
    good = json.dumps({"batch": [chat]})
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        payload = good.replace('"metadata": {"k": [1, 2]}', f'"metadata": {{"k": [1, {number}]}}')
        assert payload != good
        response = client.post(
            "/api/v2/ingest", content=payload, headers={**bearer(ingest_key), "Content-Type": "application/json"}
        )
        assert response.status_code == 400, number
        assert response.json()["detail"].startswith("body is not JSON"), number
    assert store.count_events(org="acme") == 0


def _nested(levels: int) -> Any:
    """A JSON value of objects and arrays in turn, nested ``levels`` deep, an object outermost."""
    value: Any = "leaf"
    for level in range(levels, 0, -1):
        value = {"k": value} if level % 2 else [value]
    return value


def test_a_free_json_value_nests_at_most_128_levels(client, ingest_key, store: Store):
    # Before, 254 levels or more (what orjson writes at most) were a 500 for the whole
    # request, its good events lost with it.
    chat = ONE_OF_EACH["chat.upsert"]

    def message(message_id: str, levels: int) -> dict[str, Any]:
        tool_calls = [{"name": "t", "arguments": _nested(levels)}]
        return ONE_OF_EACH["message.create"] | {"message_id": message_id, "tool_calls": tool_calls}

    batch = [
        event("chat.upsert", chat | {"chat_id": 1, "metadata": _nested(128)}, id="deep-enough"),
        event("chat.upsert", chat | {"chat_id": 2, "metadata": _nested(129)}, id="too-deep"),
        event("chat.upsert", chat | {"chat_id": 3, "metadata": _nested(300)}, id="far-too-deep"),
        event("message.create", message("m1", 128), id="args-deep-enough"),
        event("message.create", message("m2", 129), id="args-too-deep"),
    ]
    response = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
    assert response.status_code == 207
    body = response.json()
    assert body["successes"] == [{"id": "deep-enough", "status": 201}, {"id": "args-deep-enough", "status": 201}]
    reason = "a JSON value may nest at most 128 levels of objects and arrays"
    assert [(e["id"], e["message"]) for e in body["errors"]] == [
        ("too-deep", f"body.metadata: {reason}"),
        ("far-too-deep", f"body.metadata: {reason}"),
        ("args-too-deep", f"body.tool_calls.0.arguments: {reason}"),
    ]
    assert store.count_events(org="acme") == 2


def test_values_the_store_cannot_hold_are_a_400_for_that_event_only(client, ingest_key, store: Store):
    observation = {
        "observation_id": "o-rich",
        "trace_id": "t-1",
        "type": "generation",
        "cost_usd": 1_000_000.01,  # over the 1,000,000 USD an observation may cost
        "start_time": "2024-05-01T10:00:00Z",
    }
    batch = [
        call("c1", "a1", T0, duration=60, id="good"),
        event("user.upsert", {"user_id": "u", "registered_at": "2024-01-01T00:00:00Z"}, id="far-future")
        | {"timestamp": "9999-12-31T23:59:59-05:00"},  # after the last instant once in UTC
        event("observation.create", observation, id="too-costly"),
        event("observation.create", observation | {"cost_usd": 1_000_000}, id="costly"),
    ]
    response = client.post("/api/v2/ingest", json={"batch": batch}, headers=bearer(ingest_key))
    assert response.status_code == 207
    body = response.json()
    assert body["successes"] == [{"id": "good", "status": 201}, {"id": "costly", "status": 201}]
    errors = {e["id"]: (e["status"], e["message"]) for e in body["errors"]}
    assert errors == {
        "far-future": (400, "timestamp: Input should be less than or equal to 9999-12-31T23:59:59.999999Z"),
        "too-costly": (400, "body.cost_usd: Input should be less than or equal to 1000000"),
    }
    assert store.count_events(org="acme") == 2


def _wait_until_queued(store, batches: int) -> None:
    """Until ``batches`` batches wait for the store's writer."""
    deadline = time.monotonic() + 10
    while len(store._commits.pending) < batches:
        assert time.monotonic() < deadline, "a batch never queued"
        time.sleep(0.001)


def _ingest_together(store: Store, batches: list[list]) -> dict[int, StoreOutcome]:
    """Each batch's outcome, the batches ingested from a thread each while the writer is busy,
    so that every one waits for it, in this order."""
    outcomes: dict[int, StoreOutcome] = {}
    threads = [
        threading.Thread(target=lambda i=i, batch=batch: outcomes.update({i: store.ingest(batch)}))
        for i, batch in enumerate(batches)
    ]
    with store._write_lock:
        for n, thread in enumerate(threads, start=1):
            thread.start()
            _wait_until_queued(store, n)
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _wait_for_state(store: Store) -> None:
    """Until a DuckDB store has kept the state of the groups it answered before keeping it
    (``DuckDBStore.state_wait_s`` after the last); ClickHouse folds it as it reads."""
    if not isinstance(store, DuckDBStore):
        return
    deadline = time.monotonic() + 10
    while True:
        with store._write_lock:  # held while a state is kept
            if not store._state_waiting:
                return
        assert time.monotonic() < deadline, "the state of a group was never kept"
        time.sleep(0.01)


def _writes(store: Store, *ids: str) -> int:
    """How many writes stored the events ``ids``: each write claims its events at one time."""
    quoted = ", ".join(f"'{i}'" for i in ids)
    sql = f"SELECT count(DISTINCT ingested_at) FROM event_ledger WHERE event_id IN ({quoted})"
    return store._fetchall(sql, {})[0][0]


def test_concurrent_batches_share_one_write(store: Store):
    """Group commit: batches that wait for the writer are stored together, each id new once."""

    def calls(*ids: str) -> list:
        return [validate_event(call(f"call-{i}", "a1", T0, duration=60, id=i), "acme") for i in ids]

    store.ingest(calls("old"))
    outcomes = _ingest_together(store, [calls("a", "b"), calls("b", "c"), calls("c", "c"), calls("old")])
    assert outcomes == {
        0: StoreOutcome(["a", "b"], [], {}),
        1: StoreOutcome(["c"], ["b"], {}),
        2: StoreOutcome([], ["c", "c"], {}),
        3: StoreOutcome([], ["old"], {}),
    }
    assert _writes(store, "a", "b", "c") == 1
    assert store.count_events(org="acme") == 4


def test_concurrent_batches_claiming_one_entity_keep_its_first_claim(store: Store):
    """Batches that wait for the writer together, with no id in common: a call claimed
    under another id in a later batch is a duplicate there, as it is in one batch."""

    def calls(*claims: tuple[str, str, int]) -> list:
        return [validate_event(call(f"call-{c}", "a1", T0, duration=d, id=i), "acme") for i, c, d in claims]

    batches = [calls(("a", "1", 10), ("b", "2", 20)), calls(("c", "2", 30), ("d", "3", 40)), calls(("e", "4", 50))]
    assert _ingest_together(store, batches) == {
        0: StoreOutcome(["a", "b"], [], {}),
        1: StoreOutcome(["d"], ["c"], {}),
        2: StoreOutcome(["e"], [], {}),
    }
    assert _writes(store, "a", "b", "d", "e") == 1
    stored = store._fetchall("SELECT call_id, duration_us FROM calls ORDER BY call_id", {})
    assert stored == [("call-1", 10_000_000), ("call-2", 20_000_000), ("call-3", 40_000_000), ("call-4", 50_000_000)]


def test_concurrent_batches_of_chats_and_people_are_stored_as_one_batch(client, store: Store, admin):
    """Batches that wait for the writer together, each of the people's events, the rest or
    both (on DuckDB two transactions, each taking its part of every batch): an observation
    finds the trace another batch brings, and that trace the session of a third, as in
    one batch."""

    def acme(*raws: dict[str, Any]) -> list:
        return [validate_event(raw, "acme") for raw in raws]

    def observation(n: int, cost: float) -> dict[str, Any]:
        body = {"observation_id": f"o{n}", "trace_id": "t1", "type": "generation", "start_time": iso(T0)}
        return event("observation.create", {**body, "cost_usd": cost}, id=f"obs-{n}")

    session = event("session.create", {"session_id": "s1", "user_id": "u1", "started_at": iso(T0)}, id="ses")
    trace = event("trace.create", {"trace_id": "t1", "session_id": "s1", "timestamp": iso(T0)}, id="tra")
    batches = [
        acme(call("c1", "a1", T0, duration=60, id="c-1"), session),
        acme(trace, call("c2", "a1", T0, duration=120, id="c-2")),
        acme(observation(1, 0.25), observation(2, 0.5)),
        acme(call("c3", "a2", T0, duration=30, id="c-3")),
    ]
    assert _ingest_together(store, batches) == {
        0: StoreOutcome(["c-1", "ses"], [], {}),
        1: StoreOutcome(["tra", "c-2"], [], {}),
        2: StoreOutcome(["obs-1", "obs-2"], [], {}),
        3: StoreOutcome(["c-3"], [], {}),
    }
    # One write of the calls, one of the people's events (on DuckDB each part is a
    # transaction of its own; a ClickHouse write claims all at one time).
    assert _writes(store, "c-1", "c-2", "c-3") == _writes(store, "ses", "tra", "obs-1", "obs-2") == 1
    _wait_for_state(store)
    cost = client.get(
        "/api/ai-analytics/orgs/acme/users/u1/user-cost/",
        params={"start_date": "2024-05-01", "end_date": "2024-05-01"},
        headers=admin,
    )
    assert cost.json() == {"total_cost": 0.75}
    calls = _calls_on_may_1(client, admin)
    assert sorted((a["assistant_id"], a["total_calls"], a["total_duration_minutes"]) for a in calls) == [
        ("a1", 2, (60 + 120) / 60),
        ("a2", 1, 30 / 60),
    ]


def test_a_write_waits_for_the_callers_the_last_one_answered(store: Store):
    """The next write waits for as many batches as the last one stored and saw come while
    it ran, at most ``GroupCommit.wait_s``; a lone caller never waits."""
    store._commits.wait_s = 10.0  # generous, so that a slow machine still sees the same groups

    def ingest_later(delay: float, *ids: str) -> threading.Thread:
        events = [validate_event(call(f"call-{i}", "a1", T0, duration=60, id=i), "acme") for i in ids]
        thread = threading.Thread(target=store.ingest, args=(events,))
        time.sleep(delay)
        thread.start()
        return thread

    # Alone: "solo-1" is stored before "solo-2" comes, half a second later, which then
    # does not wait.
    started = time.monotonic()
    for thread in [ingest_later(0, "solo-1"), ingest_later(0.5, "solo-2")]:
        thread.join(timeout=30)
    assert _writes(store, "solo-1", "solo-2") == 2
    assert time.monotonic() - started < 5

    # Two batches that waited for the writer share a write...
    with store._write_lock:
        pair = [ingest_later(0, "pair-1"), ingest_later(0, "pair-2")]
        _wait_until_queued(store, 2)
    for thread in pair:
        thread.join(timeout=30)
    assert _writes(store, "pair-1", "pair-2") == 1

    # ... so the next write waits for "next-2", which comes 0.3 s after "next-1".
    for thread in [ingest_later(0, "next-1"), ingest_later(0.3, "next-2")]:
        thread.join(timeout=30)
    assert _writes(store, "next-1", "next-2") == 1

    # A batch that comes while a write runs is expected back too: "early" is stored alone
    # while "late-1" comes, and "late-1" then waits for "late-2".
    store._commits.wait_s = 0.01
    ingest_later(0, "expected-back").join(timeout=30)  # the next expects one batch
    store._commits.wait_s = 10.0
    store_group = store._commits.store_group

    def store_group_while_one_comes(group):
        if any(e.id == "early" for ticket in group for e in ticket.events):
            late.append(ingest_later(0, "late-1"))
            _wait_until_queued(store, 1)
        store_group(group)

    late: list[threading.Thread] = []
    store._commits.store_group = store_group_while_one_comes
    ingest_later(0, "early").join(timeout=30)
    late.append(ingest_later(0.3, "late-2"))
    for thread in late:
        thread.join(timeout=30)
    assert _writes(store, "early", "late-1") == 2
    assert _writes(store, "late-1", "late-2") == 1
    assert store.count_events(org="acme") == 10


# The same instants spelt as ISO-8601 with the offsets' minutes, and as PostgreSQL prints a
# timestamptz: a space for the T, and an offset of whole hours without minutes (ISO-8601
# too). (chat created, message sent, call ended, chat's event, message's event)
OFFSET_SPELLINGS = {
    "iso": (
        "2024-05-01T01:30:00+02:00",
        "2024-04-30T22:15:00.5-05:00",
        "2024-05-01T02:00:30+02:00",
        "2024-05-01T05:30:00+05:30",
        "2024-04-30T22:15:00-05:00",
    ),
    "postgresql": (
        "2024-05-01 01:30:00+02",
        "2024-04-30 22:15:00.5-05",
        "2024-05-01 02:00:30+02",
        "2024-05-01 05:30:00+05:30",
        "2024-04-30 22:15:00-05",
    ),
}


@pytest.mark.parametrize("spelling", OFFSET_SPELLINGS)
def test_times_with_offsets_are_stored_as_the_same_instant_in_utc(ingest, client, admin, spelling):
    created, sent, ended, chat_ts, message_ts = OFFSET_SPELLINGS[spelling]
    chat = {
        "workspace_id": WS,
        "chat_id": 7,
        "owner_member_id": 1,
        "chat_type": "dm",
        "channel": "web",
        "title": created,  # text, not a time: kept as it is
        "created_at": created,
    }
    message = {
        "workspace_id": WS,
        "chat_id": 7,
        "message_id": "m-7",
        "role": "user",
        "content": f"sent {sent}",
        "created_at": sent,
    }
    late_night_call = call("c-7", "a1", T0)
    late_night_call["body"] |= {"started_at": created, "ended_at": ended}  # still April 30 in UTC
    body = ingest(
        event("chat.upsert", chat) | {"timestamp": chat_ts},
        event("message.create", message) | {"timestamp": message_ts},
        late_night_call,
    )
    assert [s["status"] for s in body["successes"]] == [201, 201, 201]
    (row,) = client.get(f"/api/v2/w/{WS}/chats", headers=admin).json()["items"]
    assert (row["title"], row["createdAt"], row["updatedAt"], row["lastMessageAt"]) == (
        created,
        "2024-04-30T23:30:00Z",
        "2024-05-01T00:00:00Z",
        "2024-05-01T03:15:00.500000Z",
    )
    searched = client.get(f"/api/v2/w/{WS}/chats", params={"search": f"sent {sent}"}, headers=admin).json()
    assert searched["total"] == 1  # the message's text as it came
    calls = client.get(
        "/analytics/calls/by-assistant", params={"start_date": "2024-04-30", "end_date": "2024-04-30"}, headers=admin
    ).json()["data"]["assistants"]
    assert [(a["assistant_id"], a["total_calls"], a["total_duration_minutes"]) for a in calls] == [("a1", 1, 30.5)]


def test_an_offset_of_one_digit_is_refused_and_named(ingest):
    bad = call("c-8", "a1", T0)
    bad["body"]["started_at"] = "2024-05-01T01:30:00+2"  # no ISO-8601
    refused = ingest(bad | {"timestamp": "2024-05-01 01:30:00+02"}, expect_ok=False)["errors"]
    assert [(e["id"], e["status"], e["message"].split(":")[0]) for e in refused] == [
        (bad["id"], 400, "body.started_at")
    ]


# Unix time in seconds, in milliseconds (beyond 2 x 10^10), with a fraction or as a string of
# digits, which pydantic read as a time and the store kept; and a boolean, refused before
# as "Input should be a valid datetime".
NOT_TEXT_TIMES = [1714557600, 1714557600000, 1714557600.5, "1714557600", True]
NOT_TEXT = "a time is ISO-8601 text with an offset, such as 2024-05-01T10:00:00Z"


def test_a_time_that_is_not_iso_8601_text_is_refused_with_the_reason(ingest, client, admin):
    numbered = [call(f"c-{i}", "a1", T0, id=f"time-{i}") | {"timestamp": t} for i, t in enumerate(NOT_TEXT_TIMES)]
    started = call("c-started", "a1", T0, id="started")
    started["body"]["started_at"] = NOT_TEXT_TIMES[0]
    body = ingest(call("c-good", "a1", T0, duration=90, id="good"), *numbered, started, expect_ok=False)
    assert body["successes"] == [{"id": "good", "status": 201}]
    assert [(e["id"], e["status"], e["message"]) for e in body["errors"]] == [
        *((e["id"], 400, f"timestamp: {NOT_TEXT}") for e in numbered),
        ("started", 400, f"body.started_at: {NOT_TEXT}"),
    ]
    day = T0.date().isoformat()
    calls = client.get(
        "/analytics/calls/by-assistant", params={"start_date": day, "end_date": day}, headers=admin
    ).json()["data"]["assistants"]
    assert [(a["assistant_id"], a["total_calls"], a["total_duration_minutes"]) for a in calls] == [("a1", 1, 1.5)]
    # And in a bulk load's lines.
    lines = [orjson.dumps({"org": "acme", **e}) for e in (call("c-bulk", "a1", T0, id="bulk"), numbered[0])]
    checked = validate_lines(lines, first_line=1, org=None)
    assert [(line_no, e.id) for line_no, e in checked.events] == [(1, "bulk")]
    assert checked.rejected == [(2, f"timestamp: {NOT_TEXT}")]


@pytest.mark.parametrize("spec", [{}, {"get": lambda e: e.id, "field": "event_id"}], ids=["neither", "both"])
def test_a_column_is_a_body_field_or_a_getter(spec):
    with pytest.raises(ValueError, match="'event_id' needs a body field or a getter"):
        Column("event_id", STR, **spec)


def test_a_batchs_rows_hold_each_body_field_as_validated_and_null_where_the_body_has_none():
    upsert = event(
        "chat.upsert",
        {
            "workspace_id": WS,
            "chat_id": 7,
            "owner_member_id": 3,
            "chat_type": "dm",
            "channel": "web",
            "title": "Refunds",
            "unknown_field": "ignored",
            "created_at": "2024-05-01T12:30:00+02:00",
        },
    )
    update = event("chat.update", {"workspace_id": WS, "chat_id": 7, "paused": True, "assistant_member_id": 9})
    trace = event("trace.create", {"trace_id": "t-1", "user_id": "u-1", "timestamp": "2024-05-01T08:00:00.25-01:00"})
    observation = event(
        "observation.create",
        {"observation_id": "o-1", "trace_id": "t-1", "type": "generation", "start_time": "2024-05-01T09:00:00Z"},
    )
    batch = column_batch(validate_event(raw, "acme") for raw in (upsert, update, trace, observation))

    chat_columns = "op chat_id owner_member_id assistant_member_id chat_type channel title paused archived created_at"
    chats = batch.tables["chat_events"].select(chat_columns.split())
    assert chats.to_pylist() == [
        {
            "op": "upsert",
            "chat_id": 7,
            "owner_member_id": 3,
            "assistant_member_id": None,
            "chat_type": "dm",
            "channel": "web",
            "title": "Refunds",
            "paused": False,
            "archived": False,
            "created_at": datetime(2024, 5, 1, 10, 30),
        },
        {
            "op": "update",
            "chat_id": 7,
            "owner_member_id": None,
            "assistant_member_id": 9,
            "chat_type": None,
            "channel": None,
            "title": None,
            "paused": True,
            "archived": None,
            "created_at": None,
        },
    ]
    traces = batch.tables["traces"].select(["trace_id", "session_id", "user_id", "traced_at"])
    assert traces.to_pylist() == [
        {"trace_id": "t-1", "session_id": None, "user_id": "u-1", "traced_at": datetime(2024, 5, 1, 9, 0, 0, 250000)}
    ]
    observations = batch.tables["observations"].select(["obs_type", "model", "input_tokens", "cost_pusd", "start_time"])
    assert observations.to_pylist() == [
        {
            "obs_type": "generation",
            "model": None,
            "input_tokens": None,
            "cost_pusd": None,
            "start_time": datetime(2024, 5, 1, 9),
        }
    ]


def _message(id: str, message_id: str) -> dict[str, Any]:
    """A raw message event ``id`` of chat 7, the message ``message_id``."""
    body = {"workspace_id": WS, "chat_id": 7, "message_id": message_id, "role": "user", "created_at": iso(T0)}
    return event("message.create", body, id=id)


def test_batches_are_joined_in_order_unless_two_claim_one_event_or_entity():
    def batch(*raws: dict) -> ColumnBatch:
        return column_batch(validate_event(raw, "acme") for raw in raws)

    first = batch(_message("e-1", "m-1"), _message("e-1", "m-9"))  # the second copy of e-1 is repeated
    second = batch(call("c-1", "bot", T0, id="e-2"), _message("e-3", "m-2"))
    joined = joined_batches([first, second])
    assert joined is not None
    assert joined.keys == [("acme", "e-1"), ("acme", "e-2"), ("acme", "e-3")]
    assert joined.repeated == 1
    assert joined.ledger.column("event_id").to_pylist() == ["e-1", "e-2", "e-3"]
    assert joined.tables["messages"].column("message_id").to_pylist() == ["m-1", "m-2"]
    assert joined.tables["calls"].column("call_id").to_pylist() == ["c-1"]

    assert joined_batches([first, batch(_message("e-1", "m-3"))]) is None  # an event id again
    assert joined_batches([first, batch(_message("e-4", "m-1"))]) is None  # a message again
    other_org = column_batch([validate_event(_message("e-1", "m-1"), "globex")])  # ids and entities are per org
    assert joined_batches([first, other_org]) is not None


def test_a_batch_built_a_part_at_a_time_repeats_what_an_earlier_part_claimed():
    def message(id: str, message_id: str, org: str = "acme") -> Event:
        return validate_event(_message(id, message_id), org)

    builder = ColumnBatchBuilder()
    builder.add([validate_event(call("c-1", "bot", T0, id="e-2"), "acme")])
    builder.add([message("e-1", "m-1")])
    builder.add([message("e-1", "m-9"), message("e-4", "m-1")])  # e-1 again; m-1 again, under e-4
    builder.add([])
    builder.add([message("e-3", "m-2"), message("e-1", "m-1", org="globex")])  # ids and entities are per org
    batch = builder.build()

    assert batch.keys == [("acme", "e-2"), ("acme", "e-1"), ("acme", "e-3"), ("globex", "e-1")]
    assert batch.repeated == 2
    # An event repeating an entity claims its id all the same, as in one batch.
    assert batch.ledger.column("event_id").to_pylist() == ["e-2", "e-1", "e-4", "e-3", "e-1"]
    assert batch.ledger.column("org").to_pylist() == ["acme"] * 4 + ["globex"]
    assert batch.entities.column("event_id").to_pylist() == ["e-2", "e-1", "e-3", "e-1"]
    assert list(batch.tables) == ["messages", "calls"]  # in the tables' order, as one batch's
    assert batch.tables["messages"].column("message_id").to_pylist() == ["m-1", "m-2", "m-1"]
    assert batch.tables["calls"].column("call_id").to_pylist() == ["c-1"]
    assert all(column.num_chunks == 1 for table in batch.tables.values() for column in table.columns)


def test_an_entity_is_keyed_by_its_type_and_ids_as_the_ledgers_keep_it():
    # A store's entity ledger holds these keys: the same entity sent again, to a store an
    # earlier Parley wrote, must give the same key.
    message = {"workspace_id": WS, "chat_id": 1, "message_id": "m-7", "role": "user", "created_at": iso(T0)}
    trace = {"trace_id": "t-9", "timestamp": iso(T0)}
    keys = [
        entity_key(validate_event(event(kind, body), "acme"))
        for kind, body in (("message.create", message), ("trace.create", trace))
    ]
    assert keys == [f"message.create\x1f{WS}\x1fm-7", "trace.create\x1ft-9"]
    assert entity_key(validate_event(member(3, "admin"), "acme")) is None
