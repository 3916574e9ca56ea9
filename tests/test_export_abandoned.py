"""An export whose client goes away part-way ends its read of the store at once, rather
than when the garbage collector comes (a real server, a real socket, both stores)."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from parley.app import create_app
from parley.auth.keys import create_key
from parley.settings import Settings
from parley.store.port import Store
from tests.conftest import NOW, bearer
from tests.factories import WS, event, iso, member

pytestmark = pytest.mark.slow

CHATS = 10_000  # about 2.6 MB of CSV, read by the store 100 chats at a time


@pytest.fixture
def server(settings: Settings, store: Store) -> Iterator[int]:
    app = create_app(settings, store=store, clock=lambda: NOW)
    # Bound here and handed over: a port found free and bound by the server later could be
    # taken in between by another test's server.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        running = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=running.run, kwargs={"sockets": [bound]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not running.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield bound.getsockname()[1]
        running.should_exit = True
        thread.join(10)


def _ask_and_hang_up(port: int, key: str, *, read: int, still_open: Callable[[], bool]) -> None:
    """Ask for the export, read ``read`` bytes of it, check it is ``still_open`` (the
    server waits for the client to read on), and close the connection."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        request = f"GET /api/v2/w/{WS}/chats/export HTTP/1.1\r\nHost: parley\r\nAuthorization: Bearer {key}\r\n\r\n"
        sock.sendall(request.encode())
        got = 0
        while got < read:
            chunk = sock.recv(4096)
            assert chunk, "the server ended the export before the client went away"
            got += len(chunk)
        time.sleep(0.3)
        assert still_open(), "the server wrote the whole export before the client went away"


def test_an_abandoned_export_is_closed_at_once(server: int, store: Store, settings: Settings):
    chats = [
        event(
            "chat.upsert",
            {
                "workspace_id": WS,
                "chat_id": i,
                "owner_member_id": 1,
                "chat_type": "dm",
                "channel": "web",
                "title": f"Chat {i} " + "x" * 200,
                "created_at": iso(NOW),
            },
            ts=NOW,
        )
        for i in range(CHATS)
    ]
    ingest_key = create_key(store, org="acme", ingest=True)
    for start in range(0, CHATS, 5_000):
        batch = [member(1, "admin")] if start == 0 else []
        response = httpx.post(
            f"http://127.0.0.1:{server}/api/v2/ingest",
            json={"batch": batch + chats[start : start + 5_000]},
            headers=bearer(ingest_key),
            timeout=60,
        )
        assert response.status_code == 207 and response.json()["errors"] == []
    key = create_key(store, org="acme", workspace_id=WS, member_id=1)

    # Watch the store's export end: the store itself, observed, not replaced, reading in
    # small batches so that it still has some to read when the client goes away.
    ended: list[float] = []
    export_chats = store.export_chats

    def watched(**kwargs):
        try:
            yield from export_chats(**kwargs, batch_rows=100)
        finally:
            ended.append(time.monotonic())

    store.export_chats = watched  # type: ignore[method-assign]
    gc.disable()  # nothing may be left to a collection
    try:
        for attempt in range(3):
            _ask_and_hang_up(server, key, read=64 * 1024, still_open=lambda n=attempt: len(ended) == n)
            gone = time.monotonic()
            deadline = gone + 5
            while len(ended) <= attempt and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(ended) == attempt + 1, f"export {attempt} still open 5 s after its client went away"
            assert ended[attempt] - gone < 2
    finally:
        gc.enable()
        del store.export_chats
