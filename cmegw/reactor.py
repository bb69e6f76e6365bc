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

Its main loop takes the common turn, no timed call due, none new, no call
from a thread and no stop pending, without ``runUntilCurrent`` and
``timeout()`` (which would each look at all of that again): the poll's
timeout is the next timed call's.  Every other turn is Twisted's.  On the
tunnel's byte path (two turns a round trip) that is 2 to 3 % of the added
latency and 1 to 2 us of CPU a round trip (bench/README.md, "Tail latency,
2026-12-07 afternoon").
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN, EPOLLOUT
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.logger import Logger
from twisted.python import log

_log = Logger(namespace="cmegw.reactor")
#: What Twisted's main loop does with an exception that reaches it: log it and turn again.
_unexpected = _log.failureHandler("Unexpected error in main loop")
#: The longest poll timeout (2**31 ms, epoll_wait's int), as Twisted's `timeout()` bounds it.
LONGEST_TIMEOUT = 2147483
#: Beyond this many cancelled timed calls Twisted's `runUntilCurrent` compacts its heap: the full turn then.
CANCELLATIONS_COMPACTED = 50


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

    def mainLoop(self) -> None:
        """Twisted's `mainLoop`, with its common turn (nothing timed due or new) taken in one place."""
        while self._started:
            with _unexpected:
                while self._started:
                    pending = self._pendingTimedCalls
                    if (self.threadCallQueue or self._newTimedCalls or self._justStopped
                            or self._cancellations > CANCELLATIONS_COMPACTED
                            or (pending and pending[0].time <= self.seconds())):
                        self.runUntilCurrent()
                        timeout = self.timeout()
                    elif pending:
                        timeout = max(0, min(LONGEST_TIMEOUT, pending[0].time - self.seconds()))
                    else:
                        timeout = None
                    self.doIteration(self.running and timeout)
        _log.info("Main loop terminated.")


def install() -> GatewayReactor:
    """Install the gateway reactor as Twisted's global reactor."""
    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor


__all__ = ["GatewayReactor", "install"]
