"""A bulk load stopped by SIGINT or SIGTERM: what it read is stored, and it says how far it got.

By default a SIGTERM (``timeout``, ``kill``, a service manager) ended ``parley ingest`` at
once, and a Ctrl-C ended it by an exception: either way its report was never printed,
so nobody knew which lines were stored. Now the first signal stops the reading of lines;
the chunks already read are stored (the bulk loader's workers may hold up to two groups
of them, a few seconds of work), the report is printed, and the command exits 128 plus
the signal's number. A second signal ends it at once, as that signal's default does: the
transaction under way is not stored (DuckDB writes a transaction to its log when it
commits), and every one committed before is.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_END = object()


class Stopped(Exception):
    """Raised by the handler while the load waits for its next chunk (a pipe that has no
    more lines yet, a generator at work): nothing is being stored then."""


class LoadStop:
    """The signals that stop a load, and whether one did.

    ``feed`` is the load's source of chunks: it ends once a signal has come. ``signum`` is
    the first signal's number, ``cut_short`` whether the load left chunks unread (a signal
    that comes after the last chunk was read stops nothing).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.cut_short = False
        self._reading = False

    @classmethod
    @contextmanager
    def installed(cls) -> Iterator[LoadStop]:
        """A stop whose handlers are set for the block. Only the main thread can set
        them, and a signal that is ignored (SIGINT for a job started in the background by
        a shell) stays ignored."""
        stop = cls()
        if threading.current_thread() is not threading.main_thread():
            yield stop
            return
        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, stop._handle)
        try:
            yield stop
        finally:
            for signum, handler in previous.items():
                if handler is not signal.SIG_IGN:
                    signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            # Not by an exception: DuckDB turns one raised during a statement into its own
            # error ("Query interrupted"), which ended the load with a traceback.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self._reading:
            raise Stopped

    def feed(self, chunks: Iterable[T]) -> Iterator[T]:
        """``chunks`` until a signal comes. A signal that comes while the next chunk is
        being read ends the reading at once, that chunk dropped."""
        iterator = iter(chunks)
        while self.signum is None:
            self._reading = True
            try:
                try:
                    chunk = next(iterator, _END)
                finally:
                    self._reading = False
            except Stopped:
                chunk = _END
            if self.signum is not None:
                self.cut_short = True
                return
            if chunk is _END:
                return
            yield chunk  # type: ignore[misc]  # not _END
        self.cut_short = True

    def broke(self) -> bool:
        """Whether a failure of the load's workers is the stop's: a signal sent to the
        loader's whole process group (a terminal's Ctrl-C, ``timeout``'s SIGTERM) ends a
        worker that has not set its signals yet, in its first fraction of a second. The
        load is then cut short."""
        if self.signum is None:
            return False
        self.cut_short = True
        return True
