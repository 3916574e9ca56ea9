"""The dashboard: one page at ``/`` over the public API, and the caller's identity for it.

The page is plain HTML, CSS and JavaScript served from this package; it signs in
with an API key kept in the browser's session storage and calls the same endpoints
any client calls. ``GET /api/v2/me`` tells it what the key may see.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from parley.auth.principal import CurrentPrincipal
from parley.schemas import ErrorBody, error_responses

router = APIRouter()
STATIC = resources.files("parley.dashboard").joinpath("static")


class Me(BaseModel):
    org: str = Field(description="The key's org.")
    ingest: bool = Field(description="Whether it is an org ingestion key.")
    workspaceId: str | None = Field(description="The workspace the key acts in; null for an ingestion key.")
    memberId: int | None = Field(description="The member the key acts as; null for an ingestion key.")
    role: str | None = Field(description="That member's role; null until the member is known.")
    scopes: list[str] = Field(description="The scopes the key acts with: the role's and the member's own.")


@router.get("/api/v2/me", response_model=Me, tags=["meta"], responses=error_responses(ErrorBody, 401, 503))
async def me(principal: CurrentPrincipal) -> Me:
    """Who the key acts as: its org, workspace, member, role and effective scopes."""
    return Me(
        org=principal.org,
        ingest=principal.ingest,
        workspaceId=principal.workspace_id,
        memberId=principal.member_id,
        role=principal.role,
        scopes=sorted(principal.scopes),
    )


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(STATIC.joinpath("index.html").read_text())
