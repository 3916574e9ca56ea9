"""The read side every SQL engine shares: keys, members and every metric query.

An adapter subclasses :class:`SqlStore`, names its :class:`Dialect`, and supplies
``_fetchall`` (run a statement with bound parameters) plus what truly differs by
engine: storing events, the chat relation, and the chat export stream.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from parley.metrics.chats.query import ChatQuery
from parley.pricing import Unpriced, price_by_model
from parley.store.chat_sql import CHAT_LIST_COLUMNS, Backdated, ChatSql, created_bounds
from parley.store.dialect import Dialect, Params
from parley.store.port import ApiKeyRecord, CallsByAssistantRow, MemberState, NotRemembered
from parley.store.series_sql import SeriesSql
from parley.timeseries import zone_span

API_KEY_COLUMNS = "key_id, secret_hash, org, workspace_id, member_id, ingest, created_at, revoked_at"
# Every key's rows, by a scan without a condition (see ``DuckDBStore._all_api_keys``).
ALL_API_KEYS = f"SELECT {API_KEY_COLUMNS} FROM api_keys"


def key_records(rows: list[tuple]) -> dict[str, ApiKeyRecord]:
    """Each key's record, by id, from rows of ``API_KEY_COLUMNS``. A key revoked in
    ClickHouse has a second row, the same but for its revocation time, until a merge keeps
    that one alone: a revoked row wins, the first revocation should there be two."""
    records: dict[str, ApiKeyRecord] = {}
    for row in rows:
        record = ApiKeyRecord(*row)
        known = records.get(record.key_id)
        if known is None or _revoked_first(record) < _revoked_first(known):
            records[record.key_id] = record
    return records


def _revoked_first(record: ApiKeyRecord) -> tuple[bool, datetime]:
    return (record.revoked_at is None, record.revoked_at or datetime.max)


class SqlStore:
    dialect: Dialect
    _write_lock: threading.Lock
    chat_sql_class: type[ChatSql]
    series_sql_class: type[SeriesSql]

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        raise NotImplementedError

    def _params(self) -> Params:
        return Params(self.dialect)

    # -- keys and members ---------------------------------------------------------

    def find_api_key(self, key_id: str, *, remembered_only: bool = False) -> ApiKeyRecord | None:
        if remembered_only:  # this store remembers nothing between requests
            raise NotRemembered(key_id)
        p = self._params()
        sql = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_id = {p.add(key_id, 'str')}"
        return key_records(self._fetchall(sql, p.values)).get(key_id)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        records = key_records(self._fetchall(ALL_API_KEYS, {})).values()
        return sorted(records, key=lambda record: (record.created_at, record.key_id))

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        with self._write_lock:
            record = self.find_api_key(key_id)
            if record is None or record.revoked_at is not None:
                return record
            revoked = replace(record, revoked_at=at)
            self._store_revocation(revoked)
        return revoked

    def _store_revocation(self, revoked: ApiKeyRecord) -> None:
        """Store that the key is revoked (at ``revoked.revoked_at``), under the write lock."""
        raise NotImplementedError

    def get_member(
        self, *, org: str, workspace_id: str, member_id: int, remembered_only: bool = False
    ) -> MemberState | None:
        if remembered_only:
            raise NotRemembered((org, workspace_id, member_id))
        p = self._params()
        rows = self._fetchall(
            "SELECT workspace_id, member_id, name, kind, role, scopes, is_anonymous FROM members "
            f"WHERE org = {p.add(org, 'str')} AND workspace_id = {p.add(workspace_id, 'str')} "
            f"AND member_id = {p.add(member_id, 'int')} ORDER BY ts DESC, event_id DESC LIMIT 1",
            p.values,
        )
        if not rows:
            return None
        ws, mid, name, kind, role, scopes, anonymous = rows[0]
        return MemberState(ws, int(mid), name, kind, role, tuple(scopes or ()), bool(anonymous))

    def count_events(self, *, org: str) -> int:
        """The org's events, each once (ClickHouse's ledger holds a claim made again as a
        second row until a merge)."""
        p = self._params()
        sql = f"SELECT count(DISTINCT event_id) FROM event_ledger WHERE org = {p.add(org, 'str')}"
        return int(self._fetchall(sql, p.values)[0][0])

    def bulk_load(self) -> AbstractContextManager[None]:
        """Nothing changes for a bulk load unless the adapter says otherwise."""
        return nullcontext()

    def holds_events(self) -> bool:
        return int(self._fetchall("SELECT count(*) FROM (SELECT 1 FROM event_ledger LIMIT 1) AS one", {})[0][0]) > 0

    # -- calls --------------------------------------------------------------------

    def calls_by_assistant(
        self, *, org: str, workspace_id: str, start: datetime, end: datetime
    ) -> list[CallsByAssistantRow]:
        d, p = self.dialect, self._params()
        org_p = p.add(org, "str")
        named = "coalesce(assistant_name, '') <> ''"
        # Calls are stored once per call_id (see schema.ENTITY_FIELDS), so rows are calls.
        # ``registered`` folds every assistant of the org, and the join keeps those with
        # calls. Kept to ``assistant_id IN (SELECT assistant_id FROM per_assistant)``, it
        # folded fewer assistant rows (the org's are read either way), but ClickHouse runs
        # a CTE at each reference, so it read the calls twice: at scale M in process, chdb
        # 43 -> 37 ms over 30 days and 74 -> 55 over 365, DuckDB 4.6 -> 4.1 and 7.8 -> 7.2
        # (benchmarks.md).
        sql = f"""
        WITH per_assistant AS (
            SELECT assistant_id,
                   count(*) AS total_calls,
                   coalesce(sum(duration_us), 0) AS total_us,
                   {d.arg_max_if("assistant_name", "(started_at, event_id)", named)} AS call_name
            FROM calls
            WHERE org = {org_p} AND workspace_id = {p.add(workspace_id, "str")}
              AND started_at BETWEEN {p.add(start, "time")} AND {p.add(end, "time")}
            GROUP BY assistant_id
        ),
        registered AS (
            SELECT assistant_id, {d.latest("name", "true")} AS name
            FROM assistants
            WHERE org = {org_p}
            GROUP BY assistant_id
        )
        SELECT p.assistant_id,
               coalesce(nullif(r.name, ''), p.call_name, p.assistant_id) AS assistant_name,
               p.total_calls,
               p.total_us
        FROM per_assistant p LEFT JOIN registered r ON r.assistant_id = p.assistant_id
        ORDER BY p.total_us DESC, assistant_name, p.assistant_id
        """
        rows = self._fetchall(sql, p.values)
        return [CallsByAssistantRow(a, n, int(c), int(us)) for a, n, c, us in rows]

    # -- chats --------------------------------------------------------------------

    def _chat_sql(
        self, org: str, workspace_id: str, query: ChatQuery | None = None, *, like: ChatSql | None = None
    ) -> tuple[ChatSql, Params]:
        """The chat SQL builder for a workspace; given the ``query`` that its ``where``
        will compile, with what a search since a time needs looked up first.

        The look-up is a statement of its own, before the query's: a chat arriving in
        between with messages older than the search's time is found from the next
        request on, as if it had arrived just after this one. ``like`` is a builder made
        for another statement of the same request, whose look-up this one takes instead
        (each statement needs parameters of its own: DuckDB refuses unused ones).
        """
        backdated = None
        if like is not None:
            backdated = like.backdated
        elif query is not None and query.search is not None and query.created_after is not None:
            probe_sql, probe_params = self._chat_sql(org, workspace_id)
            probe = probe_sql.backdated_probe(query.created_after)
            if probe is not None:
                backdated = Backdated(self._fetchall(probe, probe_params.values)[0][0])
        params = self._params()
        sql = self.chat_sql_class(self.dialect, params, org=org, workspace_id=workspace_id, backdated=backdated)
        return sql, params

    def list_chats(
        self, *, org: str, workspace_id: str, query: ChatQuery, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        sql, params = self._chat_sql(org, workspace_id, query)
        page = f"""
        WITH {sql.relation(created=created_bounds(query))}
        SELECT {", ".join(CHAT_LIST_COLUMNS)}, count(*) OVER () AS total
        FROM chats WHERE {sql.where(query)}
        ORDER BY {sql.order(query)}
        LIMIT {params.add(limit, "int")} OFFSET {params.add(offset, "int")}
        """
        rows = self._fetchall(page, params.values)
        if rows:
            total = rows[0][-1]
        else:  # a page past the last: the count alone
            counted, params = self._chat_sql(org, workspace_id, query, like=sql)
            total = self._fetchall(counted.count(query), params.values)[0][0]
        return [dict(zip(CHAT_LIST_COLUMNS, row[:-1], strict=True)) for row in rows], int(total)

    def needs_response(self, *, org: str, workspace_id: str, owner_member_id: int | None) -> list[int]:
        sql, params = self._chat_sql(org, workspace_id)
        query = ChatQuery(owner_member_id=owner_member_id, archived=False, is_test=None, needs_response=True)
        statement = f"""
        WITH {sql.relation_for(query)}
        SELECT id FROM chats WHERE {sql.where(query)} AND NOT coalesce(muted, false)
        ORDER BY id
        """
        return [int(row[0]) for row in self._fetchall(statement, params.values)]

    def daily_chat_creation(
        self, *, org: str, workspace_id: str, query: ChatQuery, tz: str, start: datetime, end: datetime
    ) -> list[tuple[date, str, int]]:
        sql, params = self._chat_sql(org, workspace_id)
        day = self.dialect.bucket_key("created_at", "daily", zone_span(tz, start, end), params)
        statement = f"""
        WITH {sql.relation_for(query, created=(start, end))}
        SELECT {day} AS day, chat_type, count(*) FROM chats
        WHERE {sql.where(query)} AND created_at BETWEEN {params.add(start, "time")} AND {params.add(end, "time")}
        GROUP BY 1, 2
        """
        return [(d, t, int(n)) for d, t, n in self._fetchall(statement, params.values)]

    def tool_call_names(self, *, org: str, workspace_id: str, owner_member_id: int | None) -> list[str]:
        sql, params = self._chat_sql(org, workspace_id)
        visible = ChatQuery(owner_member_id=owner_member_id, archived=None, is_test=None)
        return sorted(row[0] for row in self._fetchall(sql.tool_names(visible), params.values))  # code-point order

    # -- time series --------------------------------------------------------------

    def _series(self, org: str, start: datetime, end: datetime) -> tuple[SeriesSql, Params]:
        params = self._params()
        return self.series_sql_class(self.dialect, params, org=org, start=start, end=end), params

    def assistants_usage(
        self, *, org: str, workspace_id: str, start: datetime, end: datetime, tz: str
    ) -> list[tuple[str, date, int]]:
        sql, params = self._series(org, start, end)
        rows = self._fetchall(sql.assistants_usage(workspace_id, tz), params.values)
        return [(name, day, int(n)) for name, day, n in rows]

    def user_cohorts(
        self, *, org: str, start: datetime, end: datetime, granularity: str, tz: str, mentor_id: str | None
    ) -> tuple[dict[Any, int], dict[Any, int]]:
        sql, params = self._series(org, start, end)
        rows = self._fetchall(sql.cohorts(granularity, tz, mentor_id), params.values)
        new = {key: int(n) for kind, key, n in rows if kind == "new"}
        veteran = {key: int(n) for kind, key, n in rows if kind == "veteran"}
        return new, veteran

    def feedback_counts(
        self, *, org: str, start: datetime, end: datetime, granularity: str, tz: str, mentor_id: str | None
    ) -> dict[Any, tuple[int, int, int]]:
        sql, params = self._series(org, start, end)
        rows = self._fetchall(sql.feedback(granularity, tz, mentor_id), params.values)
        return {key: (int(n), int(pos), int(neg)) for key, n, pos, neg in rows}

    def user_cost(
        self, *, org: str, user_id: str, start: datetime, end: datetime, prices: list[tuple[str, int, int]]
    ) -> tuple[int, dict[str | None, Unpriced]]:
        sql, params = self._series(org, start, end)
        return price_by_model(self._fetchall(sql.user_cost_by_model(user_id), params.values), prices)
