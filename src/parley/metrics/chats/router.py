"""``/api/v2/w/{workspace_uuid}/chats``: list, export, needs-response, daily creation,
tool-call names (seed 001, contract 5.2)."""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from parley.auth.principal import CurrentPrincipal, Principal, StoreDep
from parley.clock import Now
from parley.errors import Forbidden
from parley.metrics.chats.query import CHAT_TYPES, ChatQuery, parse_filters, parse_instant
from parley.responses import ClosingStream, JsonResponse
from parley.schemas import ERROR_RESPONSES
from parley.timeseries import make_buckets, parse_tz, series_range

router = APIRouter(prefix="/api/v2/w/{workspace_uuid}/chats", tags=["chats"], responses=ERROR_RESPONSES)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DAILY_CREATION_DAYS = 30
# What makes a spreadsheet read a value as a formula (see ``GUARDED_COLUMNS``).
FORMULA_START = r"^[=+\-@\t\r]"
CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")
# Export batches written to CSV at once (see ``csv_stream``): the reference machine's two cores.
CSV_WRITERS = 2
ChatType = Literal["assignment", "manager", "dm", "testing"]


class Chat(BaseModel):
    id: int = Field(description="The chat's id in the workspace.")
    title: str | None = Field(description="Null when the chat has none.")
    chatType: str = Field(description="assignment, manager, dm or testing.")
    channel: str = Field(description="Where the chat takes place, as the platform names it.")
    ownerMemberId: int = Field(description="The member who owns the chat.")
    ownerName: str | None = Field(description="The owner's latest name; null when the member is not known.")
    assistantMemberId: int | None = Field(description="The assistant member of the chat, if any.")
    assistantName: str | None = Field(description="That member's latest name; null when it has none or is not known.")
    archived: bool = Field(description="Archived chats are listed only with archived=true.")
    needsResponse: bool = Field(description="Flagged as waiting for a reply.")
    paused: bool = Field(description="Paused by the platform.")
    muted: bool = Field(description="Muted chats are left out of needs-response.")
    isTest: bool = Field(description="Test chats are listed only with isTest=true.")
    isAnonymous: bool | None = Field(
        description="Whether the owner is anonymous; null when the owner is not a known member."
    )
    messageCount: int = Field(description="The chat's messages, each counted once.")
    lastMessageAt: str | None = Field(description="ISO-8601 UTC time of the newest message; null with no messages.")
    createdAt: str = Field(description="ISO-8601 UTC, from the chat.upsert.")
    updatedAt: str = Field(description="ISO-8601 UTC time of the latest chat.upsert or chat.update applied.")
    metadata: dict[str, Any] | None = Field(description="The chat's latest metadata object, as sent.")


# The export's header: a chat's fields, in the contract's order (the store's columns follow it).
EXPORT_COLUMNS = tuple(Chat.model_fields)
# The export's free text, and what makes a spreadsheet read it as a formula: such a value
# is written with ' before it.
GUARDED_COLUMNS = tuple(
    EXPORT_COLUMNS.index(name) for name in ("title", "chatType", "channel", "ownerName", "assistantName")
)


class ChatPage(BaseModel):
    items: list[Chat] = Field(description="The page's chats, in the order asked.")
    total: int = Field(description="Chats matching the filters, on every page.")
    page: int = Field(description="This page, from 1.")
    pageSize: int = Field(description="Chats a page, as asked.")


class DailyCreation(BaseModel):
    date: str = Field(description="The day, YYYY-MM-DD, in the time zone asked.")
    count: int = Field(description="Chats created that day.")
    assignment: int = Field(description="Of them, assignment chats.")
    manager: int = Field(description="Of them, manager chats.")
    dm: int = Field(description="Of them, direct-message chats.")
    testing: int = Field(description="Of them, testing chats.")


class DailyCreationStats(BaseModel):
    dailyStats: list[DailyCreation] = Field(description="The 30 days ending today, oldest first, every day present.")


def iso_utc(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with Z, microseconds only when non-zero (as the export writes them)."""
    return None if moment is None else moment.isoformat() + "Z"


WorkspaceUuid = Annotated[str, Path(description="The caller's workspace; any other is a 404.")]


async def workspace_member(workspace_uuid: WorkspaceUuid, principal: CurrentPrincipal) -> Principal:
    """The caller, checked against the path's workspace: 404 when it is not theirs."""
    if principal.ingest:
        raise Forbidden("an ingestion key may only call the ingestion endpoint")
    principal.require_workspace(None, workspace_uuid)
    principal.require_member()
    return principal


Member = Annotated[Principal, Depends(workspace_member)]


def own_chats_only(principal: Principal) -> int | None:
    """Without chats:read a member sees only the chats it owns."""
    return None if "chats:read" in principal.scopes else principal.member_id


async def chat_query(
    principal: Member,
    sort_by: Annotated[
        Literal["createdAt", "updatedAt", "lastMessageAt", "id", "title"],
        Query(alias="sortBy", description="The field to sort by; ties are broken by id in the same order."),
    ] = "createdAt",
    sort_order: Annotated[
        Literal["asc", "desc"], Query(alias="sortOrder", description="Ascending or descending.")
    ] = "desc",
    mine: Annotated[
        bool | None,
        Query(description="true: only the chats the caller owns. false or absent filters nothing (see chats:read)."),
    ] = None,
    archived: Annotated[bool | None, Query(description="Absent means false.")] = None,
    needs_response: Annotated[
        bool | None, Query(alias="needsResponse", description="Chats flagged as waiting for a reply, or not.")
    ] = None,
    paused: Annotated[bool | None, Query(description="Paused chats, or not; absent filters nothing.")] = None,
    is_test: Annotated[bool | None, Query(alias="isTest", description="Absent means false.")] = None,
    is_anonymous: Annotated[
        bool | None, Query(alias="isAnonymous", description="true needs the chats:admin scope.")
    ] = None,
    channel: Annotated[str | None, Query(max_length=256, description="This channel exactly.")] = None,
    chat_type: Annotated[ChatType | None, Query(alias="chatType", description="This chat type.")] = None,
    member_id: Annotated[
        int | None,
        Query(alias="memberId", ge=0, le=2**63 - 1, description="Chats this member owns or sent a message in."),
    ] = None,
    assistant_member_id: Annotated[
        int | None,
        Query(alias="assistantMemberId", ge=0, le=2**63 - 1, description="Chats of this assistant member."),
    ] = None,
    search: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Case-insensitive text in the title, any metadata value or any message's content.",
        ),
    ] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter", description="ISO-8601 with offset.")] = None,
    created_before: Annotated[str | None, Query(alias="createdBefore", description="ISO-8601 with offset.")] = None,
    filters: Annotated[
        str | None, Query(max_length=65_536, description="A JSON rule or and/or group of rules.")
    ] = None,
) -> ChatQuery:
    if is_anonymous is True and "chats:admin" not in principal.scopes:
        raise Forbidden("filtering to anonymous chats needs the chats:admin scope")
    owner = own_chats_only(principal)
    if mine:
        owner = principal.member_id
    return ChatQuery(
        owner_member_id=owner,
        archived=False if archived is None else archived,
        is_test=False if is_test is None else is_test,
        needs_response=needs_response,
        paused=paused,
        is_anonymous=is_anonymous,
        channel=channel,
        chat_type=chat_type,
        member_id=member_id,
        assistant_member_id=assistant_member_id,
        search=search or None,
        created_after=None if created_after is None else parse_instant(created_after, "createdAfter"),
        created_before=None if created_before is None else parse_instant(created_before, "createdBefore"),
        rule=None if filters is None else parse_filters(filters),
        sort_by=sort_by,
        descending=sort_order == "desc",
    )


Filters = Annotated[ChatQuery, Depends(chat_query)]


def _chat(row: dict[str, Any]) -> dict[str, Any]:
    """A chat as ``Chat`` shows it, in its fields' order."""
    metadata = row["metadata"]
    return {
        "id": row["id"],
        "title": row["title"],
        "chatType": row["chat_type"],
        "channel": row["channel"],
        "ownerMemberId": row["owner_member_id"],
        "ownerName": row["owner_name"],
        "assistantMemberId": row["assistant_member_id"],
        "assistantName": row["assistant_name"],
        "archived": bool(row["archived"]),
        "needsResponse": bool(row["needs_response"]),
        "paused": bool(row["paused"]),
        "muted": bool(row["muted"]),
        "isTest": bool(row["is_test"]),
        "isAnonymous": row["is_anonymous"],
        "messageCount": row["message_count"],
        "lastMessageAt": iso_utc(row["last_message_at"]),
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "metadata": None if metadata is None else orjson.loads(metadata),
    }


@router.get("", response_model=ChatPage)
async def list_chats(
    workspace_uuid: WorkspaceUuid,
    principal: Member,
    query: Filters,
    store: StoreDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="The page, from 1.")] = 1,
    page_size: Annotated[
        int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE, description=f"Chats a page, at most {MAX_PAGE_SIZE}.")
    ] = DEFAULT_PAGE_SIZE,
) -> JsonResponse:
    """Chats of the workspace, filtered, sorted and paginated."""
    rows, total = await run_in_threadpool(
        store.list_chats,
        org=principal.org,
        workspace_id=workspace_uuid,
        query=query,
        limit=page_size,
        offset=(page - 1) * page_size,
    )
    # Plain dicts straight to JSON (``ChatPage`` stays for the OpenAPI document): built as
    # models and validated again as the response, a page of 50 took 3.6 ms of the event
    # loop, about a tenth of a search's request.
    return JsonResponse({"items": [_chat(row) for row in rows], "total": total, "page": page, "pageSize": page_size})


def csv_stream(
    batches: Generator[pa.RecordBatch, None, None], *, writers: int = CSV_WRITERS
) -> Generator[bytes, None, None]:
    """An export's CSV: the header, then each batch's rows, in order.

    Up to ``writers`` batches are written at once, each by a thread of its own (Arrow's
    guard and writer run without the GIL), while the next batch is read from the store;
    at most ``writers`` batches' text is held. The largest workspace of scale M in
    process, ten pairs in a slow hour: the export with its CSV 257 -> 211 ms median.
    """
    yield (",".join(EXPORT_COLUMNS) + "\n").encode()
    pool = ThreadPoolExecutor(writers, thread_name_prefix="parley-csv")
    try:
        written: deque[Future[bytes]] = deque()
        for batch in batches:
            if batch.num_rows:
                written.append(pool.submit(_csv_rows, batch))
            if len(written) >= writers:
                yield written.popleft().result()
        while written:
            yield written.popleft().result()
    finally:
        # An abandoned stream (the client went away) waits for no batch still being written,
        # and closes the store's read at once.
        pool.shutdown(wait=False, cancel_futures=True)
        batches.close()


def _csv_rows(batch: pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(_guard_formulas(batch), buffer, CSV_OPTIONS)
    return buffer.getvalue()


def _guard_formulas(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with ' before each text value a spreadsheet would read as a formula.

    Here rather than in the stores' SQL: a column is copied only when one of its values
    needs the guard, where a CASE in the statement built every value again (the largest
    workspace of scale M, warm exports in process, four pairs: medians 136.7 to 149.3 ->
    126.3 to 141.8 ms).
    """
    columns = batch.columns
    for i in GUARDED_COLUMNS:
        column = columns[i]
        formula = pc.match_substring_regex(column, FORMULA_START)
        if pc.any(formula).as_py():
            quote, nothing = pa.scalar("'", column.type), pa.scalar("", column.type)
            columns[i] = pc.if_else(formula, pc.binary_join_element_wise(quote, column, nothing), column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


@router.get(
    "/export",
    response_class=ClosingStream,
    responses={200: {"content": {"text/csv": {}}, "description": "Every matching chat, as CSV"}},
)
async def export_chats(
    now: Now, workspace_uuid: WorkspaceUuid, principal: Member, query: Filters, store: StoreDep
) -> ClosingStream:
    """Every matching chat as CSV, streamed as the database produces the rows."""
    principal.require_scope("chats:read")
    # A generator: the store reads nothing until the response is streamed, from the threadpool.
    batches = store.export_chats(org=principal.org, workspace_id=workspace_uuid, query=query)
    day = now.date().isoformat()
    return ClosingStream(
        csv_stream(batches),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(f"chats-{workspace_uuid}-{day}.csv")},
    )


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download named ``filename``: as it is when it holds
    only letters, digits, ``.``, ``_`` and ``-`` (a UUID's workspace); else an ASCII
    stand-in, each other character ``_``, with the name itself percent-encoded in
    UTF-8 (RFC 6266). A workspace id may hold any character: a quote broke the header,
    one outside Latin-1 made it a 500, and CR LF would have ended it."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    if plain == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/needs-response", response_model=list[int])
async def needs_response(workspace_uuid: WorkspaceUuid, principal: Member, store: StoreDep) -> list[int]:
    """Ids of chats waiting for a reply: flagged, not archived, not muted (ascending)."""
    return await run_in_threadpool(
        store.needs_response, org=principal.org, workspace_id=workspace_uuid, owner_member_id=own_chats_only(principal)
    )


@router.get("/stats/daily-creation", response_model=DailyCreationStats)
async def daily_creation(
    now: Now,
    workspace_uuid: WorkspaceUuid,
    principal: Member,
    store: StoreDep,
    archived: Annotated[bool | None, Query(description="Absent means false.")] = None,
    is_test: Annotated[bool | None, Query(alias="isTest", description="Absent means false.")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone of the days; default UTC.")] = None,
) -> DailyCreationStats:
    """Chats created per day, by type, for the 30 days ending today."""
    zone = parse_tz(tz)
    span = series_range(
        None,
        None,
        start_name="",
        end_name="",
        granularity="daily",
        tz=zone,
        now=now,
        default_days=DAILY_CREATION_DAYS,
    )
    query = ChatQuery(
        owner_member_id=own_chats_only(principal),
        archived=False if archived is None else archived,
        is_test=False if is_test is None else is_test,
    )
    counts = await run_in_threadpool(
        store.daily_chat_creation,
        org=principal.org,
        workspace_id=workspace_uuid,
        query=query,
        tz=zone.key,
        start=span.start,
        end=span.end,
    )
    per_day: dict[Any, dict[str, int]] = {}
    for day, chat_type, count in counts:
        per_day.setdefault(day, {})[chat_type] = count
    stats = []
    for bucket in make_buckets(span, "daily", zone):
        by_type = {t: per_day.get(bucket.key, {}).get(t, 0) for t in CHAT_TYPES}
        stats.append(DailyCreation(date=bucket.key.isoformat(), count=sum(by_type.values()), **by_type))
    return DailyCreationStats(dailyStats=stats)


@router.get("/tool-call-names", response_model=list[str])
async def tool_call_names(workspace_uuid: WorkspaceUuid, principal: Member, store: StoreDep) -> list[str]:
    """Distinct tool names called in the visible chats, in code-point order."""
    return await run_in_threadpool(
        store.tool_call_names, org=principal.org, workspace_id=workspace_uuid, owner_member_id=own_chats_only(principal)
    )
