# -*- test-case-name: tests.test_stats,tests.test_tunnel_dialing -*-
"""
Statistics and state that the parts publish and everybody else only reads.

Plain counters: the part that owns one increments it; web pages, the console,
metrics and the systemd status read them.  Nothing here does I/O.
"""

from __future__ import annotations

import math
from http.client import responses as HTTP_REASONS
from typing import Any, Callable

import attrs

Now = Callable[[], float]


def format_duration(seconds: float) -> str:
    """The device's duration form: ``0 days 00:01:17``."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return f"{days} days {hours:02d}:{minutes:02d}:{s:02d}"


class Counters:
    """A statistics object whose plain view (the API's JSON) is its fields."""

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


#: Line states
LINE_CLOSED = "closed"
LINE_OPEN = "open"
LINE_ERROR = "error"


@attrs.define
class LineStatistics(Counters):
    """The M-Bus Serial page's statistics of one line."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    #: Kernel counters (TIOCGICOUNT) since the line was opened; None where the driver has none.
    rx_breaks: int | None = None
    tx_breaks: int | None = None
    parity_errors: int | None = None
    framing_errors: int | None = None
    overrun_errors: int | None = None
    buffer_errors: int | None = None
    queued_rx: int | None = None
    queued_tx: int | None = None
    state: str = LINE_CLOSED
    error: str = ""
    baud_rate: int = 0
    device: str = ""
    opened_at: float | None = None
    reopen_attempts: int = 0
    #: The adapter found at the last open (`cmegw.serial.adapter`): in words, its low-latency state, its
    #: latency timer; the delivery slack it adds, the ``extra_slack`` setting, and their sum (seconds).
    adapter: str = ""
    low_latency: str = ""
    latency_timer: str = ""
    adapter_slack: float | None = None
    extra_slack: float = 0.0
    slack: float | None = None


#: (label, attribute of LineStatistics) in the order of the device's M-Bus Serial page.
LINE_COUNTERS = (
    ("Receiver bytes", "rx_bytes"),
    ("Transmitter bytes", "tx_bytes"),
    ("Receiver breaks", "rx_breaks"),
    ("Transmitter breaks", "tx_breaks"),
    ("Parity errors", "parity_errors"),
    ("Framing errors", "framing_errors"),
    ("Overrun errors", "overrun_errors"),
    ("No rx buffer errors", "buffer_errors"),
    ("Queued receive bytes", "queued_rx"),
    ("Queued transmit bytes", "queued_tx"),
)

#: Tunnel states
TUNNEL_DISABLED = "disabled"
TUNNEL_WAITING = "waiting"
TUNNEL_CONNECTED = "connected"
TUNNEL_LISTEN_FAILED = "listen failed"


#: (label, attribute of TunnelStatistics) in the order of the device's M-Bus TCP/IP page.
TUNNEL_COUNTERS = (
    ("Completed accepts", "completed_accepts"),
    ("Completed connects", "completed_connects"),
    ("Disconnects", "disconnects"),
    ("Dropped accepts", "dropped_accepts"),
    ("Dropped connects", "dropped_connects"),
    ("Octets forwarded from serial", "octets_from_serial"),
    ("Octets forwarded from network", "octets_from_network"),
    ("Octets discarded (no client)", "octets_discarded"),
)


@attrs.define
class TunnelStatistics:
    """The M-Bus TCP/IP page's statistics of one tunnel."""

    completed_accepts: int = 0
    completed_connects: int = 0
    disconnects: int = 0
    dropped_accepts: int = 0
    dropped_connects: int = 0
    octets_from_serial: int = 0
    octets_from_network: int = 0
    #: Bytes from the line while no client was connected (discarded).
    octets_discarded: int = 0
    #: Total seconds clients have been connected in accept mode (closed connections).
    accept_time_closed: float = 0.0
    connect_times: list[float] = attrs.field(factory=lambda: [0.0] * 12)
    state: str = TUNNEL_WAITING
    peer: str = ""
    connected_at: float | None = None
    listening: str = ""
    error: str = ""

    def accept_connection_time(self, now: float) -> float:
        """Seconds clients have been connected in accept mode, the current one included."""
        current = (now - self.connected_at) if self.connected_at is not None else 0.0
        return self.accept_time_closed + current

    def as_dict(self, now: float) -> dict[str, object]:
        d = attrs.asdict(self)
        d["accept_connection_time"] = self.accept_connection_time(now)
        return d


#: Connect mode's states (`ConnectStatistics.state`).
CONNECT_DISABLED = "disabled"
CONNECT_NO_HOSTS = "no hosts"
CONNECT_IDLE = "idle"
CONNECT_CONNECTING = "connecting"
CONNECT_CONNECTED = "connected"
CONNECT_RETRY = "retry"
CONNECT_HELD = "line held"


@attrs.define
class ConnectStatistics:
    """
    The connect tunnel's state, for Status, M-Bus TCP/IP, the console and the API:
    published for every tunnel, connect mode on or not (``disabled`` until it is).
    """

    state: str = CONNECT_DISABLED
    #: The host (as configured) being dialled or connected, and its number 1..12.
    host: str = ""
    host_number: int = 0
    #: The head-end's address while connected.
    peer: str = ""
    retry_at: float | None = None
    #: Who holds the line while the connect tunnel waits for it.
    holder: str = ""
    attempts: int = 0
    #: Rounds in a row in which no host answered (the back-off step).
    failed_rounds: int = 0
    tls_failures: int = 0
    #: The latest failure: which host, why (in words), when (clock seconds).
    last_error: str = ""
    last_error_at: float | None = None
    #: On-data bytes waiting for the connection.
    buffered: int = 0

    def text(self, now: float) -> str:
        """The device's words: disabled / connecting to X / connected to X / waiting N s before retry."""
        if self.state == CONNECT_CONNECTING:
            return f"connecting to {self.host}"
        if self.state == CONNECT_CONNECTED:
            return f"connected to {self.host}"
        if self.state == CONNECT_RETRY and self.retry_at is not None:
            return f"waiting {max(0, math.ceil(self.retry_at - now - 1e-9))} s before retry"
        if self.state == CONNECT_HELD:
            return f"waiting for the line (in use by {self.holder})" if self.holder else "waiting for the line"
        if self.state == CONNECT_IDLE:
            return "waiting for data from the line"
        if self.state == CONNECT_NO_HOSTS:
            return "no host configured"
        return self.state

    def as_dict(self, now: float) -> dict[str, object]:
        d = attrs.asdict(self)
        d["text"] = self.text(now)
        return d


def tunnel_rows(stats: TunnelStatistics, now: float) -> list[tuple[str, str]]:
    """A tunnel's statistics as the M-Bus TCP/IP page, the console and the API show them: (label, text)."""
    rows = [(label, str(getattr(stats, name))) for label, name in TUNNEL_COUNTERS]
    rows.append(("Accept connection time", format_duration(stats.accept_connection_time(now))))
    rows += [(f"Connect {i} connection time", format_duration(t)) for i, t in enumerate(stats.connect_times, 1)]
    return rows


def line_rows(stats: LineStatistics) -> list[tuple[str, int | None]]:
    """A line's counters as the M-Bus Serial page and the console show them (None: the driver keeps none)."""
    return [(label, getattr(stats, name)) for label, name in LINE_COUNTERS]


#: HTTP answers the device's HTTP / Statistics page counts one by one (the rest: "other answers").
COUNTED_STATUSES = (200, 400, 401, 404, 408, 413, 501)


def http_status_text(code: int) -> str:
    """An HTTP status as people read it: ``405 Method Not Allowed``."""
    return f"{code} {HTTP_REASONS.get(code, '')}".strip()


#: The HTTP statistics as the web page and the console show them: (label, counter) in the device's order, the
#: byte counts first (`byte_size_text`), the answers not counted one by one as "Other answers"
#: (`HttpStatistics.other_answers`).  The device's "Work queue full" and "Memory error" are left out (cmegw has
#: no such limits: always 0, in the API still).
HTTP_COUNTERS = (("Received", "rx_bytes"), ("Sent", "tx_bytes"),
                 *((http_status_text(code), f"status_{code}") for code in COUNTED_STATUSES),
                 ("Other answers", "status_unknown"), ("Connections lost (socket errors)", "socket_errors"))
#: The counters of `HTTP_COUNTERS` that count bytes.
HTTP_BYTE_COUNTERS = ("rx_bytes", "tx_bytes")
#: The units of `byte_size_text`, 1000 apart (as disks and networks count).
BYTE_UNITS = ("bytes", "kB", "MB", "GB", "TB")


def byte_size_text(count: int) -> str:
    """A byte count as people read it: 1.23 MB."""
    size, unit = float(count), 0
    while size >= 1000 and unit < len(BYTE_UNITS) - 1:
        size, unit = size / 1000, unit + 1
    return f"{count} {'byte' if count == 1 else 'bytes'}" if unit == 0 else f"{size:.3g} {BYTE_UNITS[unit]}"


@attrs.define
class HttpStatistics:
    """The counters of the device's HTTP / Statistics page."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    status_200: int = 0
    status_400: int = 0
    status_401: int = 0
    status_404: int = 0
    status_408: int = 0
    status_413: int = 0
    status_501: int = 0
    status_unknown: int = 0
    work_queue_full: int = 0
    socket_errors: int = 0
    memory_errors: int = 0
    by_status: dict[int, int] = attrs.field(factory=dict)

    def count_response(self, code: int) -> None:
        if code in COUNTED_STATUSES:
            name = f"status_{code}"
            setattr(self, name, getattr(self, name) + 1)
        else:
            self.status_unknown += 1
        if 100 <= code <= 599:
            self.by_status[code] = self.by_status.get(code, 0) + 1

    def other_answers(self) -> str:
        """The answers not counted one by one, each status said: ``303 See Other: 4, 405 Method Not Allowed: 1``."""
        return ", ".join(f"{http_status_text(code)}: {count}" for code, count in sorted(self.by_status.items())
                         if code not in COUNTED_STATUSES)

    def reset(self) -> None:
        for field in attrs.fields(HttpStatistics):
            setattr(self, field.name, {} if field.name == "by_status" else 0)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class GatewayStatus:
    """Whole-gateway state for the status page: start time and problems to show loudly."""

    started_at: float = 0.0
    config_problem: str | None = None
    restarts: int = 0
