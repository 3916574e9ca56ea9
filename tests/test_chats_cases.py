"""Hand-worked chat cases: latest-wins state, daily creation boundaries, rights."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import orjson
import pytest

from tests.conftest import NOW, bearer
from tests.factories import WS, WS_OTHER, event, iso, member

BASE = f"/api/v2/w/{WS}/chats"
T = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def chat(chat_id: int, *, owner: int = 1, ts: datetime = T, created: datetime = T, **fields):
    body = {
        "workspace_id": WS,
        "chat_id": chat_id,
        "owner_member_id": owner,
        "chat_type": "dm",
        "channel": "web",
        "created_at": iso(created),
        **fields,
    }
    return event("chat.upsert", body, ts=ts)


def update(chat_id: int, *, ts: datetime, **fields):
    return event("chat.update", {"workspace_id": WS, "chat_id": chat_id, **fields}, ts=ts)


@pytest.fixture
def admin(ingest, member_key):
    ingest(
        member(1, "admin"),
        member(2, "basic"),
        member(3, "curator"),
        member(4, "basic", scopes=["chats:read"]),
        member(5, "controller", scopes=["chats:admin"]),
        member(9, "basic", anonymous=True),
    )
    return bearer(member_key(1))


def only(client, headers, chat_id):
    """The one chat, whether archived or not."""
    rule = orjson.dumps({"field": "id", "op": "eq", "value": chat_id}).decode()
    items = [
        item
        for archived in ("true", "false")
        for item in client.get(BASE, params={"archived": archived, "filters": rule}, headers=headers).json()["items"]
    ]
    assert len(items) == 1
    return items[0]


def test_latest_wins_whatever_the_arrival_order(client, ingest, admin):
    # An update that happened after the upsert but arrives first.
    ingest(update(1, ts=T + timedelta(hours=2), title="Newer", archived=True))
    ingest(chat(1, title="Original", needs_response=True, metadata={"k": "v"}))
    # An update that happened before the upsert, arriving last: the upsert's values stand.
    ingest(update(1, ts=T - timedelta(hours=1), needs_response=False, metadata={"k": "old"}))
    # A later update that clears the title explicitly.
    ingest(update(1, ts=T + timedelta(hours=3), title=None))
    state = only(client, admin, 1)
    assert state["title"] is None
    assert state["archived"] is True
    assert state["needsResponse"] is True
    assert state["metadata"] == {"k": "v"}
    assert state["createdAt"] == "2024-06-01T12:00:00Z"
    assert state["updatedAt"] == "2024-06-01T15:00:00Z"  # the newest event applied


def test_a_newer_upsert_replaces_every_field(client, ingest, admin):
    ingest(
        chat(2, title="First", archived=True, assistant_member_id=7),
        chat(2, ts=T + timedelta(minutes=1), title="Second", channel="slack"),
    )
    state = only(client, admin, 2)
    assert (state["title"], state["archived"], state["assistantMemberId"], state["channel"]) == (
        "Second",
        False,
        None,
        "slack",
    )


def test_events_at_one_instant_are_ordered_by_their_ids(client, ingest, admin):
    at = T + timedelta(hours=1)
    # Two upserts at one instant, the one with the larger id arriving first: its fields
    # stand, a null among them.
    ingest(chat(6, ts=at, title="Larger", channel="slack") | {"id": "up-b"})
    ingest(chat(6, ts=at, title="Smaller", channel="web", assistant_member_id=7, muted=True) | {"id": "up-a"})
    # Updates at that instant: of those setting a field, the largest id's value wins.
    ingest(update(6, ts=at, archived=True, muted=False) | {"id": "up-c"})
    ingest(update(6, ts=at, title=None, archived=False) | {"id": "up-0"})
    state = only(client, admin, 6)
    assert (state["title"], state["channel"], state["assistantMemberId"]) == ("Larger", "slack", None)
    assert (state["archived"], state["muted"]) == (True, False)


def named(member_id: int, name: str, *, ts: datetime, id: str, anonymous: bool = False):
    renamed = member(member_id, "basic", ts=ts, id=id, anonymous=anonymous)
    return renamed | {"body": {**renamed["body"], "name": name}}


def test_member_names_latest_wins_whatever_the_arrival_order(client, ingest, admin):
    ingest(named(7, "Seven newest", ts=T + timedelta(hours=2), id="m7-b"))
    ingest(named(7, "Seven older", ts=T + timedelta(hours=1), id="m7-c"))
    ingest(named(7, "Seven same time, smaller id", ts=T + timedelta(hours=2), id="m7-a"))
    # Two events of one member in one batch, the newer first.
    ingest(
        named(8, "Eight newer", ts=T + timedelta(hours=3), id="m8-a", anonymous=True),
        named(8, "Eight older", ts=T + timedelta(hours=1), id="m8-b"),
    )
    ingest(chat(30, owner=7, assistant_member_id=8), chat(31, owner=8, assistant_member_id=7))
    first, second = only(client, admin, 30), only(client, admin, 31)
    assert (first["ownerName"], first["assistantName"], first["isAnonymous"]) == ("Seven newest", "Eight newer", False)
    assert (second["ownerName"], second["assistantName"], second["isAnonymous"]) == (
        "Eight newer",
        "Seven newest",
        True,
    )
    exported = csv.DictReader(io.StringIO(client.get(f"{BASE}/export", headers=admin).text, newline=""))
    names = {int(row["id"]): (row["ownerName"], row["assistantName"]) for row in exported}
    assert names == {30: ("Seven newest", "Eight newer"), 31: ("Eight newer", "Seven newest")}


def test_updates_alone_make_no_chat(client, ingest, admin):
    ingest(update(3, ts=T, title="ghost"))
    assert client.get(BASE, params={"archived": "true"}, headers=admin).json()["total"] == 0


def test_messages_count_once_and_date_the_chat(client, ingest, admin):
    message = {
        "workspace_id": WS,
        "chat_id": 4,
        "message_id": "m1",
        "role": "user",
        "created_at": "2024-06-01T13:00:00.5Z",
    }
    later = {**message, "message_id": "m2", "created_at": "2024-06-01T14:00:00Z"}
    ingest(event("message.create", message), event("message.create", message), event("message.create", later), chat(4))
    state = only(client, admin, 4)
    assert (state["messageCount"], state["lastMessageAt"]) == (2, "2024-06-01T14:00:00Z")


def said(chat_id: int, message_id: str, at: datetime, content: str, *, workspace: str = WS):
    body = {"workspace_id": workspace, "chat_id": chat_id, "message_id": message_id, "role": "user"}
    return event("message.create", {**body, "content": content, "created_at": iso(at)}, ts=at)


def test_a_batch_of_chat_events_and_messages_brings_each_chat_up_to_date(client, store, ingest, admin):
    hour = timedelta(hours=1)
    ingest(
        chat(40, title="Forty"),
        said(40, "a1", T + hour, "first"),
        chat(41, title="Forty-one"),
        chat(45),
        said(45, "e1", T + 8 * hour, "newest"),
    )
    # One batch: events and messages of stored chats, of new ones, of either alone.
    ingest(
        update(40, ts=T + 2 * hour, title="Forty renamed"),
        said(40, "a2", T + 3 * hour, "later"),
        said(40, "a0", T - 24 * hour, "a refund, from the day before the chat"),
        said(41, "b1", T + 4 * hour, "hello"),
        chat(42, ts=T + hour, created=T + hour),
        said(42, "c1", T + 5 * hour, "hi"),
        chat(43, ts=T + hour, title="Forty-three"),
        said(44, "d1", T + 6 * hour, "before its chat"),
        update(45, ts=T + hour, archived=False, title="Forty-five"),
        said(45, "e0", T + 2 * hour, "older than the stored one"),
    )

    def state(chat_id):
        found = only(client, admin, chat_id)
        return found["title"], found["messageCount"], found["lastMessageAt"], found["updatedAt"]

    assert state(40) == ("Forty renamed", 3, "2024-06-01T15:00:00Z", "2024-06-01T14:00:00Z")
    assert state(41) == ("Forty-one", 1, "2024-06-01T16:00:00Z", "2024-06-01T12:00:00Z")
    assert state(42) == (None, 1, "2024-06-01T17:00:00Z", "2024-06-01T13:00:00Z")
    assert state(43) == ("Forty-three", 0, None, "2024-06-01T13:00:00Z")
    assert state(45) == ("Forty-five", 2, "2024-06-01T20:00:00Z", "2024-06-01T13:00:00Z")
    assert client.get(BASE, headers=admin).json()["total"] == 5  # 44 has no chat yet
    ingest(chat(44, ts=T + 7 * hour, created=T + 7 * hour))
    assert state(44) == (None, 1, "2024-06-01T18:00:00Z", "2024-06-01T19:00:00Z")
    # Chat 40's oldest message is now older than the chat: a search since its creation reads it.
    store.reorder()
    searched = client.get(BASE, params={"search": "refund", "createdAfter": iso(T)}, headers=admin).json()
    assert [item["id"] for item in searched["items"]] == [40]


def test_search_since_a_date_finds_messages_older_than_their_chat(client, store, ingest, admin):
    june = datetime(2024, 6, 1, tzinfo=UTC)
    ingest(
        # Created on June 10 with a message of June 1 (history imported with the chat).
        chat(1, created=june + timedelta(days=9)),
        said(1, "m1", june, "Imported: REFUND please"),
        said(1, "m2", june + timedelta(days=10), "thanks"),
        chat(2, created=june + timedelta(days=9)),
        said(2, "m3", june + timedelta(days=11), "a refund?"),
        # Says it after June 5, but was created before.
        chat(3, created=june),
        said(3, "m4", june + timedelta(days=12), "refund"),
        # An old message too, saying something else.
        chat(4, created=june + timedelta(days=9)),
        said(4, "m5", june + timedelta(days=1), "hello"),
        # Created later, none of its messages older than itself.
        chat(5, created=june + timedelta(days=19)),
        said(5, "m6", june + timedelta(days=20), "Refund now"),
    )
    store.reorder()  # message text in time order, as after a bulk load

    def found(**params):
        body = client.get(BASE, params={"search": "refund", **params}, headers=admin).json()
        return sorted(item["id"] for item in body["items"])

    # Chats 1 and 4 have messages older than themselves: 1 is found by its June 1 message.
    assert found(createdAfter="2024-06-05T00:00:00Z") == [1, 2, 5]
    assert found(createdAfter="2024-06-10T00:00:00Z") == [1, 2, 5]
    # No chat created since has an older message (the DuckDB store then reads recent ones only).
    assert found(createdAfter="2024-06-10T00:00:01Z") == [5]
    assert found(createdAfter="2024-06-20T00:00:00Z") == [5]
    assert found(createdAfter="2024-06-20T00:00:01Z") == []
    assert found() == [1, 2, 3, 5]


def test_created_bounds_read_each_chats_newest_upsert_and_all_its_events(client, ingest, admin):
    """A store may read only the chats created within a request's bounds (ClickHouse folds
    those chats alone): a creation that a newer upsert moved into or out of the bounds, and
    a chat's events and messages from before them, count as when every chat is read."""
    june = datetime(2024, 6, 1, tzinfo=UTC)
    day = timedelta(days=1)
    ingest(
        # Created June 1, then June 15 by a newer upsert; its one message is of June 3.
        chat(1, ts=june, created=june),
        said(1, "m1", june + 2 * day, "hello from one"),
        chat(1, ts=june + 11 * day, created=june + 14 * day),
        # Created June 14, then June 2.
        chat(2, ts=june + 13 * day, created=june + 13 * day),
        chat(2, ts=june + 15 * day, created=june + day),
        said(2, "m2", june + 16 * day, "hello from two"),
        # Created June 20 by an event of June 5, renamed June 6.
        chat(3, ts=june + 4 * day, created=june + 19 * day),
        update(3, ts=june + 5 * day, title="Three"),
        # Created June 3, then June 25.
        chat(4, ts=june + 2 * day, created=june + 2 * day),
        chat(4, ts=june + 3 * day, created=june + 24 * day),
    )

    def listed(**params):
        body = client.get(BASE, params={"sortBy": "id", "sortOrder": "asc", **params}, headers=admin).json()
        assert body["total"] == len(body["items"])
        return [(c["id"], c["title"], c["createdAt"], c["messageCount"], c["lastMessageAt"]) for c in body["items"]]

    one = (1, None, "2024-06-15T00:00:00Z", 1, "2024-06-03T00:00:00Z")
    two = (2, None, "2024-06-02T00:00:00Z", 1, "2024-06-17T00:00:00Z")
    three = (3, "Three", "2024-06-20T00:00:00Z", 0, None)
    four = (4, None, "2024-06-25T00:00:00Z", 0, None)
    assert listed(createdAfter="2024-06-10T00:00:00Z") == [one, three, four]
    assert listed(createdBefore="2024-06-10T00:00:00Z") == [two]
    assert listed(createdAfter="2024-06-10T00:00:00Z", createdBefore="2024-06-20T00:00:00Z") == [one, three]
    assert listed(search="hello", createdAfter="2024-06-10T00:00:00Z") == [one]
    assert listed(search="hello", createdBefore="2024-06-10T00:00:00Z") == [two]
    exported = client.get(f"{BASE}/export", params={"createdAfter": "2024-06-14T00:00:00Z"}, headers=admin)
    assert sorted(int(row["id"]) for row in csv.DictReader(io.StringIO(exported.text, newline=""))) == [1, 3, 4]
    # The 30 days ending June 15 (NOW): chat 2 on June 2 and chat 1 on June 15 alone.
    counted = {d["date"]: d["count"] for d in _daily(client, admin) if d["count"]}
    assert counted == {"2024-06-02": 1, "2024-06-15": 1}


def test_reorder_rewrites_message_text_by_workspace_and_time(tmp_path):
    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    june = datetime(2024, 6, 1, tzinfo=UTC)

    def messages(workspace, hours):
        return [said(7, f"{workspace}-{h}", june + timedelta(hours=h), "hi", workspace=workspace) for h in hours]

    store = DuckDBStore(tmp_path / "parley.duckdb")

    def stored(org):
        sql = "SELECT workspace_id, created_at FROM message_text WHERE org = ? ORDER BY rowid"
        rows = store._con.execute(sql, [org]).fetchall()
        return [(workspace[-1], int((at.replace(tzinfo=UTC) - june) / timedelta(hours=1))) for workspace, at in rows]

    try:
        for org, workspace, hours in (("acme", WS, [3, 1]), ("acme", WS_OTHER, [2, 0]), ("acme", WS, [2, 0])):
            assert ingest_batch(store, org=org, batch=messages(workspace, hours)).errors == []
        assert ingest_batch(store, org="globex", batch=messages(WS, [5, 4])).errors == []
        assert stored("acme") == [("1", 3), ("1", 1), ("2", 2), ("2", 0), ("1", 2), ("1", 0)]  # as they came
        store.reorder()
        assert stored("acme") == [("1", 0), ("1", 1), ("1", 2), ("1", 3), ("2", 0), ("2", 2)]
        assert stored("globex") == [("1", 4), ("1", 5)]
    finally:
        store.close()


def test_a_search_finds_text_in_one_message_never_across_two(client, store, ingest, admin):
    hour = timedelta(hours=1)
    ingest(
        chat(60, title="Sixty"),
        said(60, "s1", T + hour, "Please ref"),
        said(60, "s2", T + 2 * hour, "und my order"),
        chat(61),
        said(61, "t1", T + hour, "a REFUND, please"),
        said(61, "t2", T + 25 * hour, "thanks"),
    )

    expected = {
        "refund": [61],
        "ref": [60, 61],
        "und my": [60],
        "please ref": [60],
        "refund, please": [61],
        "please thanks": [],
        "thanks": [61],
        # The two messages joined by nothing, a space, a line break or a NUL would say these.
        "refund my": [],
        "ref\nund": [],
        "please\nthanks": [],
        "ref\x00und": [],
    }

    def found():
        answers = {}
        for search in expected:
            response = client.get(BASE, params={"search": search, "sortBy": "id", "sortOrder": "asc"}, headers=admin)
            assert response.status_code == 200, response.text
            answers[search] = [c["id"] for c in response.json()["items"]]
        return answers

    assert found() == expected  # as the messages came
    store.reorder()
    assert found() == expected  # once the store has put its rows in order


def test_reorder_rewrites_chat_state_by_workspace_and_creation(tmp_path):
    from parley.ingest.service import ingest_batch
    from parley.metrics.chats.query import ChatQuery
    from parley.store.duckdb import DuckDBStore

    june = datetime(2024, 6, 1, tzinfo=UTC)
    day = timedelta(days=1)
    store = DuckDBStore(tmp_path / "parley.duckdb")

    def stored(org):
        sql = "SELECT workspace_id, chat_id FROM chat_state WHERE org = ? ORDER BY rowid"
        return [(workspace[-1], chat_id) for workspace, chat_id in store._con.execute(sql, [org]).fetchall()]

    def listed(org, workspace):
        rows, total = store.list_chats(
            org=org, workspace_id=workspace, query=ChatQuery(sort_by="id", descending=False), limit=50, offset=0
        )
        return [(r["id"], r["title"], r["created_at"].day, r["message_count"]) for r in rows], total

    def batch(org, *events):
        assert ingest_batch(store, org=org, batch=list(events)).errors == []

    try:
        # Ids in one order, creation times in another; a message writes chat 3's row again at the end.
        batch("acme", chat(1, created=june + 5 * day, title="One"), chat(2, created=june + 2 * day))
        batch("acme", chat(7, created=june + 4 * day, workspace_id=WS_OTHER), chat(3, created=june + 3 * day))
        batch("acme", chat(4, created=june), said(3, "m1", june + 6 * day, "hello"))
        batch("globex", chat(9, created=june + 9 * day), chat(8, created=june + 8 * day))
        before = listed("acme", WS), listed("acme", WS_OTHER), listed("globex", WS)
        in_order = [("1", 1), ("1", 3), ("1", 2), ("1", 4), ("2", 7)]  # newest first
        came = stored("acme")  # each batch's chats in the merge's order, chats 3 and 4 last
        assert came != in_order and sorted(came) == sorted(in_order) and set(came[-2:]) == {("1", 3), ("1", 4)}
        store.reorder()
        assert stored("acme") == in_order
        assert stored("globex") == [("1", 9), ("1", 8)]
        assert (listed("acme", WS), listed("acme", WS_OTHER), listed("globex", WS)) == before
        assert before[0] == ([(1, "One", 6, 0), (2, None, 3, 0), (3, None, 4, 1), (4, None, 1, 0)], 4)
        # The rows rewritten are the chats' state still: a later event updates each in place.
        batch("acme", update(1, ts=T + timedelta(days=1), title="Renamed"), said(4, "m2", june + 7 * day, "hi"))
        assert listed("acme", WS) == ([(1, "Renamed", 6, 0), (2, None, 3, 0), (3, None, 4, 1), (4, None, 1, 1)], 4)
        assert store._con.execute("SELECT count(*) FROM chat_state").fetchall() == [(7,)]
    finally:
        store.close()


def _daily(client, headers, **params):
    response = client.get(f"{BASE}/stats/daily-creation", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["dailyStats"]


def test_daily_creation_covers_30_days_ending_today(client, ingest, admin):
    today = NOW.replace(hour=0, minute=0, second=0)  # NOW is 2024-06-15T12:00Z
    ingest(
        chat(10, created=today + timedelta(hours=1)),
        chat(11, created=today - timedelta(days=29), chat_type="assignment"),
        chat(12, created=today - timedelta(days=29, microseconds=1)),  # 30 days ago: outside
        chat(13, created=today + timedelta(hours=2), chat_type="testing"),
        chat(14, created=today, archived=True),
        chat(15, created=today, is_test=True),
    )
    stats = _daily(client, admin)
    assert len(stats) == 30
    assert stats[0]["date"] == "2024-05-17" and stats[-1]["date"] == "2024-06-15"
    assert stats[-1] == {"date": "2024-06-15", "count": 2, "assignment": 0, "manager": 0, "dm": 1, "testing": 1}
    assert stats[0] == {"date": "2024-05-17", "count": 1, "assignment": 1, "manager": 0, "dm": 0, "testing": 0}
    assert sum(day["count"] for day in stats) == 3
    archived = _daily(client, admin, archived="true")
    assert sum(day["count"] for day in archived) == 1 and archived[-1]["dm"] == 1
    tests = _daily(client, admin, isTest="true")
    assert sum(day["count"] for day in tests) == 1


@pytest.mark.parametrize(
    ("created", "tz", "local_day"),
    [
        # 03:59:59Z is 23:59:59 the day before in New York (UTC-4), 09:29:59 in Kolkata (UTC+5:30).
        (datetime(2024, 6, 10, 3, 59, 59, tzinfo=UTC), "UTC", "2024-06-10"),
        (datetime(2024, 6, 10, 3, 59, 59, tzinfo=UTC), "America/New_York", "2024-06-09"),
        (datetime(2024, 6, 10, 3, 59, 59, tzinfo=UTC), "Asia/Kolkata", "2024-06-10"),
        # 18:30:00Z is 00:00 the next day in Kolkata; 18:29:59Z is still the 10th there.
        (datetime(2024, 6, 10, 18, 30, tzinfo=UTC), "Asia/Kolkata", "2024-06-11"),
        (datetime(2024, 6, 10, 18, 29, 59, tzinfo=UTC), "Asia/Kolkata", "2024-06-10"),
    ],
)
def test_daily_creation_in_a_time_zone(client, ingest, admin, created, tz, local_day):
    ingest(chat(20, created=created))
    stats = _daily(client, admin, tz=tz)
    counted = [day["date"] for day in stats if day["count"]]
    assert counted == [local_day]


def test_daily_creation_just_after_local_midnight(client, ingest, admin):
    # 04:00:00Z is 00:00:00 in New York: the first instant of June 10 there.
    ingest(chat(21, created=datetime(2024, 6, 10, 4, 0, tzinfo=UTC)))
    assert [d["date"] for d in _daily(client, admin, tz="America/New_York") if d["count"]] == ["2024-06-10"]


def test_daily_creation_rejects_an_unknown_zone(client, admin):
    response = client.get(f"{BASE}/stats/daily-creation", params={"tz": "Mars/Base"}, headers=admin)
    assert response.status_code == 400
    assert "unknown time zone" in response.json()["detail"]


ROUTES = ["", "/export", "/needs-response", "/stats/daily-creation", "/tool-call-names"]


@pytest.mark.parametrize("route", ROUTES)
def test_rights_for_every_chat_route(client, ingest, admin, member_key, ingest_key, route):
    ingest(
        chat(30, owner=1, needs_response=True),
        chat(31, owner=2, needs_response=True),
        chat(32, owner=9, needs_response=True),
        event(
            "message.create",
            {
                "workspace_id": WS,
                "chat_id": 31,
                "message_id": "x",
                "role": "assistant",
                "tool_calls": [{"name": "basic_tool"}],
                "created_at": "2024-06-01T12:00:00Z",
            },
        ),
        event(
            "message.create",
            {
                "workspace_id": WS,
                "chat_id": 30,
                "message_id": "y",
                "role": "assistant",
                "tool_calls": [{"name": "admin_tool"}],
                "created_at": "2024-06-01T12:00:00Z",
            },
        ),
    )
    url = BASE + route
    assert client.get(url).status_code == 401
    assert client.get(url, headers=bearer("prl_x_y")).status_code == 401
    assert client.get(url, headers=bearer(ingest_key)).status_code == 403
    # A member of another workspace: the path's workspace is not theirs, so it does not exist.
    assert client.get(f"/api/v2/w/{WS_OTHER}/chats{route}", headers=admin).status_code == 404
    assert client.get(url, headers=bearer(member_key(77))).status_code == 403  # unknown member
    basic = client.get(url, headers=bearer(member_key(2)))
    if route == "/export":
        assert basic.status_code == 403
        assert basic.json() == {"detail": "this key lacks the chats:read scope"}
    else:
        assert basic.status_code == 200
    for reader in (1, 3, 4):
        assert client.get(url, headers=bearer(member_key(reader))).status_code == 200
    if route == "/needs-response":
        assert basic.json() == [31]
        assert client.get(url, headers=admin).json() == [30, 31, 32]
    if route == "/tool-call-names":
        assert basic.json() == ["basic_tool"]
        assert client.get(url, headers=admin).json() == ["admin_tool", "basic_tool"]
    if route == "":
        assert [c["id"] for c in basic.json()["items"]] == [31]


def test_another_org_never_sees_these_chats(client, store, ingest, admin, member_key):
    from parley.auth.keys import create_key

    ingest(chat(50, title="acme only"))
    globex = create_key(store, org="globex", ingest=True)
    # Globex has a workspace with the same id and an admin with the same member id.
    response = client.post("/api/v2/ingest", json={"batch": [member(1, "admin")]}, headers=bearer(globex))
    assert response.json()["errors"] == []
    key = bearer(member_key(1, org="globex"))
    assert client.get(BASE, headers=key).json()["total"] == 0
    assert client.get(f"{BASE}/needs-response", headers=key).json() == []
    assert client.get(f"{BASE}/export", headers=key).text.count("\n") == 1
    assert client.get(BASE, headers=admin).json()["total"] == 1


@pytest.mark.parametrize("route", ["", "/export"])
def test_anonymous_chats_need_chats_admin(client, ingest, admin, member_key, route):
    ingest(chat(40, owner=9), chat(41, owner=1))
    url = BASE + route
    for member_id in (2, 3, 4):  # basic, curator, basic with chats:read
        response = client.get(url, params={"isAnonymous": "true"}, headers=bearer(member_key(member_id)))
        assert response.status_code == 403
        assert response.json() == {"detail": "filtering to anonymous chats needs the chats:admin scope"}
    for member_id in (1, 5):  # admin; controller granted chats:admin
        response = client.get(url, params={"isAnonymous": "true"}, headers=bearer(member_key(member_id)))
        assert response.status_code == 200
    items = client.get(BASE, params={"isAnonymous": "true"}, headers=admin).json()["items"]
    assert [c["id"] for c in items] == [40]
    not_anonymous = client.get(BASE, params={"isAnonymous": "false"}, headers=bearer(member_key(3))).json()["items"]
    assert [c["id"] for c in not_anonymous] == [41]


def test_tool_names_gather_across_batches_and_arrival_orders(client, ingest, admin):
    def message(chat_id: int, message_id: str, *tools: str):
        body = {
            "workspace_id": WS,
            "chat_id": chat_id,
            "message_id": message_id,
            "role": "assistant",
            "created_at": iso(T),
        }
        if tools:
            body["tool_calls"] = [{"name": name} for name in tools]
        return event("message.create", body, ts=T)

    ingest(message(1, "m1", "lookup", "refund"), message(2, "m2", "never_upserted"))  # before chat 1 exists
    assert client.get(f"{BASE}/tool-call-names", headers=admin).json() == []
    ingest(chat(1), message(1, "m3", "refund", "escalate"), message(1, "m4"))
    ingest(message(1, "m1", "resent_under_a_new_event_id"))  # the same message again: not counted
    assert client.get(f"{BASE}/tool-call-names", headers=admin).json() == ["escalate", "lookup", "refund"]


def made_as_older(path, events, *changes: str) -> None:
    """A DuckDB store holding ``events``, closed, changed by ``changes`` into what an older
    Parley left."""
    import duckdb

    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    store = DuckDBStore(path)
    assert ingest_batch(store, org="acme", batch=events).errors == []
    store.close()
    with duckdb.connect(str(path)) as con:
        for change in changes:
            con.execute(change)


def reopened_as_older(path, events, *changes: str):
    """The store of ``made_as_older``, opened again."""
    from parley.store.duckdb import DuckDBStore

    made_as_older(path, events, *changes)
    return DuckDBStore(path)


def test_a_duckdb_store_made_before_chat_tools_and_message_text_fills_them_when_opened(tmp_path):
    import duckdb

    from parley.metrics.chats.query import ChatQuery

    path = tmp_path / "parley.duckdb"
    calls = {"workspace_id": WS, "chat_id": 1, "role": "tool", "created_at": iso(T)}
    events = [
        chat(1),
        event("message.create", {**calls, "message_id": "m1", "tool_calls": [{"name": "b"}, {"name": "a"}]}),
        event("message.create", {**calls, "message_id": "m2", "tool_calls": [{"name": "b"}]}),
        event("message.create", {**calls, "message_id": "m3", "content": "Please REFUND me"}),
    ]
    store = reopened_as_older(  # a Parley without them, which kept tool names in a list
        path,
        events,
        "DROP TABLE chat_tools",
        "DROP TABLE message_text",
        "ALTER TABLE chat_state ADD COLUMN tool_names VARCHAR[]",
    )
    try:
        assert store.tool_call_names(org="acme", workspace_id=WS, owner_member_id=None) == ["a", "b"]
        found, total = store.list_chats(
            org="acme", workspace_id=WS, query=ChatQuery(search="refund"), limit=10, offset=0
        )
        assert ([row["id"] for row in found], total) == ([1], 1)
    finally:
        store.close()
    with duckdb.connect(str(path)) as con:  # the list column is dropped once chat_tools holds the names
        columns = con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'chat_state'").fetchall()
    assert "tool_names" not in {name for (name,) in columns}


def test_a_duckdb_store_made_before_member_names_fills_it_when_opened(tmp_path):

    from parley.metrics.chats.query import ChatQuery

    path = tmp_path / "parley.duckdb"
    events = [
        named(7, "Seven newest", ts=T + timedelta(hours=2), id="m7-b"),
        named(7, "Seven older", ts=T + timedelta(hours=1), id="m7-a"),
        chat(1, owner=7),
    ]
    store = reopened_as_older(  # a Parley without the table
        path, events, "DROP TABLE member_names", "UPDATE parley_meta SET value = '4' WHERE key = 'schema_version'"
    )
    try:
        found, _ = store.list_chats(org="acme", workspace_id=WS, query=ChatQuery(), limit=10, offset=0)
        assert [(row["id"], row["owner_name"]) for row in found] == [(1, "Seven newest")]
    finally:
        store.close()


def test_a_duckdb_store_made_before_message_times_fills_them_when_opened(tmp_path):
    import duckdb

    from parley.ingest.service import ingest_batch
    from parley.metrics.chats.query import ChatQuery

    path = tmp_path / "parley.duckdb"
    june = datetime(2024, 6, 1, tzinfo=UTC)
    events = [
        chat(1, created=june + timedelta(days=9)),
        said(1, "m1", june, "Imported: refund please"),
        said(1, "m2", june + timedelta(days=3), "no"),
        chat(2, created=june + timedelta(days=9)),
        said(2, "m3", june + timedelta(days=10), "no refund"),
    ]
    store = reopened_as_older(  # a Parley before message times
        path,
        events,
        "ALTER TABLE chat_state DROP COLUMN first_message_at",
        "ALTER TABLE message_text DROP COLUMN created_at",
        "UPDATE parley_meta SET value = '3' WHERE key = 'schema_version'",
    )
    try:
        query = ChatQuery(search="refund", created_after=june + timedelta(days=5))
        found, total = store.list_chats(org="acme", workspace_id=WS, query=query, limit=10, offset=0)
        assert (sorted(row["id"] for row in found), total) == ([1, 2], 2)
        assert ingest_batch(store, org="acme", batch=[said(2, "m4", june, "older still")]).errors == []
    finally:
        store.close()
    with duckdb.connect(str(path)) as con:
        firsts = con.execute("SELECT chat_id, first_message_at FROM chat_state ORDER BY chat_id").fetchall()
    assert firsts == [(1, june.replace(tzinfo=None)), (2, june.replace(tzinfo=None))]


def test_a_duckdb_store_whose_message_text_is_compressed_writes_it_again_uncompressed_when_opened(tmp_path):
    import duckdb

    from parley.metrics.chats.query import ChatQuery
    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"

    def text_storage() -> tuple[str, list[tuple], list[tuple]]:
        """message_text's definition, its text's compressions and its rows, once checkpointed."""
        with duckdb.connect(str(path)) as con:
            con.execute("CHECKPOINT")
            (ddl,) = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'message_text'").fetchone()
            compressions = con.execute(
                "SELECT DISTINCT compression FROM pragma_storage_info('message_text')"
                " WHERE column_name = 'content_lower' AND segment_type = 'VARCHAR'"
            ).fetchall()
            rows = con.execute("SELECT chat_id, content_lower FROM message_text ORDER BY ALL").fetchall()
        return ddl, compressions, rows

    # A thousand alike texts, which DuckDB left to itself stores compressed.
    events = [chat(1), chat(2), said(1, "m0", T, "Please REFUND me")]
    events += [said(2, f"m{n}", T + timedelta(seconds=n), "the same words again") for n in range(1, 1000)]
    expected = [(1, "please refund me"), *[(2, "the same words again")] * 999]
    made_as_older(  # message_text as a Parley that left the compression to DuckDB made it
        path,
        events,
        "CREATE TABLE older_text (org VARCHAR NOT NULL, workspace_id VARCHAR NOT NULL, chat_id BIGINT NOT NULL,"
        " created_at TIMESTAMP NOT NULL, content_lower VARCHAR NOT NULL)",
        "INSERT INTO older_text SELECT * FROM message_text",
        "DROP TABLE message_text",
        "ALTER TABLE older_text RENAME TO message_text",
    )
    ddl, compressions, rows = text_storage()
    assert "using compression" not in ddl.lower() and compressions != [("Uncompressed",)] and rows == expected
    store = DuckDBStore(path)
    try:
        for needle, ids in (("refund", [1]), ("SAME words", [2]), ("refund again", [])):
            found, total = store.list_chats(
                org="acme", workspace_id=WS, query=ChatQuery(search=needle), limit=10, offset=0
            )
            assert ([row["id"] for row in found], total) == (ids, len(ids)), needle
    finally:
        store.close()
    ddl, compressions, rows = text_storage()
    assert "using compression uncompressed" in ddl.lower()
    assert (compressions, rows) == ([("Uncompressed",)], expected)


def test_a_duckdb_store_writes_row_groups_of_a_quarter_of_duckdbs_own(tmp_path):
    """A read prunes by the zone maps of whole row groups: the store writes them of 32,768
    rows, where DuckDB left to itself writes 122,880, and does so again when opened again
    (DuckDB keeps no such size in the file)."""
    import duckdb

    from parley.ingest.service import ingest_batch
    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"

    def row_groups() -> list[int]:
        """The rows of each row group of message_text, as the closed store left them."""
        with duckdb.connect(str(path), read_only=True) as con:
            return [
                n
                for (n,) in con.execute(
                    "SELECT sum(count) FROM pragma_storage_info('message_text')"
                    " WHERE column_name = 'chat_id' AND segment_type = 'BIGINT'"
                    " GROUP BY row_group_id ORDER BY row_group_id"
                ).fetchall()
            ]

    messages = [said(1, f"m{n}", T + timedelta(seconds=n), "hello") for n in range(66_000)]
    for batch, expected in (
        ([chat(1), *messages[:33_000]], [32_768, 232]),
        (messages[33_000:], [32_768, 32_768, 464]),  # 122,880 a row group: [32_768, 33_232]
    ):
        store = DuckDBStore(path)
        try:
            assert ingest_batch(store, org="acme", batch=batch).errors == []
        finally:
            store.close()
        assert row_groups() == expected


def test_a_duckdb_store_open_in_this_process_refuses_to_be_opened_again_until_closed(tmp_path):
    from parley.metrics.chats.query import ChatQuery
    from parley.store.duckdb import DuckDBStore
    from parley.store.port import StoreLocked

    path = tmp_path / "parley.duckdb"
    store = DuckDBStore(path)
    try:
        with pytest.raises(StoreLocked, match="is open already in this process"):
            DuckDBStore(path)
        assert store.list_chats(org="acme", workspace_id=WS, query=ChatQuery(), limit=1, offset=0) == ([], 0)
    finally:
        store.close()
    DuckDBStore(path).close()


def test_a_duckdb_store_spills_beside_its_file_as_duckdb_does_for_a_file_it_opens(tmp_path):
    import duckdb

    from parley.store.duckdb import DuckDBStore

    path = tmp_path / "parley.duckdb"
    store = DuckDBStore(path)
    try:
        spills_to = store._fetchall("SELECT current_setting('temp_directory')", {})
    finally:
        store.close()
    with duckdb.connect(str(path)) as con:
        assert spills_to == con.execute("SELECT current_setting('temp_directory')").fetchall() == [(f"{path}.tmp",)]


def test_a_clickhouse_store_made_before_the_chat_messages_projection_gets_it_when_opened(tmp_path):
    import time

    from parley.ingest.service import ingest_batch
    from parley.metrics.chats.query import ChatQuery
    from parley.store.port import open_store
    from tests.conftest import store_url_for

    url = store_url_for("chdb", tmp_path)
    first, second = T - timedelta(days=40), T + timedelta(hours=1)  # two months: two parts
    store = open_store(url)
    try:
        batch = [chat(1), said(1, "m1", first, "a"), said(1, "m2", second, "b"), chat(2), said(2, "m3", T, "c")]
        assert ingest_batch(store, org="acme", batch=batch).errors == []
        # As a Parley before it left the table: no projection, and deletes left to refuse one.
        store._transport.command("ALTER TABLE messages DROP PROJECTION chat_messages")
        store._transport.command("ALTER TABLE messages RESET SETTING lightweight_mutation_projection_mode")
    finally:
        store.close()

    def counts() -> list[tuple]:
        found, _ = store.list_chats(org="acme", workspace_id=WS, query=ChatQuery(), limit=10, offset=0)
        return sorted((row["id"], row["message_count"], row["last_message_at"]) for row in found)

    def utc(moment: datetime) -> datetime:
        return moment.replace(tzinfo=None)  # the store's times: naive UTC

    def parts(sql: str) -> int:
        return store._fetchall(f"{sql} WHERE database = currentDatabase() AND table = 'messages' AND active", {})[0][0]

    store = open_store(url)
    try:
        assert counts() == [(1, 2, utc(second)), (2, 1, utc(T))]
        waited = 0.0
        while parts("SELECT count() FROM system.projection_parts") < 2 and waited < 30:
            time.sleep(0.1)  # the existing parts get it by a mutation, in the background
            waited += 0.1
        assert parts("SELECT count() FROM system.parts") == parts("SELECT count() FROM system.projection_parts") == 2
        assert counts() == [(1, 2, utc(second)), (2, 1, utc(T))]
        sql, params = store._chat_sql("acme", WS, ChatQuery())
        plan = store._fetchall(f"EXPLAIN WITH {sql.relation()} SELECT id, message_count FROM chats", params.values)
        assert sum("ReadFromMergeTree (chat_messages)" in line for (line,) in plan) == 1  # not the messages
        store._delete(["messages"], "event_id", [("acme", batch[2]["id"])])  # refused without the setting
        assert counts() == [(1, 1, utc(first)), (2, 1, utc(T))]
    finally:
        store.close()


def test_a_duckdb_store_written_by_a_newer_parley_is_refused(tmp_path):
    import duckdb

    from parley.store.duckdb import DuckDBStore
    from parley.store.schema import SCHEMA_VERSION

    path = tmp_path / "parley.duckdb"
    DuckDBStore(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE parley_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(RuntimeError, match="newer than this Parley"):
        DuckDBStore(path)


@pytest.mark.parametrize(
    ("workspace", "plain", "encoded"),
    [
        ('w"x', "chats-w_x-2024-06-15.csv", "chats-w%22x-2024-06-15.csv"),
        ("wé", "chats-w_-2024-06-15.csv", "chats-w%C3%A9-2024-06-15.csv"),
        ("w😀", "chats-w_-2024-06-15.csv", "chats-w%F0%9F%98%80-2024-06-15.csv"),
        ("w\r\nX: y", "chats-w__X__y-2024-06-15.csv", "chats-w%0D%0AX%3A%20y-2024-06-15.csv"),
    ],
)
def test_an_export_of_any_workspace_id_names_its_file_safely(client, ingest, member_key, workspace, plain, encoded):
    # A quote broke the header, characters outside Latin-1 made the export a 500, and
    # CR LF would have ended the header: an ASCII stand-in, and the name in UTF-8.
    body = {**chat(1)["body"], "workspace_id": workspace, "title": "Hi"}
    ingest(member(1, "admin", workspace=workspace), event("chat.upsert", body, ts=T))
    key = member_key(1, workspace=workspace)
    response = client.get(f"/api/v2/w/{quote(workspace, safe='')}/chats/export", headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"
    assert unquote(encoded) == f"chats-{workspace}-2024-06-15.csv"
    assert [row[:2] for row in csv.reader(io.StringIO(response.text, newline=""))] == [["id", "title"], ["1", "Hi"]]
