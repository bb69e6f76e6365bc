"""
Tests for cmegw.host.networkd: the .network file for each kind of settings,
and applying it through systemd-networkd (fake networkctl and ethtool, files
in a temporary folder; see tests.test_host_apply).
"""

from __future__ import annotations

import stat

import attrs
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from cmegw.host.commands import Refused
from cmegw.host.networkd import networkd_network
from cmegw.host.networkmanager import nm_client_id
from tests.test_host_apply import Base, network


class NetworkdFileTests(TestCase):
    """What the .network file says for each kind of settings (pure, nothing run)."""

    def test_dhcp(self) -> None:
        text = networkd_network(network(dhcp="on", hostname="Gw-1", primary_dns="10.0.0.53"), "eth0")
        self.assertIn("[Match]\nName=eth0\n", text)
        self.assertIn("[Network]\nDHCP=ipv4\nLinkLocalAddressing=yes\n", text)
        self.assertIn("[DHCPv4]\nClientIdentifier=mac\nSendHostname=yes\nHostname=gw-1\n", text)
        self.assertIn("DNS=10.0.0.53\n", text)
        self.assertNotIn("Address=", text)

    def test_dhcp_ignores_the_static_values(self) -> None:
        text = networkd_network(network(dhcp="on", ip_address="192.168.1.10/24", gateway="192.168.1.1",
                                        domain="plant.example"), "eth0")
        for word in ("Address=", "Gateway=", "Domains="):
            self.assertNotIn(word, text)

    def test_static_forms(self) -> None:
        for typed, address in (("10.1.2.3", "10.1.2.3/8"), ("172.16.5.4", "172.16.5.4/16"),
                               ("192.168.1.10/24", "192.168.1.10/24"),
                               ("192.168.1.10 255.255.255.128", "192.168.1.10/25")):
            text = networkd_network(network(dhcp="off", ip_address=typed), "eth0")
            self.assertIn(f"Address={address}\n", text, typed)
            self.assertNotIn("DHCP=", text)
            self.assertNotIn("LinkLocalAddressing", text)
            self.assertNotIn("[DHCPv4]", text)

    def test_static_gateway_domain_dns_hostname(self) -> None:
        text = networkd_network(network(dhcp="off", ip_address="192.168.1.10/24", gateway="192.168.1.1",
                                        domain="plant.example", hostname="gw1", primary_dns="192.168.1.53",
                                        secondary_dns="9.9.9.9"), "enp1s0")
        self.assertIn("Name=enp1s0\n", text)
        self.assertIn("Address=192.168.1.10/24\nGateway=192.168.1.1\nDomains=plant.example\n"
                      "DNS=192.168.1.53\nDNS=9.9.9.9\n", text)
        self.assertIn("# Host name gw1: networkd does not set host names", text)
        self.assertNotIn("Hostname=", text)

    def test_static_without_address_is_autoip(self) -> None:
        text = networkd_network(network(dhcp="off"), "eth0")
        self.assertIn("LinkLocalAddressing=yes\n", text)
        self.assertNotIn("Address=", text)

    def test_client_id_is_refused_with_a_reason(self) -> None:
        with self.assertRaises(Refused) as caught:
            networkd_network(network(dhcp="on", dhcp_client_id="gw-17"), "eth0")
        self.assertIn("cannot send the DHCP client ID 'gw-17'", str(caught.exception))
        self.assertIn("networkmanager", str(caught.exception))

    def test_bootp(self) -> None:
        net = network(dhcp="off", bootp="on")
        with self.assertRaises(Refused) as caught:
            networkd_network(net, "eth0", bootp=False)
        self.assertIn("cannot do BOOTP", str(caught.exception))
        self.assertIn("[DHCPv4]\nClientIdentifier=mac\nBOOTP=yes\n", networkd_network(net, "eth0", bootp=True))
        # With both on, DHCP runs and BOOTP does not.
        self.assertNotIn("BOOTP", networkd_network(network(dhcp="on", bootp="on"), "eth0"))

    def test_nm_client_id(self) -> None:
        self.assertEqual(nm_client_id("01a0b1c2d3e4f5"), "01:a0:b1:c2:d3:e4:f5")
        self.assertEqual(nm_client_id("gw-17"), "gw-17")


class NetworkdApplyTests(Base):
    @defer.inlineCallbacks
    def test_dhcp_writes_reloads_and_reconfigures(self) -> None:
        result = yield self.applier.apply(network(dhcp="on", hostname="gw1"))
        self.assertTrue(result.ok, result.message)
        self.assertEqual(result.message, "applied to eth0 by systemd-networkd")
        self.assertIn("DHCP=ipv4", self.file())
        self.assertEqual(self.fake.calls, [["networkctl", "reload"], ["networkctl", "reconfigure", "eth0"]])
        self.assertEqual(oct(stat.S_IMODE((self.directory / "10-cmegw-eth0.network").stat().st_mode)), "0o644")
        self.assertIs(self.applier.last, result)
        self.assertEqual(result.files, (str(self.directory / "10-cmegw-eth0.network"),))
        self.assertEqual([r.status for r in result.commands], [0, 0])

    @defer.inlineCallbacks
    def test_unchanged_file_only_reloads(self) -> None:
        net = network(dhcp="off", ip_address="192.168.1.10/24")
        yield self.applier.apply(net)
        result = yield self.applier.apply(net)
        self.assertTrue(result.ok)
        self.assertIn("already had these settings", result.message)
        self.assertEqual(self.fake.calls[2:], [["networkctl", "reload"]])

    @defer.inlineCallbacks
    def test_default_route_interface_and_stale_file(self) -> None:
        (self.directory / "10-cmegw-eth0.network").write_text("[Match]\nName=eth0\n")
        (self.directory / "20-other.network").write_text("[Match]\nName=eth1\n")
        result = yield self.applier.apply(attrs.evolve(network(dhcp="on"), interface=""))
        self.assertTrue(result.ok, result.message)
        self.assertEqual(result.interface, "eth9")
        self.assertEqual(self.written(), ["10-cmegw-eth9.network", "20-other.network"])
        self.assertIn("removed", result.files[1])

    @defer.inlineCallbacks
    def test_link_speed_duplex_through_ethtool(self) -> None:
        self.fake.add("ethtool")
        yield self.applier.apply(network(link_speed="100", link_duplex="full"))
        self.assertEqual(self.fake.calls[-1], ["ethtool", "-s", "eth0", "speed", "100", "duplex", "full",
                                               "autoneg", "off"])
        yield self.applier.apply(network(link_speed="10"))
        self.assertEqual(self.fake.calls[-1], ["ethtool", "-s", "eth0", "speed", "10", "autoneg", "on"])

    @defer.inlineCallbacks
    def test_back_to_auto_negotiation(self) -> None:
        self.fake.add("ethtool", output="Settings for eth0:\n\tSpeed: 100Mb/s\n\tAuto-negotiation: off\n")
        result = yield self.applier.apply(network())
        self.assertTrue(result.ok, result.message)
        self.assertEqual(self.fake.calls[-2:], [["ethtool", "eth0"], ["ethtool", "-s", "eth0", "autoneg", "on"]])
        self.fake.add("ethtool", output="\tAuto-negotiation: on\n")
        yield self.applier.apply(network(hostname="x"))
        self.assertEqual(self.fake.calls[-1], ["ethtool", "eth0"])

    @defer.inlineCallbacks
    def test_no_ethtool_with_auto_is_fine_forced_is_reported(self) -> None:
        result = yield self.applier.apply(network())
        self.assertTrue(result.ok, result.message)
        result = yield self.applier.apply(network(link_speed="100", link_duplex="half"))
        self.assertFalse(result.ok)
        self.assertIn("already had these settings (file unchanged; systemd-networkd reloaded), but setting the "
                      "link of eth0 to 100/half did not happen: ethtool is not installed on this host",
                      result.message)

    @defer.inlineCallbacks
    def test_bootp_follows_the_networkd_version(self) -> None:
        self.fake.add("networkctl", output="systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT")
        result = yield self.applier.apply(network(dhcp="off", bootp="on"))
        self.assertFalse(result.ok)
        self.assertIn("cannot do BOOTP", result.message)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.fake.calls, [["networkctl", "--version"]])
        self.fake.add("networkctl", output="systemd 257 (257.1)")
        result = yield self.applier.apply(network(dhcp="off", bootp="on"))
        self.assertTrue(result.ok, result.message)
        self.assertIn("BOOTP=yes", self.file())

    @defer.inlineCallbacks
    def test_renew(self) -> None:
        result = yield self.applier.renew(network(dhcp="on"))
        self.assertTrue(result.ok, result.message)
        self.assertEqual(self.fake.calls, [["networkctl", "renew", "eth0"]])
        self.assertEqual(result.action, "renew")
        result = yield self.applier.renew(network(dhcp="off", ip_address="10.0.0.2"))
        self.assertFalse(result.ok)
        self.assertIn("DHCP client is off", result.message)
        self.assertEqual(len(self.fake.calls), 1)
