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
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.frames import FrameError
from cmegw.mbus.records import scaled
from cmegw.mbus.meterbus import BITS_PER_CHARACTER, MeterBus, SimulatedMeter, collide, default_meters
from cmegw.mbus.simulator import SimulatedBus


def contains_telegram(heard: bytes) -> bool:
    """
    Whether any stretch of C{heard} is a valid telegram.

    Tries every slice with L{frames.parse_frame} alone, so it does not share
    the simulator's way of finding telegrams (its start bytes and lengths).
    """
    return any(
        parses(heard[start:end])
        for start in range(len(heard))
        for end in range(start + 1, min(len(heard), start + frames.MAX_TELEGRAM_LENGTH) + 1)
    )


def parses(reply: bytes | None) -> bool:
    try:
        frames.parse_frame(reply or b"")
    except FrameError:
        return False
    return True


class DefaultMetersTests(TestCase):
    def test_distinct_addresses(self) -> None:
        meters = default_meters()
        self.assertEqual([meter.primary for meter in meters], [1, 2, 5, 10])
        self.assertEqual(len({meter.address.ident for meter in meters}), 4)
        self.assertEqual(len({meter.address.manufacturer for meter in meters}), 4)

    def test_reply_sizes(self) -> None:
        bus = MeterBus(default_meters())
        for meter in bus.meters:
            reply = bus.handle(frames.req_ud2(meter.primary))
            assert reply is not None
            self.assertTrue(60 <= len(reply) <= 120, (meter.primary, len(reply)))
            frame = frames.parse_frame(reply)
            self.assertEqual((frame.kind, frame.c, frame.a, frame.ci), ("long", 0x08, meter.primary, 0x72))
            self.assertEqual(SecondaryAddress.from_bytes(frame.data), meter.address)


class MeterBusTests(TestCase):
    def setUp(self) -> None:
        self.bus = MeterBus(default_meters())

    def test_link_reset(self) -> None:
        self.assertEqual(self.bus.handle(frames.snd_nke(1)), frames.ACK)
        self.assertIsNone(self.bus.handle(frames.snd_nke(3)))
        self.assertIsNone(self.bus.handle(frames.snd_nke(0xFF)))

    def test_primary_read(self) -> None:
        reply = self.bus.handle(frames.req_ud2(5))
        frame = frames.parse_frame(reply or b"")
        self.assertEqual(frame.data[:4], b"\x60\x50\x40\x30")

    def test_absent_and_broadcast(self) -> None:
        self.assertIsNone(self.bus.handle(frames.req_ud2(3)))
        self.assertIsNone(self.bus.handle(frames.req_ud2(0xFF)))

    def test_bad_checksum_ignored(self) -> None:
        request = bytearray(frames.req_ud2(1))
        request[3] ^= 1
        self.assertIsNone(self.bus.handle(bytes(request)))
        selection = bytearray(frames.select_secondary("12345678"))
        selection[-2] ^= 1
        self.assertIsNone(self.bus.handle(bytes(selection)))

    def test_invalid_structure_ignored(self) -> None:
        self.assertIsNone(self.bus.handle(b"\x00\x01"))
        self.assertIsNone(self.bus.handle(frames.req_ud2(1)[:-1]))
        self.assertIsNone(self.bus.handle(frames.ACK))

    def test_broadcast_reply_collides(self) -> None:
        reply = self.bus.handle(frames.req_ud2(0xFE))
        self.assertTrue(reply)
        self.assertFalse(parses(reply))

    def test_broadcast_reply_single_meter(self) -> None:
        bus = MeterBus(default_meters()[:1])
        self.assertTrue(parses(bus.handle(frames.req_ud2(0xFE))))

    def test_access_number_and_fcb(self) -> None:
        first = frames.parse_frame(self.bus.handle(frames.req_ud2(1)) or b"")
        again = frames.parse_frame(self.bus.handle(frames.req_ud2(1)) or b"")
        toggled = frames.parse_frame(self.bus.handle(frames.req_ud2(1, fcb=True)) or b"")
        # Same FCB: the master lost the answer, it is sent again.
        self.assertEqual(again, first)
        self.assertEqual(toggled.data[8], (first.data[8] + 1) & 0xFF)

    def test_multi_telegram(self) -> None:
        self.bus.handle(frames.snd_nke(10))
        first = frames.parse_frame(self.bus.handle(frames.req_ud2(10, fcb=True)) or b"")
        second = frames.parse_frame(self.bus.handle(frames.req_ud2(10, fcb=False)) or b"")
        third = frames.parse_frame(self.bus.handle(frames.req_ud2(10, fcb=True)) or b"")
        self.assertEqual(first.data[-1], 0x1F)
        self.assertNotEqual(second.data[-1], 0x1F)
        self.assertEqual(third.data[12:], first.data[12:])

    def test_select_and_read(self) -> None:
        self.assertEqual(self.bus.handle(frames.select_secondary("22110033")), frames.ACK)
        frame = frames.parse_frame(self.bus.handle(frames.req_ud2(0xFD)) or b"")
        self.assertEqual(frame.a, 2)
        self.assertEqual(str(SecondaryAddress.from_bytes(frame.data)), "22110033-SEN-66-16")

    def test_select_by_manufacturer_version_medium(self) -> None:
        self.assertEqual(
            self.bus.handle(frames.select_secondary("FFFFFFFF", "ABB", 0xFF, 0xFF)), frames.ACK
        )
        self.assertEqual(
            self.bus.handle(frames.select_secondary("FFFFFFFF", 0xFFFF, 0x08, 0xFF)), frames.ACK
        )
        self.assertEqual(
            self.bus.handle(frames.select_secondary("FFFFFFFF", 0xFFFF, 0xFF, 0x16)), frames.ACK
        )
        self.assertIsNone(self.bus.handle(frames.select_secondary("FFFFFFFF", "XYZ")))

    def test_non_matching_selection_deselects(self) -> None:
        self.bus.handle(frames.select_secondary("12345678"))
        self.assertIsNone(self.bus.handle(frames.select_secondary("99999999")))
        self.assertIsNone(self.bus.handle(frames.req_ud2(0xFD)))

    def test_deselection(self) -> None:
        self.bus.handle(frames.select_secondary("12345678"))
        self.assertEqual(
            self.bus.handle(frames.control_frame(frames.SND_UD, 0xFD, frames.CI_DESELECTION)),
            frames.ACK,
        )
        self.assertIsNone(self.bus.handle(frames.req_ud2(0xFD)))

    def test_snd_nke_253_deselects(self) -> None:
        self.bus.handle(frames.select_secondary("12345678"))
        self.assertEqual(self.bus.handle(frames.snd_nke(0xFD)), frames.ACK)
        self.assertIsNone(self.bus.handle(frames.req_ud2(0xFD)))

    def test_wildcard_collision(self) -> None:
        reply = self.bus.handle(frames.select_secondary("FFFFFFFF"))
        self.assertTrue(reply)
        self.assertNotEqual(reply, frames.ACK)
        self.assertNotEqual(reply, frames.ACK * 4)
        self.assertFalse(parses(reply))
        # Every meter is selected; reading them collides too.
        self.assertFalse(parses(self.bus.handle(frames.req_ud2(0xFD))))

    def test_secondary_search(self) -> None:
        """
        The usual search (fix one digit at a time, go deeper on a collision)
        finds every meter.
        """
        meters = default_meters() + [
            SimulatedMeter(20, SecondaryAddress("12345679", "KAM", 1, 4), [[scaled("energy", 1, 3)]]),
            SimulatedMeter(21, SecondaryAddress("12345677", "KAM", 1, 4), [[scaled("energy", 2, 3)]]),
        ]
        bus = MeterBus(meters)
        found = []
        prefixes = [""]
        for _ in range(200):
            if not prefixes:
                break
            prefix = prefixes.pop()
            for digit in "0123456789":
                pattern = (prefix + digit).ljust(8, "F")
                reply = bus.handle(frames.select_secondary(pattern))
                if reply is None:
                    continue
                if reply == frames.ACK:
                    read = frames.parse_frame(bus.handle(frames.req_ud2(0xFD)) or b"")
                    found.append(str(SecondaryAddress.from_bytes(read.data)))
                else:
                    self.assertLess(len(prefix) + 1, 8)
                    prefixes.append(prefix + digit)
        self.assertEqual(prefixes, [])
        self.assertEqual(
            sorted(found),
            sorted(str(meter.address) for meter in meters),
        )

    def test_baud_change(self) -> None:
        changes: list[int] = []
        bus = MeterBus(default_meters(), on_baud_change=changes.append)
        self.assertEqual(bus.handle(frames.set_baud_rate(1, 9600)), frames.ACK)
        self.assertEqual(bus.meters[0].baud, 9600)
        self.assertEqual(changes, [9600])
        self.assertIsNone(bus.handle(frames.set_baud_rate(0xFF, 300)))
        self.assertEqual({meter.baud for meter in bus.meters}, {300})

    def test_meters_hear_only_their_baud_rate(self) -> None:
        self.bus.meters[0].baud = 300
        self.assertIsNone(self.bus.handle(frames.snd_nke(1), baud=2400))
        self.assertEqual(self.bus.handle(frames.snd_nke(1), baud=300), frames.ACK)
        self.assertEqual(self.bus.handle(frames.snd_nke(2), baud=2400), frames.ACK)
        self.assertIsNone(self.bus.handle(frames.snd_nke(2), baud=9600))

    def test_req_ud1(self) -> None:
        self.assertEqual(self.bus.handle(frames.req_ud1(2)), frames.ACK)


class CollideTests(TestCase):
    def test_two_acks(self) -> None:
        heard = collide([frames.ACK, frames.ACK])
        self.assertTrue(heard)
        self.assertFalse(contains_telegram(heard))

    def test_never_clean(self) -> None:
        bus = MeterBus(default_meters())
        replies = [bus.handle(frames.req_ud2(meter.primary)) or b"" for meter in bus.meters]
        for count in range(2, 5):
            self.assertFalse(contains_telegram(collide(replies[:count])))
            self.assertFalse(contains_telegram(collide([replies[0]] * count)))
            self.assertFalse(contains_telegram(collide([frames.ACK] * count)))

    def test_ack_and_long_frame(self) -> None:
        self.assertFalse(contains_telegram(collide([frames.ACK, frames.req_ud2(1)])))

    def test_surviving_telegram_spoiled(self) -> None:
        """
        These three answers AND together into bytes that hold a clean E5
        (81 E5 00 7B 9A FF); what the master hears must not.
        """
        replies = [bytes.fromhex("A9"), bytes.fromhex("D03D08"), bytes.fromhex("5E2F5E6F73")]
        heard = collide(replies)
        self.assertEqual(len(heard), 6)
        self.assertFalse(contains_telegram(heard))

    def test_oracle_finds_a_telegram_anywhere(self) -> None:
        self.assertTrue(contains_telegram(b"\x00\x13" + frames.req_ud2(1) + b"\x42"))
        self.assertTrue(contains_telegram(b"\x81" + frames.ACK + b"\x00"))
        self.assertFalse(contains_telegram(b"\x00\x13" + frames.req_ud2(1)[:-1]))


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
    def test_bit_timing(self):
        bus, fd = self.start(bit_timing=True)
        for meter in bus.bus.meters:
            meter.baud = 38400
        set_baud(fd, termios.B38400)
        self.assertEqual(bus.baud, 38400)
        os.write(fd, frames.req_ud2(2))
        reply = yield self.read_telegram(fd)
        self.assertTrue(parses(reply))

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


class SimulatedBusClockTests(TestCase):
    """
    Timing of answers, driven by a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.bus = SimulatedBus(self.reactor, MeterBus(default_meters()), reply_delay=0.05, bit_timing=True)
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

    def test_reply_delay_and_pace(self) -> None:
        os.write(self.fd, frames.snd_nke(1) + frames.req_ud2(1))
        self.assertEqual(self.pump(), b"")
        self.reactor.advance(0.049)
        self.assertEqual(self.pump(), b"")
        self.reactor.advance(0.001)
        self.assertEqual(self.pump(), frames.ACK)
        character = BITS_PER_CHARACTER / 2400
        received = b""
        for _ in range(200):
            self.reactor.advance(character)
            received += self.pump()
            if frames.frame_length(received) == len(received):
                break
        self.assertTrue(parses(received))
        # The reply took one character time per byte after the E5.
        expected = 0.05 + character * len(received)
        self.assertTrue(abs(self.reactor.seconds() - expected) <= 1.5 * character)

    def test_partial_telegram_dropped_after_silence(self) -> None:
        os.write(self.fd, b"\x68\x30\x30\x68")
        self.pump()
        self.reactor.advance(1)
        os.write(self.fd, frames.snd_nke(2))
        self.pump()
        self.reactor.advance(0.05)
        self.assertEqual(self.pump(), frames.ACK)
        self.assertEqual(self.bus.ignored_bytes, 4)


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
