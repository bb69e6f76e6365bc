# -*- test-case-name: tests.test_host_networkmanager -*-
"""
NetworkManager: a connection ``cmegw-IFACE`` made with ``nmcli connection
add`` if missing, set with ``nmcli connection modify`` and activated with
``nmcli connection up``.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer

from cmegw.config.model import NetworkConfig
from cmegw.host.commands import CommandRunner, Refused, Steps
from cmegw.host.settings import dns_servers, static_address, wants_bootp


def nm_client_id(value: str) -> str:
    """The device's binary client ID (hex digits) as nmcli's ``aa:bb`` bytes; text as it is."""
    if len(value) >= 2 and len(value) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", value):
        return ":".join(value[i:i + 2].lower() for i in range(0, len(value), 2))
    return value


def nm_connection_name(interface: str) -> str:
    return f"cmegw-{interface}"


def nmcli_properties(net: NetworkConfig) -> list[str]:
    """The ``nmcli connection modify`` properties and values for the settings."""
    if wants_bootp(net):
        raise Refused("not applied: NetworkManager has no BOOTP client; turn DHCP on, or configure a "
                      "static address")
    dns = ",".join(dns_servers(net))
    props = ["connection.autoconnect", "yes", "connection.autoconnect-priority", "100"]
    if not net.static:
        props += ["ipv4.method", "auto", "ipv4.addresses", "", "ipv4.gateway", "",
                  "ipv4.dhcp-client-id", nm_client_id(net.dhcp_client_id),
                  "ipv4.dhcp-send-hostname", "yes", "ipv4.dhcp-hostname", net.hostname,
                  "ipv4.dns-search", ""]
    else:
        address = static_address(net)
        props += ["ipv4.method", "manual" if address else "link-local", "ipv4.addresses", address,
                  "ipv4.gateway", net.gateway if address else "", "ipv4.dns-search", net.domain]
    props += ["ipv4.dns", dns]
    speed, duplex = net.link_speed, net.link_duplex
    if (speed == "auto") != (duplex == "auto"):
        raise Refused("not applied: NetworkManager sets link speed and duplex together; choose both, or "
                      "auto-negotiate both")
    if speed == "auto":
        props += ["802-3-ethernet.auto-negotiation", "yes", "802-3-ethernet.speed", "0",
                  "802-3-ethernet.duplex", ""]
    else:
        props += ["802-3-ethernet.auto-negotiation", "no", "802-3-ethernet.speed", speed,
                  "802-3-ethernet.duplex", duplex]
    return props


class NetworkManagerBackend:
    """NetworkManager: a connection ``cmegw-IFACE`` set with ``nmcli``."""

    name = "networkmanager"

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    @defer.inlineCallbacks
    def apply(self, net: NetworkConfig, interface: str, steps: Steps, files: list[str]) -> Any:
        props = nmcli_properties(net)
        name = nm_connection_name(interface)
        listing = yield steps.run(["nmcli", "-t", "-f", "NAME", "connection", "show"],
                                  "asking NetworkManager for its connections")
        if name not in listing.output.splitlines():
            yield steps.run(["nmcli", "connection", "add", "type", "ethernet", "ifname", interface,
                             "con-name", name], f"creating the connection {name}")
        yield steps.run(["nmcli", "connection", "modify", name, *props], f"setting the connection {name}")
        yield steps.run(["nmcli", "connection", "up", name], f"activating the connection {name}")
        return f"applied to {interface} by NetworkManager (connection {name})"

    @defer.inlineCallbacks
    def renew(self, net: NetworkConfig, interface: str, steps: Steps) -> Any:
        name = nm_connection_name(interface)
        yield steps.run(["nmcli", "connection", "up", name], f"renewing the DHCP lease of {interface}")
        return f"NetworkManager renewed the DHCP lease of {interface} (connection {name} reactivated)"
