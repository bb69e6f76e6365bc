"""
Tests for L{cmegw.mbus.simulator}.
"""

from __future__ import annotations

import os
import termios
import tty

from twisted.internet import task, defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw.mbus import frames
from tests.test_mbus_meterbus import parses
from cmegw.mbus.meterbus import BITS_PER_CHARACTER, MeterBus, default_meters
from cmegw.mbus.pacing import Adapter, Turnaround, Wire
from cmegw.mbus.simulator import SimulatedBus, paced_bus


def open_slave(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def set_baud(fd: int, speed: int) -> None:
    attributes = termios.tcgetattr(fd)
    attributes[4] = attributes[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attributes)


def read_available(fd: int) -> bytes:
    chunks = []
    for _ in range(100):
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class _TelegramReader:
    """
    Reads from a pty slave fd with the reactor until one telegram is complete.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "test"

    def doRead(self) -> None:
        self.buffer += read_available(self.fd)
        size = frames.frame_length(self.buffer)
        if size is not None and len(self.buffer) >= size and not self.done.called:
            reactor.removeReader(self)
            self.done.callback(self.buffer)

    def connectionLost(self, reason: object) -> None:
        pass


class SimulatedBusPtyTests(TestCase):
    """
    The simulated bus over a real pty with the real reactor.
    """

    def start(self, **kwargs: object) -> tuple[SimulatedBus, int]:
        bus = SimulatedBus(reactor, MeterBus(default_meters()), **kwargs)
        path = bus.start()
        self.addCleanup(bus.stop)
        fd = open_slave(path)
        self.addCleanup(os.close, fd)
        return bus, fd

    def read_telegram(self, fd: int) -> defer.Deferred[bytes]:
        reader = _TelegramReader(fd)
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)
        return reader.done.addTimeout(5, reactor)

    @defer.inlineCallbacks
    def test_read_meter(self):
        bus, fd = self.start()
        os.write(fd, frames.req_ud2(1))
        reply = yield self.read_telegram(fd)
        frame = frames.parse_frame(reply)
        self.assertEqual((frame.kind, frame.a, frame.ci), ("long", 1, 0x72))
        self.assertEqual(bus.requests, 1)

    @defer.inlineCallbacks
    def test_resynchronises_on_garbage(self):
        bus, fd = self.start(reply_delay=0.001)
        os.write(fd, b"\x00\x16\x99" + frames.snd_nke(2))
        reply = yield self.read_telegram(fd)
        self.assertEqual(reply, frames.ACK)
        self.assertEqual(bus.ignored_bytes, 3)

    @defer.inlineCallbacks
    def test_paced(self):
        bus, fd = self.start(wire=Wire(reactor, Turnaround(0.001, 0.002)))
        for meter in bus.bus.meters:
            meter.baud = 38400
        set_baud(fd, termios.B38400)
        self.assertEqual(bus.baud, 38400)
        os.write(fd, frames.req_ud2(2))
        reply = yield self.read_telegram(fd)
        self.assertTrue(parses(reply))
        self.assertEqual(bus.wire.answers, 1)

    @defer.inlineCallbacks
    def test_meters_are_silent_at_another_baud_rate(self):
        """Real meters at 2400 baud do not answer a line set to 9600: the simulated ones neither."""
        bus, fd = self.start()
        set_baud(fd, termios.B9600)
        os.write(fd, frames.req_ud2(1))
        for _ in range(50):  # bounded: until the simulator has taken the request
            if bus.requests:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((bus.requests, bus.replies), (1, 0))
        set_baud(fd, termios.B2400)
        os.write(fd, frames.snd_nke(1))
        self.assertEqual((yield self.read_telegram(fd)), frames.ACK)

    @defer.inlineCallbacks
    def test_stop_looks_like_unplug(self):
        bus, fd = self.start()
        bus.stop()
        # The slave side now reads end-of-file or EIO, as on a pulled adapter.
        try:
            data = os.read(fd, 10)
        except OSError as error:
            data = None
            self.assertEqual(error.errno, 5)
        self.assertIn(data, (None, b""))
        yield None


class _ClockedPty:
    """A simulated bus on a real pty, its reactor and clock a MemoryReactorClock (mixed into a TestCase)."""

    def start(self, reply_delay: float = 0.0, turnaround: Turnaround | None = None,
              adapter: Adapter | None = None) -> None:
        """Instant mode, or paced when a `turnaround` is given."""
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000)
        wire = Wire(self.reactor, turnaround, adapter) if turnaround is not None else None
        self.bus = SimulatedBus(self.reactor, MeterBus(default_meters()), reply_delay, wire)
        path = self.bus.start()
        self.addCleanup(self.bus.stop)
        self.fd = open_slave(path)
        self.addCleanup(os.close, self.fd)
        set_baud(self.fd, termios.B2400)

    def pump(self) -> bytes:
        """
        Let the fake reactor's readers and writers run once; return what the
        gateway side can read.
        """
        for reader in list(self.reactor.readers):
            reader.doRead()
        for writer in list(self.reactor.writers):
            writer.doWrite()
        return read_available(self.fd)

    def advance_to(self, when: float) -> bytes:
        """Advance the clock to `when` (from now); what the gateway side read meanwhile."""
        self.reactor.advance(when - self.reactor.seconds())
        return self.pump()

    def arrivals(self, until: float, step: float) -> list[tuple[float, bytes]]:
        """(time, bytes) the gateway side reads, looking every `step` seconds until `until`."""
        out = []
        for _ in range(int((until - self.reactor.seconds()) / step) + 2):  # bounded by `until`
            if self.reactor.seconds() > until:
                break
            data = self.advance_to(self.reactor.seconds() + step)
            if data:
                out.append((self.reactor.seconds(), data))
        return out


CHARACTER = BITS_PER_CHARACTER / 2400
EPS = 1e-6


class InstantClockTests(_ClockedPty, TestCase):
    """Instant mode (no wire): the whole answer `reply_delay` after the request was read."""

    def setUp(self) -> None:
        self.start(reply_delay=0.05)

    def test_whole_answer_after_reply_delay(self) -> None:
        os.write(self.fd, frames.req_ud2(1))
        self.assertEqual(self.pump(), b"")
        start = self.reactor.seconds()
        self.assertEqual(self.advance_to(start + 0.049), b"")
        reply = self.advance_to(start + 0.05)
        self.assertTrue(parses(reply))

    def test_partial_telegram_dropped_after_silence(self) -> None:
        os.write(self.fd, b"\x68\x30\x30\x68")
        self.pump()
        self.reactor.advance(1)
        os.write(self.fd, frames.snd_nke(2))
        self.pump()
        self.reactor.advance(0.05)
        self.assertEqual(self.pump(), frames.ACK)
        self.assertEqual(self.bus.ignored_bytes, 4)


class PacedClockTests(_ClockedPty, TestCase):
    """Paced mode: wire time at the line's baud rate both ways, driven by a fake clock."""

    def paced(self, turnaround: Turnaround = Turnaround(0.05, 0.05), adapter: Adapter | None = None) -> None:
        self.start(turnaround=turnaround, adapter=adapter)

    def test_request_heard_after_its_wire_time(self) -> None:
        """The meters hear a 5-byte SND_NKE when its last character is off the wire (22.9 ms at 2400)."""
        self.paced()
        sent = self.reactor.seconds()
        os.write(self.fd, frames.snd_nke(1))
        self.pump()
        self.assertEqual(self.bus.replies, 0)
        self.advance_to(sent + 5 * CHARACTER - EPS)
        self.assertEqual(self.bus.replies, 0)
        self.advance_to(sent + 5 * CHARACTER + EPS)
        self.assertEqual(self.bus.replies, 1)
        # E5: after the turnaround, one character later.
        self.assertEqual(self.advance_to(sent + 6 * CHARACTER + 0.05 - EPS), b"")
        self.assertEqual(self.advance_to(sent + 6 * CHARACTER + 0.05 + EPS), frames.ACK)

    def test_answer_at_the_line_rate(self) -> None:
        self.paced()
        sent = self.reactor.seconds()
        os.write(self.fd, frames.req_ud2(1))
        self.pump()
        arrivals = self.arrivals(sent + 1.0, CHARACTER / 4)
        reply = b"".join(data for _, data in arrivals)
        self.assertTrue(parses(reply))
        self.assertEqual(len(arrivals), len(reply))  # one character at a time
        last = arrivals[-1][0]
        expected = sent + 5 * CHARACTER + 0.05 + len(reply) * CHARACTER
        self.assertTrue(expected - EPS <= last <= expected + CHARACTER / 4 + EPS, (last, expected))

    def test_two_telegrams_in_one_write(self) -> None:
        """The second request of one write is heard 5 characters after the first."""
        self.paced(Turnaround(0.0, 0.0))
        sent = self.reactor.seconds()
        os.write(self.fd, frames.snd_nke(1) + frames.snd_nke(2))
        self.pump()
        self.advance_to(sent + 5 * CHARACTER + EPS)
        self.assertEqual(self.bus.replies, 1)
        self.advance_to(sent + 10 * CHARACTER - EPS)
        self.assertEqual(self.bus.replies, 1)
        self.advance_to(sent + 10 * CHARACTER + EPS)
        self.assertEqual(self.bus.replies, 2)

    def test_baud_change_changes_the_pace(self) -> None:
        """The gateway sets 300 baud on the pty: a request takes 8 times longer, and so does the answer."""
        self.paced(Turnaround(0.0, 0.0))
        for meter in self.bus.bus.meters:
            meter.baud = 300
        set_baud(self.fd, termios.B300)
        character = BITS_PER_CHARACTER / 300
        sent = self.reactor.seconds()
        os.write(self.fd, frames.snd_nke(1))
        self.pump()
        self.advance_to(sent + 5 * character - EPS)
        self.assertEqual(self.bus.replies, 0)
        self.advance_to(sent + 5 * character + EPS)
        self.assertEqual(self.bus.replies, 1)
        # The shortest turnaround at 300 baud is 11 bit times, then the E5's own character.
        self.assertEqual(self.advance_to(sent + 7 * character - EPS), b"")
        self.assertEqual(self.advance_to(sent + 7 * character + EPS), frames.ACK)

    def test_collision_keeps_wire_time(self) -> None:
        """A wildcard selection all four meters acknowledge: the garbage comes at the line's rate too."""
        self.paced(Turnaround(0.0, 0.0))
        request = frames.select_secondary("FFFFFFFF")
        sent = self.reactor.seconds()
        os.write(self.fd, request)
        self.pump()
        arrivals = self.arrivals(sent + 0.5, CHARACTER / 4)
        heard = b"".join(data for _, data in arrivals)
        self.assertTrue(heard)
        self.assertFalse(parses(heard))
        self.assertEqual(len(arrivals), len(heard))
        first = sent + (len(request) + 2) * CHARACTER
        self.assertTrue(first - EPS <= arrivals[0][0] <= first + CHARACTER / 4 + EPS)

    def test_adapter_delivers_in_chunks(self) -> None:
        """Through an FTDI with a 16 ms latency timer a reply at 2400 baud comes 4 characters a read."""
        self.paced(Turnaround(0.01, 0.01), Adapter(0.016))
        sent = self.reactor.seconds()
        os.write(self.fd, frames.req_ud2(5))
        self.pump()
        arrivals = self.arrivals(sent + 1.0, 0.001)
        reply = b"".join(data for _, data in arrivals)
        self.assertTrue(parses(reply))
        self.assertEqual({len(data) for _, data in arrivals[:-1]}, {4})
        first = sent + 5 * CHARACTER + 0.01 + CHARACTER + 0.016
        self.assertTrue(first - EPS <= arrivals[0][0] <= first + 0.001 + EPS, (arrivals[0][0], first))

    def test_stop_cancels_what_is_on_the_wire(self) -> None:
        self.paced()
        os.write(self.fd, frames.snd_nke(1))
        self.pump()
        self.bus.stop()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class UnplugTests(TestCase):
    def test_link_follows_replug(self) -> None:
        link = self.mktemp()
        os.makedirs(os.path.dirname(os.path.abspath(link)), exist_ok=True)
        bus = SimulatedBus(reactor, MeterBus(default_meters()))
        self.assertEqual(bus.start(link), link)
        self.addCleanup(bus.stop)
        first = os.path.realpath(link)
        bus.unplug()
        self.assertFalse(os.path.lexists(link))
        self.assertEqual(bus.replug(), link)
        self.assertTrue(os.path.exists(link))
        self.assertEqual(os.path.realpath(link), bus.path)
        self.assertTrue(first.startswith("/dev/pts/"))


class PacedBusTests(TestCase):
    def test_realistic_defaults(self) -> None:
        """The gateway's built-in bus: meters answering after 3..50 ms, an adapter in low-latency mode."""
        bus = paced_bus(MemoryReactorClock(), MeterBus(default_meters()), seed=2)
        assert bus.wire is not None
        self.assertEqual(bus.wire.turnaround, Turnaround(0.003, 0.050))
        self.assertEqual(bus.wire.adapter, Adapter(0.001))
