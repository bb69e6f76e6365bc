# -*- test-case-name: tests.test_host_networkd,tests.test_host_networkmanager -*-
"""What both backends make of the Network settings: the static address, the DNS servers, BOOTP."""

from __future__ import annotations

import ipaddress

from cmegw.config.model import NetworkConfig


def prefix_length(netmask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen


def static_address(net: NetworkConfig) -> str:
    """``ip/prefix``; without a mask the device's rule applies (the mask of the address's class)."""
    if not net.ip_address:
        return ""
    if net.netmask:
        return f"{net.ip_address}/{prefix_length(net.netmask)}"
    from cmegw.config.model import parse_address_and_mask

    ip, mask = parse_address_and_mask("network.ip_address", net.ip_address)
    return f"{ip}/{prefix_length(mask)}"


def dns_servers(net: NetworkConfig) -> list[str]:
    return [a for a in (net.primary_dns, net.secondary_dns) if a]


def wants_bootp(net: NetworkConfig) -> bool:
    """BOOTP runs only when it is on and DHCP is off (with both on, DHCP runs)."""
    return net.bootp and not net.dhcp
