#!/usr/bin/env python3
"""
gwbench: cmegw and ser2net side by side, in one run, over real ptys.

Each gateway gets its own pty pair: the gateway opens the slave as its serial
device, a peer process on the master side echoes, answers M-Bus requests,
swallows or produces bytes; the client talks TCP to the gateway on 127.0.0.1.
The same client and the same kind of peer also run over the pty alone
("direct"), which is what a gateway's added latency is measured against.
Rounds are interleaved (every phase runs on every path before the next phase,
and the order of the paths rotates each round), so noise hits all alike.

Standalone: the standard library only.  ``python bench/gwbench.py --help``;
bench/README.md says how to read the figures.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import multiprocessing
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwbench_config import LINE_AND_TUNNEL, LOCAL_FACES, REFUSED as CONFIG_REFUSED, ConfigMergeError  # noqa: E402
from gwbench_config import merged as merged_config  # noqa: E402
from gwbench_floor import SETTLE_S as FLOOR_SETTLE_S, compiled, floor_command, floor_env  # noqa: E402
from gwbench_floor import floor_figures, render_floor  # noqa: E402
from gwbench_memory import render as render_memory  # noqa: E402
from gwbench_tail import add_options as add_tail_options, figures as tail_figures, interleave  # noqa: E402
from gwbench_tail import render as render_tail  # noqa: E402

# --------------------------------------------------------------------------- M-Bus frames

#: REQ_UD2 to primary address 1 (short frame: start, C, A, checksum, stop).
REQ_UD2 = bytes.fromhex("10 7B 01 7C 16")
RSP_UD_SIZE = 100


def mbus_long_frame(control: int, address: int, ci: int, data: bytes) -> bytes:
    """``68 L L 68 C A CI data CS 16``; L counts C through the data, CS sums them."""
    body = bytes([control, address, ci]) + data
    if len(body) > 255:
        raise ValueError("an M-Bus long frame holds at most 255 bytes from C to the data")
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


def _manufacturer(code: str) -> bytes:
    value = 0
    for letter in code:
        value = value * 32 + (ord(letter) - 64)
    return value.to_bytes(2, "little")


def rsp_ud_frame(size: int = RSP_UD_SIZE) -> bytes:
    """A valid RSP_UD (C=08, A=01, CI=72, variable data) of exactly `size` bytes."""
    header = (
        bytes.fromhex("78 56 34 12")      # identification number 12345678 (BCD)
        + _manufacturer("CME")
        + bytes([0x01, 0x04])              # version, medium: heat
        + bytes([0x2A, 0x00])              # access number, status
        + bytes(2)                         # signature
    )
    records = bytes.fromhex(
        "04 13 A0 86 01 00"                # volume 100.000 m3
        " 04 06 39 30 00 00"               # energy 12345 kWh
        " 04 6D 1E 0C 79 2B"               # date and time (type F)
        " 02 59 D0 1B"                     # flow temperature 71.20 C
        " 02 5D 70 17"                     # return temperature 60.00 C
        " 02 61 60 04"                     # temperature difference 11.20 K
        " 04 3B 28 0A 00 00"               # volume flow 2.600 m3/h
        " 04 2B 94 11 00 00"               # power 4500 W
        " 44 13 40 42 0F 00"               # storage 1: volume
        " 42 6C 1F 2C"                     # storage 1: date (type G)
    )
    fixed = len(mbus_long_frame(0x08, 0x01, 0x72, header + records + b"\x0f"))
    padding = size - fixed
    if padding < 0:
        raise ValueError(f"an RSP_UD holds at least {fixed} bytes")
    manufacturer_data = bytes((0x30 + i) & 0xFF for i in range(padding))
    return mbus_long_frame(0x08, 0x01, 0x72, header + records + b"\x0f" + manufacturer_data)


RSP_UD = rsp_ud_frame()

# --------------------------------------------------------------------------- settings

MB = 1_000_000
CHUNK = 64 * 1024
READ_SIZE = 256 * 1024
MS = 1_000_000  # nanoseconds
SECOND = 1_000_000_000  # nanoseconds

LATENCY_TIMEOUT_MS = 2000
SYNC_TIMEOUT_S = 3.0
CONNECT_ATTEMPTS = 50
CONNECT_RETRY_S = 0.02
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.05
DRAIN_TIMEOUT_S = 10.0
STALL_TIMEOUT_MS = 3000
ACCEPT_CLOSE_TIMEOUT_S = 2.0
PEER_START_TIMEOUT_S = 20.0
PEER_REPLY_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0
WARMUP_FRACTION = 0.1
WARMUP_SECONDS = 0.5
LOG_TAIL_LINES = 25
PHASES = ("echo", "mbus", "to_serial", "from_serial", "accept", "tail")

#: What the project judges by: cmegw / ser2net, and cmegw's own absolute figures (issue 16's
#: latency and memory targets: added p50 at parity with ser2net tuned, p99 within 1.5x; 50 MB).
RATIO_TARGETS = {"added_p50": 1.0, "added_p99": 1.5, "throughput": 1.5}
ABSOLUTE_TARGETS = {
    "throughput_mb_s": 110.0,
    "accept_per_s": 5000.0,
    "peak_rss_mb": 50.0,
    "cpu_ms_per_mb": 4.0,
}

SER2NET_BUFSIZE = 65536
SER2NET_CONFIG = """\
%YAML 1.1
---
# written by bench/gwbench.py: raw tunnel, tuned for latency (see bench/README.md)
connection: &gwbench
    accepter: tcp(nodelay=true),127.0.0.1,{port}
    connector: serialdev,{device},2400e81,local
    enable: on
    options:
      kickolduser: true
      max-connections: 1
      chardelay: false
      dev-to-net-bufsize: {bufsize}
      net-to-dev-bufsize: {bufsize}
"""

CMEGW_CONFIG = ("""\
# written by bench/gwbench.py into the factory defaults (gwbench_config.merged): the full service
# (tunnel, web on HTTP and HTTPS, console), all on 127.0.0.1
""" + LINE_AND_TUNNEL.format(n=1, device='device = "{device}"', port="{port}") + LOCAL_FACES)

#: twistd in the foreground without a pid file (``python -m twisted`` is ``twist``, which
#: knows neither ``-n`` nor ``--pidfile``).
CMEGW_COMMAND = ("{python} -c 'from twisted.scripts.twistd import run; run()'"
                 " -n --pidfile= cmegw --config {config}"
                 " --device {device} --tunnel tcp:{port}:interface=127.0.0.1")


class BenchError(Exception):
    """A measurement could not be made; the message says which and why."""


class Rejected(BenchError):
    """The gateway closed a fresh connection (busy, or refused)."""


# --------------------------------------------------------------------------- the pty peer

def _peer_main(conn: Any) -> None:
    """The master side of one pty pair, in its own process so it is never the bottleneck."""
    # Ctrl-C and a SIGTERM to the process group are for the bench, which stops its peers;
    # a peer also ends when the bench is gone (end of file on `conn`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    # `slave` stays open here: the master never sees a hangup while a gateway closes
    # and reopens the device between clients.
    conn.send(os.ttyname(slave))
    try:
        _PeerLoop(master, conn).run()
    finally:
        os.close(master)
        os.close(slave)


class _PeerLoop:
    """
    Echo, M-Bus responder, sink or source on a pty master, steered through `conn`.

    Every command is ``(name, tag, *arguments)`` and every answer ``(name, tag, *values)``,
    so the bench can drop an answer that arrives after it stopped waiting for it.
    """

    def __init__(self, master: int, conn: Any) -> None:
        self.master = master
        self.conn = conn
        self.mode = "echo"
        self.pending = bytearray()
        self.sunk = 0
        self.sunk_at = 0
        self.expect: tuple[int, int] | None = None
        self.writable = select.poll()
        self.writable.register(master, select.POLLOUT)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        poller.register(self.conn.fileno(), select.POLLIN)
        while True:
            for fd, _events in poller.poll(1000):
                if fd == self.master:
                    self.on_readable()
                elif not self.on_command():
                    return

    def on_command(self) -> bool:
        try:
            command, tag, *args = self.conn.recv()
        except (EOFError, OSError):
            return False
        if command == "stop":
            return False
        if command == "mode":
            self.mode = args[0]
            self.pending.clear()
            self.sunk, self.sunk_at, self.expect = 0, 0, None
            self.conn.send(("mode", tag))
        elif command == "expect":
            self.expect = (args[0], tag)
            self.check_expect()
        elif command == "report":
            self.expect = None
            self.conn.send(("sunk", tag, self.sunk, self.sunk_at))
        elif command == "source":
            self.conn.send(("sourced", tag, *self.source(args[0], args[1])))
        return True

    def on_readable(self) -> None:
        while True:
            try:
                data = os.read(self.master, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EIO: nobody has the slave open (cannot happen while we hold it)
                time.sleep(0.001)
                return
            if not data:
                return
            if self.mode == "echo":
                self.write_all(data)
            elif self.mode == "mbus":
                self.pending += data
                self.answer_requests()
            elif self.mode == "sink":
                self.sunk += len(data)
                self.sunk_at = time.perf_counter_ns()
                self.check_expect()

    def check_expect(self) -> None:
        if self.expect is not None and self.sunk >= self.expect[0]:
            self.conn.send(("sunk", self.expect[1], self.sunk, self.sunk_at))
            self.expect = None

    def answer_requests(self) -> None:
        pending = self.pending
        while pending:
            if pending[0] != 0x10:
                del pending[0]
            elif len(pending) < 5:
                return
            elif pending[4] == 0x16 and pending[3] == (pending[1] + pending[2]) & 0xFF:
                del pending[:5]
                self.write_all(RSP_UD)
            else:
                del pending[0]

    def write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                if not self.writable.poll(STALL_TIMEOUT_MS):
                    return  # nobody reads the slave: drop, the client will time out and say so

    def source(self, seconds: float, limit: int) -> tuple[int, int, int]:
        chunk = memoryview(bytes(range(256)) * (CHUNK // 256))
        sent = 0
        start = time.perf_counter_ns()
        deadline = start + int(seconds * SECOND)
        while sent < limit and time.perf_counter_ns() < deadline:
            try:
                sent += os.write(self.master, chunk[:min(CHUNK, limit - sent)])
            except BlockingIOError:
                if not self.writable.poll(STALL_TIMEOUT_MS):
                    break
        return sent, start, time.perf_counter_ns()


class PtyPeer:
    """The parent's handle on one peer process and its pty pair."""

    def __init__(self, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_peer_main, args=(child_conn,),
                                        name=f"gwbench-peer-{name}", daemon=True)
        self._process.start()
        child_conn.close()
        self._tag = 0
        self._source_tag = 0
        try:
            self.device: str = self._receive(PEER_START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def _receive(self, timeout: float) -> Any:
        try:
            if self._conn.poll(timeout):
                return self._conn.recv()
        except (EOFError, OSError):
            raise BenchError("the pty peer process is gone") from None
        raise BenchError(f"the pty peer did not answer within {timeout:g} s")

    def _send(self, command: str, *args: Any) -> int:
        self._tag += 1
        try:
            self._conn.send((command, self._tag, *args))
        except OSError:
            raise BenchError("the pty peer process is gone") from None
        return self._tag

    def _answer(self, tag: int, timeout: float) -> tuple[Any, ...]:
        """The answer with this tag; answers to requests given up earlier are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            reply: tuple[Any, ...] = self._receive(max(0.0, deadline - time.monotonic()))
            if reply[1] == tag:
                return reply

    def alive(self) -> bool:
        return self._process.is_alive()

    def set_mode(self, mode: str) -> None:
        """echo, mbus (answer each REQ_UD2 with RSP_UD), sink (count), idle (discard)."""
        self._answer(self._send("mode", mode), PEER_REPLY_TIMEOUT_S)

    def wait_sunk(self, count: int, timeout: float) -> tuple[int, int]:
        """Wait until the sink has `count` bytes: (bytes, perf_counter_ns of the last read)."""
        tag = self._send("expect", count)
        if not self._conn.poll(timeout):
            self._conn.send(("report", tag))
        reply = self._answer(tag, PEER_REPLY_TIMEOUT_S)
        return reply[2], reply[3]

    def start_source(self, seconds: float, limit: int) -> None:
        self._source_tag = self._send("source", seconds, limit)

    def source_result(self, timeout: float) -> tuple[int, int, int] | None:
        """(bytes sent, start ns, end ns) once the source is done, else None."""
        deadline = time.monotonic() + timeout
        while self._conn.poll(max(0.0, deadline - time.monotonic())):
            reply = self._receive(0)
            if reply[1] == self._source_tag:
                return reply[2], reply[3], reply[4]
        return None

    def fileno(self) -> int:
        return self._conn.fileno()

    def stop(self) -> None:
        try:
            self._conn.send(("stop", 0))
        except OSError:
            pass
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_TIMEOUT_S)
        self._conn.close()


# --------------------------------------------------------------------------- client channels

@dataclass
class Channel:
    """The client's end of one path: a TCP socket to a gateway, or the pty slave itself."""

    fd: int
    closer: Callable[[], None]
    sock: socket.socket | None = None

    def close(self) -> None:
        try:
            self.closer()
        except OSError:
            pass


def _read_until(fd: int, token: bytes, timeout: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    seen = bytearray()
    while not seen.endswith(token):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise BenchError("no echo of the synchronisation token (is the path bridging bytes?)")
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            raise Rejected("the connection was closed: " + repr(bytes(seen[-80:])))
        seen += data
        del seen[:-4096]


def synchronise(channel: Channel) -> None:
    """Push a token through the echoing peer and drop everything up to its echo."""
    token = b"\xa5gwbench-sync-" + os.urandom(8).hex().encode()
    if os.write(channel.fd, token) != len(token):
        raise BenchError("the synchronisation token did not fit in one write")
    _read_until(channel.fd, token, SYNC_TIMEOUT_S)


def open_direct(device: str) -> Channel:
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise BenchError(f"cannot open {device}: {e}") from None
    tty.setraw(fd)
    channel = Channel(fd, lambda: os.close(fd))
    try:
        synchronise(channel)
    except BaseException:
        channel.close()
        raise
    return channel


def open_tunnel(port: int) -> Channel:
    """Connect to a gateway and wait until bytes flow (a busy gateway may refuse at first)."""
    problem: Exception | None = None
    for _attempt in range(CONNECT_ATTEMPTS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(SYNC_TIMEOUT_S)
            sock.connect(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            channel = Channel(sock.fileno(), sock.close, sock)
            synchronise(channel)
            return channel
        except (Rejected, OSError) as e:
            problem = e
            sock.close()
            time.sleep(CONNECT_RETRY_S)
        except BaseException:
            sock.close()
            raise
    raise BenchError(f"no working connection to port {port} after {CONNECT_ATTEMPTS} tries: {problem}")


# --------------------------------------------------------------------------- measurements

def round_trips(fd: int, requests: list[bytes], replies: list[bytes]) -> list[int]:
    """Send each request, wait for its whole reply; the nanoseconds of each round trip."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    wait, read, write, clock = poller.poll, os.read, os.write, time.perf_counter_ns
    samples = []
    for request, expected in zip(requests, replies):
        size = len(expected)
        parts = []
        got = 0
        start = clock()
        if write(fd, request) != len(request):
            raise BenchError("a request did not fit in one write")
        while got < size:
            if not wait(LATENCY_TIMEOUT_MS):
                raise BenchError(f"no reply within {LATENCY_TIMEOUT_MS} ms ({got} of {size} bytes)")
            chunk = read(fd, READ_SIZE)
            if not chunk:
                raise BenchError("the connection closed during a round trip")
            parts.append(chunk)
            got += len(chunk)
        samples.append(clock() - start)
        if len(parts) == 1:
            if parts[0] != expected:
                raise BenchError(f"wrong reply {parts[0][:32].hex()}... to {request.hex()}")
        elif b"".join(parts) != expected:
            raise BenchError(f"wrong reply to {request.hex()}")
    return samples


def echo_requests(count: int, size: int) -> list[bytes]:
    base = bytes((0x41 + i % 26) for i in range(size))
    return [bytes([i & 0xFF]) + base[1:] for i in range(count)]


def send_for(fd: int, seconds: float, limit: int) -> tuple[int, int]:
    """Write as much as the path takes for `seconds` (at most `limit` bytes): (bytes, start ns)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    chunk = memoryview(bytes(range(256)) * (CHUNK // 256))
    sent = 0
    start = time.perf_counter_ns()
    deadline = start + int(seconds * SECOND)
    while sent < limit and time.perf_counter_ns() < deadline:
        try:
            sent += os.write(fd, chunk[:min(CHUNK, limit - sent)])
        except BlockingIOError:
            if not poller.poll(STALL_TIMEOUT_MS):
                break
    return sent, start


def receive_source(fd: int, peer: PtyPeer, seconds: float) -> tuple[int, int, int, int]:
    """Read what the peer's source sends: (bytes received, bytes sent, start ns, last read ns)."""
    timeout = DRAIN_TIMEOUT_S
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(peer.fileno(), select.POLLIN)
    received = 0
    last = time.perf_counter_ns()
    result: tuple[int, int, int] | None = None
    progress_deadline = time.monotonic() + timeout
    while result is None or received < result[0]:
        if time.monotonic() > progress_deadline:
            break
        for ready, _events in poller.poll(200):
            if ready == fd:
                while True:
                    try:
                        data = os.read(fd, READ_SIZE)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        raise BenchError("the connection closed while receiving")
                    received += len(data)
                    last = time.perf_counter_ns()
                progress_deadline = time.monotonic() + timeout
            elif result is None:
                result = peer.source_result(0)
    if result is None:
        result = peer.source_result(seconds + STALL_TIMEOUT_MS / 1000 + DRAIN_TIMEOUT_S)
    if result is None:
        raise BenchError("the pty peer never said how much it sent")
    return received, result[0], result[1], last


def percentile(sorted_samples: list[int], fraction: float) -> float:
    """Nearest-rank percentile, in the samples' unit."""
    if not sorted_samples:
        return float("nan")
    rank = max(1, -(-int(fraction * 1000) * len(sorted_samples) // 1000))
    return float(sorted_samples[min(rank, len(sorted_samples)) - 1])


# --------------------------------------------------------------------------- processes

def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench itself dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    """One gateway started as a real process on its own pty and port."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    #: A log line that means the gateway refused its configuration: start() stops it at once then.
    refusal: str = ""
    #: The environment of the process (None: gwbench's own).
    env: dict[str, str] | None = None

    def start(self) -> None:
        """Start the process and wait until it listens; stopped again if it never does."""
        try:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.log_path.parent, start_new_session=True, env=self.env,
                    preexec_fn=_die_with_parent)
        except OSError as e:
            raise BenchError(f"cannot start {self.name}: {e}") from None
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.process.returncode}\n"
                                 + self.log_tail())
            if self.refusal and self.refusal in self.log_path.read_text(errors="replace"):
                raise BenchError(f"{self.name} refused the configuration it was given\n" + self.log_tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(READY_POLL_S)
        raise BenchError(f"{self.name} did not listen on port {self.port} within "
                         f"{READY_TIMEOUT_S:g} s\n" + self.log_tail())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kb(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise BenchError(f"no VmHWM for {self.name}")

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"  | {line}" for line in lines[-LOG_TAIL_LINES:])

    def stop(self) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)  # its own session: the gateway and nothing else
            except ProcessLookupError:
                break
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue
        self.process.wait(STOP_TIMEOUT_S)


def ser2net_command(binary: str, config: Path, pidfile: Path) -> list[str]:
    # -n foreground, -d debug output to the log, -u no UUCP lock files, -P a pid file of our own
    return [binary, "-n", "-d", "-u", "-P", str(pidfile), "-c", str(config)]


def cmegw_command(template: str, values: dict[str, str]) -> list[str]:
    return [part.format(**values) for part in shlex.split(template)]


# --------------------------------------------------------------------------- paths and results

@dataclass
class PathResult:
    """Everything measured on one path, summed over the rounds."""

    samples: dict[str, list[int]] = field(default_factory=lambda: {"echo": [], "mbus": []})
    round_p50: dict[str, list[tuple[int, float]]] = field(  # (round, p50 ns)
        default_factory=lambda: {"echo": [], "mbus": []})
    latency_cpu_s: float = 0.0
    latency_trips: int = 0
    moved: dict[str, list[tuple[int, int, int]]] = field(  # (round, bytes, ns)
        default_factory=lambda: {"to_serial": [], "from_serial": []})
    throughput_cpu_s: dict[str, float] = field(
        default_factory=lambda: {"to_serial": 0.0, "from_serial": 0.0})
    lost: dict[str, int] = field(default_factory=lambda: {"to_serial": 0, "from_serial": 0})
    accept: list[tuple[int, int, int]] = field(default_factory=list)  # (ok, refused, ns)
    peak_rss_kb: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class BenchPath:
    """Direct pty, or a gateway in front of its own pty."""

    name: str
    peer: PtyPeer
    gateway: GatewayProcess | None = None
    result: PathResult = field(default_factory=PathResult)

    def open(self) -> Channel:
        """A channel that bridges bytes, everything before it flushed; the peer echoes."""
        self.peer.set_mode("echo")
        if self.gateway is None:
            return open_direct(self.peer.device)
        if not self.gateway.alive():
            raise BenchError(f"{self.name} is not running any more\n" + self.gateway.log_tail())
        return open_tunnel(self.gateway.port)

    def cpu_seconds(self) -> float:
        return self.gateway.cpu_seconds() if self.gateway else 0.0

    def alive(self) -> bool:
        return self.peer.alive() and (self.gateway is None or self.gateway.alive())



# --------------------------------------------------------------------------- phases

def phase_latency(path: BenchPath, round_no: int, kind: str, count: int, echo_size: int) -> None:
    warmup = max(10, int(count * WARMUP_FRACTION))
    if kind == "echo":
        requests = echo_requests(warmup + count, echo_size)
        replies = requests
    else:
        requests = [REQ_UD2] * (warmup + count)
        replies = [RSP_UD] * (warmup + count)
    channel = path.open()
    try:
        if kind == "mbus":
            path.peer.set_mode("mbus")
        round_trips(channel.fd, requests[:warmup], replies[:warmup])
        cpu_before = path.cpu_seconds()
        samples = round_trips(channel.fd, requests[warmup:], replies[warmup:])
        cpu = path.cpu_seconds() - cpu_before
    finally:
        channel.close()
    result = path.result
    result.samples[kind] += samples
    result.round_p50[kind].append((round_no, percentile(sorted(samples), 0.5)))
    result.latency_cpu_s += cpu
    result.latency_trips += len(samples)


def phase_to_serial(path: BenchPath, round_no: int, seconds: float, limit: int) -> None:
    channel = path.open()
    try:
        path.peer.set_mode("sink")
        cpu_before = path.cpu_seconds()
        sent, start = send_for(channel.fd, seconds, limit)
        arrived, last = path.peer.wait_sunk(sent, DRAIN_TIMEOUT_S)
        cpu = path.cpu_seconds() - cpu_before
    finally:
        channel.close()
    arrived = min(arrived, sent)
    _record_moved(path, round_no, "to_serial", sent, arrived, last - start, cpu)


def phase_from_serial(path: BenchPath, round_no: int, seconds: float, limit: int) -> None:
    channel = path.open()
    try:
        path.peer.set_mode("idle")
        cpu_before = path.cpu_seconds()
        path.peer.start_source(seconds, limit)
        received, sent, start, last = receive_source(channel.fd, path.peer, seconds)
        cpu = path.cpu_seconds() - cpu_before
    finally:
        channel.close()
    _record_moved(path, round_no, "from_serial", sent, min(received, sent), last - start, cpu)


def _record_moved(path: BenchPath, round_no: int, direction: str, sent: int, arrived: int,
                  ns: int, cpu: float) -> None:
    result = path.result
    result.moved[direction].append((round_no, arrived, max(ns, 1)))
    result.throughput_cpu_s[direction] += cpu
    if arrived < sent:
        result.lost[direction] += sent - arrived
        result.problems.append(f"{direction}: {sent - arrived} of {sent} bytes did not arrive")


def phase_accept(path: BenchPath, seconds: float, limit: int) -> None:
    """Connect, close our side, wait for the gateway to close its side; repeat."""
    assert path.gateway is not None
    address = ("127.0.0.1", path.gateway.port)
    ok = refused = 0
    start = time.perf_counter_ns()
    deadline = start + int(seconds * SECOND)
    while ok + refused < limit and time.perf_counter_ns() < deadline:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(ACCEPT_CLOSE_TIMEOUT_S)
            sock.connect(address)
            sock.shutdown(socket.SHUT_WR)
            received = 0
            while received < READ_SIZE:
                data = sock.recv(4096)
                if not data:
                    break
                received += len(data)
            if received:
                refused += 1
            else:
                ok += 1
        except ConnectionError:
            refused += 1
        except socket.timeout:
            raise BenchError(f"{path.name} did not close within {ACCEPT_CLOSE_TIMEOUT_S:g} s "
                             "after the client closed") from None
        finally:
            sock.close()
    path.result.accept.append((ok, refused, time.perf_counter_ns() - start))


# --------------------------------------------------------------------------- the run

def rotated(items: list[BenchPath], by: int) -> list[BenchPath]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


def run_rounds(args: argparse.Namespace, paths: list[BenchPath]) -> None:
    if not args.no_warmup:
        warm_up(args, paths)
    for round_no in range(args.rounds):
        run_round(args, paths, round_no)
        print(progress_line(round_no, args.rounds, paths), flush=True)


def warm_up(args: argparse.Namespace, paths: list[BenchPath]) -> None:
    """
    One short round whose figures are dropped: an idle machine answers its first
    thousands of round trips markedly slower (idle CPUs wake up late), which would
    otherwise make the first round an outlier for every path.
    """
    short = argparse.Namespace(**vars(args))
    short.round_trips = max(100, args.round_trips // 4)
    short.seconds = min(args.seconds, WARMUP_SECONDS)
    short.accept_seconds = min(args.accept_seconds, WARMUP_SECONDS)
    kept = [path.result for path in paths]
    for path in paths:
        path.result = PathResult()
    try:
        run_round(short, paths, -1)
    finally:
        for path, result in zip(paths, kept):
            path.result = result


def run_round(args: argparse.Namespace, paths: list[BenchPath], round_no: int) -> None:
    """Every phase on every path before the next phase; the paths' order rotates by round."""
    limit = int(args.max_mb * MB)
    order = rotated(paths, max(0, round_no))
    gateways = [p for p in order if p.gateway is not None]
    phases: list[tuple[str, list[BenchPath], Callable[[BenchPath], None]]] = [
        ("echo", order, lambda p: phase_latency(p, round_no, "echo", args.round_trips,
                                                args.echo_bytes)),
        ("mbus", order, lambda p: phase_latency(p, round_no, "mbus", args.round_trips,
                                                args.echo_bytes)),
        ("to_serial", order, lambda p: phase_to_serial(p, round_no, args.seconds, limit)),
        ("from_serial", order, lambda p: phase_from_serial(p, round_no, args.seconds, limit)),
        ("accept", gateways, lambda p: phase_accept(p, args.accept_seconds, args.accept_cycles)),
    ]
    where = f"round {round_no + 1}" if round_no >= 0 else "warm-up"
    for phase, members, run in phases:
        if phase not in args.phases:
            continue
        for path in members:
            if not path.alive():
                continue
            try:
                run(path)
            except (BenchError, OSError) as e:
                note = f"{where}, {phase}: {e}"
                path.result.problems.append(note)
                print(f"  ! {path.name}: {note}", file=sys.stderr, flush=True)


def run_tail(args: argparse.Namespace, paths: list[BenchPath]) -> dict[str, Any] | None:
    """The tail phase (gwbench_tail.py): echo blocks on every path's open connection, interleaved."""
    channels: dict[str, Channel] = {}
    by_name = {path.name: path for path in paths}
    warmup = max(args.round_trips // 4, 100)
    requests = echo_requests(max(args.tail_block + args.tail_settle, warmup), args.echo_bytes)
    cpu = {path.name: [0.0, 0] for path in paths}  # gateway CPU seconds, round trips

    def measure(name: str, count: int) -> list[int]:
        before = by_name[name].cpu_seconds()
        samples = round_trips(channels[name].fd, requests[:count], requests[:count])
        cpu[name][0] += by_name[name].cpu_seconds() - before
        cpu[name][1] += count
        return samples

    try:
        for path in paths:
            if path.alive():
                channels[path.name] = path.open()
        blocks = interleave(list(channels), measure, args.tail_sets, args.tail_block + args.tail_settle, warmup)
    except (BenchError, OSError) as e:
        print(f"  ! tail: {e}", file=sys.stderr, flush=True)
        return None
    finally:
        for channel in channels.values():
            channel.close()
    tail = tail_figures(blocks, args.tail_block, args.tail_settle, args.tail_window)
    for name, entry in tail["paths"].items():
        if by_name[name].gateway is not None and cpu[name][1]:
            entry["cpu_us_per_round_trip"] = cpu[name][0] * 1e6 / cpu[name][1]
    return tail


def progress_line(round_no: int, rounds: int, paths: list[BenchPath]) -> str:
    parts = []
    for path in paths:
        r = path.result
        echo = [v for n, v in r.round_p50["echo"] if n == round_no]
        rates = [a / ns * 1e3 for direction in ("to_serial", "from_serial")
                 for n, a, ns in r.moved[direction] if n == round_no]
        text = f"{path.name} echo p50 {echo[0] / 1e3:.1f} us" if echo else f"{path.name} echo -"
        if rates:
            text += " " + "/".join(f"{x:.0f}" for x in rates) + " MB/s"
        parts.append(text)
    return f"round {round_no + 1}/{rounds}: " + "; ".join(parts)


# --------------------------------------------------------------------------- figures

def summarise(paths: list[BenchPath]) -> dict[str, Any]:
    direct = next((p for p in paths if p.gateway is None), None)
    figures: dict[str, Any] = {}
    for path in paths:
        figures[path.name] = _path_figures(path, direct)
    return figures


def _path_figures(path: BenchPath, direct: BenchPath | None) -> dict[str, Any]:
    r = path.result
    out: dict[str, Any] = {}
    for kind in ("echo", "mbus"):
        ordered = sorted(r.samples[kind])
        entry: dict[str, Any] = {
            "count": len(ordered),
            "p50_us": percentile(ordered, 0.5) / 1e3,
            "p99_us": percentile(ordered, 0.99) / 1e3,
        }
        if path.gateway is not None and direct is not None and direct.result.samples[kind]:
            base = sorted(direct.result.samples[kind])
            entry["added_p50_us"] = entry["p50_us"] - percentile(base, 0.5) / 1e3
            entry["added_p99_us"] = entry["p99_us"] - percentile(base, 0.99) / 1e3
            base_rounds = dict(direct.result.round_p50[kind])
            entry["added_p50_per_round_us"] = [
                (v - base_rounds[n]) / 1e3 for n, v in r.round_p50[kind] if n in base_rounds]
        out[kind] = entry
    if path.gateway is not None and r.latency_trips:
        out["cpu_us_per_round_trip"] = r.latency_cpu_s * 1e6 / r.latency_trips
    moved_total = 0
    for direction in ("to_serial", "from_serial"):
        arrived = sum(a for _, a, _ in r.moved[direction])
        ns = sum(n for _, _, n in r.moved[direction])
        entry = {"mb": arrived / MB, "mb_s": arrived / ns * 1e3 if ns else float("nan"),
                 "lost_bytes": r.lost[direction]}
        if path.gateway is not None and arrived:
            entry["cpu_ms_per_mb"] = r.throughput_cpu_s[direction] * 1e3 / (arrived / MB)
        out[direction] = entry
        moved_total += arrived
    if path.gateway is not None and moved_total:
        out["cpu_ms_per_mb"] = sum(r.throughput_cpu_s.values()) * 1e3 / (moved_total / MB)
    if r.accept:
        ok = sum(a[0] for a in r.accept)
        ns = sum(a[2] for a in r.accept)
        out["accept"] = {"cycles": ok, "refused": sum(a[1] for a in r.accept),
                         "per_s": ok / ns * 1e9 if ns else float("nan")}
    if r.peak_rss_kb is not None:
        out["peak_rss_mb"] = r.peak_rss_kb / 1024
    out["problems"] = r.problems
    return out


def _get(figures: dict[str, Any], *keys: str) -> float | None:
    value: Any = figures
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and value == value else None


def judge(figures: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ratios cmegw / ser2net and cmegw's absolute targets, each marked met or not."""
    cmegw, ser2net = figures.get("cmegw"), figures.get("ser2net")
    ratios: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    if cmegw is None:
        return ratios, targets

    def ratio(label: str, keys: tuple[str, ...], target: float, at_most: bool) -> None:
        mine = _get(cmegw, *keys)
        theirs = _get(ser2net, *keys) if ser2net else None
        value = mine / theirs if mine is not None and theirs else None
        if value is not None and theirs is not None and theirs < 0:
            value = None  # ser2net faster than the direct path: no meaningful ratio
        met = None if value is None else (value <= target if at_most else value >= target)
        ratios.append({"what": label, "value": value, "target": target,
                       "at_most": at_most, "met": met})

    def absolute(label: str, keys: tuple[str, ...], target: float, at_most: bool) -> None:
        value = _get(cmegw, *keys)
        met = None if value is None else (value <= target if at_most else value >= target)
        targets.append({"what": label, "value": value, "target": target,
                        "at_most": at_most, "met": met})

    for kind, name in (("echo", "echo"), ("mbus", "M-Bus")):
        ratio(f"added latency {name} p50", (kind, "added_p50_us"), RATIO_TARGETS["added_p50"], True)
        ratio(f"added latency {name} p99", (kind, "added_p99_us"), RATIO_TARGETS["added_p99"], True)
    limit = RATIO_TARGETS["throughput"]
    ratio("throughput TCP->serial", ("to_serial", "mb_s"), limit, False)
    ratio("throughput serial->TCP", ("from_serial", "mb_s"), limit, False)

    t = ABSOLUTE_TARGETS
    absolute("throughput TCP->serial (MB/s)", ("to_serial", "mb_s"), t["throughput_mb_s"], False)
    absolute("throughput serial->TCP (MB/s)", ("from_serial", "mb_s"), t["throughput_mb_s"], False)
    absolute("accept/close cycles (per s)", ("accept", "per_s"), t["accept_per_s"], False)
    absolute("peak RSS (MB)", ("peak_rss_mb",), t["peak_rss_mb"], True)
    absolute("CPU per MB moved (ms)", ("cpu_ms_per_mb",), t["cpu_ms_per_mb"], True)
    return ratios, targets


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(figures: dict[str, Any], context: dict[str, Any]) -> str:
    names = list(figures)
    width = 12
    lines = [f"gwbench, figures of {context['date']} ({context['rounds']} rounds x "
             f"{context['round_trips']} round trips, {context['seconds']:g} s per direction; "
             f"{context['cpus']} CPUs, Linux {context['kernel']})"]
    for key in ("ser2net_version", "cmegw_module"):
        if context.get(key):
            lines.append(f"{key.replace('_', ' ')}: {context[key]}")
    lines.append("")
    lines.append(f"{'':40}" + "".join(f"{n:>{width}}" for n in names))

    def row(label: str, keys: tuple[str, ...], digits: int = 1) -> None:
        lines.append(f"{label:40}" + "".join(
            f"{_cell(_get(figures[n], *keys), digits):>{width}}" for n in names))

    for kind, title in (("echo", f"echo {context['echo_bytes']} B round trip"),
                        ("mbus", "M-Bus REQ_UD2 -> RSP_UD round trip")):
        lines.append(title)
        row("  p50 (us)", (kind, "p50_us"))
        row("  p99 (us)", (kind, "p99_us"))
        row("  added by the gateway p50 (us)", (kind, "added_p50_us"))
        row("  added by the gateway p99 (us)", (kind, "added_p99_us"))
        spread = []
        for n in names:
            per_round = figures[n].get(kind, {}).get("added_p50_per_round_us")
            spread.append(f"{min(per_round):.0f}..{max(per_round):.0f}" if per_round else "-")
        lines.append(f"{'  added p50, spread of the rounds (us)':40}"
                     + "".join(f"{s:>{width}}" for s in spread))
    row("gateway CPU per round trip (us)", ("cpu_us_per_round_trip",))
    lines.append("throughput (MB/s, 1 MB = 10^6 bytes)")
    row("  TCP -> serial", ("to_serial", "mb_s"))
    row("  serial -> TCP", ("from_serial", "mb_s"))
    lines.append("gateway CPU per MB moved (ms)")
    row("  TCP -> serial", ("to_serial", "cpu_ms_per_mb"), 2)
    row("  serial -> TCP", ("from_serial", "cpu_ms_per_mb"), 2)
    row("  both ways", ("cpu_ms_per_mb",), 2)
    row("accept/close cycles (per s)", ("accept", "per_s"), 0)
    row("  refused or failed cycles", ("accept", "refused"), 0)
    row("peak RSS, VmHWM (MB)", ("peak_rss_mb",))

    ratios, targets = judge(figures)
    if ratios or targets:
        lines += ["", "cmegw / ser2net" + " " * 25 + "ratio   target   "]
        for item in ratios:
            lines.append(_judged_line(item, 2))
        lines += ["", "cmegw's own targets" + " " * 21 + "value   target"]
        for item in targets:
            lines.append(_judged_line(item, 1))
    for other, meaning in (("pyrelay", "the floor of a Python relay"), ("twrelay", "the floor of a Twisted relay"),
                           ("before", "the --cmegw-before tree")):
        if "cmegw" in figures and other in figures:
            lines.append(f"cmegw / {other} ({meaning}): " + ", ".join(
                f"{name} {q} {_ratio_text(figures['cmegw'], figures[other], kind, q)}"
                for kind, name in (("echo", "echo"), ("mbus", "M-Bus")) for q in ("p50", "p99")))
    for note in context.get("notes", []):
        lines.append("note: " + note)
    for n in names:
        for problem in figures[n].get("problems", []):
            lines.append(f"problem ({n}): {problem}")
    return "\n".join(lines)


def _ratio_text(mine: dict[str, Any], theirs: dict[str, Any], kind: str, quantile: str) -> str:
    """One added-latency ratio, or n/a when either is missing or not positive."""
    a, b = _get(mine, kind, f"added_{quantile}_us"), _get(theirs, kind, f"added_{quantile}_us")
    return f"{a / b:.2f}" if a is not None and b is not None and a > 0 and b > 0 else "n/a"


def _judged_line(item: dict[str, Any], digits: int) -> str:
    sign = "<=" if item["at_most"] else ">="
    verdict = {True: "met", False: "NOT MET", None: "n/a"}[item["met"]]
    return (f"  {item['what']:38}{_cell(item['value'], digits):>6}   {sign} {item['target']:<6g}"
            f" {verdict}")


# --------------------------------------------------------------------------- setup and main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gwbench", description="cmegw and ser2net side by side over real ptys "
        "(see bench/README.md).")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--round-trips", type=int, default=2000,
                        help="measured round trips per path, kind and round (default 2000)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="throughput time per direction, path and round (default 3)")
    parser.add_argument("--max-mb", type=float, default=256.0,
                        help="at most this many MB per direction, path and round (default 256)")
    parser.add_argument("--echo-bytes", type=int, default=16, help="echo size (default 16)")
    parser.add_argument("--accept-seconds", type=float, default=1.0,
                        help="accept/close time per gateway and round (default 1)")
    parser.add_argument("--accept-cycles", type=int, default=3000,
                        help="at most this many accept/close cycles per gateway and round")
    parser.add_argument("--only", choices=("cmegw", "ser2net"), help="measure one gateway only")
    parser.add_argument("--with-pyrelay", action="store_true",
                        help="also measure pyrelay, a bare Python epoll relay (the floor for a "
                        "Python gateway)")
    parser.add_argument("--with-twrelay", action="store_true",
                        help="also measure twrelay, the least a Twisted relay can do (stock epoll "
                        "reactor, SerialPort, writes at once): the floor of a Twisted gateway")
    parser.add_argument("--pyrelay-threads", action="store_true",
                        help="pyrelay as two threads in blocking reads and writes instead of an "
                        "epoll loop")
    parser.add_argument("--phases", default=",".join(PHASES), type=lambda text: text.split(","),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--ser2net", default="ser2net", help="the ser2net binary")
    parser.add_argument("--cmegw-cmd", default=CMEGW_COMMAND, metavar="TEMPLATE",
                        help="how to start cmegw; {python} {config} {device} {port} {tmpdir} "
                        "are filled in (default: %(default)s)")
    parser.add_argument("--cmegw-before", type=Path, metavar="DIR",
                        help="also measure the cmegw of source tree DIR (e.g. a `git archive` of an older "
                             "commit), as the path 'before', in the same run")
    parser.add_argument("--memory-table", type=int, default=20, metavar="N",
                        help="after the rounds, the N modules that allocate the most in cmegw's service, "
                             "from bench/gwbench_memory.py (0: off; default 20)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the dependency floor (bench/gwbench_floor.py) measured after the rounds")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the short warm-up round whose figures are dropped")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temporary directory (configurations, gateway logs)")
    add_tail_options(parser)
    parser.add_argument("--pin", metavar="CPUS", type=lambda text: {int(c) for c in text.split(",")},
                        help="run the client, the peers and every gateway on these CPUs (e.g. 0 or 0,1)")
    parser.add_argument("--ser2net-bufsize", type=int, default=SER2NET_BUFSIZE,
                        help="ser2net's dev-to-net and net-to-dev buffer (default %(default)s)")
    args = parser.parse_args(argv)
    if not set(args.phases) <= set(PHASES):
        parser.error("--phases takes " + ",".join(PHASES))
    if args.rounds < 1 or args.round_trips < 1 or args.seconds <= 0 or args.max_mb <= 0:
        parser.error("rounds, round trips, seconds and MB must be positive")
    if not 1 <= args.echo_bytes <= 4096:
        parser.error("--echo-bytes must be 1 to 4096 (one write, one pty buffer)")
    return args


def start_gateway(name: str, args: argparse.Namespace, tmp: Path, device: str) -> GatewayProcess:
    port = free_port()
    if name == "ser2net":
        binary = shutil.which(args.ser2net)
        if binary is None:
            raise BenchError(f"{args.ser2net} is not installed (apt-get install ser2net)")
        config = tmp / "ser2net.yaml"
        config.write_text(SER2NET_CONFIG.format(port=port, device=device,
                                                bufsize=args.ser2net_bufsize))
        command = ser2net_command(binary, config, tmp / "ser2net.pid")
    elif name == "pyrelay":
        command = [sys.executable, str(Path(__file__).with_name("gwbench_relay.py")),
                   "--thread-relay" if args.pyrelay_threads else "--relay", device, str(port)]
    elif name == "twrelay":
        command = [sys.executable, str(Path(__file__).with_name("gwbench_twrelay.py")), device, str(port)]
    else:
        config = tmp / f"{name}.toml"
        try:
            config.write_text(merged_config(CMEGW_CONFIG.format(port=port, device=device, http_port=free_port(),
                                                                https_port=free_port(), console_port=free_port())))
        except ConfigMergeError as e:
            raise BenchError(f"cannot write cmegw's configuration: {e}") from None
        command = cmegw_command(args.cmegw_cmd, {
            "python": sys.executable, "config": str(config), "device": device,
            "port": str(port), "tmpdir": str(tmp)})
    env = None
    if name == "before":
        env = dict(os.environ, PYTHONPATH=str(args.cmegw_before.resolve()))
    # cmegw refusing its file would run on the factory defaults (every address): stopped at once then.
    gateway = GatewayProcess(name, command, port, tmp / f"{name}.log",
                             refusal=CONFIG_REFUSED if name in ("cmegw", "before") else "", env=env)
    gateway.start()
    return gateway


def memory_table(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    """cmegw's service once more, in bench/gwbench_memory.py with tracemalloc, on a pty of its own."""
    if args.memory_table <= 0 or args.cmegw_cmd != CMEGW_COMMAND:
        return None
    peer = PtyPeer("memory")
    try:
        config = tmp / "cmegw-memory.toml"
        config.write_text(merged_config(CMEGW_CONFIG.format(port=free_port(), device=peer.device,
                                                            http_port=free_port(), https_port=free_port(),
                                                            console_port=free_port())))
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("gwbench_memory.py")), "--json",
                               "--config", str(config), "--device", peer.device, "--top", str(args.memory_table)],
                              capture_output=True, text=True, timeout=300, cwd=tmp, preexec_fn=_die_with_parent)
    except (OSError, subprocess.TimeoutExpired, ConfigMergeError) as e:
        print(f"! no memory table: {e}", file=sys.stderr)
        return None
    finally:
        peer.stop()
    if done.returncode != 0:
        print(f"! no memory table: {done.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def floor_peak_mb(tmp: Path) -> float | None:
    """The dependency floor's peak RSS in MB (bench/gwbench_floor.tac under twistd, on a pty of its own)."""
    peer = PtyPeer("floor")
    ports = [free_port() for _ in range(3)]
    floor = GatewayProcess("floor", floor_command(sys.executable), ports[0], tmp / "floor.log",
                           env=floor_env(peer.device, *ports))
    try:
        floor.start()
        time.sleep(FLOOR_SETTLE_S)
        return round(floor.peak_rss_kb() / 1024, 1) if floor.alive() else None
    except BenchError as e:
        print(f"! no dependency floor: {e}", file=sys.stderr)
        return None
    finally:
        floor.stop()
        peer.stop()


def describe_host() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), "")
    except OSError:
        pass
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version()}


def tool_version(command: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _measure(args: argparse.Namespace, tmp: Path, context: dict[str, Any], peers: list[PtyPeer],
             gateways: list[GatewayProcess]) -> int:
    """Start the paths, run the rounds, report; whatever it started is in `peers` and `gateways`."""
    direct_peer = PtyPeer("direct")
    peers.append(direct_peer)
    paths = [BenchPath("direct", direct_peer)]
    for name in ("ser2net", "cmegw", "before", "pyrelay", "twrelay"):
        if (args.only and args.only != name) or (name == "pyrelay" and not args.with_pyrelay) \
                or (name == "twrelay" and not args.with_twrelay) \
                or (name == "before" and not args.cmegw_before):
            continue
        if name == "ser2net":
            context["ser2net_version"] = tool_version([args.ser2net, "-v"])
        elif name == "cmegw" and args.cmegw_cmd == CMEGW_COMMAND:
            context["cmegw_module"] = tool_version(
                [sys.executable, "-c", "import cmegw; print(cmegw.__file__)"], cwd=tmp)
        peer = PtyPeer(name)
        peers.append(peer)
        try:
            gateway = start_gateway(name, args, tmp, peer.device)
        except BenchError as e:
            if args.only:
                raise
            context["notes"].append(f"{name} not measured: {e}")
            print(f"! {name} not measured: {e}", file=sys.stderr, flush=True)
            continue
        gateways.append(gateway)  # at once: nothing may run between its start and its way to stop()
        paths.append(BenchPath(name, peer, gateway))
    if len(paths) < 2:
        raise BenchError("no gateway could be started")
    print(f"gwbench: {', '.join(p.name for p in paths)}; {args.rounds} rounds "
          f"(temporary files in {tmp})", flush=True)
    run_rounds(args, paths)
    tail = run_tail(args, paths) if "tail" in args.phases and args.tail_sets > 0 else None
    for path in paths:
        if path.gateway is not None and path.gateway.alive():
            path.result.peak_rss_kb = path.gateway.peak_rss_kb()
        elif path.gateway is not None:
            path.result.problems.append("the gateway died during the run\n"
                                        + path.gateway.log_tail())
    figures = summarise(paths)
    print()
    print(report(figures, context))
    if tail is not None:
        print()
        print(render_tail(tail))
    memory = memory_table(args, tmp) if any(p.name == "cmegw" for p in paths) else None
    if memory is not None:
        figures["cmegw_memory"] = memory
        print()
        print(render_memory(memory))
    cmegw_path = next((p for p in paths if p.name == "cmegw" and p.result.peak_rss_kb is not None), None)
    if cmegw_path is not None and not args.no_floor:
        figures["floor"] = floor_figures(round(cmegw_path.result.peak_rss_kb / 1024, 1), floor_peak_mb(tmp),
                                         ABSOLUTE_TARGETS["peak_rss_mb"])
        print()
        print(render_floor(figures["floor"], compiled(context.get("cmegw_module", ""))))
    if args.json:
        ratios, targets = judge(figures)
        args.json.write_text(json.dumps(
            {"context": context, "figures": figures, "ratios": ratios, "targets": targets, "tail": tail,
             "ser2net_config": SER2NET_CONFIG, "ser2net_bufsize": args.ser2net_bufsize,
             "cmegw_config": CMEGW_CONFIG, "cmegw_command": args.cmegw_cmd},
            indent=2) + "\n")
    return 0


def guarded(name: str, run: Callable[[], int]) -> int:
    """`run()`'s status, or 2 after a bench error and 130 after Ctrl-C or SIGTERM, said in words."""
    try:
        return run()
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, args.pin)  # inherited by the peers and the gateways: the same CPUs for all
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    context: dict[str, Any] = {**describe_host(), "rounds": args.rounds,
                               "round_trips": args.round_trips, "seconds": args.seconds,
                               "max_mb": args.max_mb, "echo_bytes": args.echo_bytes,
                               "rsp_ud_bytes": len(RSP_UD), "notes": [],
                               "cpus_used": sorted(os.sched_getaffinity(0))}
    peers: list[PtyPeer] = []
    gateways: list[GatewayProcess] = []
    try:
        return guarded("gwbench", lambda: _measure(args, tmp, context, peers, gateways))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        for gateway in gateways:
            gateway.stop()
        for peer in peers:
            peer.stop()
        if args.keep_tmp:
            print(f"gwbench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
