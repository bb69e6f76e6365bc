#!/usr/bin/env python3
"""
gwbench_growth: what grows in one cmegw process under the soak's kind of work, in-process and unpaced.

One GatewayService with 8 lines on instant simulated buses (meters at BAUD, default 38400), 6 tunnel
readers doing REQ_UD2 over loopback (phase = UNITS each), a line-2 reader, primary scans of line 2
posted through the web API (Digest admin/admin) every 2 s, CHURN tunnel connect/close, console
sessions, WEB rounds of pages, API and /metrics.  After two warm-up phases, tracemalloc snapshots
before and after PHASES more phases: OUT/report.txt lists the growth by line, by traceback, by type.
The reactor stops itself after TIMEOUT s (default 1500).

The bounds (OUT/report.txt, "== bounded structures"): the size of each structure that could grow with
scans, traces, sessions or connection events, after each phase (`gwbench_bounds`).  With SCANS=n each
phase runs n scans of line 2 one after another through the web API, each waited for to its end, the
kinds in turn from SCAN_KINDS (default primary,secondary), instead of a scan posted every 2 s.  With
TRACES=n each phase turns the trace of line 3 on and off n times through the trace page's form (and
clears it every other time), reading its JSON while on (so a phase ends with two cycles held); line 4's trace runs from the start, read once
a phase.  With SESSIONS=n each phase opens n fresh browser sessions (a page without a cookie, then a
form posted with its cookie and CSRF token whose notice waits, never fetched, for the redirect) and
signs out n times.

    PYTHONPATH=$PWD PHASES=3 FRAMES=8 python bench/gwbench_growth.py /tmp/growth-out 1000 20 1
    PYTHONPATH=$PWD PHASES=4 SCANS=4 TRACES=40 SESSIONS=200 TIMEOUT=3000 python bench/gwbench_growth.py /tmp/bounds 2000 100 2
"""
import collections
import gc
import json
import os
import re
import sys
import time
import tracemalloc
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from twisted.internet import defer, protocol, endpoints, task
from twisted.logger import globalLogBeginner, textFileLogObserver
import treq
from gwbench_config import LINE_AND_TUNNEL, LOCAL_FACES, merged
import gwbench as gw
from gwbench_lines import frame_length, _digest_header, REQ_UD2_METER_1
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.mbus.simulator import SimulatedBus
import gwbench_bounds
from gwbench_bounds import Bounds

OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True)
PHASE_UNITS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000   # REQ_UD2 per reader per phase
CHURN = int(sys.argv[3]) if len(sys.argv) > 3 else 200           # tunnel connect/close per phase
WEB = int(sys.argv[4]) if len(sys.argv) > 4 else 50              # web rounds per phase
SCANS = int(os.environ.get("SCANS", "0"))                        # scans of line 2 per phase (0: one every 2 s)
SCAN_KINDS = os.environ.get("SCAN_KINDS", "primary,secondary").split(",")
TRACES = int(os.environ.get("TRACES", "0"))                      # trace on/off cycles of line 3 per phase
SESSIONS = int(os.environ.get("SESSIONS", "0"))                  # fresh browser sessions per phase
TIMEOUT = float(os.environ.get("TIMEOUT", "1500"))
globalLogBeginner.beginLoggingTo([textFileLogObserver(open(OUT / "log.txt", "w"))], redirectStandardIO=False)

N = 8
ports = [gw.free_port() for _ in range(N)]
http_port = gw.free_port()
text = LOCAL_FACES.format(http_port=http_port, https_port=gw.free_port(), console_port=gw.free_port())
console_port = int(re.search(r'listen = "tcp:(\d+)', text).group(1))
for n, port in enumerate(ports, 1):
    text += LINE_AND_TUNNEL.format(n=n, device="simulate = true\nbaud_rate = " + os.environ.get("BAUD", "38400"), port=port)
(OUT / "cmegw.toml").write_text(merged(text))
store = ConfigStore(OUT / "cmegw.toml"); store.load()
assert store.problem is None, store.problem

def instant(reactor, line):
    meters = default_meters()
    for m in meters: m.baud = int(os.environ.get("BAUD", "38400"))
    return SimulatedBus(reactor, MeterBus(meters))

gateway = GatewayService(store, reactor, simulator_factory=instant, parts=part_factories())
counts = collections.Counter()

class Reader(protocol.Protocol):
    def __init__(self, limit, done):
        self.limit, self.done, self.buf, self.n = limit, done, bytearray(), 0
    def connectionMade(self):
        self.transport.setTcpNoDelay(True); self.transport.write(REQ_UD2_METER_1)
    def dataReceived(self, data):
        self.buf += data
        size = frame_length(self.buf)
        if size is not None and len(self.buf) >= size:
            del self.buf[:]
            self.n += 1; counts["req_ud2"] += 1
            if self.n >= self.limit:
                self.transport.loseConnection()
            else:
                self.transport.write(REQ_UD2_METER_1)
    def connectionLost(self, reason):
        if not self.done.called: self.done.callback(self.n)

def readers(limit, which=None):
    ds = []
    for port in (which or ports[2:]):
        d = defer.Deferred()
        ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        ep.connect(protocol.Factory.forProtocol(lambda d=d: Reader(limit, d)))
        ds.append(d)
    return defer.gatherResults(ds)

class Churn(protocol.Protocol):
    def __init__(self, done): self.done = done
    def connectionMade(self):
        counts["churn"] += 1
        reactor.callLater(0.01, self.transport.loseConnection)
    def connectionLost(self, reason):
        if not self.done.called: self.done.callback(None)

@defer.inlineCallbacks
def churn(count):
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", ports[0])
    for i in range(count):
        d = defer.Deferred()
        yield ep.connect(protocol.Factory.forProtocol(lambda: Churn(d)))
        yield d

class Console(protocol.Protocol):
    def __init__(self, done): self.done, self.buf, self.step = done, b"", 0
    def dataReceived(self, data):
        self.buf += data
        if self.step == 0 and b"ogin" in self.buf:
            self.transport.write(b"admin\r\n"); self.step = 1; self.buf = b""
        elif self.step == 1 and b"assword" in self.buf:
            self.transport.write(b"admin\r\n"); self.step = 2; self.buf = b""
        elif self.step == 2 and b">" in self.buf[-4:]:
            self.transport.write(b"show status\r\nexit\r\n"); self.step = 3
    def connectionLost(self, reason):
        counts["console"] += 1
        if not self.done.called: self.done.callback(self.buf[-200:])

@defer.inlineCallbacks
def console(count):
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", console_port)
    for i in range(count):
        d = defer.Deferred()
        p = yield ep.connect(protocol.Factory.forProtocol(lambda: Console(d)))
        t = reactor.callLater(5, p.transport.loseConnection)
        yield d
        if t.active(): t.cancel()

BASE = f"http://127.0.0.1:{http_port}"

@defer.inlineCallbacks
def digest(method, uri, body=None, content_type="application/json", cookie=None, answer=False):
    """`method` `uri` as admin (Digest); the status, or with `answer` (status, headers, body)."""
    headers = {"Content-Type": [content_type]}
    if cookie:
        headers["Cookie"] = [cookie]
    r = yield treq.request(method, BASE + uri, data=body, headers=headers, persistent=False, allow_redirects=False)
    content = yield treq.content(r)
    counts["http"] += 1
    if r.code == 401:
        ch = [v.decode() for v in r.headers.getRawHeaders(b"www-authenticate", []) if v.lower().startswith(b"digest")]
        headers["Authorization"] = [_digest_header(ch[0], method, uri, "admin", "admin")]
        r = yield treq.request(method, BASE + uri, data=body, headers=headers, persistent=False,
                               allow_redirects=False)
        content = yield treq.content(r)
        counts["http"] += 1
    return (r.code, r.headers, content) if answer else r.code

PAGES = ["/", "/status", "/meters", "/api/meters", "/api/meters/2", "/graphs", "/trace", "/http", "/http/log",
         "/serial", "/tcpip", "/network", "/system", "/readouts", "/delivery", "/metrics"]

@defer.inlineCallbacks
def web(rounds):
    codes = collections.Counter()
    for i in range(rounds):
        for page in PAGES:
            codes[(yield digest("GET", page))] += 1
    return codes

@defer.inlineCallbacks
def scans():
    """POST /api/meters/2/scan back to back until stopped."""
    while not stop_scans[0]:
        code = yield digest("POST", "/api/meters/2/scan", json.dumps({"kind": "primary"}).encode())
        counts[f"scan_{code}"] += 1
        yield task.deferLater(reactor, 2.0, lambda: None)
stop_scans = [False]

@defer.inlineCallbacks
def scan_to_end(kind, limit=600.0):
    """One scan of line 2 through the web API, polled until it ends (at most `limit` s)."""
    code = yield digest("POST", "/api/meters/2/scan", json.dumps({"kind": kind}).encode())
    counts[f"scan_{kind}_{code}"] += 1
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        yield task.deferLater(reactor, 0.5, lambda: None)
        code, _h, body = yield digest("GET", "/api/meters/2", answer=True)
        scan = json.loads(body).get("scan") or {}
        if scan.get("state") != "running":
            counts[f"scan_{kind}_{scan.get('state')}"] += 1
            return
    counts[f"scan_{kind}_unfinished"] += 1

@defer.inlineCallbacks
def scan_series(count):
    for i in range(count):
        yield scan_to_end(SCAN_KINDS[counts["scan_series"] % len(SCAN_KINDS)])
        counts["scan_series"] += 1

@defer.inlineCallbacks
def browser_session(page="/meters"):
    """A page fetched without a cookie: the session cookie it sets and the form token it carries."""
    code, headers, body = yield digest("GET", page, answer=True)
    cookie = [c.decode().split(";")[0] for c in headers.getRawHeaders(b"set-cookie", [])
              if c.startswith(b"cmegw_session=")]
    token = re.search(rb'name="_csrf"[^>]*value="([0-9a-f]{64})"|value="([0-9a-f]{64})"[^>]*name="_csrf"', body)
    assert code == 200 and cookie and token, (code, cookie, body[:200])
    return cookie[0], (token.group(1) or token.group(2)).decode()

@defer.inlineCallbacks
def post_form(uri, fields, session):
    cookie, token = session
    body = "&".join(f"{k}={v}" for k, v in dict(fields, _csrf=token).items()).encode()
    code = yield digest("POST", uri, body, "application/x-www-form-urlencoded", cookie)
    counts[f"form_{code}"] += 1
    return code

@defer.inlineCallbacks
def sessions(count):
    """`count` fresh browser sessions, each leaving a notice for a redirect it never follows; `count` sign-outs."""
    for i in range(count):
        session = yield browser_session()
        yield post_form("/meters/stop", {"line": "1"}, session)   # line 1 never scans: "No scan runs."
        code = yield digest("GET", "/logout")
        counts[f"logout_{code}"] += 1
        counts["sessions"] += 1

trace_session = []

@defer.inlineCallbacks
def traces(count):
    """Line 3's trace turned on, read and off `count` times through its page's form; cleared every other time."""
    if not trace_session:
        trace_session.append((yield browser_session("/trace/3")))
    for i in range(count):
        yield post_form("/trace/3", {"action": "on"}, trace_session[0])
        yield task.deferLater(reactor, 0.2, lambda: None)
        code = yield digest("GET", "/trace/3.json")
        counts[f"trace_json_{code}"] += 1
        yield post_form("/trace/3", {"action": "off"}, trace_session[0])
        if i % 2 == 0:
            yield post_form("/trace/3", {"action": "clear"}, trace_session[0])
        counts["traces"] += 1
    code = yield digest("GET", "/trace/4.json")
    counts[f"trace_json_{code}"] += 1

@defer.inlineCallbacks
def line2_reader():
    while not stop_scans[0]:
        yield readers(200, [ports[1]])

@defer.inlineCallbacks
def phase(name):
    t0 = time.monotonic()
    yield defer.gatherResults([readers(PHASE_UNITS), churn(CHURN), console(max(1, CHURN // 20)), web(WEB),
                               scan_series(SCANS), traces(TRACES), sessions(SESSIONS)])
    bounds.sample(name)
    print(f"{name}: {time.monotonic()-t0:.1f}s {dict(counts)}", flush=True)

bounds = Bounds(gateway, reactor, scan_line=2, trace_lines=(3, 4))

def rss():
    for l in open("/proc/self/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024

def types():
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

@defer.inlineCallbacks
def main():
    yield gateway.when_listening()
    if TRACES:
        gateway.set_trace(4, True)
    if not SCANS:
        scans()
    line2_reader()
    yield phase("warmup")
    tracemalloc.start(int(os.environ.get("FRAMES", "12")))
    yield phase("warmup2")
    gc.collect(); s1 = tracemalloc.take_snapshot(); t1 = types(); r1 = rss()
    reps = int(os.environ.get("PHASES", "2"))
    for i in range(reps):
        yield phase(f"measure{i}")
    gc.collect(); s2 = tracemalloc.take_snapshot(); t2 = types(); r2 = rss()
    stop_scans[0] = True
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__),
           tracemalloc.Filter(False, gwbench_bounds.__file__)]
    s1, s2 = s1.filter_traces(flt), s2.filter_traces(flt)
    with open(OUT / "report.txt", "w") as f:
        f.write(f"rss {r1:.1f} -> {r2:.1f} MB; counts {dict(counts)}\n")
        f.write(f"traced {sum(s.size for s in s1.statistics('filename'))/1e3:.0f} -> {sum(s.size for s in s2.statistics('filename'))/1e3:.0f} kB\n")
        f.write("== bounded structures (size after each phase)\n")
        for line in bounds.lines():
            f.write(line + "\n")
        f.write("== by lineno\n")
        for st in s2.compare_to(s1, "lineno")[:40]:
            f.write(f"{st}\n")
        f.write("== by traceback\n")
        for st in s2.compare_to(s1, "traceback")[:25]:
            f.write(f"{st.size_diff/1e3:+.1f} kB {st.count_diff:+d} blocks\n")
            for line in st.traceback.format()[-24:]:
                f.write("    " + line + "\n")
        f.write("== types\n")
        for k, v in sorted(((k, t2[k] - t1[k]) for k in t2.keys() | t1.keys()), key=lambda kv: -abs(kv[1]))[:40]:
            f.write(f"{v:+d} {k}\n")
    print(open(OUT / "report.txt").read()[:3000])

def run():
    gateway.startService()
    d = main()
    d.addErrback(lambda f: print(f.getTraceback()))
    d.addBoth(lambda _: gateway.stopService())
    d.addBoth(lambda _: reactor.stop())
    reactor.callLater(TIMEOUT, reactor.stop)
    reactor.run()
run()
