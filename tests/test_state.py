"""
Tests for cmegw.state: what the gateway publishes (pending restarts, the
device's LEDs, the views of tunnels and buses), on a fake state and on a real
gateway service.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import attrs
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config
from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService
from cmegw.state import ACTIVITY_WINDOW, BusView, History, TunnelView
from cmegw.stats import LINE_ERROR, LINE_OPEN, TUNNEL_CONNECTED, LineStatistics, TunnelStatistics
from cmegw.testing import fake_state


class PendingRestartTests(TestCase):
    def test_nothing_pending(self):
        state = fake_state()
        self.assertEqual(state.pending_restart(), [])

    def test_saved_restart_setting_is_pending(self):
        state = fake_state()
        state.store.change(apply_setting(state.store.config, "http.http_port", 8081))
        self.assertEqual(state.pending_restart(), ["http.http_port"])

    def test_a_new_line_waits_for_a_restart(self):
        state = fake_state()
        config = state.store.config
        state.store.change(config.with_line(2, attrs.evolve(config.lines[1], device="/dev/ttyUSB1")))
        self.assertIn("line/tunnel set", state.pending_restart())


class LineTimingTests(TestCase):
    def test_rows_from_the_published_statistics(self):
        line = LineStatistics(state=LINE_OPEN, baud_rate=300, adapter="FTDI FT232R USB UART (USB 0403:6001)",
                              low_latency="on", latency_timer="1 ms (set to 1 ms)", adapter_slack=0.005, slack=0.005)
        master = SimpleNamespace(arbiter=SimpleNamespace(stats=SimpleNamespace(reply_gap_peak=0.0021)))
        state = fake_state(lines={1: line}, bus={1: BusView(1, master)})
        rows = dict(state.line_timing(1))
        self.assertEqual(rows["Latency timer"], "1 ms (set to 1 ms)")
        self.assertEqual(rows["Delivery slack"], "5.0 ms (adapter 5.0 ms + extra 0.0 ms)")
        self.assertEqual(rows["First-byte timeout"], f"{(341 / 300 + 0.055) * 1000:.1f} ms at 300 baud")
        self.assertEqual(rows["Defragmentation timeout"], f"{(33 / 300 + 0.005) * 1000:.1f} ms")
        self.assertEqual(rows["Largest gap inside a reply"], "2.1 ms (measured beyond the characters' time)")
        self.assertEqual(state.line_timing(2), [])


class IndicationTests(TestCase):
    def test_leds(self):
        line = LineStatistics(state=LINE_OPEN)
        tunnel = TunnelView(1, TunnelStatistics())
        state = fake_state(lines={1: line}, tunnels={1: tunnel})
        self.assertEqual(state.indications(), {"PWR": False, "ERR": False, "LINK": False, "ACT": False})
        state.running = True
        line.state = LINE_ERROR
        tunnel.stats.state = TUNNEL_CONNECTED
        self.assertEqual(state.indications(), {"PWR": True, "ERR": True, "LINK": True, "ACT": False})

    def test_activity_flashes_for_a_while(self):
        line = LineStatistics(state=LINE_OPEN)
        state = fake_state(lines={1: line})
        state.clock.advance(100)
        line.rx_bytes = 10
        self.assertTrue(state.indications()["ACT"])
        state.clock.advance(ACTIVITY_WINDOW + 0.1)
        self.assertFalse(state.indications()["ACT"])

    def test_connect_mode_lights_link(self):
        connect = SimpleNamespace(state="connected")
        state = fake_state(tunnels={1: TunnelView(1, TunnelStatistics(), connect=connect)})
        self.assertTrue(state.indications()["LINK"])
        connect.state = "retry"
        self.assertFalse(state.indications()["LINK"])


class ViewTests(TestCase):
    def test_tunnel_and_connect_views(self):
        stats, connect = TunnelStatistics(peer="127.0.0.1:5000"), SimpleNamespace(state="idle")
        state = fake_state(tunnels={1: TunnelView(1, stats, connect=connect), 2: TunnelView(2, TunnelStatistics())})
        self.assertEqual(state.tunnel_stats[1], stats)
        self.assertEqual(state.connect_stats, {1: connect})
        self.assertEqual(state.line_peer(1), "127.0.0.1:5000")
        self.assertEqual(state.line_peer(3), "")

    def test_bus_view_reads_the_master_now(self):
        master = SimpleNamespace(arbiter=SimpleNamespace(stats="arbiter"), stats="master", scan=None, results={})
        bus = BusView(1, master)
        master.scan, master.results = "scan", {"primary": [1]}
        self.assertEqual((bus.stats, bus.master_stats, bus.scan, bus.results),
                         ("arbiter", "master", "scan", {"primary": [1]}))

    def test_host_network_without_an_applier(self):
        self.assertIsNone(fake_state().host_network)
        self.assertEqual(fake_state(host_applier=SimpleNamespace(last="done")).host_network, "done")

    def test_history_keeps_its_bound(self):
        history = History(samples=2)
        for t in range(5):
            history.add(t, {"a": t})
        self.assertEqual(history.series("a"), [(3, 3), (4, 4)])


class PublishedByTheServiceTests(TestCase):
    """The service publishes its parts' statistics objects and the configuration it runs."""

    def started(self) -> tuple[GatewayService, ConfigStore]:
        directory = Path(self.mktemp())
        directory.mkdir()
        store = ConfigStore(directory / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, MemoryReactorClock())
        gateway.startService()
        self.addCleanup(gateway.stopService)
        return gateway, store

    def test_published(self):
        gateway, _ = self.started()
        state = gateway.state
        self.assertIs(state.lines[1], gateway.lines[1].stats)
        self.assertIs(state.tunnels[1].stats, gateway.tunnels[1].stats)
        self.assertEqual(state.tunnels[1].connect.text(0), "disabled", "published before connect mode is built")
        self.assertEqual(gateway.connectors, {})
        self.assertIs(state.bus[1].stats, gateway.arbiters[1].stats)
        self.assertTrue(state.running)
        self.assertIsInstance(state.config, Config)

    def test_live_change_reaches_the_state_and_the_part(self):
        gateway, store = self.started()
        store.change(apply_setting(store.config, "tunnel.1.disconnect_timeout", 30))
        self.assertEqual(gateway.state.config.tunnels[1].disconnect_timeout, 30)
        self.assertEqual(gateway.tunnels[1].config.disconnect_timeout, 30)
        store.change(apply_setting(store.config, "http.http_port", 8081))
        self.assertEqual(store.config.http.http_port, 8081)
        self.assertEqual(gateway.state.config.http.http_port, 80, "a restart setting keeps its running value")
        self.assertEqual(gateway.state.pending_restart(), ["http.http_port"])
