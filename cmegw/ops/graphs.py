# -*- test-case-name: tests.test_ops_metrics -*-
"""
Graphs of the last hour: bytes per second each way and connections per
tunnel; per line, its errors and its bus (the arbiter's transactions with
the silent and garbled answers, and how much of the time the bus was busy).

`GraphSampler`, a part of the gateway, reads the published statistics every
`SAMPLE_INTERVAL` seconds into the state's `History` (bounded deques, one
hour; kept across in-process restarts).  `chart` draws one graph as SVG on
the server with axes of values and times (`cmegw.ops.chart`, no script, no
external resource) and `figures` gives the same numbers as text, so a page
stays readable without JavaScript or images.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import attrs
from twisted.application import service
from twisted.internet import task
from twisted.web.template import Tag, tags

from cmegw.ops.chart import Line, line_chart
from cmegw.state import HISTORY_SAMPLES, History  # noqa: F401 (History: the graphs' data)
from cmegw.stats import TUNNEL_CONNECTED

#: Seconds between two samples.
SAMPLE_INTERVAL = 10.0
#: Seconds of history kept.
HISTORY = 3600.0
SAMPLES = int(HISTORY / SAMPLE_INTERVAL)
assert SAMPLES == HISTORY_SAMPLES, "the state keeps an hour of samples"

#: LineStatistics counters whose sum is a line's errors.
LINE_ERROR_FIELDS = ("parity_errors", "framing_errors", "overrun_errors", "buffer_errors", "rx_breaks")

#: ArbiterStatistics counters whose sum is the bus's garbled answers.
GARBLED_FIELDS = ("garbled", "invalid", "truncated")
#: Counts are graphed per minute, whatever the sampling interval.
PER_MINUTE = "per min"
#: How each kind of series turns a counter's difference over one interval into the graphed value.
RATE, COUNT, SHARE = "rate", "count", "share"


@attrs.frozen
class Series:
    """
    What one graph shows: the history's `key` (and the `more` keys, drawn in
    the same chart: ``(key, label)``), its title and its unit.
    """

    key: str
    title: str
    unit: str
    label: str = ""
    more: tuple[tuple[str, str], ...] = ()

    @property
    def lines(self) -> list[tuple[str, str]]:
        """(history key, legend label) of each line the graph draws."""
        return [(self.key, self.label or self.title), *self.more]


def tunnel_series(n: int) -> list[Series]:
    return [Series(f"tunnel{n}.to_network", f"Tunnel {n}: line to network", "B/s"),
            Series(f"tunnel{n}.to_line", f"Tunnel {n}: network to line", "B/s"),
            Series(f"tunnel{n}.connections", f"Tunnel {n}: connections", f"new {PER_MINUTE}")]


def line_series(n: int) -> list[Series]:
    return [Series(f"line{n}.errors", f"Line {n}: errors", PER_MINUTE)]


def bus_series(n: int) -> list[Series]:
    """The bus of line `n`: its transactions with the silent and garbled answers, and its busy time."""
    return [Series(f"bus{n}.transactions", f"Line {n}: bus transactions", PER_MINUTE, "all",
                   ((f"bus{n}.silent", "silent"), (f"bus{n}.garbled", "garbled"))),
            Series(f"bus{n}.busy", f"Line {n}: bus busy", "% of the time")]


def _kind(key: str) -> str:
    if key.endswith((".to_network", ".to_line")):
        return RATE
    return SHARE if key.endswith(".busy") else COUNT


def _line_errors(stats: Any) -> int:
    return sum(getattr(stats, name) or 0 for name in LINE_ERROR_FIELDS)


class GraphSampler(service.Service):
    """Samples the gateway's statistics into its `History` every `SAMPLE_INTERVAL` seconds."""

    name = "graphs"

    def __init__(self, state: Any, history: History, clock: Any = None, interval: float = SAMPLE_INTERVAL) -> None:
        self.state = state
        self.history = history
        self.clock = clock if clock is not None else state.clock
        self.interval = interval
        self._previous: dict[str, float] = {}
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = self.clock

    def totals(self) -> dict[str, float]:
        """The counters the graphs are differences of."""
        out: dict[str, float] = {}
        for n, tunnel in self.state.tunnels.items():
            s = tunnel.stats
            out[f"tunnel{n}.to_network"] = s.octets_from_serial
            out[f"tunnel{n}.to_line"] = s.octets_from_network
            out[f"tunnel{n}.connections"] = s.completed_accepts + s.completed_connects
        for n, stats in self.state.lines.items():
            out[f"line{n}.errors"] = _line_errors(stats)
        for n, bus in self.state.bus.items():
            s = bus.stats
            out[f"bus{n}.transactions"] = s.transactions
            out[f"bus{n}.silent"] = s.silent
            out[f"bus{n}.garbled"] = sum(getattr(s, name) for name in GARBLED_FIELDS)
            out[f"bus{n}.busy"] = s.busy_time
        return out

    def startService(self) -> None:
        super().startService()
        self._previous = self.totals()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return None

    def sample(self) -> None:
        totals = self.totals()
        values: dict[str, float] = {}
        for key, total in totals.items():
            before = self._previous.get(key, 0)
            delta = total - before if total >= before else total  # a counter that restarted from 0
            kind = _kind(key)
            per = 1.0 if kind == RATE else 60.0 if kind == COUNT else 100.0  # per second, per minute, percent
            values[key] = delta * per / self.interval
        for n, tunnel in self.state.tunnels.items():
            values[f"tunnel{n}.connected"] = 1 if tunnel.stats.state == TUNNEL_CONNECTED else 0
        self._previous = totals
        self.history.add(self.clock.seconds(), values)


def graphs_part(gateway: Any) -> service.IService:
    """The part that samples the gateway's published state into its history."""
    return GraphSampler(gateway.state, gateway.state.history, clock=gateway.reactor)


# -- drawing ----------------------------------------------------------------------------------


def _format(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"


def figures(points: Sequence[tuple[float, float | None]]) -> dict[str, float | None]:
    values = [v for _, v in points if v is not None]
    if not values:
        return {"last": None, "max": None, "mean": None}
    return {"last": values[-1], "max": max(values), "mean": sum(values) / len(values)}


def figures_text(points: Sequence[tuple[float, float | None]], unit: str) -> str:
    f = figures(points)
    if f["last"] is None:
        return "no samples yet"
    return (f"now {_format(f['last'])} {unit}, highest {_format(f['max'])} {unit}, "  # type: ignore[arg-type]
            f"average {_format(f['mean'])} {unit} over {len(points) * SAMPLE_INTERVAL / 60:.0f} min")  # type: ignore[arg-type]


def series_text(series: Series, history: History) -> str:
    """The graph's numbers as text: one clause per line."""
    lines = series.lines
    if len(lines) == 1:
        return figures_text(history.series(series.key), series.unit)
    return "; ".join(f"{label}: {figures_text(history.series(key), series.unit)}" for key, label in lines)


def chart(series: Series, history: History, end: float | None = None, span: float = HISTORY) -> Tag:
    """One graph as an SVG chart of the last `span` seconds up to `end` (the newest sample unless told)."""
    times = history.times
    end = end if end is not None else (times[-1] if times else 0.0)
    lines = [Line(label, history.series(key)) for key, label in series.lines]
    return line_chart(series.title, series.unit, lines, end - span, end, zero=True, empty="no samples yet",
                      description=f"{series.title}: {series_text(series, history)}")


def graph_figure(series: Series, history: History, end: float | None = None) -> Tag:
    """A chart with its numbers beside it as text (readable without images or script)."""
    return tags.figure(chart(series, history, end), tags.figcaption(tags.strong(series.title), ": ",
                                                                     series_text(series, history)),
                       class_="chart-figure graph", id=f"graph-{series.key.replace('.', '-')}")


def graph_table(series_list: Iterable[Series], history: History, every: int = 6) -> Tag:
    """The samples as a table (one row a minute by default), newest first."""
    lines = [(key, s.title if len(s.lines) == 1 else f"{s.title}, {label}", s.unit)
             for s in series_list for key, label in s.lines]
    times = list(history.times)
    columns = [list(history.values.get(key, ())) for key, _, _ in lines]
    rows = []
    for i in range(len(times) - 1, -1, -every):
        row = [tags.th(_clock(times[i]), scope="row")]
        for column in columns:
            window = [v for v in column[max(0, i - every + 1):i + 1] if v is not None]
            row.append(tags.td(_format(sum(window) / len(window)) if window else "–"))
        rows.append(tags.tr(*row))
    return tags.table(tags.thead(tags.tr(tags.th("time", scope="col"),
                                         *[tags.th(f"{title} ({unit})", scope="col") for _, title, unit in lines])),
                      tags.tbody(*rows), class_="grid numeric")


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def gateway_series(state: Any, lines: bool = True, tunnels: bool = True) -> list[Series]:
    out: list[Series] = []
    if tunnels:
        for n in sorted(state.tunnels):
            out += tunnel_series(n)
    if lines:
        for n in sorted(state.lines):
            out += line_series(n)
        for n in sorted(state.bus):
            out += bus_series(n)
    return out


def graphs_panel(state: Any, lines: bool = True, tunnels: bool = True) -> Tag:
    """What the Status and M-Bus pages embed: the charts with their numbers, and the table folded."""
    history = state.history
    chosen = gateway_series(state, lines, tunnels)
    end = state.clock.seconds()
    return tags.div(tags.div(*[graph_figure(s, history, end) for s in chosen], class_="charts"),
                    tags.details(tags.summary("The numbers, minute by minute"), graph_table(chosen, history)),
                    class_="graphs")
