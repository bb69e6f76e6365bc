# -*- test-case-name: tests.test_ops_metrics -*-
"""
``/metrics``: the gateway's statistics in the Prometheus text format.

`GatewayCollector` is a ``prometheus_client`` collector that reads the
statistics the gateway publishes (`cmegw.state.GatewayState`) when
Prometheus scrapes (nothing is counted twice, nothing runs between scrapes):
lines and tunnels, the HTTP server while the web part runs, and the bus of
each line (arbiter and M-Bus master), and the readouts (each meter of the
list, each delivery target, the reading store).  Counters end in
``_total``; gauges say states (tunnel state, line state, connected peers).
Series are labelled ``line``, ``tunnel``, ``meter`` and ``target``.

`metrics_resource(state)` is the twisted.web resource; it renders in the
reactor thread (prometheus_client's own Twisted resource uses a thread, and
the statistics are only consistent in the reactor's).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

import cmegw
from cmegw.readout.reading import TARGET_CONNECTED
from cmegw.stats import (
    LINE_CLOSED,
    LINE_ERROR,
    LINE_OPEN,
    TUNNEL_CONNECTED,
    TUNNEL_DISABLED,
    TUNNEL_LISTEN_FAILED,
    TUNNEL_WAITING,
)

log = Logger(namespace="cmegw.metrics")

LINE_STATES = (LINE_OPEN, LINE_CLOSED, LINE_ERROR)
TUNNEL_STATES = (TUNNEL_WAITING, TUNNEL_CONNECTED, TUNNEL_DISABLED, TUNNEL_LISTEN_FAILED)
#: Connect mode's states (cmegw.tunnel.connect), each exported as 0 or 1.
CONNECT_STATES = ("disabled", "idle", "connecting", "connected", "retry", "line held")

#: LineStatistics counters: field, metric name (without _total), help.
LINE_COUNTERS = (
    ("rx_bytes", "cmegw_line_received_bytes", "Bytes read from the serial line (from the meters)."),
    ("tx_bytes", "cmegw_line_sent_bytes", "Bytes written to the serial line (to the meters)."),
    ("rx_breaks", "cmegw_line_rx_breaks", "Breaks received (kernel counter since the line opened)."),
    ("tx_breaks", "cmegw_line_tx_breaks", "Breaks sent since the line opened."),
    ("parity_errors", "cmegw_line_parity_errors", "Parity errors (kernel counter since the line opened)."),
    ("framing_errors", "cmegw_line_framing_errors", "Framing errors (kernel counter since the line opened)."),
    ("overrun_errors", "cmegw_line_overrun_errors", "UART overruns (kernel counter since the line opened)."),
    ("buffer_errors", "cmegw_line_buffer_errors", "Receive buffer overruns (kernel counter since the line opened)."),
)
#: TunnelStatistics counters.
TUNNEL_COUNTERS = (
    ("completed_accepts", "cmegw_tunnel_accepts", "Client connections accepted."),
    ("completed_connects", "cmegw_tunnel_connects", "Connections made in connect mode."),
    ("disconnects", "cmegw_tunnel_disconnects", "Connections ended."),
    ("dropped_accepts", "cmegw_tunnel_dropped_accepts", "Clients refused (the line was in use, or not allowed)."),
    ("dropped_connects", "cmegw_tunnel_dropped_connects", "Connect-mode attempts that failed."),
    ("octets_from_serial", "cmegw_tunnel_line_to_network_bytes", "Bytes sent from the line to the client."),
    ("octets_from_network", "cmegw_tunnel_network_to_line_bytes", "Bytes sent from the client to the line."),
    ("octets_discarded", "cmegw_tunnel_discarded_bytes", "Bytes from the line discarded: no client connected."),
)
#: HttpStatistics fields with their own names; by_status and status_* become cmegw_http_responses_total{code}.
#: The arbiter's statistics that are gauges, and names that read better than ``cmegw_mbus_<field>``.
MBUS_GAUGES = frozenset({"queue_length", "queue_peak", "reply_gap_peak"})
MBUS_NAMES = {"busy_time": "cmegw_mbus_busy_seconds", "answered": "cmegw_mbus_answered_transactions",
              "silent": "cmegw_mbus_silent_transactions", "garbled": "cmegw_mbus_garbled_transactions",
              "invalid": "cmegw_mbus_invalid_transactions", "truncated": "cmegw_mbus_truncated_transactions",
              "refused": "cmegw_mbus_refused_transactions", "cancelled": "cmegw_mbus_cancelled_transactions",
              "held_bytes": "cmegw_mbus_held_bytes", "held_dropped": "cmegw_mbus_held_dropped_bytes",
              "stray_bytes": "cmegw_mbus_stray_bytes"}
HTTP_COUNTERS = {
    "rx_bytes": ("cmegw_http_received_bytes", "Bytes received by the web server."),
    "tx_bytes": ("cmegw_http_sent_bytes", "Bytes sent by the web server."),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fields(stats: Any) -> Iterator[tuple[str, Any]]:
    """The public fields of a statistics object (attrs class or plain object; None has none)."""
    if stats is None:
        return
    if attrs.has(type(stats)):
        for field in attrs.fields(type(stats)):
            yield field.name, getattr(stats, field.name)
    else:
        for name, value in vars(stats).items():
            if not name.startswith("_"):
                yield name, value


def web_statistics(state: Any) -> Any:
    """The web server's HttpStatistics, or None while no web part runs."""
    return state.web.stats if state.web is not None else None


class GatewayCollector:
    """Reads the published `cmegw.state.GatewayState` at each scrape."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        yield from self._gateway()
        yield from self._lines()
        yield from self._tunnels()
        yield from self._connect()
        yield from self._http()
        yield from self._masters()
        yield from self._logins()
        yield from self._meters()
        yield from self._delivery()

    def _gateway(self) -> Iterator[Metric]:
        state = self.state
        identity = state.config.identity
        yield InfoMetricFamily("cmegw", "The gateway's software version and identity.",
                               value={"version": cmegw.__version__, "serial_number": identity.serial_number,
                                      "product_type": identity.product_type})
        yield GaugeMetricFamily("cmegw_start_time_seconds", "When the gateway started (Unix time).",
                                value=state.status.started_at)
        yield CounterMetricFamily("cmegw_restarts", "In-process restarts since the process started.",
                                  value=state.status.restarts)
        yield GaugeMetricFamily("cmegw_configuration_problem",
                                "1 while the configuration file is not the one running (bad file).",
                                value=1 if state.status.config_problem else 0)

    def _lines(self) -> Iterator[Metric]:
        lines = sorted(self.state.lines.items())
        for field, name, text in LINE_COUNTERS:
            family = CounterMetricFamily(name, text, labels=["line"])
            for n, stats in lines:
                value = getattr(stats, field)
                if value is not None:  # None: the driver keeps no such counter
                    family.add_metric([str(n)], value)
            yield family
        up = GaugeMetricFamily("cmegw_line_up", "1 while the serial line is open.", labels=["line"])
        state = GaugeMetricFamily("cmegw_line_state", "The line's state: 1 for the current one.",
                                  labels=["line", "state"])
        baud = GaugeMetricFamily("cmegw_line_baud_rate", "The line's speed (bits per second).", labels=["line"])
        queued_rx = GaugeMetricFamily("cmegw_line_queued_rx_bytes", "Bytes waiting in the kernel to be read.",
                                      labels=["line"])
        queued_tx = GaugeMetricFamily("cmegw_line_queued_tx_bytes", "Bytes waiting to be sent on the line.",
                                      labels=["line"])
        reopen = GaugeMetricFamily("cmegw_line_reopen_attempts",
                                   "Attempts to reopen the device since it went away (0 while open).",
                                   labels=["line"])
        info = InfoMetricFamily("cmegw_line", "The line's serial device.", labels=["line"])
        trace = GaugeMetricFamily("cmegw_line_trace_enabled", "1 while the line's traffic trace is on.",
                                  labels=["line"])
        for n, s in lines:
            label = str(n)
            up.add_metric([label], 1 if s.state == LINE_OPEN else 0)
            for name in LINE_STATES:
                state.add_metric([label, name], 1 if s.state == name else 0)
            baud.add_metric([label], s.baud_rate)
            if s.queued_rx is not None:
                queued_rx.add_metric([label], s.queued_rx)
            if s.queued_tx is not None:
                queued_tx.add_metric([label], s.queued_tx)
            reopen.add_metric([label], s.reopen_attempts)
            info.add_metric([label], {"device": s.device})
            tracing = self.state.traces.get(n)
            trace.add_metric([label], 1 if tracing is not None and tracing.enabled else 0)
        yield from (up, state, baud, queued_rx, queued_tx, reopen, info, trace)

    def _tunnels(self) -> Iterator[Metric]:
        tunnels = sorted(self.state.tunnels.items())
        now = self.state.clock.seconds()
        for field, name, text in TUNNEL_COUNTERS:
            family = CounterMetricFamily(name, text, labels=["tunnel"])
            for n, tunnel in tunnels:
                family.add_metric([str(n)], getattr(tunnel.stats, field))
            yield family
        accept_time = CounterMetricFamily("cmegw_tunnel_accept_connected_seconds",
                                          "Seconds clients have been connected in accept mode.", labels=["tunnel"])
        connect_time = CounterMetricFamily("cmegw_tunnel_connect_connected_seconds",
                                           "Seconds connected to each connect-mode host (1-12).",
                                           labels=["tunnel", "host"])
        state = GaugeMetricFamily("cmegw_tunnel_state", "The tunnel's state: 1 for the current one.",
                                  labels=["tunnel", "state"])
        peers = GaugeMetricFamily("cmegw_tunnel_connected_peers", "Clients connected to the tunnel now.",
                                  labels=["tunnel"])
        listening = GaugeMetricFamily("cmegw_tunnel_listening", "1 while the tunnel's port listens.",
                                      labels=["tunnel"])
        info = InfoMetricFamily("cmegw_tunnel", "Where the tunnel listens.", labels=["tunnel"])
        for n, tunnel in tunnels:
            s, label = tunnel.stats, str(n)
            accept_time.add_metric([label], s.accept_connection_time(now))
            for host, seconds in enumerate(s.connect_times, 1):
                connect_time.add_metric([label, str(host)], seconds)
            for name in TUNNEL_STATES:
                state.add_metric([label, name], 1 if s.state == name else 0)
            sharing = tunnel.sharing
            peers.add_metric([label], sharing.clients if sharing is not None else int(s.state == TUNNEL_CONNECTED))
            listening.add_metric([label], 1 if s.listening else 0)
            info.add_metric([label], {"listening": s.listening})
        yield from (accept_time, connect_time, state, peers, listening, info)

    def _connect(self) -> Iterator[Metric]:
        """Connect mode (dial-out) of the tunnels that have it."""
        connect = sorted((n, t.connect) for n, t in self.state.tunnels.items() if t.connect is not None)
        if not connect:
            return
        attempts = CounterMetricFamily("cmegw_tunnel_connect_attempts", "Connections tried in connect mode.",
                                       labels=["tunnel"])
        tls = CounterMetricFamily("cmegw_tunnel_connect_tls_failures",
                                  "Connect-mode connections dropped by TLS verification.", labels=["tunnel"])
        rounds = GaugeMetricFamily("cmegw_tunnel_connect_failed_rounds",
                                   "Rounds in a row in which no host answered (the back-off step).", labels=["tunnel"])
        buffered = GaugeMetricFamily("cmegw_tunnel_connect_buffered_bytes",
                                     "Bytes from the line waiting for the connection (start on data).",
                                     labels=["tunnel"])
        state = GaugeMetricFamily("cmegw_tunnel_connect_state", "The connect tunnel's state: 1 for the current one.",
                                  labels=["tunnel", "state"])
        for n, s in connect:
            label = str(n)
            for family, field in ((attempts, "attempts"), (tls, "tls_failures"), (rounds, "failed_rounds"),
                                  (buffered, "buffered")):
                value = getattr(s, field, None)
                if _number(value):
                    family.add_metric([label], value)
            current = getattr(s, "state", "")
            for name in sorted(set(CONNECT_STATES) | {current} - {""}):
                state.add_metric([label, name], 1 if name == current else 0)
        yield from (attempts, tls, rounds, buffered, state)

    def _http(self) -> Iterator[Metric]:
        stats = web_statistics(self.state)
        if stats is None:
            return
        responses = CounterMetricFamily("cmegw_http_responses", "HTTP responses by status code.", labels=["code"])
        by_status = getattr(stats, "by_status", None) or {}
        for code, count in sorted(by_status.items()):
            responses.add_metric([str(code)], count)
        for name, value in _fields(stats):
            if name == "by_status" or not _number(value):
                continue
            if name.startswith("status_"):
                if not by_status and name[7:].isdigit():
                    responses.add_metric([name[7:]], value)
                continue
            metric, text = HTTP_COUNTERS.get(name, (f"cmegw_http_{name}", f"HTTP statistic {name}."))
            yield CounterMetricFamily(metric, text, value=value)
        yield responses

    def _masters(self) -> Iterator[Metric]:
        """
        The M-Bus side of each line, where the gateway has it: the arbiter's
        counters (transactions, answered, silent, ... as
        ``cmegw_mbus_<name>_total{line}``; its queue as gauges), the number of
        meters the master's last scan found, and any number in a master's
        ``stats``.
        """
        families: dict[str, Metric] = {}

        def add(metric: str, text: str, gauge: bool, line: int, value: float) -> None:
            if metric not in families:
                kind = GaugeMetricFamily if gauge else CounterMetricFamily
                families[metric] = kind(metric, text, labels=["line"])
            families[metric].add_metric([str(line)], value)

        for n, bus in sorted(self.state.bus.items()):
            for name, value in _fields(bus.stats):
                if _number(value):
                    gauge = name in MBUS_GAUGES
                    metric = MBUS_NAMES.get(name, f"cmegw_mbus_{name}")
                    add(metric, f"M-Bus bus: {name.replace('_', ' ')}.", gauge, n, value)
        for n, bus in sorted(self.state.bus.items()):
            add("cmegw_mbus_meters", "Meters the last scan found.", True, n, bus.found_meters)
            for name, value in _fields(bus.master_stats):
                if _number(value):
                    add("cmegw_mbus_master_" + name.removesuffix("_total"), f"M-Bus master: {name}.", False, n,
                        value)
        yield from families.values()


    def _logins(self) -> Iterator[Metric]:
        """Failed logins and logins refused (the source waits after failures), by face (web, console)."""
        logins = getattr(self.state, "logins", None)
        if logins is None:
            return
        failures = CounterMetricFamily("cmegw_login_failures", "Failed logins (wrong user name or password).",
                                       labels=["face"])
        refused = CounterMetricFamily("cmegw_login_refused",
                                      "Logins refused untried: the source address waits after failed logins.",
                                      labels=["face"])
        for face, count in sorted(logins.stats.failures.items()):
            failures.add_metric([face], count)
        for face, count in sorted(logins.stats.refused.items()):
            refused.add_metric([face], count)
        yield failures
        yield refused
        yield GaugeMetricFamily("cmegw_login_sources", "Source addresses remembered for failed logins.",
                                value=len(logins))


    def _meters(self) -> Iterator[Metric]:
        """Each meter of the list, labelled with its id and line (none before the readouts start)."""
        readout = self.state.readout
        if readout is None:
            return
        labels = ["meter", "line"]
        last = GaugeMetricFamily("cmegw_meter_last_success_timestamp_seconds",
                                 "When the meter was last read successfully (Unix time); absent: never.",
                                 labels=labels)
        reads = CounterMetricFamily("cmegw_meter_reads", "Reads of the meter (scheduled and read now).",
                                    labels=labels)
        failures = CounterMetricFamily("cmegw_meter_read_failures",
                                       "Reads of the meter that failed (no answer or a wrong one, after retries).",
                                       labels=labels)
        alarm = GaugeMetricFamily("cmegw_meter_alarm",
                                  "1 while the meter failed its last reads (readout.alarm_after in a row).",
                                  labels=labels)
        overruns = CounterMetricFamily("cmegw_meter_overruns",
                                       "Scheduled reads skipped: the meter's previous read was still waiting "
                                       "or running.", labels=labels)
        for key, status in sorted(readout.meters.items()):
            values = [key, str(status.config.line)]
            if status.last_success is not None:
                last.add_metric(values, status.last_success)
            reads.add_metric(values, status.reads)
            failures.add_metric(values, status.failures)
            alarm.add_metric(values, 1 if status.alarm else 0)
            overruns.add_metric(values, status.overruns)
        yield from (last, reads, failures, alarm, overruns)

    def _delivery(self) -> Iterator[Metric]:
        """Each delivery target's queue and state, and the reading store."""
        readout = self.state.readout
        if readout is None:
            return
        now = self.state.clock.seconds()
        backlog = GaugeMetricFamily("cmegw_delivery_backlog_readings",
                                    "Readings waiting for the target to acknowledge them.", labels=["target"])
        age = GaugeMetricFamily("cmegw_delivery_backlog_oldest_age_seconds",
                                "How long the oldest reading waiting for the target has waited (0: none waits).",
                                labels=["target"])
        delivered = CounterMetricFamily("cmegw_delivery_delivered", "Readings the target acknowledged.",
                                        labels=["target"])
        errors = CounterMetricFamily("cmegw_delivery_errors",
                                     "Failed deliveries and connection attempts to the target.", labels=["target"])
        connected = GaugeMetricFamily("cmegw_delivery_connected",
                                      "1 while the target is connected (MQTT) or accepting readings (HTTP).",
                                      labels=["target"])
        for name, target in sorted(readout.target_statuses().items()):
            count, oldest = readout.backlogs.get(name, (0, None))
            backlog.add_metric([name], count)
            age.add_metric([name], max(0.0, now - oldest) if count and oldest is not None else 0.0)
            delivered.add_metric([name], target.delivered)
            errors.add_metric([name], target.failures)
            connected.add_metric([name], 1 if target.state == TARGET_CONNECTED else 0)
        yield from (backlog, age, delivered, errors, connected)
        summary = readout.store_summary()
        if summary.get("bytes") is not None:
            yield GaugeMetricFamily("cmegw_store_bytes", "Size of the reading store on disk.",
                                    value=summary["bytes"])
        yield GaugeMetricFamily("cmegw_store_problem",
                                "1 while the reading store has a problem (disk full, file not writable).",
                                value=1 if summary.get("problem") else 0)


def registry_for(state: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(state))
    return registry


class MetricsResource(Resource):
    """Renders a registry in the format the scraper asks for (text 0.0.4 or OpenMetrics)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET


def metrics_resource(state: Any) -> Resource:
    """``/metrics`` of the gateway whose published state is `state`."""
    return MetricsResource(registry_for(state))
