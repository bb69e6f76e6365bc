# -*- test-case-name: tests.test_host_read -*-
"""
The live network state of the host, read from the kernel: the device's
Status and Network pages show it beside the stored (configured) values.

Only reads: /proc/net/route (default gateway), /sys/class/net (MAC, link
state, speed, duplex), one rtnetlink address dump (addresses, masks and
whether an address is dynamic, i.e. came from DHCP), /etc/resolv.conf (DNS,
domain).  Nothing here changes the host.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from typing import Callable

import attrs

# linux/rtnetlink.h, linux/if_addr.h
_RTM_GETADDR = 22
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_FLAGS = 8
_IFA_F_PERMANENT = 0x80
#: Most messages read from one netlink dump (a bound on the loop).
_MAX_NETLINK_READS = 64


@attrs.frozen
class HostAddress:
    interface: str
    address: str
    netmask: str
    #: True for an address with a lease (DHCP), False for a static one.
    dynamic: bool


@attrs.frozen
class HostNetwork:
    """What the kernel says about the host's main interface (the one of the default route)."""

    interface: str = ""
    mac: str = ""
    operstate: str = ""
    speed: str = ""
    duplex: str = ""
    hostname: str = ""
    domain: str = ""
    search: tuple[str, ...] = ()
    address: str = ""
    netmask: str = ""
    address_source: str = ""
    gateway: str = ""
    dns: tuple[str, ...] = ()

    @property
    def link_text(self) -> str:
        """``100 Mbit/s full duplex``, or what is known."""
        if not self.speed and not self.duplex:
            return "unknown"
        speed = f"{self.speed} Mbit/s" if self.speed else "speed unknown"
        return f"{speed}, {self.duplex or 'unknown'} duplex"

    @property
    def primary_dns(self) -> str:
        return self.dns[0] if self.dns else ""

    @property
    def secondary_dns(self) -> str:
        return self.dns[1] if len(self.dns) > 1 else ""


AddressReader = Callable[[], list[HostAddress]]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def default_route(root: Path = Path("/")) -> tuple[str, str]:
    """(interface, gateway) of the IPv4 default route, from /proc/net/route."""
    for line in _read(root / "proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            gateway = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
            return fields[0], gateway
    return "", ""


def resolv_conf(root: Path = Path("/")) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """(name servers, domain, search list) of /etc/resolv.conf."""
    servers: list[str] = []
    domain = ""
    search: tuple[str, ...] = ()
    for line in _read(root / "etc/resolv.conf").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
        elif len(fields) >= 2 and fields[0] == "domain":
            domain = fields[1]
        elif len(fields) >= 2 and fields[0] == "search":
            search = tuple(fields[1:])
    return tuple(servers), domain or (search[0] if search else ""), search


def netlink_addresses() -> list[HostAddress]:
    """Every IPv4 address of the host, by one RTM_GETADDR dump (no traffic leaves the host)."""
    names = {index: name for index, name in socket.if_nameindex()}
    found: list[HostAddress] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        request = struct.pack("=IHHII", 16 + 8, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        request += struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
        sock.send(request)
        for _ in range(_MAX_NETLINK_READS):
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < 16:
                    return found
                found.extend(_parse_address(data[offset + 16:offset + length], names))
                offset += (length + 3) & ~3
    return found


def _parse_address(body: bytes, names: dict[int, str]) -> list[HostAddress]:
    if len(body) < 8:
        return []
    family, prefix, flags, _scope, index = struct.unpack_from("=BBBBI", body)
    if family != socket.AF_INET:
        return []
    address = ""
    offset = 8
    while offset + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, offset)
        if length < 4:
            break
        value = body[offset + 4:offset + length]
        if kind == _IFA_LOCAL and len(value) == 4:
            address = socket.inet_ntoa(value)
        elif kind == _IFA_ADDRESS and len(value) == 4 and not address:
            address = socket.inet_ntoa(value)
        elif kind == _IFA_FLAGS and len(value) == 4:
            flags = struct.unpack("=I", value)[0]
        offset += (length + 3) & ~3
    if not address:
        return []
    mask = str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
    return [HostAddress(names.get(index, str(index)), address, mask, not flags & _IFA_F_PERMANENT)]


def _safe_addresses(reader: AddressReader) -> list[HostAddress]:
    try:
        return reader()
    except OSError:
        return []


def read_host_network(root: Path = Path("/"), addresses: AddressReader = netlink_addresses) -> HostNetwork:
    """The live state of the interface that carries the default route (or the first one that is up)."""
    interface, gateway = default_route(root)
    net = root / "sys/class/net"
    if not interface:
        try:
            candidates = sorted(p.name for p in net.iterdir() if p.name != "lo")
        except OSError:
            candidates = []
        up = [c for c in candidates if _read(net / c / "operstate") == "up"]
        interface = (up or candidates or [""])[0]
    found = [a for a in _safe_addresses(addresses) if a.interface == interface]
    servers, domain, search = resolv_conf(root)
    speed = _read(net / interface / "speed") if interface else ""
    if speed.startswith("-") or not speed.isdigit():
        speed = ""
    first = found[0] if found else None
    return HostNetwork(
        interface=interface,
        mac=_read(net / interface / "address") if interface else "",
        operstate=_read(net / interface / "operstate") if interface else "",
        speed=speed,
        duplex="" if not interface or _read(net / interface / "duplex") == "unknown"
        else _read(net / interface / "duplex"),
        hostname=socket.gethostname() if root == Path("/") else _read(root / "etc/hostname"),
        domain=domain,
        search=search,
        address=first.address if first else "",
        netmask=first.netmask if first else "",
        address_source=("DHCP" if first.dynamic else "static") if first else "",
        gateway=gateway,
        dns=servers,
    )
