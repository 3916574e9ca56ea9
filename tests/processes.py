"""Run the real CLI and the real server as subprocesses, and find the processes they leave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from parley.child_process import stop
from parley.demo import SCALES, generate
from parley.tcp_ports import PORT_ATTEMPTS, PORT_TAKEN, free_port, listens

STARTUP_TIMEOUT_S = 30


def cli_env(database_url: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its ``PARLEY_`` settings, but the store's and
    ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return env | {"PARLEY_DATABASE_URL": database_url} | (settings or {})


def parley_command(*args: str, file_size_limit: int | None = None) -> list[str]:
    """``python -m parley ARGS``; with ``file_size_limit``, no file it writes may grow past
    that many bytes, as on a full disk (util-linux's ``prlimit``; Python ignores SIGXFSZ,
    so a write past the limit fails with EFBIG rather than ending the process)."""
    command = [sys.executable, "-m", "parley", *args]
    return command if file_size_limit is None else ["prlimit", f"--fsize={file_size_limit}", *command]


def run_cli(
    database_url: str,
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    file_size_limit: int | None = None,
    timeout: float = 300,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    # In a process group of its own, so that a time-out ends what it started as well (the
    # server of `parley bench`, which outlived a killed bench and loaded the tests after).
    process = subprocess.Popen(
        parley_command(*args, file_size_limit=file_size_limit),
        env=cli_env(database_url, settings),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"parley {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def new_key(database_url: str, *args: str) -> str:
    """A key made by ``parley keys create ARGS``: the last line it prints."""
    return run_cli(database_url, "keys", "create", *args).stdout.strip().splitlines()[-1]


def healthy(base: str) -> bool:
    """Whether a server answers its health check at ``base`` (``http://host:port``)."""
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_server(
    database_url: str,
    *,
    cwd: Path | None = None,
    file_size_limit: int | None = None,
    output: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``parley serve`` on a free port, up and healthy: its base URL and its process.
    ``settings`` adds environment variables (``PARLEY_LOG_LEVEL``...).

    Its output (stdout and stderr) goes to the file ``output``, or to a temporary one:
    never to a pipe, which a server fills with its access lines (about 1,100 requests) and
    then waits on, unanswering, for as long as nobody reads it.

    The port is free when chosen, not when the server binds it: another test's server can
    take it in between. Ours then exits (address in use) and is started again on another
    port, and until it holds the port itself, an answer there is not taken for its own."""
    with output.open("w+b") if output is not None else tempfile.TemporaryFile() as log:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            log.seek(0)
            log.truncate()
            port = free_port()
            process = subprocess.Popen(
                parley_command("serve", "--port", str(port), file_size_limit=file_size_limit),
                env=cli_env(database_url, settings),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + STARTUP_TIMEOUT_S
                while not (healthy(base) and listens(process.pid, port)):
                    if process.poll() is not None:
                        log.seek(0)
                        said = log.read().decode()
                        if PORT_TAKEN in said and attempt < PORT_ATTEMPTS:
                            break
                        raise AssertionError(f"server exited {process.returncode}:\n{said}")
                    if time.monotonic() > deadline:
                        raise AssertionError("server did not start in time")
                    time.sleep(0.1)
                else:
                    yield base, process
                    return
            finally:
                if process.poll() is None:
                    stop(process, within=20)


def _state(proc: Path) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command's name: state, parent pid, ..."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie has ended (its new parent may never reap it)."""
    try:
        return _state(Path(f"/proc/{pid}"))[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def cpu_ticks(pid: int) -> int:
    """The CPU time ``pid`` has used, in clock ticks (``/proc/PID/stat``'s utime and stime)."""
    fields = _state(Path(f"/proc/{pid}"))
    return int(fields[11]) + int(fields[12])


def _threads(pid: int) -> str:
    """Each thread of ``pid``: its state and where in the kernel it waits (``wchan``)."""
    found = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda t: int(t.name)):
        try:
            found.append(f"{task.name} {_state(task)[0]} {(task / 'wchan').read_text() or '-'}")
        except OSError:  # ended meanwhile
            continue
    return ", ".join(found)


def _whereabouts(pid: int) -> str:
    """What ``pid`` and its parent are doing, for a test's failure: a process killed that
    is still running (a thread stuck in the kernel), or a zombie its parent never reaps."""
    try:
        state, parent = _state(Path(f"/proc/{pid}"))[:2]
        said = f"{pid}: state {state}, threads [{_threads(pid)}]"
    except OSError as exc:
        return f"{pid}: {exc}"
    try:
        return f"{said}; its parent {parent}: threads [{_threads(int(parent))}]"
    except OSError as exc:  # the parent ended meanwhile
        return f"{said}; its parent {parent}: {exc}"


def reaped(pid: int, *, within: float) -> None:
    """Wait until ``pid`` is gone from ``/proc``: its parent has reaped it (seen it end)."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"{pid} was never reaped: {_whereabouts(pid)}"
        time.sleep(0.01)


def still_alive(pids: list[int], *, within: float) -> list[int]:
    """Of ``pids``, those still running once they were given ``within`` seconds to end."""
    deadline = time.monotonic() + within
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def live_processes() -> Iterator[tuple[int, int, bytes]]:
    """(pid, parent pid, command line with NUL between arguments) of every process alive."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state, parent = _state(proc)[:2]
            command = (proc / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if state not in ("Z", "X"):
            yield int(proc.name), int(parent), command


def multiprocessing_children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of the processes alive that ``pid`` started through
    multiprocessing: its workers (``spawn_main``) and their resource tracker."""
    return [
        (child, command)
        for child, parent, command in live_processes()
        if parent == pid and b"multiprocessing" in command
    ]


def demo_jsonl() -> bytes:
    """The demo data set (seed 3) as the JSONL that ``parley ingest`` reads: more than two
    chunks of a bulk load, so that a worker is started for the second."""
    return b"".join(
        orjson.dumps(event) + b"\n" for event in generate(SCALES["demo"], seed=3, end=datetime(2024, 6, 15, tzinfo=UTC))
    )
