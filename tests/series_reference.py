"""Buckets the slow, obvious way: label every quarter hour of the range and keep the distinct labels.

Every offset in use is a multiple of 15 minutes, so walking the range in quarter
hours meets every local hour, day and week it touches.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

QUARTER = timedelta(minutes=15)


def label(instant: datetime, granularity: str, tz: ZoneInfo) -> str:
    local = instant.astimezone(tz)
    if granularity == "hourly":
        start = local.replace(minute=0, second=0, microsecond=0)
    else:
        day = local.date()
        if granularity == "weekly":
            day -= timedelta(days=day.weekday())
        start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC).astimezone(tz)
    if tz.key == "UTC":
        return start.replace(tzinfo=None).isoformat() + "Z"
    return start.isoformat()


def periods(start: datetime, end: datetime, granularity: str, tz: ZoneInfo) -> list[str]:
    """Labels of every bucket touching [start, end] (aware datetimes), oldest first."""
    out: list[str] = []
    moment = start
    while moment <= end:
        name = label(moment, granularity, tz)
        if not out or out[-1] != name:
            out.append(name)
        moment += QUARTER
    last = label(end, granularity, tz)
    if out[-1] != last:
        out.append(last)
    return out


def day_bounds(first: str, last: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The first and last instant of two local days, as aware UTC datetimes."""
    lo = datetime.combine(datetime.fromisoformat(first).date(), time(), tzinfo=tz).astimezone(UTC)
    after = datetime.combine(datetime.fromisoformat(last).date() + timedelta(days=1), time(), tzinfo=tz)
    return lo, after.astimezone(UTC) - timedelta(microseconds=1)
