"""SQL for the time-series metrics: assistants usage, cohorts, LLM cost, feedback.

Each builder returns one statement, grouped by the bucket key of
``timeseries.Bucket``; the caller zero-fills. A trace's (and a feedback's) user and
mentor come from the event itself, else from its session: resolved as events are
stored into ``user_activity`` (``DuckDBSeriesSql``, with each user's latest
registration in ``user_state``), or at query time (``ClickHouseSeriesSql``).
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property

from parley.store.dialect import Dialect, Params
from parley.timeseries import zone_span


class SeriesSql:
    def __init__(self, dialect: Dialect, params: Params, *, org: str, start: datetime, end: datetime) -> None:
        self.d = dialect
        self.p = params
        self.org_id, self.start_at, self.end_at = org, start, end

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
        """CTEs ending in ``activity``: (user_id, mentor_id, at) of each session, trace and
        feedback in range, its user and its mentor each from the event itself, else from its
        session; ``user_id`` as ``_registered`` names it."""
        raise NotImplementedError

    def _registered(self, condition: str) -> str:
        """A subquery of the org's users whose latest registration time (``registered_at``)
        meets ``condition``: (``user_id`` as ``_activity`` names it, ``registered_at``)."""
        raise NotImplementedError

    def cohorts(self, granularity: str, tz: str, mentor_id: str | None) -> str:
        """Rows (kind, bucket key, users): kind 'new' or 'veteran'.

        Without a mentor, the new users (every user registered in range, active or not) and
        the veterans (those registered before it, by their activity) are two branches, each
        reading only the users it counts."""
        if mentor_id is not None:
            return self._cohorts_in_one_join(granularity, tz, mentor_id)
        return f"""
        WITH {self._activity(mentor_id)}
        SELECT 'new' AS kind, {self.bucket("registered_at", granularity, tz)} AS k, count(*) AS n
        FROM {self._registered(self.in_range("registered_at"))} r
        GROUP BY 1, 2
        UNION ALL
        SELECT 'veteran' AS kind, {self.bucket("a.at", granularity, tz)} AS k, count(DISTINCT a.user_id) AS n
        FROM activity a JOIN {self._registered(f"registered_at < {self.start}")} r ON r.user_id = a.user_id
        GROUP BY 1, 2
        """

    def _cohorts_in_one_join(self, granularity: str, tz: str, mentor_id: str | None) -> str:
        """The cohorts from one join of the activity with the users registered by the
        range's end: new ones by their registration, veterans by their activity.

        With a mentor, only the users active with the mentor count, the new ones too.
        Without one, every user registered in range is new, active or not: a right join
        keeps the users without activity, and matches only the veterans with theirs (the
        new users' activity would be rows to group and drop: at scale M on chdb, 365 days
        took 432 to 564 ms with it against 287 to 399 without; benchmarks.md). It drops
        the veterans left without activity.

        Written as the cohorts without a mentor are (the new users counted among those
        active), a mentor's cohorts read the activity twice, which ClickHouse runs at each
        reference: over 30 days at scale S they took 147 ms against 89 in chdb (7.7 against
        6.7 in DuckDB).
        """
        veteran = f"r.registered_at < {self.start}"
        by_activity = self.bucket("a.at", granularity, tz)
        by_registration = self.bucket("r.registered_at", granularity, tz)
        registered = self._registered(f"registered_at <= {self.end}")
        if mentor_id is not None:
            joined = f"activity a JOIN {registered} r ON r.user_id = a.user_id"
        else:
            joined = f"""activity a RIGHT JOIN {registered} r ON r.user_id = a.user_id AND {veteran}
            WHERE NOT ({veteran}) OR a.user_id IS NOT NULL"""
        return f"""
        WITH {self._activity(mentor_id)}
        SELECT kind, k, count(DISTINCT user_id) AS n FROM (
            SELECT CASE WHEN {veteran} THEN 'veteran' ELSE 'new' END AS kind,
                   CASE WHEN {veteran} THEN {by_activity} ELSE {by_registration} END AS k,
                   r.user_id AS user_id
            FROM {joined}
        ) c
        GROUP BY kind, k
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

    def user_cost_by_model(self, user_id: str) -> str:
        """The user's LLM cost in range, a row per model (NULL included): (model, the cost in
        pico-dollars of its observations that carry one, the input and the output tokens of
        those that do not, how many do not). The sums are 128-bit integers: ClickHouse's
        leave as text, which has a portable wire type, DuckDB's as the Python client's ints.
        The store prices the tokens (``pricing.price_of``).
        """
        raise NotImplementedError
