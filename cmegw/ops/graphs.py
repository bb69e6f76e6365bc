# -*- test-case-name: tests.test_ops_metrics -*-
"""
Small graphs of the last hour: bytes per second each way per tunnel, line
errors, connections.

`GraphSampler`, a part of the gateway, reads the published statistics every
`SAMPLE_INTERVAL` seconds into the state's `History` (bounded deques, one
hour; kept across in-process restarts).  `chart` draws one series as SVG on
the server (no script, no external resource) and `figures` gives the same
numbers as text, so a page stays readable without JavaScript or images.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import attrs
from twisted.application import service
from twisted.internet import task
from twisted.web.template import Tag, tags

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

CHART_WIDTH = 360
CHART_HEIGHT = 72
CHART_MARGIN = 4


@attrs.frozen
class Series:
    """What one graph shows."""

    key: str
    title: str
    unit: str


def tunnel_series(n: int) -> list[Series]:
    return [Series(f"tunnel{n}.to_network", f"Tunnel {n}: line to network", "B/s"),
            Series(f"tunnel{n}.to_line", f"Tunnel {n}: network to line", "B/s"),
            Series(f"tunnel{n}.connections", f"Tunnel {n}: connections", "new per interval")]


def line_series(n: int) -> list[Series]:
    return [Series(f"line{n}.errors", f"Line {n}: errors", "per interval")]


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
            values[key] = delta / self.interval if key.endswith((".to_network", ".to_line")) else delta
        for n, tunnel in self.state.tunnels.items():
            values[f"tunnel{n}.connected"] = 1 if tunnel.stats.state == TUNNEL_CONNECTED else 0
        self._previous = totals
        self.history.add(self.clock.seconds(), values)


def graphs_part(gateway: Any) -> service.IService:
    """The part that samples the gateway's published state into its history."""
    return GraphSampler(gateway.state, gateway.state.history, clock=gateway.reactor)


# -- drawing ----------------------------------------------------------------------------------


def _svg(name: str, **attributes: Any) -> Tag:
    return Tag(name, attributes={k.rstrip("_").replace("_", "-"): str(v) for k, v in attributes.items()})


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


def chart(series: Series, points: Sequence[tuple[float, float | None]], width: int = CHART_WIDTH,
          height: int = CHART_HEIGHT, span: float = HISTORY) -> Tag:
    """One series as an SVG line chart over the last `span` seconds (the newest sample on the right)."""
    text = figures_text(points, series.unit)
    svg = _svg("svg", xmlns="http://www.w3.org/2000/svg", width=width, height=height,
               viewBox=f"0 0 {width} {height}", role="img", class_="graph")
    svg(_svg("title")(f"{series.title}: {text}"),
        _svg("rect", x=0, y=0, width=width, height=height, fill="#f7f7f7", stroke="#cccccc"))
    values = [v for _, v in points if v is not None]
    top = max(values, default=0) or 1
    inner_w, inner_h = width - 2 * CHART_MARGIN, height - 2 * CHART_MARGIN
    if points:
        newest = points[-1][0]
        runs: list[list[str]] = [[]]
        for t, v in points:
            if v is None:
                runs.append([])
                continue
            x = CHART_MARGIN + inner_w * (1 - min(span, max(0.0, newest - t)) / span)
            y = CHART_MARGIN + inner_h * (1 - v / top)
            runs[-1].append(f"{x:.1f},{y:.1f}")
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                svg(_svg("circle", cx=x, cy=y, r=1.5, fill="#1f5fa8"))
            elif run:
                svg(_svg("polyline", points=" ".join(run), fill="none", stroke="#1f5fa8", stroke_width=1.5))
    svg(_svg("text", x=CHART_MARGIN + 2, y=CHART_MARGIN + 10, font_size=10, fill="#333333")(
        f"{series.title}, max {_format(top if values else 0)} {series.unit}"))
    return svg


def graph_figure(series: Series, history: History) -> Tag:
    """A chart with its numbers beside it as text (readable without images or script)."""
    points = history.series(series.key)
    return tags.figure(chart(series, points), tags.figcaption(tags.strong(series.title), ": ",
                                                               figures_text(points, series.unit)),
                       class_="graph")


def graph_table(series_list: Iterable[Series], history: History, every: int = 6) -> Tag:
    """The samples as a table (one row a minute by default), newest first."""
    series_list = list(series_list)
    times = list(history.times)
    columns = [list(history.values.get(s.key, ())) for s in series_list]
    rows = []
    for i in range(len(times) - 1, -1, -every):
        row = [tags.th(_clock(times[i]), scope="row")]
        for column in columns:
            window = [v for v in column[max(0, i - every + 1):i + 1] if v is not None]
            row.append(tags.td(_format(sum(window) / len(window)) if window else "–"))
        rows.append(tags.tr(*row))
    return tags.table(tags.thead(tags.tr(tags.th("time", scope="col"),
                                         *[tags.th(f"{s.title} ({s.unit})", scope="col") for s in series_list])),
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
    return out


def graphs_panel(state: Any, lines: bool = True, tunnels: bool = True) -> Tag:
    """What the Status and M-Bus pages embed: the charts with their numbers, and the table folded."""
    history = state.history
    chosen = gateway_series(state, lines, tunnels)
    return tags.div(*[graph_figure(s, history) for s in chosen],
                    tags.details(tags.summary("The numbers, minute by minute"), graph_table(chosen, history)),
                    class_="graphs")
