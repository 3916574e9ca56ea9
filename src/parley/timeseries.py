"""Time ranges for query parameters (contract section 4), shared by every endpoint.

Date-only values (``YYYY-MM-DD``) cover whole days in the request's time zone
(UTC unless ``tz`` is given); datetimes must carry an offset. Ranges are
inclusive at both ends. Everything is returned as naive UTC, the stores' time.

Stored times lie between ``EARLIEST`` and ``LATEST`` (years 1 to 9999 in UTC, what
ingestion accepts). A date-only bound whose day reaches past them is cut to them, which
keeps every event it covers; a datetime outside them names no storable instant and is a
400, as it is at ingestion; so is a series whose local days would leave years 1 to 9999.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from parley.errors import BadRequest

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_RANGE_DAYS = 366
ONE_MICROSECOND = timedelta(microseconds=1)
ONE_DAY = timedelta(days=1)
EARLIEST = datetime.min  # naive UTC, the first and last instants ingestion accepts
LATEST = datetime.max


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime  # naive UTC, inclusive
    end: datetime  # naive UTC, inclusive


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA zone names (about 600), which both engines know. ``ZoneInfo``
    alone would also open ``right/UTC`` (unknown to ClickHouse), ``localtime`` (the
    host's zone) or a directory such as ``Europe`` (an ``IsADirectoryError``)."""
    return frozenset(available_timezones() - {"localtime"})


def parse_tz(value: str | None) -> ZoneInfo:
    if value is None:
        return ZoneInfo("UTC")
    if value == "":
        raise BadRequest("tz: empty; leave it out for UTC")
    if value not in zone_names():
        raise BadRequest(f"tz: unknown time zone {value!r} (use an IANA name such as Europe/Berlin)")
    return ZoneInfo(value)


def utc_naive(moment: datetime) -> datetime:
    """An aware ``moment`` as naive UTC, the stores' own times."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def stored_instant(moment: datetime, *, name: str, value: str) -> datetime:
    """An aware datetime as naive UTC; 400 if no stored time can be it."""
    try:
        return utc_naive(moment)
    except OverflowError:
        raise BadRequest(
            f"{name}: {value!r} is outside the times Parley stores "
            "(0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)"
        ) from None


def _day_first(day: date, tz: ZoneInfo) -> datetime:
    """The first instant (naive UTC) of a local day, or ``EARLIEST`` if it comes before."""
    try:
        return utc_naive(datetime.combine(day, time(), tzinfo=tz))
    except OverflowError:
        return EARLIEST


def _day_last(day: date, tz: ZoneInfo) -> datetime:
    """The last instant (naive UTC) of a local day, or ``LATEST`` if it comes after."""
    try:
        return utc_naive(datetime.combine(day + ONE_DAY, time(), tzinfo=tz)) - ONE_MICROSECOND
    except OverflowError:
        pass
    try:  # 9999-12-31, with no next day; fold=1 takes the later of a repeated hour
        return utc_naive(datetime.combine(day, time.max.replace(fold=1), tzinfo=tz))
    except OverflowError:
        return LATEST


_OFFSET_DIGITS = re.compile(r"\d\d(?::?\d\d)?")


def plus_as_space(text: str) -> str:
    """A hint for a datetime whose offset's ``+`` came as a space: a query string's ``+``
    is a space once decoded, so ``...T10:00:00+02:00`` sent as it is arrives as
    ``...T10:00:00 02:00``; else nothing."""
    head, space, offset = text.rpartition(" ")
    if not (space and head and _OFFSET_DIGITS.fullmatch(offset)):
        return ""
    try:
        datetime.fromisoformat(f"{head}+{offset}")
    except ValueError:
        return ""
    return " (a + in a URL's query string arrives as a space: send it as %2B)"


def parse_bound(value: str, *, name: str, is_end: bool, tz: ZoneInfo) -> datetime:
    """One range bound as naive UTC; a date-only end covers its whole day."""
    text = value.strip()
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"{name}: {value!r} is not a valid date") from None
        return _day_last(day, tz) if is_end else _day_first(day, tz)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        reason = f"{value!r} is neither a date (YYYY-MM-DD) nor an ISO-8601 datetime{plus_as_space(text)}"
        raise BadRequest(f"{name}: {reason}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: datetime {value!r} needs an offset (Z or +02:00)")
    return stored_instant(moment, name=name, value=value)


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
    if start is None:  # never before the zone's first nameable day, 0001-01-01
        lo = max(hi - min(default_span, hi - EARLIEST), _day_first(date.min, tz))
    else:
        lo = parse_bound(start, name=start_name, is_end=False, tz=tz)
    if lo > hi:
        raise BadRequest(f"{start_name} is after {end_name}")
    try:
        local_lo, local_hi = _local(lo, tz), _local(hi, tz)
    except OverflowError:
        raise BadRequest(
            f"the range from {start_name} to {end_name} reaches past the years 1 to 9999 in {tz.key}, "
            "where its days could not be named"
        ) from None
    # Measured on the wall clock, so that a DST change never tips a whole-day range over.
    wall = local_hi.replace(tzinfo=None) - local_lo.replace(tzinfo=None)
    if wall > timedelta(days=max_days):
        raise BadRequest(f"the range from {start_name} to {end_name} spans more than {max_days} days")
    return TimeRange(lo, hi)


# -- buckets ------------------------------------------------------------------------

Granularity = Literal["hourly", "daily", "weekly"]
MAX_HOURLY_DAYS = 31
ONE_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period of a series.

    ``key`` is what the database groups by: the local date of the period's first day
    (daily, weekly) or, hourly, the period's first instant as naive UTC. ``start`` is
    that first instant in the request's zone, the label the client sees.
    """

    key: date | datetime
    start: datetime


def _local(moment_utc: datetime, tz: ZoneInfo) -> datetime:
    return moment_utc.replace(tzinfo=UTC).astimezone(tz)


def hour_start(moment_utc: datetime, tz: ZoneInfo) -> datetime:
    """The first instant (naive UTC) of the local hour holding ``moment_utc``.

    Offsets never change inside an hour, so this is the moment less the local minutes
    and seconds; both hours of a DST fall-back stay distinct.
    """
    local = _local(moment_utc, tz)
    return moment_utc - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local day (01:00 where midnight is skipped by DST)."""
    wall = datetime.combine(day, time(), tzinfo=tz)
    try:
        return wall.astimezone(UTC).astimezone(tz)
    except OverflowError:  # 0001-01-01 east of UTC, in the zone's first offset: no gap to step over
        return wall


def make_buckets(span: TimeRange, granularity: Granularity, tz: ZoneInfo) -> list[Bucket]:
    """Every bucket that overlaps the range, oldest first."""
    if granularity == "hourly":
        out, key = [], hour_start(span.start, tz)
        while key <= span.end:
            out.append(Bucket(key, _local(key, tz)))
            try:
                key = hour_start(key + ONE_HOUR, tz)
            except OverflowError:  # the next hour starts after 9999: past the range's end
                break
        return out
    first, last = _local(span.start, tz).date(), _local(span.end, tz).date()
    step = 1
    if granularity == "weekly":
        first -= timedelta(days=first.weekday())  # Monday (0001-01-01 is one)
        step = 7
    return [
        Bucket(day, day_start(day, tz))
        for day in (first + timedelta(days=n) for n in range(0, (last - first).days + 1, step))
    ]


# The closest two changes of UTC offset of any zone in the tz database are 95 hours
# apart (Africa/Freetown, 1939; 166 hours since 1970): looking every 12 hours finds each.
OFFSET_SCAN_STEP = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class ZoneSpan:
    """A time zone over a range: the UTC offset in force from each instant on.

    ``offsets[0]`` holds from the start of the range (its instant is None), each later
    one from its instant (naive UTC), the first with that offset. An engine that turns
    stored times into wall-clock times slowly can shift them by these instead.
    """

    name: str
    offsets: tuple[tuple[datetime | None, int], ...]  # seconds east of UTC


@lru_cache(maxsize=1024)
def zone_span(tz: str, start: datetime, end: datetime) -> ZoneSpan | None:
    """Zone ``tz`` over [start, end] (naive UTC); None for UTC, where stored times are
    wall-clock times already (a 365-day usage query at scale M: 37 ms with a conversion
    per row, 11 ms without). A year takes 2 to 3 ms to list, so each answer is kept:
    dashboards ask for the same ranges again and again."""
    if tz == "UTC":
        return None
    zone = ZoneInfo(tz)

    def offset(moment: datetime) -> int:
        return int(_local(moment, zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    offsets: list[tuple[datetime | None, int]] = [(None, offset(start))]
    at = start
    while at < end:
        ahead = at + min(OFFSET_SCAN_STEP, end - at)  # never past ``end``, which may be LATEST
        if offset(ahead) == offsets[-1][1]:
            at = ahead
            continue
        before, after = at, ahead  # the offset changes after ``before``, at or before ``after``
        while after - before > ONE_MICROSECOND:
            middle = before + (after - before) // 2
            if offset(middle) == offsets[-1][1]:
                before = middle
            else:
                after = middle
        offsets.append((after, offset(after)))
        at = after
    return ZoneSpan(tz, tuple(offsets))


def render_start(bucket: Bucket) -> str:
    """ISO-8601: UTC with Z, any other zone with its offset."""
    if bucket.start.utcoffset() == timedelta(0) and str(bucket.start.tzinfo) == "UTC":
        return bucket.start.replace(tzinfo=None).isoformat() + "Z"
    return bucket.start.isoformat()


def fill(buckets: list[Bucket], counts: dict[date | datetime, int]) -> list[int]:
    """The series, one value per bucket, zero where the database found nothing."""
    return [int(counts.get(b.key, 0)) for b in buckets]


def parse_granularity(value: str | None) -> Granularity:
    if value is None:
        return "daily"
    if value not in ("hourly", "daily", "weekly"):
        raise BadRequest(f"aggregation: unknown value {value!r} (use hourly, daily or weekly)")
    return value  # type: ignore[return-value]


def series_range(
    start: str | None,
    end: str | None,
    *,
    start_name: str,
    end_name: str,
    granularity: Granularity,
    tz: ZoneInfo,
    now: datetime,
    required: bool = False,
    default_days: int = 30,
) -> TimeRange:
    """The range of a series request, with the limits of contract section 4.

    ``now`` is naive UTC; without bounds, the range is the ``default_days`` local days
    ending today.
    """
    if required:
        missing = [name for name, value in ((start_name, start), (end_name, end)) if value is None]
        if missing:
            raise BadRequest(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    max_days = MAX_HOURLY_DAYS if granularity == "hourly" else MAX_RANGE_DAYS
    today = _local(now, tz).date()
    first = today - timedelta(days=default_days - 1)
    lo_default, hi_default = _day_first(first, tz), _day_last(today, tz)
    span = resolve_range(
        start,
        end,
        start_name=start_name,
        end_name=end_name,
        default_end=hi_default,
        default_span=hi_default - lo_default,
        tz=tz,
        max_days=max_days,
    )
    if granularity == "hourly":
        try:
            hour_start(span.start, tz)
        except OverflowError:  # a first offset of minutes or seconds, on 0001-01-01
            raise BadRequest(
                f"the first local hour of the range from {start_name} to {end_name} starts before "
                f"0001-01-01T00:00:00Z in {tz.key}, where an hourly series cannot name it"
            ) from None
    return span
