#!/usr/bin/env python3
"""
gwbench_lines: many lines in one cmegw process, and its memory over a long run.

``lines``: for each count N in ``--lines`` (default 1,8,32; cmegw numbers
lines 1 to 32), one ``twistd cmegw`` serves N lines, each with its tunnel:
line 1 on a real pty with an echoing peer, lines 2..N simulated M-Bus lines
(``line.N.simulate = true``, the service's default simulator as it is), each
with one client that reads meter 1 (REQ_UD2) in a loop.  Measured: the process's RSS at rest and after the load,
hence RSS per added line; CPU per transaction under the load; and the
tunnel's added echo latency (p50, p99) on the extra line while the others are
busy (line 1), against the pty alone measured in the same window.

``soak``: the same process with ``--soak-lines`` lines and their readers for
``--minutes`` (bounded), a primary scan of one line through the web API now
and then, and the RSS printed every ``--every`` seconds: it must stay flat.

    PYTHONPATH=$PWD python bench/gwbench_lines.py lines --lines 1,8,32
    PYTHONPATH=$PWD python bench/gwbench_lines.py soak --minutes 10

Standard library only; it reuses gwbench.py's peers, clients and process handling.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import os
import re
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gwbench as gw  # noqa: E402
from gwbench_config import LINE_AND_TUNNEL, LOCAL_FACES, REFUSED as CONFIG_REFUSED  # noqa: E402
from gwbench_config import merged as merged_config  # noqa: E402

#: Meter 1 of the default simulated bus (a heat meter), asked for its data.
REQ_UD2_METER_1 = bytes.fromhex("10 7B 01 7C 16")
TRANSACTION_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
MAX_MINUTES = 240.0
#: cmegw numbers its lines 1 to 32.
MAX_LINES = 32
SCAN_POLL_S = 1.0

TWISTD = ("{python} -c 'from twisted.scripts.twistd import run; run()' -n --pidfile= cmegw --config {config}")

HEAD = "# written by bench/gwbench_lines.py: line 1 on a pty with an echoing peer, lines 2.. simulated\n"


def write_config(path: Path, echo_device: str, ports: list[int], http_port: int) -> None:
    """Line 1 on `echo_device`, lines 2.. simulated; tunnel n on ports[n - 1]."""
    text = HEAD + LOCAL_FACES.format(http_port=http_port, https_port=gw.free_port(), console_port=gw.free_port())
    for n, port in enumerate(ports, 1):
        device = f'device = "{echo_device}"' if n == 1 else "simulate = true"
        text += LINE_AND_TUNNEL.format(n=n, device=device, port=port)
    path.write_text(merged_config(text))


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- the readers

def frame_length(buffer: bytes | bytearray) -> int | None:
    """The length of the M-Bus frame at the start of `buffer`, or None while it is not known yet."""
    if not buffer:
        return None
    if buffer[0] == 0xE5:
        return 1
    if buffer[0] == 0x68:
        return buffer[1] + 6 if len(buffer) >= 2 else None
    if buffer[0] == 0x10:
        return 5
    raise gw.BenchError(f"not an M-Bus frame: {bytes(buffer[:16]).hex()}")


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise gw.BenchError(f"tunnel on port {port} does not answer")
            time.sleep(0.05)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock


def read_loop(ports: list[int], seconds: float, conn: Any) -> None:
    """One reader per port, REQ_UD2 after REQ_UD2 for `seconds`; sends (completion times, errors)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the bench's handler, inherited through fork
    socks = {}
    for port in ports:
        sock = connect(port)
        socks[sock.fileno()] = sock
    poller = select.epoll()
    state: dict[int, list[Any]] = {}  # fd -> [buffer, sent at]
    done: list[float] = []
    errors = 0
    now = time.monotonic()
    for fd, sock in socks.items():
        poller.register(fd, select.EPOLLIN)
        sock.send(REQ_UD2_METER_1)
        state[fd] = [bytearray(), now]
    conn.send("started")
    deadline = now + seconds if socks else now
    while (now := time.monotonic()) < deadline:
        for fd, _ in poller.poll(0.2):
            try:
                data = socks[fd].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise gw.BenchError("a tunnel closed during the load")
            entry = state[fd]
            entry[0] += data
            size = frame_length(entry[0])
            if size is not None and len(entry[0]) >= size:
                now = time.monotonic()
                done.append(now)
                del entry[0][:]
                entry[1] = now
                socks[fd].send(REQ_UD2_METER_1)
        for fd, entry in state.items():
            if now - entry[1] > TRANSACTION_TIMEOUT_S:
                errors += 1
                del entry[0][:]
                entry[1] = now
                socks[fd].send(REQ_UD2_METER_1)
    for sock in socks.values():
        sock.close()
    conn.send((done, errors))


class Readers:
    """The reading clients, in a process of their own (so the bench's latency client keeps its core)."""

    def __init__(self, ports: list[int], seconds: float) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=read_loop, args=(ports, seconds, child), daemon=True)
        self.process.start()
        if not self.conn.poll(CONNECT_TIMEOUT_S * 2) or self.conn.recv() != "started":
            self.stop()
            raise gw.BenchError("the reading clients did not start")

    def result(self, timeout: float) -> tuple[list[float], int]:
        if not self.conn.poll(timeout):
            raise gw.BenchError("the reading clients did not finish")
        done, errors = self.conn.recv()
        return done, errors

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(gw.STOP_TIMEOUT_S)


# --------------------------------------------------------------------------- one process with N lines

class ManyLines:
    """A cmegw process with `count` lines (line 1 on a pty, the rest simulated), and what it takes to measure it."""

    def __init__(self, count: int, tmp: Path) -> None:
        self.count = count
        self.peer = gw.PtyPeer(f"lines{count}")
        self.ports = [gw.free_port() for _ in range(count)]
        self.http_port = gw.free_port()
        config = tmp / f"cmegw-{count}.toml"
        write_config(config, self.peer.device, self.ports, self.http_port)
        command = gw.cmegw_command(TWISTD, {"python": sys.executable, "config": str(config)})
        self.gateway = gw.GatewayProcess(f"cmegw with {count} lines", command, self.ports[0],
                                         tmp / f"cmegw-{count}.log", refusal=CONFIG_REFUSED)
        try:
            self.gateway.start()
        except BaseException:
            self.peer.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.gateway.process is not None
        return self.gateway.process.pid

    def rss_mb(self) -> float:
        return status_kb(self.pid, "VmRSS") / 1024

    def stop(self) -> None:
        self.gateway.stop()
        self.peer.stop()


def echo_samples(channel: gw.Channel, count: int, size: int) -> list[int]:
    requests = gw.echo_requests(count, size)
    return gw.round_trips(channel.fd, requests, requests)


def measure_lines(count: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    gateway = ManyLines(count, tmp)
    direct_peer = gw.PtyPeer("direct")
    try:
        time.sleep(args.settle)  # the service's start-up heap settles (gc.freeze) after its first turns
        rest_mb = gateway.rss_mb()
        readers = Readers(gateway.ports[1:], args.seconds * 2 + 5)
        try:
            time.sleep(1.0)  # every reader has its first reply
            cpu0, t0 = gateway.gateway.cpu_seconds(), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = gateway.gateway.cpu_seconds(), time.monotonic()
            tunnel = gw.open_tunnel(gateway.ports[0])
            direct = gw.open_direct(direct_peer.device)
            tunnel_ns: list[int] = []
            direct_ns: list[int] = []
            try:
                for _ in range(args.blocks):  # interleaved, so both see the same load
                    tunnel_ns += echo_samples(tunnel, args.round_trips // args.blocks, args.echo_bytes)
                    direct_ns += echo_samples(direct, args.round_trips // args.blocks, args.echo_bytes)
            finally:
                tunnel.close()
                direct.close()
            done, errors = readers.result(args.seconds * 2 + 15)
        finally:
            readers.stop()
        in_window = sum(1 for at in done if t0 <= at < t1)
        tunnel_ns.sort()
        direct_ns.sort()
        figures = {
            "lines": count, "rss_rest_mb": round(rest_mb, 1), "rss_loaded_mb": round(gateway.rss_mb(), 1),
            "peak_rss_mb": round(status_kb(gateway.pid, "VmHWM") / 1024, 1),
            "transactions_per_s": round(in_window / (t1 - t0), 1),
            "cpu_us_per_transaction": round((cpu1 - cpu0) / in_window * 1e6, 1) if in_window else None,
            "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 2),
            "reader_timeouts": errors,
        }
        for name, samples in (("tunnel", tunnel_ns), ("direct", direct_ns)):
            figures[f"{name}_p50_us"] = round(gw.percentile(samples, 0.50) / 1000, 1)
            figures[f"{name}_p99_us"] = round(gw.percentile(samples, 0.99) / 1000, 1)
        figures["added_p50_us"] = round(figures["tunnel_p50_us"] - figures["direct_p50_us"], 1)
        figures["added_p99_us"] = round(figures["tunnel_p99_us"] - figures["direct_p99_us"], 1)
        return figures
    finally:
        direct_peer.stop()
        gateway.stop()


def lines_report(rows: list[dict[str, Any]]) -> str:
    out = [f"{'lines':>5} {'RSS rest':>9} {'loaded':>7} {'peak':>6} {'tx/s':>7} {'CPU/tx us':>9} {'CPU':>5}"
           f" {'added echo p50':>14} {'p99':>6} {'(pty p50':>9} {'p99)':>6} {'timeouts':>8}"]
    for r in rows:
        out.append(f"{r['lines']:>5} {r['rss_rest_mb']:>9} {r['rss_loaded_mb']:>7} {r['peak_rss_mb']:>6}"
                   f" {r['transactions_per_s']:>7} {r['cpu_us_per_transaction'] or '-':>9} {r['cpu_share']:>5}"
                   f" {r['added_p50_us']:>14} {r['added_p99_us']:>6} {r['direct_p50_us']:>9}"
                   f" {r['direct_p99_us']:>6} {r['reader_timeouts']:>8}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        added = last["lines"] - first["lines"]
        out.append(f"RSS per added line: {(last['rss_rest_mb'] - first['rss_rest_mb']) / added * 1024:.0f} KiB at rest, "
                   f"{(last['rss_loaded_mb'] - first['rss_loaded_mb']) / added * 1024:.0f} KiB under load "
                   f"({first['lines']} -> {last['lines']} lines; goal under 1024 KiB)")
    return "\n".join(out)


# --------------------------------------------------------------------------- soak

def _digest_header(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """The Authorization header answering one Digest challenge (RFC 7616, qop=auth, MD5 or SHA-256)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    algorithm = fields.get("algorithm", "MD5")
    digest = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def h(text: str) -> str:
        return digest(text.encode()).hexdigest()

    cnonce, count = os.urandom(8).hex(), "00000001"
    ha1 = h(f"{user}:{fields['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{fields['nonce']}:{count}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", uri="{uri}", '
            f'algorithm={algorithm}, qop=auth, nc={count}, cnonce="{cnonce}", response="{response}"'
            + (f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""))


def start_scan(http_port: int, line: int) -> str:
    """POST /api/meters/LINE/scan as admin (the factory account, Digest); the answer's status or the problem."""
    uri = f"/api/meters/{line}/scan"
    body = json.dumps({"kind": "primary"}).encode()
    headers = {"Content-Type": "application/json"}
    try:
        for _attempt in range(2):
            connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            try:
                connection.request("POST", uri, body=body, headers=headers)
                answer = connection.getresponse()
                text = answer.read()[:120]
                challenges = [v for k, v in answer.getheaders() if k.lower() == "www-authenticate"
                              and v.lower().startswith("digest ")]
            finally:
                connection.close()
            if answer.status != 401 or "Authorization" in headers or not challenges:
                return f"{answer.status}" + ("" if answer.status < 300 else f" {text!r}")
            headers["Authorization"] = _digest_header(challenges[0], "POST", uri, "admin", "admin")
    except OSError as e:
        return f"no answer ({e})"
    return "refused"


def soak(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    minutes = min(args.minutes, MAX_MINUTES)
    gateway = ManyLines(args.soak_lines, tmp)
    samples: list[dict[str, Any]] = []
    try:
        time.sleep(args.settle)
        seconds = minutes * 60
        readers = Readers(gateway.ports[1:], seconds + 5)
        start = time.monotonic()
        next_scan = start
        scans = []
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                if time.monotonic() >= next_scan:
                    scans.append(start_scan(gateway.http_port, 2))
                    next_scan += args.scan_every
                sample = {"minute": round(elapsed / 60, 2), "rss_mb": round(gateway.rss_mb(), 1),
                          "peak_rss_mb": round(status_kb(gateway.pid, "VmHWM") / 1024, 1),
                          "scans_started": len(scans), "last_scan": scans[-1] if scans else ""}
                samples.append(sample)
                print(f"  {sample['minute']:6.2f} min  RSS {sample['rss_mb']:6.1f} MB  peak {sample['peak_rss_mb']:6.1f}"
                      f"  scans {sample['scans_started']} (last answer {sample['last_scan']})", flush=True)
                time.sleep(min(args.every, max(0.0, seconds - (time.monotonic() - start))))
            done, errors = readers.result(30)
        finally:
            readers.stop()
        print(f"soak: {len(done)} transactions on {args.soak_lines} lines in {minutes:g} min, {errors} timeouts;"
              f" RSS {samples[0]['rss_mb']} -> {samples[-1]['rss_mb']} MB")
        return samples
    finally:
        gateway.stop()


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("lines", "soak"))
    parser.add_argument("--lines", default="1,8,32", type=lambda t: [int(n) for n in t.split(",")],
                        help="line counts to measure (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load window per count (default 10)")
    parser.add_argument("--round-trips", type=int, default=2000, help="echo round trips at load (default 2000)")
    parser.add_argument("--blocks", type=int, default=4, help="tunnel/pty alternations of the echo (default 4)")
    parser.add_argument("--echo-bytes", type=int, default=16)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after start before RSS at rest")
    parser.add_argument("--soak-lines", type=int, default=8, help="lines in the soak, line 1 idle (default 8)")
    parser.add_argument("--minutes", type=float, default=10.0, help=f"soak length (default 10, at most {MAX_MINUTES:g})")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples (default 30)")
    parser.add_argument("--scan-every", type=float, default=120.0, help="seconds between primary scans (default 120)")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    if any(not 1 <= n <= MAX_LINES for n in args.lines) or args.soak_lines > MAX_LINES:
        parser.error(f"cmegw numbers its lines 1 to {MAX_LINES}")
    if args.seconds <= 0 or args.minutes <= 0 or args.blocks < 1:
        parser.error("line counts, seconds, minutes and blocks must be positive")
    return args


def run(args: argparse.Namespace, tmp: Path) -> int:
    if args.mode == "lines":
        rows = []
        for count in args.lines:
            print(f"gwbench_lines: {count} lines (line 1 echo, {count - 1} simulated, read in a loop) ...",
                  flush=True)
            rows.append(measure_lines(count, args, tmp))
        print(lines_report(rows))
        result: Any = rows
    else:
        result = soak(args, tmp)
    if args.json:
        args.json.write_text(json.dumps({"context": gw.describe_host(), "mode": args.mode, "figures": result},
                                        indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, gw._terminate)
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-lines-"))
    try:
        return gw.guarded("gwbench_lines", lambda: run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
