"""The error types and the single JSON error shape.

Every error body is ``{"detail": "<reason>"}`` (validation errors add ``errors``),
except under ``/analytics/``, whose seed document fixes the envelope
``{"success": false, "message": "<reason>"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley.responses import JsonResponse

SEED_ENVELOPE_PREFIX = "/analytics/"
STORE_UNAVAILABLE = (
    "the store cannot answer now (the server's log says why); nothing of this request was done: send it again later"
)
RETRY_AFTER_S = 30

log = logging.getLogger("parley.errors")


class ApiError(Exception):
    """An error with an HTTP status and a reason a person can act on."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


class BadRequest(ApiError):
    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(400, detail, errors)


class Unauthorized(ApiError):
    def __init__(self, detail: str = "missing or unknown API key"):
        super().__init__(401, detail)


class Forbidden(ApiError):
    def __init__(self, detail: str):
        super().__init__(403, detail)


class NotFound(ApiError):
    def __init__(self, detail: str = "not found"):
        super().__init__(404, detail)


class PayloadTooLarge(ApiError):
    def __init__(self, detail: str):
        super().__init__(413, detail)


class UnsupportedMediaType(ApiError):
    def __init__(self, detail: str):
        super().__init__(415, detail)


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
    # Imported here: the store's port imports the chats query, which imports this module.
    from parley.store.port import StoreUnavailable

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
