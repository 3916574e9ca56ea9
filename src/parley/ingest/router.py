"""``POST /api/v2/ingest`` (contract section 2)."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Literal, Union

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from parley.auth.principal import CurrentPrincipal, StoreDep
from parley.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType
from parley.ingest.events import BODY_SCHEMAS, Id, Instant, validate_batch
from parley.ingest.service import BatchReport, ingest_batch, ingest_valid
from parley.responses import JsonResponse
from parley.schemas import ERROR_RESPONSES, ErrorBody, error_responses
from parley.store.port import Store

router = APIRouter(tags=["ingestion"])


class IngestSuccess(BaseModel):
    id: str = Field(description="The event's id.")
    status: int = Field(description="201: stored; 200: a duplicate of one stored before (or earlier in the batch).")


class IngestError(BaseModel):
    id: str | None = Field(description="The event's id; null when it has none that could be read.")
    index: int = Field(description="The event's place in the batch, from 0.")
    status: int = Field(description="400: the event is invalid; 500: the store failed it (send it again).")
    message: str = Field(description="What is wrong, naming the field.")


class IngestResult(BaseModel):
    successes: list[IngestSuccess] = Field(description="The events stored or already stored, in batch order.")
    errors: list[IngestError] = Field(description="The events refused, in batch order.")


def _documented_event(event_type: str, body: type[BaseModel]) -> type[BaseModel]:
    """The envelope of an event of ``event_type`` (contract section 2), for the OpenAPI
    document alone."""
    return create_model(
        f"{body.__name__}Event",
        __doc__=f"A {event_type} event.",
        __config__=ConfigDict(defer_build=True),  # built when the document is made, not at import
        id=(Id, Field(description="The event's id: a second event with it is a duplicate, stored once.")),
        type=(Literal[event_type], Field(description="The event's type, which says what its body holds.")),
        timestamp=(
            Instant,
            Field(
                description="When it happened, ISO-8601 with an offset; of two upserts of one thing, the newer wins."
            ),
        ),
        body=(body, Field(description=f"What the {event_type} says.")),
    )


DocumentedEvent = Annotated[
    Union[tuple(_documented_event(t, body) for t, body in BODY_SCHEMAS.items())],  # noqa: UP007
    Field(discriminator="type"),
]


class IngestRequest(BaseModel):
    """The body: a batch of events, each stored or refused on its own. The endpoint reads
    and validates it itself, event by event, so a bad event never costs its neighbours."""

    model_config = ConfigDict(
        defer_build=True,
        json_schema_extra={
            "examples": [
                {
                    "batch": [
                        {
                            "id": "try-1",
                            "type": "call.create",
                            "timestamp": "2024-05-01T10:00:00Z",
                            "body": {
                                "workspace_id": "my-workspace",
                                "call_id": "try-1",
                                "assistant_id": "try-bot",
                                "assistant_name": "Try Bot",
                                "started_at": "2024-05-01T10:00:00Z",
                                "duration_seconds": 90,
                            },
                        }
                    ]
                }
            ]
        },
    )

    batch: list[DocumentedEvent] = Field(description="At most PARLEY_MAX_BATCH_EVENTS events (10,000 by default).")


def request_components() -> dict[str, Any]:
    """The schemas of the body and its events, for the OpenAPI document's components, where
    the request body's reference points (``create_app`` adds them when the document is made)."""
    schema = IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs"), "IngestRequest": schema}


GZIP = ("gzip", "x-gzip")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, gunzipped if it says so; at most ``limit`` bytes either way."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", *GZIP):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported: send the JSON plain or gzip")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    return await run_in_threadpool(gunzip, body, limit) if encoding in GZIP else body


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body's content (every member of it), refused past ``limit`` bytes
    without inflating further: a small body may hold a great deal. Zero bytes after a
    member are padding, as gzip itself, Python's ``gzip`` and so ``parley ingest`` take
    them (a member begins with 0x1f 0x8b, never with zero)."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as err:
            raise BadRequest(f"body is not valid gzip: {err}") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes once decompressed")
        if not inflater.eof:
            raise BadRequest("body is not valid gzip: it ends before its stream does")
        data = inflater.unused_data.lstrip(b"\0")
    return bytes(out)


@router.post(
    "/api/v2/ingest",
    status_code=207,
    response_model=IngestResult,
    responses={
        207: {"model": IngestResult, "description": "One outcome per event"},
        **ERROR_RESPONSES,
        **error_responses(ErrorBody, 415),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestRequest"}}},
        }
    },
)
async def ingest(request: Request, principal: CurrentPrincipal, store: StoreDep) -> JsonResponse:
    """Store a batch of events; each event succeeds or fails on its own. The body may be
    gzip (`Content-Encoding: gzip`); the body limit (16 MiB by default) holds once decompressed."""
    if not principal.ingest:
        raise Forbidden("only an org ingestion key may ingest")
    settings = request.app.state.settings
    body = await _read_body(request, settings.max_body_bytes)
    report = await run_in_threadpool(_ingest_body, store, principal.org, body, settings.max_batch_events)
    return JsonResponse(report.as_json(), status_code=207)


def _ingest_body(store: Store, org: str, body: bytes, most: int) -> BatchReport:
    """A body's events stored for ``org``: read and validated in one pass where each is
    good (``validate_batch``); else parsed, and validated an event at a time, which says
    what is wrong with each."""
    events = validate_batch(body, org)
    if events is not None and len(events) <= most:
        return ingest_valid(store, events)
    return ingest_batch(store, org=org, batch=_batch(body, most))


def _batch(body: bytes, most: int) -> list[Any]:
    """The body's batch of raw events, at most ``most`` of them."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise BadRequest('body must be an object with a "batch" list of events')
    batch = payload["batch"]
    if len(batch) > most:
        raise PayloadTooLarge(f"batch holds {len(batch)} events; at most {most} per request")
    return batch
