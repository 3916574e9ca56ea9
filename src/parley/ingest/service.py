"""Ingestion: validate each event, store the good ones together, report every outcome.

One bad event never costs its neighbours: validation is per event, and the store
isolates any event the engine itself refuses. Both the HTTP endpoint and the bulk
JSONL loader (``parley ingest``) come through here.
"""

from __future__ import annotations

import gc
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from parley.child_process import ended_with
from parley.ingest.events import NOT_A_PATH_SEGMENT, Event, InvalidEvent, validate_event
from parley.ingest.workers import WorkerPool
from parley.store.port import Store
from parley.store.schema import ColumnBatch, ColumnBatchBuilder, joined_batches

STATUS_CREATED = 201
STATUS_DUPLICATE = 200  # already stored: a no-op, still a success

# Python's cycle collector looks at the youngest objects every 700 new ones (its
# default), so the objects of a chunk being ingested (events, their bodies, the Arrow
# inputs) outlive two young collections and pile into the oldest generation, which then
# triggers full collections that walk every live object. Loading the largest org of
# scale M (4.14M events): 415 full collections, 43 to 48 s of 188 to 211. With young
# collections every 20,000 new objects a chunk mostly dies by reference counting first:
# 11 to 12 s of collecting in all, 150 to 169 s. Set for every command, the server too,
# and for the bulk loader's worker processes.
GC_YOUNG_THRESHOLD = 20_000


def collect_young_less_often(threshold: int = GC_YOUNG_THRESHOLD) -> None:
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


def _start_worker(loader: int) -> None:
    """A bulk load's worker leaves SIGINT and SIGTERM to its ``loader``, which stops the
    load through its clean-up (``parley.ingest.stop``), the workers' chunks stored: a
    terminal's Ctrl-C and ``timeout``'s SIGTERM reach the whole process group. (With the
    standard library's pool, a worker they ended could die while sending a chunk back,
    and the pool waited forever for the rest of it: 2 of 18 loads so stopped hung, with
    a SIGTERM to the group; see ``parley.ingest.workers``.) It ends with its loader
    (SIGKILL: it holds nothing to clean up): killed outright (SIGKILL, the OOM killer),
    the loader left its workers waiting forever for their next chunk, 70 to 200 MB each.
    And it collects its young objects less often."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end = ended_with(loader, signal.SIGKILL)
    if end is not None:
        end()
    collect_young_less_often()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector paused for a block whose objects die by reference counting.

    A bulk loader's worker builds a chunk's events, keeps them to the chunk's end and
    lets them all go: even every 20,000 new objects, its collections walked live events
    for nothing. The block's objects must die in it: the young generation's count grows
    while the collector is paused, so the first new object after the block starts a
    collection that walks every object still alive from it (a chunk's 20,000 events,
    31 to 48 ms in a worker, until ``prepare_lines`` let them go before its end). A chunk
    leaves little for the collector: no object for 20,000 good lines, 317 for 20,000
    refused ones, collected after the block.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class BatchReport:
    successes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"successes": self.successes, "errors": self.errors}


def _check_org(raw: Any, org: str) -> None:
    """An event may name its org, as a bulk line does; one naming another org than the
    key's is refused, as a line naming another than ``--org`` is, rather than stored in
    the key's org among another tenant's data."""
    named = raw.get("org") if isinstance(raw, dict) else None
    if named is not None and named != org:
        event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        raise InvalidEvent(f"event is for org {named!r}, not this key's org {org!r}", event_id)


def ingest_batch(store: Store, *, org: str, batch: Sequence[Any]) -> BatchReport:
    """Ingest one request's batch for ``org``; the report keeps the batch order."""
    valid: list[tuple[int, Event]] = []
    problems: dict[int, dict[str, Any]] = {}
    for index, raw in enumerate(batch):
        try:
            _check_org(raw, org)
            valid.append((index, validate_event(raw, org)))
        except InvalidEvent as err:
            problems[index] = {
                "id": err.event_id,
                "index": index,
                "status": 400,
                "message": err.reason,
            }
    return _stored(store, valid, problems)


def ingest_valid(store: Store, events: Sequence[Event]) -> BatchReport:
    """``ingest_batch`` of a batch whose every event is valid already (``validate_batch``)."""
    return _stored(store, list(enumerate(events)), {})


def _stored(store: Store, valid: list[tuple[int, Event]], problems: dict[int, dict[str, Any]]) -> BatchReport:
    """The report of a batch: its ``valid`` events (by their index) stored, and the
    ``problems`` of the others."""
    report = BatchReport()
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


@dataclass
class ValidatedLines:
    """A chunk of JSONL lines checked and not yet stored: its events by line number,
    and the lines rejected already."""

    events: list[tuple[int, Event]]
    rejected: list[tuple[int, str]]


def validate_lines(lines: Sequence[bytes], *, first_line: int, org: str | None) -> ValidatedLines:
    """Parse and validate JSONL lines: each line one envelope, with ``org`` from the line or ``org``."""
    events: list[tuple[int, Event]] = []
    rejected: list[tuple[int, str]] = []
    for offset, line in enumerate(lines):
        line_no = first_line + offset
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            rejected.append((line_no, f"not JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(raw, dict):
            rejected.append((line_no, "an event must be a JSON object"))
            continue
        line_org = raw.get("org")
        if line_org is not None and org is not None and line_org != org:
            rejected.append((line_no, f"event is for org {line_org!r}, not --org {org!r}"))
            continue
        event_org = org or line_org
        if not isinstance(event_org, str) or not event_org:
            rejected.append((line_no, 'no org: pass --org or give each line an "org"'))
            continue
        if "/" in event_org:
            rejected.append((line_no, f"org: {NOT_A_PATH_SEGMENT}"))
            continue
        try:
            events.append((line_no, validate_event(raw, event_org)))
        except InvalidEvent as err:
            rejected.append((line_no, err.reason))
    return ValidatedLines(events, rejected)


def store_lines(store: Store, chunk: ValidatedLines) -> LinesReport:
    """Store a validated chunk's events and report every line's outcome."""
    outcome = store.ingest([event for _, event in chunk.events])
    report = LinesReport(rejected=list(chunk.rejected))
    for line_no, event in chunk.events:
        if event.id in outcome.failed:
            report.rejected.append((line_no, outcome.failed[event.id]))
    report.accepted = len(outcome.stored)
    report.duplicates = len(outcome.duplicates)
    report.rejected.sort()
    return report


def ingest_lines(store: Store, lines: Sequence[bytes], *, first_line: int, org: str | None) -> LinesReport:
    """Ingest JSONL lines: each line one envelope, with ``org`` from the line or ``org``."""
    return store_lines(store, validate_lines(lines, first_line=first_line, org=org))


# Prepared chunks stored in one transaction by a bulk load (see ``ingest_chunks``). 4 made
# 1.5M-line loads 2.4 to 5.5% quicker than a chunk at a time, and the bench's scale M load
# 76,112 -> 85,513 and 87,122 events/s; 8 about 3% quicker again on those loads and 5 to 6%
# at scale M (90,849 and 86,391 against 83,561 and 83,256 in one session), for a loader up to
# 0.3 GB larger (0.07 at scale M) and a store file 3% larger in free blocks
# (docs/benchmarks.md, runs 39 to 45). 16 gained nothing more.
CHUNKS_STORED_TOGETHER = 8


class Chunk(NamedTuple):
    """Consecutive lines of a JSONL file; line numbers count from 1."""

    first_line: int
    lines: list[bytes]
    nbytes: int


@dataclass(frozen=True)
class PreparedLines:
    """A chunk validated and turned into the Arrow tables it is stored as (``batch`` is
    None when a value would not go into Arrow's types: the chunk then goes event by
    event, which sets that event apart)."""

    rejected: list[tuple[int, str]]
    batch: ColumnBatch | None


# Lines a bulk loader's worker checks, and builds the columns of, at a time: so built, a
# chunk's batch took 12.1 us an event against 13.8 in one part of 20,000 (benchmarks.md,
# "A chunk's columns built a part at a time"); parts of 2,000 and 4,000 within the rounds'
# spread of it, of 250 and 500 slower.
PART_LINES = 1_000


def prepare_lines(
    lines: Sequence[bytes], *, first_line: int, org: str | None, part_lines: int = PART_LINES
) -> PreparedLines:
    """Validate a chunk's lines and build its ``ColumnBatch`` (run in a worker process),
    ``part_lines`` at a time (see ``ColumnBatchBuilder``)."""
    rejected: list[tuple[int, str]] = []
    builder: ColumnBatchBuilder | None = ColumnBatchBuilder()
    with collector_paused():
        for start in range(0, len(lines), part_lines):
            checked = validate_lines(lines[start : start + part_lines], first_line=first_line + start, org=org)
            rejected += checked.rejected
            if builder is not None:
                try:
                    builder.add(event for _, event in checked.events)
                except (pa.ArrowException, OverflowError):
                    builder = None
            # The events die here, while the collector is paused: alive at the block's
            # end, they would all be walked by the collection that its first new object
            # starts.
            checked.events.clear()
        return PreparedLines(rejected, None if builder is None else builder.build())


def store_prepared(store: Store, chunk: Chunk, prepared: PreparedLines, *, org: str | None) -> LinesReport:
    """Store a prepared chunk by plain inserts; if the store takes none of it (an event or
    entity stored already, a row the engine refuses), ingest its lines one event at a
    time, which finds out which."""
    if prepared.batch is not None and store.ingest_columns(prepared.batch) is not None:
        return _columns_report(prepared.batch, prepared.rejected)
    return ingest_lines(store, chunk.lines, first_line=chunk.first_line, org=org)


def _columns_report(batch: ColumnBatch, rejected: list[tuple[int, str]]) -> LinesReport:
    return LinesReport(len(batch.keys), batch.repeated, sorted(rejected))


def store_prepared_together(
    store: Store, group: Sequence[tuple[Chunk, PreparedLines]], *, org: str | None
) -> Iterator[tuple[Chunk, LinesReport]]:
    """Store prepared chunks in order: in one transaction, as one batch, if the store takes
    them all so (a transaction's statements and commit cost about as much for a few
    chunks as for one, but for their rows and keys); else each by ``store_prepared``."""
    batches = [prepared.batch for _, prepared in group if prepared.batch is not None]
    if 1 < len(group) == len(batches):
        joined = joined_batches(batches)
        if joined is not None and store.ingest_columns(joined) is not None:
            for (chunk, prepared), batch in zip(group, batches, strict=True):
                yield chunk, _columns_report(batch, prepared.rejected)
            return
    for chunk, prepared in group:
        yield chunk, store_prepared(store, chunk, prepared, org=org)


def ingest_chunks(
    store: Store,
    chunks: Iterable[Chunk],
    *,
    org: str | None,
    workers: int | None = None,
    together: int = CHUNKS_STORED_TOGETHER,
) -> Iterator[tuple[Chunk, LinesReport]]:
    """Ingest chunks in order, yielding each with its report once it is stored.

    Validating events and building their Arrow tables is Python, held to one core by the
    GIL, and was about 60% of a bulk load. From the second chunk on, that is done in
    ``workers`` processes (default: one per core), up to two groups of chunks ahead,
    while this process stores the chunks in file order, ``together`` at a time (see
    ``store_prepared_together``), so the file's first copy of an event or entity is the
    one stored, as when loading one chunk at a time. A load of one chunk starts no
    process. (The workers are spawned, so they import the caller's main module: a script
    that calls this needs the usual ``if __name__ == "__main__":`` guard.) The store runs
    the whole load in its ``bulk_load`` context.
    """
    with store.bulk_load():
        yield from _ingest_chunks(store, chunks, org=org, workers=workers, together=together)


def _ingest_chunks(
    store: Store, chunks: Iterable[Chunk], *, org: str | None, workers: int | None, together: int
) -> Iterator[tuple[Chunk, LinesReport]]:
    iterator = iter(chunks)
    first = next(iterator, None)
    second = next(iterator, None)
    if first is None or second is None:
        if first is not None:
            yield first, ingest_lines(store, first.lines, first_line=first.first_line, org=org)
        return
    workers = workers or os.cpu_count() or 1
    pending: deque[tuple[Chunk, Future[PreparedLines]]] = deque()
    with WorkerPool(workers, prepare_lines, initializer=_start_worker, initargs=(os.getpid(),)) as pool:

        def submit(chunk: Chunk) -> None:
            pending.append((chunk, pool.submit(chunk.lines, first_line=chunk.first_line, org=org)))

        def store_next() -> Iterator[tuple[Chunk, LinesReport]]:
            group = [pending.popleft() for _ in range(min(together, len(pending)))]
            return store_prepared_together(store, [(chunk, future.result()) for chunk, future in group], org=org)

        submit(second)
        # The first chunk is stored here while the workers start.
        yield first, ingest_lines(store, first.lines, first_line=first.first_line, org=org)
        for chunk in iterator:
            submit(chunk)
            if len(pending) >= max(2 * together, workers + 1):
                yield from store_next()
        while pending:
            yield from store_next()
