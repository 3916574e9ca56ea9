"""The ``parley`` command: serve | ingest | keys | demo."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import io
import itertools
import logging
import signal
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from pydantic import ValidationError

from parley.admin import ChannelError, KeyInfo, Operator, operator
from parley.ingest.service import Chunk, LinesReport, collect_young_less_often
from parley.ingest.stop import LoadStop
from parley.ingest.workers import WorkerDied
from parley.logs import log_parley_at
from parley.settings import Settings
from parley.store.port import StoreLocked, StoreUnavailable

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Parley: analytics for AI-assistant platforms.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

CHUNK_LINES = 20_000
MAX_REPORTED_LINES = 50


@app.callback()
def _every_command() -> None:
    collect_young_less_often()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        # One line per bad variable, named as it is set, rather than a traceback.
        _fail(
            "; ".join(
                f"PARLEY_{'_'.join(map(str, error['loc'])).upper()}={error['input']!r}: {error['msg']}"
                for error in err.errors()
            )
        )
        raise  # not reached: _fail exits


@functools.cache
def _stderr() -> Console:
    """Where errors and progress go. rich is imported on first use: the server imports this
    module and never writes here (about 50 ms of CPU at each start)."""
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str) -> None:
    from rich.markup import escape

    # Escaped: a path or a reason may hold brackets ("[/b]" failed as markup), and one
    # line, unwrapped, whatever the terminal's width.
    _stderr().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


class _ConsoleLines(logging.Handler):
    """Parley's own lines on the command's console, as ``parley serve`` prints them
    (``WARNING:  parley.store: ...``), above the progress bar rather than through it."""

    LEVEL_STYLES = {"DEBUG": "cyan", "INFO": "green", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        try:
            prefix = f"{record.levelname}:"
            line = Text(f"{prefix:<9} {record.name}: {self.format(record)}")
            line.stylize(self.LEVEL_STYLES.get(record.levelname, ""), 0, len(record.levelname))
            _stderr().print(line, highlight=False, soft_wrap=True)
        except Exception:  # logging's own contract: report a failure to print, never raise
            self.handleError(record)


@contextlib.contextmanager
def _operator(settings: Settings) -> Iterator[Operator]:
    log_parley_at(settings.log_level, _ConsoleLines())
    try:
        with operator(settings) as op:
            yield op
    except (ChannelError, StoreUnavailable, ValueError) as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the API (and the operator's local channel) over the configured store."""
    from parley.server import run_server

    settings = _settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    try:
        asyncio.run(run_server(settings))
    except (ChannelError, StoreLocked, StoreUnavailable, ValueError) as exc:
        _fail(str(exc))


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="The org the key belongs to.")],
    ingest: Annotated[bool, typer.Option("--ingest", help="An org ingestion key.")] = False,
    workspace: Annotated[str | None, typer.Option(help="The member's workspace id.")] = None,
    member: Annotated[int | None, typer.Option(help="The member id the key acts as.")] = None,
) -> None:
    """Create an API key; the key alone is printed on the last line, shown only this once."""
    with _operator(_settings()) as op:
        key = op.create_key(org=org, workspace=workspace, member=member, ingest=ingest)
    kind = "an ingestion key" if ingest else f"a key for member {member} of workspace {workspace}"
    typer.echo(f"Created {kind} in org {org}. Store it now: it is not shown again.")
    typer.echo(key)


def _holder(key: KeyInfo) -> str:
    if key.ingest:
        return f"ingestion in org {key.org}"
    return f"member {key.member_id} of workspace {key.workspace_id} in org {key.org}"


def _utc(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Option(help="Only this org's keys.")] = None,
) -> None:
    """List the keys, oldest first, with what each acts as and when it was revoked (never their secrets)."""
    with _operator(_settings()) as op:
        keys = [key for key in op.list_keys() if org is None or key.org == org]
    rows = [("KEY ID", "ORG", "WORKSPACE", "MEMBER", "CREATED", "REVOKED")] + [
        (
            key.key_id,
            key.org,
            "-" if key.workspace_id is None else key.workspace_id,
            "ingest" if key.ingest else str(key.member_id),
            _utc(key.created_at),
            _utc(key.revoked_at),
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, whole or by its id (as `parley keys list` shows it).")],
) -> None:
    """Revoke a key: from now on it is refused (401) everywhere. Revoking it again changes nothing."""
    with _operator(_settings()) as op:
        revoked = op.revoke_key(key)
    done = revoked.key
    if revoked.already:
        typer.echo(f"Key {done.key_id} ({_holder(done)}) was already revoked at {_utc(done.revoked_at)}.")
    else:
        typer.echo(f"Revoked key {done.key_id} ({_holder(done)}) at {_utc(done.revoked_at)}.")


def _batched(lines: Iterable[bytes], size: int) -> Iterator[Chunk]:
    iterator, first = iter(lines), 1
    while batch := list(itertools.islice(iterator, size)):
        yield Chunk(first, batch, sum(map(len, batch)))
        first += len(batch)


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


STDIN = Path("-")


@dataclass
class JsonlFile:
    """A JSONL file's lines (``-``: standard input's): gzip-compressed or not, told by
    its first two bytes, and with a UTF-8 byte order mark at its start skipped (as files
    saved by Windows tools begin). A file that cannot be read to its end (a gzip stream
    cut short or damaged) ends its lines there and leaves the reason in ``error``, so
    what came before it still loads."""

    path: Path
    compressed: bool = field(init=False)
    error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        with self._open() as handle:
            self.compressed = handle.peek(2)[:2] == GZIP_MAGIC

    @property
    def name(self) -> str:
        return "standard input" if self.path == STDIN else str(self.path)

    @property
    def size(self) -> int | None:
        """How many bytes of lines there are, when that is known beforehand."""
        return None if self.compressed or self.path == STDIN else self.path.stat().st_size

    def _open(self) -> contextlib.AbstractContextManager[io.BufferedReader]:
        if self.path == STDIN:
            return contextlib.nullcontext(sys.stdin.buffer)  # type: ignore[arg-type]  # left open
        return self.path.open("rb")

    def lines(self) -> Iterator[bytes]:
        with self._open() as raw, gzip.open(raw) if self.compressed else raw as handle:
            try:
                yield handle.readline().removeprefix(UTF8_BOM)
                yield from handle
            except (OSError, EOFError, zlib.error) as exc:
                self.error = str(exc)


def _event_lines(events: Iterable[dict]) -> Iterator[bytes]:
    return (orjson.dumps(event) for event in events)


@dataclass
class Load:
    """How a bulk load went: its report, the last line stored (each chunk is reported once
    it is stored, so every line up to it is), the death of a worker process, and why the
    store failed, if they did."""

    report: LinesReport = field(default_factory=LinesReport)
    last_line: int = 0
    worker_died: WorkerDied | None = None
    failure: str | None = None


def load_chunks(
    op: Operator, chunks: Iterable[Chunk], *, org: str | None, total_bytes: int | None, stop: LoadStop
) -> Load:
    """Send chunks of lines to the store (directly or through the server), with progress,
    until ``stop`` ends the reading, a worker dies, or the store or the server fails, then
    have the store lay out in time order what came out of it (unless it failed)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    load = Load()
    progress = Progress(
        TextColumn("[bold]ingest[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[events]} events"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_stderr(),
    )
    with progress:
        task = progress.add_task("ingest", total=total_bytes, events=0)
        try:
            for chunk, report in op.ingest_chunks(stop.feed(chunks), org=org):
                load.report.merge(report)
                load.last_line = chunk.first_line + len(chunk.lines) - 1
                progress.update(task, advance=chunk.nbytes, events=load.report.accepted + load.report.duplicates)
        except WorkerDied as died:
            if not stop.broke():
                load.worker_died = died
        except (StoreUnavailable, ChannelError) as err:  # the store cannot write; the server stopped
            load.failure = str(err)
    if load.failure is None:
        op.reorder()
    return load


def _report_cut_short(stop: LoadStop, load: Load, *, unit: str, again: str) -> None:
    """For a load cut short, by the store's failure, a worker's death or a signal, say how far
    it got and exit: as the signal asked (128 plus its number), else 1. Nothing for a load
    that ended."""
    if load.failure is not None:
        cause, code = f"error: {load.failure}; stopped", 1
    elif load.worker_died is not None:
        died = load.worker_died
        likely = " (the OOM killer's, or kill -9)" if died.exitcode == -signal.SIGKILL else ""
        cause, code = f"stopped: {died}{likely}", 1
    elif stop.cut_short:
        assert stop.signum is not None  # cut short by a signal
        cause, code = f"stopped by {signal.Signals(stop.signum).name}", 128 + stop.signum
    else:
        return
    reached = f"before any {unit} was stored"
    if load.last_line:
        reached = f"after {unit} {load.last_line}, every {unit} up to it stored"
    _stderr().print(f"{cause} {reached} (as reported); {again}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_report(report: LinesReport) -> None:
    for line_no, message in report.rejected[:MAX_REPORTED_LINES]:
        _stderr().print(f"line {line_no}: {message}", markup=False, highlight=False, soft_wrap=True)
    if len(report.rejected) > MAX_REPORTED_LINES:
        _stderr().print(f"... and {len(report.rejected) - MAX_REPORTED_LINES} more rejected lines")
    typer.echo(f"accepted {report.accepted}, duplicates {report.duplicates}, rejected {len(report.rejected)}")


@app.command()
def ingest(
    file: Annotated[
        Path,
        typer.Argument(help="A JSONL file of events, or one compressed with gzip; - for standard input."),
    ],
    org: Annotated[str | None, typer.Option(help='The org of every event (else each line\'s "org").')] = None,
) -> None:
    """Bulk-load events, one ingestion envelope per line; bad lines are reported, not fatal."""
    # Checked here: Typer's own check (exists=True, allow_dash=True) refuses "-" too.
    if file != STDIN and not file.is_file():
        reason = "is a directory" if file.is_dir() else "does not exist"
        raise typer.BadParameter(f"file {str(file)!r} {reason}.", param_hint="'FILE'")
    source = JsonlFile(file)
    with LoadStop.installed() as stop, _operator(_settings()) as op:
        load = load_chunks(op, _batched(source.lines(), CHUNK_LINES), org=org, total_bytes=source.size, stop=stop)
    _print_report(load.report)
    _report_cut_short(stop, load, unit="line", again="loading the same lines again adds the rest")
    if source.error is not None:
        reason = f"could not be read to its end ({source.error})"
        _fail(f"{source.name} {reason}; the lines before it were loaded, as reported")
    if load.report.rejected:
        raise typer.Exit(2)


def write_jsonl(events: Iterable[dict], path: Path) -> int:
    count = 0
    with path.open("wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event) + b"\n")
            count += 1
    return count


@app.command()
def demo(
    scale: Annotated[str, typer.Option(help="Data set size: demo, S or M.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same events.")] = 7,
    end: Annotated[
        str | None,
        typer.Option(help="Last instant of the data (ISO-8601 with offset); default now."),
    ] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option(help="Write the events to this JSONL file instead of loading them."),
    ] = None,
) -> None:
    """Fill the store with a realistic generated data set and print keys to try it with."""
    from parley.demo import SCALES, generate, workspaces

    if scale not in SCALES:
        _fail(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    end_at = datetime.now(UTC)
    if end is not None:
        try:
            end_at = datetime.fromisoformat(end)
        except ValueError:
            _fail(f"--end: {end!r} is not an ISO-8601 datetime")
        if end_at.tzinfo is None:
            _fail("--end needs an offset (Z or +02:00)")
    events = generate(SCALES[scale], seed=seed, end=end_at)
    if jsonl is not None:
        count = write_jsonl(events, jsonl)
        typer.echo(f"wrote {count} events to {jsonl}")
        return
    settings = _settings()
    with LoadStop.installed() as stop, _operator(settings) as op:
        chunks = _batched(_event_lines(events), CHUNK_LINES)
        load = load_chunks(op, chunks, org=None, total_bytes=None, stop=stop)
        _print_report(load.report)
        again = f"parley demo --scale {scale} --seed {seed} --end {end_at.isoformat()} adds the rest"
        _report_cut_short(stop, load, unit="event", again=again)
        sample = workspaces(SCALES[scale], seed)
        first = sample[0]
        ingest_key = op.create_key(org=first.org, workspace=None, member=None, ingest=True)
        admin_key = op.create_key(
            org=first.org, workspace=first.workspace_id, member=first.admin_member_id, ingest=False
        )
        basic_key = op.create_key(
            org=first.org, workspace=first.workspace_id, member=first.basic_member_id, ingest=False
        )
        serving = op.api_url
    _print_walkthrough(serving, settings, first.org, first.workspace_id, ingest_key, admin_key, basic_key, end_at)


@app.command()
def bench(
    scale: Annotated[
        str,
        typer.Option(
            help="Data set size: S (about 100k messages), M (10M messages) or export (one workspace of 1M chats)."
        ),
    ] = "S",
    store: Annotated[
        str | None, typer.Option(help="Database URL of a fresh store to fill (default: a temporary DuckDB file).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results to this JSON file.")] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            help="Warm requests an endpoint and range, 4 clients at a time: at least 4 (default 52; "
            "the issue's figures take 50 or more).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate a data set, load it, and measure ingest, every read endpoint, export and start-up."""
    from rich.console import Console

    from parley.bench import run_bench
    from parley.bench_report import print_report

    try:
        result = run_bench(scale, store, warm_requests=requests)
    except (RuntimeError, ValueError) as exc:
        _fail(str(exc))
    print_report(result, Console())
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2))


def _print_walkthrough(
    serving: str | None,
    settings: Settings,
    org: str,
    workspace_id: str,
    ingest_key: str,
    admin_key: str,
    basic_key: str,
    end: datetime,
) -> None:
    """The keys, and a curl for each endpoint of the server that took the data
    (``serving``), else of the one ``parley serve`` would start; the ranges are the
    data's last 30 days (UTC)."""
    from parley.demo import user_id

    base = serving or settings.api_url
    start = "The server that took the data serves it now:" if serving else "Start the server with `parley serve`, then"
    chats = f"{base}/api/v2/w/{workspace_id}/chats"
    last = end.astimezone(UTC).date()
    first = last - timedelta(days=29)
    dates = f"start_date={first}&end_date={last}"
    analytics = f"{base}/api/ai-analytics/orgs/{org}/users"
    day, at = "2024-05-01", "2024-05-01T10:00:00Z"  # the sample call's (the README's too)
    call = {
        "workspace_id": workspace_id,
        "call_id": "try-1",
        "assistant_id": "try-bot",
        "assistant_name": "Try Bot",
        "started_at": at,
        "duration_seconds": 90,
    }
    event = {"id": "try-1", "type": "call.create", "timestamp": at, "body": call}
    sample = orjson.dumps({"batch": [event]}).decode()
    typer.echo(
        f"""
Demo data loaded. Workspace {workspace_id} of org {org}; its last 30 days: FROM={first} TO={last}.
  admin member key:  {admin_key}
  basic member key:  {basic_key}
  ingestion key:     {ingest_key}

{start} open the dashboard at {base}/ and paste the admin key,
or try:
  curl -s -H "Authorization: Bearer {admin_key}" {base}/analytics/calls/by-assistant
  curl -s -H "Authorization: Bearer {basic_key}" {base}/analytics/calls/by-assistant
  curl -s -H "Authorization: Bearer {admin_key}" "{chats}?pageSize=5"
  curl -s -H "Authorization: Bearer {admin_key}" {chats}/export -o chats.csv
  curl -s -H "Authorization: Bearer {admin_key}" {chats}/needs-response
  curl -s -H "Authorization: Bearer {admin_key}" "{chats}/stats/daily-creation?tz=Europe/Berlin"
  curl -s -H "Authorization: Bearer {admin_key}" {chats}/tool-call-names
  curl -s -H "Authorization: Bearer {admin_key}" \\
       "{base}/api/v2/org/{org}/workspace/{workspace_id}/metrics/assistants_usage?from_date={first}&to_date={last}"
  curl -s -H "Authorization: Bearer {admin_key}" "{analytics}/me/user-cohorts-over-time/?{dates}&aggregation=weekly"
  curl -s -H "Authorization: Bearer {admin_key}" "{analytics}/{user_id(1)}/user-cost/?{dates}"
  curl -s -H "Authorization: Bearer {admin_key}" "{analytics}/me/user-feedback/?{dates}&aggregation=daily"
  curl -s -X POST -H "Authorization: Bearer {ingest_key}" -H "Content-Type: application/json" \\
       -d '{sample}' \\
       {base}/api/v2/ingest
and see its call counted on its day:
  curl -s -H "Authorization: Bearer {admin_key}" "{base}/analytics/calls/by-assistant?start_date={day}&end_date={day}"
API documentation: {base}/docs"""
    )
