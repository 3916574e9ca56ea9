"""SQL for the time-series metrics: assistants usage, cohorts, LLM cost, feedback.

Each builder returns one statement, grouped by the bucket key of
``timeseries.Bucket``; the caller zero-fills. A trace's (and a feedback's) user and
mentor come from the event itself, else from its session: resolved as events are
stored into ``user_activity`` (the DuckDB adapter, with each user's latest
registration in ``user_state``), or at query time (``ClickHouseSeriesSql``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cached_property

from parley.store.dialect import Dialect, Params, never_waits
from parley.store.duckdb_state import cost_day_key
from parley.timeseries import zone_span

ONE_DAY = timedelta(days=1)


class SeriesSql:
    def __init__(self, dialect: Dialect, params: Params, *, org: str, start: datetime, end: datetime) -> None:
        self.d = dialect
        self.p = params
        self.org_id, self.start_at, self.end_at = org, start, end
        # Whether a look-up by key may use an index (see ``_days``).
        self.by_index = True

    # Bound when a statement first uses them: DuckDB refuses parameters a statement leaves unused.
    @cached_property
    def org(self) -> str:
        return self.p.add(self.org_id, "str")

    @cached_property
    def start(self) -> str:
        return self.p.add(self.start_at, "time")

    @cached_property
    def end(self) -> str:
        return self.p.add(self.end_at, "time")

    def in_range(self, column: str) -> str:
        return f"{column} BETWEEN {self.start} AND {self.end}"

    def bucket(self, column: str, granularity: str, tz: str) -> str:
        return self.d.bucket_key(column, granularity, zone_span(tz, self.start_at, self.end_at), self.p)

    def assistants_usage(self, workspace_id: str, tz: str) -> str:
        day = self.bucket("created_at", "daily", tz)
        return f"""
        SELECT coalesce(nullif(assistant_name, ''), 'unknown') AS name, {day} AS day, count(*) AS n
        FROM messages
        WHERE org = {self.org} AND workspace_id = {self.p.add(workspace_id, "str")}
          AND role = 'assistant' AND {self.in_range("created_at")}
        GROUP BY 1, 2
        """

    def _people(self) -> str:
        """Who each session belongs to, for traces and feedback that name only their session."""
        return f"session_people AS (SELECT session_id, user_id, mentor_id FROM sessions WHERE org = {self.org})"

    def _activity(self, mentor_id: str | None) -> str:
        """CTEs ending in ``activity``: (user_id, mentor_id, at) of each session, trace and feedback in range.

        Read from ``user_activity``, where the store keeps each one's people resolved and
        names users by number: ``user_id`` here is that number, as in ``registered``.
        """
        mentor = "" if mentor_id is None else f"AND mentor_id = {self.p.add(mentor_id, 'str')}"
        return f"""
        activity AS (
            SELECT user_no AS user_id, mentor_id, active_at AS at FROM user_activity
            WHERE org = {self.org} AND {self.in_range("active_at")} {mentor}
        )"""

    def _registered(self, condition: str) -> str:
        """The org's users whose latest registration time (``registered_at``) meets
        ``condition``: (``user_id``, the user's number as in ``activity``; ``registered_at``),
        from ``user_state``.

        Each branch of the cohorts reads only the users it counts. The scan never waits out a
        checkpoint (``never_waits``).
        """
        return (
            "(SELECT user_no AS user_id, registered_at FROM user_state"
            f" WHERE org = {self.org} AND {condition} AND {never_waits(key='user_no')})"
        )

    def cohorts(self, granularity: str, tz: str, mentor_id: str | None) -> str:
        """Rows (kind, bucket key, users): kind 'new' or 'veteran'."""
        mentored = "" if mentor_id is None else "WHERE user_id IN (SELECT user_id FROM activity)"
        return f"""
        WITH {self._activity(mentor_id)}
        SELECT 'new' AS kind, {self.bucket("registered_at", granularity, tz)} AS k, count(*) AS n
        FROM {self._registered(self.in_range("registered_at"))} r
        {mentored}
        GROUP BY 1, 2
        UNION ALL
        SELECT 'veteran' AS kind, {self.bucket("a.at", granularity, tz)} AS k, count(DISTINCT a.user_id) AS n
        FROM activity a JOIN {self._registered(f"registered_at < {self.start}")} r ON r.user_id = a.user_id
        GROUP BY 1, 2
        """

    def feedback(self, granularity: str, tz: str, mentor_id: str | None) -> str:
        """Rows (bucket key, count, positive, negative)."""
        if mentor_id is None:  # no mentor to resolve: no session to look at
            rated = f"""
            rated AS (
                SELECT rating, created_at FROM feedback WHERE org = {self.org} AND {self.in_range("created_at")}
            )"""
        else:
            rated = f"""
            {self._people()},
            rated AS (
                SELECT f.rating, f.created_at
                FROM feedback f LEFT JOIN session_people s ON s.session_id = f.session_id
                WHERE f.org = {self.org} AND {self.in_range("f.created_at")}
                  AND coalesce(f.mentor_id, s.mentor_id) = {self.p.add(mentor_id, "str")}
            )"""
        return f"""
        WITH {rated}
        SELECT {self.bucket("created_at", granularity, tz)} AS k,
               count(*) AS n,
               sum(CASE WHEN rating = 'positive' THEN 1 ELSE 0 END) AS positive,
               sum(CASE WHEN rating = 'negative' THEN 1 ELSE 0 END) AS negative
        FROM rated
        GROUP BY 1
        """

    def user_cost(self, user_id: str, prices: list[tuple[str, int, int]]) -> str:
        """One row: (total cost in pico-dollars, observations left unpriced).

        An observation without ``cost_usd`` is priced from its tokens by the longest
        model-name prefix in the price table (so a dated model name such as
        ``gpt-4o-2024-08-06`` takes the ``gpt-4o`` price).
        """
        d, p = self.d, self.p
        prefixes = p.add([m for m, _, _ in prices], "str_list")
        inputs = p.add([i for _, i, _ in prices], "int_list")
        outputs = p.add([o for _, _, o in prices], "int_list")
        priced = (
            f"{d.wide_int('coalesce(c.input_tokens, 0)')} * mp.in_pusd"
            f" + {d.wide_int('coalesce(c.output_tokens, 0)')} * mp.out_pusd"
        )
        # The sum leaves the engine as text: a 128-bit integer has no portable wire type.
        total = f"coalesce(sum(coalesce({d.wide_int('c.cost_pusd')}, {priced}, 0)), 0)"
        return f"""
        WITH {self._costs(user_id)},
        prices AS (
            SELECT {d.zip_rows({"prefix": prefixes, "in_pusd": inputs, "out_pusd": outputs})}
        ),
        model_price AS (
            SELECT m.model,
                   {d.arg_max_if("p.in_pusd", "length(p.prefix)", "true")} AS in_pusd,
                   {d.arg_max_if("p.out_pusd", "length(p.prefix)", "true")} AS out_pusd
            FROM (SELECT DISTINCT model FROM costs WHERE cost_pusd IS NULL AND model IS NOT NULL) m
            CROSS JOIN prices p
            WHERE {d.starts_with_ci("m.model", "p.prefix")}
            GROUP BY m.model
        )
        SELECT {d.text(total)} AS total_pusd,
               coalesce(sum(CASE WHEN c.cost_pusd IS NULL AND mp.model IS NULL THEN c.n ELSE 0 END), 0) AS unpriced
        FROM costs c LEFT JOIN model_price mp ON mp.model = c.model
        """

    def _costs(self, user_id: str) -> str:
        """CTEs ending in ``costs``: rows (model, input_tokens, output_tokens, cost_pusd, n)
        whose priced sum is the user's cost in range; ``n`` observations a row stands for.

        Read from ``user_cost_days`` (kept at ingestion), found by key: the sums of the
        UTC days wholly in range, and the observations of a day the range cuts (a range
        given in date-times), each checked against the range.
        """
        whole, cut = utc_days(self.start_at, self.end_at)
        ctes, parts = [], []
        if whole:
            ctes.append(
                f"whole_days AS (SELECT cost_pusd, uncosted FROM user_cost_days WHERE {self._days(user_id, whole)})"
            )
            parts.append(
                "SELECT NULL AS model, 0 AS input_tokens, 0 AS output_tokens, cost_pusd, 0 AS n FROM whole_days"
            )
            parts.append(
                "SELECT u.model, u.input_tokens, u.output_tokens, NULL, u.n"
                " FROM (SELECT unnest(uncosted) AS u FROM whole_days)"
            )
        if cut:
            parts.append(
                "SELECT o.model, o.input_tokens, o.output_tokens, o.cost_pusd, 1"
                " FROM (SELECT unnest(observations) AS o FROM user_cost_days"
                f" WHERE {self._days(user_id, cut)})"
                f" WHERE {self.in_range('o.traced_at')}"
            )
        ctes.append(f"costs(model, input_tokens, output_tokens, cost_pusd, n) AS ({' UNION ALL '.join(parts)})")
        return ", ".join(ctes)

    def _days(self, user_id: str, days: list[date]) -> str:
        """The condition that finds the user's ``days`` in ``user_cost_days``: through the
        index on ``day_key``, or while the store checkpoints (``by_index`` false) by a scan.

        DuckDB reads an index only for a scan whose conditions are on exactly one column,
        and such a scan waits until a running checkpoint ends (up to 2.3 s at scale M under
        ingestion). With ``never_waits``'s condition it is a scan of the whole table that
        does not wait: 42 to 45 ms at scale M (85 to 88 with the second condition it had,
        ``len(observations) >= 0``, which read every row's list), against 1.4 for the index.
        """
        keys = self.p.add([cost_day_key(self.org_id, user_id, day.isoformat()) for day in days], "str_list")
        found = f"list_contains({keys}, day_key)"
        return found if self.by_index else f"{found} AND {never_waits()}"


def utc_days(start: datetime, end: datetime) -> tuple[list[date], list[date]]:
    """The UTC days of ``[start, end]`` (naive UTC, both inclusive): those wholly inside
    it, and those it cuts (at most two, the first and the last)."""
    first, last = start.date(), end.date()
    days = [first + ONE_DAY * i for i in range((last - first).days + 1)]
    cut = set()
    if start.time() != time.min:
        cut.add(first)
    if end.time() != time.max:
        cut.add(last)
    return [d for d in days if d not in cut], sorted(cut)
