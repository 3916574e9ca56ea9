"""Worker processes for a bulk load, each with a pipe of its own, that end cleanly when one dies.

The standard library's ``ProcessPoolExecutor`` shares one pipe of results among its
workers, and the loader keeps a copy of its writing end. A worker killed outright
(SIGKILL, the OOM killer) while it sent a chunk back left the pool's reader waiting for
the rest of the message, which could never come and never end: 1 load of 20 so killed
hung. Nor does it say how its worker died.

Here each worker has a pipe of its own, and only the worker holds its far end: the
loader's thread for that worker sees the end of the pipe as soon as the worker is gone,
in the middle of a message or between two, and the load ends with ``WorkerDied``, which
names the signal or the exit code.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, TypeVar

R = TypeVar("R")

# Tasks a worker is sent before its first result comes back: one to do, the next read by
# the worker meanwhile.
AHEAD = 2
# How long ``close`` waits for a worker to end once its pipe is closed, before SIGKILL.
ENDING_S = 5.0
# How often a worker's thread, waiting for a task, looks whether its worker still runs.
WATCHING_S = 0.2


class WorkerDied(Exception):
    """A worker process ended before it sent back what it was given to do."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode
        super().__init__(f"a worker process of the load {self.how}")

    @property
    def how(self) -> str:
        """How the worker ended: ``was killed by SIGKILL``, ``exited with code 1``."""
        code = self.exitcode
        if code is None:
            return "ended"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}"
        return f"exited with code {code}"


class WorkerFailed(Exception):
    """The work raised an exception in a worker process, or its result could not be pickled
    to be sent back; the worker's traceback is the message."""


def _serve(
    connection: Connection, work: Callable[..., Any], initializer: Callable[..., None] | None, initargs: tuple
) -> None:
    """A worker's life: do ``work`` on each set of arguments the loader sends, and send back
    the result (or the traceback of its exception), until the loader closes its end.

    A thread reads the next task while the worker does one, so that the worker need not
    wait for the loader between two tasks, nor the loader's send for the worker."""
    if initializer is not None:
        initializer(*initargs)
    tasks: queue.SimpleQueue[tuple[tuple, dict] | None] = queue.SimpleQueue()

    def read() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                tasks.put(connection.recv())
        tasks.put(None)

    threading.Thread(target=read, daemon=True).start()
    while (task := tasks.get()) is not None:
        args, kwargs = task
        try:
            message = ForkingPickler.dumps((True, work(*args, **kwargs)))
        except Exception:  # in the work, or a result that cannot be sent
            message = ForkingPickler.dumps((False, traceback.format_exc()))
        connection.send_bytes(message)


class WorkerPool(Generic[R]):
    """``count`` spawned processes that do ``work`` on what ``submit`` gives them, each
    task to the first worker with room for it.

    A thread of this process serves each worker: it keeps the worker ``AHEAD`` tasks
    ahead, and reads their results, in order, into the tasks' futures. Once a worker dies
    (doing a task or waiting for one), its tasks and every task not yet sent fail with
    ``WorkerDied``, as the standard library's pool breaks. Use it as a context
    manager: leaving it drops the tasks not sent, lets the workers finish those they have
    and end, and kills any that has not ended ``ENDING_S`` later.
    """

    def __init__(
        self,
        count: int,
        work: Callable[..., R],
        *,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._tasks: queue.SimpleQueue[tuple[tuple, dict, Future[R]] | None] = queue.SimpleQueue()
        self._died: WorkerDied | None = None
        # Held while a worker's end is seen (its process reaped) and recorded in ``_died``,
        # and while a task's thread reads ``_died`` before sending the task: a task given
        # once a worker is reaped fails, rather than go to another worker in between.
        self._death = threading.Lock()
        self._processes: list[BaseProcess] = []
        self._threads: list[threading.Thread] = []
        try:
            for _ in range(count):
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs, work, initializer, initargs))
                process.start()
                theirs.close()  # the worker's end is the worker's alone: its death ends the pipe
                self._processes.append(process)
                thread = threading.Thread(target=self._serve_worker, args=(process, ours), daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close()  # the workers started already
            raise

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [process.pid for process in self._processes if process.pid is not None]

    def submit(self, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        self._tasks.put((args, kwargs, future))
        return future

    def _serve_worker(self, process: BaseProcess, connection: Connection) -> None:
        sent: deque[Future[R]] = deque()
        with connection:
            if self._keep_busy(process, connection, sent):
                return
        died = self._lost(process)  # its tasks fail, and every task left, until the pool closes
        while sent:
            sent.popleft().set_exception(died)
        while (task := self._tasks.get()) is not None:
            if task[2].set_running_or_notify_cancel():
                task[2].set_exception(died)

    def _keep_busy(self, process: BaseProcess, connection: Connection, sent: deque[Future[R]]) -> bool:
        """Keep the worker ``AHEAD`` tasks ahead and read their results into their futures,
        until the pool closes (True) or the worker is gone (False, its tasks left in
        ``sent``)."""
        ending = False
        while True:
            while not ending and len(sent) < AHEAD:
                try:
                    task = self._tasks.get(timeout=WATCHING_S) if not sent else self._tasks.get_nowait()
                except queue.Empty:
                    if sent:
                        break
                    if self._ended(process):  # dead while it waited for a task
                        return False
                    continue
                if task is None:
                    ending = True
                    break
                args, kwargs, future = task
                if not future.set_running_or_notify_cancel():
                    continue
                with self._death:
                    died = self._died
                if died is not None:  # a worker is gone
                    future.set_exception(died)
                    continue
                try:
                    message = ForkingPickler.dumps((args, kwargs))
                except Exception as exc:  # the caller sees it as its task's failure
                    future.set_exception(exc)
                    continue
                sent.append(future)
                try:
                    connection.send_bytes(message)
                except OSError:  # the worker is gone
                    return False
            if not sent:
                return True  # ending, with nothing left to read
            try:
                message = connection.recv_bytes()
            except (EOFError, OSError):  # the worker is gone, maybe in the middle of a message
                return False
            future = sent.popleft()
            try:
                done, value = ForkingPickler.loads(message)
            except Exception as exc:  # as above
                future.set_exception(exc)
                continue
            if done:
                future.set_result(value)
            else:
                future.set_exception(WorkerFailed(value))

    def _ended(self, process: BaseProcess) -> bool:
        """Whether ``process`` has ended; if so, the pool's ``WorkerDied`` is set in the same
        step as the process is reaped (``is_alive`` reaps it)."""
        with self._death:
            if process.is_alive():
                return False
            self._died = self._died or WorkerDied(process.exitcode)
            return True

    def _lost(self, process: BaseProcess) -> WorkerDied:
        """The pool's ``WorkerDied``, once a worker is gone: the first to go names it."""
        with self._death:
            _end(process)
            self._died = self._died or WorkerDied(process.exitcode)
            return self._died

    def __enter__(self) -> WorkerPool[R]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the tasks not sent, let the workers finish those they have and end, and
        kill any that has not ended ``ENDING_S`` later."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[2].cancel()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join(ENDING_S)
        for process in self._processes:
            _end(process)


def _end(process: BaseProcess) -> None:
    """Wait for ``process`` to end, and kill it if it has not ``ENDING_S`` later."""
    process.join(ENDING_S)
    if process.is_alive():
        process.kill()
        process.join()
