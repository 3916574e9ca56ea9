"""``parley serve``: the public API on TCP and the operator's channel on a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import socket
from collections.abc import Iterator

import pyarrow as pa
import uvicorn
from uvicorn.logging import DefaultFormatter

from parley.admin import admin_socket_path, bind_admin_socket
from parley.admin_app import create_admin_app
from parley.app import create_app
from parley.ingest.service import collect_young_less_often
from parley.logs import log_parley_at
from parley.settings import Settings
from parley.store.port import open_configured_store

# The server's cycle collector looks at young objects every this many new ones, where
# every other command does every 20,000 (``GC_YOUNG_THRESHOLD``). A request's batch of
# 1,000 events is about 5,000 tracked objects once parsed and validated, held until the
# group that stores it is answered: every 20,000, a collection came every few batches and
# walked the waiting batches of the 4 clients, stopping every thread meanwhile (the
# writer between its statements): 222 young collections and 0.3 to 0.6 s in the bench's
# live mix of 240,000 events over HTTP. Every 200,000, none came in that run: the
# batches die by reference counting first. Seven pairs alternated, 200,000 events each:
# 1 to 18% more events/s (median 6%), the server's CPU 5% less (median). A refused body
# leaves no cycle for the rarer collections to find late (150 refused 4 MiB bodies left
# the server's RSS within 1 MB; benchmarks.md, "The server's cycle collector").
SERVER_GC_YOUNG_THRESHOLD = 200_000


class _PublicServer(uvicorn.Server):
    """Stops on SIGINT/SIGTERM and returns, so that the store and socket are closed after.

    (uvicorn's own handler re-raises the signal once serving ends, which would kill
    the process before the checkpoint and the socket clean-up.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


# Set in the operator channel's task: uvicorn logs its start and end ("Started server
# process [pid]", "Finished server process [pid]") by the same logger as the public
# server's, and a `parley serve` printed each of them twice.
_IN_CHANNEL = contextvars.ContextVar("in_channel", default=False)


class _ChannelInfoDropped(logging.Filter):
    """Drops the operator channel's INFO lines, keeping its warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not _IN_CHANNEL.get()


_CHANNEL_INFO_DROPPED = _ChannelInfoDropped()


class _ParleyLines(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed's is generic
    """Parley's own lines (``parley.store``, ``parley.cost``, ...) on stderr, formatted as
    uvicorn's, with the logger's name."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(DefaultFormatter("%(levelprefix)s %(name)s: %(message)s"))


class _ChannelServer(uvicorn.Server):
    """The operator channel's server: the public server owns the signal handlers and logs
    the process's start and end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        _IN_CHANNEL.set(True)  # in this task's context only
        await super().serve(sockets)


async def run_server(settings: Settings) -> None:
    collect_young_less_often(SERVER_GC_YOUNG_THRESHOLD)
    # A long-running server should hand back the memory of big transient work (an
    # export's batches) to the system: Arrow's default allocator (mimalloc) keeps freed
    # pages. Measured on an export of 1M chats: peak RSS growth 142/142/149 MB with
    # mimalloc, 129/130/125 MB with the system allocator, and 25 MB less held after.
    pa.set_memory_pool(pa.system_memory_pool())
    log_parley_at(settings.log_level, _ParleyLines())
    store = open_configured_store(settings)
    socket_path = admin_socket_path(settings)
    try:
        app = create_app(settings, store=store)
        public = _PublicServer(
            uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level)
        )
        channel_task = None
        if socket_path is not None:
            sock = bind_admin_socket(socket_path)
            admin_app = create_admin_app(store, api_url=settings.api_url)
            channel = _ChannelServer(uvicorn.Config(admin_app, lifespan="off", log_config=None))
            logging.getLogger("uvicorn.error").addFilter(_CHANNEL_INFO_DROPPED)
            channel_task = asyncio.create_task(channel.serve(sockets=[sock]))
        try:
            await public.serve()
        finally:
            if channel_task is not None:
                channel.should_exit = True
                await channel_task
                socket_path.unlink(missing_ok=True)
    finally:
        store.close()
