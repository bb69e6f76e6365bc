"""cmegw: a software M-Bus gateway (transparent TCP tunnels, web admin, console, M-Bus master)."""

__version__ = "0.1.0"
