"""
Tests for cmegw.console.service: make_console, where it listens.
"""

from __future__ import annotations

import os
import stat
import sys
from unittest import mock

from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.console.service import make_console
from cmegw.service import GatewayService, Overrides
from tests.test_console_framework import make_gateway
from tests.test_console_telnet import FakeClient



class ServiceTests(TestCase):
    """make_console: where it listens."""

    def gateway(self, overrides: Overrides = Overrides(), **settings: str) -> GatewayService:
        gateway = make_gateway(self, overrides)
        config = gateway.store.config
        for name, value in settings.items():
            config = apply_setting(config, name.replace("__", "."), value)
        gateway.store.change(config)
        gateway.running_config = config
        return gateway

    def ports(self, gateway: GatewayService) -> list[tuple[int, str]]:
        part = make_console(gateway)
        part.startService()
        self.addCleanup(part.stopService)
        return [(port, interface) for port, factory, backlog, interface in gateway.reactor.tcpServers]

    def test_listens_on_the_configured_endpoint(self):
        gateway = self.gateway(console__listen="tcp:2424:interface=127.0.0.1")
        self.assertEqual(self.ports(gateway), [(2424, "127.0.0.1")])

    def test_command_line_wins(self):
        gateway = self.gateway(Overrides(console="tcp:2525:interface=127.0.0.1"), console__enabled="off")
        self.assertEqual(self.ports(gateway), [(2525, "127.0.0.1")])

    def test_disabled(self):
        self.assertEqual(self.ports(self.gateway(console__enabled="off")), [])

    def test_ssh(self):
        try:
            import cmegw.console.ssh  # noqa: F401
        except ImportError as e:
            raise self.skipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        gateway = self.gateway(console__ssh_enabled="on", console__ssh_listen="tcp:2626:interface=127.0.0.1",
                               console__listen="tcp:2424:interface=127.0.0.1")
        self.assertEqual(sorted(self.ports(gateway)), [(2424, "127.0.0.1"), (2626, "127.0.0.1")])
        key = gateway.store.path.with_name("ssh_host_ed25519_key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        first = key.read_bytes()
        self.ports(gateway)
        self.assertEqual(key.read_bytes(), first, "the host key is made once")

    def test_stop_closes_sessions(self):
        gateway = self.gateway()
        part = make_console(gateway)
        part.startService()
        client = FakeClient(part.console)
        part.stopService()
        self.assertTrue(client.closed)
        self.assertIn("The gateway is stopping", client.text())

    def test_registered_in_the_tap(self):
        from cmegw.tap import part_factories

        self.assertIn(make_console, part_factories())

    def test_ssh_unavailable(self):
        """Without twisted.conch.ssh (no bcrypt), telnet still listens and the log says why."""
        gateway = self.gateway(console__ssh_enabled="on", console__listen="tcp:2424:interface=127.0.0.1")
        with mock.patch.dict(sys.modules, {"cmegw.console.ssh": None}):
            self.assertEqual(self.ports(gateway), [(2424, "127.0.0.1")])
