# -*- test-case-name: tests.test_login -*-
"""
The login limiter the web and the console share: failed logins counted per
source address, a growing wait after a few, then a block for a while.

``LoginLimiter(clock)`` is made once by the gateway service and published as
``GatewayState.logins``; the web's authentication gate and the console (its
telnet login and SSH's password login) ask it before checking a password
(``wait(source)``: 0 when a login may be tried now, else the seconds to
wait) and tell it the outcome (``failed(...)``, ``succeeded(source)``).

The limit is per source address, so that an attacker cannot lock the
administrator out from elsewhere; a good login from an address clears its
count.  IPv6 sources are counted per /64 (one host has a whole /64), an
IPv4-mapped IPv6 address as its IPv4 address.  At most `MAX_SOURCES`
sources are remembered (the one that failed longest ago is forgotten
first), and a source that has not failed for `FORGET_AFTER` seconds is
forgotten.

Failures are logged here, one line each with the face, the source, the
realm and the user name (as ``repr``, so control characters cannot forge
log lines), and counted in `LoginStatistics` (``failures`` and ``refused``
by face: the metrics' ``cmegw_login_failures_total{face}``).
"""

from __future__ import annotations

import collections
import ipaddress
from typing import Any

import attrs
from twisted.logger import Logger

from cmegw.stats import Counters

log = Logger(namespace="cmegw.login")

#: Failures from one source answered as usual; the wait starts after them.
FREE_FAILURES = 5
#: The wait after the first failure past the free ones; it doubles with each further one.
FIRST_WAIT = 1.0
#: Failures after which the source is blocked for `BLOCK_SECONDS`.
BLOCK_AFTER = 10
#: Seconds a source is blocked (and the wait after every further failure while it is remembered).
BLOCK_SECONDS = 300.0
#: Seconds without a failure after which a source is forgotten.
FORGET_AFTER = 900.0
#: Sources remembered at most.
MAX_SOURCES = 1024

#: The faces that log in.
WEB = "web"
CONSOLE = "console"
FACES = (WEB, CONSOLE)


def source_key(host: Any) -> str:
    """What failures are counted by: the IPv4 address, the /64 of an IPv6 address, else the text."""
    text = str(host or "?")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@attrs.define
class LoginStatistics(Counters):
    """Login failures and logins refused (the source was waiting or blocked), by face."""

    failures: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(FACES, 0))
    refused: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(FACES, 0))


@attrs.define
class _Source:
    failures: int
    last: float
    not_before: float


class LoginLimiter:
    """Failed logins per source address, with the clock injected (see the module docstring)."""

    def __init__(self, clock: Any, free: int = FREE_FAILURES, first_wait: float = FIRST_WAIT,
                 block_after: int = BLOCK_AFTER, block_seconds: float = BLOCK_SECONDS,
                 forget_after: float = FORGET_AFTER, max_sources: int = MAX_SOURCES) -> None:
        self.clock = clock
        self.free = free
        self.first_wait = first_wait
        self.block_after = block_after
        self.block_seconds = block_seconds
        self.forget_after = max(forget_after, block_seconds)
        self.max_sources = max_sources
        self.stats = LoginStatistics()
        #: By source key, the one that failed longest ago first.
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _expire(self, now: float) -> None:
        while self._sources:
            key, record = next(iter(self._sources.items()))
            if now - record.last < self.forget_after:
                break
            del self._sources[key]

    def wait(self, host: Any) -> float:
        """0 when a login from `host` may be tried now, else the seconds it has to wait."""
        now = self._now()
        self._expire(now)
        record = self._sources.get(source_key(host))
        return max(0.0, record.not_before - now) if record is not None else 0.0

    def blocked(self, host: Any) -> bool:
        """Whether `host` is past `block_after` failures (and still remembered)."""
        record = self._sources.get(source_key(host))
        return record is not None and record.failures >= self.block_after and self.wait(host) > 0

    def refused(self, host: Any, face: str, wait: float) -> None:
        """A login from `host` was not even tried: it had `wait` seconds to wait."""
        self.stats.refused[face] = self.stats.refused.get(face, 0) + 1
        log.info("Login: {face} login from {source} refused, {wait:.0f} s to wait after failed logins",
                 face=face, source=str(host), wait=wait)

    def failed(self, host: Any, face: str, user: Any, realm: str = "") -> float:
        """A wrong user name or password from `host`: logged, counted; returns the wait it now has."""
        now = self._now()
        self._expire(now)
        key = source_key(host)
        record = self._sources.pop(key, None) or _Source(0, now, now)
        record.failures += 1
        record.last = now
        past = record.failures - self.free
        if record.failures >= self.block_after:
            record.not_before = now + self.block_seconds
        elif past > 0:
            record.not_before = now + min(self.first_wait * 2 ** (past - 1), self.block_seconds)
        self._sources[key] = record
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        self.stats.failures[face] = self.stats.failures.get(face, 0) + 1
        wait = max(0.0, record.not_before - now)
        log.warn("Login: {face} login failed for user {user} realm {realm} from {source} "
                 "({failures} failures from there{then})",
                 face=face, user=escaped(user), realm=escaped(realm), source=str(host), failures=record.failures,
                 then=f"; blocked for {wait:.0f} s" if record.failures >= self.block_after
                 else (f"; {wait:.0f} s to wait" if wait else ""))
        return wait

    def succeeded(self, host: Any) -> None:
        """A good login from `host`: its failures are forgotten."""
        self._sources.pop(source_key(host), None)

    def __len__(self) -> int:
        return len(self._sources)


def escaped(name: Any) -> str:
    """A user name (or realm) as it is logged: ``repr`` of the text, at most 64 characters of it."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = str(name)
    return repr(text[:64] + ("..." if len(text) > 64 else ""))


__all__ = ["LoginLimiter", "LoginStatistics", "source_key", "escaped", "WEB", "CONSOLE", "FACES",
           "FREE_FAILURES", "BLOCK_AFTER", "BLOCK_SECONDS", "FORGET_AFTER", "MAX_SOURCES"]
