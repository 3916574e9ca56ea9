"""The S-scale bench completes and its numbers are sane (no timing is asserted)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import orjson
import pyarrow
import pytest

from parley import bench
from parley.bench import (
    STARTUP_TIMEOUT_S,
    _batches,
    _checkpoints,
    _events_while_read,
    _read_probe,
    _server,
    _while_ingesting,
    _write_dataset,
)
from parley.demo import SCALES, generate
from parley.ingest.service import ingest_batch
from parley.server import _ParleyLines
from parley.store.duckdb import DuckDBStore
from parley.store.port import open_store
from parley.tcp_ports import PORT_TAKEN, free_port, listens
from tests.conftest import bearer, store_url_for
from tests.factories import T0, call
from tests.processes import alive, cli_env, healthy, live_processes, run_cli, still_alive

pytestmark = pytest.mark.slow

ENDPOINTS = {
    "calls by assistant",
    "assistants usage",
    "chats list",
    "chats search",
    "user cohorts",
    "user cost",
    "user feedback",
    "needs response",
    "daily creation",
    "tool-call names",
}


# The S smoke on DuckDB, the store its targets are for. On chdb the demo scale: the
# same phases and checks, in 67 s rather than 108 at S (one run each); its bulk load is then
# half the data set, and chdb's bulk loads are tested in test_bulk_load and test_cli.
SMOKES = [("duckdb", "S"), ("chdb", "demo")]
# Sent over HTTP rather than loaded: 20,000 while read (five batches of 1,000 a client), then
# 10 events a workspace's chat (3,000 chats at S), and 20,000 at least. The demo's data set
# (about 40,000 events) is too small for both: they share its newest half, in proportion.
WHILE_READ = 20_000
HTTP_EVENTS = {"S": 30_000, "demo": 20_000}


@pytest.mark.parametrize(("kind", "scale_name"), SMOKES, ids=["-".join(smoke) for smoke in SMOKES])
def test_the_bench_completes_and_its_numbers_are_sane(tmp_path: Path, kind: str, scale_name: str):
    out = tmp_path / "bench.json"
    store = store_url_for(kind, tmp_path / "store")
    # A guard against a hang, not a time limit: on chdb the S smoke took 140 s in one hour and
    # 350 s in a slower one (the same code), 212 s in such an hour since its reads while
    # ingesting poll 20,000 events rather than 90,000.
    # 12 warm requests an endpoint and range rather than 52: on chdb at S the 52 took 76 of
    # the smoke's 164 s, and a smoke asserts no timing.
    result = run_cli(
        "duckdb:///unused",
        "bench",
        "--scale",
        scale_name,
        "--store",
        store,
        "--json",
        str(out),
        "--requests",
        "12",
        cwd=tmp_path,
        timeout=1800,
    )
    assert "Reads (4 clients, warm, 12 requests each)" in " ".join(result.stdout.split())  # however rich wraps it
    data = orjson.loads(out.read_bytes())
    scale = SCALES[scale_name]
    assert data["scale"] == scale_name and data["store"] == kind
    assert data["machine"]["cpus"] >= 1 and data["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert data["machine"]["libraries"]["duckdb"] == duckdb.__version__
    assert data["machine"]["libraries"]["pyarrow"] == pyarrow.__version__
    assert f"duckdb {duckdb.__version__}, chdb " in " ".join(result.stdout.split())  # however rich wraps it
    assert data["machine"]["cache"] is None or re.fullmatch(r"[0-9]+[KMG]", data["machine"]["cache"])
    wanted = WHILE_READ + HTTP_EVENTS[scale_name]
    held = min(wanted, data["events"] // 2)
    assert data["bulk_ingest"]["events"] + held == data["events"]
    assert data["while_ingesting"]["events"] == held * WHILE_READ // wanted
    assert data["http_ingest"]["events"] == held - held * WHILE_READ // wanted
    assert data["events"] > scale.chats_per_workspace * scale.orgs * scale.workspaces_per_org * scale.messages_per_chat
    for path in ("bulk_ingest", "http_ingest", "while_ingesting"):
        assert data[path]["events_per_s"] > 0 and data[path]["seconds"] > 0
    for path in ("http_ingest", "while_ingesting"):
        assert 0 < data[path]["request_p50_ms"] <= data[path]["request_max_ms"], data[path]
        # At these scales DuckDB's log stays under its 256 MB (about 30 MB at S), and chdb has none.
        assert (data[path]["checkpoints"], data[path]["checkpoint_max_s"]) == (0, 0.0), data[path]
    # A bulk load ends as the store closes, which on DuckDB writes the log (a hundred
    # megabytes and more at S, where the load's threshold is a gigabyte) into the store: a
    # checkpoint at least, within the load's time.
    bulk = data["bulk_ingest"]
    # And before it, DuckDB rewrites each org's rows of its time-ordered tables; ClickHouse
    # writes its parts in order.
    if kind == "duckdb":
        assert bulk["checkpoints"] >= 1, bulk
        assert 0 < bulk["checkpoint_max_s"] <= bulk["checkpoint_total_s"] < bulk["seconds"], bulk
        assert 0 < bulk["reorder_s"] < bulk["seconds"], bulk
    else:
        assert (bulk["checkpoints"], bulk["checkpoint_max_s"], bulk["checkpoint_total_s"]) == (0, 0.0, 0.0), bulk
        assert bulk["reorder_s"] == 0.0, bulk
    printed = " ".join(result.stdout.split())  # however rich wraps it
    assert (
        f"The bulk load's rows put in their order as it ended: {bulk['reorder_s']} s. "
        "Checkpoints of the store while each ingested (every write waits for one): bulk (its closing one included) "
        f"{bulk['checkpoints']}, the longest {bulk['checkpoint_max_s']} s, {bulk['checkpoint_total_s']} s in all; "
        "HTTP alone 0, the longest 0.0 s, 0.0 s in all; while read 0, the longest 0.0 s, 0.0 s in all"
    ) in printed
    # A reader an endpoint over 30 days (or its one range) polled all through that ingest.
    polled = data["while_ingesting"]["reads"]
    assert "Reads while 4 clients ingest" in result.stdout
    assert {row["endpoint"] for row in polled} == ENDPOINTS
    assert sorted(row["range"] for row in polled) == ["-"] * 2 + ["30d"] * 8
    for row in polled:
        assert row["reads"] >= 1 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"], row
    assert {row["endpoint"] for row in data["reads"]} == ENDPOINTS
    assert len(data["reads"]) == 17
    assert data["warm_requests"] == 12 and {row["requests"] for row in data["reads"]} == {12}
    for row in data["reads"]:
        assert 0 < row["p50_ms"] <= row["p95_ms"], row
        assert row["cold_ms"] is not None and row["cold_ms"] > 0, row
        assert row["bytes"] > 2, row  # every endpoint found data
    export = data["export"]
    assert 0 < export["rows"] <= scale.chats_per_workspace
    assert export["peak_rss_mb"] >= export["idle_rss_mb"] > 0
    assert export["warm_rows"] == [export["rows"]]  # every export read every chat
    median_s = export["warm_median_s"]  # rounded to the millisecond
    assert (
        export["rows"] / (median_s + 0.0005) - 1
        <= export["warm_rows_per_s"]
        <= export["rows"] / (median_s - 0.0005) + 1
    )
    assert export["warm_peak_rss_mb"] >= export["peak_rss_mb"]
    assert data["store_bytes"] > 1_000_000
    assert 0 < data["startup_s"] < 60

    # The store now holds the data set: a second bench on it is refused before it starts.
    again = run_cli("duckdb:///unused", "bench", "--scale", scale_name, "--store", store, cwd=tmp_path, check=False)
    assert again.returncode == 1
    said = "".join(again.stderr.split())  # without blanks: rich wraps the message, its URL too, anywhere
    assert f"thestoreat{store}holdseventsalready:thebenchloadsitsdatasetintoafreshstore" in said
    assert "Ingest" not in again.stdout


def test_fewer_warm_requests_than_clients_are_refused_before_anything_is_generated(tmp_path: Path):
    refused = run_cli("duckdb:///unused", "bench", "--scale", "S", "--requests", "3", cwd=tmp_path, check=False)
    assert refused.returncode == 1
    assert "error: --requests must be at least 4, one for each of the 4 clients" in " ".join(refused.stderr.split())
    assert refused.stdout == ""


@pytest.mark.parametrize(
    ("scale_name", "store", "events"),
    [
        ("M", "duckdb:///x/bench.duckdb", 1_500_000),
        ("export", "duckdb:///x/bench.duckdb", 1_500_000),
        ("S", "duckdb:///x/bench.duckdb", 20_000),
        ("M", "chdb:///x/store", 20_000),
        ("M", "clickhouse://default:@localhost:8123/parley", 20_000),
    ],
)
def test_only_duckdb_at_the_large_scales_ingests_through_checkpoints_while_read(
    scale_name: str, store: str, events: int
):
    # DuckDB's write-ahead log passes its 256 MB checkpoint threshold more than once in 1.5M
    # events; ClickHouse has no checkpoint, and on chdb at scale M the 1.5M took over half an
    # hour beside the readers.
    assert _events_while_read(scale_name, store) == events


def _newest(events: list[bytes], count: int) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """The plain split: the lines but the newest ``count`` by time (then place), in order;
    and those newest in time order, as (org, the event without its org)."""
    timed = sorted(
        (datetime.fromisoformat(orjson.loads(event)["timestamp"]), place) for place, event in enumerate(events)
    )
    newest = [place for _, place in timed[len(events) - count :]]
    held = set(newest)
    kept = [event for place, event in enumerate(events) if place not in held]
    as_sent = [orjson.loads(events[place]) for place in newest]
    return kept, [(event.pop("org"), orjson.dumps(event)) for event in as_sent]


def test_the_newest_events_across_every_org_are_held_back_in_time_order(tmp_path: Path):
    # The file's lines are the other events with their org, as orjson writes them, in the
    # generator's order; the newest by time are held back for HTTP instead, without their
    # org, in time order. (The last 500 lines, held back until 2026-12-04, were all globex's.)
    end = datetime(2026, 11, 30, tzinfo=UTC)
    events = [orjson.dumps(event) for event in generate(SCALES["demo"], seed=7, end=end)]
    jsonl = tmp_path / "events.jsonl"
    written, held = _write_dataset(generate(SCALES["demo"], seed=7, end=end), jsonl, 500)
    kept, newest = _newest(events, 500)
    assert written == len(events) - 500 == len(kept)
    assert jsonl.read_bytes().splitlines() == kept
    assert held == newest
    assert {org for org, _ in held} == {"acme", "globex"}
    oldest_held = datetime.fromisoformat(orjson.loads(held[0][1])["timestamp"])
    assert all(datetime.fromisoformat(orjson.loads(line)["timestamp"]) <= oldest_held for line in kept)
    assert list(tmp_path.iterdir()) == [jsonl]  # the copy with every event is gone


def test_the_file_keeps_at_least_half_of_the_data_set(tmp_path: Path):
    # The demo's data set ended at this hour holds 39,997 events: 40,000 held back left the
    # bulk load none, the workspaces' members unknown to every read.
    end = datetime(2026, 12, 3, 7, 30, tzinfo=UTC)
    events = [orjson.dumps(event) for event in generate(SCALES["demo"], seed=7, end=end)]
    assert len(events) == 39_997
    jsonl = tmp_path / "events.jsonl"
    written, held = _write_dataset(generate(SCALES["demo"], seed=7, end=end), jsonl, 40_000)
    assert (written, len(held)) == (19_999, 19_998)
    kept, newest = _newest(events, 19_998)
    assert jsonl.read_bytes().splitlines() == kept
    assert held == newest


def test_the_orgs_batches_go_as_they_fill():
    # Batches of 2: each org's events in order, a batch sent when it is full, the part-filled
    # ones last in the order they were begun.
    events = [("a", b"1"), ("b", b"2"), ("b", b"3"), ("a", b"4"), ("c", b"5"), ("a", b"6"), ("b", b"7")]
    assert _batches(events, size=2) == [
        ("b", b'{"batch":[2,3]}'),
        ("a", b'{"batch":[1,4]}'),
        ("c", b'{"batch":[5]}'),
        ("a", b'{"batch":[6]}'),
        ("b", b'{"batch":[7]}'),
    ]


def test_the_checkpoints_a_server_prints_are_counted(tmp_path: Path, caplog):
    # What the bench counts is what the DuckDB store logs, as `parley serve` prints it.
    store = DuckDBStore(tmp_path / "parley.duckdb")
    store.checkpoint_bytes = 1  # every write checkpoints
    try:
        with caplog.at_level("INFO", logger="parley.store"):
            for n in range(3):
                assert ingest_batch(store, org="acme", batch=[call(f"c{n}", "a1", T0)]).errors == []
    finally:
        with caplog.at_level("DEBUG", logger="parley.store"):
            store.close()
    logged = [record for record in caplog.records if record.name == "parley.store"]
    seconds = [round(record.args[2], 2) for record in logged if record.args[0] == "checkpoint"]
    assert len(seconds) >= 3 and [record.args[0] for record in logged][-1] == "closing"
    closing = [round(record.args[2], 2) for record in logged if record.args[0] == "closing"]
    printed = "\n".join(
        ['INFO:     127.0.0.1:1 - "POST /api/v2/ingest HTTP/1.1" 207', *map(_ParleyLines().format, logged)]
    )
    assert _checkpoints(printed) == {
        "checkpoints": len(seconds),  # not the closing one
        "checkpoint_max_s": max(seconds),
        "checkpoint_total_s": round(sum(seconds), 2),
    }
    assert _checkpoints(printed, closing=True) == {  # a bulk load's: the closing one too
        "checkpoints": len(seconds) + 1,
        "checkpoint_max_s": max(seconds + closing),
        "checkpoint_total_s": round(sum(seconds + closing), 2),
    }


def test_a_server_that_ends_before_its_first_answer_is_said_with_what_it_printed(tmp_path: Path):
    # The bench said only "parley serve exited with 1", the server's output gone to /dev/null.
    url = store_url_for("duckdb", tmp_path)
    opened = open_store(url)  # this process holds the DuckDB file: the server cannot open it
    try:
        with pytest.raises(RuntimeError) as ended, _server(url, _read_probe("/healthz", {})):
            pass
    finally:
        opened.close()
    assert str(ended.value) == (
        "parley serve exited with 1:\n"
        f"error: {tmp_path / 'parley-data' / 'parley.duckdb'} is held by another process; run the command through the Parley server that holds it, "
        "or stop that process"
    )


def test_a_server_refusing_the_first_read_is_said_at_once_with_its_reason(tmp_path: Path):
    # A key for a member of a store that holds no event: the server answers 403, and will
    # go on doing so. The probe used to wait out the start-up time-out, then say "did not
    # answer in time".
    url = store_url_for("duckdb", tmp_path)
    key = run_cli(url, "keys", "create", "--org", "acme", "--workspace", "w1", "--member", "1").stdout
    headers = bearer(key.strip().splitlines()[-1])
    probe = _read_probe("/api/v2/w/w1/chats", headers)
    with pytest.raises(RuntimeError) as refused, _server(url, probe):
        pass
    assert str(refused.value) == (
        'parley serve refused the bench\'s first read (403): {"detail":"member 1 is not known in workspace w1"}'
    )


@contextmanager
def _stranger(status: int = 200) -> Iterator[int]:
    """Another process's server, as a test's beside the bench's smoke run in CI: it answers
    every request with ``status``, and holds its port."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer) as stranger:
        thread = threading.Thread(target=stranger.serve_forever, daemon=True)
        thread.start()
        try:
            yield stranger.server_address[1]
        finally:
            stranger.shutdown()


@pytest.mark.parametrize("status", [200, 401])
def test_a_server_whose_port_was_taken_first_is_started_again_on_another(tmp_path: Path, monkeypatch, status: int):
    # A port is free when chosen, not when the server binds it. The bench's server exited
    # ("address already in use"), and until then the stranger's 200s passed its probe:
    # the bench would time another process's server (and its refusals ended the bench, as
    # the server's own would). The port chooser is made to hand out the stranger's port
    # twice, then a free one.
    url = store_url_for("duckdb", tmp_path)
    with _stranger(status) as taken:
        ports = iter([taken, taken, free_port()])
        monkeypatch.setattr(bench, "free_port", lambda: next(ports))
        with _server(url, _read_probe("/healthz", {})) as (base, pid, _):
            port = int(base.rsplit(":", 1)[1])
            assert port != taken and listens(pid, port) and not listens(pid, taken)
            assert httpx.get(base + "/healthz").json() == {"status": "ok"}  # Parley's, not the stranger's empty 200


def test_a_server_whose_port_is_taken_at_each_attempt_is_said_with_what_it_printed(tmp_path: Path, monkeypatch):
    url = store_url_for("duckdb", tmp_path)
    with _stranger() as taken:
        monkeypatch.setattr(bench, "free_port", lambda: taken)
        with pytest.raises(RuntimeError) as ended, _server(url, _read_probe("/healthz", {})):
            pass
    said = str(ended.value)
    assert said.startswith("parley serve exited with 3:\n"), said
    assert f"error while attempting to bind on address ('127.0.0.1', {taken}): {PORT_TAKEN}" in said


def test_the_held_events_keep_only_their_bytes(tmp_path: Path):
    # orjson returns each event in the 4 KB buffer it wrote it to; held as it comes, every
    # held event kept that buffer (7.6 GB of the bench at scale M through its bulk load).
    end = datetime(2026, 11, 30, tzinfo=UTC)
    tracemalloc.start()
    try:
        _, held = _write_dataset(generate(SCALES["demo"], seed=7, end=end), tmp_path / "events.jsonl", 2_000)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    encoded = sum(len(event) for _, event in held)
    assert len(held) == 2_000 and encoded < 2_000 * 1_000  # each well under 4 KB
    assert kept < 3 * encoded  # the bytes, their tuples and the list; 4 KB each would be over 8 times


# A bench's own server, in a process the test then kills: it prints the server's pid and
# waits.
_BENCH_WITH_ITS_SERVER = """
import sys
import httpx
from parley.bench import _server
with _server(sys.argv[1], lambda base: httpx.get(base + "/healthz", timeout=5).status_code == 200) as (_, pid, _):
    print(pid, flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("signal_", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_bench_killed_leaves_no_server_holding_its_store(tmp_path: Path, signal_: signal.Signals):
    # Either ends the process without its clean-up (SIGTERM's default, where no handler is
    # set, as here outside ``run_bench``): its server went on, holding the store and its port.
    url = store_url_for("duckdb", tmp_path)
    bench = subprocess.Popen(
        [sys.executable, "-c", _BENCH_WITH_ITS_SERVER, url],
        env=cli_env(url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        server = int(bench.stdout.readline())
        assert alive(server)
        os.kill(bench.pid, signal_)
        assert bench.wait(timeout=30) == -signal_
        assert still_alive([server], within=60) == []
        open_store(url).close()  # nothing holds the store
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)  # what is left of the bench's group, on a failure
        bench.communicate()


def _serving_under(directory: Path) -> list[tuple[int, int]]:
    """(pid, port) of the ``parley serve`` processes alive whose environment names
    ``directory`` (their store's)."""
    found = []
    for pid, _, command in live_processes():
        arguments = command.split(b"\0")
        with contextlib.suppress(OSError):  # ended meanwhile
            if b"serve" in arguments and str(directory).encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append((pid, int(arguments[arguments.index(b"--port") + 1])))
    return found


def _ended(bench: subprocess.Popen, tmp_path: Path, within: float) -> int:
    """The exit status of a ``_demo_bench`` that ends ``within`` seconds; else a failure
    saying where it and its servers were. Each is sent SIGABRT, on which faulthandler
    prints its threads' stacks: the bench's to its standard error, a server's to its log in
    the working directory (the first two servers'; the others' go to unnamed files)."""
    try:
        return bench.wait(timeout=within)
    except subprocess.TimeoutExpired:
        for pid, _ in _serving_under(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        os.kill(bench.pid, signal.SIGABRT)
        bench.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)  # whatever it started, holding its standard error
        said = bench.stderr.read().decode(errors="replace")
        logs = [
            f"--- {log.name}\n{log.read_text(errors='replace')[-20_000:]}" for log in tmp_path.glob("*/server-*.log")
        ]
        pytest.fail("\n".join([f"the bench did not end within {within} s; it said:", said, *logs]))


@contextmanager
def _demo_bench(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """``parley bench --scale demo``, its temporary files under ``tmp_path``, once its first
    server answers: (the bench, that server's pid, its port)."""
    # Python's faulthandler prints every thread's stack on SIGABRT (see ``_ended``).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")} | {
        "TMPDIR": str(tmp_path),
        "PYTHONFAULTHANDLER": "1",
    }
    bench = subprocess.Popen(
        # No core file for it or its children when ``_ended`` aborts them (util-linux's
        # ``prlimit`` sets the limit and becomes the bench).
        ["prlimit", "--core=0", sys.executable, "-m", "parley", "bench", "--scale", "demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (servers := _serving_under(tmp_path)):
            assert bench.poll() is None and time.monotonic() < deadline, "the bench never started its server"
            time.sleep(0.01)
        ((server, port),) = servers
        while not healthy(f"http://127.0.0.1:{port}"):
            assert time.monotonic() < deadline, "the bench's server never answered"
            time.sleep(0.01)
        yield bench, server, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)  # the bench and its servers, on a failure
        bench.communicate()


# After its first server answers: its readers starting (a signal then hung the bench for
# their barrier's time-out, 120 s), and reading while 4 clients ingest.
@pytest.mark.parametrize("after", [0.2, 1.5], ids=["readers-starting", "reading"])
def test_a_bench_sent_sigterm_stops_its_servers_and_removes_its_working_directory(tmp_path: Path, after: float):
    # SIGTERM's default ended the bench at once, leaving its working directory (the data
    # set's JSONL, gigabytes at scale M) in the temporary one.
    with _demo_bench(tmp_path) as (bench, _, _):
        assert [p.name.startswith("parley-bench-") for p in tmp_path.iterdir()] == [True]
        time.sleep(after)
        os.kill(bench.pid, signal.SIGTERM)
        assert _ended(bench, tmp_path, within=30) == 128 + signal.SIGTERM, bench.stderr.read()
        assert list(tmp_path.iterdir()) == []
        # A server being started as the signal came (the bench inside ``Popen``) is not the
        # bench's to stop yet: its parent-death signal ends it as the bench ends.
        assert still_alive([pid for pid, _ in _serving_under(tmp_path)], within=10) == []


class _EndedWhileSubmitted(list):
    """The readers' requests, which end the bench as a SIGTERM ends it (``SystemExit``) the
    second time they are gone through, the readers' submission, after the first."""

    walks = 0

    def __iter__(self):
        self.walks += 1
        for n, request in enumerate(super().__iter__()):
            if self.walks == 2 and n == 1:
                raise SystemExit(128 + signal.SIGTERM)
            yield request


def test_a_bench_ended_while_its_readers_are_submitted_lets_the_started_ones_go():
    # A SIGTERM between the first reader's submission and the block that lets the readers
    # go on a failure left that reader at their barrier: the bench hung for the barrier's
    # time-out (found in about 1 run of 12 of the SIGTERM test beside other tests).
    requests = _EndedWhileSubmitted([("a", "30d", "/a"), ("b", "30d", "/b")])
    started = time.monotonic()
    # The first reader's request fails: its port is bound here and never listened on, so no
    # other test's server can take it, and a connection to it is refused.
    with socket.socket() as bound, pytest.raises(SystemExit):
        bound.bind(("127.0.0.1", 0))
        _while_ingesting(f"http://127.0.0.1:{bound.getsockname()[1]}", {}, {}, [], requests)
    assert requests.walks == 2
    assert time.monotonic() - started < STARTUP_TIMEOUT_S / 4


def test_a_bench_sent_sigterm_while_a_server_stops_waits_for_it(tmp_path: Path):
    # The signal cut short the bench's wait for the server it was stopping: the bench ended,
    # the server still stopping, its store and the working directory removed under it.
    with _demo_bench(tmp_path) as (bench, server, port):
        deadline = time.monotonic() + 120
        while healthy(f"http://127.0.0.1:{port}"):  # until the bench stops it, its first phase done
            assert time.monotonic() < deadline, "the bench never stopped its first server"
            time.sleep(0.001)
        os.kill(server, signal.SIGSTOP)  # held while it stops (it closes the store after its socket)
        try:
            if not alive(server):
                pytest.skip("the server ended before it could be held")
            os.kill(bench.pid, signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                bench.wait(timeout=2)  # it waits for the server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGCONT)
        assert _ended(bench, tmp_path, within=60) == 128 + signal.SIGTERM, bench.stderr.read()
        assert not alive(server)
        assert list(tmp_path.iterdir()) == []
