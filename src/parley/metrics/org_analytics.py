"""``/api/ai-analytics/orgs/{org}/users/{user_id}/``: user cohorts, LLM cost per user,
feedback over time (seed 003, contract 5.4)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from parley.auth.principal import ORG_ROLES, CurrentPrincipal, Principal, StoreDep
from parley.clock import Now
from parley.errors import BadRequest, Forbidden, NotFound
from parley.pricing import PICO_PER_USD, Unpriced
from parley.responses import JsonResponse
from parley.schemas import ERROR_RESPONSES
from parley.timeseries import (
    Bucket,
    Granularity,
    TimeRange,
    fill,
    make_buckets,
    parse_granularity,
    parse_tz,
    render_start,
    series_range,
)

log = logging.getLogger("parley.cost")
router = APIRouter(
    prefix="/api/ai-analytics/orgs/{org}/users/{user_id}", tags=["org analytics"], responses=ERROR_RESPONSES
)

MICRO_USD = Decimal("0.000001")
DateParam = Annotated[str | None, Query(description="YYYY-MM-DD (a whole day) or ISO-8601 with offset; required.")]
Aggregation = Annotated[str | None, Query(description="hourly, daily (default) or weekly.")]


async def mentor_filter(
    mentor_id: Annotated[str | None, Query(max_length=256, description="Only activity with this assistant.")] = None,
) -> str | None:
    """The mentor to count the activity of; no mentor id is empty, so an empty one would
    count nothing, silently."""
    if mentor_id == "":
        raise BadRequest("mentor_id: empty; leave it out to count every mentor")
    return mentor_id


MentorId = Annotated[str | None, Depends(mentor_filter)]
Tz = Annotated[str | None, Query(description="IANA time zone of the periods; default UTC.")]


async def org_reader(
    org: Annotated[str, Path(description="The caller's org; any other is a 404.")], principal: CurrentPrincipal
) -> Principal:
    """A member allowed org-level analytics, of this org (any other org: 404)."""
    if principal.ingest:
        raise Forbidden("an ingestion key may only call the ingestion endpoint")
    if org != principal.org:
        raise NotFound("org not found")
    principal.require_member()
    if principal.role not in ORG_ROLES and "org_analytics:read" not in principal.scopes:
        raise Forbidden("org analytics need an admin role or the org_analytics:read scope")
    return principal


OrgReader = Annotated[Principal, Depends(org_reader)]


@dataclass(frozen=True)
class SeriesRequest:
    """The periods a cohort or feedback series asks for."""

    granularity: Granularity
    tz: ZoneInfo
    span: TimeRange
    buckets: list[Bucket]


async def series_request(
    now: Now,
    start_date: DateParam = None,
    end_date: DateParam = None,
    aggregation: Aggregation = None,
    tz: Tz = None,
) -> SeriesRequest:
    granularity = parse_granularity(aggregation)
    zone = parse_tz(tz)
    span = series_range(
        start_date,
        end_date,
        start_name="start_date",
        end_name="end_date",
        granularity=granularity,
        tz=zone,
        now=now,
        required=True,
    )
    return SeriesRequest(granularity, zone, span, make_buckets(span, granularity, zone))


Series = Annotated[SeriesRequest, Depends(series_request)]


class Cohorts(BaseModel):
    periods: list[str] = Field(description="Each period's start, in the time zone asked.")
    new_users: list[int] = Field(description="Users registered in the period.")
    veteran_users: list[int] = Field(description="Users registered before the range and active in the period.")


class UserCost(BaseModel):
    total_cost: float = Field(
        description="USD to 6 places: observations' own costs, else their tokens at the model's price."
    )


class UserChatFeedbackCount(BaseModel):
    period: str = Field(description="The period's start, in the time zone asked.")
    feedback_count: int = Field(description="Feedback given in the period.")
    positive: int = Field(description="Of it, positive.")
    negative: int = Field(description="Of it, negative.")


@router.get("/user-cohorts-over-time/", response_model=Cohorts)
async def user_cohorts_over_time(
    user_id: Annotated[str, Path(description="The caller's own user id; not a filter.")],
    principal: OrgReader,
    store: StoreDep,
    series: Series,
    mentor_id: MentorId,
) -> Cohorts:
    """New users (registered in the period) and veterans (registered before the range, active in the period)."""
    new, veteran = await run_in_threadpool(
        store.user_cohorts,
        org=principal.org,
        start=series.span.start,
        end=series.span.end,
        granularity=series.granularity,
        tz=series.tz.key,
        mentor_id=mentor_id,
    )
    return Cohorts(
        periods=[render_start(b) for b in series.buckets],
        new_users=fill(series.buckets, new),
        veteran_users=fill(series.buckets, veteran),
    )


@dataclass
class UnpricedLog:
    """When each org's unpriced models were last logged by a user's cost. A dashboard
    that reads many users' costs every minute would log the same models for each user on
    each read: a model is logged for its org at most once an hour (by the app's clock)."""

    every: timedelta = timedelta(hours=1)
    limit: int = 10_000  # (org, model) pairs remembered; past it, forgotten and logged anew
    _last: dict[tuple[str, str | None], datetime] = field(default_factory=dict)

    def due(self, org: str, unpriced: dict[str | None, Unpriced], now: datetime) -> dict[str | None, Unpriced]:
        """The models of unpriced to log now, remembered as logged."""
        due = {}
        for model, left in unpriced.items():
            last = self._last.get((org, model))
            if last is None or not last <= now < last + self.every:
                due[model] = left
        if len(self._last) + len(due) > self.limit:
            self._last.clear()
        self._last.update(((org, model), now) for model in due)
        return due


@router.get("/user-cost/", response_model=UserCost)
async def user_cost(
    request: Request,
    now: Now,
    user_id: Annotated[str, Path(description="The user to cost, unless username is given.")],
    principal: OrgReader,
    store: StoreDep,
    start_date: DateParam = None,
    end_date: DateParam = None,
    username: Annotated[str | None, Query(max_length=256, description="The user to cost; default the path's.")] = None,
) -> UserCost:
    """The LLM cost of one user's traces in the range, in USD, rounded to 6 places."""
    zone = parse_tz(None)
    span = series_range(
        start_date,
        end_date,
        start_name="start_date",
        end_name="end_date",
        granularity="daily",
        tz=zone,
        now=now,
        required=True,
    )
    if username == "":
        raise BadRequest("username: empty; leave it out to cost the path's user")
    subject = username if username is not None else user_id
    total_pusd, unpriced = await run_in_threadpool(
        store.user_cost,
        org=principal.org,
        user_id=subject,
        start=span.start,
        end=span.end,
        prices=request.app.state.price_rows,
    )
    due = request.app.state.unpriced_log.due(principal.org, unpriced, now)
    if due:
        # By model: what the operator would add to the price table (PARLEY_MODEL_PRICES).
        models = "; ".join(
            f"{'no model' if model is None else repr(model)} {left.input_tokens:,} input and"
            f" {left.output_tokens:,} output tokens ({left.observations:,}"
            f" observation{'' if left.observations == 1 else 's'} without a cost)"
            for model, left in sorted(
                due.items(),
                key=lambda item: (-item[1].input_tokens - item[1].output_tokens, item[0] is None, item[0] or ""),
            )
        )
        log.warning(
            "user-cost: tokens of %s in org %s with no cost and no known model price were counted as 0: %s",
            subject,
            principal.org,
            models,
        )
    total = (Decimal(total_pusd) / PICO_PER_USD).quantize(MICRO_USD, rounding=ROUND_HALF_EVEN)
    return UserCost(total_cost=float(total))


@router.get("/user-feedback/", response_model=list[list[UserChatFeedbackCount]])
async def user_feedback(
    user_id: Annotated[str, Path(description="The caller's own user id; not a filter.")],
    principal: OrgReader,
    store: StoreDep,
    series: Series,
    mentor_id: MentorId,
) -> JsonResponse:
    """Feedback per period, positive and negative, every period present (nested as the seed)."""
    counts = await run_in_threadpool(
        store.feedback_counts,
        org=principal.org,
        start=series.span.start,
        end=series.span.end,
        granularity=series.granularity,
        tz=series.tz.key,
        mentor_id=mentor_id,
    )
    out = []
    for bucket in series.buckets:
        n, positive, negative = counts.get(bucket.key, (0, 0, 0))
        out.append({"period": render_start(bucket), "feedback_count": n, "positive": positive, "negative": negative})
    # Plain dicts straight to JSON, as assistants usage: a model a period, validated again
    # as the response, is Python work that holds up every other request (30 days, 4
    # clients at scale M: 17 -> 12 to 14 ms p50).
    return JsonResponse([out])
