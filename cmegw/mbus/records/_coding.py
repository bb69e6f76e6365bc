# -*- test-case-name: tests.test_mbus_records -*-
"""
The fields both directions share: DIF and VIF codes, the value codings and
their sizes, the function of a value, and the application header.
"""

from __future__ import annotations

import enum

import attrs

from cmegw.mbus import frames
from cmegw.mbus.address import SecondaryAddress


MAX_DIFE = 10
MAX_VIFE = 10
DIF_EXTENSION = 0x80
DIF_MANUFACTURER_DATA = 0x0F
DIF_MORE_RECORDS_FOLLOW = 0x1F
DIF_IDLE_FILLER = 0x2F
VIF_EXTENSION = 0x80
VIF_PLAIN_TEXT = 0x7C
VIF_TABLE_FD = 0xFD
VIF_TABLE_FB = 0xFB


class Function(enum.IntEnum):
    """
    DIF bits 4-5: what the value is.
    """

    INSTANTANEOUS = 0
    MAXIMUM = 1
    MINIMUM = 2
    ERROR = 3


FUNCTION_NAMES = {
    Function.INSTANTANEOUS: "Instantaneous value",
    Function.MAXIMUM: "Maximum value",
    Function.MINIMUM: "Minimum value",
    Function.ERROR: "Value during error state",
}


class Coding(enum.IntEnum):
    """
    DIF bits 0-3: how the value is coded.
    """

    NONE = 0x0
    INT8 = 0x1
    INT16 = 0x2
    INT24 = 0x3
    INT32 = 0x4
    REAL32 = 0x5
    INT48 = 0x6
    INT64 = 0x7
    READOUT = 0x8
    BCD2 = 0x9
    BCD4 = 0xA
    BCD6 = 0xB
    BCD8 = 0xC
    VARIABLE = 0xD
    BCD12 = 0xE
    SPECIAL = 0xF


DATA_SIZE = {
    Coding.NONE: 0,
    Coding.INT8: 1,
    Coding.INT16: 2,
    Coding.INT24: 3,
    Coding.INT32: 4,
    Coding.REAL32: 4,
    Coding.INT48: 6,
    Coding.INT64: 8,
    Coding.READOUT: 0,
    Coding.BCD2: 1,
    Coding.BCD4: 2,
    Coding.BCD6: 3,
    Coding.BCD8: 4,
    Coding.BCD12: 6,
}

INTEGER_CODINGS = frozenset(
    (Coding.INT8, Coding.INT16, Coding.INT24, Coding.INT32, Coding.INT48, Coding.INT64)
)
BCD_CODINGS = frozenset(
    (Coding.BCD2, Coding.BCD4, Coding.BCD6, Coding.BCD8, Coding.BCD12)
)


@attrs.frozen
class Header:
    """
    The application header of a variable data telegram.

    With C{address} it is the long header of CI 0x72 (12 bytes), without it
    the short header of CI 0x7A (4 bytes).
    """

    address: SecondaryAddress | None = None
    access_number: int = 0
    status: int = 0
    signature: int = 0

    @property
    def ci(self) -> int:
        return frames.CI_VARIABLE if self.address else frames.CI_VARIABLE_SHORT

    def encode(self) -> bytes:
        tail = bytes((self.access_number & 0xFF, self.status & 0xFF)) + (
            self.signature & 0xFFFF
        ).to_bytes(2, "little")
        return (self.address.to_bytes() if self.address else b"") + tail
