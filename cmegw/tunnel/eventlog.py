# -*- test-case-name: tests.test_tunnel_eventlog -*-
"""
Connection events of a tunnel in the log, without letting a flood drown it.

A field engineer reads "client connected / refused / disconnected" lines to
see what happened on a tunnel.  A client that connects in a loop (a port
scanner, a head-end retrying without pause, a load test) would write
thousands of them a second, and formatting them would cost the gateway more
than the connections themselves.  `ConnectionEvents` logs the first `limit`
events of each second one by one; past that it counts them and logs one line
that sums them up when the second is over.  The tunnel's statistics count
every connection either way.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger(namespace="cmegw.tunnel")

#: Connection events logged one by one per tunnel and second.
EVENTS_PER_SECOND = 20


class ConnectionEvents:
    """The connection log of one tunnel, at most `limit` lines per `period`."""

    def __init__(self, number: int, clock: Any, limit: int = EVENTS_PER_SECOND, period: float = 1.0) -> None:
        self.number = number
        self.clock = clock
        self.limit = limit
        self.period = period
        self._window_end = 0.0
        self._logged = 0
        self._suppressed = 0
        self._summary: Any = None

    def info(self, fmt: str, **fields: Any) -> None:
        """Log one event (a `twisted.logger` format with `fields`), or count it during a flood."""
        now = self.clock.seconds()
        if now >= self._window_end:
            self._window_end = now + self.period
            self._logged = 0
        if self._logged < self.limit:
            self._logged += 1
            log.info(fmt, n=self.number, **fields)
            return
        self._suppressed += 1
        if self._summary is None:
            self._summary = self.clock.callLater(self._window_end - now, self.flush)

    def flush(self) -> None:
        """Log the summary of the events not logged one by one (at once; used at stop)."""
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
        count, self._suppressed = self._suppressed, 0
        if count:
            log.info("Tunnel {n}: {count} more connection events in the last {period:g} s were not logged one by "
                     "one (more than {limit} a second); the tunnel statistics count them all",
                     n=self.number, count=count, period=self.period, limit=self.limit)
