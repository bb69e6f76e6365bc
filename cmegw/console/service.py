# -*- test-case-name: tests.test_console -*-
"""
The console part of the gateway: telnet (and SSH when enabled) listeners.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from cmegw.console.protocol import Console, TelnetConsoleFactory

log = Logger(namespace="cmegw.console")


class ConsoleService(service.MultiService):
    """The console's listeners; stopping it (a restart) also ends the open sessions."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setName("console")

    def stopService(self) -> Any:
        self.console.close_all("The gateway is stopping; this session closes.")
        return super().stopService()


def _listener(reactor: Any, endpoint: str, factory: Any, what: str) -> service.IService:
    listener = StreamServerEndpointService(serverFromString(reactor, endpoint), factory)
    listener.setName(what)
    log.info("Console: {what} on {endpoint}", what=what, endpoint=endpoint)
    return listener


def make_console(gateway: Any, clock: Any = None) -> service.IService:
    """
    The console of `gateway`: telnet on the command line's ``--console``
    endpoint, or on ``console.listen`` when ``console.enabled``; SSH on
    ``console.ssh_listen`` when ``console.ssh_enabled``.
    """
    config = gateway.running_config.console
    console = Console(gateway, clock)
    part = ConsoleService(console)
    telnet_endpoint = gateway.overrides.console or (config.listen if config.enabled else None)
    if telnet_endpoint:
        _listener(gateway.reactor, telnet_endpoint, TelnetConsoleFactory(console), "telnet").setServiceParent(part)
    if config.ssh_enabled:
        try:
            from cmegw.console.ssh import ConsoleSSHFactory, host_key_path, load_host_key
        except ImportError as e:  # twisted.conch.ssh needs bcrypt and cryptography (twisted[conch])
            log.error("Console: no SSH listener, twisted.conch.ssh cannot be imported: {e}", e=e)
            return part
        key = load_host_key(host_key_path(gateway.store.path))
        _listener(gateway.reactor, config.ssh_listen, ConsoleSSHFactory(console, key), "ssh").setServiceParent(part)
    return part
