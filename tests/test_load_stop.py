"""A bulk load stopped by SIGTERM or Ctrl-C stores the lines it read, says how far it got
and exits 128 plus the signal's number; one whose worker is killed ends too, and says
so. Loading the same lines again adds exactly the rest. The real CLI, on a real DuckDB
file and in the real chdb engine. ``parley ingest`` reads its lines from a pipe left
open, so that where it stops does not depend on timing: two whole chunks, then part of
a third that never ends."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from parley.cli import CHUNK_LINES
from parley.demo import SCALES, generate
from tests.conftest import store_url_for
from tests.processes import (
    cli_env,
    cpu_ticks,
    demo_jsonl,
    multiprocessing_children,
    parley_command,
    reaped,
    run_cli,
    running_server,
    still_alive,
)

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    # A job a shell starts in the background ignores SIGINT, and its children inherit that
    # (the loader then leaves it ignored): the test's loader gets Ctrl-C's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def _loader(command: list[str], url: str, **kwargs: object) -> Iterator[subprocess.Popen]:
    """The command running as a terminal's job; on the way out, whatever is left of its
    group (on a failure) is killed, and what it had written to its standard error is shown
    with the failure."""
    process = subprocess.Popen(
        command,
        env=cli_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, as a terminal's job is
        preexec_fn=_default_sigint,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:  # not read by the test: it failed before its end
            _, stderr = process.communicate()
            print(f"the command's standard error (it exited with {process.returncode}):\n{stderr.decode()}")


def _leaves_signals_to_its_loader(pid: int) -> bool:
    """Whether ``pid`` ignores SIGINT and SIGTERM (``/proc/PID/status``'s mask)."""
    mask = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16) & mask == mask
    return False


def _workers(loader: subprocess.Popen) -> list[int]:
    """The loader's worker processes alive (not their resource tracker)."""
    return [pid for pid, command in multiprocessing_children(loader.pid) if b"spawn_main" in command]


def _ready_workers(loader: subprocess.Popen) -> list[int]:
    """The loader's worker processes, one per core, once every one has started and set its
    signals."""
    deadline = time.monotonic() + 60
    while True:
        workers = _workers(loader)
        if len(workers) == os.cpu_count() and all(_leaves_signals_to_its_loader(pid) for pid in workers):
            return workers
        assert loader.poll() is None and time.monotonic() < deadline, "no worker got ready"
        time.sleep(0.02)


def _loading_again_adds_the_rest(url: str, tmp_path: Path, data: bytes, stored: int) -> None:
    """Exactly lines 1 to ``stored`` are stored: loading them all again finds them, and the
    rest is new."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    again = run_cli(url, "ingest", str(path))
    lines = data.count(b"\n")
    assert f"accepted {lines - stored}, duplicates {stored}, rejected 0" in again.stdout


@pytest.mark.parametrize(
    ("signal_", "whole_group"),
    [
        (signal.SIGTERM, False),  # `kill PID`: the loader alone
        # A terminal's Ctrl-C, and `timeout`'s SIGTERM, reach the workers as well, which
        # leave them to the loader. (Workers a SIGTERM ended could die while sending a
        # chunk back, and the pool then waited forever for the rest of it: 2 stops of 18 hung.)
        (signal.SIGINT, True),
        (signal.SIGTERM, True),
    ],
    ids=["SIGTERM", "SIGINT-group", "SIGTERM-group"],
)
def test_a_load_stopped_by_a_signal_stores_what_it_reports_and_no_more(
    store_url: str, tmp_path: Path, signal_: signal.Signals, whole_group: bool
):
    data = demo_jsonl()
    assert data.count(b"\n") > 2 * CHUNK_LINES
    with _loader(parley_command("ingest", "-"), store_url, stdin=subprocess.PIPE) as loader:
        loader.stdin.write(data)  # and left open: the loader waits for the rest of its third chunk
        loader.stdin.flush()
        workers = _ready_workers(loader)
        (os.killpg if whole_group else os.kill)(loader.pid, signal_)
        stdout, stderr = (output.decode() for output in loader.communicate(timeout=60))
        assert loader.returncode == 128 + signal_, stderr
        assert still_alive(workers, within=30) == []
    (reported,) = re.findall(r"^accepted (\d+), duplicates 0, rejected 0$", stdout, re.MULTILINE)
    assert int(reported) == 2 * CHUNK_LINES  # the two whole chunks read: the second was with a worker
    assert (
        f"stopped by {signal_.name} after line {reported}, every line up to it stored (as reported);"
        " loading the same lines again adds the rest"
    ) in stderr
    _loading_again_adds_the_rest(store_url, tmp_path, data, int(reported))


def _idle(pids: list[int], *, quiet: float = 0.5, within: float = 60) -> None:
    """Wait until ``pids`` have used no CPU for ``quiet`` seconds: done with their chunks,
    waiting for the next, none sending one back."""
    deadline = time.monotonic() + within
    used = [cpu_ticks(pid) for pid in pids]
    while True:
        time.sleep(quiet)
        now = [cpu_ticks(pid) for pid in pids]
        if now == used:
            return
        assert time.monotonic() < deadline, "the workers never went idle"
        used = now


def _reading(pid: int) -> bool:
    """Whether ``pid`` waits in a pipe's read (``/proc/PID/wchan``, its main thread's)."""
    return "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()


def _waits_for_lines(loader: subprocess.Popen) -> bool:
    """Whether the loader waits for lines on its standard input, and still does 0.3 s later."""
    if not _reading(loader.pid):
        return False
    time.sleep(0.3)
    return _reading(loader.pid)


def _sending(pid: int) -> bool:
    """Whether ``pid`` waits to write to a full pipe or socket (``/proc/PID/wchan``:
    ``pipe_write``, ``sock_alloc_send_pskb``), as a worker sending its chunk back to a
    loader that does not read it does."""
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    return "pipe_write" in wchan or "send" in wchan


def _held_while_sending(loader: subprocess.Popen, workers: list[int]) -> int:
    """Stop the loader (SIGSTOP) while a worker prepares a chunk, so that the worker, done,
    blocks in the middle of sending it back; that worker's pid."""
    for _ in range(20):
        busy = [cpu_ticks(pid) for pid in workers]
        deadline = time.monotonic() + 10
        while [cpu_ticks(pid) for pid in workers] == busy and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(loader.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            senders = [pid for pid in workers if _sending(pid)]
            if senders:
                return senders[0]
            time.sleep(0.01)
        os.kill(loader.pid, signal.SIGCONT)
    pytest.fail("no worker was caught sending its chunk back")


@pytest.mark.parametrize("when", ["waiting", "sending"])
def test_a_load_whose_worker_is_killed_ends_and_says_how_far_it_got(store_url: str, tmp_path: Path, when: str):
    # Two orgs' copies of the demo data: four whole chunks, the last three for the workers.
    demo = demo_jsonl()
    data = demo + demo.replace(b'{"org":"', b'{"org":"copy-')
    assert 4 * CHUNK_LINES < data.count(b"\n") < 5 * CHUNK_LINES
    with _loader(parley_command("ingest", "-"), store_url, stdin=subprocess.PIPE) as loader:
        loader.stdin.write(data)  # and left open
        loader.stdin.flush()
        workers = _ready_workers(loader)
        assert len(workers) >= 2  # one per core
        if when == "waiting":
            _idle(workers)  # done with their chunks, waiting for the next
            killed = workers[0]
        else:
            # Killed in the middle of a message: the standard library's ProcessPoolExecutor,
            # which shares one pipe of results, then waited forever for the rest of it.
            killed = _held_while_sending(loader, workers)
        os.kill(killed, signal.SIGKILL)  # as the OOM killer might
        os.kill(loader.pid, signal.SIGCONT)
        reaped(killed, within=30)  # the loader has seen it die: so will the chunk that ends the input
        # Standard input closed: the last chunk ends, and the load meets the dead worker.
        stdout, stderr = (output.decode() for output in loader.communicate(timeout=60))
        assert loader.returncode == 1, stderr
        assert still_alive(workers, within=30) == []
    # The first chunk was stored by the loader itself; the next three, prepared by the
    # workers, wait to be stored together with the fourth, one of them never to come.
    assert stdout == f"accepted {CHUNK_LINES}, duplicates 0, rejected 0\n"
    assert (
        "stopped: a worker process of the load was killed by SIGKILL (the OOM killer's, or kill -9) after line "
        f"{CHUNK_LINES}, every line up to it stored (as reported); loading the same lines again adds the rest"
    ) in stderr
    _loading_again_adds_the_rest(store_url, tmp_path, data, CHUNK_LINES)


def test_a_load_through_a_server_that_stops_ends_and_says_how_far_it_got(tmp_path: Path):
    url = store_url_for("duckdb", tmp_path)
    data = demo_jsonl()
    with (
        running_server(url) as (_, server),
        _loader(parley_command("ingest", "-"), url, stdin=subprocess.PIPE) as loader,  # through the server
    ):
        loader.stdin.write(data)  # and left open
        loader.stdin.flush()
        # Two chunks sent and answered, one at a time: the loader waits for the third's lines.
        deadline = time.monotonic() + 60
        while not _waits_for_lines(loader):
            assert loader.poll() is None and time.monotonic() < deadline, "the loader never waited for lines"
            time.sleep(0.02)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        # Standard input closed: the third chunk ends, and its request finds no server.
        stdout, stderr = (output.decode() for output in loader.communicate(timeout=60))
        assert loader.returncode == 1, stderr
    # A traceback of httpx's ConnectError before, and no report.
    assert stdout == f"accepted {2 * CHUNK_LINES}, duplicates 0, rejected 0\n"
    assert re.search(
        rf"error: the Parley server stopped answering \(.+\); stopped after line {2 * CHUNK_LINES}, every line up "
        r"to it stored \(as reported\); loading the same lines again adds the rest$",
        stderr.strip(),
    ), stderr
    _loading_again_adds_the_rest(url, tmp_path, data, 2 * CHUNK_LINES)  # the store opened directly


def test_a_demo_stopped_by_sigterm_names_the_command_that_adds_the_rest(tmp_path: Path):
    url = store_url_for("duckdb", tmp_path)
    wal = Path(url.removeprefix("duckdb://") + ".wal")
    with _loader(parley_command("demo", "--scale", "S"), url) as demo:
        deadline = time.monotonic() + 120
        # Its first chunk is stored: a chunk's rows take megabytes of log, the tables' creation kilobytes.
        while not (wal.exists() and wal.stat().st_size > 1_000_000):
            assert demo.poll() is None and time.monotonic() < deadline, "nothing was stored"
            time.sleep(0.02)
        demo.send_signal(signal.SIGTERM)
        stdout, stderr = (output.decode() for output in demo.communicate(timeout=120))
    assert demo.returncode == 128 + signal.SIGTERM, stderr
    (reported,) = re.fullmatch(r"accepted (\d+), duplicates 0, rejected 0\n", stdout).groups()  # no keys, no curls
    stopped = re.search(
        r"stopped by SIGTERM after event (\d+), every event up to it stored \(as reported\); (parley demo .*)"
        r" adds the rest",
        stderr,
    )
    assert stopped is not None, stderr
    assert stopped[1] == reported and int(reported) % CHUNK_LINES == 0 and int(reported) > 0
    command = shlex.split(stopped[2])
    end = datetime.fromisoformat(command[command.index("--end") + 1])
    total = sum(1 for _ in generate(SCALES["S"], seed=7, end=end))
    assert total > int(reported)
    again = run_cli(url, *command[1:])
    assert f"accepted {total - int(reported)}, duplicates {reported}, rejected 0" in again.stdout
