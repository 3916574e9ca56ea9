"""``GET /api/v2/org/{org_id}/workspace/{workspace_id}/metrics/assistants_usage``
(seed 000, contract 5.1)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from parley.auth.principal import CurrentPrincipal, StoreDep
from parley.clock import Now
from parley.errors import Forbidden
from parley.responses import JsonResponse
from parley.schemas import ERROR_RESPONSES
from parley.timeseries import make_buckets, parse_tz, series_range

router = APIRouter(tags=["workspace metrics"], responses=ERROR_RESPONSES)

UNKNOWN_ASSISTANT = "unknown"


class Point(BaseModel):
    x: str = Field(description="The day, YYYY-MM-DD, in the time zone asked.")
    y: int = Field(description="The assistant's messages that day.")


class AssistantsUsage(BaseModel):
    data: dict[str, list[Point]] = Field(
        description="By assistant name ('unknown' for messages with none): every day of the range, newest first."
    )


@router.get("/api/v2/org/{org_id}/workspace/{workspace_id}/metrics/assistants_usage", response_model=AssistantsUsage)
async def assistants_usage(
    now: Now,
    org_id: Annotated[str, Path(description="The caller's org; any other is a 404.")],
    workspace_id: Annotated[str, Path(description="The caller's workspace; any other is a 404.")],
    principal: CurrentPrincipal,
    store: StoreDep,
    from_date: Annotated[
        str | None, Query(description="First day (YYYY-MM-DD) or instant (with offset); default 29 days ago.")
    ] = None,
    to_date: Annotated[str | None, Query(description="Last day or instant, inclusive; default today.")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone of the days; default UTC.")] = None,
) -> JsonResponse:
    """Assistant messages per assistant name per day, every day present, newest first."""
    if principal.ingest:
        raise Forbidden("an ingestion key may only call the ingestion endpoint")
    principal.require_workspace(org_id, workspace_id)
    principal.require_member()
    if principal.role == "basic":
        raise Forbidden("basic members may not read workspace metrics")
    principal.require_scope("workspace_metrics:read")
    zone = parse_tz(tz)
    span = series_range(
        from_date, to_date, start_name="from_date", end_name="to_date", granularity="daily", tz=zone, now=now
    )
    buckets = make_buckets(span, "daily", zone)
    counts: dict[str, dict] = {}
    rows = await run_in_threadpool(
        store.assistants_usage,
        org=principal.org,
        workspace_id=workspace_id,
        start=span.start,
        end=span.end,
        tz=zone.key,
    )
    for name, day, n in rows:
        counts.setdefault(name, {})[day] = n
    days = [b.key for b in reversed(buckets)]  # newest first
    labels = [day.isoformat() for day in days]
    # Plain dicts straight to JSON: a year of ten assistants is 3,650 points, and building
    # them as models (then validated again as the response) took about half the request.
    return JsonResponse(
        {
            "data": {
                name: [{"x": label, "y": per_day.get(day, 0)} for day, label in zip(days, labels, strict=True)]
                for name, per_day in sorted(counts.items())
            }
        }
    )
