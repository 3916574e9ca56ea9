"""The time "now" for a request: the app's clock (fixed in tests), as naive UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from parley.timeseries import utc_naive

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def request_now(request: Request) -> datetime:
    return utc_naive(request.app.state.clock())


Now = Annotated[datetime, Depends(request_now)]
