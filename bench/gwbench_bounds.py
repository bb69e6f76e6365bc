"""
gwbench_bounds: the size of each structure a long-running cmegw keeps, for gwbench_growth's report.

`deep_size` adds up what an object owns: its containers, strings, bytes, numbers and the cmegw values
inside them, never the reactor, the gateway, its parts, functions, classes, modules or Deferreds it
points at.  `Bounds.sample(phase)` measures every structure once (found through the gateway's published
state and, for the web part's objects, through the garbage collector) and `Bounds.lines()` gives one
line per structure: its size after each phase.
"""
import collections
import gc
import sys
import types

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

_NOT_OWNED = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
              types.BuiltinMethodType, Deferred, DelayedCall, Service, Protocol, Factory)
_LIMIT = 2_000_000  # objects walked at most per call (a bench loop is bounded)


def deep_size(root, skip=()):
    """Bytes `root` owns (see the module docstring); `skip`: objects that are not its own."""
    seen = {id(o) for o in skip}
    total, stack, walked = 0, [root], 0
    while stack and walked < _LIMIT:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _NOT_OWNED):
            continue
        seen.add(id(o))
        walked += 1
        total += sys.getsizeof(o)
        if isinstance(o, (str, bytes, bytearray, int, float, bool, type(None))):
            continue
        if isinstance(o, dict):
            stack.extend(o.keys()); stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(o)
        else:
            if str(type(o).__dict__.get("__module__", "")).split(".")[0] not in ("cmegw", "builtins", "collections"):
                continue  # someone else's object (a twisted or attrs helper): not the structure's own
            if hasattr(o, "__dict__"):
                stack.append(vars(o))
            for cls in type(o).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if name not in ("__dict__", "__weakref__") and hasattr(o, name):
                        stack.append(getattr(o, name))
    return total


def instances(cls):
    """The live instances of `cls` (found by the garbage collector)."""
    return [o for o in gc.get_objects() if type(o) is cls]


class Bounds:
    """One row per structure, one cell per phase."""

    def __init__(self, gateway, reactor, scan_line, trace_lines):
        self.gateway, self.reactor = gateway, reactor
        self.scan_line, self.trace_lines = scan_line, trace_lines
        self.phases = []
        self.rows = collections.OrderedDict()

    def _skip(self):
        g = self.gateway
        parts = [self.reactor, g, g.state, g.store]
        for d in (g.lines, g.tunnels, g.arbiters, g.masters):
            parts += list(d.values())
        return parts

    def _put(self, name, cell):
        self.rows.setdefault(name, {})[self.phases[-1]] = cell

    def sample(self, phase):
        from cmegw.login import LoginLimiter
        from cmegw.tunnel.eventlog import ConnectionEvents
        from cmegw.web.digest import NonceStore
        from cmegw.web.http import GatewaySite
        from cmegw.web.pages.forms import Flash
        from cmegw.web.signout import SignOuts

        gc.collect()
        self.phases.append(phase)
        skip = self._skip()
        g = self.gateway
        bus = g.state.bus[self.scan_line]
        stats = bus.master_stats
        scan = bus.scan
        self._put(f"scans of line {self.scan_line} started (primary+secondary)", f"{stats.scans}")
        self._put(f"line {self.scan_line} last scan (found, errors, observers; kB)",
                  "-" if scan is None else
                  f"{len(scan.found)},{len(scan.errors)},{len(scan._observers)};{deep_size(scan, skip) / 1e3:.1f}")
        self._put(f"line {self.scan_line} scan results by kind (meters; kB)",
                  f"{'+'.join(str(len(v)) for v in bus.results.values()) or 0};"
                  f"{deep_size(bus.results, skip) / 1e3:.1f}")
        for n in self.trace_lines:
            t = g.state.traces.get(n)
            if t is None:
                self._put(f"trace line {n} (chunks, kB of data, labels, listeners; kB)", "-")
                continue
            chunks, size = t.size
            self._put(f"trace line {n} (chunks, kB of data, labels, listeners; kB)",
                      f"{chunks},{size / 1e3:.0f},{len(t._labeller.labels)},{len(t._listeners)};"
                      f"{deep_size(t, skip) / 1e3:.0f}")
            self._put(f"trace line {n} chunks recorded, dropped", f"{t.last_seq},{t.dropped}")
        self._put("trace objects (one per line traced)", f"{len(g.state.traces)}")
        events = instances(ConnectionEvents)
        self._put("tunnel event logs (objects; kB all)", f"{len(events)};{deep_size(events, skip) / 1e3:.1f}")
        flashes = instances(Flash)
        self._put("web Flash notices (entries; kB)",
                  f"{sum(len(f) for f in flashes)};{deep_size(flashes, skip) / 1e3:.1f}")
        signouts = instances(SignOuts)
        self._put("web sign-out tokens (tokens; kB)",
                  f"{sum(len(s._tokens) for s in signouts)};{deep_size(signouts, skip) / 1e3:.1f}")
        nonces = instances(NonceStore)
        self._put("web Digest nonces (nonces, revoked; kB)",
                  f"{sum(len(s._nonces) for s in nonces)},{sum(len(s._revoked) for s in nonces)};"
                  f"{deep_size(nonces, skip) / 1e3:.1f}")
        limiters = instances(LoginLimiter)
        self._put("login limiter sources", f"{sum(len(x._sources) for x in limiters)}")
        sites = instances(GatewaySite)
        self._put("twisted.web Site sessions", f"{sum(len(s.sessions) for s in sites)}")
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        self._put("process RSS (MB)", f"{rss:.1f}")
        klein_stores = [o for o in gc.get_objects()
                        if str(type(o).__dict__.get("__module__", "")).startswith("klein.storage")]
        self._put("Klein session stores (objects; klein.storage imported)",
                  f"{len(klein_stores)};{'yes' if 'klein.storage' in sys.modules else 'no'}")

    def lines(self):
        width = max(len(name) for name in self.rows) + 2
        cells = [max(len(p), *(len(r.get(p, "")) for r in self.rows.values())) + 2 for p in self.phases]
        out = ["structure".ljust(width) + "".join(p.rjust(c) for p, c in zip(self.phases, cells))]
        for name, row in self.rows.items():
            out.append(name.ljust(width) + "".join(row.get(p, "").rjust(c) for p, c in zip(self.phases, cells)))
        return out
