"""``parley bench``: generate a data set, load it, and measure every path a user waits on.

Everything runs for real: the CLI loads the JSONL file, a ``parley serve``
subprocess answers HTTP on loopback, and four client threads drive it. Timings are
medians and 95th percentiles; no number here is asserted, only reported.

Two slices of the data set's newest events, its last days across every org, are held back
from the bulk load and sent over HTTP as the orgs' platforms would stream them: the older
one while a reader per endpoint polls the dashboards (reads while the store writes and
checkpoints), then the newer one alone (HTTP ingest's throughput).
"""

from __future__ import annotations

import gc
import heapq
import importlib.metadata
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from parley.child_process import ended_with, stop
from parley.demo import SCALES, generate, workspaces
from parley.ingest.service import collector_paused
from parley.store.port import open_store
from parley.store.urls import parse_database_url
from parley.tcp_ports import PORT_ATTEMPTS, PORT_TAKEN, free_port, listens

CLIENTS = 4
# Warm requests an endpoint and range (the issue asks for 50 or more), unless ``--requests``
# says otherwise: CI's smoke run, which asserts no timing, takes 12.
WARM_REQUESTS = 52
# The export is measured first from a fresh server (its peak RSS from idle), then this many
# times more on the same server, whose median is steadier than one export (about 80 ms at
# scale M).
WARM_EXPORTS = 5
HTTP_BATCH = 1_000
STARTUP_TIMEOUT_S = 120
# The most lines of its output a server that ended before its first answer is said with.
SAID_LINES = 20
# Reads while ingesting: each endpoint's reader waits this long between its requests, like a
# dashboard's panel that polls, so that the readers share the machine with the writes
# rather than starve them.
READ_PAUSE_S = 0.25
# The events sent while the readers poll: five batches a client, enough for every reader to
# poll while the writes go on. On DuckDB at scales M and export, enough for its write-ahead
# log to pass its checkpoint threshold (256 MB) more than once, a checkpoint every 15 to 20 s
# at about 30,000 events/s: the smaller scales would write tens of megabytes of log at most
# and meet no checkpoint anyway, and ClickHouse has none to meet. (On chdb at scale M the ten
# readers take most of the machine: 846 events/s went in beside them, against 8,655 alone, on
# 2026-12-03, and 1,500,000 events would take half an hour. At scale S, 90,000 events took
# 200 s of chdb's 6-minute run in CI.)
EVENTS_WHILE_READ = HTTP_BATCH * CLIENTS * 5
EVENTS_THROUGH_CHECKPOINTS = {"M": 1_500_000, "export": 1_500_000}
# A checkpoint of the DuckDB store (``DuckDBStore._checkpoint``) as ``parley serve`` and
# ``parley ingest`` print it: ``checkpoint`` as the log passes its threshold, ``closing`` as
# the store closes (a server's is outside every phase, a bulk load's inside it).
CHECKPOINT_LINE = re.compile(
    r"parley\.store: (checkpoint|closing): [0-9.]+ MB of write-ahead log written into the store in ([0-9.]+) s"
)
# The rows a bulk load put in their order as it ended (``DuckDBStore.reorder``), as
# ``parley ingest`` prints it.
REORDER_LINE = re.compile(r"parley\.store: reorder: [0-9]+ rows of .+ rewritten in their order in ([0-9.]+) s")


@dataclass
class BenchResult:
    scale: str
    store: str
    machine: dict[str, Any]
    events: int = 0
    bulk_ingest: dict[str, float] = field(default_factory=dict)
    http_ingest: dict[str, float] = field(default_factory=dict)
    while_ingesting: dict[str, Any] = field(default_factory=dict)
    reads: list[dict[str, Any]] = field(default_factory=list)
    export: dict[str, float] = field(default_factory=dict)
    store_bytes: int = 0
    startup_s: float = 0.0
    warm_requests: int = WARM_REQUESTS

    def as_json(self) -> dict[str, Any]:
        return self.__dict__


def _proc_field(path: str, name: str) -> str | None:
    """A ``name: value`` line's value from a /proc file, or None."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _largest_cache() -> str | None:
    """The size of the first CPU's largest cache as sysfs gives it (``32768K``), or None.

    The same code measured about twice apart on two machines of "2 cores" whose model
    names alone were a cloud's "AMD EPYC" and "Intel Xeon Processor" (32 MiB and 480 MiB
    of L3; docs/benchmarks.md, "The machine"): a run's figures need its machine.
    """
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes: dict[int, str] = {}
    for index in caches.glob("index*"):
        try:
            sizes[int((index / "level").read_text())] = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
    return sizes[max(sizes)] if sizes else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What a run's figures depend on besides the code: the machine and the engines."""
    memory = _proc_field("/proc/meminfo", "MemTotal")
    memory_kb = int(memory.split()[0]) if memory else 0
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "cache": _largest_cache(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
        "libraries": {package: _version(package) for package in ("duckdb", "chdb", "pyarrow")},
    }


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env["PARLEY_DATABASE_URL"] = database_url
    return env


def _cli(database_url: str, *args: str) -> str:
    return _cli_run(database_url, *args).stdout


def _cli_run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - our own CLI, with our own arguments
        [sys.executable, "-m", "parley", *args],
        env=_env(database_url),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=ended_with(os.getpid()),
    )
    if done.returncode not in (0, 2):
        raise RuntimeError(f"parley {' '.join(args)} failed:\n{done.stderr}")
    return done


# The bench's ``parley serve`` processes running, for a SIGTERM's clean-up to stop first.
_SERVING: set[subprocess.Popen[bytes]] = set()


def _read_probe(url: str, headers: dict[str, str]) -> Callable[[str], bool]:
    """A probe for ``_server``: whether a server answers the read at ``url`` with 200.

    A server that refuses it (a 4xx) is up and will go on refusing: said at once, with the
    server's reason, where the probe used to wait out the start-up time-out and report no
    answer (its admin's member unknown to a store that had loaded no event, 2026-12-03).
    """

    def probe(base: str) -> bool:
        response = httpx.get(base + url, headers=headers, timeout=30)
        if 400 <= response.status_code < 500:
            raise RuntimeError(f"parley serve refused the bench's first read ({response.status_code}): {response.text}")
        return response.status_code == 200

    return probe


@contextmanager
def _server(
    database_url: str, probe: Callable[[str], bool], output: Path | None = None
) -> Iterator[tuple[str, int, float]]:
    """A running ``parley serve``: (base URL, pid, seconds from start to the first good answer).

    Its output goes to the file ``output`` (see ``_checkpoints``), or to a temporary one: a
    server that ends before its first answer is said with the last lines it printed (a
    store held by another process, say), where the bench said only its exit status.

    Its port is free when chosen, not when bound (see ``parley.tcp_ports``): a server whose
    port another process took first is started again on another, up to ``PORT_ATTEMPTS``
    times, and an answer on its port is taken for its own only once it holds the port, so
    that the bench never times, nor is refused by, a stranger (CI runs the bench's smoke
    beside the tests' servers).
    """
    with output.open("w+b") if output is not None else tempfile.TemporaryFile() as printed:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            printed.seek(0)
            printed.truncate()
            port = free_port()
            started = time.perf_counter()
            process = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "parley", "serve", "--port", str(port)],
                env=_env(database_url),
                stdout=printed,
                stderr=subprocess.STDOUT,
                preexec_fn=ended_with(os.getpid()),
            )
            _SERVING.add(process)
            base = f"http://127.0.0.1:{port}"
            try:
                if _answered(process, port, probe, printed, port_taken_ends=attempt == PORT_ATTEMPTS):
                    yield base, process.pid, time.perf_counter() - started
                    return
            finally:
                _stop(process)


def _answered(
    process: subprocess.Popen[bytes],
    port: int,
    probe: Callable[[str], bool],
    printed: IO[bytes],
    *,
    port_taken_ends: bool,
) -> bool:
    """Wait for a server started on ``port`` to hold it and pass ``probe``: True then, False
    if its port was taken before it bound it (unless ``port_taken_ends``); a RuntimeError
    with the last lines it ``printed`` if it ends otherwise, or if it does not answer in time."""
    started = time.perf_counter()
    while True:
        if process.poll() is not None:
            printed.seek(0)
            said = printed.read().decode(errors="replace").strip().splitlines()[-SAID_LINES:]
            if any(PORT_TAKEN in line for line in said) and not port_taken_ends:
                return False
            raise RuntimeError("\n".join([f"parley serve exited with {process.returncode}:", *said]))
        # Whose answer it is, is asked only once something answers: ``listens`` takes 3 to 4
        # ms of CPU (the kernel walks its whole socket table), beside a server starting up.
        try:
            answered = probe(f"http://127.0.0.1:{port}")
        except httpx.HTTPError:
            answered = False
        except RuntimeError:  # the probe refused (``_read_probe``): said if the server is ours
            if listens(process.pid, port):
                raise
            answered = False
        if answered and listens(process.pid, port):
            return True
        if time.perf_counter() - started > STARTUP_TIMEOUT_S:
            raise RuntimeError("parley serve did not answer in time")
        time.sleep(0.01)


def _checkpoints(printed: str, *, closing: bool = False) -> dict[str, float]:
    """The store's checkpoints in what a command ``printed``: how many, the longest and all
    together, in seconds; the closing one only if ``closing``. Each holds every write up
    while it runs."""
    kinds = {"checkpoint", "closing"} if closing else {"checkpoint"}
    seconds = [float(found[2]) for found in CHECKPOINT_LINE.finditer(printed) if found[1] in kinds]
    return {
        "checkpoints": len(seconds),
        "checkpoint_max_s": max(seconds, default=0.0),
        "checkpoint_total_s": round(math.fsum(seconds), 2),
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and wait for it to end (SIGKILL after a minute)."""
    stop(process, within=60)
    _SERVING.discard(process)


def _peak_rss_mb(pid: int) -> float:
    peak = _proc_field(f"/proc/{pid}/status", "VmHWM")
    return int(peak.split()[0]) / 1024 if peak else 0.0


def _store_bytes(database_url: str) -> int:
    target = parse_database_url(database_url)
    if target.path is None:
        return 0
    paths = [target.path] if target.path.is_file() else list(target.path.rglob("*")) if target.path.exists() else []
    paths += [target.path.with_name(target.path.name + ".wal")]
    return sum(p.stat().st_size for p in paths if p.is_file())


def _write_dataset(events: Iterator[dict[str, Any]], jsonl: Path, tail: int) -> tuple[int, list[tuple[str, bytes]]]:
    """Write the events to ``jsonl`` but the newest ``tail`` by time, which are held back for
    HTTP, or the newest half of the data set when ``tail`` is more than half.

    The newest are taken across every org, as a live platform's last days would be, and
    returned in time order (the generator's among equal times), each as (org, the event
    without its org as JSON). The generator goes org by org: its last events, held back
    until 2026-12-04, were the last org's sessions, traces and observations alone.

    The file keeps the generator's order. Every event is written as it comes (a line is the
    event with its org first, as orjson encodes it) while a heap keeps the newest ``tail``'s
    times and places; the file is then copied without them, and they are kept as they go by.
    At scale M the copy reads and writes about 9 GB once, where generating the data set a
    second time would take 5 to 21 minutes (2026-12-04, two machines).
    """
    newest: list[tuple[datetime, int, str]] = []  # a heap of (time, place, org): its oldest first
    prefixes: dict[str, bytes] = {}
    count = 0
    everything = jsonl.with_name(jsonl.name + ".all")
    with everything.open("wb") as handle:
        for count, event in enumerate(events, start=1):
            org = event.pop("org")
            if org not in prefixes:
                prefixes[org] = b'{"org":' + orjson.dumps(org) + b","
            handle.write(prefixes[org] + orjson.dumps(event)[1:] + b"\n")
            entry = (datetime.fromisoformat(event["timestamp"]), count - 1, org)
            if len(newest) < tail:
                heapq.heappush(newest, entry)
            elif newest and entry > newest[0]:
                heapq.heapreplace(newest, entry)
    # The file keeps at least half of the data set. The demo scale's count depends on the hour
    # its data ends (39,997 events at 07:30 UTC, 40,304 at noon): holding 40,000 back left the
    # bulk load none at some hours, the workspaces' members neither, and no read answered.
    while len(newest) > count // 2:
        heapq.heappop(newest)
    newest.sort()
    slot = {place: i for i, (_, place, _) in enumerate(newest)}
    held: list[tuple[str, bytes]] = [("", b"")] * len(newest)
    with everything.open("rb") as source, jsonl.open("wb") as handle:
        for place, line in enumerate(source):
            i = slot.get(place)
            if i is None:
                handle.write(line)
            else:
                org = newest[i][2]
                held[i] = (org, b"{" + line[len(prefixes[org]) : -1])
    everything.unlink()
    return count - len(held), held


def _events_while_read(scale_name: str, database_url: str) -> int:
    if parse_database_url(database_url).engine == "duckdb":
        return EVENTS_THROUGH_CHECKPOINTS.get(scale_name, EVENTS_WHILE_READ)
    return EVENTS_WHILE_READ


def _batches(events: list[tuple[str, bytes]], size: int = HTTP_BATCH) -> list[tuple[str, bytes]]:
    """The encoded events as the orgs' platforms would stream them: (org, request body).

    Each org's events go in time order, in batches of ``size``, and a batch is sent as it
    fills, so that the orgs' batches interleave as their events did; the batches left
    part-filled go last, the one begun first first.
    """
    filling: dict[str, list[bytes]] = defaultdict(list)
    batches = []
    for org, event in events:
        batch = filling[org]
        batch.append(event)
        if len(batch) == size:
            batches.append((org, _body(filling.pop(org))))
    batches += [(org, _body(batch)) for org, batch in filling.items()]
    return batches


def _body(events: list[bytes]) -> bytes:
    return b'{"batch":[' + b",".join(events) + b"]}"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2)}


def run_bench(
    scale: str, store_url: str | None = None, workdir: Path | None = None, warm_requests: int | None = None
) -> BenchResult:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    warm_requests = WARM_REQUESTS if warm_requests is None else warm_requests
    if warm_requests < CLIENTS:
        raise ValueError(f"--requests must be at least {CLIENTS}, one for each of the {CLIENTS} clients")
    if store_url is not None:
        _require_fresh(store_url)
    own_dir = workdir is None
    with _sigterm_ends_through_the_clean_up():
        workdir = Path(workdir or tempfile.mkdtemp(prefix="parley-bench-"))
        try:
            database_url = store_url or f"duckdb:///{workdir}/bench.duckdb"
            result = BenchResult(
                scale=scale, store=database_url.split("://")[0], machine=machine(), warm_requests=warm_requests
            )
            _run(result, scale, database_url, workdir)
        finally:
            # A SIGTERM that came while a server was stopping cut short the wait for it.
            for process in list(_SERVING):
                _stop(process)
            gc.unfreeze()
            if own_dir:
                shutil.rmtree(workdir, ignore_errors=True)
    return result


@contextmanager
def _sigterm_ends_through_the_clean_up() -> Iterator[None]:
    """A SIGTERM (``timeout``, a cancelled CI job, ``kill``) ends the bench as Ctrl-C does,
    through its clean-up: by default it ended Python at once and left the working
    directory behind (the data set's JSONL, gigabytes at scale M). The servers are told
    to stop first, so that the clients' requests, in flight or queued (the read phases
    wait for theirs), fail at once rather than be answered. A handler can be set only
    from the main thread; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, _frame: Any) -> None:
        for process in list(_SERVING):
            process.send_signal(signal.SIGTERM)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, end)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _require_fresh(database_url: str) -> None:
    """Refuse a store that holds events already: the data set loaded into it again would be
    duplicates, and the bench would time their refusal as its ingest, saying nothing."""
    store = open_store(database_url)
    try:
        holds_events = store.holds_events()
    finally:
        store.close()
    if holds_events:
        raise ValueError(
            f"the store at {database_url} holds events already: the bench loads its data set into a "
            "fresh store (name a new file, or an empty database)"
        )


def _run(result: BenchResult, scale_name: str, database_url: str, workdir: Path) -> None:
    scale = SCALES[scale_name]
    end = datetime.now(UTC).replace(microsecond=0)
    jsonl = workdir / "events.jsonl"
    http_events = max(HTTP_BATCH * CLIENTS * 5, min(200_000, scale.chats_per_workspace * 10))
    read_events = _events_while_read(scale_name, database_url)
    bulk_events, tail = _write_dataset(generate(scale, seed=7, end=end), jsonl, read_events + http_events)
    if len(tail) < read_events + http_events:  # a data set too small for both: they share what is held
        read_events = len(tail) * read_events // (read_events + http_events)
    result.events = bulk_events + len(tail)
    # The older slice first, so that the held events reach the store in time order.
    held_while_read, held = _batches(tail[:read_events]), _batches(tail[read_events:])
    gc.freeze()  # what the data set left lives to the end: no collection of this process need look at it

    started = time.perf_counter()
    loaded = _cli_run(database_url, "ingest", str(jsonl))
    seconds = time.perf_counter() - started
    result.bulk_ingest = {
        "events": bulk_events,
        "seconds": round(seconds, 2),
        "events_per_s": round(bulk_events / seconds),
    } | _checkpoints(loaded.stderr, closing=True)  # the load ends with the store's closing
    result.bulk_ingest["reorder_s"] = round(
        math.fsum(float(found[1]) for found in REORDER_LINE.finditer(loaded.stderr)), 2
    )

    ws = workspaces(scale, seed=7)[0]
    admin_key = (
        _cli(
            database_url,
            "keys",
            "create",
            "--org",
            ws.org,
            "--workspace",
            ws.workspace_id,
            "--member",
            str(ws.admin_member_id),
        )
        .strip()
        .splitlines()[-1]
    )
    ingest_keys = {
        org: _cli(database_url, "keys", "create", "--org", org, "--ingest").strip().splitlines()[-1]
        for org in sorted({org for org, _ in tail})
    }
    headers = {"Authorization": f"Bearer {admin_key}"}
    requests = _read_requests(ws.org, ws.workspace_id, end)
    probe = _read_probe(requests[0][2], headers)

    polled = [request for request in requests if request[1] != "365d"]
    # Each ingesting server's output is kept for the checkpoints it printed while the clients sent.
    output = workdir / "server-while-read.log"
    with _server(database_url, probe, output) as (base, _pid, _):
        result.while_ingesting = _while_ingesting(base, headers, ingest_keys, held_while_read, polled)
        result.while_ingesting |= _checkpoints(output.read_text(errors="replace"))
    output = workdir / "server-http.log"
    with _server(database_url, probe, output) as (base, _pid, _):
        result.http_ingest = _http_ingest(base, ingest_keys, held)
        result.http_ingest |= _checkpoints(output.read_text(errors="replace"))
        result.reads = _reads(base, headers, requests, result.warm_requests)

    # Cold: a fresh process, one request per endpoint, and the start-up time.
    with _server(database_url, probe) as (base, _pid, startup):
        result.startup_s = round(startup, 3)
    with _server(database_url, lambda b: httpx.get(b + "/healthz", timeout=5).status_code == 200) as (base, _pid, _):
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            cold = {}
            for name, window, url in requests:
                started = time.perf_counter()
                client.get(url)
                cold[(name, window)] = round((time.perf_counter() - started) * 1000, 2)
        for row in result.reads:
            row["cold_ms"] = cold.get((row["endpoint"], row["range"]))

    # Export: all chats of the workspace, and the server's peak memory, from a fresh process.
    # The client is made before the clock: making one (its TLS context, even for plain HTTP)
    # took 19 to 36 ms of the bench's own CPU, about a sixth of a cold export.
    with (
        _server(database_url, lambda b: httpx.get(b + "/healthz", timeout=5).status_code == 200) as (base, pid, _),
        httpx.Client(base_url=base, headers=headers, timeout=600) as client,
    ):
        url = f"/api/v2/w/{ws.workspace_id}/chats/export"
        idle_mb = _peak_rss_mb(pid)
        rows, seconds = _export(client, url)
        peak_mb = _peak_rss_mb(pid)
        warm = [_export(client, url) for _ in range(WARM_EXPORTS)]
        warm_s = statistics.median(s for _, s in warm)
        result.export = {
            "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds) if seconds else 0,
            "idle_rss_mb": round(idle_mb, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "rss_growth_mb": round(peak_mb - idle_mb, 1),
            "warm_rows": sorted({n for n, _ in warm}),
            "warm_median_s": round(warm_s, 3),
            "warm_rows_per_s": round(rows / warm_s) if warm_s else 0,
            "warm_peak_rss_mb": round(_peak_rss_mb(pid), 1),
        }
    result.store_bytes = _store_bytes(database_url)


def _export(client: httpx.Client, url: str) -> tuple[int, float]:
    """One export read to its end: (rows, not counting the header; seconds)."""
    started = time.perf_counter()
    with client.stream("GET", url) as response:
        lines = sum(1 for _ in response.iter_lines())
    return lines - 1, time.perf_counter() - started


def _read_requests(org: str, workspace_id: str, end: datetime) -> list[tuple[str, str, str]]:
    """(endpoint, range, URL) for every read endpoint, over 30 and 365 days."""
    out = []
    for window, days in (("30d", 30), ("365d", 365)):
        first = (end - timedelta(days=days - 1)).date().isoformat()
        last = end.date().isoformat()
        after = (end - timedelta(days=days)).isoformat().replace("+00:00", "Z")
        chats = f"/api/v2/w/{workspace_id}/chats"
        org_base = f"/api/ai-analytics/orgs/{org}/users/user000001"
        aggregation = "daily" if days == 30 else "weekly"
        out += [
            ("calls by assistant", window, f"/analytics/calls/by-assistant?start_date={first}&end_date={last}"),
            (
                "assistants usage",
                window,
                f"/api/v2/org/{org}/workspace/{workspace_id}/metrics/assistants_usage?from_date={first}&to_date={last}",
            ),
            ("chats list", window, f"{chats}?createdAfter={after}&sortBy=lastMessageAt"),
            ("chats search", window, f"{chats}?createdAfter={after}&search=refund"),
            (
                "user cohorts",
                window,
                f"{org_base}/user-cohorts-over-time/?start_date={first}&end_date={last}&aggregation={aggregation}",
            ),
            ("user cost", window, f"{org_base}/user-cost/?start_date={first}&end_date={last}"),
            (
                "user feedback",
                window,
                f"{org_base}/user-feedback/?start_date={first}&end_date={last}&aggregation={aggregation}",
            ),
        ]
    out += [
        ("needs response", "-", f"/api/v2/w/{workspace_id}/chats/needs-response"),
        ("daily creation", "30d", f"/api/v2/w/{workspace_id}/chats/stats/daily-creation"),
        ("tool-call names", "-", f"/api/v2/w/{workspace_id}/chats/tool-call-names"),
    ]
    return out


@contextmanager
def _collector_paused() -> Iterator[None]:
    """This process's garbage collector paused while it times the server.

    At scale M a collection in the bench process took up to 262 ms (logged in a full run,
    while the four clients read the chats list), and the requests in flight counted it as
    the server's: the chats list's 30-day p95 measured 222 to 267 ms in six runs, against
    40 to 44 from a process that made no data set. What the clients allocate while timed is
    collected before the next measure.
    """
    gc.collect()
    with collector_paused():
        yield


def _http_ingest(base: str, keys: dict[str, str], batches: list[tuple[str, bytes]]) -> dict[str, float]:
    """The batches sent by 4 clients, each taking every 4th in turn.

    The bodies are encoded before the clock starts (``_batches``) and the answers decoded
    with orjson: the clients share the machine's two cores with the server, and what they
    spend of them is not the server's throughput.
    """
    waits: list[float] = []  # each request's, from sending to the answer

    def send(job: tuple[httpx.Client, list[tuple[str, bytes]]]) -> int:
        client, chunk = job
        stored = 0
        for org, body in chunk:
            sent = time.perf_counter()
            response = client.post(
                "/api/v2/ingest",
                content=body,
                headers={"Authorization": f"Bearer {keys[org]}", "Content-Type": "application/json"},
            )
            response.raise_for_status()
            waits.append(time.perf_counter() - sent)
            stored += len(orjson.loads(response.content)["successes"])
        return stored

    clients = [httpx.Client(base_url=base, timeout=300) for _ in range(CLIENTS)]  # made before the clock too
    try:
        with _collector_paused():
            started = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                stored = sum(pool.map(send, [(clients[i], batches[i::CLIENTS]) for i in range(CLIENTS)]))
            seconds = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return {
        "events": stored,
        "seconds": round(seconds, 2),
        "events_per_s": round(stored / seconds),
        "request_p50_ms": round(statistics.median(waits) * 1000, 1),
        "request_max_ms": round(max(waits) * 1000, 1),
    }


def _while_ingesting(
    base: str,
    headers: dict[str, str],
    keys: dict[str, str],
    batches: list[tuple[str, bytes]],
    requests: list[tuple[str, str, str]],
) -> dict[str, Any]:
    """HTTP ingest of ``batches`` while a reader per endpoint polls it: the ingest, and every read's time.

    A dashboard stays open while the platform streams, and the store's writes (DuckDB's
    checkpoints above all) must not hold its answers up: this is where a read that waits for
    one shows, as its maximum.
    """
    samples: dict[tuple[str, str], list[float]] = {(name, window): [] for name, window, _ in requests}
    ready = threading.Barrier(len(requests) + 1, timeout=STARTUP_TIMEOUT_S)  # broken, not hung, if a reader dies
    stop = threading.Event()

    def poll(request: tuple[str, str, str]) -> None:
        name, window, url = request
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            try:
                client.get(url).raise_for_status()  # once before the clock, as the warm reads
            finally:
                ready.wait()
            while True:  # one read at least, however soon the ingest ends
                samples[(name, window)].append(_timed_get((client, url)))
                if stop.wait(READ_PAUSE_S):
                    break

    with ThreadPoolExecutor(len(requests)) as pool:
        try:
            readers = [pool.submit(poll, request) for request in requests]
            ready.wait()
            ingest = _http_ingest(base, keys, batches)
        except BaseException:
            # Ended early (a SIGTERM, Ctrl-C, a failure): readers still waiting to start are
            # let go, or the pool's exit would wait for them, the barrier's 120 s. Those
            # started while others were being submitted too: a SIGTERM between the first
            # submission and this block hung the bench (1 of 12 runs of the SIGTERM tests
            # beside other tests).
            ready.abort()
            raise
        finally:
            stop.set()
        for reader in readers:
            reader.result()  # a reader's failure is the bench's
    reads = [
        {
            "endpoint": name,
            "range": window,
            "reads": len(times),
            **_percentiles(times),
            "max_ms": round(max(times) * 1000, 2),
        }
        for (name, window), times in samples.items()
    ]
    return {**ingest, "reads": reads}


def _timed_get(job: tuple[httpx.Client, str]) -> float:
    client, url = job
    started = time.perf_counter()
    client.get(url).raise_for_status()
    return time.perf_counter() - started


def _reads(
    base: str, headers: dict[str, str], requests: list[tuple[str, str, str]], warm_requests: int
) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(
        base_url=base, headers=headers, timeout=300, limits=httpx.Limits(max_connections=CLIENTS)
    ) as client:
        for name, window, url in requests:
            first = client.get(url)
            if first.status_code != 200:
                raise RuntimeError(f"{name} ({window}) answered {first.status_code}: {first.text[:200]}")
            client.get(url)  # warm
            with _collector_paused(), ThreadPoolExecutor(CLIENTS) as pool:
                samples = list(pool.map(_timed_get, [(client, url)] * warm_requests))
            rows.append(
                {
                    "endpoint": name,
                    "range": window,
                    "bytes": len(first.content),
                    "requests": len(samples),
                    **_percentiles(samples),
                }
            )
    return rows
