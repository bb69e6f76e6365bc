"""Tests for cmegw.tunnel.allowlist: who may use a tunnel."""

import socket

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config, ConfigError, TunnelConfig
from cmegw.config.settings import apply_setting
from cmegw.stats import TunnelStatistics
from cmegw.testing import FakeLine
from cmegw.tunnel.accept import TunnelFactory, TunnelService
from cmegw.tunnel.base import TunnelProtocol
from cmegw.tunnel.allowlist import AccessStatistics, AllowList, GuardedFactory


class MatchingTests(TestCase):
    def test_empty_means_anyone(self):
        allow = AllowList.from_setting([])
        self.assertFalse(allow)
        for host in ("127.0.0.1", "2001:db8::1", "::ffff:10.1.2.3", "not an address"):
            self.assertTrue(allow.permits(host))

    def test_ipv4_addresses_and_ranges(self):
        allow = AllowList.from_setting(["192.168.1.10", "10.0.0.0/8"])
        self.assertTrue(allow.permits("192.168.1.10"))
        self.assertFalse(allow.permits("192.168.1.11"))
        self.assertTrue(allow.permits("10.200.3.4"))
        self.assertFalse(allow.permits("11.0.0.1"))
        self.assertFalse(allow.permits("2001:db8::1"))

    def test_ipv6_addresses_and_ranges(self):
        allow = AllowList.from_setting(["2001:db8::/32", "::1"])
        self.assertTrue(allow.permits("2001:db8:5::7"))
        self.assertTrue(allow.permits("::1"))
        self.assertFalse(allow.permits("2001:db9::1"))
        self.assertFalse(allow.permits("127.0.0.1"))
        self.assertTrue(allow.permits("2001:db8::1%eth0"), "a zone index does not hide the address")

    def test_v4_mapped_v6_matches_as_ipv4(self):
        allow = AllowList.from_setting(["192.0.2.0/24"])
        self.assertTrue(allow.permits("::ffff:192.0.2.44"))
        self.assertFalse(allow.permits("::ffff:198.51.100.1"))
        mapped = AllowList.from_setting(["::ffff:192.0.2.0/120"])
        self.assertFalse(mapped.permits("192.0.2.1"), "a v6 entry is matched against v6 clients only")

    def test_host_bits_of_a_range_are_ignored(self):
        self.assertTrue(AllowList.from_setting(["192.168.1.77/24"]).permits("192.168.1.3"))

    def test_not_an_ip_client(self):
        self.assertFalse(AllowList.from_setting(["127.0.0.1"]).permits(""))


class SettingTests(TestCase):
    def test_malformed_entries_refused_naming_the_field(self):
        for bad in ("10.0.0.0/33", "300.1.1.1", "2001:db8::/129", "example.com", "10.0.0.0/8/8"):
            with self.assertRaises(ConfigError) as caught:
                apply_setting(Config(), "tunnel.1.allow_list", f"127.0.0.1, {bad}")
            self.assertEqual(caught.exception.setting, "tunnel.1.allow_list")
            self.assertEqual(caught.exception.value, bad)
            self.assertIn("CIDR", str(caught.exception))

    def test_too_many_entries(self):
        entries = ", ".join(f"10.0.{i}.0/24" for i in range(65))
        with self.assertRaises(ConfigError) as caught:
            apply_setting(Config(), "tunnel.1.allow_list", entries)
        self.assertIn("at most 64", str(caught.exception))

    def test_from_the_file(self):
        config = Config.from_dict({"line": {"1": {}}, "tunnel": {"1": {"allow_list": ["10.0.0.0/8", "::1"]}}})
        self.assertEqual(config.tunnels[1].allow_list, ("10.0.0.0/8", "::1"))
        with self.assertRaises(ConfigError) as caught:
            Config.from_dict({"line": {"1": {}}, "tunnel": {"1": {"allow_list": ["10.0.0.0/40"]}}})
        self.assertEqual(caught.exception.setting, "tunnel.1.allow_list")


class GuardTests(TestCase):
    def setUp(self):
        self.line = FakeLine()
        self.stats = TunnelStatistics()
        self.clock = task.Clock()
        self.inner = TunnelFactory(1, TunnelConfig(), self.line, self.clock, self.stats)
        self.access = AccessStatistics()
        self.allow = AllowList.from_setting(["192.0.2.0/24", "2001:db8::/32"])
        self.guard = GuardedFactory(self.inner, lambda: self.allow, 1, self.stats, self.access, self.clock)

    def test_outside_closed_counted_never_on_the_line(self):
        for address in (IPv4Address("TCP", "198.51.100.7", 5000), IPv6Address("TCP", "2001:db9::1", 5001),
                        IPv6Address("TCP", "::ffff:198.51.100.8", 5002), UNIXAddress(b"/tmp/x")):
            self.assertIsNone(self.guard.buildProtocol(address))
        self.assertEqual((self.stats.dropped_accepts, self.access.refused_by_allow_list), (4, 4))
        self.assertIsNone(self.inner.client)
        self.assertEqual(self.stats.completed_accepts, 0)
        self.assertEqual(bytes(self.line.written), b"")
        self.assertIn("not in the allow-list", self.access.last_refused)

    def test_inside_gets_the_plain_protocol(self):
        for address in (IPv4Address("TCP", "192.0.2.9", 5000), IPv6Address("TCP", "::ffff:192.0.2.10", 5001),
                        IPv6Address("TCP", "2001:db8::9", 5002)):
            protocol = self.guard.buildProtocol(address)
            self.assertIs(type(protocol), TunnelProtocol, "no wrapper on the byte path")
        self.assertEqual(self.stats.dropped_accepts, 0)


class RealSocketTests(TestCase):
    """A real listener on loopback: the refused client sees its connection closed at once."""

    def setUp(self):
        self.line = FakeLine()
        self.svc = TunnelService(1, TunnelConfig(listen="tcp:0:interface=127.0.0.1", allow_list=("10.0.0.0/8",)),
                                 self.line, reactor)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    @defer.inlineCallbacks
    def wait(self, condition, timeout=5.0):
        for _ in range(int(timeout / 0.01)):
            if condition():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not met in time")

    def connect(self):
        client = socket.create_connection(("127.0.0.1", self.svc.port.getHost().port), timeout=5)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_refused_then_allowed_then_closed_again(self):
        yield self.wait(lambda: self.svc.port is not None)
        port = self.svc.port.getHost().port
        refused = self.connect()
        yield self.wait(lambda: self.svc.stats.dropped_accepts == 1)
        refused.settimeout(5)
        self.assertEqual(refused.recv(10), b"", "closed at once")
        self.assertIsNone(self.svc.factory.client)
        self.assertEqual(self.svc.access.refused_by_allow_list, 1)
        yield self.svc.apply(TunnelConfig(listen=self.svc.config.listen, allow_list=("127.0.0.0/8",)))
        self.assertEqual(self.svc.port.getHost().port, port, "a changed list applies without listening again")
        allowed = self.connect()
        yield self.wait(lambda: self.svc.factory.client is not None)
        allowed.sendall(b"\x10\x40\x01\x41\x16")
        yield self.wait(lambda: bytes(self.line.written) == b"\x10\x40\x01\x41\x16")
        yield self.svc.apply(TunnelConfig(listen=self.svc.config.listen, allow_list=("10.0.0.0/8",)))
        yield self.wait(lambda: self.svc.factory.client is None)
        allowed.settimeout(5)
        self.assertEqual(allowed.recv(10), b"", "a client no longer allowed is closed")
        self.assertIn("no longer in the allow-list", self.svc.access.last_refused)

    @defer.inlineCallbacks
    def test_emptied_list_lets_anyone_in_and_keeps_the_client(self):
        yield self.wait(lambda: self.svc.port is not None)
        yield self.svc.apply(TunnelConfig(listen=self.svc.config.listen, allow_list=("127.0.0.1",)))
        client = self.connect()
        yield self.wait(lambda: self.svc.factory.client is not None)
        yield self.svc.apply(TunnelConfig(listen=self.svc.config.listen))
        yield self.wait(lambda: self.svc.port is not None)
        self.assertIs(self.svc.port.factory, self.svc.factory, "without a list, the plain factory listens")
        self.assertIsNotNone(self.svc.factory.client, "the allowed client stays")
        client.sendall(b"\xe5")
        yield self.wait(lambda: bytes(self.line.written) == b"\xe5")
