"""The single JSON error shape, as the public API and the operator channel answer."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley.errors import RETRY_AFTER_S, SEED_ENVELOPE_PREFIX, STORE_UNAVAILABLE, ApiError
from parley.responses import JsonResponse
from parley.store.port import StoreUnavailable

log = logging.getLogger("parley.errors")


def error_response(
    request: Request, status: int, detail: str, errors: list[dict[str, Any]] | None = None
) -> JsonResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if request.url.path.startswith(SEED_ENVELOPE_PREFIX):
        return JsonResponse({"success": False, "message": detail}, status, headers=headers)
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return JsonResponse(body, status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body")]
        where = ".".join(loc) or "request"
        errors.append({"field": where, "message": err.get("msg", "invalid")})
    reason = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return f"invalid request: {reason}", errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JsonResponse:
        return error_response(request, exc.status, exc.detail, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JsonResponse:
        detail, errors = _describe_validation(exc)
        return error_response(request, 400, detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        return error_response(request, exc.status_code, str(exc.detail))

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JsonResponse:
        # The cause (a full disk, a server gone) is the operator's to mend: logged whole for
        # them; the client is told to come back, which for ingestion means sending the whole
        # batch again (nothing of it was acknowledged; event ids make the resend safe).
        log.error("%s %s: %s", request.method, request.url.path, exc)
        response = error_response(request, 503, STORE_UNAVAILABLE)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
        # Never leak internals: the reason is logged by uvicorn, the client gets a generic one.
        return error_response(request, 500, "internal error")
