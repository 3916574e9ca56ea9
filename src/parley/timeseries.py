"""Time ranges for query parameters (contract section 4), shared by every endpoint.

Date-only values (``YYYY-MM-DD``) cover whole days in the request's time zone
(UTC unless ``tz`` is given); datetimes must carry an offset. Ranges are
inclusive at both ends. Everything is returned as naive UTC, the stores' time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parley.errors import BadRequest

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_RANGE_DAYS = 366
ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime  # naive UTC, inclusive
    end: datetime  # naive UTC, inclusive


def parse_tz(value: str | None) -> ZoneInfo:
    if value is None or value == "":
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"tz: unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def parse_bound(value: str, *, name: str, is_end: bool, tz: ZoneInfo) -> datetime:
    """One range bound as naive UTC; a date-only end covers its whole day."""
    text = value.strip()
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"{name}: {value!r} is not a valid date") from None
        if is_end:
            next_day = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
            return _utc_naive(next_day) - ONE_MICROSECOND
        return _utc_naive(datetime.combine(day, time(), tzinfo=tz))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is neither a date (YYYY-MM-DD) nor an ISO-8601 datetime") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: datetime {value!r} needs an offset (Z or +02:00)")
    return _utc_naive(moment)


def resolve_range(
    start: str | None,
    end: str | None,
    *,
    start_name: str,
    end_name: str,
    default_end: datetime,
    default_span: timedelta,
    tz: ZoneInfo,
    max_days: int = MAX_RANGE_DAYS,
) -> TimeRange:
    """The inclusive range a request asks for, as naive UTC.

    A missing end is ``default_end``; a missing start is ``default_span`` before the end.
    """
    hi = default_end if end is None else parse_bound(end, name=end_name, is_end=True, tz=tz)
    lo = hi - default_span if start is None else parse_bound(start, name=start_name, is_end=False, tz=tz)
    if lo > hi:
        raise BadRequest(f"{start_name} is after {end_name}")
    if hi - lo > timedelta(days=max_days):
        raise BadRequest(f"the range from {start_name} to {end_name} spans more than {max_days} days")
    return TimeRange(lo, hi)
