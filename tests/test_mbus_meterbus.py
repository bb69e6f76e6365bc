"""
Tests for L{cmegw.mbus.meterbus}: the simulated meters and their bus, pure.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.mbus import frames
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.frames import FrameError
from cmegw.mbus.records import scaled
from cmegw.mbus.meterbus import MeterBus, SimulatedMeter, collide, default_meters


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
