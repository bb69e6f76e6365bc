# -*- test-case-name: tests.test_tunnel_dialing,tests.test_tunnel_connect -*-
"""
What connect mode decides and shows, apart from any connection: the order in
which a round tries the hosts, how long it waits after a round found no
head-end (back-off with jitter), a failed connect in words, and the state
(`ConnectStatistics`) that the pages, the console, the API and the metrics read.
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
from twisted.internet import defer, error
from twisted.python.failure import Failure

from cmegw.config.model import ClientEndpoint

#: A wait may be up to this fraction longer than its step (never longer than the longest wait).
JITTER = 0.5
CONNECT_DISABLED = "disabled"
CONNECT_NO_HOSTS = "no hosts"
CONNECT_IDLE = "idle"
CONNECT_CONNECTING = "connecting"
CONNECT_CONNECTED = "connected"
CONNECT_RETRY = "retry"
CONNECT_HELD = "line held"



def backoff_delay(failed_rounds: int, first: float, longest: float, random: Callable[[], float]) -> float:
    """
    Seconds to wait after `failed_rounds` (1, 2, ...) rounds in a row found
    no head-end: `first` doubled each round up to `longest`, plus up to
    `JITTER` of it (from `random()` in [0, 1)), never shorter than `first` nor
    longer than `longest` (when `longest` < `first`, `first` is the cap).
    """
    longest = max(longest, first)
    step = min(longest, first * 2.0 ** min(max(failed_rounds, 1) - 1, 32))
    return min(longest, step * (1.0 + JITTER * random()))


def host_order(count: int, mode: str, after: int) -> list[int]:
    """Indexes of the hosts one round tries: from the first (sequential), or starting at `after` (round robin)."""
    if count <= 0:
        return []
    start = after % count if mode == "round-robin" else 0
    return [(start + i) % count for i in range(count)]


def connect_failure_text(reason: Failure, endpoint: ClientEndpoint) -> str:
    """A failed TCP connect, in words."""
    if reason.check(error.ConnectionRefusedError):
        return f"connection refused (nothing listens on {endpoint})"
    if reason.check(error.TimeoutError, defer.TimeoutError):
        return f"no answer within {endpoint.timeout:g} s"
    if reason.check(error.DNSLookupError):
        return f"cannot resolve {endpoint.host}"
    if reason.check(error.NoRouteError):
        return f"no route to {endpoint.host}"
    return reason.getErrorMessage()


@attrs.define
class ConnectStatistics:
    """The connect tunnel's state, for Status, M-Bus TCP/IP, the console and the API."""

    state: str = CONNECT_DISABLED
    #: The host (as configured) being dialled or connected, and its number 1..12.
    host: str = ""
    host_number: int = 0
    #: The head-end's address while connected.
    peer: str = ""
    retry_at: float | None = None
    #: Who holds the line while the connect tunnel waits for it.
    holder: str = ""
    attempts: int = 0
    #: Rounds in a row in which no host answered (the back-off step).
    failed_rounds: int = 0
    tls_failures: int = 0
    #: The latest failure: which host, why (in words), when (clock seconds).
    last_error: str = ""
    last_error_at: float | None = None
    #: On-data bytes waiting for the connection.
    buffered: int = 0

    def text(self, now: float) -> str:
        """The device's words: disabled / connecting to X / connected to X / waiting N s before retry."""
        if self.state == CONNECT_CONNECTING:
            return f"connecting to {self.host}"
        if self.state == CONNECT_CONNECTED:
            return f"connected to {self.host}"
        if self.state == CONNECT_RETRY and self.retry_at is not None:
            return f"waiting {max(0, math.ceil(self.retry_at - now - 1e-9))} s before retry"
        if self.state == CONNECT_HELD:
            return f"waiting for the line (in use by {self.holder})" if self.holder else "waiting for the line"
        if self.state == CONNECT_IDLE:
            return "waiting for data from the line"
        if self.state == CONNECT_NO_HOSTS:
            return "no host configured"
        return self.state

    def as_dict(self, now: float) -> dict[str, object]:
        d = attrs.asdict(self)
        d["text"] = self.text(now)
        return d
