"""The HTTP application: ``create_app(settings)`` mounts the routers and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from parley import __version__
from parley.clock import Clock, utcnow
from parley.dashboard.router import STATIC
from parley.dashboard.router import router as dashboard_router
from parley.error_handlers import install_error_handlers
from parley.ingest.router import request_components
from parley.ingest.router import router as ingest_router
from parley.metrics.calls import router as calls_router
from parley.metrics.chats.router import router as chats_router
from parley.metrics.org_analytics import UnpricedLog
from parley.metrics.org_analytics import router as org_analytics_router
from parley.metrics.usage import router as usage_router
from parley.pricing import as_rows, load_prices
from parley.query_string import check_query_string
from parley.settings import Settings
from parley.store.port import Store, open_configured_store


def _without_422(app: FastAPI) -> None:
    """FastAPI's OpenAPI document, less the 422 answer it adds to every operation that
    takes parameters: Parley answers a request it cannot read with 400 and its own error
    body (``errors.py``), never 422, and each router documents that 400. It gains the
    schemas of the ingestion body, which the endpoint reads itself."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # kept by FastAPI as app.openapi_schema
            for item in schema["paths"].values():
                for operation in item.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
            schema["components"]["schemas"].update(request_components())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _start_threadpool() -> None:
    """Nothing: run once in the threadpool, to start it (see ``create_app``)."""


_SLASH_TOGGLED = "parley.slash_toggled"


def _serve_either_slash(router: Router) -> None:
    """A path that matches no route but does with its trailing slash added or taken off
    is served by that route, rather than answered by Starlette's 307: an empty body that
    curl does not follow, to an absolute URL naming the server as the request reached it
    (http even behind a TLS proxy). The routes themselves, their 405s included, decide."""
    not_found = router.default
    router.redirect_slashes = False

    async def other_slash(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path == "/" or scope.get(_SLASH_TOGGLED):
            await not_found(scope, receive, send)
            return
        toggled = path.rstrip("/") if path.endswith("/") else path + "/"
        await router.app({**scope, "path": toggled, _SLASH_TOGGLED: True}, receive, send)

    router.default = other_slash


def create_app(settings: Settings | None = None, *, store: Store | None = None, clock: Clock = utcnow) -> FastAPI:
    """The public API. A store passed in stays the caller's to close."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        app.state.store = store or open_configured_store(settings)
        # The threadpool's first use costs about 15 ms (anyio loads and starts its worker
        # machinery): paid here rather than by the first request that reads the store.
        await run_in_threadpool(_start_threadpool)
        try:
            yield
        finally:
            if owned:
                app.state.store.close()

    # /docs and /redoc from files shipped in a package, not from a CDN: the page must
    # work where the only network is the one to Parley.
    app = FastAPIOffline(
        title="Parley",
        version=__version__,
        summary="Analytics for AI-assistant platforms.",
        lifespan=lifespan,
        dependencies=[Depends(check_query_string)],
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.price_rows = as_rows(load_prices(settings.model_prices))
    app.state.unpriced_log = UnpricedLog()
    if store is not None:
        app.state.store = store
    install_error_handlers(app)
    if settings.cors_origins:
        # Keys travel in headers, never in cookies: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Content-Encoding"],
            expose_headers=["Content-Disposition"],
            max_age=600,
        )
    app.include_router(ingest_router)
    app.include_router(calls_router)
    app.include_router(chats_router)
    app.include_router(usage_router)
    app.include_router(org_analytics_router)
    app.include_router(dashboard_router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # HEAD too: uptime monitors and load balancers often check with it.
    @app.api_route("/healthz", methods=["GET", "HEAD"], tags=["meta"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _serve_either_slash(app.router)
    _without_422(app)
    return app
