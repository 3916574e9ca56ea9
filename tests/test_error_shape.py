"""Every error has the one JSON shape (the calls endpoint keeps its seed envelope)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from parley.errors import SEED_ENVELOPE_PREFIX
from tests.conftest import bearer
from tests.factories import WS, filled, member, one_of_each


def _operations(client, *, with_query=False):
    for path, methods in client.app.openapi()["paths"].items():
        for method, spec in methods.items():
            takes_query = any(p["in"] == "query" for p in spec.get("parameters", []))
            if takes_query or not with_query or method == "post":
                yield method.upper(), path


def _assert_error_shape(path: str, response, status: int) -> None:
    assert response.status_code == status, (path, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if path.startswith(SEED_ENVELOPE_PREFIX):
        assert set(body) == {"success", "message"} and body["success"] is False
        assert body["message"]
    else:
        assert set(body) <= {"detail", "errors"} and isinstance(body["detail"], str) and body["detail"]


def test_every_route_refuses_a_missing_key_in_its_shape(client):
    operations = list(_operations(client))
    assert len(operations) >= 2
    for method, path in operations:
        _assert_error_shape(path, client.request(method, filled(path)), 401)


def test_every_route_refuses_garbage_parameters_in_its_shape(client, ingest, member_key, ingest_key):
    ingest(member(1, "admin"))
    garbage = {
        "start_date": "not-a-date",
        "end_date": "2024-13-45",
        "from_date": "x",
        "to_date": "y",
        "tz": "Mars/Olympus",
        "sortBy": "mood",
        "pageSize": "0",
        "filters": "{",
        "createdAfter": "soon",
        "isTest": "maybe",
    }
    for method, path in _operations(client, with_query=True):
        key = ingest_key if path == "/api/v2/ingest" else member_key(1)
        response = client.request(method, filled(path), params=garbage, headers=bearer(key), content=b"{")
        _assert_error_shape(path, response, 400)


def test_the_openapi_document_gives_the_400_parley_answers_never_a_422(client):
    spec = client.get("/openapi.json").json()
    documented = {
        (method.upper(), path): set(operation["responses"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert [operation for operation, codes in documented.items() if "422" in codes] == []
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]
    # Every operation that reads a request is documented with the 400 it gives instead.
    assert [operation for operation in _operations(client, with_query=True) if "400" not in documented[operation]] == []
    # And every operation, which reads or writes the store, with the 503 of a store that cannot.
    assert [operation for operation, codes in documented.items() if "503" not in codes] == []
    error = spec["paths"]["/api/v2/w/{workspace_uuid}/chats"]["get"]["responses"]["400"]
    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_every_parameter_given_twice_is_refused_not_taken_at_its_last_value(client, admin):
    spec = client.get("/openapi.json").json()
    checked = 0
    for method, path in _operations(client, with_query=True):
        for parameter in spec["paths"][path][method.lower()].get("parameters", []):
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            response = client.request(method, filled(path), params=[(name, "1"), (name, "2")], headers=admin)
            _assert_error_shape(path, response, 400)
            reason = f"{name}: given 2 times; give it once"
            assert reason in (response.json().get("detail"), response.json().get("message")), response.text
            checked += 1
    # The list 18, the export 16, daily creation 3, usage 3, calls 2, cohorts 5, cost 3, feedback 5.
    assert checked == 55
    thrice = client.get(f"/api/v2/w/{WS}/chats", params=[("mine", "true")] * 3, headers=admin)
    assert (thrice.status_code, thrice.json()) == (400, {"detail": "mine: given 3 times; give it once"})


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"/api/v2/w/{WS}/chats?page_size=10", "page_size: not a parameter of this endpoint; did you mean pageSize?"),
        (f"/api/v2/w/{WS}/chats/export?sortby=id", "sortby: not a parameter of this endpoint; did you mean sortBy?"),
        (
            f"/api/v2/w/{WS}/chats/stats/daily-creation?is_test=true",
            "is_test: not a parameter of this endpoint; did you mean isTest?",
        ),
        (
            f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage?fromDate=2024-05-01",
            "fromDate: not a parameter of this endpoint; did you mean from_date?",
        ),
        (
            "/api/ai-analytics/orgs/acme/users/u1/user-cost/?start_date=2024-05-01&end-date=2024-05-02",
            "end-date: not a parameter of this endpoint; did you mean end_date?",
        ),
        (
            "/api/ai-analytics/orgs/acme/users/u1/user-feedback/?start_date=2024-05-01&end_date=2024-05-02&Aggregation=weekly",
            "Aggregation: not a parameter of this endpoint; did you mean aggregation?",
        ),
    ],
)
def test_a_near_miss_of_a_parameter_name_is_refused_with_the_name_meant(client, admin, url, reason):
    response = client.get(url, headers=admin)
    assert (response.status_code, response.json()) == (400, {"detail": reason})


def test_the_calls_endpoint_refuses_a_near_miss_in_its_seed_envelope(client, admin):
    response = client.get("/analytics/calls/by-assistant?startDate=2024-05-01", headers=admin)
    reason = "startDate: not a parameter of this endpoint; did you mean start_date?"
    assert (response.status_code, response.json()) == (400, {"success": False, "message": reason})


def test_parameters_nothing_resembles_ride_along_unread(client, ingest, admin):
    # A cache-buster, a tracking tag, and the list's paging sent to the export.
    ingest(*one_of_each(datetime(2024, 5, 1, 12, tzinfo=UTC)))
    chats = f"/api/v2/w/{WS}/chats"
    extras = {"_": "1714564800000", "utm_source": "dashboard"}
    listed = client.get(chats, params={"pageSize": 10, **extras}, headers=admin)
    assert listed.status_code == 200 and listed.json()["total"] == 1
    assert listed.json() == client.get(chats, params={"pageSize": 10}, headers=admin).json()
    export = client.get(f"{chats}/export", params={"page": 2, "pageSize": 1, **extras}, headers=admin)
    assert export.status_code == 200 and export.text.count("\n") == 2  # the header and chat 7
    assert export.text == client.get(f"{chats}/export", headers=admin).text


PLUS = " (a + in a URL's query string arrives as a space: send it as %2B)"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            f"/api/v2/w/{WS}/chats?createdAfter=2024-05-01T00:00:00+02:00",
            "createdAfter: '2024-05-01T00:00:00 02:00' is not an ISO-8601 datetime" + PLUS,
        ),
        (
            f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage?from_date=2024-05-01T00:00:00+0200",
            "from_date: '2024-05-01T00:00:00 0200' is neither a date (YYYY-MM-DD) nor an ISO-8601 datetime" + PLUS,
        ),
        (
            "/api/ai-analytics/orgs/acme/users/u1/user-cost/?start_date=2024-05-01&end_date=2024-05-02T00:00:00+02",
            "end_date: '2024-05-02T00:00:00 02' is neither a date (YYYY-MM-DD) nor an ISO-8601 datetime" + PLUS,
        ),
        # Not a datetime however the space is read: no hint.
        (
            f"/api/v2/w/{WS}/chats?createdAfter=2024-05-01T00:00:00+25:00",
            "createdAfter: '2024-05-01T00:00:00 25:00' is not an ISO-8601 datetime",
        ),
    ],
)
def test_a_plus_sent_unescaped_is_named_as_the_space_it_arrives_as(client, admin, url, reason):
    response = client.get(url, headers=admin)
    assert (response.status_code, response.json()) == (400, {"detail": reason})
    escaped = client.get(url.replace("+", "%2B"), headers=admin)
    assert escaped.status_code == (400 if "25:00" in url else 200), escaped.text


def test_the_calls_endpoint_names_an_unescaped_plus_in_its_seed_envelope(client, admin):
    response = client.get("/analytics/calls/by-assistant?start_date=2024-05-01T00:00:00+02:00", headers=admin)
    reason = "start_date: '2024-05-01T00:00:00 02:00' is neither a date (YYYY-MM-DD) nor an ISO-8601 datetime" + PLUS
    assert (response.status_code, response.json()) == (400, {"success": False, "message": reason})


def test_unknown_paths_and_methods_are_json_too(client):
    _assert_error_shape("/nope", client.get("/nope"), 404)
    _assert_error_shape("/api/v2/ingest", client.get("/api/v2/ingest"), 405)


@pytest.mark.parametrize("tz", ["Europe", "x" * 300, "right/UTC", "posix/Europe/Berlin", "posixrules", "localtime"])
def test_every_route_with_a_zone_refuses_a_name_that_is_no_iana_zone(client, admin, tz):
    # Each of these opened something with ZoneInfo: a directory (500), a name too long
    # for a file (500), or a zone file outside the IANA names, unknown to ClickHouse.
    routes = [
        f"/api/v2/w/{WS}/chats/stats/daily-creation",
        f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage",
        "/api/ai-analytics/orgs/acme/users/u1/user-cohorts-over-time/?start_date=2024-05-01&end_date=2024-05-02",
        "/api/ai-analytics/orgs/acme/users/u1/user-feedback/?start_date=2024-05-01&end_date=2024-05-02",
    ]
    for route in routes:
        response = client.get(route, params={"tz": tz}, headers=admin)
        assert response.status_code == 400, (route, response.text)
        message = f"tz: unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)"
        assert response.json() == {"detail": message}
    accepted = client.get(routes[0], params={"tz": "America/Argentina/Buenos_Aires"}, headers=admin)
    assert accepted.status_code == 200, accepted.text


ORG_ROUTES = [
    "/api/ai-analytics/orgs/acme/users/u1/user-cohorts-over-time/",
    "/api/ai-analytics/orgs/acme/users/u1/user-feedback/",
]


@pytest.mark.parametrize(
    ("routes", "name", "reason"),
    [
        (
            [
                f"/api/v2/w/{WS}/chats/stats/daily-creation",
                f"/api/v2/org/acme/workspace/{WS}/metrics/assistants_usage",
                *ORG_ROUTES,
            ],
            "tz",
            "tz: empty; leave it out for UTC",
        ),
        (ORG_ROUTES, "mentor_id", "mentor_id: empty; leave it out to count every mentor"),
        (
            ["/api/ai-analytics/orgs/acme/users/u1/user-cost/"],
            "username",
            "username: empty; leave it out to cost the path's user",
        ),
    ],
)
def test_an_empty_zone_mentor_or_username_is_refused_not_taken_for_a_default(client, admin, routes, name, reason):
    # An empty mentor or username can match nothing (no id is empty): every count was 0.
    dates = {"start_date": "2024-05-01", "end_date": "2024-05-02"}
    for route in routes:
        response = client.get(route, params={**dates, name: ""}, headers=admin)
        assert (response.status_code, response.json()) == (400, {"detail": reason}), route
        assert client.get(route, params=dates, headers=admin).status_code == 200, route


def test_the_health_check_answers_get_and_head_without_a_key(client):
    assert (client.get("/healthz").status_code, client.get("/healthz").json()) == (200, {"status": "ok"})
    head = client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")
