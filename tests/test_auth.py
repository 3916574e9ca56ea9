"""Keys and rights (contract 1): the matrix for the calls endpoint, tenants kept apart."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from parley.auth.keys import create_key, revoke_key, verify_key
from parley.store.duckdb import KEYS, MEMBER, DuckDBStore, _AuthCache
from parley.store.port import NotRemembered, Store, open_store
from parley.store.schema import SCHEMA_VERSION
from tests.conftest import STORE_KINDS, bearer, store_url_for
from tests.factories import T0, WS, WS_OTHER, call, member

URL = "/analytics/calls/by-assistant"
RANGE = {"start_date": "2024-05-01", "end_date": "2024-05-01"}


@pytest.mark.parametrize(
    ("role", "scopes", "status"),
    [
        ("superadmin", [], 200),
        ("admin", [], 200),
        ("controller", [], 200),
        ("curator", [], 200),
        ("basic", [], 403),
        ("basic", ["calls:read"], 200),
        ("basic", ["chats:read"], 403),
    ],
)
def test_role_and_scope_matrix(client, ingest, member_key, role, scopes, status):
    ingest(member(5, role, scopes=scopes))
    response = client.get(URL, params=RANGE, headers=bearer(member_key(5)))
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json() == {"success": False, "message": "this key lacks the calls:read scope"}


def test_missing_malformed_and_unknown_keys_are_401(client, store: Store, ingest, member_key):
    ingest(member(1, "admin"))
    real = member_key(1)
    key_id = real.split("_")[1]
    cases = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown scheme": {"Authorization": f"Basic {real}"},
        "malformed": bearer("not-a-parley-key"),
        "unknown id": bearer("prl_0000000000000000_" + "x" * 43),
        "wrong secret": bearer(f"prl_{key_id}_" + "y" * 43),
    }
    for name, headers in cases.items():
        response = client.get(URL, params=RANGE, headers=headers)
        assert response.status_code == 401, name
        assert response.json()["success"] is False, name
        assert response.headers["www-authenticate"] == "Bearer"


def test_every_documented_header_carries_the_key(client, ingest, member_key):
    ingest(member(1, "admin"))
    key = member_key(1)
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"Api-Key {key}"},
        {"X-API-Key": key},
    ):
        assert client.get(URL, params=RANGE, headers=headers).status_code == 200, headers


def test_the_openapi_document_says_every_operation_takes_a_key_either_way(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <key>` (`Authorization: Api-Key <key>` works too)",
        },
        "x-api-key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    security = {
        (method, path): op.get("security") for path, item in spec["paths"].items() for method, op in item.items()
    }
    assert len(security) == 12
    assert {key: value for key, value in security.items() if value != [{"bearer": []}, {"x-api-key": []}]} == {}


def test_a_proxys_basic_credentials_leave_the_key_to_x_api_key(client, ingest, member_key):
    ingest(member(1, "admin"))
    key = member_key(1)
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert client.get(URL, params=RANGE, headers={**basic, "X-API-Key": key}).status_code == 200
    assert client.get(URL, params=RANGE, headers={"Authorization": "Bearer ", "X-API-Key": key}).status_code == 200
    # Both carry a key: Authorization's is the one taken.
    both = {"Authorization": "Bearer prl_0000000000000000_" + "x" * 43, "X-API-Key": key}
    assert client.get(URL, params=RANGE, headers=both).json() == {"success": False, "message": "unknown API key"}
    how = "send Authorization: Bearer <key>, Authorization: Api-Key <key> or X-API-Key: <key>"
    for headers, reason in (
        (basic, f"the Authorization header's scheme is not one Parley takes: {how}"),
        ({"Authorization": key}, f"the Authorization header's scheme is not one Parley takes: {how}"),
        ({"Authorization": "Bearer "}, f"missing API key: {how}"),
        ({}, f"missing API key: {how}"),
    ):
        response = client.get(URL, params=RANGE, headers=headers)
        assert (response.status_code, response.json()) == (401, {"success": False, "message": reason}), headers


def test_a_revoked_key_is_refused_at_once_and_the_others_are_not(client, store: Store, ingest, ingest_key, member_key):
    ingest(member(1, "admin"), member(2, "admin"))
    kept, gone, gone_ingest = member_key(1), member_key(2), create_key(store, org="acme", ingest=True)
    # Each key used once first, so that a store that remembers keys has them in mind.
    for key in (kept, gone):
        assert client.get(URL, params=RANGE, headers=bearer(key)).status_code == 200
    record, already = revoke_key(store, gone)
    assert not already and record.key_id == gone.split("_")[1] and record.revoked_at is not None
    refused = client.get(URL, params=RANGE, headers=bearer(gone))
    assert (refused.status_code, refused.json()) == (
        401,
        {"success": False, "message": "this API key has been revoked"},
    )
    assert client.get(URL, params=RANGE, headers=bearer(kept)).status_code == 200
    # By its id alone, as `parley keys list` shows it; an ingestion key too.
    revoke_key(store, gone_ingest.split("_")[1])
    batch = {"batch": [member(3, "basic")]}
    refused = client.post("/api/v2/ingest", json=batch, headers=bearer(gone_ingest))
    assert (refused.status_code, refused.json()) == (401, {"detail": "this API key has been revoked"})
    # Again: nothing changes, and the first time stands.
    again, already = revoke_key(store, gone)
    assert already and again.revoked_at == record.revoked_at
    with pytest.raises(ValueError, match="no key has id '0000000000000000'"):
        revoke_key(store, "prl_0000000000000000_secret")
    listed = [(key.key_id, key.revoked_at) for key in store.list_api_keys()]
    ids = [key.split("_")[1] for key in (ingest_key, kept, gone, gone_ingest)]
    assert [key_id for key_id, _ in listed] == ids  # oldest first
    assert [at for _, at in listed][:3] == [None, None, record.revoked_at]
    assert record.revoked_at < listed[3][1]


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_store_from_before_revocation_is_brought_up_and_its_keys_can_be_revoked(tmp_path, kind: str):
    url = store_url_for(kind, tmp_path)
    store = open_store(url)
    key = create_key(store, org="acme", ingest=True)
    # As version 5 left it: keys without a revocation time.
    if kind == "duckdb":
        store.close()
        with duckdb.connect(str(tmp_path / "parley-data" / "parley.duckdb")) as con:
            con.execute("ALTER TABLE api_keys DROP COLUMN revoked_at")
            con.execute("UPDATE parley_meta SET value = '5' WHERE key = 'schema_version'")
    else:
        store._transport.command("ALTER TABLE api_keys DROP COLUMN revoked_at")
        store._transport.command("INSERT INTO parley_meta VALUES ('schema_version', '5')")
        assert store._fetchall("SELECT value FROM parley_meta FINAL WHERE key = 'schema_version'", {}) == [("5",)]
        store.close()
    store = open_store(url)
    try:
        meta = "SELECT value FROM parley_meta" + (" FINAL" if kind == "chdb" else "") + " WHERE key = 'schema_version'"
        assert store._fetchall(meta, {}) == [(str(SCHEMA_VERSION),)]
        assert verify_key(store, key) is not None
        record, _ = revoke_key(store, key)
        assert verify_key(store, key) == record and record.revoked_at is not None
        if kind == "chdb":  # the key's two rows merged: the revoked one stays
            store._transport.command("OPTIMIZE TABLE api_keys FINAL")
            assert store._fetchall("SELECT count() FROM api_keys", {}) == [(1,)]
            assert verify_key(store, key) == record
    finally:
        store.close()


def test_an_ingestion_key_cannot_read(client, ingest_key):
    response = client.get(URL, params=RANGE, headers=bearer(ingest_key))
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "message": "an ingestion key may only call the ingestion endpoint",
    }


def test_a_member_not_known_in_its_workspace_is_403(client, member_key):
    response = client.get(URL, params=RANGE, headers=bearer(member_key(99)))
    assert response.status_code == 403


def test_a_change_of_member_takes_effect_on_the_next_request(client, ingest, member_key):
    # The embedded store remembers keys and members between requests: each change must
    # reach the very next request, whichever way it goes.
    key = member_key(6)
    steps = [
        (None, 403, "member 6 is not known in workspace"),
        (member(6, "basic", ts=T0), 403, "this key lacks the calls:read scope"),
        (member(6, "admin", ts=T0 + timedelta(minutes=1)), 200, None),
        (member(6, "basic", ts=T0 + timedelta(seconds=30)), 200, None),  # older than the admin: no change
        (member(6, "basic", ts=T0 + timedelta(minutes=2)), 403, "this key lacks the calls:read scope"),
        (member(6, "basic", ts=T0 + timedelta(minutes=3), scopes=["calls:read"]), 200, None),
    ]
    for event, status, message in steps:
        if event is not None:
            ingest(event)
        for _ in range(2):  # the second answer may come from what the store remembered
            response = client.get(URL, params=RANGE, headers=bearer(key))
            assert response.status_code == status, (event, response.text)
            if message is not None:
                assert message in response.json()["message"]


def test_a_member_of_another_workspace_has_no_rights_here(client, ingest, member_key):
    # Member 4 is an admin in the other workspace only: a key for this workspace is not.
    ingest(member(4, "admin", workspace=WS_OTHER))
    assert client.get(URL, params=RANGE, headers=bearer(member_key(4, workspace=WS))).status_code == 403
    assert client.get(URL, params=RANGE, headers=bearer(member_key(4, workspace=WS_OTHER))).status_code == 200


def test_tenants_never_see_each_other(client, store: Store, ingest, member_key):
    globex_ingest = create_key(store, org="globex", ingest=True)
    # Both orgs use the same workspace id and member id: only the org separates them.
    ingest(member(1, "admin"), call("acme-call", "a1", T0, duration=60))
    response = client.post(
        "/api/v2/ingest",
        json={"batch": [member(1, "admin"), call("globex-call", "a1", T0, duration=120), call("g2", "a1", T0)]},
        headers=bearer(globex_ingest),
    )
    assert response.status_code == 207 and response.json()["errors"] == []
    acme = client.get(URL, params=RANGE, headers=bearer(member_key(1))).json()["data"]["assistants"]
    globex = client.get(URL, params=RANGE, headers=bearer(member_key(1, org="globex"))).json()["data"]["assistants"]
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in acme] == [(1, 1.0)]
    assert [(a["total_calls"], a["total_duration_minutes"]) for a in globex] == [(2, 2.0)]


def test_keys_are_random_hashed_and_checked(store: Store):
    key = create_key(store, org="acme", ingest=True)
    other = create_key(store, org="acme", ingest=True)
    assert key != other
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "prl" and len(secret) >= 43  # 32 random bytes, base64url
    record = store.find_api_key(key_id)
    assert record is not None and record.ingest and record.org == "acme"
    assert secret not in record.secret_hash
    assert verify_key(store, key) == record
    assert verify_key(store, key[:-1] + ("A" if key[-1] != "A" else "B")) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ingest": True, "workspace_id": WS},
        {"ingest": False},
        {"ingest": False, "workspace_id": WS},
        {"ingest": False, "member_id": 1},
    ],
)
def test_a_key_is_either_for_ingestion_or_for_a_member(store: Store, kwargs):
    with pytest.raises(ValueError):
        create_key(store, org="acme", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"org": "", "ingest": True}, "org must not be empty"),
        ({"org": "acme", "workspace_id": "", "member_id": 1}, "workspace must be 1 to 256 characters"),
        ({"org": "acme", "workspace_id": WS, "member_id": -1}, "member must be 0 to 9223372036854775807"),
        ({"org": "acme", "workspace_id": WS, "member_id": 2**63}, "member must be 0 to 9223372036854775807"),
    ],
)
def test_a_key_names_its_org_workspace_and_member_as_events_do(store: Store, kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        create_key(store, **kwargs)
    # The bounds themselves are keys, and let their member in.
    edge = create_key(store, org="o", workspace_id="w" * 256, member_id=2**63 - 1)
    record = verify_key(store, edge)
    assert record is not None and (record.workspace_id, record.member_id) == ("w" * 256, 2**63 - 1)


def test_a_look_up_from_memory_never_reads_the_store(store: Store, ingest):
    # Asked on the event loop (``remembered_only``), a look-up answers only what the store
    # remembers from an earlier look-up, and says when it has nothing: a key stored but
    # not yet looked up is not found there.
    key_id = create_key(store, org="acme", workspace_id=WS, member_id=6).split("_")[1]
    other_id = create_key(store, org="globex", ingest=True).split("_")[1]
    member_6 = {"org": "acme", "workspace_id": WS, "member_id": 6}
    with pytest.raises(NotRemembered):
        store.find_api_key(key_id, remembered_only=True)
    with pytest.raises(NotRemembered):
        store.get_member(**member_6, remembered_only=True)
    record = store.find_api_key(key_id)
    assert record is not None and record.member_id == 6
    assert store.get_member(**member_6) is None  # not known yet
    if not isinstance(store, DuckDBStore):  # a store that remembers nothing
        with pytest.raises(NotRemembered):
            store.find_api_key(key_id, remembered_only=True)
        return
    # The DuckDB store reads every key at once: another key, and an id no key has, are
    # answered from memory too.
    assert store.find_api_key(key_id, remembered_only=True) == record
    assert store.find_api_key(other_id, remembered_only=True).org == "globex"
    assert store.find_api_key("0123456789abcdef", remembered_only=True) is None
    assert store.get_member(**member_6, remembered_only=True) is None  # remembered as unknown
    ingest(member(6, "curator"))  # members changed: the members remembered are forgotten
    with pytest.raises(NotRemembered):
        store.get_member(**member_6, remembered_only=True)
    assert store.find_api_key(key_id, remembered_only=True) == record  # the keys are kept
    assert store.get_member(**member_6).role == "curator"
    assert store.get_member(**member_6, remembered_only=True).role == "curator"
    new_id = create_key(store, org="initech", ingest=True).split("_")[1]  # a new key: the keys are forgotten
    with pytest.raises(NotRemembered):
        store.find_api_key(key_id, remembered_only=True)
    assert store.get_member(**member_6, remembered_only=True).role == "curator"  # the members kept
    assert store.find_api_key(new_id).org == "initech"
    assert store.find_api_key(key_id, remembered_only=True) == record


def test_the_duckdb_store_reads_its_keys_without_an_index(tmp_path, monkeypatch):
    # DuckDB holds up a scan of a table with an index whose conditions are on one column
    # (the look-up of one key by its primary key) until a running checkpoint ends. The
    # store reads its keys by a scan without a condition, which never waits for one.
    store = DuckDBStore(tmp_path / "store.duckdb")
    try:
        key_id = create_key(store, org="acme", ingest=True).split("_")[1]
        create_key(store, org="globex", ingest=True)
        statements: list[tuple[str, dict]] = []
        fetchall = store._fetchall

        def recorded(sql: str, params: dict) -> list[tuple]:
            statements.append((sql, params))
            return fetchall(sql, params)

        monkeypatch.setattr(store, "_fetchall", recorded)
        assert store.find_api_key(key_id).org == "acme"
        assert store.find_api_key("0123456789abcdef") is None
        monkeypatch.undo()
        plans = [fetchall("EXPLAIN ANALYZE " + sql, params)[0][1] for sql, params in statements]
        assert [(plan.count("Index Scan"), plan.count("Sequential Scan")) for plan in plans] == [(0, 1)]
        # The same look-up of one key by its id does read the index: the plans tell them apart.
        one = fetchall(f"EXPLAIN ANALYZE {statements[0][0]} WHERE key_id = $k", {"k": key_id})[0][1]
        assert (one.count("Index Scan"), one.count("Sequential Scan")) == (1, 0)
    finally:
        store.close()


def test_an_answer_read_across_a_change_is_not_remembered():
    cache = _AuthCache()

    def read_while_a_member_changes() -> str:
        cache.forget(MEMBER)  # a transaction that stored members commits during the read
        return "before the change"

    assert cache.get((MEMBER, 1), read_while_a_member_changes) == "before the change"
    assert cache.get((MEMBER, 1), lambda: "after the change") == "after the change"
    assert cache.get((MEMBER, 1), lambda: "not read again") == "after the change"


def test_forgetting_one_kind_keeps_the_other():
    cache = _AuthCache()
    assert cache.get((KEYS,), lambda: {"k1": "acme"}) == {"k1": "acme"}
    assert cache.get((MEMBER, "acme", 1), lambda: "admin") == "admin"
    assert cache.get((MEMBER, "acme", 2), lambda: None) is None
    cache.forget(MEMBER)
    assert cache.remembered((KEYS,)) == {"k1": "acme"}
    for member_key in [(MEMBER, "acme", 1), (MEMBER, "acme", 2)]:
        with pytest.raises(NotRemembered):
            cache.remembered(member_key)
    assert cache.get((MEMBER, "acme", 1), lambda: "curator") == "curator"
    cache.forget(KEYS)
    with pytest.raises(NotRemembered):
        cache.remembered((KEYS,))
    assert cache.remembered((MEMBER, "acme", 1)) == "curator"
