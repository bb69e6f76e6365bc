# -*- test-case-name: tests.test_fastpath -*-
"""
Writing on the byte path without waiting a reactor turn.

Twisted's ``transport.write()`` queues bytes and sends them when the reactor
next finds the descriptor writable: one more loop turn on every hop, which
doubles the tunnel's added latency.  A writer from `fast_writer` sends at
once with one system call when nothing is queued, and hands whatever the
kernel did not take to ``transport.write``, so ordering, buffering and
producer flow control stay Twisted's.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from twisted.internet import abstract, tcp

Writer = Callable[[bytes], None]


def fast_writer(transport: Any) -> Writer:
    """
    A function that writes bytes to `transport` at once where possible.

    Plain TCP connections and file descriptors (serial ports, ptys) get the
    direct path; anything else (TLS, memory transports in tests) its own
    ``write``.
    """
    if isinstance(transport, tcp.Connection):
        send: Callable[[bytes], int] = transport.socket.send
    elif isinstance(transport, abstract.FileDescriptor) and hasattr(transport, "_serial"):
        send = functools.partial(os.write, transport.fileno())
    else:
        return transport.write
    queue = transport.write

    def write(data: bytes) -> None:
        if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting:
            queue(data)
            return
        try:
            sent = send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Twisted's next write attempt finds the error and closes the transport.
            queue(data)
            return
        if sent < len(data):
            queue(data[sent:])

    return write
