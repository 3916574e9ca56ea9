"""Ingestion: validate each event, store the good ones together, report every outcome.

One bad event never costs its neighbours: validation is per event, and the store
isolates any event the engine itself refuses. Both the HTTP endpoint and the bulk
JSONL loader (``parley ingest``) come through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from parley.ingest.events import Event, InvalidEvent, validate_event
from parley.store.port import Store

STATUS_CREATED = 201
STATUS_DUPLICATE = 200  # already stored: a no-op, still a success


@dataclass
class BatchReport:
    successes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"successes": self.successes, "errors": self.errors}


def ingest_batch(store: Store, *, org: str, batch: Sequence[Any]) -> BatchReport:
    """Ingest one request's batch for ``org``; the report keeps the batch order."""
    report = BatchReport()
    valid: list[tuple[int, Event]] = []
    problems: dict[int, dict[str, Any]] = {}
    for index, raw in enumerate(batch):
        try:
            valid.append((index, validate_event(raw, org)))
        except InvalidEvent as err:
            problems[index] = {
                "id": err.event_id,
                "index": index,
                "status": 400,
                "message": err.reason,
            }
    outcome = store.ingest([event for _, event in valid])
    stored = set(outcome.stored)
    results: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    for index, event in valid:
        if event.id in outcome.failed:
            problems[index] = {
                "id": event.id,
                "index": index,
                "status": 500,
                "message": outcome.failed[event.id],
            }
            continue
        # Within one batch only the first copy of an id is the one stored.
        status = STATUS_CREATED if event.id in stored and event.id not in seen else STATUS_DUPLICATE
        seen.add(event.id)
        results[index] = {"id": event.id, "status": status}
    report.successes = [results[i] for i in sorted(results)]
    report.errors = [problems[i] for i in sorted(problems)]
    return report


@dataclass
class LinesReport:
    """What a chunk of a JSONL file came to; line numbers count from 1."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def merge(self, other: LinesReport) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"line": n, "message": m} for n, m in self.rejected],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinesReport:
        return cls(
            data["accepted"],
            data["duplicates"],
            [(item["line"], item["message"]) for item in data["rejected"]],
        )


def ingest_lines(store: Store, lines: Sequence[bytes], *, first_line: int, org: str | None) -> LinesReport:
    """Ingest JSONL lines: each line one envelope, with ``org`` from the line or ``org``."""
    report = LinesReport()
    events: list[tuple[int, Event]] = []
    for offset, line in enumerate(lines):
        line_no = first_line + offset
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError:
            report.rejected.append((line_no, "not a JSON object"))
            continue
        line_org = raw.get("org") if isinstance(raw, dict) else None
        if line_org is not None and org is not None and line_org != org:
            report.rejected.append((line_no, f"event is for org {line_org!r}, not --org {org!r}"))
            continue
        event_org = org or line_org
        if not isinstance(event_org, str) or not event_org:
            report.rejected.append((line_no, 'no org: pass --org or give each line an "org"'))
            continue
        try:
            events.append((line_no, validate_event(raw, event_org)))
        except InvalidEvent as err:
            report.rejected.append((line_no, err.reason))
    outcome = store.ingest([event for _, event in events])
    for line_no, event in events:
        if event.id in outcome.failed:
            report.rejected.append((line_no, outcome.failed[event.id]))
    report.accepted = len(outcome.stored)
    report.duplicates = len(outcome.duplicates)
    report.rejected.sort()
    return report
