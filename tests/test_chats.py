"""The chat endpoints (seed 001, contract 5.2) against a plain-Python reference."""

from __future__ import annotations

import csv
import io
import random
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.app import create_app
from parley.auth.keys import create_key
from parley.metrics.chats.query import ChatQuery
from parley.metrics.chats.router import csv_stream
from parley.settings import Settings
from parley.store.chat_sql import CHAT_LIST_COLUMNS, EXPORT_TIME_COLUMNS, times_as_text
from parley.store.duckdb import DuckDBStore
from parley.store.port import open_store
from tests.chat_reference import World, iso, sort_rows
from tests.conftest import NOW, STORE_KINDS, bearer, store_url_for
from tests.factories import WS, WS_OTHER, event, member

BASE = f"/api/v2/w/{WS}/chats"
START = datetime(2024, 4, 1, tzinfo=UTC)
TITLES = [
    "Refund for order",
    "refund again",
    "=HYPERLINK(evil)",
    "+1 555",
    "-minus",
    "@mention",
    "\ttabbed",
    "\rreturn",
    'Quote "this", please',
    "multi\nline",
    "Ümlaut Straße",
    "",
    None,
    "plain",
]
CHANNELS = ["web", "slack", "email"]
TYPES = ["assignment", "manager", "dm", "testing"]
CONTENTS = ["hello there", "my ORDER is late", "refund please", "thanks!", "needle in a haystack", "ok"]
TOOLS = ["search_docs", "Create_Ticket", "ärger", "zeta", "alpha"]
METADATA = [
    None,
    {"priority": "high", "score": 5},
    {"priority": "low", "score": 2.5, "vip": True},
    {"priority": "high", "vip": False, "tags": ["red", "blue"]},
    {"score": 10, "nested": {"city": "Berlin"}},
    {"priority": None, "a/b": "slash"},
    {},
]
HUMANS = {1: "admin", 2: "basic", 3: "controller", 4: "curator", 5: "basic", 6: "basic"}
ASSISTANTS = {100: "Sales Bot", 101: "Support Bot"}


def generate_events(seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for member_id, role in HUMANS.items():
        scopes = ["chats:admin"] if member_id == 3 else []
        events.append(member(member_id, role, scopes=scopes, anonymous=member_id in (5, 6)))
    # A member renamed later: the newest name is the one shown.
    events.append(
        member(4, "curator", ts=START + timedelta(days=90))
        | {"body": {**member(4, "curator")["body"], "name": "Renamed Four"}}
    )
    for member_id, name in ASSISTANTS.items():
        body = {"workspace_id": WS, "member_id": member_id, "name": name, "kind": "assistant", "role": "basic"}
        events.append(event("member.upsert", body))
    chat_ids = rng.sample(range(1, 100_000), 140)
    for n, chat_id in enumerate(chat_ids):
        created = START + timedelta(seconds=rng.randrange(60 * 86_400), microseconds=rng.choice([0, 0, 123456, 120000]))
        body: dict[str, Any] = {
            "workspace_id": WS,
            "chat_id": chat_id,
            "owner_member_id": rng.choice([*HUMANS, 77]),  # 77: never upserted
            "chat_type": rng.choice(TYPES),
            "channel": rng.choice(CHANNELS),
            "created_at": iso(created.replace(tzinfo=None)),
        }
        if rng.random() < 0.8:
            body["assistant_member_id"] = rng.choice([*ASSISTANTS, 999])  # 999: never upserted
        title = rng.choice(TITLES)
        if title is not None:
            body["title"] = title
        metadata = rng.choice(METADATA)
        if metadata is not None:
            body["metadata"] = metadata
        for flag in ("archived", "needs_response", "paused", "muted", "is_test"):
            if rng.random() < 0.3:
                body[flag] = True
        upsert_ts = created + timedelta(seconds=1)
        if n % 17 != 0:  # a few chats only ever get updates: they do not exist
            events.append(event("chat.upsert", body, ts=upsert_ts))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            update: dict[str, Any] = {"workspace_id": WS, "chat_id": chat_id}
            for key in rng.sample(
                [
                    "title",
                    "metadata",
                    "archived",
                    "needs_response",
                    "paused",
                    "muted",
                    "is_test",
                    "assistant_member_id",
                ],
                2,
            ):
                update[key] = {
                    "title": rng.choice(TITLES),
                    "metadata": rng.choice(METADATA),
                    "assistant_member_id": rng.choice([100, 101, None]),
                }.get(key, rng.random() < 0.5)
            # Updates land before or after the upsert: only newer ones win.
            events.append(event("chat.update", update, ts=upsert_ts + timedelta(hours=rng.randrange(-48, 48))))
        moment = created
        for k in range(rng.choice([0, 1, 2, 4, 6])):
            moment += timedelta(minutes=rng.randrange(1, 600))
            message: dict[str, Any] = {
                "workspace_id": WS,
                "chat_id": chat_id,
                "message_id": f"m-{chat_id}-{k}",
                "role": rng.choice(["user", "assistant", "tool"]),
                "sender_member_id": rng.choice([*HUMANS, 100]),
                "content": rng.choice(CONTENTS),
                "created_at": iso(moment.replace(tzinfo=None)),
            }
            if rng.random() < 0.3:
                message["tool_calls"] = [{"name": t} for t in rng.sample(TOOLS, rng.choice([1, 2]))]
            events.append(event("message.create", message, ts=moment))
            if rng.random() < 0.1:  # the same message re-sent under a new event id
                events.append(event("message.create", message, ts=moment))
    # Another workspace's chat, which no query here may see.
    other = {
        "workspace_id": WS_OTHER,
        "chat_id": chat_ids[0],
        "owner_member_id": 1,
        "chat_type": "dm",
        "channel": "web",
        "title": "other workspace",
        "created_at": "2024-04-02T00:00:00Z",
    }
    events.append(event("chat.upsert", other))
    return events


@pytest.fixture(scope="module", params=STORE_KINDS)
def world(request, tmp_path_factory):
    url = store_url_for(request.param, tmp_path_factory.mktemp("chats"))
    store = open_store(url)
    events = generate_events()
    app = create_app(Settings(database_url=url), store=store, clock=lambda: NOW)
    ingest_key = create_key(store, org="acme", ingest=True)
    keys = {m: create_key(store, org="acme", workspace_id=WS, member_id=m) for m in HUMANS}
    with TestClient(app) as client:
        for i in range(0, len(events), 500):
            response = client.post("/api/v2/ingest", json={"batch": events[i : i + 500]}, headers=bearer(ingest_key))
            assert response.json()["errors"] == []
        yield client, keys, World(events, WS)
    store.close()


def expected(world_model: World, params: dict[str, Any], *, member_id: int = 1, can_read_all: bool = True):
    rows = [
        world_model.row(c)
        for c in world_model.existing()
        if world_model.matches(c, params, member_id=member_id, can_read_all=can_read_all)
    ]
    return sort_rows(rows, params.get("sortBy", "createdAt"), params.get("sortOrder", "desc") == "desc")


def listed(client, key, params: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get(BASE, params={**params, "pageSize": 500}, headers=bearer(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return body["items"]


SINGLE_FILTERS = [
    {},
    {"archived": "true"},
    {"archived": "false"},
    {"isTest": "true"},
    {"needsResponse": "true"},
    {"needsResponse": "false"},
    {"paused": "true"},
    {"isAnonymous": "true"},
    {"isAnonymous": "false"},
    {"mine": "true"},
    {"channel": "slack"},
    {"chatType": "dm"},
    {"memberId": "2"},
    {"assistantMemberId": "101"},
    {"search": "REFUND"},
    {"search": "berlin"},
    {"search": "needle"},
    {"search": "\u00fcmlaut stra\u00dfe"},
    {"search": '"this"'},
    {"createdAfter": "2024-05-01T00:00:00Z"},
    {"createdBefore": "2024-04-15T12:00:00+02:00"},
    {"createdAfter": "2024-04-10T00:00:00Z", "createdBefore": "2024-04-20T00:00:00Z"},
    {"sortBy": "title", "sortOrder": "asc"},
    {"sortBy": "title"},
    {"sortBy": "lastMessageAt", "sortOrder": "asc"},
    {"sortBy": "lastMessageAt"},
    {"sortBy": "updatedAt", "sortOrder": "asc"},
    {"sortBy": "id"},
    {"sortBy": "id", "sortOrder": "asc"},
    {"archived": "true", "isTest": "true", "channel": "web", "sortBy": "title"},
    {"search": "order", "memberId": "3", "needsResponse": "false", "sortOrder": "asc"},
]


@pytest.mark.parametrize(
    "params", SINGLE_FILTERS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default"
)
def test_list_matches_the_reference(world, params):
    client, keys, model = world
    # Member 3 (controller with chats:admin) sees every chat, and may ask for anonymous ones.
    want = expected(model, params, member_id=3)
    assert listed(client, keys[3], params) == want
    # A page past the last has no rows to carry the total: it is counted apart.
    beyond = client.get(BASE, params={**params, "page": 999, "pageSize": 10}, headers=bearer(keys[3])).json()
    assert (beyond["items"], beyond["total"]) == ([], len(want))


def test_the_reference_data_exercises_every_filter(world):
    _, _, model = world
    for params in SINGLE_FILTERS[1:22]:
        count = len(expected(model, params))
        assert 0 < count < len(expected(model, {"archived": "true"})) + len(expected(model, {})), params


@pytest.mark.parametrize("member_id", [2, 5])
def test_members_without_chats_read_see_only_their_own(world, member_id):
    client, keys, model = world
    for params in ({}, {"search": "refund"}, {"archived": "true"}):
        mine = expected(model, params, member_id=member_id, can_read_all=False)
        assert mine and all(row["ownerMemberId"] == member_id for row in mine)
        assert listed(client, keys[member_id], params) == mine


def test_pagination(world):
    client, keys, model = world
    everything = expected(model, {})
    pages = []
    for page in (1, 2, 3):
        body = client.get(BASE, params={"page": page, "pageSize": 40}, headers=bearer(keys[1])).json()
        assert (body["page"], body["pageSize"], body["total"]) == (page, 40, len(everything))
        pages += body["items"]
    assert pages == everything[:120]
    beyond = client.get(BASE, params={"page": 99, "pageSize": 40}, headers=bearer(keys[1])).json()
    assert beyond == {"items": [], "total": len(everything), "page": 99, "pageSize": 40}
    default = client.get(BASE, headers=bearer(keys[1])).json()
    assert default["pageSize"] == 50 and default["items"] == everything[:50]


FILTER_CASES = [
    {"field": "title", "op": "contains", "value": "refund"},
    {"field": "title", "op": "eq", "value": ""},
    {"field": "title", "op": "exists", "value": False},
    {"field": "title", "op": "gt", "value": "Q"},
    {"field": "title", "op": "neq", "value": "plain"},
    {"field": "chatType", "op": "in", "value": ["dm", "testing"]},
    {"field": "chatType", "op": "nin", "value": ["dm"]},
    {"field": "channel", "op": "contains", "value": "SL"},
    {"field": "id", "op": "lte", "value": 50_000},
    {"field": "ownerMemberId", "op": "in", "value": [1, 2]},
    {"field": "assistantMemberId", "op": "exists", "value": False},
    {"field": "assistantMemberId", "op": "neq", "value": 100},
    {"field": "muted", "op": "eq", "value": True},
    {"field": "needsResponse", "op": "neq", "value": True},
    {"field": "createdAt", "op": "gte", "value": "2024-05-10T00:00:00+02:00"},
    {"field": "updatedAt", "op": "lt", "value": "2024-04-20T00:00:00Z"},
    {"field": "lastMessageAt", "op": "exists", "value": True},
    {"field": "lastMessageAt", "op": "lt", "value": "2024-05-01T00:00:00Z"},
    {"field": "messageCount", "op": "gte", "value": 3},
    {"field": "messageCount", "op": "eq", "value": 0},
    {"field": "metadata.priority", "op": "eq", "value": "high"},
    {"field": "metadata.priority", "op": "exists", "value": True},
    {"field": "metadata.priority", "op": "neq", "value": "high"},
    {"field": "metadata.score", "op": "gt", "value": 3},
    {"field": "metadata.score", "op": "eq", "value": 2.5},
    {"field": "metadata.score", "op": "in", "value": [5, "5", 10]},
    {"field": "metadata.vip", "op": "eq", "value": False},
    {"field": "metadata.vip", "op": "nin", "value": [True]},
    {"field": "metadata.a/b", "op": "contains", "value": "LASH"},
    {"field": "metadata.nested", "op": "exists", "value": True},
    {
        "or": [
            {"field": "channel", "op": "eq", "value": "web"},
            {
                "and": [
                    {"field": "chatType", "op": "eq", "value": "dm"},
                    {"field": "messageCount", "op": "gt", "value": 1},
                ]
            },
        ]
    },
]


@pytest.mark.parametrize("rule", FILTER_CASES, ids=lambda r: orjson.dumps(r).decode()[:60])
def test_filters_json_matches_the_reference(world, rule):
    client, keys, model = world
    params = {"filters": orjson.dumps(rule).decode(), "archived": "true"}
    result = listed(client, keys[1], params)
    assert result == expected(model, params)


def _rules() -> st.SearchStrategy:
    text = st.sampled_from(["refund", "Order", "", "plain", "\u00fc", "zzz", "web", "dm"])
    stamps = st.sampled_from(["2024-04-10T00:00:00Z", "2024-05-01T12:30:00+02:00", "2024-06-01T00:00:00Z"])
    leaf = st.one_of(
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(["title", "channel", "metadata.priority"]),
                "op": st.sampled_from(["eq", "neq", "gt", "lte", "contains"]),
                "value": text.filter(bool),
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.just("chatType"),
                "op": st.sampled_from(["in", "nin"]),
                "value": st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(["id", "messageCount", "ownerMemberId", "assistantMemberId"]),
                "op": st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]),
                "value": st.sampled_from([0, 1, 2, 3, 100, 50_000]),
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(["archived", "paused", "muted", "isTest", "needsResponse"]),
                "op": st.sampled_from(["eq", "neq"]),
                "value": st.booleans(),
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(["createdAt", "updatedAt", "lastMessageAt"]),
                "op": st.sampled_from(["gt", "lte", "eq"]),
                "value": stamps,
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(
                    ["title", "lastMessageAt", "metadata.vip", "metadata.score", "assistantMemberId"]
                ),
                "op": st.just("exists"),
                "value": st.booleans(),
            }
        ),
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(["metadata.score", "metadata.vip"]),
                "op": st.sampled_from(["eq", "neq", "gt", "in"]),
                "value": st.sampled_from([2.5, 5, 10, True, False, "high"]),
            }
        )
        .filter(lambda r: not (isinstance(r["value"], bool) and r["op"] == "gt"))
        .map(lambda r: {**r, "value": [r["value"]]} if r["op"] == "in" else r),
    )
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.fixed_dictionaries({"and": st.lists(children, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"or": st.lists(children, min_size=1, max_size=3)}),
        ),
        max_leaves=8,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rule=_rules(),
    sort_by=st.sampled_from(["createdAt", "updatedAt", "lastMessageAt", "id", "title"]),
    descending=st.booleans(),
)
def test_generated_filter_trees_match_the_reference(world, rule, sort_by, descending):
    client, keys, model = world
    params = {
        "filters": orjson.dumps(rule).decode(),
        "isTest": "true",
        "sortBy": sort_by,
        "sortOrder": "desc" if descending else "asc",
    }
    assert listed(client, keys[1], params) == expected(model, params)


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        ("{", "filters: not valid JSON"),
        ('{"field": "nope", "op": "eq", "value": 1}', "filters.field: unknown field 'nope'"),
        ('{"field": "title", "op": "like", "value": "x"}', "filters.op: unknown op 'like'"),
        ('{"field": "archived", "op": "gt", "value": true}', "gt does not apply to the boolean field archived"),
        ('{"field": "id", "op": "eq", "value": "7"}', "filters.value: must be an integer"),
        ('{"field": "chatType", "op": "eq", "value": "group"}', "unknown chat type 'group'"),
        ('{"field": "createdAt", "op": "gt", "value": "2024-05-01T00:00:00"}', "needs a time and an offset"),
        ('{"field": "messageCount", "op": "contains", "value": "1"}', "contains applies to text fields"),
        ('{"field": "title", "op": "in", "value": []}', "in takes a non-empty list"),
        ('{"field": "title", "op": "exists", "value": "yes"}', "exists takes true or false"),
        ('{"and": []}', "filters.and: must be a non-empty list"),
        ('{"and": [{"or": [{"field": "id", "op": "eq"}]}]}', "filters.and[0].or[0]: a rule has exactly the keys"),
        ('{"and": [], "or": []}', "a group has exactly one key"),
        ('{"field": "metadata.", "op": "eq", "value": 1}', "metadata.<key> needs a key"),
        ('{"field": "metadata.x", "op": "eq", "value": {"a": 1}}', "metadata values are strings, numbers or booleans"),
        ("[1]", "filters: must be an object"),
        (
            '{"and": [{"and": [{"and": [{"and": [{"and": [{"and": [{"field": "id", "op": "eq", "value": 1}]}]}]}]}]}]}',
            "groups nest at most 5 deep",
        ),
    ],
)
def test_bad_filters_are_400_naming_the_bad_part(world, filters, reason):
    client, keys, _ = world
    response = client.get(BASE, params={"filters": filters}, headers=bearer(keys[1]))
    assert response.status_code == 400
    assert reason in response.json()["detail"], response.json()


def test_five_nested_groups_are_allowed(world):
    client, keys, model = world
    rule = {"field": "channel", "op": "eq", "value": "web"}
    for _ in range(5):
        rule = {"and": [rule]}
    params = {"filters": orjson.dumps(rule).decode()}
    assert listed(client, keys[1], params) == expected(model, params)


@pytest.mark.parametrize(
    "params",
    [
        {"sortBy": "name"},
        {"sortOrder": "up"},
        {"chatType": "group"},
        {"pageSize": "501"},
        {"page": "0"},
        {"createdAfter": "2024-05-01"},
        {"createdBefore": "yesterday"},
        {"archived": "perhaps"},
        {"memberId": "x"},
    ],
)
def test_bad_parameters_are_400(world, params):
    client, keys, _ = world
    response = client.get(BASE, params=params, headers=bearer(keys[1]))
    assert response.status_code == 400, params
    assert response.json()["detail"]


# -- export ----------------------------------------------------------------------

EXPORT_HEADER = [
    "id",
    "title",
    "chatType",
    "channel",
    "ownerMemberId",
    "ownerName",
    "assistantMemberId",
    "assistantName",
    "archived",
    "needsResponse",
    "paused",
    "muted",
    "isTest",
    "isAnonymous",
    "messageCount",
    "lastMessageAt",
    "createdAt",
    "updatedAt",
    "metadata",
]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@pytest.mark.parametrize(
    "params", [{}, {"archived": "true", "sortBy": "title", "sortOrder": "asc"}, {"search": "refund"}]
)
def test_export_matches_the_list_as_csv(world, params):
    client, keys, model = world
    response = client.get(f"{BASE}/export", params=params, headers=bearer(keys[1]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="chats-{WS}-2024-06-15.csv"'
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert rows[0] == EXPORT_HEADER
    want = [[_cell(row[column]) for column in EXPORT_HEADER] for row in expected(model, params)]
    assert rows[1:] == want


def _raw_cell(value: Any) -> str:
    """A cell as the export writes it: text quoted (quotes doubled), numbers and
    booleans bare, an absent value empty."""
    if value is None or isinstance(value, bool | int):
        return _cell(value)
    return '"' + _cell(value).replace('"', '""') + '"'


def test_export_bytes_quote_text_and_leave_numbers_and_booleans_bare(world):
    client, keys, model = world
    params = {"archived": "true", "sortBy": "title", "sortOrder": "asc"}
    response = client.get(f"{BASE}/export", params=params, headers=bearer(keys[1]))
    rows = expected(model, params)
    assert len(rows) > 3
    want = ",".join(EXPORT_HEADER) + "\n"
    want += "".join(",".join(_raw_cell(row[column]) for column in EXPORT_HEADER) + "\n" for row in rows)
    assert response.text == want


def export_ways(store) -> dict[str, dict[str, int]]:
    """The ways ``store`` can take to export (keyword arguments of ``export_chats``).

    The DuckDB store sorts an export of up to ``whole_up_to`` chats whole, and numbers a
    larger one and formats it a range at a time; the ClickHouse store has one way.
    """
    if isinstance(store, DuckDBStore):
        return {"whole": {}, "ranges": {"whole_up_to": 0}}
    return {"batches": {}}


@pytest.mark.parametrize("params", [{}, {"sortBy": "title", "sortOrder": "asc"}, {"sortBy": "lastMessageAt"}])
def test_export_in_many_small_batches_keeps_the_order(world, params):
    """The store hands an export out a batch at a time: order must survive the seams."""
    client, _, model = world
    store = client.app.state.store
    query = ChatQuery(
        sort_by=params.get("sortBy", "createdAt"),
        descending=params.get("sortOrder", "desc") == "desc",
        archived=False,
        is_test=False,
    )
    want = [row["id"] for row in expected(model, params)]
    assert len(want) > 7 * 5
    for way, options in export_ways(store).items():
        batches = list(store.export_chats(org="acme", workspace_id=WS, query=query, batch_rows=7, **options))
        assert max(batch.num_rows for batch in batches) <= 7, way
        assert [int(chat_id) for batch in batches for chat_id in batch.column(0).to_pylist()] == want, way


@pytest.mark.parametrize(
    ("params", "query"),
    [
        (
            {"archived": "true", "sortBy": "title", "sortOrder": "asc"},
            ChatQuery(archived=True, sort_by="title", descending=False),
        ),
        ({"sortBy": "lastMessageAt", "sortOrder": "asc"}, ChatQuery(sort_by="lastMessageAt", descending=False)),
        ({"isAnonymous": "false"}, ChatQuery(is_anonymous=False)),  # a filter on the members' columns
        ({"search": "refund", "sortBy": "updatedAt"}, ChatQuery(search="refund", sort_by="updatedAt")),
        (  # a search since a time: the store looks up older messages' chats first
            {"search": "refund", "createdAfter": "2024-04-10T00:00:00Z"},
            ChatQuery(search="refund", created_after=datetime(2024, 4, 10)),
        ),
        ({"assistantMemberId": "999999"}, ChatQuery(assistant_member_id=999_999)),  # nothing matches
    ],
)
def test_every_way_of_export_writes_the_reference_csv(world, params, query):
    """Each way the store can take (sorted whole, or numbered and in ranges) writes the
    bytes the reference gives, in batches of 5 whose seams fall mid-export."""
    client, _, model = world
    store = client.app.state.store
    rows = expected(model, params)
    want = ",".join(EXPORT_HEADER) + "\n"
    want += "".join(",".join(_raw_cell(row[column]) for column in EXPORT_HEADER) + "\n" for row in rows)
    for way, options in export_ways(store).items():
        batches = store.export_chats(org="acme", workspace_id=WS, query=query, batch_rows=5, **options)
        assert b"".join(csv_stream(batches)).decode() == want, way


def test_exports_interleaved_keep_to_themselves(world):
    """Two exports read at once (two clients downloading) each get their own chats, in
    order, whichever way each takes."""
    client, _, model = world
    store = client.app.state.store
    by_title = ChatQuery(sort_by="title", descending=False, archived=False, is_test=False)
    by_creation = ChatQuery(archived=False, is_test=False)
    ways = export_ways(store)
    for first_way, second_way in [(a, b) for a in ways for b in ways]:
        first = store.export_chats(org="acme", workspace_id=WS, query=by_title, batch_rows=7, **ways[first_way])
        head = next(first)
        second = [
            int(i)
            for batch in store.export_chats(
                org="acme", workspace_id=WS, query=by_creation, batch_rows=5, **ways[second_way]
            )
            for i in batch.column(0).to_pylist()
        ]
        rest = [int(i) for batch in first for i in batch.column(0).to_pylist()]
        assert [int(i) for i in head.column(0).to_pylist()] + rest == [
            row["id"] for row in expected(model, {"sortBy": "title", "sortOrder": "asc"})
        ], (first_way, second_way)
        assert second == [row["id"] for row in expected(model, {})], (first_way, second_way)


def test_export_guards_formulas_and_quotes_what_needs_it(world):
    client, keys, _ = world
    rows = []
    for archived in ("true", "false"):
        for is_test in ("true", "false"):
            params = {"archived": archived, "isTest": is_test}
            response = client.get(f"{BASE}/export", params=params, headers=bearer(keys[1]))
            rows += csv.DictReader(io.StringIO(response.text, newline=""))
    titles = {row["title"] for row in rows}
    for guarded in ("'=HYPERLINK(evil)", "'+1 555", "'-minus", "'@mention", "'\ttabbed", "'\rreturn"):
        assert guarded in titles
    assert 'Quote "this", please' in titles and "multi\nline" in titles
    metadata = [orjson.loads(row["metadata"]) for row in rows if row["metadata"]]
    assert {"priority": "low", "score": 2.5, "vip": True} in metadata
    stamps = [row["createdAt"] for row in rows]
    assert all(s.endswith("Z") and datetime.fromisoformat(s) for s in stamps)
    assert any("." in s for s in stamps) and any("." not in s for s in stamps)


def test_an_abandoned_export_lets_go_of_the_store(world):
    """A client that goes away mid-export: closing the CSV stream, with batches still
    being written, finishes the store's batches (and so closes their cursor) at once."""
    client, _, model = world
    store = client.app.state.store
    batches = store.export_chats(org="acme", workspace_id=WS, query=ChatQuery(), batch_rows=3)
    alive = weakref.ref(batches)
    stream = csv_stream(batches, writers=4)
    del batches
    header, first = next(stream), next(stream)
    assert header.decode() == ",".join(EXPORT_HEADER) + "\n"
    # The first batch's chats, the first in order (a store may hand out fewer than asked).
    ids = [int(row[0]) for row in csv.reader(io.StringIO(first.decode(), newline=""))]
    assert 1 <= len(ids) <= 3 and ids == [row["id"] for row in expected(model, {})[: len(ids)]]
    stream.close()
    assert alive() is None


def test_export_of_no_chats_is_just_the_header(world):
    client, keys, _ = world
    response = client.get(f"{BASE}/export", params={"search": "no chat says this"}, headers=bearer(keys[1]))
    assert response.text == ",".join(EXPORT_HEADER) + "\n"


@pytest.mark.parametrize("zone", [None, "UTC"])
def test_export_times_are_written_alike_from_either_engines_timestamps(zone):
    """DuckDB hands the export naive UTC times, ClickHouse (chdb and its HTTP server
    alike, through ClickHouse's Arrow format) ``timestamp[us, tz=UTC]``: the same text."""
    moments = [datetime(2024, 5, 1, 12, 30), datetime(2024, 5, 1, 12, 30, 0, 500), None, datetime(1900, 1, 1, 0, 0, 7)]
    times = pa.array([m.replace(tzinfo=UTC) if m and zone else m for m in moments], pa.timestamp("us", tz=zone))
    columns = [pa.array([i] * len(moments)) for i in range(len(CHAT_LIST_COLUMNS))]
    for position in EXPORT_TIME_COLUMNS:
        columns[position] = times
    batch = times_as_text(pa.RecordBatch.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))]))
    want = ["2024-05-01T12:30:00Z", "2024-05-01T12:30:00.000500Z", None, "1900-01-01T00:00:07Z"]
    for position in range(len(CHAT_LIST_COLUMNS)):
        got = batch.column(position).to_pylist()
        assert got == (want if position in EXPORT_TIME_COLUMNS else [position] * len(moments))


# -- needs-response, daily creation, tool names ---------------------------------------


def test_needs_response_queue(world):
    client, keys, model = world
    for member_id, can_read_all in ((1, True), (2, False), (6, False)):
        want = sorted(
            c.id
            for c in model.existing()
            if c.fields["needs_response"]
            and not c.fields["archived"]
            and not c.fields["muted"]
            and (can_read_all or c.fields["owner_member_id"] == member_id)
        )
        response = client.get(f"{BASE}/needs-response", headers=bearer(keys[member_id]))
        assert response.json() == want
        assert want or member_id == 6


def test_tool_call_names(world):
    client, keys, model = world
    everything = sorted({n for c in model.existing() for n in c.tool_names})
    assert everything == sorted(TOOLS)  # code-point order: capitals before lower case, ä last
    assert client.get(f"{BASE}/tool-call-names", headers=bearer(keys[1])).json() == [
        "Create_Ticket",
        "alpha",
        "search_docs",
        "zeta",
        "ärger",
    ]
    own = sorted({n for c in model.existing() if c.fields["owner_member_id"] == 2 for n in c.tool_names})
    assert client.get(f"{BASE}/tool-call-names", headers=bearer(keys[2])).json() == own
