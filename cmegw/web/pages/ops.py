# -*- test-case-name: tests.test_ops_trace -*-
"""
The pages of operations, mounted into the admin application (and so under
its authentication directives) by `routes(app, admin)`:

- ``/metrics``: the Prometheus text format (`cmegw.ops.metrics`, with
  prometheus_client imported by the first scrape);
- ``/trace``, ``/trace/N``: the traffic trace of line N: on, off, clear, a
  live view (``/static/trace-live.js`` asks ``/trace/N.json`` for what is new),
  downloads as text (``/trace/N.txt``) and JSON (``/trace/N.json``);
- ``/graphs``: the last hour as SVG charts with their numbers
  (``/graphs/KEY.svg`` one chart alone).

`graphs_panel` (in `cmegw.ops.graphs`) is what the Status and M-Bus pages embed.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, flattenString, tags

from cmegw.ops import graphs
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import live
from cmegw.web.pages.forms import form_value, post_form
from cmegw.web.pages.widgets import Notice, button, card, kv_table
from cmegw.web.stream import stream_body

if TYPE_CHECKING:
    from cmegw.ops.trace import LineTrace

#: Chunks and labels a trace page shows when it is loaded (the downloads have everything).
PAGE_ROWS = 200
#: Rows the live view keeps on screen.
LIVE_ROWS = 2000


#: The pages' own style sheet, linked in their head (the policy allows same-origin styles only); like every
#: static file it is in web/static, served to anyone (a page keeps its style after a password change).
STYLE = tags.link(rel="stylesheet", href="/static/ops.css")


def _line(admin: Any, n: int) -> bool:
    return n in admin.gateway.state.config.lines


def _since(request: IRequest, name: str) -> int:
    raw = request.args.get(name.encode(), [b"0"])[0]
    return int(raw) if raw.isdigit() else 0


def trace_rows(line_trace: LineTrace | None) -> list[Tag]:
    if line_trace is None:
        return []
    from cmegw.ops import trace  # the trace machinery (and the record decoder) load with the first trace page

    chunks = line_trace.snapshot()[-PAGE_ROWS:]
    labels = [f for f in line_trace.frames() if not chunks or f.seq >= chunks[0].seq]
    events = sorted([(c.seq, 0, c) for c in chunks] + [(f.seq, 1, f) for f in labels], key=lambda e: e[:2])
    rows = []
    for _, kind, item in events:
        if kind == 0:
            rows.append(tags.div(f"{trace.iso_time(item.time)} {trace.chunk_heading(item)}: {item.data.hex(' ')}",
                                 class_=f"trace-{item.direction}"))
        else:
            rows.append(tags.div(f"{trace.iso_time(item.time)} {item.direction} # {item.summary()}",
                                 class_="trace-frame"))
    return rows


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin)
    gateway = admin.gateway

    @functools.cache
    def metrics() -> Any:
        from cmegw.ops.metrics import metrics_resource  # prometheus_client: 1.4 MB a gateway never scraped spares

        return metrics_resource(gateway.state)

    @app.route("/metrics", methods=["GET", "HEAD"])
    def ops_metrics(request: IRequest) -> Any:
        return metrics()

    def trace_controls(request: IRequest, n: int) -> Tag:
        line_trace = gateway.state.traces.get(n)
        on = line_trace is not None and line_trace.enabled
        return post_form(admin, request, f"/trace/{n}",
                         button("Turn off" if on else "Turn on", name="action", value="off" if on else "on"),
                         " ", button("Clear", "secondary", name="action", value="clear"))

    @route.get("/trace")
    def ops_trace_index(request: IRequest) -> Any:
        from cmegw.ops import trace

        rows = []
        for n in sorted(gateway.state.config.lines):
            rows.append((tags.a(f"Line {n}", href=f"/trace/{n}"),
                         tags.span(trace.state_text(gateway.state.traces.get(n)), " ", trace_controls(request, n))))
        return admin.page(request, section="serial", title="Traffic trace", content=card(
            "Traffic trace",
            tags.p("What went over each M-Bus line, with the telegrams recognised. Off by default; "
                   "while off it costs the line nothing."),
            kv_table(rows)))

    @route.get("/trace/<int:n>")
    def ops_trace_page(request: IRequest, n: int) -> Any:
        if not _line(admin, n):
            request.setResponseCode(404)
            return admin.page(request, section="serial", title="No such line", code=404,
                              content=card("No such line", tags.p(f"There is no line {n}.")))
        from cmegw.ops import trace

        line_trace = gateway.state.traces.get(n)
        since = line_trace.last_seq if line_trace is not None else 0
        after = line_trace.last_frame if line_trace is not None else 0
        live = tags.div(*trace_rows(line_trace), id="trace-live", class_="trace-live", role="log",
                        **{"aria-live": "polite", "data-source": f"/trace/{n}.json", "data-since": str(since),
                           "data-frames-after": str(after), "data-keep": str(LIVE_ROWS)})
        content = tags.transparent(
            card(f"Trace of line {n}",
                 tags.p("State: ", tags.span(trace.state_text(line_trace), id="trace-state")),
                 trace_controls(request, n),
                 tags.p("Download: ", tags.a("text (hexdump)", href=f"/trace/{n}.txt"), " · ",
                        tags.a("JSON", href=f"/trace/{n}.json")),
                 tags.p("rx: read from the line (the meters); tx: written to it (from the network). "
                        "Lines starting with # are the telegrams found in the bytes.", class_="muted")),
            card("Live", live, tags.noscript(tags.p("Without JavaScript this view does not follow: reload "
                                                    "the page to see what is new.")), wide=True),
            tags.script(src="/static/trace-live.js", defer="defer"))
        return admin.page(request, section="serial", title=f"Trace of line {n}", content=content, head=STYLE)

    @route.post("/trace/<int:n>")
    def ops_trace_change(request: IRequest, n: int) -> Any:
        if not _line(admin, n):
            request.setResponseCode(404)
            return b"no such line"
        action = form_value(request, "action")
        if action in ("on", "off"):
            gateway.set_trace(n, action == "on")
        elif action == "clear":
            if n in gateway.state.traces:
                gateway.state.traces[n].clear()
        else:
            request.setResponseCode(400)
            return admin.page(request, section="serial", title="Traffic trace", code=400,
                              notice=Notice("error", f"Unknown action {action!r}: use on, off or clear."),
                              content=card("Traffic trace", tags.p(tags.a("Back", href=f"/trace/{n}"))))
        request.redirect(f"/trace/{n}".encode())
        request.setResponseCode(303)
        return b""

    @route.get("/trace/<int:n>.txt")
    def ops_trace_text(request: IRequest, n: int) -> Any:
        if not _line(admin, n):
            request.setResponseCode(404)
            return b"no such line\n"
        line_trace = gateway.state.traces.get(n)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="cmegw-line{n}-trace.txt"'.encode())
        request.setHeader(b"cache-control", b"no-store")
        if line_trace is None:
            return f"# line {n}: the trace was never turned on\n".encode()
        return stream_body(request, line_trace.text_pieces(), gateway.reactor)

    @route.get("/trace/<int:n>.json")
    def ops_trace_json(request: IRequest, n: int) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if not _line(admin, n):
            request.setResponseCode(404)
            return json.dumps({"error": f"there is no line {n}"}).encode()
        line_trace = gateway.state.traces.get(n)
        if line_trace is None:
            data: dict[str, Any] = {"line": n, "enabled": False, "chunks": 0, "bytes": 0, "dropped": 0,
                                    "last_seq": 0, "last_frame": 0, "chunks_list": [], "frames": []}
            return json.dumps(data).encode()
        pieces = line_trace.json_pieces(_since(request, "since"), _since(request, "frames_after"))
        return stream_body(request, pieces, gateway.reactor)

    @route.get("/graphs")
    def ops_graphs(request: IRequest) -> Any:
        return admin.page(request, section="status", title="Graphs", head=STYLE, content=live(card(
            "The last hour", tags.p(f"Sampled every {graphs.SAMPLE_INTERVAL:.0f} s."),
            graphs.graphs_panel(gateway.state), wide=True, id="graphs"), int(graphs.SAMPLE_INTERVAL)))

    @route.get("/graphs/<string:key>.svg")
    def ops_graph_svg(request: IRequest, key: str) -> Any:
        series = {s.key: s for s in graphs.gateway_series(gateway.state)}.get(key)
        if series is None:
            request.setResponseCode(404)
            return b"no such graph"
        request.setHeader(b"content-type", b"image/svg+xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return flattenString(None, graphs.chart(series, gateway.state.history, gateway.state.clock.seconds()))
