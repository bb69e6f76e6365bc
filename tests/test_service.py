"""Tests for cmegw.service: composition, live changes, restart and factory reset."""

import os
import subprocess
import sys
import termios
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw import service as service_module
from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
from cmegw.stats import LINE_ERROR, LINE_OPEN, format_duration
from tests.support import REPO, defaults_with, open_pty, read_fd


class GatewayServiceTests(TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.master, self.slave, self.path = open_pty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.slave)
        self.store = ConfigStore(self.dir / "cmegw.toml")
        self.store.load()
        self.gateway = GatewayService(self.store, reactor, Overrides(device=self.path,
                                                                     tunnel="tcp:0:interface=127.0.0.1"))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)

    def test_children(self):
        self.assertEqual(list(self.gateway.lines), [1])
        self.assertEqual(list(self.gateway.tunnels), [1])
        self.assertEqual(self.gateway.state.lines[1].state, LINE_OPEN)
        self.assertEqual(self.gateway.state.lines[1].device, self.path)
        self.assertIsNotNone(self.gateway.tunnels[1].port)
        self.assertIs(self.gateway.tunnels[1].factory.line, self.gateway.arbiters[1].port,
                      "the tunnel reaches its line through the line's bus arbiter")
        self.assertIs(self.gateway.arbiters[1].line, self.gateway.lines[1])

    def test_baud_applies_live(self):
        self.store.change(apply_setting(self.store.config, "line.1.baud_rate", "300"))
        self.assertEqual(termios.tcgetattr(self.slave)[4], termios.B300)
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertIs(self.gateway.running_config.lines[1], self.gateway.lines[1].config, "the line holds it")
        self.assertEqual(self.gateway.running_config.lines[1].device, self.path, "the override stays")
        self.assertEqual(self.gateway.state.pending_restart(), [])

    def test_line_slack_and_scan_tries_apply_live(self):
        """The arbiter's timeouts follow the line's slack (the pty's + extra_slack); a scan takes the setting."""
        arbiter, line = self.gateway.arbiters[1], self.gateway.lines[1]
        self.assertEqual(arbiter.slack(), line.delivery_slack())
        before = arbiter.slack()
        self.store.change(apply_setting(self.store.config, "line.1.extra_slack", "0.25"))
        self.store.change(apply_setting(self.store.config, "line.1.scan_silent_retries", "0"))
        self.assertAlmostEqual(arbiter.slack(), before + 0.25)
        self.assertAlmostEqual(self.gateway.state.lines[1].slack, before + 0.25)
        scan = self.gateway.start_scan(1, "primary")
        self.addCleanup(scan.cancel)
        self.assertEqual((scan.silent_retries, scan.retries), (0, 1))

    def test_restart_setting_waits(self):
        self.store.change(apply_setting(self.store.config, "network.dhcp", "off"))
        self.assertTrue(self.gateway.running_config.network.dhcp)
        self.assertEqual(self.gateway.state.pending_restart(), ["network.dhcp"])

    def test_timeout_applies_live(self):
        self.assertNotIn(1, self.gateway.connectors, "connect mode is built once the configuration turns it on")
        on = apply_setting(self.store.config, "tunnel.1.connect_hosts", "tcp:host=127.0.0.1:port=1")
        self.store.change(apply_setting(on, "tunnel.1.connect_mode", "on-data"))
        self.store.change(apply_setting(self.store.config, "tunnel.1.disconnect_timeout", "3"))
        tunnel = self.gateway.tunnels[1]
        self.assertEqual(tunnel.factory.config.disconnect_timeout, 3)
        held = tunnel.factory.config
        self.assertIs(tunnel.config, held, "one running copy, held by the tunnel's factory")
        self.assertIs(self.gateway.connectors[1].config, held, "connect mode reads the tunnel's")
        self.assertIs(self.gateway.connectors[1].factory.config, held)
        self.assertIs(self.gateway.state.config.tunnels[1], held, "the state publishes the same object")

    @defer.inlineCallbacks
    def test_restart(self):
        self.store.change(apply_setting(self.store.config, "network.dhcp", "off"))
        old_line = self.gateway.lines[1]
        yield self.gateway.restart()
        self.assertIsNot(self.gateway.lines[1], old_line)
        self.assertFalse(old_line.running)
        self.assertFalse(self.gateway.running_config.network.dhcp)
        self.assertEqual(self.gateway.state.pending_restart(), [])
        self.assertEqual(self.gateway.status.restarts, 1)
        self.assertEqual(self.gateway.state.lines[1].state, LINE_OPEN, "the device is opened again")

    @defer.inlineCallbacks
    def test_factory_reset(self):
        self.store.change(apply_setting(self.store.config, "tunnel.1.keepalive", "7"))
        yield self.gateway.factory_reset()
        self.assertEqual(self.gateway.running_config.tunnels[1].keepalive, 45)
        self.assertIn("keepalive = 45", (self.dir / "cmegw.toml").read_text())

    def test_indications(self):
        ind = self.gateway.state.indications()
        self.assertEqual(ind, {"PWR": True, "ERR": False, "LINK": False, "ACT": False})
        self.gateway.lines[1].write(b"\x10\x40\x01\x41\x16")
        self.assertTrue(self.gateway.state.indications()["ACT"])


class StartupTests(TestCase):
    def test_missing_device_starts_anyway(self):
        d = Path(self.mktemp())
        d.mkdir()
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor, Overrides(device=str(d / "ttyUSB9"),
                                                           tunnel="tcp:0:interface=127.0.0.1"))
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertEqual(gateway.state.lines[1].state, LINE_ERROR)
        self.assertTrue(gateway.state.indications()["ERR"])
        self.assertIsNotNone(gateway.tunnels[1].port, "the tunnel keeps listening")

    def test_config_problem_shown(self):
        d = Path(self.mktemp())
        d.mkdir()
        (d / "cmegw.toml").write_text(defaults_with(("baud_rate = 2400", "baud_rate = 12")))
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor, Overrides(device="/nonexistent", tunnel="tcp:0:interface=127.0.0.1"))
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertIn("setting line.1.baud_rate: Baud rate of line 1: 12 is not allowed", gateway.status.config_problem)


class SettleHeapTests(TestCase):
    """After a start, the daemon's service freezes its start-up heap (`cmegw.service.settle_heap`)."""

    def started(self, settle):
        d = Path(self.mktemp())
        d.mkdir()
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        settled = []
        self.patch(service_module, "settle_heap", lambda: settled.append(True))
        clock = MemoryReactorClock()
        gateway = GatewayService(store, clock, Overrides(device=str(d / "ttyUSB9"), tunnel="tcp:0:interface=127.0.0.1"),
                                 settle=settle)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        return gateway, clock, settled

    def test_settles_once_the_reactor_turns(self):
        gateway, clock, settled = self.started(settle=True)
        self.assertEqual(settled, [], "not while the parts start")
        clock.advance(0)
        self.assertEqual(settled, [True])

    def test_not_without_settle(self):
        gateway, clock, settled = self.started(settle=False)
        clock.advance(1)
        self.assertEqual(settled, [])

    def test_a_stop_first_cancels_it(self):
        gateway, clock, settled = self.started(settle=True)
        gateway.stopService()
        clock.advance(1)
        self.assertEqual(settled, [])

    def test_settle_heap_again_frees_what_was_frozen_and_dropped(self):
        code = ("import gc, weakref, cmegw.service as s\n"
                "class Part: pass\n"
                "part = Part(); part.cycle = part; alive = weakref.ref(part)\n"
                "s.settle_heap(); del part; gc.collect(); kept = alive() is not None\n"
                "s.settle_heap(); print(kept, alive() is None)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertEqual(out.stdout.split(), ["True", "True"], out.stderr)

    def test_settle_heap_freezes_what_start_up_left(self):
        code = "import gc, cmegw.service; cmegw.service.settle_heap(); print(gc.get_freeze_count() > 1000)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertEqual(out.stdout.split(), ["True"], out.stderr)


class FormatTests(TestCase):
    def test_duration(self):
        self.assertEqual(format_duration(77), "0 days 00:01:17")
        self.assertEqual(format_duration(2 * 86400 + 3661), "2 days 01:01:01")
        self.assertEqual(format_duration(-5), "0 days 00:00:00")


class SeveralLinesTests(TestCase):
    """Two adapters at once: line N's bytes go through tunnel N only."""

    @defer.inlineCallbacks
    def test_two_lines_two_tunnels(self):
        import socket

        from twisted.internet import task, threads

        d = Path(self.mktemp())
        d.mkdir()
        ptys = [open_pty(), open_pty()]
        for master, slave, _ in ptys:
            self.addCleanup(os.close, master)
            self.addCleanup(os.close, slave)
        (d / "cmegw.toml").write_text(defaults_with(
            ('device = "/dev/ttyUSB0"', f'device = "{ptys[0][2]}"'),
            ('listen = "tcp:10001"', 'listen = "tcp:0:interface=127.0.0.1"'),
            extra=f'\n[line.2]\ndevice = "{ptys[1][2]}"\nbaud_rate = 300\n'
                  '[tunnel.2]\nlisten = "tcp:0:interface=127.0.0.1"\n'))
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertEqual([s.state for s in gateway.state.lines.values()], [LINE_OPEN, LINE_OPEN])
        self.assertEqual(termios.tcgetattr(ptys[1][1])[4], termios.B300)
        self.assertEqual(termios.tcgetattr(ptys[0][1])[4], termios.B2400)
        for n, (master, _, _) in ((1, ptys[0]), (2, ptys[1])):
            port = gateway.tunnels[n].port.getHost().port
            client = socket.create_connection(("127.0.0.1", port))
            self.addCleanup(client.close)
            client.sendall(b"\x10\x40%c\x41\x16" % n)
            got = yield threads.deferToThread(read_fd, master, 5)
            self.assertEqual(got, b"\x10\x40%c\x41\x16" % n, f"line {n} got its tunnel's request")
            os.write(master, b"\xe5")
            client.settimeout(5)
            reply = yield threads.deferToThread(client.recv, 10)
            self.assertEqual(reply, b"\xe5")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([t.octets_from_network for t in gateway.state.tunnel_stats.values()], [5, 5])
        self.assertEqual([t.octets_from_serial for t in gateway.state.tunnel_stats.values()], [1, 1])


class HttpsFilesTests(TestCase):
    def test_tls_tunnels_serve_what_https_serves(self):
        """A configured pair that does not load: HTTPS falls back to the self-signed pair, and so do the tunnels."""
        from cmegw.tls.store import SELF_SIGNED_CERT, SELF_SIGNED_KEY

        d = Path(self.mktemp()).resolve()
        d.mkdir()
        (d / "cmegw.toml").write_text(defaults_with(('\ncertificate = ""', '\ncertificate = "missing.crt"'),
                                                    ('private_key = ""', 'private_key = "missing.key"')))
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor)
        self.assertEqual(gateway._https_files(), (d / SELF_SIGNED_CERT, d / SELF_SIGNED_KEY))
        self.assertTrue((d / SELF_SIGNED_KEY).exists())
