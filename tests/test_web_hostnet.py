"""
Tests for `cmegw.web.hostnet`: the host's network read from the kernel's files.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from cmegw.web.hostnet import HostAddress, HostNetwork, read_host_network, resolv_conf


class HostNetworkTests(unittest.TestCase):
    def test_from_kernel_files(self) -> None:
        root = Path(self.mktemp())
        (root / "proc/net").mkdir(parents=True)
        (root / "proc/net/route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "enp1s0\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
            "enp1s0\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
        eth = root / "sys/class/net/enp1s0"
        eth.mkdir(parents=True)
        (eth / "address").write_text("02:00:00:00:00:02\n")
        (eth / "operstate").write_text("up\n")
        (eth / "speed").write_text("1000\n")
        (eth / "duplex").write_text("full\n")
        (root / "etc").mkdir()
        (root / "etc/resolv.conf").write_text("# x\nsearch plant.example other.example\nnameserver 127.0.0.53\n")
        (root / "etc/hostname").write_text("gw2\n")
        host = read_host_network(root, addresses=lambda: [
            HostAddress("lo", "127.0.0.1", "255.0.0.0", False),
            HostAddress("enp1s0", "127.0.0.7", "255.255.255.0", True)])
        self.assertEqual((host.interface, host.gateway, host.mac, host.speed, host.duplex),
                         ("enp1s0", "127.0.0.1", "02:00:00:00:00:02", "1000", "full"))
        self.assertEqual((host.address, host.netmask, host.address_source), ("127.0.0.7", "255.255.255.0", "DHCP"))
        self.assertEqual((host.hostname, host.domain, host.dns), ("gw2", "plant.example", ("127.0.0.53",)))
        self.assertEqual(host.link_text, "1000 Mbit/s, full duplex")

    def test_nothing_known(self) -> None:
        host = read_host_network(Path(self.mktemp()), addresses=lambda: [])
        self.assertEqual((host.interface, host.address, host.link_text), ("", "", "unknown"))
        self.assertEqual(resolv_conf(Path(self.mktemp())), ((), "", ()))

    def test_this_host(self) -> None:
        """The real kernel answers (loopback at least) without raising."""
        host = read_host_network()
        self.assertIsInstance(host, HostNetwork)
