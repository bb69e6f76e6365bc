"""Moved to cmegw.host (apply, commands, networkd, networkmanager); this name stays until the imports are updated."""

from cmegw.host.apply import HostNetworkResult, NetworkApplier, default_interface  # noqa: F401
from cmegw.host.commands import (  # noqa: F401
    COMMAND_TIMEOUT,
    OUTPUT_LIMIT,
    CommandRun,
    CommandRunner,
    Refused,
    explain,
)
from cmegw.host.networkd import (  # noqa: F401
    MAX_STALE_SCAN,
    NETWORKD_BOOTP_VERSION,
    NETWORKD_DIRECTORY,
    NetworkdBackend,
    ethtool_arguments,
    networkd_network,
)
from cmegw.host.networkmanager import (  # noqa: F401
    NetworkManagerBackend,
    nm_client_id,
    nm_connection_name,
    nmcli_properties,
)
from cmegw.host.settings import prefix_length, wants_bootp  # noqa: F401
