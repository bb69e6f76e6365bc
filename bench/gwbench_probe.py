#!/usr/bin/env python3
"""
gwbench_probe: ``twistd cmegw`` with its reactor's turns timed, to see where a tail comes from.

Started in place of cmegw by gwbench (the probe's arguments first, then twistd's)::

    bench/run --phases tail --only cmegw --memory-table 0 --cmegw-cmd "{python} bench/gwbench_probe.py \\
        --out /tmp/probe -n --pidfile= cmegw --config {config} --device {device} \\
        --tunnel tcp:{port}:interface=127.0.0.1"
    python bench/gwbench_probe.py --report /tmp/probe/probe-PID.json

For every turn of the reactor it keeps, in ``array`` columns (no Python container per turn, so
the probe itself starts no garbage collection): when the poll returned,
the wall and CPU time (``CLOCK_THREAD_CPUTIME_ID``) of ``runUntilCurrent``, of ``timeout()`` and
of the dispatch of the ready descriptors, and how many there were. Every timed call that took
30 us or more is kept with its name, and every garbage collection's start. A turn whose wall
time is far above its CPU time waited for the CPU (another process ran); one whose CPU time is
high did work. The file is written when the gateway stops (gwbench stops it with SIGTERM).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from array import array
from collections import defaultdict
from typing import Any

SLOW_CALL_NS = 30_000
COLUMNS = ("polled_at", "timed_ns", "timed_cpu_ns", "timeout_ns", "dispatch_ns", "dispatch_cpu_ns", "events")


def run_probed(out: str, twistd_args: list[str]) -> None:
    """Install cmegw's reactor with the timing wrapped around its turn, then run twistd."""
    from cmegw.reactor import install
    from twisted.scripts.twistd import run

    reactor = install()
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    columns = {name: array("q") for name in COLUMNS}
    slow: list[tuple[int, int, int, str]] = []
    collections = array("q")
    now: dict[str, int] = dict.fromkeys(("timed", "timed_cpu", "timeout", "polled", "polled_cpu"), 0)
    events = [0]
    run_timed, compute_timeout, poll_turn = reactor.runUntilCurrent, reactor.timeout, reactor.doPoll
    poller = reactor._poller

    def runUntilCurrent() -> None:
        pending = reactor._pendingTimedCalls
        due = pending and pending[0].time <= reactor.seconds()
        names = [repr(c.func)[:100] for c in pending if c.time <= reactor.seconds()] if due else []
        c0, t0 = cpu(), clock()
        run_timed()
        now["timed"], now["timed_cpu"] = clock() - t0, cpu() - c0
        if due and now["timed"] >= SLOW_CALL_NS:
            slow.append((t0, now["timed"], now["timed_cpu"], "; ".join(names)))

    def timeout() -> Any:
        t0 = clock()
        value = compute_timeout()
        now["timeout"] = clock() - t0
        return value

    class TimedPoller:
        def __getattr__(self, name: str) -> Any:
            return getattr(poller, name)

        def poll(self, *args: Any) -> Any:
            ready = poller.poll(*args)
            now["polled"], now["polled_cpu"] = clock(), cpu()
            events[0] = len(ready)
            return ready

    def doPoll(timeout_s: Any) -> None:
        poll_turn(timeout_s)
        t, c = clock(), cpu()
        for name, value in zip(COLUMNS, (now["polled"], now["timed"], now["timed_cpu"], now["timeout"],
                                         t - now["polled"], c - now["polled_cpu"], events[0])):
            columns[name].append(value)

    def dump() -> None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"probe-{os.getpid()}.json"), "w") as f:
            json.dump({"columns": {k: list(v) for k, v in columns.items()}, "slow_calls": slow,
                       "collections": list(collections)}, f)

    reactor._poller = TimedPoller()
    reactor.runUntilCurrent, reactor.timeout = runUntilCurrent, timeout
    reactor.doPoll = reactor.doIteration = doPoll
    gc.callbacks.append(lambda phase, info: collections.append(clock()) if phase == "start" else None)
    reactor.addSystemEventTrigger("before", "shutdown", dump)
    sys.argv = [sys.argv[0], *twistd_args]
    run()


def _quantiles(values: list[int]) -> str:
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e3

    return f"p50 {at(0.5):7.1f}  p99 {at(0.99):7.1f}  p99.9 {at(0.999):7.1f}  max {ordered[-1] / 1e3:9.1f}"


def report(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    c = data["columns"]
    busy = [i for i, n in enumerate(c["events"]) if n]
    if not busy:
        return "no turn with a ready descriptor"
    start, end = c["polled_at"][busy[0]], c["polled_at"][busy[-1]]
    lines = [f"{len(c['events'])} reactor turns, {len(busy)} with a ready descriptor, over {(end - start) / 1e9:.1f} s",
             "per turn with a ready descriptor (us):"]
    for key, label in (("dispatch_ns", "dispatch, wall"), ("dispatch_cpu_ns", "dispatch, CPU"),
                       ("timed_ns", "runUntilCurrent, wall"), ("timeout_ns", "timeout(), wall")):
        lines.append(f"  {label:24}" + _quantiles([c[key][i] for i in busy]))
    waited = sum(1 for i in busy if c["dispatch_ns"][i] > 150_000 and c["dispatch_cpu_ns"][i] < 100_000)
    worked = sum(1 for i in busy if c["dispatch_cpu_ns"][i] >= 100_000)
    lines.append(f"  dispatch over 150 us of wall time with under 100 us of CPU (waited for the CPU): {waited}; "
                 f"dispatch of 100 us CPU or more: {worked}")
    calls: dict[str, list[int]] = defaultdict(list)
    for at, _wall, cpu_ns, names in data["slow_calls"]:
        if start <= at <= end:
            calls[names].append(cpu_ns)
    lines.append(f"timed calls of {SLOW_CALL_NS // 1000} us or more during the traffic (CPU us):")
    for names, cpus in sorted(calls.items(), key=lambda item: -sum(item[1])):
        lines.append(f"  {len(cpus):4} x median {statistics.median(cpus) / 1e3:6.0f}, max {max(cpus) / 1e3:6.0f}  {names}")
    during = sum(1 for at in data["collections"] if start <= at <= end)
    lines.append(f"garbage collections during the traffic: {during} (at start-up: {len(data['collections']) - during})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gwbench_probe", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--out", help="directory for probe-PID.json; the other arguments go to twistd")
    parser.add_argument("--report", metavar="FILE", help="print what a probe file says")
    args, rest = parser.parse_known_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    if not args.out:
        parser.error("--out DIR or --report FILE")
    run_probed(args.out, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
