"""The shared bucketing: hand-worked DST days, half-hour zones, weeks, limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.errors import BadRequest
from parley.timeseries import make_buckets, render_start, series_range, zone_span
from tests.series_reference import day_bounds, periods

NOW = datetime(2024, 6, 15, 12, 0)
NY = ZoneInfo("America/New_York")


def labels(start: str, end: str, granularity: str, tz: str) -> list[str]:
    zone = ZoneInfo(tz)
    span = series_range(start, end, start_name="s", end_name="e", granularity=granularity, tz=zone, now=NOW)
    return [render_start(b) for b in make_buckets(span, granularity, zone)]


def test_a_spring_forward_day_has_23_hours_and_keeps_its_offsets():
    got = labels("2024-03-10", "2024-03-10", "hourly", "America/New_York")
    assert len(got) == 23
    assert got[:3] == ["2024-03-10T00:00:00-05:00", "2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00"]


def test_a_fall_back_day_has_25_hours_with_the_repeated_hour_twice():
    got = labels("2024-11-03", "2024-11-03", "hourly", "America/New_York")
    assert len(got) == 25
    assert got[1:4] == ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"]


def test_daily_labels_carry_each_day_s_own_offset():
    assert labels("2024-03-09", "2024-03-11", "daily", "America/New_York") == [
        "2024-03-09T00:00:00-05:00",
        "2024-03-10T00:00:00-05:00",
        "2024-03-11T00:00:00-04:00",
    ]


def test_half_hour_zones_bucket_on_their_own_hours():
    got = labels("2024-05-01T00:00:00Z", "2024-05-01T02:00:00Z", "hourly", "Asia/Kolkata")
    assert got == ["2024-05-01T05:00:00+05:30", "2024-05-01T06:00:00+05:30", "2024-05-01T07:00:00+05:30"]


def test_weeks_start_on_monday_before_the_range():
    # 2024-05-01 is a Wednesday; 2024-05-13 a Monday.
    assert labels("2024-05-01", "2024-05-13", "weekly", "UTC") == [
        "2024-04-29T00:00:00Z",
        "2024-05-06T00:00:00Z",
        "2024-05-13T00:00:00Z",
    ]


def test_a_day_whose_midnight_does_not_exist_starts_at_one():
    # Santiago skipped from 2024-09-08 00:00 to 01:00.
    assert labels("2024-09-08", "2024-09-08", "daily", "America/Santiago") == ["2024-09-08T01:00:00-03:00"]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Asia/Kathmandu"])
@pytest.mark.parametrize("granularity", ["hourly", "daily", "weekly"])
def test_buckets_match_a_brute_force_reference(tz, granularity):
    if tz == "Australia/Lord_Howe" and granularity == "hourly":
        pytest.skip("a half-hour DST shift: hourly buckets follow UTC-offset hours there (docs/design.md)")
    zone = ZoneInfo(tz)
    windows = [("2024-03-08", "2024-03-12"), ("2024-10-30", "2024-11-05"), ("2024-04-03", "2024-04-08")]
    for first, last in windows:
        lo, hi = day_bounds(first, last, zone)
        assert labels(first, last, granularity, tz) == periods(lo, hi, granularity, zone), (first, last)
    odd_lo, odd_hi = datetime(2024, 3, 9, 23, 17, tzinfo=UTC), datetime(2024, 3, 11, 4, 44, tzinfo=UTC)
    got = labels(odd_lo.isoformat(), odd_hi.isoformat(), granularity, tz)
    assert got == periods(odd_lo, odd_hi, granularity, zone)


@pytest.mark.parametrize(
    ("start", "end", "granularity", "ok"),
    [
        ("2024-01-01", "2024-12-31", "daily", True),  # 366 days
        ("2023-01-01", "2024-01-01", "daily", True),  # 366 days
        ("2023-01-01", "2024-01-02", "daily", False),
        ("2024-11-02", "2025-11-02", "weekly", True),  # 366 local days with two fall-backs
        ("2024-05-01", "2024-05-31", "hourly", True),  # 31 days
        ("2024-05-01", "2024-06-01", "hourly", False),
    ],
)
def test_range_limits(start, end, granularity, ok):
    if ok:
        assert labels(start, end, granularity, "America/New_York")
    else:
        with pytest.raises(BadRequest, match="spans more than"):
            labels(start, end, granularity, "America/New_York")


def test_default_range_is_the_30_local_days_ending_today():
    zone = ZoneInfo("Asia/Kolkata")
    span = series_range(None, None, start_name="s", end_name="e", granularity="daily", tz=zone, now=NOW)
    buckets = make_buckets(span, "daily", zone)
    assert [b.key.isoformat() for b in (buckets[0], buckets[-1])] == ["2024-05-17", "2024-06-15"]
    assert span.start == datetime(2024, 5, 16, 18, 30)
    assert span.end == datetime(2024, 6, 15, 18, 30) - timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (None, "2024-05-01", "s is required"),
        (None, None, "s and e are required"),
        ("2024-05-02", "2024-05-01", "s is after e"),
        ("2024-05-01T00:00:00", "2024-05-02", "needs an offset"),
        ("05/01/2024", "2024-05-02", "neither a date"),
    ],
)
def test_required_and_bad_bounds(start, end, reason):
    with pytest.raises(BadRequest, match=reason):
        series_range(
            start, end, start_name="s", end_name="e", granularity="daily", tz=ZoneInfo("UTC"), now=NOW, required=True
        )


def test_a_zone_span_over_a_year_in_new_york_holds_its_two_changes():
    span = zone_span("America/New_York", datetime(2025, 11, 21, 5), datetime(2026, 11, 21, 4, 59, 59))
    assert span.offsets == (
        (None, -5 * 3600),
        (datetime(2026, 3, 8, 7), -4 * 3600),  # 02:00 EST
        (datetime(2026, 11, 1, 6), -5 * 3600),  # 02:00 EDT
    )
    assert zone_span("UTC", datetime(2026, 1, 1), datetime(2026, 12, 31)) is None


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        ("Australia/Lord_Howe", datetime(2025, 12, 1), datetime(2026, 11, 30)),  # half-hour changes
        ("Africa/Freetown", datetime(1939, 5, 1), datetime(1939, 12, 31)),  # two changes 95 hours apart
        ("Asia/Kathmandu", datetime(1985, 6, 1), datetime(1986, 6, 1)),  # +05:30 to +05:45
        ("Asia/Kolkata", datetime(2025, 12, 1), datetime(2026, 11, 30)),  # none
    ],
)
def test_a_zone_span_gives_the_offset_in_force_at_every_instant(tz, start, end):
    span = zone_span(tz, start, end)
    zone = ZoneInfo(tz)

    def in_force(moment):
        return int(moment.replace(tzinfo=UTC).astimezone(zone).utcoffset().total_seconds())

    def from_span(moment):
        return [offset for at, offset in span.offsets if at is None or at <= moment][-1]

    moments = [start + timedelta(minutes=7 * i) for i in range((end - start) // timedelta(minutes=7) + 1)]
    for at, _ in span.offsets[1:]:
        moments += [at - timedelta(microseconds=1), at]
    assert [from_span(m) for m in moments] == [in_force(m) for m in moments]
    assert len({in_force(m) for m in moments}) == len({offset for _, offset in span.offsets})


# -- the edges of stored time ------------------------------------------------------

EDGE_ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu"]
EDGE_DAYS = [date(1, 1, 1), date(1, 1, 2), date(1, 1, 9), date(9999, 12, 24), date(9999, 12, 30), date(9999, 12, 31)]


def _local_date(moment: datetime, zone: ZoneInfo) -> date | None:
    """The local date of a naive UTC instant; None past year 9999 or before year 1."""
    try:
        return moment.replace(tzinfo=UTC).astimezone(zone).date()
    except OverflowError:
        return None


@given(
    first=st.sampled_from(EDGE_DAYS) | st.dates(),
    length=st.integers(min_value=0, max_value=40),
    tz=st.sampled_from(EDGE_ZONES),
    granularity=st.sampled_from(["hourly", "daily", "weekly"]),
)
@settings(max_examples=300, deadline=None)
def test_date_ranges_at_the_edges_hold_exactly_their_local_days_or_are_refused(first, length, tz, granularity):
    if granularity == "hourly":
        length = min(length, 30)  # 31 days at most
    last = first + timedelta(days=min(length, (date.max - first).days))
    zone = ZoneInfo(tz)
    try:
        span = series_range(
            first.isoformat(), last.isoformat(), start_name="s", end_name="e", granularity=granularity, tz=zone, now=NOW
        )
        buckets = make_buckets(span, granularity, zone)
        zone_span(tz, span.start, span.end)
    except BadRequest:
        # Only an hourly range can be refused here (whole local days are always named),
        # and only when its first hour began before year 1 in UTC.
        assert granularity == "hourly" and first == date(1, 1, 1) and tz != "UTC"
        return
    # The range holds every stored instant of its local days and no other.
    assert first <= _local_date(span.start, zone) and _local_date(span.end, zone) <= last
    if span.start > datetime.min:
        before = _local_date(span.start - timedelta(microseconds=1), zone)
        assert before is None or before < first
    if span.end < datetime.max:
        after = _local_date(span.end + timedelta(microseconds=1), zone)
        assert after is None or after > last
    monday = first - timedelta(days=first.weekday())
    if granularity == "daily":
        assert [b.key for b in buckets] == [first + timedelta(days=n) for n in range((last - first).days + 1)]
    if granularity == "weekly":
        assert [b.key for b in buckets] == [monday + timedelta(days=n) for n in range(0, (last - monday).days + 1, 7)]
    if granularity == "hourly":
        assert buckets[0].start.date() == first and buckets[-1].start.date() == last
