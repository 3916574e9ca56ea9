"""API keys: 256 random bits, shown once, stored as a hash, compared in constant time.

A key reads ``prl_<key_id>_<secret>``. The key id finds the record; the secret is
checked against its SHA-256 with ``hmac.compare_digest``. The secret is high
entropy, so a fast hash is enough (no password stretching is needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from parley.ingest.events import MAX_ID_CHARS, MAX_MEMBER_ID, NOT_A_PATH_SEGMENT
from parley.store.port import ApiKeyRecord, Store

PREFIX = "prl"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    store: Store,
    *,
    org: str,
    workspace_id: str | None = None,
    member_id: int | None = None,
    ingest: bool = False,
) -> str:
    """Create a key bound to a member or to an org's ingestion, and return it in plain."""
    if ingest and (workspace_id is not None or member_id is not None):
        raise ValueError("an ingestion key takes no workspace or member")
    if not ingest and (workspace_id is None or member_id is None):
        raise ValueError("a member key needs both a workspace and a member (or ask for --ingest)")
    # As events name them: a key no event could match would never let anyone in.
    if not org:
        raise ValueError("org must not be empty")
    if "/" in org:
        raise ValueError(f"org {NOT_A_PATH_SEGMENT}")
    if workspace_id is not None and not 1 <= len(workspace_id) <= MAX_ID_CHARS:
        raise ValueError(f"workspace must be 1 to {MAX_ID_CHARS} characters")
    if workspace_id is not None and "/" in workspace_id:
        raise ValueError(f"workspace {NOT_A_PATH_SEGMENT}")
    if member_id is not None and not 0 <= member_id <= MAX_MEMBER_ID:
        raise ValueError(f"member must be 0 to {MAX_MEMBER_ID}, as member events number them")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    store.create_api_key(
        ApiKeyRecord(
            key_id=key_id,
            secret_hash=_hash(secret),
            org=org,
            workspace_id=workspace_id,
            member_id=member_id,
            ingest=ingest,
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
    )
    return f"{PREFIX}_{key_id}_{secret}"


def key_id_of(key_or_id: str) -> str:
    """The id of a key given whole (``prl_<id>_<secret>``) or by its id alone, as
    ``parley keys list`` shows it."""
    prefix, _, rest = key_or_id.partition("_")
    return rest.partition("_")[0] if prefix == PREFIX else key_or_id


def revoke_key(store: Store, key_or_id: str) -> tuple[ApiKeyRecord, bool]:
    """Revoke a key, given whole or by its id: its record, and whether it was revoked
    already (then nothing changes)."""
    key_id, now = key_id_of(key_or_id), datetime.now(UTC).replace(tzinfo=None)
    record = store.revoke_api_key(key_id, now)
    if record is None:
        raise ValueError(f"no key has id {key_id!r}")
    return record, record.revoked_at != now


def verify_key(store: Store, plain: str, *, remembered_only: bool = False) -> ApiKeyRecord | None:
    """The key's record, or None when the key is malformed, unknown or wrong
    (``remembered_only``: see ``Store.find_api_key``)."""
    prefix, _, rest = plain.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret or len(plain) > 200:
        return None
    record = store.find_api_key(key_id, remembered_only=remembered_only)
    if record is None:
        # Compare anyway so that unknown ids and wrong secrets take the same time.
        hmac.compare_digest(_hash(secret), _hash(""))
        return None
    return record if hmac.compare_digest(_hash(secret), record.secret_hash) else None
