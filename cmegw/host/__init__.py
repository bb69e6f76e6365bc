"""
The host's network: reading its live state from the kernel (`read_host_network`,
for the Status and Network pages) and, only when ``network.apply_to_host`` is
on, applying the stored Network settings to it (`NetworkApplier`) through
systemd-networkd or NetworkManager.

- `cmegw.host.read`: the live state (/proc, /sys, rtnetlink, resolv.conf); only reads.
- `cmegw.host.apply`: `NetworkApplier` and its `HostNetworkResult`.
- `cmegw.host.networkd`, `cmegw.host.networkmanager`: the two backends.
- `cmegw.host.commands`: running their commands under the reactor, with a time limit.
- `cmegw.host.settings`: what both backends make of the settings.

The names below are loaded when first used: the pages that only read the
host do not load the backends.
"""

from __future__ import annotations

from cmegw.lazy import lazy_names

_HOMES = {
    "HostAddress": "read",
    "HostNetwork": "read",
    "default_route": "read",
    "read_host_network": "read",
    "HostNetworkResult": "apply",
    "NetworkApplier": "apply",
    "default_interface": "apply",
    "CommandRun": "commands",
    "CommandRunner": "commands",
    "Refused": "commands",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_names(__name__, _HOMES)
