# -*- test-case-name: tests.test_state -*-
"""
GatewayState: what the gateway publishes and every face reads.

The service builds one `GatewayState` and keeps it across in-process
restarts.  It writes into it (the running configuration, the statistics
objects of the parts it built); the faces (web pages, API, console, metrics,
systemd status, graphs) only read it, and change things through the
service's named actions or the configuration store.  No face reaches into a
running part: they read the statistics objects and the views here.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping

import attrs

from cmegw.config.model import Config
from cmegw.config.settings import get_setting, setting_names
from cmegw.login import LoginLimiter
from cmegw.mbus.timing import defragmentation_timeout, first_byte_timeout
from cmegw.stats import CONNECT_CONNECTED, LINE_ERROR, TUNNEL_CONNECTED, GatewayStatus, LineStatistics, TunnelStatistics

#: Seconds over which traffic makes the ACT indication flash.
ACTIVITY_WINDOW = 2.0
#: Graph samples kept (one hour at the sampler's 10 s).
HISTORY_SAMPLES = 360


@attrs.frozen
class TunnelView:
    """One tunnel's statistics: the device's counters, its allow-list and TLS refusals, connect mode."""

    number: int
    stats: TunnelStatistics
    #: `cmegw.tunnel.allowlist.AccessStatistics` of the accept-mode listener.
    access: Any = None
    #: `cmegw.tunnel.connect.ConnectStatistics` of its connect mode (dial-out).
    connect: Any = None
    #: `cmegw.tunnel.sharing.SharingStatistics` while the tunnel shares the bus, else None.
    sharing: Any = None


@attrs.frozen
class BusView:
    """One line's bus: the arbiter's transaction counters and the M-Bus master's scans and finds."""

    number: int
    _master: Any = attrs.field(repr=False)

    @property
    def stats(self) -> Any:
        """`cmegw.mbus.arbiter.ArbiterStatistics`: transactions, silent and garbled answers, busy time."""
        return self._master.arbiter.stats

    @property
    def master_stats(self) -> Any:
        return getattr(self._master, "stats", None)

    @property
    def scan(self) -> Any:
        """The running or last `cmegw.mbus.results.Scan`, or None."""
        return self._master.scan

    @property
    def results(self) -> Mapping[str, list[Any]]:
        """The meters the last scan of each kind found (``primary``, ``secondary``)."""
        return self._master.results

    @property
    def found_meters(self) -> int:
        """How many meters the line's master knows: the largest result of its scans."""
        return max((len(found) for found in self.results.values()), default=0)


class History:
    """Aligned graph samples: a time axis and one bounded deque of values (None: no value) per series."""

    def __init__(self, samples: int = HISTORY_SAMPLES) -> None:
        self.samples = samples
        self.times: collections.deque[float] = collections.deque(maxlen=samples)
        self.values: dict[str, collections.deque[float | None]] = {}

    def add(self, time: float, values: dict[str, float]) -> None:
        self.times.append(time)
        for key in values.keys() - self.values.keys():
            self.values[key] = collections.deque([None] * (len(self.times) - 1), maxlen=self.samples)
        for key, series in self.values.items():
            series.append(values.get(key))

    def series(self, key: str) -> list[tuple[float, float | None]]:
        return list(zip(self.times, self.values.get(key, [None] * len(self.times))))


@attrs.define(eq=False)
class GatewayState:
    """
    The published state.  `config` is the configuration in force (with the
    command line's overrides); ``store.config`` is the file's; the mappings are
    keyed by line or tunnel number and rebuilt by the service at each start.
    """

    clock: Any
    store: Any
    overrides: Any
    config: Config
    status: GatewayStatus = attrs.Factory(GatewayStatus)
    lines: dict[int, LineStatistics] = attrs.Factory(dict)
    tunnels: dict[int, TunnelView] = attrs.Factory(dict)
    bus: dict[int, BusView] = attrs.Factory(dict)
    #: What the running web part publishes of itself (``stats``: HttpStatistics, ``access_log``,
    #: ``listening``, ``tls``), or None while it does not run.
    web: Any = None
    #: The scheduled readouts (`cmegw.readout.service.ReadoutService`: ``meters``, ``target_statuses()``,
    #: ``backlogs``, ``store``), or None before the first start.
    readout: Any = None
    #: Traffic traces by line number (`cmegw.ops.trace.LineTrace`), kept across restarts.
    traces: dict[int, Any] = attrs.Factory(dict)
    #: The graphs' samples, kept across restarts.
    history: History = attrs.Factory(History)
    #: The backend that applies the Network settings to the host (`cmegw.host.NetworkApplier`), read for `host_network`.
    host_applier: Any = None
    #: The login limiter the web and the console share (`cmegw.login.LoginLimiter`; its ``stats``: failures by face).
    logins: LoginLimiter = attrs.Factory(lambda self: LoginLimiter(self.clock), takes_self=True)
    #: Line bytes counted when the indications were last read, and when they last changed.
    _activity: tuple[int, float] = (0, 0.0)
    running: bool = False

    @property
    def tunnel_stats(self) -> dict[int, TunnelStatistics]:
        return {n: t.stats for n, t in self.tunnels.items()}

    @property
    def connect_stats(self) -> dict[int, Any]:
        """Connect mode's statistics of the tunnels that have it."""
        return {n: t.connect for n, t in self.tunnels.items() if t.connect is not None}

    @property
    def access_stats(self) -> dict[int, Any]:
        """The allow-list and TLS refusals of the accept-mode tunnels."""
        return {n: t.access for n, t in self.tunnels.items() if t.access is not None}

    @property
    def host_network(self) -> Any:
        """What the host network backend last did (`cmegw.host.HostNetworkResult`), or None."""
        return getattr(self.host_applier, "last", None)

    def uptime(self) -> float:
        return self.clock.seconds() - self.status.started_at

    def pending_restart(self) -> list[str]:
        """Settings saved in the file that wait for a restart to take effect."""
        saved = self.overrides.apply(self.store.config)
        running = self.config
        names = []
        for name in setting_names(saved):
            try:
                if get_setting(saved, name) != get_setting(running, name):
                    names.append(name)
            except ValueError:
                names.append(name)  # a line or tunnel added or removed
        if set(saved.lines) != set(running.lines) or set(saved.tunnels) != set(running.tunnels):
            names.append("line/tunnel set")
        return names

    def indications(self) -> dict[str, bool]:
        """The device's four LEDs: PWR, ERR, LINK, ACT."""
        now = self.clock.seconds()
        total = sum(s.rx_bytes + s.tx_bytes for s in self.lines.values())
        last_total, last_change = self._activity
        if total != last_total:
            self._activity = (total, now)
            last_change = now
        return {
            "PWR": self.running,
            "ERR": any(s.state == LINE_ERROR for s in self.lines.values()),
            "LINK": any(t.stats.state == TUNNEL_CONNECTED or getattr(t.connect, "state", "") == CONNECT_CONNECTED
                        for t in self.tunnels.values()),
            "ACT": now - last_change < ACTIVITY_WINDOW and last_change > 0,
        }

    def line_timing(self, n: int) -> list[tuple[str, str]]:
        """
        Line `n`'s adapter and the M-Bus timeouts it makes, as (label, text)
        rows (the M-Bus Serial page and the console's ``show line``).
        """
        stats = self.lines.get(n)
        if stats is None:
            return []
        rows = [("Adapter", stats.adapter or "not seen yet (the line has not opened)"),
                ("Low latency", stats.low_latency or "—"),
                ("Latency timer", stats.latency_timer or "—")]
        if stats.slack is not None and stats.baud_rate:
            own = stats.adapter_slack if stats.adapter_slack is not None else stats.slack - stats.extra_slack
            rows += [("Delivery slack", f"{_ms(stats.slack)} (adapter {_ms(own)} + extra {_ms(stats.extra_slack)})"),
                     ("First-byte timeout", f"{_ms(first_byte_timeout(stats.baud_rate, stats.slack))} "
                                            f"at {stats.baud_rate} baud"),
                     ("Defragmentation timeout", _ms(defragmentation_timeout(stats.baud_rate, stats.slack)))]
        bus = self.bus.get(n)
        gap = getattr(getattr(bus, "stats", None), "reply_gap_peak", None)
        if gap is not None:
            rows.append(("Largest gap inside a reply", f"{_ms(gap)} (measured beyond the characters' time)"))
        return rows

    def line_peer(self, n: int) -> str:
        """Whom line `n`'s bytes come from and go to right now: its tunnel's client, or ""."""
        tunnel = self.tunnels.get(n)
        return tunnel.stats.peer if tunnel is not None else ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
