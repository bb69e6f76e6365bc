# -*- test-case-name: tests.test_mbus_simulator -*-
"""
A simulated M-Bus: meters that answer like real slaves, on a real pty.

L{MeterBus} (in L{cmegw.mbus.meterbus}) is pure: C{handle(request) -> reply}.  L{SimulatedBus} puts it
behind a pseudo-terminal so the gateway opens it like a USB level converter; with a
L{cmegw.mbus.pacing.Wire} it keeps wire time (L{paced_bus}: as the gateway's built-in bus).

Run C{python -m cmegw.mbus.simulator [--paced]} to get a bus on a pty from a shell; the
gateway runs its built-in bus so, with C{--gateway-child} (L{cmegw.mbus.simprocess}).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import signal
import sys
import tempfile
import termios
import tty
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import abstract, fdesc, protocol, stdio
from twisted.internet.interfaces import IDelayedCall

from cmegw.mbus import frames
from cmegw.mbus.meterbus import DEFAULT_BAUD, MeterBus, default_meters
from cmegw.mbus.pacing import Adapter, Turnaround, Wire

RESYNC_TIMEOUT = 0.2  # seconds of silence after which a partial telegram is dropped
#: How much less nice than its parent the gateway's built-in bus runs (where it may).
BUS_NICENESS = -10
#: The latency timer of an FTDI adapter in low-latency mode (seconds).
LOW_LATENCY_TIMER = 0.001
#: The signals the gateway's bus ignores: it ends when its standard input does (`--gateway-child`).
GATEWAY_CHILD_IGNORES = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


_BAUD_BY_SPEED = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
    if hasattr(termios, f"B{rate}")
}


class _PtyMaster(abstract.FileDescriptor):
    """
    The master side of the pty, read and written through the reactor.
    """

    def __init__(self, reactor: Any, fd: int, received: Callable[[bytes], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._received = received
        self.connected = 1

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        return fdesc.readFromFD(self._fd, self._received)

    def writeSomeData(self, data: bytes) -> object:
        return fdesc.writeToFD(self._fd, data)

    def logPrefix(self) -> str:
        return "SimulatedBus"


class SimulatedBus:
    """
    A L{MeterBus} behind a pseudo-terminal.

    The gateway opens the path L{start} returns as its serial line.  The
    master side splits what it reads into telegrams.  Without a C{wire}
    (instant mode, for unit tests) each answer is written whole
    C{reply_delay} seconds after its request was read.  With a
    L{cmegw.mbus.pacing.Wire} the line keeps wire time at the baud rate
    the gateway set on the pty: a request is heard when its last character
    has left the wire, the answer starts after the wire's turnaround and
    reaches the gateway character by character (or in its adapter's chunks).

    L{unplug} and L{replug} make the device vanish and come back.  A new pty
    gets the first free number, which need not be the old one; give
    C{start} a C{link} path to get a stable name, as udev's
    C{/dev/serial/by-id} links give real adapters: the link is removed on
    unplug and made again, to the new pty, on replug.
    """

    def __init__(
        self,
        reactor: Any,
        bus: MeterBus,
        reply_delay: float = 0.0,
        wire: Wire | None = None,
    ) -> None:
        self._reactor = reactor
        self.bus = bus
        self.reply_delay = reply_delay
        self.wire = wire
        self.link: str | None = None
        self.path: str | None = None
        self.requests = 0
        self.replies = 0
        self.ignored_bytes = 0
        self._master: _PtyMaster | None = None
        self._slave_fd: int | None = None
        self._buffer = b""
        self._outbox: collections.deque[tuple[float, bytes]] = collections.deque()
        self._line_free_at = 0.0
        self._pump_call: IDelayedCall | None = None
        self._resync: IDelayedCall | None = None
        self._hearing: collections.deque[IDelayedCall] = collections.deque()

    # Life cycle

    def start(self, link: str | None = None) -> str:
        """
        Make the pty and start answering.

        @param link: if given, a symlink made at this path to the pty.
        @return: C{link} if given, else the pty's slave path.
        """
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        # The line starts at the meters' usual rate, as an adapter does (a pty's own default is 38400).
        attributes = termios.tcgetattr(slave_fd)
        attributes[4] = attributes[5] = getattr(termios, f"B{DEFAULT_BAUD}")
        termios.tcsetattr(slave_fd, termios.TCSANOW, attributes)
        fdesc.setNonBlocking(master_fd)
        self._slave_fd = slave_fd
        self.path = os.ttyname(slave_fd)
        self._buffer = b""
        self._master = _PtyMaster(self._reactor, master_fd, self._data_received)
        self._master.startReading()
        if link is not None:
            self.link = link
        if self.link is not None:
            _point_link(self.link, self.path)
            return self.link
        return self.path

    def stop(self) -> None:
        """
        Close the pty: the gateway's next read fails as on a pulled adapter.
        """
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        self._outbox.clear()
        self._line_free_at = 0.0
        for call in self._hearing:
            if call.active():
                call.cancel()
        self._hearing.clear()
        if self._resync is not None and self._resync.active():
            self._resync.cancel()
        self._resync = None
        if self._master is not None:
            master, self._master = self._master, None
            master.stopReading()
            master.stopWriting()
            os.close(master.fileno())
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None
        if self.link is not None:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass

    def unplug(self) -> None:
        """
        The adapter goes away (same as L{stop}; the link, if any, is kept
        in mind for L{replug}).
        """
        self.stop()

    def replug(self) -> str:
        """
        The adapter comes back: a new pty (and the link made again).
        """
        if self._master is not None:
            self.stop()
        return self.start()

    @property
    def baud(self) -> int | None:
        """
        The baud rate the gateway set on the line (None if unknown).
        """
        if self._slave_fd is None:
            return None
        attributes = termios.tcgetattr(self._slave_fd)
        return _BAUD_BY_SPEED.get(attributes[5])

    # Byte path

    def _data_received(self, data: bytes) -> None:
        now = self._reactor.seconds()
        sent = self.wire.send(len(data), self.baud or DEFAULT_BAUD) if self.wire is not None else None
        before = len(self._buffer)
        self._buffer += data
        segments, _waiting = frames.split_stream(self._buffer, check_stop=False)
        end = 0
        for segment in segments:
            end += len(segment.data)
            if segment.kind != frames.TELEGRAM:
                self.ignored_bytes += len(segment.data)
                continue
            self.requests += 1
            heard_at = sent.end_of(max(end - before - 1, 0)) if sent is not None else now
            if heard_at <= now:
                self._hear(segment.data, heard_at)
            else:
                self._hearing.append(self._reactor.callLater(heard_at - now, self._hear, segment.data, heard_at))
        self._buffer = self._buffer[end:]
        if self._resync is not None and self._resync.active():
            self._resync.cancel()
        self._resync = None
        if self._buffer:
            self._resync = self._reactor.callLater(RESYNC_TIMEOUT, self._drop_partial)

    def _hear(self, telegram: bytes, heard_at: float) -> None:
        """The slaves have heard `telegram` whole (at `heard_at`): the bus answers, or not."""
        while self._hearing and not self._hearing[0].active():
            self._hearing.popleft()
        baud = self.baud
        reply = self.bus.handle(telegram, baud)
        if reply is not None:
            self._schedule(reply, heard_at, baud or DEFAULT_BAUD)

    def _drop_partial(self) -> None:
        self._resync = None
        self.ignored_bytes += len(self._buffer)
        self._buffer = b""

    def _schedule(self, reply: bytes, heard_at: float, baud: int) -> None:
        """
        Queue C{reply}: paced by the wire, or whole C{reply_delay} after now
        once the last answer is out (an answer never overlaps the one before).
        """
        self.replies += 1
        if self.wire is not None:
            offset = 0
            for when, count in self.wire.answer(heard_at, len(reply), baud):
                self._outbox.append((when, reply[offset : offset + count]))
                offset += count
        else:
            start = max(self._reactor.seconds() + self.reply_delay, self._line_free_at)
            self._outbox.append((start, reply))
            self._line_free_at = start
        if self._pump_call is None:
            self._pump()

    def _pump(self) -> None:
        """
        Write every queued chunk that is due, then wait for the next.
        """
        self._pump_call = None
        now = self._reactor.seconds()
        while self._outbox and self._outbox[0][0] <= now:
            _, data = self._outbox.popleft()
            if self._master is not None:
                self._master.write(data)
        if self._outbox:
            self._pump_call = self._reactor.callLater(self._outbox[0][0] - now, self._pump)


def paced_bus(reactor: Any, bus: MeterBus, seed: int = 0) -> SimulatedBus:
    """
    C{bus} on a pty at the pace of a real line: meters answering after
    3..50 ms (seeded), through a USB adapter in low-latency mode (1 ms
    latency timer), as the gateway's built-in simulated bus runs.
    """
    return SimulatedBus(reactor, bus, wire=Wire(reactor, Turnaround(), Adapter(LOW_LATENCY_TIMER), seed))


def _point_link(link: str, target: str) -> None:
    """
    Make C{link} a symlink to C{target}, replacing any old one atomically.
    """
    directory = os.path.dirname(os.path.abspath(link))
    temporary = tempfile.mktemp(prefix=".pty-", dir=directory)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def _take_priority() -> None:
    """
    Run ahead of the gateway and whatever else loads the box, as a real bus
    does (its meters never wait for the host's CPU): a lower niceness where
    the process may take one (root, CAP_SYS_NICE), else as it is.  Measured
    with four CPU hogs on two cores: four clients sharing the bus lost a
    reply in 4 runs of 4 at the gateway's niceness, in none of 4 at
    BUS_NICENESS.
    """
    try:
        os.nice(BUS_NICENESS)
    except OSError:
        pass


def _without_tls() -> None:
    """
    Run the bus's process without pyOpenSSL: it serves a pty and never TLS, but
    Twisted's TCP support imports pyOpenSSL and cryptography wherever they are
    installed (14 MB of each bus's RSS).  Marked absent before the reactor is
    imported, they are what they are on a host without pyOpenSSL: Twisted's
    TCP then simply has no TLS.
    """
    if "OpenSSL" not in sys.modules:
        sys.modules["OpenSSL"] = None  # type: ignore[assignment]


class _ParentWatch(protocol.Protocol):
    """Standard input of a simulator started by the gateway: its end (the parent died, even by SIGKILL) stops it."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: object = None) -> None:
        if self._reactor.running:
            self._reactor.stop()


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmegw.mbus.simulator",
        description="A simulated M-Bus with four meters on a pseudo-terminal.",
    )
    parser.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="instant mode: seconds before each whole answer (default 0)")
    parser.add_argument("--paced", action="store_true",
                        help="keep wire time at the baud rate set on the line (11 bits a character), "
                             "meters answering after 3..50 ms")
    parser.add_argument("--latency", type=float, default=LOW_LATENCY_TIMER * 1000, metavar="MS",
                        help="with --paced: the USB adapter's latency timer, 1..16 ms (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="with --paced: seed of the answer delays")
    parser.add_argument("--link", metavar="PATH",
                        help="also make a symlink at PATH to the pty")
    parser.add_argument("--fixed-clock", action="store_true",
                        help="the meters' clocks read 2024-03-12 14:23, as on the gateway's built-in bus "
                             "(default: now)")
    parser.add_argument("--gateway-child", action="store_true",
                        help="run as the gateway's bus: in a process group of its own, deaf to SIGTERM, SIGINT "
                             "and SIGHUP (a signal to the gateway's group, such as Ctrl-C, or to its whole "
                             "systemd unit is the gateway's to handle: it stops its line, then this bus), and "
                             "stop when standard input ends (the gateway stops it so, or is gone)")
    options = parser.parse_args(argv)
    if options.gateway_child:
        os.setpgid(0, 0)
        for number in GATEWAY_CHILD_IGNORES:
            signal.signal(number, signal.SIG_IGN)
        _take_priority()
        _without_tls()

    if reactor is None:
        from twisted.internet import reactor

    meters = default_meters(None if options.fixed_clock else datetime.datetime.now())
    wire = None
    if options.paced:
        wire = Wire(reactor, Turnaround(), Adapter(options.latency / 1000), options.seed)
    bus = SimulatedBus(reactor, MeterBus(meters), options.delay, wire)
    path = bus.start(options.link)

    def running() -> None:
        # The first line is the pty's path, written once the reactor reads the pty: the bus answers from then on.
        print(path, flush=True)
        for meter in bus.bus.meters:
            print(f"  primary {meter.primary:3d}  secondary {meter.address}  {meter.baud} baud", flush=True)
        if options.gateway_child:
            stdio.StandardIO(_ParentWatch(reactor), reactor=reactor)

    reactor.callWhenRunning(running)
    reactor.addSystemEventTrigger("before", "shutdown", bus.stop)
    reactor.run(installSignalHandlers=not options.gateway_child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
