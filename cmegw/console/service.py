# -*- test-case-name: tests.test_console_service -*-
"""
The console part of the gateway: telnet (and SSH when enabled) listeners.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from cmegw.console.protocol import Console
from cmegw.console.telnet import TelnetConsoleFactory

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

    def when_listening(self) -> defer.Deferred:
        """Fires once every console listener listens (systemd's READY waits for it)."""
        return defer.gatherResults([listener.when_listening() for listener in self],
                                    consumeErrors=True).addCallback(lambda _: None)


class ConsoleListener(service.Service):
    """One listener of the console (telnet or SSH): logs where it listens, or why it cannot."""

    def __init__(self, reactor: Any, endpoint: str, factory: Any, what: str) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.factory = factory
        self.what = what
        self.port: Any = None
        self._attempt: defer.Deferred | None = None
        self.setName(what)

    def startService(self) -> None:
        super().startService()
        self._attempt = serverFromString(self.reactor, self.endpoint).listen(self.factory)
        self._attempt.addCallbacks(self._listening, self._failed)

    def _listening(self, port: Any) -> None:
        self.port = port
        host = port.getHost()
        log.info("Console: {what} listening on {host}:{port}", what=self.what, host=getattr(host, "host", host),
                 port=getattr(host, "port", ""))

    def _failed(self, reason: Any) -> None:
        log.error("Console: cannot listen for {what} on {endpoint}: {why}", what=self.what, endpoint=self.endpoint,
                  why=reason.getErrorMessage())

    def when_listening(self) -> defer.Deferred:
        wait: defer.Deferred = defer.Deferred()

        def done(result: Any) -> Any:
            if self.port is not None:
                wait.callback(None)
            return result

        if self._attempt is not None:
            self._attempt.addBoth(done)
        return wait

    def stopService(self) -> Any:
        super().stopService()
        if self._attempt is not None and not self._attempt.called:
            self._attempt.cancel()
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port is not None else None


def make_console(gateway: Any, clock: Any = None) -> service.IService:
    """
    The console of `gateway`: telnet on the command line's ``--console``
    endpoint, or on ``console.listen`` when ``console.enabled``; SSH on
    ``console.ssh_listen`` when ``console.ssh_enabled``.
    """
    config = gateway.state.config.console
    console = Console(gateway, clock)
    part = ConsoleService(console)
    telnet_endpoint = gateway.overrides.console or (config.listen if config.enabled else None)
    if telnet_endpoint:
        telnet_listener = ConsoleListener(gateway.reactor, telnet_endpoint, TelnetConsoleFactory(console), "telnet")
        telnet_listener.setServiceParent(part)
    if config.ssh_enabled:
        try:
            from cmegw.console.ssh import ConsoleSSHFactory, host_key_path, load_host_key
        except ImportError as e:  # twisted.conch.ssh needs bcrypt and cryptography (twisted[conch])
            log.error("Console: no SSH listener, twisted.conch.ssh cannot be imported: {e}", e=e)
            return part
        key = load_host_key(host_key_path(gateway.store.path))
        ssh_listener = ConsoleListener(gateway.reactor, config.ssh_listen, ConsoleSSHFactory(console, key), "ssh")
        ssh_listener.setServiceParent(part)
    return part
