"""
Tests for cmegw.ops.metrics and cmegw.ops.graphs: the collector's series, the
text format checked by ``promtool check metrics``, counters that move when a
pyMeterBus client reads a meter through the tunnel, and the graphs' samples
and SVG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from twisted.web.template import flattenString

import cmegw
from cmegw.config.store import ConfigStore
from cmegw.ops import graphs
from cmegw.ops.metrics import GatewayCollector, metrics_resource, registry_for
from cmegw.service import GatewayService, Overrides, in_process_simulator
from cmegw.config.model import Config
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, TargetStatus
from cmegw.mbus.arbiter import ArbiterStatistics
from cmegw.state import BusView
from cmegw.testing import FakeReadout, fake_state
from cmegw.web.http import HttpStatistics
from tests.support import local_time_in_utc, open_pty

try:
    import meterbus
    import serial
except ImportError:  # pragma: no cover
    meterbus = None


def scrape(gateway) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry_for(gateway.state)).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def promtool(text: str) -> subprocess.CompletedProcess:
    path = "/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None
    if path is None:
        raise SkipTest("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([path, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)


class GatewayCase(TestCase):
    def make_gateway(self, overrides: Overrides | None = None, **options: Any) -> GatewayService:
        directory = Path(self.mktemp())
        directory.mkdir()
        if overrides is None:
            master, slave, device = open_pty()
            self.addCleanup(os.close, master)
            self.addCleanup(os.close, slave)
            overrides = Overrides(device=device, tunnel="tcp:0:interface=127.0.0.1")
        store = ConfigStore(directory / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor, overrides, **options)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        return gateway


class CollectorTests(GatewayCase):
    def setUp(self):
        self.gateway = self.make_gateway()

    def test_series(self):
        s = samples(scrape(self.gateway))
        serial_number = self.gateway.running_config.identity.serial_number
        self.assertEqual(s[("cmegw_info", (("product_type", "cmegw"), ("serial_number", serial_number),
                                           ("version", cmegw.__version__)))], 1)
        self.assertEqual(s[("cmegw_line_up", (("line", "1"),))], 1)
        self.assertEqual(s[("cmegw_line_state", (("line", "1"), ("state", "open")))], 1)
        self.assertEqual(s[("cmegw_line_state", (("line", "1"), ("state", "error")))], 0)
        self.assertEqual(s[("cmegw_line_baud_rate", (("line", "1"),))], 2400)
        self.assertEqual(s[("cmegw_line_received_bytes_total", (("line", "1"),))], 0)
        self.assertEqual(s[("cmegw_tunnel_state", (("state", "waiting"), ("tunnel", "1")))], 1)
        self.assertEqual(s[("cmegw_tunnel_connected_peers", (("tunnel", "1"),))], 0)
        self.assertEqual(s[("cmegw_tunnel_listening", (("tunnel", "1"),))], 1)
        self.assertEqual(s[("cmegw_tunnel_connect_connected_seconds_total", (("host", "12"), ("tunnel", "1")))], 0)
        self.assertEqual(s[("cmegw_line_trace_enabled", (("line", "1"),))], 0)
        for (name, _), _value in s.items():
            self.assertTrue(name.startswith("cmegw_"), name)

    def test_counters_read_at_scrape_time(self):
        stats = self.gateway.lines[1].stats
        stats.rx_bytes, stats.parity_errors = 1234, 5
        self.gateway.tunnels[1].stats.octets_from_network = 77
        s = samples(scrape(self.gateway))
        self.assertEqual(s[("cmegw_line_received_bytes_total", (("line", "1"),))], 1234)
        self.assertEqual(s[("cmegw_line_parity_errors_total", (("line", "1"),))], 5)
        self.assertEqual(s[("cmegw_tunnel_network_to_line_bytes_total", (("tunnel", "1"),))], 77)

    def test_missing_kernel_counters_are_left_out(self):
        self.gateway.lines[1].stats.framing_errors = None
        self.assertNotIn(("cmegw_line_framing_errors_total", (("line", "1"),)), samples(scrape(self.gateway)))

    def test_line_error_state(self):
        stats = self.gateway.lines[1].stats
        stats.state, stats.error = "error", "went away"
        s = samples(scrape(self.gateway))
        self.assertEqual(s[("cmegw_line_up", (("line", "1"),))], 0)
        self.assertEqual(s[("cmegw_line_state", (("line", "1"), ("state", "error")))], 1)

    def test_http_statistics_of_the_web_part(self):
        stats = HttpStatistics()
        stats.rx_bytes = 100
        stats.count_response(200)
        stats.count_response(401)
        stats.count_response(302)
        stats.socket_errors = 2
        self.patch(__import__("cmegw.ops.metrics", fromlist=["web_statistics"]), "web_statistics",
                   lambda gateway: stats)
        s = samples(scrape(self.gateway))
        self.assertEqual(s[("cmegw_http_received_bytes_total", ())], 100)
        self.assertEqual(s[("cmegw_http_responses_total", (("code", "200"),))], 1)
        self.assertEqual(s[("cmegw_http_responses_total", (("code", "302"),))], 1)
        self.assertEqual(s[("cmegw_http_socket_errors_total", ())], 2)
        self.assertNotIn(("cmegw_http_status_200_total", ()), s)

    def test_no_web_part_no_http_series(self):
        self.patch(__import__("cmegw.ops.metrics", fromlist=["web_statistics"]), "web_statistics",
                   lambda gateway: None)
        self.assertFalse([k for k in samples(scrape(self.gateway)) if k[0].startswith("cmegw_http")])

    def test_mbus_series(self):
        class Stats:
            def __init__(self):
                self.transactions, self.answered, self.queue_length, self.busy_time = 10, 8, 1, 2.5

        self.gateway.state.bus = {1: BusView(1, SimpleNamespace(arbiter=SimpleNamespace(stats=Stats()),
                                                                results={"primary": [1, 2, 3]}))}
        text = scrape(self.gateway)
        s = samples(text)
        self.assertEqual(s[("cmegw_mbus_transactions_total", (("line", "1"),))], 10)
        self.assertEqual(s[("cmegw_mbus_answered_transactions_total", (("line", "1"),))], 8)
        self.assertEqual(s[("cmegw_mbus_busy_seconds_total", (("line", "1"),))], 2.5)
        self.assertEqual(s[("cmegw_mbus_queue_length", (("line", "1"),))], 1)
        self.assertEqual(s[("cmegw_mbus_meters", (("line", "1"),))], 3)
        self.assertIn("# TYPE cmegw_mbus_queue_length gauge", text)

    def test_promtool_accepts_it(self):
        self.gateway.lines[1].stats.parity_errors = 1
        stats = HttpStatistics()
        stats.count_response(200)
        self.patch(__import__("cmegw.ops.metrics", fromlist=["web_statistics"]), "web_statistics",
                   lambda gateway: stats)
        self.gateway.state.bus = {1: BusView(1, SimpleNamespace(
            arbiter=SimpleNamespace(stats=SimpleNamespace(transactions=1, queue_peak=1, busy_time=0.1)), results={}))}
        result = promtool(scrape(self.gateway))
        self.assertEqual(result.returncode, 0, result.stdout.decode() + result.stderr.decode())
        self.assertEqual(result.stdout.decode() + result.stderr.decode(), "", "no lint warnings")

    def test_resource(self):
        resource = metrics_resource(self.gateway.state)
        request = DummyRequest([b""])
        body = resource.render(request)
        self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        self.assertIn(b"cmegw_line_up{line=\"1\"} 1.0", body)
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text; version=1.0.0"])
        body = resource.render(request)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_collector_is_a_collector(self):
        names = {m.name for m in GatewayCollector(self.gateway.state).collect()}
        self.assertIn("cmegw_line_received_bytes", names)


class ReadoutMetricsTests(TestCase):
    """The readouts' series, read from a FakeReadout on a fake gateway state (no service runs)."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(10_000)
        config = Config(meters={"heat-1": {"line": 1, "address": "12345678-KAM-19-04"},
                                "water-2": {"line": 1, "address": "2"}})
        self.readout = FakeReadout(config)
        self.gateway = SimpleNamespace(state=fake_state(self.clock, config, readout=self.readout))
        heat, water = self.readout.meters["heat-1"], self.readout.meters["water-2"]
        heat.last_success, heat.reads, heat.failures, heat.overruns = 9_000.5, 12, 1, 2
        water.reads = water.failures = water.failures_in_row = 3
        self.readout.statuses = {
            "mqtt": TargetStatus("mqtt", TARGET_CONNECTED, delivered=120, failures=1),
            "push.1": TargetStatus("push.1", TARGET_DOWN, error="HTTP 503", delivered=10, failures=4),
        }
        self.readout.backlogs = {"mqtt": (0, None), "push.1": (5, 2_800.0)}
        self.summary = {"path": "/tmp/readings.sqlite", "problem": "", "readings": 140, "bytes": 81920}
        self.patch(self.readout, "store_summary", lambda: dict(self.summary))

    def test_meter_series(self):
        s = samples(scrape(self.gateway))
        heat, water = (("line", "1"), ("meter", "heat-1")), (("line", "1"), ("meter", "water-2"))
        self.assertEqual(s[("cmegw_meter_last_success_timestamp_seconds", heat)], 9_000.5)
        self.assertNotIn(("cmegw_meter_last_success_timestamp_seconds", water), s, "never read: no sample")
        self.assertEqual(s[("cmegw_meter_reads_total", heat)], 12)
        self.assertEqual(s[("cmegw_meter_read_failures_total", heat)], 1)
        self.assertEqual(s[("cmegw_meter_overruns_total", heat)], 2)
        self.assertEqual(s[("cmegw_meter_alarm", heat)], 0)
        self.assertEqual(s[("cmegw_meter_alarm", water)], 1, "3 failed reads in a row: alarm")
        self.assertEqual(s[("cmegw_meter_read_failures_total", water)], 3)

    def test_delivery_and_store_series(self):
        s = samples(scrape(self.gateway))
        mqtt, push = (("target", "mqtt"),), (("target", "push.1"),)
        self.assertEqual(s[("cmegw_delivery_backlog_readings", push)], 5)
        self.assertEqual(s[("cmegw_delivery_backlog_oldest_age_seconds", push)], 7_200)
        self.assertEqual(s[("cmegw_delivery_backlog_readings", mqtt)], 0)
        self.assertEqual(s[("cmegw_delivery_backlog_oldest_age_seconds", mqtt)], 0)
        self.assertEqual(s[("cmegw_delivery_delivered_total", mqtt)], 120)
        self.assertEqual(s[("cmegw_delivery_errors_total", push)], 4)
        self.assertEqual(s[("cmegw_delivery_connected", mqtt)], 1)
        self.assertEqual(s[("cmegw_delivery_connected", push)], 0)
        self.assertEqual(s[("cmegw_store_bytes", ())], 81920)
        self.assertEqual(s[("cmegw_store_problem", ())], 0)
        self.summary["problem"] = "the disk is full"
        self.assertEqual(samples(scrape(self.gateway))[("cmegw_store_problem", ())], 1)

    def test_before_the_readouts_start(self):
        self.gateway.state.readout = None
        names = {name for name, _ in samples(scrape(self.gateway))}
        self.assertFalse({n for n in names if n.startswith(("cmegw_meter_", "cmegw_delivery_", "cmegw_store_"))})
        self.assertIn("cmegw_start_time_seconds", names)

    def test_promtool_accepts_the_readout_series(self):
        text = scrape(self.gateway)
        self.assertIn("# TYPE cmegw_meter_reads_total counter", text)
        self.assertIn("# TYPE cmegw_delivery_backlog_readings gauge", text)
        result = promtool(text)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, b""))


class ReadThroughTunnelTests(GatewayCase):
    """A pyMeterBus client reads a simulated meter through the tunnel: the counters move."""

    @inlineCallbacks
    def test_counters_move(self):
        if meterbus is None:
            raise SkipTest("pyMeterBus is not installed")
        # The bus in this process: its pty is there when the gateway has started (no child to wait for).
        gateway = self.make_gateway(Overrides(simulate=True, tunnel="tcp:0:interface=127.0.0.1"),
                                    simulator_factory=in_process_simulator)
        port = gateway.tunnels[1].port.getHost().port
        site = reactor.listenTCP(0, Site(metrics_resource(gateway.state)), interface="127.0.0.1")
        self.addCleanup(site.stopListening)
        url = f"http://127.0.0.1:{site.getHost().port}/metrics"

        def fetch():
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()

        def read_meter():
            ser = serial.serial_for_url(f"socket://127.0.0.1:{port}", baudrate=2400, parity=serial.PARITY_EVEN,
                                        timeout=3)
            try:
                meterbus.send_ping_frame(ser, 1)
                ack = meterbus.recv_frame(ser, 1)
                meterbus.send_request_frame(ser, 1)
                frame = meterbus.recv_frame(ser, meterbus.FRAME_DATA_LENGTH)
                return ack, meterbus.load(frame) if frame else None
            finally:
                ser.close()

        before = samples((yield threads.deferToThread(fetch)))
        ack, telegram = yield threads.deferToThread(read_meter)
        self.assertTrue(ack)
        self.assertIsNotNone(telegram)
        text = yield threads.deferToThread(fetch)
        after = samples(text)
        for name, label in (("cmegw_line_received_bytes_total", ("line", "1")),
                            ("cmegw_line_sent_bytes_total", ("line", "1")),
                            ("cmegw_tunnel_line_to_network_bytes_total", ("tunnel", "1")),
                            ("cmegw_tunnel_network_to_line_bytes_total", ("tunnel", "1")),
                            ("cmegw_tunnel_accepts_total", ("tunnel", "1"))):
            key = (name, (label,))
            self.assertGreater(after[key], before[key], name)
        self.assertEqual(after[("cmegw_tunnel_network_to_line_bytes_total", (("tunnel", "1"),))], 10,
                         "SND_NKE and REQ_UD2: 5 bytes each")
        result = promtool(text)
        self.assertEqual(result.returncode, 0, result.stdout.decode() + result.stderr.decode())


class GraphTests(TestCase):
    def gateway(self):
        tunnel = SimpleNamespace(stats=SimpleNamespace(octets_from_serial=0, octets_from_network=0,
                                                       completed_accepts=0, completed_connects=0, state="waiting"))
        line = SimpleNamespace(stats=SimpleNamespace(parity_errors=0, framing_errors=None, overrun_errors=0,
                                                     buffer_errors=0, rx_breaks=None))
        arbiter = SimpleNamespace(stats=ArbiterStatistics())
        clock = task.Clock()
        bus = {1: BusView(1, SimpleNamespace(arbiter=arbiter))}
        return fake_state(clock, tunnels={1: tunnel}, lines={1: line.stats}, bus=bus), clock

    def started(self, gateway):
        """A sampler of `gateway` started (stopped at the end of the test), and its history."""
        history = graphs.History()
        sampler = graphs.GraphSampler(gateway, history)
        sampler.startService()
        self.addCleanup(sampler.stopService)
        return history

    def test_samples(self):
        gateway, clock = self.gateway()
        history = self.started(gateway)
        gateway.tunnels[1].stats.octets_from_serial = 1000
        gateway.tunnels[1].stats.completed_accepts = 1
        gateway.tunnels[1].stats.state = "connected"
        gateway.lines[1].parity_errors = 3
        clock.advance(graphs.SAMPLE_INTERVAL)
        self.assertEqual(history.series("tunnel1.to_network"), [(10.0, 100.0)])
        self.assertEqual(history.series("tunnel1.connections"), [(10.0, 6.0)], "per minute")
        self.assertEqual(history.series("tunnel1.connected"), [(10.0, 1)])
        self.assertEqual(history.series("line1.errors"), [(10.0, 18.0)], "per minute")
        clock.advance(graphs.SAMPLE_INTERVAL)
        self.assertEqual(history.series("tunnel1.to_network")[-1], (20.0, 0.0))

    def test_bus_samples(self):
        """The bus of each line: transactions, silent and garbled answers per minute, busy time in percent."""
        gateway, clock = self.gateway()
        history = self.started(gateway)
        stats = gateway.bus[1].stats
        stats.transactions, stats.answered, stats.silent = 5, 2, 2
        stats.garbled, stats.invalid, stats.truncated = 0, 1, 0
        stats.busy_time = 2.5
        clock.advance(graphs.SAMPLE_INTERVAL)
        self.assertEqual(history.series("bus1.transactions"), [(10.0, 30.0)])
        self.assertEqual(history.series("bus1.silent"), [(10.0, 12.0)])
        self.assertEqual(history.series("bus1.garbled"), [(10.0, 6.0)])
        self.assertEqual(history.series("bus1.busy"), [(10.0, 25.0)])
        self.assertIn("bus1.transactions", [s.key for s in graphs.gateway_series(gateway, tunnels=False)])
        self.assertNotIn("tunnel1.to_line", [s.key for s in graphs.gateway_series(gateway, tunnels=False)])

    @inlineCallbacks
    def test_bus_chart_has_axes_times_and_a_legend(self):
        history = graphs.History()
        for i in range(60):
            history.add(3600 + i * 10, {"bus1.transactions": 12.0, "bus1.silent": float(i % 3), "bus1.garbled": 0.0})
        local_time_in_utc(self)
        series = graphs.bus_series(1)[0]
        svg = (yield flattenString(None, graphs.chart(series, history, end=4200.0))).decode()
        labels = re.findall(r'class="chart-label"[^>]*>([^<]*)</text>', svg)
        self.assertEqual([l for l in labels if ":" in l], ["00:15", "00:30", "00:45", "01:00"], "times on the time axis")
        
        self.assertEqual([l for l in labels if l.isdigit()], ["0", "5", "10", "15"], "values on the value axis")
        self.assertEqual([label for label in labels if label in ("all", "silent", "garbled")],
                         ["all", "silent", "garbled"], "a legend of the three lines")
        self.assertIn(">per min</text>", svg)
        self.assertEqual(svg.count("<polyline"), 3)
        self.assertIn("<title>Line 1: bus transactions: all: now 12 per min", svg)

    def test_counter_reset(self):
        gateway, clock = self.gateway()
        history = graphs.History()
        sampler = graphs.GraphSampler(gateway, history)
        gateway.tunnels[1].stats.octets_from_serial = 5000
        sampler.startService()
        self.addCleanup(sampler.stopService)
        gateway.tunnels[1].stats.octets_from_serial = 200  # a restart made new statistics
        clock.advance(graphs.SAMPLE_INTERVAL)
        self.assertEqual(history.series("tunnel1.to_network"), [(10.0, 20.0)])

    def test_bounded_to_an_hour(self):
        gateway, clock = self.gateway()
        history = self.started(gateway)
        clock.pump([graphs.SAMPLE_INTERVAL] * (graphs.SAMPLES * 3))
        self.assertEqual(len(history.times), graphs.SAMPLES)
        self.assertEqual(len(history.values["tunnel1.to_line"]), graphs.SAMPLES)
        self.assertEqual(history.times[0], graphs.SAMPLES * 2 * graphs.SAMPLE_INTERVAL + graphs.SAMPLE_INTERVAL)

    def test_new_series_are_aligned(self):
        history = graphs.History(samples=4)
        history.add(1, {"a": 1})
        history.add(2, {"a": 2, "b": 5})
        self.assertEqual(history.series("b"), [(1, None), (2, 5)])
        self.assertEqual(history.series("missing"), [(1, None), (2, None)])

    @inlineCallbacks
    def test_svg_and_numbers(self):
        history = graphs.History()
        for i in range(30):
            history.add(1000 + i * 10, {"tunnel1.to_network": float(i % 7)})
        series = graphs.tunnel_series(1)[0]
        svg = (yield flattenString(None, graphs.chart(series, history))).decode()
        self.assertTrue(svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"'), svg[:80])
        self.assertIn("<polyline", svg)
        self.assertIn('class="chart-axis"', svg)
        self.assertIn(">B/s</text>", svg, "the unit on the value axis")
        self.assertNotIn("<script", svg)
        text = graphs.figures_text(history.series(series.key), "B/s")
        self.assertEqual(text, "now 1 B/s, highest 6 B/s, average 2.8 B/s over 5 min")
        self.assertIn(text, svg, "the numbers are in the image's title too")

    @inlineCallbacks
    def test_panel_without_samples(self):
        gateway, clock = self.gateway()
        html = (yield flattenString(None, graphs.graphs_panel(gateway))).decode()
        self.assertIn("no samples yet", html)
        self.assertIn("Tunnel 1: line to network", html)
        self.assertIn("Line 1: errors", html)
        self.assertIn("Line 1: bus transactions", html)
        self.assertIn("Line 1: bus busy", html)


class DashboardTests(GatewayCase):
    """etc/grafana/cmegw-dashboard.json asks only for series the gateway exports, in valid PromQL."""

    def expressions(self) -> list[str]:
        dashboard = json.loads((Path(__file__).resolve().parents[1] / "etc/grafana/cmegw-dashboard.json").read_text())
        found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        self.assertGreater(len(found), 15)
        return found

    def test_every_series_exists(self):
        gateway = self.make_gateway()
        stats = HttpStatistics()
        self.patch(__import__("cmegw.ops.metrics", fromlist=["web_statistics"]), "web_statistics",
                   lambda gateway: stats)
        gateway.lines[1].stats.parity_errors = gateway.lines[1].stats.framing_errors = 0
        gateway.lines[1].stats.overrun_errors = gateway.lines[1].stats.buffer_errors = 0
        gateway.lines[1].stats.rx_breaks = 0
        stats.count_response(200)
        text = scrape(gateway)
        exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        for expr in self.expressions():
            for name in re.findall(r"\bcmegw_[a-z0-9_]+", expr):
                if name.startswith("cmegw_mbus_"):
                    continue  # the arbiters' series: checked below against their statistics' fields
                self.assertIn(name, exported, expr)
        from cmegw.ops.metrics import MBUS_NAMES
        from cmegw.mbus.arbiter import ArbiterStatistics

        mbus = {MBUS_NAMES.get(f, f"cmegw_mbus_{f}") for f in attrs.fields_dict(ArbiterStatistics)}
        mbus = {n if n.endswith(("_length", "_peak")) else n + "_total" for n in mbus} | {"cmegw_mbus_meters"}
        try:
            from cmegw.mbus.results import MasterStatistics
        except ImportError:
            MasterStatistics = None
        if MasterStatistics is not None:
            mbus |= {f"cmegw_mbus_master_{f}_total" for f in attrs.fields_dict(MasterStatistics)}
        for expr in self.expressions():
            for name in re.findall(r"\bcmegw_mbus_[a-z0-9_]+", expr):
                self.assertIn(name, mbus, expr)

    def test_promql_parses(self):
        promtool_path = shutil.which("promtool")
        if promtool_path is None:
            raise SkipTest("promtool is not installed (Debian: apt-get install prometheus)")
        rules = ["groups:", "- name: dashboard", "  rules:"]
        for i, expr in enumerate(self.expressions()):
            expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
            rules += [f"  - record: cmegw:dashboard_{i}", f"    expr: {json.dumps(expr)}"]
        path = Path(self.mktemp())
        path.write_text("\n".join(rules) + "\n")
        result = subprocess.run([promtool_path, "check", "rules", str(path)], capture_output=True, text=True,
                                timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class ConnectModeTests(GatewayCase):
    def test_connect_series(self):
        connect = SimpleNamespace(state="retry", attempts=4, tls_failures=1, failed_rounds=2, buffered=17)
        gateway = self.make_gateway()
        gateway.state.tunnels[1] = attrs.evolve(gateway.state.tunnels[1], connect=connect)
        text = scrape(gateway)
        s = samples(text)
        self.assertEqual(s[("cmegw_tunnel_connect_attempts_total", (("tunnel", "1"),))], 4)
        self.assertEqual(s[("cmegw_tunnel_connect_tls_failures_total", (("tunnel", "1"),))], 1)
        self.assertEqual(s[("cmegw_tunnel_connect_buffered_bytes", (("tunnel", "1"),))], 17)
        self.assertEqual(s[("cmegw_tunnel_connect_state", (("state", "retry"), ("tunnel", "1")))], 1)
        self.assertEqual(s[("cmegw_tunnel_connect_state", (("state", "connected"), ("tunnel", "1")))], 0)
        result = promtool(text)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, b""))
