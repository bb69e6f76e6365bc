# -*- test-case-name: tests.test_fastpath -*-
"""
Writing on the byte path without waiting a reactor turn.

Twisted's ``transport.write()`` queues bytes and sends them when the reactor
next finds the descriptor writable: one more loop turn on every hop, which
doubles the tunnel's added latency.  `write_now` sends at once when nothing is
queued and hands whatever the kernel did not take to ``transport.write``, so
ordering, buffering and producer flow control stay Twisted's.
"""

from __future__ import annotations

from twisted.internet.interfaces import ITransport


def write_now(transport: ITransport, data: bytes) -> None:
    """Write `data` to a FileDescriptor-based transport, immediately where possible."""
    try:
        queued = transport.dataBuffer or transport._tempDataBuffer  # type: ignore[attr-defined]
        send = transport.writeSomeData  # type: ignore[attr-defined]
    except AttributeError:  # TLS and other wrapped transports
        transport.write(data)
        return
    if queued or transport.disconnecting or not transport.connected:  # type: ignore[attr-defined]
        transport.write(data)
        return
    sent = send(data)
    if isinstance(sent, int) and sent > 0:
        if sent == len(data):
            return
        data = data[sent:]
    # Nothing sent, part sent or an error: Twisted's buffer takes the rest and
    # its next doWrite reports any error through connectionLost.
    transport.write(data)
