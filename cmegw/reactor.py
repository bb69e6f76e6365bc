# -*- test-case-name: tests.test_tap, tests.test_fastpath -*-
"""
``twistd --reactor=cmegw``: Twisted's epoll reactor with a leaner dispatch.

The stock epoll reactor wraps every ready descriptor's doRead/doWrite in the
legacy logging context (``log.callWithLogger``), about 4 µs per event on
these machines; a tunnel round trip takes two read events, so that context
is a sixth of the gateway's added latency.  This reactor calls Twisted's own
``_doReadOrWrite`` directly (the same error handling and disconnection
logic, only without the per-event log prefix, which cmegw does not use: it
logs through ``twisted.logger`` with its own namespaces), and handles the
common events, bytes to read or room to write and nothing else, with the
read or write branch of ``_doReadOrWrite`` inline.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN, EPOLLOUT
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.python import log


class GatewayReactor(EPollReactor):
    """EPollReactor whose poll loop calls descriptors without a logging context."""

    def doPoll(self, timeout: Any) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            # The common cases, bytes to read or room to write and nothing else:
            # _doReadOrWrite's read or write branch inline.
            if event == EPOLLIN:
                reading = True
            elif event == EPOLLOUT:
                reading = False
            else:
                dispatch(selectable, fd, event)
                continue
            try:
                why = selectable.doRead() if reading else selectable.doWrite()
            except BaseException:
                why = sys.exc_info()[1]
                log.err()
            if why:
                self._disconnectSelectable(selectable, why, reading)

    doIteration = doPoll


def install() -> GatewayReactor:
    """Install the gateway reactor as Twisted's global reactor."""
    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor


__all__ = ["GatewayReactor", "install"]
