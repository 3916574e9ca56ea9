"""TCP ports for the servers that a process starts as children (the bench's, the tests').
(The store's interface, which endpoints and ingestion talk to, is ``parley.store.port``.)

A port found free is free when chosen, not when the child binds it: another process on the
machine (a test's server beside the bench's smoke run in CI) can take it in between. The
child then exits, saying ``PORT_TAKEN``, and meanwhile the stranger answers on that port,
so an answer there is not the child's until the child holds the port itself (``listens``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

# What ``parley serve`` (uvicorn) prints when its port was taken before it could bind it.
PORT_TAKEN = "address already in use"
# Children started, each on a port found free, before a port taken meanwhile is an error.
PORT_ATTEMPTS = 3

_LISTEN = "0A"  # a socket's state in /proc/net/tcp: TCP_LISTEN
_PROC_NET = Path("/proc/net")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (Linux's
    ``/proc/net/tcp`` and ``tcp6``, matched to the process's descriptors by inode).

    True where there is no ``/proc`` to tell (not Linux): an answer on the port is then
    taken for the child's, as it always was before. It takes 3 to 4 ms of CPU, however
    few sockets there are (the kernel walks its whole table of them): ask it once the port
    answers, not in a tight loop before."""
    tables = [table for table in (_PROC_NET / "tcp", _PROC_NET / "tcp6") if table.is_file()]
    if not tables:
        return True
    inodes = {
        fields[9]
        for table in tables
        for line in table.read_text().splitlines()[1:]
        if (fields := line.split())[1].endswith(f":{port:04X}") and fields[3] == _LISTEN
    }
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir()) if inodes else []
    except OSError:  # ended meanwhile
        return False
    for fd in descriptors:
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                return True
    return False
