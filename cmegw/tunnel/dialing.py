# -*- test-case-name: tests.test_tunnel_dialing,tests.test_tunnel_connect -*-
"""
What connect mode decides, apart from any connection: the order in which a
round tries the hosts, how long it waits after a round found no head-end
(back-off with jitter), and a failed connect in words.  The state it shows
(`cmegw.stats.ConnectStatistics`, which the pages, the console, the API and
the metrics read) is published for every tunnel, connect mode on or not, so it
lives in `cmegw.stats`: this module loads with connect mode, when a tunnel
first uses it.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer, error
from twisted.python.failure import Failure

from cmegw.config.model import ClientEndpoint

#: A wait may be up to this fraction longer than its step (never longer than the longest wait).
JITTER = 0.5


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
