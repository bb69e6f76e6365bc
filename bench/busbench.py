"""
busbench: the M-Bus at its physical rate (issue 16), on the paced simulator.

This process runs the paced simulated bus (`cmegw.mbus.simulator.paced_bus`:
11 bit times a character both ways, meters answering after 3..50 ms, a USB
adapter with a 1 ms latency timer) with eight meters on a pty, and a real
``twistd cmegw --device PTY`` opens it as its line.  At each baud rate
(2400 and 300 by default):

- a primary scan (``POST /api/meters/1/scan``, identify on) against its
  floor: for every transaction the simulator heard, the request's and the
  reply's characters, 11 bit times of turnaround and 33 of idle
  (`timing.transaction_floor`), or, for a silent address, the request and
  the answer window the standard gives it (330 bit times + 50 ms);
  at 300 baud over a reduced range (``--max-address-300``), the scan is
  then stopped (``DELETE``), and the output says so;
- the secondary (wildcard) search against its floor, the same way;
- the transparent tunnel's client reading a meter in a loop while a primary
  scan runs: its worst wait against its own transaction;
- with ``tunnel.1.sharing = true``, 1, 2, 4 and 8 clients each reading its own
  meter in a loop over TCP: the bus's busy time (request, turnaround, reply
  and idle, counted by the simulator's wire) over the elapsed time, the
  clients' shares, and whether every reply came to the client that asked;
- libmbus's ``mbus-tcp-scan`` through the tunnel where the binary is present.

The arbiter's timeouts are whatever this tree has.  Every loop is bounded in
count and time.  Output: a table, then one JSON line.

    PYTHONPATH=$PWD .venv/bin/python bench/busbench.py [--bauds 2400,300] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet import defer, endpoints, protocol, reactor, task, threads  # noqa: E402

from cmegw.mbus import frames  # noqa: E402
from cmegw.mbus.meterbus import MeterBus, SimulatedMeter, default_meters  # noqa: E402
from cmegw.mbus.simulator import paced_bus  # noqa: E402
from cmegw.mbus.timing import ANSWER_DELAY_BITS, ANSWER_DELAY_SECONDS, BITS_PER_CHARACTER, \
    INTER_TELEGRAM_BITS, transaction_floor  # noqa: E402
from tests.support import GatewayProcess, defaults_with, free_port  # noqa: E402

#: Seconds a scan may take before the bench gives up on it.
SCAN_LIMIT = 1800.0
POLL = 0.5
#: Reads of the tunnel's client alone, before the scan, that give its own transaction time.
ALONE_READS = 5
CLIENT_COUNTS = (1, 2, 4, 8)
#: Four more meters beside the simulator's four: (primary, identification); 15263748 shares the first
#: digit with 12345678, so the secondary search meets a collision and goes one digit deeper.
EXTRA_METERS = ((20, "15263748"), (21, "56473829"), (22, "67584930"), (23, "78695041"))


def meters(baud: int) -> list[SimulatedMeter]:
    """The simulator's four meters and four copies at other addresses, all at `baud`."""
    base = default_meters()
    for (primary, ident), model in zip(EXTRA_METERS, list(base)):
        address = attrs.evolve(model.address, ident=ident)
        base.append(SimulatedMeter(primary, address, model.telegrams, access_number=model.access_number))
    for meter in base:
        meter.baud = baud
    return base


class RecordingBus(MeterBus):
    """A `MeterBus` that notes every request it heard (when, request, reply) for the floors."""

    def __init__(self, meters: list[SimulatedMeter], clock: Any) -> None:
        super().__init__(meters)
        self.clock = clock
        self.heard: list[tuple[float, bytes, bytes | None]] = []

    def handle(self, request: bytes, baud: int | None = None) -> bytes | None:
        reply = super().handle(request, baud)
        self.heard.append((self.clock.seconds(), request, reply))
        return reply


def exchange_floor(request: bytes, reply: bytes | None, baud: int) -> float:
    """The least wire time of one exchange (see the module docstring)."""
    if reply:
        return transaction_floor(len(request), len(reply), baud)
    try:
        frame = frames.parse_frame(request)
    except frames.FrameError:
        return len(request) * BITS_PER_CHARACTER / baud
    if frame.kind == "ack" or frame.a == frames.BROADCAST_NOREPLY:
        return (len(request) * BITS_PER_CHARACTER + INTER_TELEGRAM_BITS) / baud
    return (len(request) * BITS_PER_CHARACTER + ANSWER_DELAY_BITS) / baud + ANSWER_DELAY_SECONDS


def floor_of(heard: list[tuple[float, bytes, bytes | None]], since: float, until: float, baud: int) -> dict:
    window = [(request, reply) for at, request, reply in heard if since <= at <= until]
    return {"transactions": len(window), "silent": sum(1 for _, reply in window if not reply),
            "floor_s": sum(exchange_floor(request, reply, baud) for request, reply in window)}


def window(seconds: float, baud: int) -> float:
    """How long a run with clients lasts at `baud`: `seconds` at 2400 baud, three times that at 300."""
    return seconds * max(1.0, 900 / baud)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class Gateway:
    """A real ``twistd cmegw`` on the simulator's pty, its API through curl (Digest, the factory login)."""

    def __init__(self, folder: Path, device: str, baud: int, sharing: bool) -> None:
        self.tunnel, self.http = free_port(), free_port()
        changes = [("disconnect_timeout = 10", "disconnect_timeout = 0"), ("baud_rate = 2400", f"baud_rate = {baud}")]
        if sharing:
            changes.append(("sharing = false", "sharing = true"))
        folder.mkdir(parents=True)
        (folder / "cmegw.toml").write_text(defaults_with(*changes))
        self.process = GatewayProcess(folder, [
            "--config", "cmegw.toml", "--device", device, "--tunnel", f"tcp:{self.tunnel}:interface=127.0.0.1",
            "--http", f"tcp:{self.http}:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1",
            "--console", "tcp:0:interface=127.0.0.1"])

    def start(self) -> defer.Deferred:
        return threads.deferToThread(self.process.start, [self.tunnel, self.http])

    def stop(self) -> None:
        self.process.stop()

    @defer.inlineCallbacks
    def api(self, method: str, path: str, body: Any = None) -> Any:
        command = ["curl", "-s", "-m", "30", "--digest", "-u", "admin:admin", "-X", method,
                   f"http://127.0.0.1:{self.http}{path}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        done = yield threads.deferToThread(subprocess.run, command, capture_output=True, text=True, timeout=60)
        text = done.stdout
        return json.loads(text[text.find("{"):]) if "{" in text else None

    @defer.inlineCallbacks
    def scan(self, kind: str, stop_after: int | None = None) -> Any:
        """Run a scan through the API until it ends (or, with `stop_after`, until that many probes: stopped)."""
        yield self.api("POST", "/api/meters/1/scan", {"kind": kind})
        deadline = time.time() + SCAN_LIMIT
        for _ in range(int(SCAN_LIMIT / POLL) + 1):  # bounded by SCAN_LIMIT
            view = yield self.api("GET", "/api/meters/1")
            scan = view["scan"]
            if scan["state"] != "running" or time.time() > deadline:
                return scan
            if stop_after is not None and scan["probes"] >= stop_after:
                yield self.api("DELETE", "/api/meters/1/scan")
                stop_after = None
            yield sleep(POLL)
        return scan


class ReadLoop(protocol.Protocol):
    """A head-end reading one meter (REQ_UD2) in a loop until `deadline`: its round trips and replies."""

    def __init__(self, primary: int, deadline: float, reply_limit: float) -> None:
        self.primary = primary
        self.deadline = deadline
        self.reply_limit = reply_limit
        self.request = frames.req_ud2(primary)
        self.round_trips: list[tuple[float, float]] = []  # (sent, answered)
        self.wrong = 0
        self.lost = 0
        self.done: defer.Deferred = defer.Deferred()
        self._buffer = b""
        self._sent = 0.0
        self._timeout: Any = None

    def connectionMade(self) -> None:
        self._send()

    def _send(self) -> None:
        if time.time() >= self.deadline:
            self.transport.loseConnection()
            return
        self._buffer = b""
        self._sent = time.time()
        self.transport.write(self.request)
        self._timeout = reactor.callLater(self.reply_limit, self._lost)

    def _lost(self) -> None:
        """No reply in time: this loop ends (a late reply would be taken for the next one's)."""
        self._timeout = None
        self.lost += 1
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        try:
            size = frames.frame_length(self._buffer[:4])
        except frames.FrameError:
            size = len(self._buffer)
        if size is None or len(self._buffer) < size:
            return
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self.round_trips.append((self._sent, time.time()))
        try:
            frame = frames.parse_frame(self._buffer)
            if frame.a != self.primary:
                self.wrong += 1
        except frames.FrameError:
            self.wrong += 1
        self._send()

    def connectionLost(self, reason: Any = None) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if not self.done.called:
            self.done.callback(self)


def read_loops(port: int, primaries: list[int], deadline: float, baud: int) -> defer.Deferred:
    """Connect one `ReadLoop` per primary address; fires with them when all have ended."""
    # Every client's turn may come after one longest transaction of each of the others (and a scan's).
    reply_limit = (len(primaries) + 1) * (5 + frames.MAX_TELEGRAM_LENGTH) * BITS_PER_CHARACTER / baud + 2.0
    loops = [ReadLoop(primary, deadline, reply_limit) for primary in primaries]
    for loop in loops:
        endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10), loop)
    return defer.gatherResults([loop.done for loop in loops])


@defer.inlineCallbacks
def scan_figures(gw: Gateway, bus: RecordingBus, baud: int, kind: str, stop_after: int | None) -> Any:
    scan = yield gw.scan(kind, stop_after)
    started, finished = scan["started_at"], scan["finished_at"]
    if stop_after is not None:
        # The reduced scan ends where the request to the first address beyond it began.
        beyond = [at for at, request, _ in bus.heard
                  if at >= started and request == frames.snd_nke(stop_after)]
        if beyond:
            finished = beyond[0] - len(frames.snd_nke(0)) * BITS_PER_CHARACTER / baud
    figures = floor_of(bus.heard, started, finished, baud)
    figures.update(seconds=finished - started, found=len(scan["found"]), state=scan["state"],
                   addresses=f"0..{stop_after - 1}" if stop_after is not None else "0..250")
    figures["ratio"] = figures["seconds"] / figures["floor_s"] if figures["floor_s"] else None
    return figures


@defer.inlineCallbacks
def wait_during_scan(gw: Gateway, baud: int, seconds: float) -> Any:
    """The transparent tunnel's client reading meter 5 while a primary scan runs: its worst wait."""
    alone = yield read_loops(gw.tunnel, [5], time.time() + ALONE_READS * 110 * BITS_PER_CHARACTER / baud, baud)
    own = sorted(b - a for a, b in alone[0].round_trips)
    yield sleep(1.0)  # the tunnel's client place is free again
    yield gw.api("POST", "/api/meters/1/scan", {"kind": "primary"})
    during = yield read_loops(gw.tunnel, [5], time.time() + seconds, baud)
    yield gw.api("DELETE", "/api/meters/1/scan")
    waits = [b - a for a, b in during[0].round_trips]
    own_median = own[len(own) // 2] if own else 0.0
    return {"own_transaction_ms": own_median * 1000, "reads": len(waits), "lost": during[0].lost,
            "worst_wait_ms": max(waits) * 1000 if waits else None,
            "worst_extra_ms": (max(waits) - own_median) * 1000 if waits else None}


@defer.inlineCallbacks
def sharing_figures(gw: Gateway, simulated: Any, clients: int, seconds: float, baud: int) -> Any:
    primaries = [meter.primary for meter in simulated.bus.meters][:clients]
    wire = simulated.wire
    before = yield gw.api("GET", "/api/meters/1")
    started = time.time()
    busy = wire.busy_until(started)
    deadline = started + seconds
    at_deadline: list[tuple[float, float]] = []
    reactor.callLater(seconds, lambda: at_deadline.append((time.time(), wire.busy_until(time.time()))))
    loops = yield read_loops(gw.tunnel, primaries, deadline, baud)
    shares = [sum(1 for _, answered in loop.round_trips if answered <= deadline) for loop in loops]
    yield sleep(1.0)
    after = yield gw.api("GET", "/api/meters/1")
    # What the gateway's arbiter heard that was not one clean reply (a stall of either process longer than
    # the defragmentation timeout cuts a reply short).
    unclean = {key: after["bus"][key] - before["bus"][key] for key in ("truncated", "garbled", "invalid", "silent")}
    return {"arbiter_unclean": unclean, "clients": clients, "seconds": seconds, "utilisation": (at_deadline[0][1] - busy) / (at_deadline[0][0] - started),
            "transactions": sum(shares), "shares": shares, "share_spread": max(shares) - min(shares),
            "wrong_replies": sum(loop.wrong for loop in loops), "lost": sum(loop.lost for loop in loops)}


@defer.inlineCallbacks
def libmbus_scan(gw: Gateway) -> Any:
    binary = shutil.which("mbus-tcp-scan")
    if binary is None:
        return {"skipped": "libmbus's mbus-tcp-scan is not installed"}
    began = time.time()
    done = yield threads.deferToThread(subprocess.run, [binary, "127.0.0.1", str(gw.tunnel)],
                                       capture_output=True, text=True, timeout=SCAN_LIMIT)
    return {"seconds": time.time() - began, "found": done.stdout.count("Found a M-Bus device")}


@defer.inlineCallbacks
def at_baud(baud: int, options: argparse.Namespace, folder: Path) -> Any:
    bus = RecordingBus(meters(baud), reactor)
    simulated = paced_bus(reactor, bus, seed=baud)
    device = simulated.start()
    results: dict[str, Any] = {"baud": baud}
    try:
        last = options.max_address if baud >= 2400 else options.max_address_300
        stop_after = None if last >= frames.MAX_PRIMARY else last + 1
        gw = Gateway(folder / f"transparent-{baud}", device, baud, sharing=False)
        yield gw.start()
        try:
            if "scans" in options.parts:
                results["primary"] = yield scan_figures(gw, bus, baud, "primary", stop_after)
                results["secondary"] = yield scan_figures(gw, bus, baud, "secondary", None)
                results["client_during_scan"] = yield wait_during_scan(gw, baud, window(options.seconds, baud))
                results["libmbus"] = yield libmbus_scan(gw)
        finally:
            gw.stop()
        if "sharing" not in options.parts:
            return results
        gw = Gateway(folder / f"sharing-{baud}", device, baud, sharing=True)
        yield gw.start()
        try:
            results["sharing"] = []
            for clients in CLIENT_COUNTS:
                figures = yield sharing_figures(gw, simulated, clients, window(options.seconds, baud), baud)
                results["sharing"].append(figures)
        finally:
            gw.stop()
    finally:
        simulated.stop()
    return results


def table(runs: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, pick: Any, form: str = "{:.1f}") -> None:
        values = []
        for run in runs:
            try:
                value = pick(run)
                values.append("-" if value is None else form.format(value))
            except (KeyError, IndexError, TypeError):
                values.append("-")
        rows.append((label, values))

    row("primary scan, addresses", lambda r: r["primary"]["addresses"], "{}")
    row("  time (s)", lambda r: r["primary"]["seconds"])
    row("  transactions (silent)", lambda r: f'{r["primary"]["transactions"]} ({r["primary"]["silent"]})', "{}")
    row("  floor (s)", lambda r: r["primary"]["floor_s"])
    row("  time / floor", lambda r: r["primary"]["ratio"], "{:.2f}")
    row("  meters found", lambda r: r["primary"]["found"], "{}")
    row("secondary search time (s)", lambda r: r["secondary"]["seconds"])
    row("  transactions (silent)", lambda r: f'{r["secondary"]["transactions"]} ({r["secondary"]["silent"]})', "{}")
    row("  floor (s)", lambda r: r["secondary"]["floor_s"])
    row("  time / floor", lambda r: r["secondary"]["ratio"], "{:.2f}")
    row("  meters found", lambda r: r["secondary"]["found"], "{}")
    row("tunnel client during a scan: reads", lambda r: r["client_during_scan"]["reads"], "{}")
    row("  own transaction alone (ms)", lambda r: r["client_during_scan"]["own_transaction_ms"])
    row("  worst wait (ms)", lambda r: r["client_during_scan"]["worst_wait_ms"])
    row("  worst beyond its own (ms)", lambda r: r["client_during_scan"]["worst_extra_ms"])
    for index, clients in enumerate(CLIENT_COUNTS):
        row(f"shared bus, {clients} client(s): utilisation %", lambda r, i=index: r["sharing"][i]["utilisation"] * 100)
        row("  transactions, shares", lambda r, i=index: f'{r["sharing"][i]["transactions"]} '
            f'{"/".join(map(str, r["sharing"][i]["shares"]))}', "{}")
        row("  wrong or lost replies", lambda r, i=index: r["sharing"][i]["wrong_replies"] + r["sharing"][i]["lost"],
            "{}")
        row("  arbiter: truncated/garbled/silent", lambda r, i=index: "/".join(
            str(r["sharing"][i]["arbiter_unclean"][k]) for k in ("truncated", "garbled", "silent")), "{}")
    width = max(len(label) for label, _ in rows) + 2
    head = "".ljust(width) + "".join(f'{str(run["baud"]) + " baud":>24}' for run in runs)
    lines = [head] + [label.ljust(width) + "".join(f"{v:>24}" for v in values) for label, values in rows]
    for run in runs:
        libmbus = run.get("libmbus")
        if libmbus is None:
            continue
        lines.append(f'libmbus mbus-tcp-scan at {run["baud"]} baud: ' +
                     (libmbus["skipped"] if "skipped" in libmbus else
                      f'{libmbus.get("seconds", 0):.1f} s, {libmbus.get("found")} found'))
        if run.get("primary", {}).get("addresses", "0..250") != "0..250":
            lines.append(f'the primary scan at {run["baud"]} baud covered {run["primary"]["addresses"]} only '
                         "(reduced range to stay bounded), then was stopped")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bauds", default="2400,300", help="baud rates to run at (default 2400,300)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of each run with clients at 2400 baud (three times that at 300)")
    parser.add_argument("--max-address", type=int, default=250,
                        help="the primary scan at 2400 baud and above stops after this address (default 250: all)")
    parser.add_argument("--max-address-300", type=int, default=20,
                        help="the primary scan at 300..1200 baud stops after this address (default 20)")
    parser.add_argument("--parts", default="scans,sharing", help="what to run (default scans,sharing)")
    options = parser.parse_args()
    if shutil.which("curl") is None:
        print("needs curl")
        return 2
    bauds = [int(b) for b in options.bauds.split(",")]
    outcome: dict[str, Any] = {}

    @defer.inlineCallbacks
    def run(folder: Path) -> Any:
        runs = []
        for baud in bauds:
            figures = yield at_baud(baud, options, folder)
            runs.append(figures)
        return runs

    def done(result: Any) -> None:
        outcome["result"] = result
        reactor.stop()

    with tempfile.TemporaryDirectory() as tmp:
        reactor.callWhenRunning(lambda: run(Path(tmp)).addBoth(done))
        reactor.run()
    result = outcome.get("result")
    if hasattr(result, "raiseException"):
        result.raiseException()
    print("busbench on the paced simulator (8 meters, turnaround 3..50 ms, adapter latency timer 1 ms); "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f}")
    print(table(result))
    print(json.dumps({"busbench": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
