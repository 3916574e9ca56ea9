"""Whether a process holds a listening port, read from Linux's /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from parley.tcp_ports import listens


def test_a_port_is_held_by_the_process_listening_on_it_alone():
    with socket.socket() as listening, socket.socket() as bound_only:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        bound_only.bind(("127.0.0.1", 0))  # bound, never listening: not a server
        other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            assert listens(os.getpid(), port)
            assert not listens(other.pid, port)  # another process, whatever it holds
            assert not listens(os.getpid(), bound_only.getsockname()[1])
        finally:
            other.communicate(b"")
    assert not listens(os.getpid(), port)  # closed


def test_a_listening_ipv6_socket_is_found_too():
    with socket.socket(socket.AF_INET6) as listening:
        try:
            listening.bind(("::1", 0))
        except OSError as exc:  # a machine without IPv6's loopback
            pytest.skip(f"no IPv6 loopback: {exc}")
        listening.listen()
        assert listens(os.getpid(), listening.getsockname()[1])
