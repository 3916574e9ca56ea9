"""Every path is served with or without its trailing slash, never redirected."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import bearer
from tests.factories import WS, filled, one_of_each

DAY = datetime(2024, 6, 1, 12, tzinfo=UTC)
DATES = {"start_date": "2024-06-01", "end_date": "2024-06-01", "from_date": "2024-06-01", "to_date": "2024-06-01"}


def _toggled(path: str) -> str:
    return path.rstrip("/") if path.endswith("/") else path + "/"


def test_every_read_answers_the_same_with_its_trailing_slash_toggled(client, ingest, admin):
    ingest(*one_of_each(DAY))
    reads = [path for path, methods in client.app.openapi()["paths"].items() if "get" in methods]
    assert len(reads) >= 10
    for path in reads:
        url = filled(path)
        canonical = client.get(url, params=DATES, headers=admin, follow_redirects=False)
        toggled = client.get(_toggled(url), params=DATES, headers=admin, follow_redirects=False)
        assert canonical.status_code == 200, (url, canonical.text)
        assert (toggled.status_code, toggled.content) == (200, canonical.content), url
    # Not merely the same: the data itself (chat 7 of one_of_each, the call of a1 that day).
    listed = client.get(f"/api/v2/w/{WS}/chats/", headers=admin, follow_redirects=False).json()
    assert [item["id"] for item in listed["items"]] == [7]
    calls = client.get("/analytics/calls/by-assistant/", params=DATES, headers=admin, follow_redirects=False)
    assert [(a["assistant_id"], a["total_calls"]) for a in calls.json()["data"]["assistants"]] == [("a1", 1)]


def test_an_ingest_to_the_slashed_path_is_stored(client, ingest_key, admin):
    response = client.post(
        "/api/v2/ingest/", json={"batch": one_of_each(DAY)}, headers=bearer(ingest_key), follow_redirects=False
    )
    assert response.status_code == 207 and response.json()["errors"] == [], response.text
    chats = client.get(f"/api/v2/w/{WS}/chats", headers=admin).json()
    assert chats["total"] == 1


def test_no_route_either_way_is_a_404_and_a_wrong_method_a_405(client):
    for path in ("/nope/", "/nope", "/api/v2/w/"):
        response = client.get(path, follow_redirects=False)
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"}), path
    response = client.get("/api/v2/ingest/", follow_redirects=False)
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})
