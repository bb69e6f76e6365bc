"""
Tests for `cmegw.web.pages.serial`: the M-Bus Serial configuration form.
"""

from __future__ import annotations

from twisted.internet import defer

from tests.web_helpers import PagesTestBase


class SerialFormTests(PagesTestBase):
    """The form over a fake gateway."""

    @defer.inlineCallbacks
    def test_bad_baud_rate_is_shown_at_the_field(self) -> None:
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "1234"})
        self.assertEqual(response.code, 400)
        self.assertIn('class="field-error"', body)
        self.assertIn("Baud rate of line 1: 1234 is not allowed; use one of 300", body)
        self.assertIn('aria-invalid="true"', body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_warns_when_the_line_runs_at_another_rate_than_the_last_scan(self) -> None:
        from cmegw.mbus.address import SecondaryAddress
        from cmegw.mbus.results import SCAN_DONE, MeterInfo, Scan

        class Bus:
            scan = Scan("primary", 1, 0.0, 251, state=SCAN_DONE, baud=2400,
                        found=[MeterInfo(1, SecondaryAddress("12345678", "KAM", 0x19, 0x04))])

        self.gateway.state.bus = {1: Bus()}
        self.gateway.state.lines[1].baud_rate = 2400
        response, body = yield self.get("/serial/configuration")
        self.assertNotIn("The last scan found", body)
        self.gateway.state.lines[1].baud_rate = 9600
        response, body = yield self.get("/serial/configuration")
        self.assertIn("The last scan found 1 meter at 2400 baud; the line runs at 9600 baud now", body)

    @defer.inlineCallbacks
    def test_statistics_show_the_adapter_and_its_timeouts(self) -> None:
        line = self.gateway.state.lines[1]
        line.adapter, line.low_latency, line.latency_timer = "FTDI FT232R USB UART", "on", "1 ms (set to 1 ms)"
        line.baud_rate, line.adapter_slack, line.extra_slack, line.slack = 2400, 0.005, 0.0, 0.005
        response, body = yield self.get("/serial")
        self.assertEqual(response.code, 200)
        for text in ("FTDI FT232R USB UART", "1 ms (set to 1 ms)", "5.0 ms (adapter 5.0 ms + extra 0.0 ms)",
                     "First-byte timeout", "197.1 ms at 2400 baud", "Defragmentation timeout", "18.8 ms"):
            self.assertIn(text, body)

    @defer.inlineCallbacks
    def test_byte_counts_read_as_sizes(self) -> None:
        line = self.gateway.state.lines[1]
        line.rx_bytes, line.tx_bytes = 1_234_567, 5
        _, body = yield self.get("/serial")
        self.assertIn('<span title="1\u202f234\u202f567 bytes" class="bytes">1.23 MB</span>', body)
        self.assertIn('>5 bytes</span>', body)

    @defer.inlineCallbacks
    def test_extra_slack_saved(self) -> None:
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "2400",
                                                                   "line.1.extra_slack": "0.3"})
        self.assertEqual(response.code, 200, body)
        self.assertEqual(self.store.config.lines[1].extra_slack, 0.3)
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.extra_slack": "9"})
        self.assertEqual(response.code, 400)
        self.assertIn("use a number from 0 to 5 seconds", body)

    @defer.inlineCallbacks
    def test_bus_graphs_with_axes(self) -> None:
        """The statistics page graphs each line's bus (the arbiter's counters) beside its errors."""
        from types import SimpleNamespace

        from cmegw.mbus.arbiter import ArbiterStatistics
        from cmegw.state import BusView

        self.gateway.state.bus = {1: BusView(1, SimpleNamespace(arbiter=SimpleNamespace(stats=ArbiterStatistics())))}
        now = self.gateway.state.clock.seconds()
        for i in range(6):
            self.gateway.state.history.add(now - 50 + 10 * i, {"bus1.transactions": 30.0, "bus1.silent": 6.0,
                                                               "bus1.garbled": 0.0, "bus1.busy": 40.0})
        _, body = yield self.get("/serial")
        transactions = body[body.index('id="graph-bus1-transactions"'):]
        transactions = transactions[:transactions.index("</figure>")]
        self.assertEqual(transactions.count('class="chart-axis"'), 2, "a value axis and a time axis")
        self.assertEqual(transactions.count("<polyline"), 3, "all, silent and garbled answers")
        self.assertIn(">per min</text>", transactions)
        self.assertIn("all: now 30 per min", transactions)
        self.assertIn("Line 1: bus busy</strong>: now 40 % of the time", body)

    @defer.inlineCallbacks
    def test_unknown_line(self) -> None:
        response, _ = yield self.post("/serial/configuration", {"_group": "7", "line.7.baud_rate": "300"})
        self.assertEqual(response.code, 400)


class SerialThroughTheGatewayTests(PagesTestBase):
    """The form on a running gateway: the line on its pty follows at once."""

    real_gateway = True

    @defer.inlineCallbacks
    def test_baud_rate_applies_at_once(self) -> None:
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"})
        self.assertEqual(response.code, 200)
        self.assertIn("Applied at once: ", body)
        self.assertIn("Baud rate", body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.lines[1].stats.baud_rate, 300)
        _, status = yield self.get("/status")
        self.assertIn("RS232, 300, Even, 8, 1, None", status)
        _, statistics = yield self.get("/serial")
        self.assertIn("pseudo-terminal (simulated bus)", statistics)
        self.assertIn("at 300 baud", statistics, "the timeouts follow the baud rate")
