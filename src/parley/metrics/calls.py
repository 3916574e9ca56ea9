"""``GET /analytics/calls/by-assistant`` (seed 002, contract 5.3)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from parley.auth.principal import CurrentPrincipal, StoreDep
from parley.clock import Now
from parley.schemas import error_responses
from parley.store.port import CallsByAssistantRow
from parley.timeseries import parse_tz, resolve_range

router = APIRouter(tags=["calls"])

DEFAULT_DAYS = 30
US_PER_MINUTE = Decimal(60_000_000)
US_PER_HOUR = Decimal(3_600_000_000)
CENT = Decimal("0.01")


class AssistantCalls(BaseModel):
    assistant_id: str = Field(description="The assistant that took the calls.")
    assistant_name: str = Field(description="Its assistant.upsert name, else its newest named call's, else its id.")
    total_calls: int = Field(description="Calls started in the range, those without a duration included.")
    total_duration_minutes: float = Field(description="Their total duration, rounded to 2 places.")
    total_duration_hours: float = Field(description="The same in hours, rounded to 2 places from the exact total.")
    avg_duration_minutes: float = Field(description="The exact total in minutes over total_calls, rounded to 2 places.")


class CallsData(BaseModel):
    assistants: list[AssistantCalls] = Field(description="By total duration, longest first; ties by name, then id.")


class CallsByAssistant(BaseModel):
    success: Literal[True] = Field(True, description="true: the seed's envelope.")
    message: str = Field("Calls by assistant fetched successfully", description="Always this text.")
    data: CallsData = Field(description="The calls of the caller's workspace started in the range.")


class CallsError(BaseModel):
    success: Literal[False] = Field(False, description="false: the seed's envelope.")
    message: str = Field(description="What is wrong.")


def _round2(value: Decimal) -> float:
    # Exact decimal arithmetic, rounded half-to-even like Python's round().
    return float(value.quantize(CENT, rounding=ROUND_HALF_EVEN))


def summarize(row: CallsByAssistantRow) -> AssistantCalls:
    minutes = Decimal(row.total_duration_us) / US_PER_MINUTE
    return AssistantCalls(
        assistant_id=row.assistant_id,
        assistant_name=row.assistant_name,
        total_calls=row.total_calls,
        total_duration_minutes=_round2(minutes),
        total_duration_hours=_round2(Decimal(row.total_duration_us) / US_PER_HOUR),
        avg_duration_minutes=_round2(minutes / row.total_calls) if row.total_calls else 0.0,
    )


@router.get(
    "/analytics/calls/by-assistant",
    response_model=CallsByAssistant,
    responses=error_responses(CallsError, 400, 401, 403, 503),
)
async def calls_by_assistant(
    now: Now,
    principal: CurrentPrincipal,
    store: StoreDep,
    start_date: Annotated[
        str | None,
        Query(description="Start of the range: YYYY-MM-DD or ISO-8601 with offset. Default: 30 days ago."),
    ] = None,
    end_date: Annotated[
        str | None,
        Query(description="End of the range (inclusive): YYYY-MM-DD or ISO-8601 with offset. Default: now."),
    ] = None,
) -> CallsByAssistant:
    """Call count and duration per assistant, for the calling member's workspace."""
    principal.require_scope("calls:read")
    span = resolve_range(
        start_date,
        end_date,
        start_name="start_date",
        end_name="end_date",
        default_end=now,
        default_span=timedelta(days=DEFAULT_DAYS),
        tz=parse_tz(None),
    )
    assert principal.workspace_id is not None
    rows = await run_in_threadpool(
        store.calls_by_assistant, org=principal.org, workspace_id=principal.workspace_id, start=span.start, end=span.end
    )
    return CallsByAssistant(data=CallsData(assistants=[summarize(r) for r in rows]))
