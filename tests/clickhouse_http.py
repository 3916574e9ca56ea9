"""ClickHouse's HTTP interface in front of ClickHouse's own engine (chdb).

No ClickHouse server runs here. This one answers what clickhouse-connect sends a server
(the statement in the ``query`` parameter or the body, ``param_`` values, settings as
parameters, long parameters as a multipart form, an insert's Arrow body, a compressed
body) by running it in chdb, so that the store's HTTP path (``ConnectTransport.over_http``)
runs whole: the client's requests, its parameter binding and its Arrow both ways.

Like a ClickHouse server it runs one statement at a time in a session: a request naming
a session (``session_id``) that is running another gets ``SESSION_IS_LOCKED`` (code 373),
as a server answered two ``curl`` at once with one ``session_id`` (Debian's
clickhouse-server 18.16, too old for clickhouse-connect to talk to). Settings a request
sends stay set on the engine, as every request sends the client's.
"""

from __future__ import annotations

import email
import gzip
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame
import pyarrow as pa

# What clickhouse-connect sends that is not a setting of the statement.
TRANSPORT = {
    *("query", "database", "user", "password", "query_id", "default_format", "compress", "decompress"),
    *("session_id", "session_timeout", "session_check", "buffer_size", "wait_end_of_query"),
}
INSERT_ARROW = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+Arrow\s*$", re.IGNORECASE | re.DOTALL)
DECOMPRESS = {
    None: bytes,
    "identity": bytes,
    "lz4": lz4.frame.decompress,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


def _literal(value: str) -> str:
    return value if value.isdigit() else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Front:
    url: str
    serve: Callable[[], Callable[[], None]]  # listens on the url's port; gives what stops it
    stop: Callable[[], None]
    sessions: list[str | None] = field(default_factory=list)  # each request's session, in arrival order

    @contextmanager
    def gone(self) -> Iterator[None]:
        """The server away (nothing listens on its port), then back, its data kept."""
        self.stop()
        try:
            yield
        finally:
            self.stop = self.serve()


@contextmanager
def clickhouse_http(engine: Path) -> Iterator[Front]:
    connection = chdb.connect(str(engine))
    one_at_a_time = threading.Lock()  # the embedded engine's, not a session's
    busy: set[str] = set()
    guard = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            params = dict(parse_qsl(urlsplit(self.path).query))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = DECOMPRESS[self.headers.get("Content-Encoding")](body)
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("multipart/form-data"):  # the client's way with long parameters
                form = email.message_from_bytes(f"Content-Type: {kind}\r\n\r\n".encode() + body)
                for part in form.get_payload():
                    params[part.get_param("name", header="content-disposition")] = part.get_payload(
                        decode=True
                    ).decode()
                body = b""
            session = params.get("session_id")
            with guard:
                front.sessions.append(session)
                if session in busy:
                    return self._answer(
                        500, b"Code: 373. DB::Exception: Session is locked by a concurrent client.", 373
                    )
                if session is not None:
                    busy.add(session)
            try:
                self._run(params, body)
            finally:
                with guard:
                    busy.discard(session)

        do_GET = do_POST

        def _run(self, params: dict[str, str], body: bytes) -> None:
            sql = params.get("query")
            if sql is None:
                sql, body = body.decode(), b""
            insert = INSERT_ARROW.match(sql)
            if insert and body:
                # The Arrow file format; chdb's Python() table function finds ``rows`` by name.
                rows = pa.ipc.open_file(pa.py_buffer(body)).read_all()  # noqa: F841
                sql = f"{insert[1]} SELECT * FROM Python(rows)"
            elif body:
                sql += "\n" + body.decode()
            bound = {name.removeprefix("param_"): v for name, v in params.items() if name.startswith("param_")}
            settings = {k: v for k, v in params.items() if k not in TRANSPORT and not k.startswith("param_")}
            try:
                with one_at_a_time:
                    for name, value in settings.items():  # each request sends the client's settings
                        connection.query(f"SET {name} = {_literal(value)}")
                    result = connection.query(sql, "TabSeparated", params=bound)
            except Exception as err:  # chdb's message begins with ClickHouse's "Code: N."
                found = re.match(r"Code: (\d+)\.", str(err))
                return self._answer(500, str(err).encode(), int(found[1]) if found else 1001)
            self._answer(200, result.bytes())

        def _answer(self, status: int, data: bytes, code: int | None = None) -> None:
            self.send_response(status)
            if code is not None:
                self.send_header("X-ClickHouse-Exception-Code", str(code))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    port = 0

    def serve() -> Callable[[], None]:
        nonlocal port
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def stop() -> None:
            server.shutdown()
            server.server_close()

        return stop

    stop = serve()
    front = Front(f"clickhouse://default@127.0.0.1:{port}/default", serve, stop)
    try:
        yield front
    finally:
        front.stop()
        connection.close()
