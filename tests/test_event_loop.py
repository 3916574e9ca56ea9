"""Requests leave the event loop only for store work, and only once they must.

Every sync dependency or endpoint is a crossing to the threadpool, and at scale M each
crossing cost a request 1 to 2 ms of p50 under 4 clients (docs/benchmarks.md, "Requests
crossing to the thread pool", "The principal found on the event loop"). So the
dependencies are async, and hand their store calls to the threadpool: a store call that
reads the store on the event loop would hold up every other request while it runs. The
one store call allowed on the loop is a look-up of the caller's key and member from what
the store remembers (``remembered_only``), which never reads it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import GeneratorType
from typing import Any, NamedTuple

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from parley.app import create_app
from parley.settings import Settings
from parley.store.duckdb import DuckDBStore
from parley.store.port import Store, open_store
from tests.conftest import NOW
from tests.factories import WS, iso, one_of_each, read_urls


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Call(NamedTuple):
    name: str
    on_loop: bool
    remembered_only: bool
    answered: bool  # False: it raised


class WatchedStore:
    """A real store that notes each of its methods called: whether on an event loop, told
    to answer from memory only, and whether it answered; a generator (the export) is noted
    as it is read, which is when it works."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name.startswith("_") or not callable(value):
            return value

        def watched(*args: Any, **kwargs: Any) -> Any:
            on_loop, remembered_only = _on_event_loop(), kwargs.get("remembered_only", False)
            try:
                result = value(*args, **kwargs)
            except Exception:
                self.calls.append(Call(name, on_loop, remembered_only, False))
                raise
            if isinstance(result, GeneratorType):
                return self._read(name, result)
            self.calls.append(Call(name, on_loop, remembered_only, True))
            return result

        return watched

    def _read(self, name: str, generator: Iterator[Any]) -> Iterator[Any]:
        while True:
            on_loop = _on_event_loop()
            try:
                item = next(generator)
            except StopIteration:
                self.calls.append(Call(name, on_loop, False, True))
                return
            self.calls.append(Call(name, on_loop, False, True))
            yield item


@pytest.fixture
def store(store_url: str) -> Iterator[WatchedStore]:
    opened = open_store(store_url)
    yield WatchedStore(opened)
    opened.close()


def test_no_store_work_runs_on_the_event_loop(
    client: Any, ingest: Callable[..., dict[str, Any]], admin: dict[str, str], store: WatchedStore
) -> None:
    store.calls.clear()
    ingest(*one_of_each(NOW - timedelta(days=2)))
    span = f"start_date={(NOW - timedelta(days=6)).date()}&end_date={NOW.date()}"
    org = "/api/ai-analytics/orgs/acme/users/u1"
    chats = f"/api/v2/w/{WS}/chats"
    answers = {url: client.get(url, headers=admin) for url in read_urls(NOW)}
    assert {url: response.status_code for url, response in answers.items()} == dict.fromkeys(answers, 200)
    # What the store answered, worked out by hand from the events above.
    assert [
        item["id"]
        for item in answers[f"{chats}?search=refund&createdAfter={iso(NOW - timedelta(days=30))}"].json()["items"]
    ] == [7]
    assert answers[f"{chats}/export"].text.count("\n") == 2  # the header and chat 7
    assert answers[f"{chats}/tool-call-names"].json() == ["refund"]
    assert answers["/analytics/calls/by-assistant"].json()["data"]["assistants"][0]["total_calls"] == 1
    assert answers[f"{org}/user-cost/?{span}"].json() == {"total_cost": 0.25}
    assert sum(p["positive"] for p in answers[f"{org}/user-feedback/?{span}&aggregation=weekly"].json()[0]) == 1

    called = {c.name for c in store.calls}
    assert called >= {
        "ingest",
        "list_chats",
        "export_chats",
        "needs_response",
        "daily_chat_creation",
        "tool_call_names",
        "assistants_usage",
        "calls_by_assistant",
        "user_cohorts",
        "user_cost",
        "feedback_counts",
    }
    assert sorted({c.name for c in store.calls if c.on_loop and not c.remembered_only}) == []
    # Told to answer from memory, on the loop: only the look-ups of a caller's key and member.
    remembered = [c for c in store.calls if c.remembered_only]
    assert all(c.on_loop for c in remembered)
    assert {c.name for c in remembered} <= {"find_api_key", "get_member"}
    answered = Counter(c.name for c in remembered if c.answered)
    if isinstance(store._store, DuckDBStore):
        # It remembers every key once one is read, until a key is made, and a member from
        # its first request on, until members change. The admin's key was made after the
        # fixture's ingestion stored members: the ingestion above read every key in the
        # pool, so the admin's 11 requests found the key on the loop; the first read the
        # member in the pool, and the 10 others found it on the loop.
        assert answered == {"find_api_key": 11, "get_member": 10}
    else:  # it remembers nothing: each request asks the pool
        assert answered == {}


def _is_async(call: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (FastAPI's security
    schemes, such as ``HTTPBearer``)."""
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _sync_dependencies(dependant: Dependant) -> set[str]:
    names = set()
    for dependency in dependant.dependencies:
        if dependency.call is not None and not _is_async(dependency.call):
            names.add(getattr(dependency.call, "__name__", type(dependency.call).__name__))
        names |= _sync_dependencies(dependency)
    return names


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # An included router keeps its routes (FastAPI 0.165 no longer copies them).
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def test_only_store_work_crosses_to_the_threadpool(tmp_path: Any) -> None:
    app = create_app(Settings(database_url=f"duckdb:///{tmp_path}/parley.duckdb"))
    routes = list(_api_routes(app.router.routes))
    assert len(routes) >= 12
    assert set().union(*(_sync_dependencies(route.dependant) for route in routes)) == set()
    # A sync endpoint with a response model crosses twice: to run, and to have its answer
    # validated. The dashboard page reads a file and answers HTML.
    assert [route.path for route in routes if not inspect.iscoroutinefunction(route.endpoint)] == ["/"]
