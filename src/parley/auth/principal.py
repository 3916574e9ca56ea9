"""Who is calling: the API key turned into a Principal once per request, at the edge."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool

from parley.auth.keys import verify_key
from parley.errors import Forbidden, NotFound, Unauthorized
from parley.store.port import NotRemembered, Store

ALL_SCOPES = frozenset({"workspace_metrics:read", "chats:read", "chats:admin", "calls:read", "org_analytics:read"})
READER_SCOPES = frozenset({"workspace_metrics:read", "chats:read", "calls:read"})
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "superadmin": ALL_SCOPES,
    "admin": ALL_SCOPES,
    "controller": READER_SCOPES,
    "curator": READER_SCOPES,
    "basic": frozenset(),
}
ORG_ROLES = frozenset({"superadmin", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    org: str
    ingest: bool
    workspace_id: str | None = None
    member_id: int | None = None
    role: str | None = None  # None: the member is not known (yet) in the workspace
    scopes: frozenset[str] = frozenset()
    is_anonymous: bool = False

    def require_member(self) -> None:
        if self.ingest:
            raise Forbidden("an ingestion key may only call the ingestion endpoint")
        if self.role is None:
            raise Forbidden(f"member {self.member_id} is not known in workspace {self.workspace_id}")

    def require_scope(self, scope: str) -> None:
        self.require_member()
        if scope not in self.scopes:
            raise Forbidden(f"this key lacks the {scope} scope")

    def require_workspace(self, org: str | None, workspace_id: str) -> None:
        """404 for a workspace (or org) the key does not belong to: never reveal it exists."""
        if self.ingest or self.workspace_id != workspace_id or (org is not None and org != self.org):
            raise NotFound("workspace not found")


KEY_SCHEMES = ("bearer", "api-key")
HOW_TO_SEND = "send Authorization: Bearer <key>, Authorization: Api-Key <key> or X-API-Key: <key>"


def _presented_key(request: Request) -> str | None:
    """The key in ``Authorization`` (scheme Bearer or Api-Key), else in ``X-API-Key``.
    An ``Authorization`` of another scheme (a proxy's Basic credentials) leaves the key
    to ``X-API-Key``, and is refused with its own reason when there is none."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    ours = scheme.lower() in KEY_SCHEMES
    if ours and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    if scheme and not ours:
        raise Unauthorized(f"the Authorization header's scheme is not one Parley takes: {HOW_TO_SEND}")
    return None


def resolve_principal(store: Store, plain: str | None, *, remembered_only: bool = False) -> Principal:
    """The caller of key ``plain``; ``remembered_only``: from what the store remembers
    alone, without reading it, or raise ``NotRemembered``."""
    if not plain:
        raise Unauthorized(f"missing API key: {HOW_TO_SEND}")
    record = verify_key(store, plain, remembered_only=remembered_only)
    if record is None:
        raise Unauthorized("unknown API key")
    if record.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    if record.ingest:
        return Principal(key_id=record.key_id, org=record.org, ingest=True)
    assert record.workspace_id is not None and record.member_id is not None
    principal = Principal(
        key_id=record.key_id,
        org=record.org,
        ingest=False,
        workspace_id=record.workspace_id,
        member_id=record.member_id,
    )
    member = store.get_member(
        org=record.org, workspace_id=record.workspace_id, member_id=record.member_id, remembered_only=remembered_only
    )
    if member is None:
        return principal
    return replace(
        principal,
        role=member.role,
        scopes=ROLE_SCOPES.get(member.role, frozenset()) | frozenset(member.scopes),
        is_anonymous=member.is_anonymous,
    )


# The two ways of sending a key, declared for the OpenAPI document alone (so that /docs
# has an Authorize button and its "Try it out" sends the key): the key itself is read by
# _presented_key, which also takes the Api-Key scheme and passes over a proxy's Basic.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="`Authorization: Bearer <key>` (`Authorization: Api-Key <key>` works too)",
    auto_error=False,
)
X_API_KEY = APIKeyHeader(name="X-API-Key", scheme_name="x-api-key", auto_error=False)


async def get_store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


async def get_principal(
    request: Request,
    store: StoreDep,
    _bearer: Annotated[object, Security(BEARER)],
    _x_api_key: Annotated[object, Security(X_API_KEY)],
) -> Principal:
    """The caller, found on the event loop when the store remembers its key and member
    (every request after a key's first, until a member or key changes); else in the
    thread pool, since reading the store would hold up every other request. A crossing
    to the pool and back cost a request 1 to 2 ms of p50 under 4 clients at scale M
    (docs/benchmarks.md, "The principal found on the event loop")."""
    plain = _presented_key(request)
    try:
        return resolve_principal(store, plain, remembered_only=True)
    except NotRemembered:
        return await run_in_threadpool(resolve_principal, store, plain)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
