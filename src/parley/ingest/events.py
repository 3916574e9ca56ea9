"""The ingestion envelope and one schema per event type (contract section 2).

Validation turns a raw JSON object into an :class:`Event`: a checked envelope plus
a typed body. Times keep their offset here; storing turns them into naive UTC
(microseconds), which is what both storage engines keep.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypeAliasType

MAX_ID_CHARS = 256
MAX_OBSERVATION_COST_USD = 10**6


TIME_AS_TEXT = "a time is ISO-8601 text with an offset, such as 2024-05-01T10:00:00Z"


class _AsText:
    """A time only as text that begins with its date (``2024-05-``): a number or a string
    of digits (which pydantic would read as Unix seconds or milliseconds), or any other
    value, is refused with one reason, ``TIME_AS_TEXT``. The check is a pattern that
    pydantic-core runs before its parse: no Python call a value."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        text = core_schema.str_schema(strict=True, pattern=r"^\d{4}-")
        as_text = core_schema.custom_error_schema(
            text, custom_error_type="time_text", custom_error_message=TIME_AS_TEXT
        )
        return core_schema.chain_schema([as_text, handler(source)])

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """What the OpenAPI document shows: a date-time with an offset (RFC 3339)."""
        return {"type": "string", "format": "date-time", "examples": ["2024-05-01T10:00:00Z"]}


# Times keep their offset through validation and are turned into naive UTC a whole
# column at a time when stored (Arrow does it about ten times faster than a Python
# validator per value). The bounds keep every instant representable once in UTC.
Instant = Annotated[
    AwareDatetime,
    Field(ge=datetime.min.replace(tzinfo=UTC), le=datetime.max.replace(tzinfo=UTC)),
    _AsText(),
]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
# An org or a workspace is a segment of the API's URL paths (/api/v2/w/{workspace}/chats),
# which a '/' would split: its events were stored, and no request could ever read them.
NOT_A_PATH_SEGMENT = "may not hold '/': it is a segment of the API's URL paths"


def _path_segment(value: str) -> str:
    if "/" in value:
        raise PydanticCustomError("path_segment", NOT_A_PATH_SEGMENT)
    return value


WorkspaceId = Annotated[Id, AfterValidator(_path_segment)]
Name = Annotated[str, Field(max_length=1024)]
MAX_MEMBER_ID = 2**63 - 1
MemberId = Annotated[StrictInt, Field(ge=0, le=MAX_MEMBER_ID)]
Tokens = Annotated[StrictInt, Field(ge=0, le=2**62)]
# A free JSON value (chat metadata, a tool call's arguments) as orjson reads and writes it:
# no NaN or infinity, which pydantic's own JSON parser reads and orjson refuses (so a body
# holding one goes from ``validate_batch`` to orjson's way, a 400 as ever); an integer past
# 64 bits a float, as orjson reads it.
_JsonValue = TypeAliasType(
    "_JsonValue",
    StrictBool
    | Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | StrictStr
    | list["_JsonValue"]
    | dict[str, "_JsonValue"]
    | None,
)
MAX_JSON_LEVELS = 128  # as serde_json reads by default; orjson writes 254
TOO_DEEP = f"a JSON value may nest at most {MAX_JSON_LEVELS} levels of objects and arrays"


def _nests_at_most(value: Any, levels: int) -> bool:
    """Whether ``value`` nests objects and arrays at most ``levels`` deep (one, itself, if
    it is one); a scalar inside one costs no call."""
    if not isinstance(value, dict | list):
        return True
    if levels == 0:
        return False
    items = value.values() if isinstance(value, dict) else value
    return all(_nests_at_most(item, levels - 1) for item in items if isinstance(item, dict | list))


def _not_too_deep(value: Any) -> Any:
    """A free value nested deeper than ``MAX_JSON_LEVELS`` is refused with that reason,
    before it is validated: the store writes it with orjson, which stops at 254 levels (a
    request holding one that deep was a 500, its good events lost with it), and
    pydantic's own guard, at about 255, gives a reason for each kind a value may be."""
    if not _nests_at_most(value, MAX_JSON_LEVELS):
        raise PydanticCustomError("json_depth", TOO_DEEP)
    return value


JsonObject = Annotated[dict[str, _JsonValue], BeforeValidator(_not_too_deep)]
JsonValue = Annotated[_JsonValue, BeforeValidator(_not_too_deep)]

Role = Literal["superadmin", "admin", "controller", "curator", "basic"]
MemberKind = Literal["human", "assistant"]
ChatType = Literal["assignment", "manager", "dm", "testing"]
MessageRole = Literal["user", "assistant", "tool", "system"]
ObservationType = Literal["generation", "span", "event"]
Rating = Literal["positive", "negative"]


class Body(BaseModel):
    # Unknown body fields are ignored rather than rejected: platforms add fields
    # faster than analytics vendors do, and dropping an event for that loses data.
    model_config = ConfigDict(extra="ignore", frozen=True)


class WorkspaceUpsert(Body):
    workspace_id: WorkspaceId = Field(
        description="The workspace's id; no '/' (it is the {workspace_uuid} of the chats' paths)."
    )
    name: Name = Field(description="Its name; the newest upsert wins.")


class MemberUpsert(Body):
    workspace_id: WorkspaceId = Field(description="The member's workspace.")
    member_id: MemberId = Field(description="The member's id in the workspace, an integer.")
    name: Name = Field(description="Its name (a chat's ownerName, assistantName); the newest upsert wins.")
    kind: MemberKind = Field(description="human or assistant.")
    role: Role = Field(description="What the member's keys may read: superadmin, admin, controller, curator or basic.")
    scopes: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, description="Scopes the member has beyond its role's."
    )
    is_anonymous: StrictBool = Field(False, description="The member's chats are anonymous (isAnonymous).")


class AssistantUpsert(Body):
    assistant_id: Id = Field(description="The assistant's id, as its calls name it.")
    name: Name = Field(description="Its name in the calls by assistant.")
    workspace_id: WorkspaceId | None = Field(None, description="Its workspace, if any.")
    member_id: MemberId | None = Field(None, description="Its member id, if it is a member too.")


class UserUpsert(Body):
    user_id: Id = Field(description="The end user's id.")
    registered_at: Instant = Field(
        description="When the user signed up: cohorts count new users by it. The newest upsert wins."
    )
    name: Name | None = Field(None, description="The user's name.")


class ChatUpsert(Body):
    workspace_id: WorkspaceId = Field(description="The chat's workspace.")
    chat_id: MemberId = Field(description="The chat's id in the workspace, an integer.")
    owner_member_id: MemberId = Field(description="The member who owns the chat.")
    assistant_member_id: MemberId | None = Field(None, description="The assistant member of the chat, if any.")
    chat_type: ChatType = Field(description="assignment, manager, dm or testing.")
    channel: Annotated[str, Field(max_length=256)] = Field(
        description="Where the chat takes place, as the platform names it (web, slack...)."
    )
    title: str | None = Field(None, description="The chat's title.")
    metadata: JsonObject | None = Field(None, description="A JSON object: searched, and filtered by metadata.<key>.")
    archived: StrictBool = Field(False, description="Archived chats are listed only when asked for.")
    needs_response: StrictBool = Field(False, description="Waiting for a reply (needs-response).")
    paused: StrictBool = Field(False, description="Paused by the platform.")
    muted: StrictBool = Field(False, description="Muted chats are left out of needs-response.")
    is_test: StrictBool = Field(False, description="Test chats are listed only when asked for.")
    created_at: Instant = Field(description="When the chat was created.")


CHAT_UPDATE_FIELDS = (
    "title",
    "metadata",
    "archived",
    "needs_response",
    "paused",
    "muted",
    "is_test",
    "assistant_member_id",
)


class ChatUpdate(Body):
    """Sets only the fields it carries, at least one of them; a field carried as null is
    set to null. Of two updates of one field, the newer (by the envelope's timestamp) wins."""

    workspace_id: WorkspaceId = Field(description="The chat's workspace.")
    chat_id: MemberId = Field(description="The chat's id in the workspace, an integer.")
    title: str | None = Field(None, description="The chat's title.")
    metadata: JsonObject | None = Field(None, description="A JSON object: searched, and filtered by metadata.<key>.")
    archived: StrictBool | None = Field(None, description="Archived chats are listed only when asked for.")
    needs_response: StrictBool | None = Field(None, description="Waiting for a reply (needs-response).")
    paused: StrictBool | None = Field(None, description="Paused by the platform.")
    muted: StrictBool | None = Field(None, description="Muted chats are left out of needs-response.")
    is_test: StrictBool | None = Field(None, description="Test chats are listed only when asked for.")
    assistant_member_id: MemberId | None = Field(None, description="The assistant member of the chat, if any.")

    @model_validator(mode="after")
    def _at_least_one_field(self) -> ChatUpdate:
        if not self.model_fields_set.intersection(CHAT_UPDATE_FIELDS):
            raise ValueError(f"chat.update needs at least one of {', '.join(CHAT_UPDATE_FIELDS)}")
        return self


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="The tool's name (tool-call names).")
    arguments: JsonValue = Field(None, description="Any JSON value.")


class MessageCreate(Body):
    workspace_id: WorkspaceId = Field(description="The chat's workspace.")
    chat_id: MemberId = Field(description="The message's chat; it may come before the chat.")
    message_id: Id = Field(description="The message's id: another message with it is the same message, counted once.")
    role: MessageRole = Field(description="user, assistant, tool or system.")
    sender_member_id: MemberId | None = Field(None, description="The member who sent it (the memberId filter).")
    assistant_name: Name | None = Field(
        None, description="The assistant's name: the assistants usage counts assistant messages by it."
    )
    content: str | None = Field(None, description="The message's text, which the chats search reads.")
    tool_calls: list[ToolCall] | None = Field(None, description="The tools the message called.")
    created_at: Instant = Field(description="When it was sent (lastMessageAt; the usage's day).")


class CallCreate(Body):
    workspace_id: WorkspaceId = Field(description="The call's workspace.")
    call_id: Id = Field(description="The call's id.")
    assistant_id: Id = Field(description="The assistant that took the call.")
    assistant_name: Name | None = Field(
        None, description="Its name at the call, used when no assistant.upsert names it."
    )
    started_at: Instant = Field(description="When the call started: the ranges count calls by it.")
    ended_at: Instant | None = Field(None, description="When it ended; not before started_at.")
    duration_seconds: Annotated[float, Field(ge=0, le=10**9, allow_inf_nan=False)] | None = Field(
        None, description="When absent, ended_at - started_at; when both are absent, the call has no duration."
    )

    @model_validator(mode="after")
    def _ends_after_start(self) -> CallCreate:
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class SessionCreate(Body):
    session_id: Id = Field(description="The session's id.")
    user_id: Id = Field(description="The session's user, and that of its traces and feedback that name none.")
    mentor_id: Id | None = Field(
        None, description="The session's assistant (mentor_id), and that of its traces and feedback that name none."
    )
    started_at: Instant = Field(description="When the session started: its user is active then.")


class TraceCreate(Body):
    trace_id: Id = Field(description="The trace's id.")
    session_id: Id | None = Field(
        None, description="Its session, which gives it a user and mentor it lacks; it may come after the trace."
    )
    user_id: Id | None = Field(None, description="The trace's user, else its session's.")
    mentor_id: Id | None = Field(None, description="The trace's assistant, else its session's.")
    timestamp: Instant = Field(description="When it ran: its observations' cost counts on this day.")


class ObservationCreate(Body):
    observation_id: Id = Field(description="The observation's id.")
    trace_id: Id = Field(description="Its trace, whose user the cost counts for; it may come after the observation.")
    type: ObservationType = Field(description="generation, span or event.")
    model: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="The model, which prices the tokens when cost_usd is absent."
    )
    input_tokens: Tokens | None = Field(None, description="Input tokens.")
    output_tokens: Tokens | None = Field(None, description="Output tokens.")
    # Stored as integer pico-dollars (64 bits): a million dollars an observation fits with room.
    cost_usd: Annotated[float, Field(ge=0, le=MAX_OBSERVATION_COST_USD, allow_inf_nan=False)] | None = Field(
        None, description="Its cost in USD; when absent, the tokens at the model's price (0 for a model with no price)."
    )
    start_time: Instant = Field(description="When it started.")


class FeedbackCreate(Body):
    feedback_id: Id = Field(description="The feedback's id.")
    user_id: Id = Field(description="The user who gave it.")
    rating: Rating = Field(description="positive or negative.")
    mentor_id: Id | None = Field(None, description="The assistant rated, else its session's.")
    session_id: Id | None = Field(None, description="Its session.")
    comment: str | None = Field(None, description="The user's words.")
    created_at: Instant = Field(description="When it was given.")


BODY_SCHEMAS: dict[str, type[Body]] = {
    "workspace.upsert": WorkspaceUpsert,
    "member.upsert": MemberUpsert,
    "assistant.upsert": AssistantUpsert,
    "user.upsert": UserUpsert,
    "chat.upsert": ChatUpsert,
    "chat.update": ChatUpdate,
    "message.create": MessageCreate,
    "call.create": CallCreate,
    "session.create": SessionCreate,
    "trace.create": TraceCreate,
    "observation.create": ObservationCreate,
    "feedback.create": FeedbackCreate,
}
EVENT_TYPES = tuple(BODY_SCHEMAS)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Id
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    timestamp: Instant
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event of one org, ready to store."""

    org: str
    id: str
    type: str
    timestamp: datetime
    body: Body


class InvalidEvent(ValueError):
    """An event that cannot be stored, with the reason and, when known, its id."""

    def __init__(self, reason: str, event_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


def _describe(err: ValidationError, prefix: str) -> str:
    parts = []
    for item in err.errors(include_url=False):
        loc = ".".join(str(p) for p in item.get("loc", ()))
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def _typed_envelope(event_type: str, body: type[Body]) -> type[Envelope]:
    """``Envelope`` for one event type, its body validated by that type's schema, and the
    org the event may name, which its reader checks against the key's."""
    return create_model(
        f"{body.__name__}Event",
        __base__=Envelope,
        type=(Literal[event_type], ...),
        body=(body, ...),
        org=(Any, None),
    )


# One validation for a whole event, the envelope's type choosing the body's schema (a
# tagged union): about 1.4 times faster than the envelope and then its body, the same
# fields and checks. It only ever accepts: an event it refuses is validated again in the
# two steps, which decide and say why.
_TypedEvent = Annotated[
    functools.reduce(operator.or_, (_typed_envelope(t, body) for t, body in BODY_SCHEMAS.items())),
    Field(discriminator="type"),
]
_TYPED_EVENT: TypeAdapter[Any] = TypeAdapter(_TypedEvent)


class _Batch(BaseModel):
    """A request's body as pydantic-core reads it from its JSON. Its strings are not
    cached beyond the keys: ids and text rarely come twice."""

    model_config = ConfigDict(extra="ignore", cache_strings="keys")
    batch: list[_TypedEvent]


def _holds_instant(annotation: Any) -> bool:
    return annotation is AwareDatetime or any(_holds_instant(arg) for arg in get_args(annotation))


# The body's times, by event type.
INSTANT_FIELDS: dict[str, tuple[str, ...]] = {
    event_type: tuple(name for name, field in body.model_fields.items() if _holds_instant(field.annotation))
    for event_type, body in BODY_SCHEMAS.items()
}


def _hours_only(value: Any) -> bool:
    """A time whose offset is whole hours without minutes: ``...10:00:00+02``."""
    if not isinstance(value, str) or len(value) <= 10:  # not a date alone either
        return False
    return value[-3] in "+-" and value[-2:].isdigit() and value[-4].isdigit()


def with_offset_minutes(raw: dict[str, Any]) -> dict[str, Any] | None:
    """``raw`` with each of its times whose offset has no minutes (``+02``, as PostgreSQL
    prints a ``timestamptz``: ISO-8601, which pydantic reads only as ``+02:00`` or
    ``+0200``) given them (``+02:00``); None when it has no such time. Only the envelope's
    ``timestamp`` and the body's time fields are looked at, never other text."""
    fixed = None
    if _hours_only(raw.get("timestamp")):
        fixed = {**raw, "timestamp": raw["timestamp"] + ":00"}
    body, event_type = raw.get("body"), raw.get("type")
    if isinstance(body, dict) and isinstance(event_type, str):
        times = {name: body[name] + ":00" for name in INSTANT_FIELDS.get(event_type, ()) if _hours_only(body.get(name))}
        if times:
            fixed = {**(fixed or raw), "body": {**body, **times}}
    return fixed


def validate_event(raw: Any, org: str) -> Event:
    """Check one raw event and return it typed, or raise :class:`InvalidEvent`.

    Offsets without minutes are given them only for an event refused as it came, so that
    the events that need nothing pay nothing for it.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent("an event must be a JSON object")
    try:
        typed = _TYPED_EVENT.validate_python(raw)
    except ValidationError:
        fixed = with_offset_minutes(raw)
        if fixed is None:
            return validate_in_two_steps(raw, org)
        try:
            typed = _TYPED_EVENT.validate_python(fixed)
        except ValidationError:
            return validate_in_two_steps(fixed, org)
    return Event(org=org, id=typed.id, type=typed.type, timestamp=typed.timestamp, body=typed.body)


def validate_in_two_steps(raw: dict[str, Any], org: str) -> Event:
    """``validate_event`` the slower way, the envelope first and then its body, which gives
    the reasons events are refused for: the envelope's faults before the body's, the
    body's fields named ``body.<field>``."""
    event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as err:
        raise InvalidEvent(_describe(err, ""), event_id) from None
    try:
        body = BODY_SCHEMAS[envelope.type].model_validate(envelope.body)
    except ValidationError as err:
        raise InvalidEvent(_describe(err, "body"), event_id) from None
    return Event(org=org, id=envelope.id, type=envelope.type, timestamp=envelope.timestamp, body=body)


def validate_batch(body: bytes, org: str) -> list[Event] | None:
    """The events of a request's body (``{"batch": [...]}``) if each is good as it came and
    names no org but ``org``; else None, and the body goes orjson's way (its parse, then
    ``validate_event`` an event), which decides and says why.

    pydantic-core reads the JSON and validates it in one pass, where orjson built every
    event's objects for a validation to walk: 4.4 us an event against 4.7 to 4.8 (the
    bench's live mix, in process; 4.2 before free values' depth was checked), and HTTP
    ingest 3.8% quicker (the median of eleven pairs, before that check; benchmarks.md,
    "A request's body read in one pass").
    """
    try:
        typed = _Batch.model_validate_json(body).batch
    except ValidationError:
        return None
    events = []
    for event in typed:
        if event.org is not None and event.org != org:
            return None
        events.append(Event(org=org, id=event.id, type=event.type, timestamp=event.timestamp, body=event.body))
    return events
