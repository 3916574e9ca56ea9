"""The error types, raised wherever a request is found wrong, and what their answers say.

Every error body is ``{"detail": "<reason>"}`` (validation errors add ``errors``),
except under ``/analytics/``, whose seed document fixes the envelope
``{"success": false, "message": "<reason>"}``; ``parley.error_handlers`` writes them.
This module imports no web framework: the store and the CLI use these types too, and
the CLI's commands start without loading FastAPI.
"""

from __future__ import annotations

from typing import Any

SEED_ENVELOPE_PREFIX = "/analytics/"
STORE_UNAVAILABLE = (
    "the store cannot answer now (the server's log says why); nothing of this request was done: send it again later"
)
RETRY_AFTER_S = 30


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
