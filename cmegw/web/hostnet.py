"""Moved to cmegw.host.read; this name stays until the imports are updated."""

from cmegw.host.read import (  # noqa: F401
    AddressReader,
    HostAddress,
    HostNetwork,
    default_route,
    netlink_addresses,
    read_host_network,
    resolv_conf,
)
