"""The bulk loader's worker pool on its own: results in order, a task's exception, a
worker that exits. (A worker killed during a real load: tests/test_load_stop.py.)"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from parley.ingest.workers import WorkerDied, WorkerFailed, WorkerPool
from tests.processes import reaped, still_alive


def _square_or_fail(n: int, *, exit_on: int | None = None, unsendable: bool = False) -> object:
    """Run in the workers (so at module level, where a spawned process finds it)."""
    if n == exit_on:
        os._exit(3)
    if unsendable:
        return threading.Lock()  # cannot be pickled
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


def test_every_task_comes_back_to_its_own_future():
    with WorkerPool(2, _square_or_fail) as pool:
        futures = [pool.submit(n) for n in range(200)]
        assert [future.result(timeout=60) for future in futures] == [n * n for n in range(200)]


def test_an_exception_in_a_task_or_a_result_that_cannot_be_sent_fails_that_task_alone():
    with WorkerPool(2, _square_or_fail) as pool:
        failing, next_one = pool.submit(-4), pool.submit(5)
        with pytest.raises(WorkerFailed, match="ValueError: negative: -4"):
            failing.result(timeout=60)
        assert next_one.result(timeout=60) == 25
        unsendable, after = pool.submit(6, unsendable=True), pool.submit(7)
        with pytest.raises(WorkerFailed, match=r"cannot pickle '_thread\.lock' object"):
            unsendable.result(timeout=60)
        assert after.result(timeout=60) == 49


def test_a_worker_that_exits_fails_its_task_and_every_later_one():
    pool = WorkerPool(2, _square_or_fail)
    with pool:
        assert pool.submit(2).result(timeout=60) == 4
        pids = pool.pids
        dying = pool.submit(7, exit_on=7)
        with pytest.raises(WorkerDied) as died:
            dying.result(timeout=60)
        assert died.value.exitcode == 3
        assert str(died.value) == "a worker process of the load exited with code 3"
        with pytest.raises(WorkerDied):
            pool.submit(3).result(timeout=60)
    assert still_alive(pids, within=10) == []


def test_a_worker_killed_while_it_waits_fails_every_later_task():
    # As the standard library's pool breaks: whichever worker a task would have gone to.
    with WorkerPool(2, _square_or_fail) as pool:
        assert pool.submit(2).result(timeout=60) == 4
        killed = pool.pids[0]
        os.kill(killed, signal.SIGKILL)
        reaped(killed, within=30)  # the pool has seen it die
        for future in [pool.submit(n) for n in range(4)]:
            with pytest.raises(WorkerDied, match=r"^a worker process of the load was killed by SIGKILL$"):
                future.result(timeout=60)
