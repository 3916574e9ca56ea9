"""Response schemas shared by every router: the error shape, for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorField(BaseModel):
    field: str = Field(description="The parameter or field at fault.")
    message: str = Field(description="What is wrong with it.")


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, in a sentence.")
    errors: list[ErrorField] | None = Field(
        None, description="Each parameter at fault, when the request's could not be read."
    )


def error_responses(model: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "Bad request",
        401: "Missing or unknown API key",
        403: "The key lacks the right",
        404: "Not found, or not the key's",
        413: "Body or batch over the limits",
        415: "A Content-Encoding other than gzip",
        503: "The store cannot answer now (a full disk, its server gone): send the request again later",
    }
    return {code: {"model": model, "description": reasons[code]} for code in codes}


ERROR_RESPONSES = error_responses(ErrorBody, 400, 401, 403, 404, 413, 503)
