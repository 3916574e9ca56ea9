"""The local operator's channel to a running server.

DuckDB admits one writing process per file, so while ``parley serve`` holds the
embedded store, ``parley keys`` and ``parley ingest`` reach it through the server.
They do so over a Unix socket created with mode 0600 next to the database file:
only the local user who runs the server can connect, and nothing on the network
can reach it. With no server running, the CLI opens the store itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from parley.auth.keys import create_key, key_id_of, revoke_key
from parley.ingest.service import Chunk, LinesReport, ingest_chunks
from parley.settings import Settings
from parley.store.port import ApiKeyRecord, Store, StoreLocked, StoreUnavailable, open_configured_store
from parley.store.urls import parse_database_url

ADMIN_TIMEOUT_S = 600.0


class ChannelError(Exception):
    """The store cannot be reached, or the server refused the operator's request."""


def admin_socket_path(settings: Settings) -> Path | None:
    """Where the server listens for the operator; None when the store needs no such channel."""
    if settings.admin_socket is not None:
        return settings.admin_socket
    target = parse_database_url(settings.database_url)
    if target.path is None:  # a ClickHouse server takes any number of clients
        return None
    path = target.path.resolve()
    return path.with_name(path.name + ".admin.sock")


# A Unix socket's address holds at most 107 bytes (Linux's sun_path, less its NUL), fewer
# than the path of a store in a deep directory: the socket next to it is then reached
# through a descriptor of its directory.
_ADDRESS_MAX_BYTES = 107


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for the Unix socket at ``path``: the path itself when it fits, else the
    same file through its directory's descriptor (``/proc/self/fd/N/name``, Linux), which
    stays open until the block ends."""
    if len(os.fsencode(path)) <= _ADDRESS_MAX_BYTES:
        yield str(path)
        return
    too_long = (
        f"the operator channel's socket path is longer than a Unix socket's address may be "
        f"({_ADDRESS_MAX_BYTES} bytes): {path}; set PARLEY_ADMIN_SOCKET to a shorter path"
    )
    if not hasattr(os, "O_PATH") or not os.path.isdir("/proc/self/fd"):
        raise ChannelError(too_long)
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        address = f"/proc/self/fd/{directory}/{path.name}"
        if len(os.fsencode(address)) > _ADDRESS_MAX_BYTES:  # the file's own name is that long
            raise ChannelError(too_long)
        yield address
    finally:
        os.close(directory)


def bind_admin_socket(path: Path) -> socket.socket:
    """A listening Unix socket only its owner can connect to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if _answers(path):
            raise ChannelError(f"another Parley server already listens on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600: no window for others
    try:
        with socket_address(path) as address:
            sock.bind(address)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        with socket_address(path) as address:
            probe.connect(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class KeyInfo(BaseModel):
    """A key as ``parley keys list`` shows it: never its secret, nor its hash."""

    key_id: str
    org: str
    workspace_id: str | None
    member_id: int | None
    ingest: bool
    created_at: datetime  # naive UTC, as stored
    revoked_at: datetime | None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyInfo:
        return cls.model_validate(record, from_attributes=True)


class Revoked(BaseModel):
    key: KeyInfo
    already: bool  # revoked before: nothing changed

    @classmethod
    def of(cls, revoked: tuple[ApiKeyRecord, bool]) -> Revoked:
        record, already = revoked
        return cls(key=KeyInfo.of(record), already=already)


class Operator(Protocol):
    """What the CLI does to a store, directly or through a running server."""

    via_server: bool

    @property
    def api_url(self) -> str | None:
        """Where the server gone through answers its API; None for the store opened directly."""
        ...

    def create_key(self, *, org: str, workspace: str | None, member: int | None, ingest: bool) -> str: ...

    def list_keys(self) -> list[KeyInfo]: ...

    def revoke_key(self, key_or_id: str) -> Revoked:
        """Revoke a key (given whole or by its id), or raise ``ValueError`` for an unknown id."""
        ...

    def ingest_chunks(self, chunks: Iterable[Chunk], *, org: str | None) -> Iterator[tuple[Chunk, LinesReport]]:
        """Ingest chunks of JSONL lines in order, yielding each with its report."""
        ...

    def reorder(self) -> None: ...


class DirectOperator:
    via_server = False
    api_url = None

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_key(self, *, org: str, workspace: str | None, member: int | None, ingest: bool) -> str:
        return create_key(self.store, org=org, workspace_id=workspace, member_id=member, ingest=ingest)

    def list_keys(self) -> list[KeyInfo]:
        return [KeyInfo.of(record) for record in self.store.list_api_keys()]

    def revoke_key(self, key_or_id: str) -> Revoked:
        return Revoked.of(revoke_key(self.store, key_or_id))

    def ingest_chunks(self, chunks: Iterable[Chunk], *, org: str | None) -> Iterator[tuple[Chunk, LinesReport]]:
        return ingest_chunks(self.store, chunks, org=org)

    def reorder(self) -> None:
        self.store.reorder()


class ServerOperator:
    via_server = True

    def __init__(self, address: str) -> None:
        # Imported here: only the CLI talking to a running server needs httpx, and the
        # server imports this module (about 0.1 s of CPU at each start).
        import httpx

        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=address),
            base_url="http://parley-admin",
            timeout=ADMIN_TIMEOUT_S,
        )

    @property
    def api_url(self) -> str:
        return self._request("GET", "/health")["api"]

    def _post(self, url: str, **kwargs: object) -> Any:
        return self._request("POST", url, **kwargs)

    def _request(self, method: str, url: str, **kwargs: object) -> Any:
        import httpx

        try:
            response = self.client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as err:  # the server stopped (a bulk load through it outlived it)
            raise ChannelError(f"the Parley server stopped answering ({err})") from err
        if response.status_code == 503:
            raise StoreUnavailable(response.json().get("detail", response.text))
        if response.status_code >= 400:
            raise ChannelError(response.json().get("detail", response.text))
        return response.json()

    def create_key(self, *, org: str, workspace: str | None, member: int | None, ingest: bool) -> str:
        payload = {"org": org, "workspace": workspace, "member": member, "ingest": ingest}
        return self._post("/keys", json=payload)["key"]

    def list_keys(self) -> list[KeyInfo]:
        return [KeyInfo.model_validate(key) for key in self._request("GET", "/keys")]

    def revoke_key(self, key_or_id: str) -> Revoked:
        return Revoked.model_validate(self._post("/keys/revoke", json={"key_id": key_id_of(key_or_id)}))

    def ingest_chunks(self, chunks: Iterable[Chunk], *, org: str | None) -> Iterator[tuple[Chunk, LinesReport]]:
        for chunk in chunks:
            params: dict[str, str | int] = {"first_line": chunk.first_line}
            if org is not None:
                params["org"] = org
            content = b"\n".join(line.rstrip(b"\r\n") for line in chunk.lines)
            yield chunk, LinesReport.from_json(self._post("/ingest-lines", params=params, content=content))

    def reorder(self) -> None:
        self._post("/reorder")


@contextlib.contextmanager
def operator(settings: Settings) -> Iterator[Operator]:
    """The server's channel when one answers, else the store opened directly."""
    path = admin_socket_path(settings)
    if path is not None and path.exists() and _answers(path):
        with socket_address(path) as address:
            server = ServerOperator(address)
            try:
                yield server
            finally:
                server.client.close()
        return
    try:
        store = open_configured_store(settings)
    except StoreLocked as err:
        raise ChannelError(f"{err} (no Parley server answers on {path})") from err
    except StoreUnavailable as err:
        raise ChannelError(str(err)) from err
    try:
        yield DirectOperator(store)
    finally:
        store.close()
