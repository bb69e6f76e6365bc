"""
Tests for L{cmegw.mbus.frames}.
"""

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import TestCase

from cmegw.mbus import frames
from cmegw.mbus.address import (
    SecondaryAddress,
    decode_bcd_ident,
    decode_manufacturer,
    encode_bcd_ident,
    encode_manufacturer,
)
from cmegw.mbus.frames import (
    ChecksumError,
    Frame,
    FrameError,
    LengthMismatch,
    StopByteError,
    TrailingBytes,
    TruncatedFrame,
    UnknownStartByte,
)


class BuilderTests(TestCase):
    def test_short_frame(self) -> None:
        self.assertEqual(frames.snd_nke(1), bytes.fromhex("10 40 01 41 16"))
        self.assertEqual(frames.req_ud2(0xFE), bytes.fromhex("10 5B FE 59 16"))
        self.assertEqual(frames.req_ud2(5, fcb=True), bytes.fromhex("10 7B 05 80 16"))
        self.assertEqual(frames.req_ud1(5), bytes.fromhex("10 5A 05 5F 16"))

    def test_control_frame(self) -> None:
        self.assertEqual(
            frames.control_frame(0x53, 0xFD, 0x56), bytes.fromhex("68 03 03 68 53 FD 56 A6 16")
        )

    def test_long_frame(self) -> None:
        frame = frames.long_frame(0x53, 0x01, 0x51, b"\x01\x02")
        self.assertEqual(frame, bytes.fromhex("68 05 05 68 53 01 51 01 02 A8 16"))

    def test_long_frame_too_long(self) -> None:
        frames.long_frame(0x08, 1, 0x72, bytes(252))
        self.assertRaises(ValueError, frames.long_frame, 0x08, 1, 0x72, bytes(253))

    def test_select_secondary(self) -> None:
        # The selection libmbus sends for 12345678, any manufacturer.
        self.assertEqual(
            frames.select_secondary("12345678"),
            bytes.fromhex("68 0B 0B 68 53 FD 52 78 56 34 12 FF FF FF FF B2 16"),
        )
        self.assertEqual(
            frames.select_secondary("1FFFFFFF", "ELV", 0x01, 0x07)[7:15],
            bytes.fromhex("FF FF FF 1F 96 15 01 07"),
        )

    def test_select_secondary_rejects_bad_pattern(self) -> None:
        for pattern in ("1234567", "1234567A", "123456789"):
            self.assertRaises(ValueError, frames.select_secondary, pattern)

    def test_set_baud_rate(self) -> None:
        self.assertEqual(frames.set_baud_rate(1, 9600)[6], 0xBD)
        self.assertRaises(ValueError, frames.set_baud_rate, 1, 1000)


class FrameLengthTests(TestCase):
    def test_complete_telegrams(self) -> None:
        self.assertEqual(frames.frame_length(frames.ACK), 1)
        self.assertEqual(frames.frame_length(frames.snd_nke(1)), 5)
        self.assertEqual(frames.frame_length(frames.control_frame(0x53, 1, 0x50)), 9)
        self.assertEqual(frames.frame_length(frames.long_frame(8, 1, 0x72, bytes(10))), 19)

    def test_first_bytes_are_enough(self) -> None:
        self.assertEqual(frames.frame_length(b"\x10"), 5)
        self.assertEqual(frames.frame_length(b"\x68\x10\x10\x68"), 22)

    def test_needs_more(self) -> None:
        self.assertIsNone(frames.frame_length(b""))
        self.assertIsNone(frames.frame_length(b"\x68"))
        self.assertEqual(frames.frame_length(b"\x68\x10"), 22)
        self.assertEqual(frames.frame_length(b"\x68\x10\x10"), 22)

    def test_garbage(self) -> None:
        self.assertRaises(UnknownStartByte, frames.frame_length, b"\x00")
        self.assertRaises(UnknownStartByte, frames.frame_length, b"\x16\x10")
        self.assertRaises(LengthMismatch, frames.frame_length, b"\x68\x10\x11")
        self.assertRaises(LengthMismatch, frames.frame_length, b"\x68\x10\x10\x69")
        self.assertRaises(LengthMismatch, frames.frame_length, b"\x68\x02\x02\x68")

    def test_split_telegrams(self) -> None:
        stream = b"\x00\x01" + frames.snd_nke(1) + b"\x68\x05\x06" + frames.ACK + b"\x68\x05"
        telegrams, rest, skipped = frames.split_telegrams(stream)
        self.assertEqual(telegrams, [frames.snd_nke(1), frames.ACK])
        self.assertEqual(rest, b"\x68\x05")
        self.assertEqual(skipped, 5)

    def test_split_stream(self) -> None:
        stream = b"\x00\x01" + frames.snd_nke(1) + b"\x68\x05\x06" + frames.ACK + b"\x68\x05"
        segments, waiting = frames.split_stream(stream)
        self.assertEqual([(s.kind, s.data) for s in segments],
                         [(frames.GARBAGE, b"\x00\x01"), (frames.TELEGRAM, frames.snd_nke(1)),
                          (frames.GARBAGE, b"\x68\x05\x06"), (frames.TELEGRAM, frames.ACK)])
        self.assertIn("cannot start a telegram", segments[0].problem)
        self.assertIn("length bytes differ", segments[2].problem)
        self.assertEqual(waiting, 2)

    def test_split_stream_stop_byte(self) -> None:
        """A wrong stop byte makes no telegram, unless only the length is to decide (split_telegrams)."""
        bad = frames.snd_nke(1)[:-1] + b"\x17"
        segments, waiting = frames.split_stream(bad + frames.ACK)
        self.assertEqual([(s.kind, s.data) for s in segments],
                         [(frames.GARBAGE, bad), (frames.TELEGRAM, frames.ACK)])
        self.assertIn("not 0x16", segments[0].problem)
        self.assertEqual(waiting, 0)
        self.assertEqual(frames.split_telegrams(bad + frames.ACK), ([bad, frames.ACK], b"", 0))


class ParseTests(TestCase):
    def test_ack(self) -> None:
        self.assertEqual(frames.parse_frame(b"\xe5"), Frame("ack"))

    def test_short(self) -> None:
        frame = frames.parse_frame(frames.req_ud2(7, fcb=True))
        self.assertEqual(frame, Frame("short", 0x7B, 7))
        self.assertTrue(frame.fcb)
        self.assertEqual(frame.function, 0x4B)
        self.assertEqual(Frame("short", 0xDB, 7).function, 0x4B, "reserved bit 7 is not part of the function")
        self.assertIsNone(Frame("ack").function)

    def test_function_names(self) -> None:
        names = {0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD", 0x5A: "REQ_UD1", 0x7A: "REQ_UD1",
                 0x5B: "REQ_UD2", 0x7B: "REQ_UD2", 0xDB: "REQ_UD2", 0x08: "RSP_UD", 0x18: "RSP_UD",
                 0x28: "RSP_UD", 0x38: "RSP_UD", 0x88: "RSP_UD", 0x00: "ACK", 0x44: "C 0x44", 0x4F: "C 0x4F"}
        self.assertEqual({c: frames.function_name(c) for c in names}, names)
        for c in range(256):
            self.assertEqual(Frame("short", c, 1).function, frames.function_of(c))

    def test_control_and_long(self) -> None:
        self.assertEqual(
            frames.parse_frame(bytes.fromhex("68 03 03 68 53 FD 56 A6 16")),
            Frame("control", 0x53, 0xFD, 0x56, b""),
        )
        raw = frames.long_frame(0x08, 3, 0x72, b"\x01\x02\x03")
        frame = frames.parse_frame(raw)
        self.assertEqual(frame, Frame("long", 0x08, 3, 0x72, b"\x01\x02\x03"))
        self.assertEqual(frame.to_bytes(), raw)

    def test_checksum(self) -> None:
        raw = bytearray(frames.long_frame(0x08, 3, 0x72, bytes(6)))
        raw[-2] = 0x12
        error = self.assertRaises(ChecksumError, frames.parse_frame, bytes(raw))
        self.assertEqual(
            str(error), "checksum 0x12 does not match 0x7D computed over 9 bytes"
        )

    def test_short_checksum(self) -> None:
        self.assertRaises(ChecksumError, frames.parse_frame, bytes.fromhex("10 5B 01 00 16"))

    def test_stop_byte(self) -> None:
        self.assertRaises(StopByteError, frames.parse_frame, bytes.fromhex("10 5B 01 5C 17"))

    def test_truncated(self) -> None:
        raw = frames.long_frame(0x08, 3, 0x72, bytes(6))
        self.assertRaises(TruncatedFrame, frames.parse_frame, raw[:-1])
        self.assertRaises(TruncatedFrame, frames.parse_frame, b"")
        self.assertRaises(TruncatedFrame, frames.parse_frame, b"\x68")

    def test_trailing(self) -> None:
        self.assertRaises(TrailingBytes, frames.parse_frame, frames.ACK + b"\x00")

    def test_errors_are_frame_errors(self) -> None:
        for cls in (ChecksumError, TruncatedFrame, UnknownStartByte, LengthMismatch):
            self.assertTrue(issubclass(cls, FrameError))
        self.assertTrue(issubclass(FrameError, ValueError))


class SecondaryAddressTests(TestCase):
    def test_manufacturer(self) -> None:
        self.assertEqual(encode_manufacturer("ELV"), 0x1596)
        self.assertEqual(decode_manufacturer(0x1596), "ELV")
        self.assertEqual(decode_manufacturer(b"\x2d\x2c"), "KAM")
        self.assertEqual(encode_manufacturer("abb"), 0x0442)
        self.assertRaises(ValueError, encode_manufacturer, "AB")
        self.assertRaises(ValueError, encode_manufacturer, "A1B")

    def test_bcd_ident(self) -> None:
        self.assertEqual(encode_bcd_ident("12345678"), b"\x78\x56\x34\x12")
        self.assertEqual(encode_bcd_ident(1), b"\x01\x00\x00\x00")
        self.assertEqual(decode_bcd_ident(b"\x78\x56\x34\x12"), "12345678")
        self.assertEqual(encode_bcd_ident("1FFFFFFF", wildcards=True), b"\xff\xff\xff\x1f")
        self.assertRaises(ValueError, encode_bcd_ident, "1FFFFFFF")
        self.assertRaises(ValueError, encode_bcd_ident, 123456789)

    def test_str_and_parse(self) -> None:
        address = SecondaryAddress("12345678", "ELV", 1, 7)
        self.assertEqual(str(address), "12345678-ELV-01-07")
        self.assertEqual(address.libmbus, "1234567896150107")
        self.assertEqual(SecondaryAddress.parse("12345678-elv-01-07"), address)
        self.assertEqual(SecondaryAddress.parse("1234567896150107"), address)
        self.assertRaises(ValueError, SecondaryAddress.parse, "12345678-ELV-1-7")

    def test_bytes(self) -> None:
        address = SecondaryAddress(12345678, "ELV", 1, 7)
        raw = address.to_bytes()
        self.assertEqual(raw, bytes.fromhex("78 56 34 12 96 15 01 07"))
        self.assertEqual(SecondaryAddress.from_bytes(raw), address)

    def test_invalid(self) -> None:
        self.assertRaises(ValueError, SecondaryAddress, "1234567", "ELV")
        self.assertRaises(ValueError, SecondaryAddress, "12345678", "EL")

    def test_matches(self) -> None:
        address = SecondaryAddress("12345678", "ELV", 1, 7)
        self.assertTrue(address.matches("FFFFFFFF", 0xFFFF, 0xFF, 0xFF))
        self.assertTrue(address.matches("1234F678", 0x1596, 1, 7))
        self.assertFalse(address.matches("2FFFFFFF", 0xFFFF, 0xFF, 0xFF))
        self.assertFalse(address.matches("FFFFFFFF", 0x1597, 0xFF, 0xFF))
        self.assertFalse(address.matches("FFFFFFFF", 0xFFFF, 2, 0xFF))
        self.assertFalse(address.matches("FFFFFFFF", 0xFFFF, 0xFF, 6))


class PurityTests(TestCase):
    def test_imports_no_twisted(self) -> None:
        """
        The link layer is pure functions on bytes: importing it loads no Twisted.
        """
        code = (
            "import sys, cmegw.mbus.frames; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "[]"), result.stderr)
