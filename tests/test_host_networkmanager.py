"""
Tests for cmegw.host.networkmanager: applying the settings through nmcli
(a fake nmcli; see tests.test_host_apply).
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from tests.test_host_apply import Base, network


class NetworkManagerTests(Base):
    @defer.inlineCallbacks
    def test_dhcp_creates_modifies_and_activates(self) -> None:
        self.fake.add("nmcli", output="Wired connection 1\nlo\n")
        net = attrs.evolve(network(dhcp="on", hostname="gw1", dhcp_client_id="01a0b1c2d3e4f5",
                                   primary_dns="10.0.0.53"), backend="networkmanager")
        result = yield self.applier.apply(net)
        self.assertTrue(result.ok, result.message)
        calls = self.fake.calls
        self.assertEqual(calls[0], ["nmcli", "-t", "-f", "NAME", "connection", "show"])
        self.assertEqual(calls[1], ["nmcli", "connection", "add", "type", "ethernet", "ifname", "eth0",
                                    "con-name", "cmegw-eth0"])
        modify = calls[2]
        self.assertEqual(modify[:4], ["nmcli", "connection", "modify", "cmegw-eth0"])
        props = dict(zip(modify[4::2], modify[5::2]))
        self.assertEqual(props["ipv4.method"], "auto")
        self.assertEqual(props["ipv4.dhcp-client-id"], "01:a0:b1:c2:d3:e4:f5")
        self.assertEqual(props["ipv4.dhcp-hostname"], "gw1")
        self.assertEqual(props["ipv4.addresses"], "")
        self.assertEqual(props["ipv4.dns"], "10.0.0.53")
        self.assertEqual(props["802-3-ethernet.auto-negotiation"], "yes")
        self.assertEqual(calls[3], ["nmcli", "connection", "up", "cmegw-eth0"])
        self.assertEqual(self.written(), [])

    @defer.inlineCallbacks
    def test_static_on_an_existing_connection(self) -> None:
        self.fake.add("nmcli", output="cmegw-eth0\n")
        net = attrs.evolve(network(dhcp="off", ip_address="192.168.1.10 255.255.255.0", gateway="192.168.1.1",
                                   domain="plant.example", primary_dns="192.168.1.53", secondary_dns="9.9.9.9",
                                   link_speed="100", link_duplex="full"), backend="networkmanager")
        result = yield self.applier.apply(net)
        self.assertTrue(result.ok, result.message)
        self.assertEqual([c[1:3] for c in self.fake.calls], [["-t", "-f"], ["connection", "modify"],
                                                             ["connection", "up"]])
        modify = self.fake.calls[1]
        props = dict(zip(modify[4::2], modify[5::2]))
        self.assertEqual((props["ipv4.method"], props["ipv4.addresses"], props["ipv4.gateway"]),
                         ("manual", "192.168.1.10/24", "192.168.1.1"))
        self.assertEqual((props["ipv4.dns"], props["ipv4.dns-search"]), ("192.168.1.53,9.9.9.9", "plant.example"))
        self.assertEqual((props["802-3-ethernet.speed"], props["802-3-ethernet.duplex"],
                          props["802-3-ethernet.auto-negotiation"]), ("100", "full", "no"))

    @defer.inlineCallbacks
    def test_refusals_and_failures(self) -> None:
        result = yield self.applier.apply(attrs.evolve(network(dhcp="off", bootp="on"), backend="networkmanager"))
        self.assertIn("NetworkManager has no BOOTP client", result.message)
        result = yield self.applier.apply(attrs.evolve(network(link_speed="10"), backend="networkmanager"))
        self.assertIn("speed and duplex together", result.message)
        self.assertEqual(self.fake.calls, [])
        self.fake.add("nmcli", output="Error: NetworkManager is not running.", status=8)
        result = yield self.applier.apply(attrs.evolve(network(), backend="networkmanager"))
        self.assertFalse(result.ok)
        self.assertIn("asking NetworkManager for its connections failed", result.message)
        self.assertIn("NetworkManager is not running", result.message)
        self.fake.remove("nmcli")
        result = yield self.applier.apply(attrs.evolve(network(), backend="networkmanager"))
        self.assertIn("nmcli is not installed on this host", result.message)

    @defer.inlineCallbacks
    def test_renew(self) -> None:
        result = yield self.applier.renew(attrs.evolve(network(dhcp="on"), backend="networkmanager"))
        self.assertTrue(result.ok, result.message)
        self.assertEqual(self.fake.calls, [["nmcli", "connection", "up", "cmegw-eth0"]])
