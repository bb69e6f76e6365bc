"""Tunnels: the TCP side of each line."""
