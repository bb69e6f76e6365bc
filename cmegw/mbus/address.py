# -*- test-case-name: tests.test_mbus_frames -*-
"""
M-Bus secondary addresses (EN 13757-3): manufacturer codes, BCD
identification numbers with their wildcards, and `SecondaryAddress`.

Pure functions on bytes and text, like `cmegw.mbus.frames` (which builds
the selection telegrams with them).
"""

from __future__ import annotations

import re

import attrs

SECONDARY_WILDCARD = "FFFFFFFF"
MANUFACTURER_WILDCARD = 0xFFFF

_MANUFACTURER = re.compile(r"[A-Z]{3}\Z")


def encode_manufacturer(letters: str) -> int:
    """
    Three letters A..Z as the 2-byte code (5 bits each, A = 1).
    """
    letters = letters.upper()
    if not _MANUFACTURER.match(letters):
        raise ValueError(f"manufacturer {letters!r} is not three letters A-Z")
    code = 0
    for letter in letters:
        code = (code << 5) | (ord(letter) - 64)
    return code


def decode_manufacturer(code: int | bytes) -> str:
    """
    The three letters of a manufacturer code (an int or 2 bytes LSB first).
    """
    if isinstance(code, (bytes, bytearray)):
        code = int.from_bytes(code[:2], "little")
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


_IDENT = re.compile(r"[0-9]{8}\Z")
_IDENT_PATTERN = re.compile(r"[0-9F]{8}\Z")


def encode_bcd_ident(ident: str | int, wildcards: bool = False) -> bytes:
    """
    An 8-digit identification number as 4 BCD bytes, least significant first.

    With C{wildcards}, C{F} stands for any digit.
    """
    if isinstance(ident, int):
        if not 0 <= ident <= 99999999:
            raise ValueError(f"identification number {ident} has more than 8 digits")
        ident = f"{ident:08d}"
    ident = ident.upper()
    pattern = _IDENT_PATTERN if wildcards else _IDENT
    if not pattern.match(ident):
        allowed = "digits or F" if wildcards else "digits"
        raise ValueError(f"identification {ident!r} is not 8 {allowed}")
    return bytes.fromhex(ident)[::-1]


def decode_bcd_ident(data: bytes) -> str:
    """
    4 BCD bytes, least significant first, as 8 characters (hex nibbles kept).
    """
    return bytes(data[:4])[::-1].hex().upper()


def ident_matches(pattern: str, ident: str) -> bool:
    """
    Whether C{ident} matches C{pattern}, where C{F} matches any digit.
    """
    return len(pattern) == len(ident) and all(
        p == "F" or p == d for p, d in zip(pattern.upper(), ident.upper())
    )


@attrs.frozen
class SecondaryAddress:
    """
    A slave's secondary address: identification number, manufacturer,
    version (generation) and medium.

    C{str()} gives C{"12345678-ELV-01-07"}; L{parse} reads that form and
    libmbus' 16 hex digits C{"1234567896150107"}.
    """

    ident: str = attrs.field(converter=lambda v: f"{v:08d}" if isinstance(v, int) else v.upper())
    manufacturer: str = attrs.field(converter=str.upper)
    version: int = 0
    medium: int = 0

    @ident.validator
    def _check_ident(self, attribute: object, value: str) -> None:
        if not re.match(r"[0-9A-F]{8}\Z", value):
            raise ValueError(f"identification {value!r} is not 8 BCD digits")

    @manufacturer.validator
    def _check_manufacturer(self, attribute: object, value: str) -> None:
        if not re.match(r"[@-_]{3}\Z", value):
            raise ValueError(f"manufacturer {value!r} is not three letters")

    def __str__(self) -> str:
        return f"{self.ident}-{self.manufacturer}-{self.version:02X}-{self.medium:02X}"

    @property
    def manufacturer_code(self) -> int:
        return sum(
            ((ord(letter) - 64) & 0x1F) << shift
            for letter, shift in zip(self.manufacturer, (10, 5, 0))
        )

    @property
    def libmbus(self) -> str:
        """
        libmbus' form: 16 hex digits, the 8 bytes as sent with the
        identification number's digits in reading order.
        """
        return self.ident + self.to_bytes()[4:].hex().upper()

    def to_bytes(self) -> bytes:
        """
        The 8 bytes of a selection or a CI 0x72 header.
        """
        return (
            bytes.fromhex(self.ident)[::-1]
            + self.manufacturer_code.to_bytes(2, "little")
            + bytes((self.version, self.medium))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SecondaryAddress:
        if len(data) < 8:
            raise ValueError(f"a secondary address is 8 bytes, got {len(data)}")
        return cls(
            decode_bcd_ident(data[0:4]),
            decode_manufacturer(data[4:6]),
            data[6],
            data[7],
        )

    @classmethod
    def parse(cls, text: str) -> SecondaryAddress:
        text = text.strip().upper()
        match = re.match(
            r"([0-9A-F]{8})-([A-Z@]{3})-([0-9A-F]{2})-([0-9A-F]{2})\Z", text
        )
        if match:
            ident, manufacturer, version, medium = match.groups()
            return cls(ident, manufacturer, int(version, 16), int(medium, 16))
        if re.match(r"[0-9A-F]{16}\Z", text):
            return cls(
                text[:8],
                decode_manufacturer(bytes.fromhex(text[8:12])),
                int(text[12:14], 16),
                int(text[14:16], 16),
            )
        raise ValueError(
            f"{text!r} is not a secondary address "
            "(12345678-ABC-01-07 or 16 hex digits)"
        )

    def matches(self, ident_pattern: str, manufacturer: int, version: int, medium: int) -> bool:
        """
        Whether a selection (with wildcards) addresses this slave.
        """
        return (
            ident_matches(ident_pattern, self.ident)
            and manufacturer in (MANUFACTURER_WILDCARD, self.manufacturer_code)
            and version in (0xFF, self.version)
            and medium in (0xFF, self.medium)
        )
