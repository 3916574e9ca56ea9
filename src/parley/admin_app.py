"""The server's side of the operator channel (``parley.admin``): what ``parley keys``
and ``parley ingest`` ask a running server for, over its Unix socket.

Apart from ``parley.admin`` so that the CLI, the channel's client, starts without
loading FastAPI.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from parley.admin import KeyInfo, Revoked
from parley.auth.keys import create_key, revoke_key
from parley.error_handlers import error_response, install_error_handlers
from parley.errors import BadRequest
from parley.ingest.service import ingest_lines
from parley.responses import JsonResponse
from parley.store.port import Store, StoreUnavailable

log = logging.getLogger("parley.admin")


class KeyRequest(BaseModel):
    org: str
    workspace: str | None = None
    member: int | None = None
    ingest: bool = False


class RevokeRequest(BaseModel):
    key_id: str  # the id alone: a key's secret never crosses the channel to be revoked


def create_admin_app(store: Store, *, api_url: str) -> FastAPI:
    """The operator channel of the server whose API answers at ``api_url``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.store = store
    install_error_handlers(app)

    # The public API's 503 leaves the cause to the server's log; this channel is the
    # operator's own, on the server's machine, so its 503 gives the cause.
    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JsonResponse:
        log.error("operator channel %s %s: %s", request.method, request.url.path, exc)
        return error_response(request, 503, str(exc))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"store": store.url, "api": api_url}

    @app.post("/keys")
    def keys(request: KeyRequest) -> dict[str, str]:
        try:
            key = create_key(
                store,
                org=request.org,
                workspace_id=request.workspace,
                member_id=request.member,
                ingest=request.ingest,
            )
        except ValueError as err:
            raise BadRequest(str(err)) from None
        return {"key": key}

    @app.get("/keys")
    def list_keys() -> list[KeyInfo]:
        return [KeyInfo.of(record) for record in store.list_api_keys()]

    @app.post("/keys/revoke")
    def revoke(request: RevokeRequest) -> Revoked:
        try:
            return Revoked.of(revoke_key(store, request.key_id))
        except ValueError as err:
            raise BadRequest(str(err)) from None

    @app.post("/ingest-lines")
    async def ingest_chunk(request: Request, first_line: int = Query(1, ge=1), org: str | None = None) -> dict:
        body = await request.body()
        report = await run_in_threadpool(ingest_lines, store, body.splitlines(), first_line=first_line, org=org)
        return report.as_json()

    @app.post("/reorder")
    async def reorder() -> dict[str, bool]:
        await run_in_threadpool(store.reorder)
        return {"reordered": True}

    return app
