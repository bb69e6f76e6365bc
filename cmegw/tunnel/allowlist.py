# -*- test-case-name: tests.test_tunnel_allowlist -*-
"""
Who may use a tunnel: an allow-list of IPv4 and IPv6 addresses and CIDR ranges.

An empty list lets anyone in (the device's behaviour).  With entries, a
client from outside the list is turned away in ``buildProtocol``: Twisted
closes the socket at once, before any protocol or TLS exists, so the client
never touches the line.  It is counted (the device's *dropped accepts*, and
`AccessStatistics.refused_by_allow_list`) and logged.

An IPv4 client of a dual-stack IPv6 listener arrives as a v4-mapped address
(``::ffff:192.0.2.1``): it is matched as the IPv4 address it is, so one
``192.0.2.0/24`` entry covers both kinds of listener.

`GuardedFactory` is put in front of a tunnel's factory only when the list
has entries; the default tunnel listens with its own factory, unchanged.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol

from cmegw.config.model import allow_list_network
from cmegw.tunnel.base import AccessStatistics, describe
from cmegw.tunnel.eventlog import ConnectionEvents

__all__ = ["AccessStatistics", "AllowList", "GuardedFactory"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; a v4-mapped IPv6 address as the IPv4 address it carries."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AllowList:
    """The networks of a tunnel's ``allow_list`` setting."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)
        self._v4 = tuple(n for n in self.networks if n.version == 4)
        self._v6 = tuple(n for n in self.networks if n.version == 6)

    @classmethod
    def from_setting(cls, entries: Iterable[str], setting: str = "tunnel.allow_list") -> "AllowList":
        return cls(allow_list_network(setting, entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def permits(self, host: str) -> bool:
        """Whether a client from `host` may connect (always, for an empty list)."""
        if not self.networks:
            return True
        address = _address(host)
        if address is None:
            return False  # not an IP client (a UNIX socket): only an empty list lets it in
        candidates = self._v4 if address.version == 4 else self._v6
        return any(address in network for network in candidates)


class GuardedFactory(Factory):
    """
    A tunnel's listening factory behind its allow-list: a client outside is
    closed at once, counted and logged; one inside gets the inner factory's
    protocol, unwrapped (no cost on the byte path).
    """

    noisy = False

    def __init__(self, inner: Any, allow: Callable[[], AllowList], number: int, stats: Any,
                 access: AccessStatistics, clock: Any, events: Any = None) -> None:
        self.inner = inner
        self.allow = allow
        self.number = number
        self.stats = stats
        self.access = access
        self.clock = clock
        #: The tunnel's `cmegw.tunnel.eventlog.ConnectionEvents`: a scanner's flood is summed up, not logged.
        self.events = events if events is not None else ConnectionEvents(number, clock)

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        host = getattr(addr, "host", None)
        if not self.allow().permits(host if isinstance(host, str) else ""):
            peer = describe(addr)
            self.stats.dropped_accepts += 1
            self.access.refused_by_allow_list += 1
            self.access.refused(peer, "not in the allow-list", self.clock.seconds())
            self.events.info("Tunnel {n}: refused {peer}: not in the allow-list", peer=peer)
            return None
        return self.inner.buildProtocol(addr)

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()
