"""Child processes that end with the process that started them.

A child outlives a parent that is killed outright (SIGKILL, the OOM killer) or ended by a
plain SIGTERM, whose default skips every clean-up: the bench's ``parley serve`` went on
holding the store and its port, and a bulk load's workers waited forever for their next
chunk. Linux's parent-death signal ends them with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ended_with(parent: int, signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A call for a child of ``parent`` to make first, in the child: Linux then sends the
    child ``signum`` once the parent's thread that started it ends, however it ends, and
    the child sends it to itself if the parent has ended already (no signal would come).
    ``prctl`` is found here, so that a forked child (a ``preexec_fn``) only calls it.
    None where there is no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask() -> None:
        prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return ask


def stop(process: subprocess.Popen, *, within: float) -> None:
    """End a child by SIGTERM and wait for it; SIGKILL if it has not ended ``within`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
