"""The time "now" for a request: the app's clock (fixed in tests), as naive UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def request_now(request: Request) -> datetime:
    return request.app.state.clock().astimezone(UTC).replace(tzinfo=None)


Now = Annotated[datetime, Depends(request_now)]
