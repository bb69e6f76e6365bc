# -*- test-case-name: tests.test_mbus_frames -*-
"""
M-Bus link layer (EN 13757-2): build, measure and parse telegrams.

Pure functions on bytes: nothing here knows about Twisted, sockets or the web.

A telegram is one of::

    E5                                  single character (acknowledge)
    10 C A CS 16                        short frame
    68 03 03 68 C A CI CS 16            control frame
    68 L L 68 C A CI data... CS 16      long frame, L = 3 + len(data)

CS is the sum of C, A, CI and data modulo 256.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from cmegw.mbus.address import MANUFACTURER_WILDCARD, encode_bcd_ident, encode_manufacturer

ACK = b"\xe5"

START_SHORT = 0x10
START_LONG = 0x68
STOP = 0x16
ACK_BYTE = 0xE5

SHORT_FRAME_LENGTH = 5
CONTROL_FRAME_LENGTH = 9
LONG_FRAME_OVERHEAD = 6
MAX_DATA_LENGTH = 252
MAX_TELEGRAM_LENGTH = 255 + LONG_FRAME_OVERHEAD

# C field
SND_NKE = 0x40
SND_UD = 0x53
REQ_UD2 = 0x5B
REQ_UD1 = 0x5A
RSP_UD = 0x08
FCB = 0x20
FCV = 0x10
ACD = 0x20
DFC = 0x10
#: The bits of the C field that say what a telegram asks or answers: not FCB/FCV (master),
#: ACD/DFC (slave) or the reserved bit 7.
FUNCTION_MASK = 0x4F
#: The names of the functions (`function_of`) a wired M-Bus carries.
FUNCTION_NAMES = {
    SND_NKE & FUNCTION_MASK: "SND_NKE",
    SND_UD & FUNCTION_MASK: "SND_UD",
    REQ_UD1 & FUNCTION_MASK: "REQ_UD1",
    REQ_UD2 & FUNCTION_MASK: "REQ_UD2",
    RSP_UD & FUNCTION_MASK: "RSP_UD",
    0x00: "ACK",  # a slave's acknowledge as a short frame (the E5 single character says the same)
}

# A field
UNCONFIGURED = 0x00
MAX_PRIMARY = 250
SELECTED = 0xFD
BROADCAST_REPLY = 0xFE
BROADCAST_NOREPLY = 0xFF

# CI field, master to slave
CI_APPLICATION_RESET = 0x50
CI_DATA_SEND = 0x51
CI_SELECTION = 0x52
CI_SYNCHRONIZE = 0x54
CI_DESELECTION = 0x56
CI_BAUD_300 = 0xB8
CI_BAUD_38400 = 0xBF
BAUD_RATES = {
    0xB8: 300,
    0xB9: 600,
    0xBA: 1200,
    0xBB: 2400,
    0xBC: 4800,
    0xBD: 9600,
    0xBE: 19200,
    0xBF: 38400,
}

# CI field, slave to master
CI_APPLICATION_ERROR = 0x70
CI_ALARM = 0x71
CI_VARIABLE = 0x72
CI_FIXED = 0x73
CI_ALARM_SHORT = 0x74
CI_FIXED_MSB = 0x77
CI_VARIABLE_MSB = 0x76
CI_VARIABLE_NO_HEADER = 0x78
CI_VARIABLE_SHORT = 0x7A


class FrameError(ValueError):
    """
    The bytes are not a valid M-Bus telegram.
    """


class UnknownStartByte(FrameError):
    """
    The first byte cannot start a telegram.
    """


class LengthMismatch(FrameError):
    """
    The two length bytes of a long frame differ, or its header is broken.
    """


class TruncatedFrame(FrameError):
    """
    Fewer bytes than the telegram announces.
    """


class TrailingBytes(FrameError):
    """
    More bytes than the telegram announces.
    """


class StopByteError(FrameError):
    """
    The last byte is not 0x16.
    """


class ChecksumError(FrameError):
    """
    The checksum byte does not match the bytes it covers.
    """


def checksum(data: bytes) -> int:
    """
    The M-Bus checksum: arithmetic sum modulo 256.
    """
    return sum(data) & 0xFF


def short_frame(c: int, a: int) -> bytes:
    return bytes((START_SHORT, c, a, (c + a) & 0xFF, STOP))


def long_frame(c: int, a: int, ci: int, data: bytes = b"") -> bytes:
    """
    A long frame; with empty C{data} this is a control frame.
    """
    if len(data) > MAX_DATA_LENGTH:
        raise ValueError(
            f"{len(data)} bytes of user data do not fit a long frame "
            f"(at most {MAX_DATA_LENGTH})"
        )
    body = bytes((c, a, ci)) + bytes(data)
    length = len(body)
    return (
        bytes((START_LONG, length, length, START_LONG))
        + body
        + bytes((checksum(body), STOP))
    )


def control_frame(c: int, a: int, ci: int) -> bytes:
    return long_frame(c, a, ci)


def snd_nke(a: int) -> bytes:
    return short_frame(SND_NKE, a)


def req_ud2(a: int, fcb: bool = False) -> bytes:
    return short_frame(REQ_UD2 | (FCB if fcb else 0), a)


def req_ud1(a: int, fcb: bool = False) -> bytes:
    return short_frame(REQ_UD1 | (FCB if fcb else 0), a)


def snd_ud(a: int, ci: int, data: bytes = b"", fcb: bool = False) -> bytes:
    return long_frame(SND_UD | (FCB if fcb else 0), a, ci, data)


def set_baud_rate(a: int, baud: int) -> bytes:
    """
    SND_UD asking the slave at C{a} to switch to C{baud} (CI 0xB8..0xBF).
    """
    for ci, rate in BAUD_RATES.items():
        if rate == baud:
            return control_frame(SND_UD, a, ci)
    raise ValueError(f"M-Bus has no baud rate {baud}; use one of {sorted(BAUD_RATES.values())}")


def select_secondary(
    ident_bcd_pattern: str,
    manufacturer: int | str = MANUFACTURER_WILDCARD,
    version: int = 0xFF,
    medium: int = 0xFF,
) -> bytes:
    """
    SND_UD to 253 with CI 0x52: select the slave(s) matching the pattern.

    @param ident_bcd_pattern: 8 characters, each a digit or C{F} (wildcard).
    @param manufacturer: 0xFFFF (wildcard), a code, or three letters.
    """
    if isinstance(manufacturer, str):
        manufacturer = encode_manufacturer(manufacturer)
    return snd_ud(
        SELECTED,
        CI_SELECTION,
        selection_data(ident_bcd_pattern, manufacturer, version, medium),
    )


def selection_data(
    ident_bcd_pattern: str, manufacturer: int, version: int, medium: int
) -> bytes:
    if not 0 <= manufacturer <= 0xFFFF:
        raise ValueError(f"manufacturer code {manufacturer:#x} is not 2 bytes")
    for name, value in (("version", version), ("medium", medium)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} {value} is not one byte")
    return (
        encode_bcd_ident(ident_bcd_pattern, wildcards=True)
        + manufacturer.to_bytes(2, "little")
        + bytes((version, medium))
    )


def function_of(c: int) -> int:
    """
    What the C field C{c} asks or answers: C{c} without FCB/FCV, ACD/DFC and
    the reserved bit 7.
    """
    return c & FUNCTION_MASK


def function_name(c: int) -> str:
    """
    The name of the C field C{c}'s function (C{"REQ_UD2"} for 0x5B, 0x7B or
    0xDB); C{"C 0x44"} for a function the wired M-Bus has not.
    """
    return FUNCTION_NAMES.get(function_of(c), f"C 0x{c:02X}")


def frame_length(buf: bytes) -> int | None:
    """
    How many bytes the telegram starting at C{buf[0]} occupies.

    @return: 1, 5, 9 or L+6; C{None} when more bytes are needed to tell.
    @raise FrameError: C{buf[0]} cannot start a telegram, or the long-frame
        header (68 L L 68) is broken.
    """
    if not buf:
        return None
    first = buf[0]
    if first == ACK_BYTE:
        return 1
    if first == START_SHORT:
        return SHORT_FRAME_LENGTH
    if first != START_LONG:
        raise UnknownStartByte(
            f"byte 0x{first:02X} cannot start a telegram (expected E5, 10 or 68)"
        )
    size = len(buf)
    if size < 2:
        return None
    length = buf[1]
    if length < 3:
        raise LengthMismatch(
            f"long frame length {length} is below the minimum 3 (C, A, CI)"
        )
    if size >= 3 and buf[2] != length:
        raise LengthMismatch(
            f"long frame length bytes differ: 0x{length:02X} and 0x{buf[2]:02X}"
        )
    if size >= 4 and buf[3] != START_LONG:
        raise LengthMismatch(
            f"long frame header byte 4 is 0x{buf[3]:02X}, expected 0x68"
        )
    return length + LONG_FRAME_OVERHEAD


@attrs.frozen
class Frame:
    """
    One parsed telegram.

    @ivar kind: C{"ack"}, C{"short"}, C{"control"} or C{"long"}.
    @ivar c: C field (None for an acknowledge).
    @ivar a: A field (None for an acknowledge).
    @ivar ci: CI field (None for an acknowledge or a short frame).
    @ivar data: user data after CI (empty unless C{kind} is C{"long"}).
    """

    kind: str
    c: int | None = None
    a: int | None = None
    ci: int | None = None
    data: bytes = b""

    def to_bytes(self) -> bytes:
        if self.kind == "ack":
            return ACK
        assert self.c is not None and self.a is not None
        if self.kind == "short":
            return short_frame(self.c, self.a)
        assert self.ci is not None
        return long_frame(self.c, self.a, self.ci, self.data)

    @property
    def fcb(self) -> bool:
        return self.c is not None and bool(self.c & FCB)

    @property
    def function(self) -> int | None:
        """
        The C field without its FCB/FCV (master) or ACD/DFC (slave) bits
        and the reserved bit 7: what the telegram asks or answers.
        """
        return None if self.c is None else function_of(self.c)


def parse_frame(buf: bytes) -> Frame:
    """
    Parse exactly one telegram.

    @raise FrameError: with a message a field engineer can act on.
    """
    buf = bytes(buf)
    needed = frame_length(buf)
    if needed is None:
        raise TruncatedFrame("empty input: no telegram")
    if len(buf) < needed:
        raise TruncatedFrame(
            f"telegram is {len(buf)} bytes, its header announces {needed}"
        )
    if len(buf) > needed:
        raise TrailingBytes(
            f"{len(buf) - needed} bytes follow the end of a {needed}-byte telegram"
        )
    if needed == 1:
        return Frame("ack")
    if buf[-1] != STOP:
        raise StopByteError(f"stop byte is 0x{buf[-1]:02X}, expected 0x16")
    if buf[0] == START_SHORT:
        body = buf[1:3]
    else:
        body = buf[4:-2]
    computed = checksum(body)
    if buf[-2] != computed:
        raise ChecksumError(
            f"checksum 0x{buf[-2]:02X} does not match 0x{computed:02X} "
            f"computed over {len(body)} bytes"
        )
    if buf[0] == START_SHORT:
        return Frame("short", body[0], body[1])
    kind = "control" if len(body) == 3 else "long"
    return Frame(kind, body[0], body[1], body[2], bytes(body[3:]))


TELEGRAM = "telegram"
GARBAGE = "garbage"


class Segment(NamedTuple):
    """
    A run of a byte stream: a telegram (C{kind} L{TELEGRAM}) or bytes no
    telegram starts with (L{GARBAGE}, C{problem} saying why its first byte
    starts none).
    """

    kind: str
    data: bytes
    problem: str = ""


def _next_start(buf: bytes, pos: int) -> int:
    """
    Where the next byte that can start a telegram is, at or after C{pos}
    (C{len(buf)} when there is none).
    """
    found = [
        i
        for i in (buf.find(b"\x10", pos), buf.find(b"\x68", pos), buf.find(b"\xe5", pos))
        if i >= 0
    ]
    return min(found) if found else len(buf)


def split_stream(buf: bytes, check_stop: bool = True) -> tuple[list[Segment], int]:
    """
    Cut a byte stream into telegrams and garbage by the telegrams' announced
    lengths.  Checksums are not checked here.

    With C{check_stop}, a telegram whose last byte is not 0x16 is no
    telegram: its first byte is garbage and the search goes on from the next
    byte that can start one.  Without it the announced length alone decides
    (L{parse_frame} then finds the bad stop byte).

    @return: the segments, and how many bytes at the end wait for more.
    """
    out: list[Segment] = []
    pos = 0
    end = len(buf)
    garbage_from = -1
    problem = ""
    while pos < end:
        try:
            size = frame_length(buf[pos : pos + 4])
            if (
                check_stop
                and size is not None
                and size > 1
                and pos + size <= end
                and buf[pos + size - 1] != STOP
            ):
                raise StopByteError(
                    f"a {size}-byte telegram would end with 0x{buf[pos + size - 1]:02X}, not 0x16"
                )
        except FrameError as e:
            if garbage_from < 0:
                garbage_from, problem = pos, str(e)
            pos = _next_start(buf, pos + 1)
            continue
        if size is None or pos + size > end:
            break
        if garbage_from >= 0:
            out.append(Segment(GARBAGE, bytes(buf[garbage_from:pos]), problem))
            garbage_from = -1
        out.append(Segment(TELEGRAM, bytes(buf[pos : pos + size])))
        pos += size
    if garbage_from >= 0:
        out.append(Segment(GARBAGE, bytes(buf[garbage_from:pos]), problem))
    return out, end - pos


def split_telegrams(buf: bytes) -> tuple[list[bytes], bytes, int]:
    """
    Cut a byte stream into telegrams by their announced lengths
    (L{split_stream} without the stop byte check); garbage is skipped.

    @return: (complete telegrams, the incomplete rest, bytes skipped)
    """
    segments, waiting = split_stream(buf, check_stop=False)
    telegrams = [s.data for s in segments if s.kind == TELEGRAM]
    skipped = sum(len(s.data) for s in segments if s.kind == GARBAGE)
    return telegrams, bytes(buf[len(buf) - waiting :]), skipped
