# -*- test-case-name: tests.test_mbus_records -*-
"""
EN 13757-3 variable data structure: encode and decode data records.

A record is DIF [DIFE...] VIF [VIFE...] data.  The encoder builds the user
data of an RSP_UD for the simulator; the decoder reads what real meters send.
"""

from __future__ import annotations

import datetime
import enum
import struct
from collections.abc import Iterable

import attrs

from cmegw.mbus import frames
from cmegw.mbus.frames import SecondaryAddress

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


class EncodeError(ValueError):
    """
    A value cannot be coded as asked.
    """


# Encoder ------------------------------------------------------------------


def encode_dif(
    coding: Coding,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
    function: Function = Function.INSTANTANEOUS,
) -> bytes:
    """
    DIF and as many DIFEs as storage number, tariff and subunit need.
    """
    if storage < 0 or tariff < 0 or subunit < 0:
        raise EncodeError("storage number, tariff and subunit cannot be negative")
    dif = int(coding) | (int(function) << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes = []
    while storage or tariff or subunit:
        if len(difes) == MAX_DIFE:
            raise EncodeError(f"storage, tariff or subunit need more than {MAX_DIFE} DIFEs")
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage >>= 4
        tariff >>= 2
        subunit >>= 1
    if difes:
        dif |= DIF_EXTENSION
        for i in range(len(difes) - 1):
            difes[i] |= DIF_EXTENSION
    return bytes([dif, *difes])


def _encode_int(value: int, size: int) -> bytes:
    bits = size * 8
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise EncodeError(f"{value} does not fit {size} bytes")
    return (value & ((1 << bits) - 1)).to_bytes(size, "little")


def _encode_bcd(value: int, size: int) -> bytes:
    digits = size * 2
    if value < 0:
        text = f"{-value:0{digits - 1}d}"
        if len(text) > digits - 1:
            raise EncodeError(f"{value} does not fit {digits} BCD digits with a sign")
        text = "F" + text
    else:
        text = f"{value:0{digits}d}"
        if len(text) > digits:
            raise EncodeError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


def encode_date(value: datetime.date) -> bytes:
    """
    Type G: 2 bytes.
    """
    year = value.year % 100
    return bytes(
        (value.day | ((year & 0x07) << 5), value.month | ((year & 0x78) << 1))
    )


def encode_datetime(value: datetime.datetime) -> bytes:
    """
    Type F: 4 bytes, minute resolution.
    """
    year = value.year % 100
    return bytes(
        (
            value.minute,
            value.hour,
            value.day | ((year & 0x07) << 5),
            value.month | ((year & 0x78) << 1),
        )
    )


def encode_datetime_seconds(value: datetime.datetime) -> bytes:
    """
    Type I: 6 bytes, second resolution.
    """
    year = value.year % 100
    return bytes(
        (
            value.second,
            value.minute,
            value.hour,
            value.day | ((year & 0x07) << 5),
            value.month | ((year & 0x78) << 1),
            (value.isoweekday() << 5) & 0xE0,
        )
    )


def encode_value(coding: Coding, value: object) -> bytes:
    """
    The data bytes of one record (for VARIABLE, with its LVAR byte).
    """
    if coding in (Coding.NONE, Coding.READOUT):
        if value is not None:
            raise EncodeError(f"coding {coding.name} carries no value")
        return b""
    if coding is Coding.SPECIAL:
        raise EncodeError("DIF 0x0F/0x1F is not a record; see encode_user_data")
    if isinstance(value, datetime.datetime):
        if coding is Coding.INT32:
            return encode_datetime(value)
        if coding is Coding.INT48:
            return encode_datetime_seconds(value)
        raise EncodeError("a date and time is coded INT32 (type F) or INT48 (type I)")
    if isinstance(value, datetime.date):
        if coding is Coding.INT16:
            return encode_date(value)
        raise EncodeError("a date is coded INT16 (type G)")
    if coding is Coding.REAL32:
        if not isinstance(value, (int, float)):
            raise EncodeError(f"REAL32 needs a number, not {value!r}")
        return struct.pack("<f", value)
    if coding is Coding.VARIABLE:
        if isinstance(value, str):
            raw = value.encode("latin-1")
            if len(raw) > 0xBF:
                raise EncodeError("text longer than 191 characters")
            return bytes((len(raw),)) + raw[::-1]
        if isinstance(value, (bytes, bytearray)):
            if len(value) > 0x0F:
                raise EncodeError("binary variable data longer than 15 bytes")
            return bytes((0xE0 + len(value),)) + bytes(value)
        raise EncodeError(f"variable length data needs str or bytes, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodeError(f"coding {coding.name} needs a number, not {value!r}")
    number = round(value)
    size = DATA_SIZE[coding]
    if coding in INTEGER_CODINGS:
        return _encode_int(number, size)
    return _encode_bcd(number, size)


@attrs.frozen
class RecordSpec:
    """
    One record to send: VIF bytes (with VIFEs) and a raw value.

    C{value} is the number as coded (already divided by the VIF's scale), a
    C{date} or C{datetime} for time points, C{str} or C{bytes} for
    variable-length data.
    """

    vif: bytes
    value: object
    coding: Coding = Coding.INT32
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: Function = Function.INSTANTANEOUS

    def encode(self) -> bytes:
        return (
            encode_dif(self.coding, self.storage, self.tariff, self.subunit, self.function)
            + self.vif
            + encode_value(self.coding, self.value)
        )


# Primary VIFs with a decimal exponent: VIF base, exponent of nnn = 0, count.
SCALED_QUANTITIES: dict[str, tuple[bytes, int, int]] = {
    "energy": (b"\x00", -3, 8),  # Wh
    "energy_j": (b"\x08", 0, 8),  # J
    "volume": (b"\x10", -6, 8),  # m^3
    "mass": (b"\x18", -3, 8),  # kg
    "power": (b"\x28", -3, 8),  # W
    "power_jh": (b"\x30", 0, 8),  # J/h
    "volume_flow": (b"\x38", -6, 8),  # m^3/h
    "volume_flow_min": (b"\x40", -7, 8),  # m^3/min
    "volume_flow_s": (b"\x48", -9, 8),  # m^3/s
    "mass_flow": (b"\x50", -3, 8),  # kg/h
    "flow_temperature": (b"\x58", -3, 4),  # °C
    "return_temperature": (b"\x5c", -3, 4),  # °C
    "temperature_difference": (b"\x60", -3, 4),  # K
    "external_temperature": (b"\x64", -3, 4),  # °C
    "pressure": (b"\x68", -3, 4),  # bar
    "voltage": (b"\xfd\x40", -9, 16),  # V
    "current": (b"\xfd\x50", -12, 16),  # A
}

DURATION_UNITS = {"s": 0, "min": 1, "h": 2, "d": 3}
DURATION_VIFS = {
    "on_time": 0x20,
    "operating_time": 0x24,
    "averaging_duration": 0x70,
    "actuality_duration": 0x74,
}


def scaled(
    quantity: str,
    value: float,
    exponent: int,
    coding: Coding = Coding.INT32,
    **where: int,
) -> RecordSpec:
    """
    A record for a quantity in base units (Wh, m^3, W, °C, K, bar, V, A).

    C{scaled("energy", 1234567.0, 3)} codes 1234 with VIF 0x06 (kWh).
    C{where} takes storage, tariff, subunit and function.
    """
    vif, lowest, count = SCALED_QUANTITIES[quantity]
    if not lowest <= exponent < lowest + count:
        raise EncodeError(
            f"{quantity} exponent {exponent} is outside {lowest}..{lowest + count - 1}"
        )
    raw: float = value / 10.0**exponent
    if coding is not Coding.REAL32:
        raw = round(raw)
    coded_vif = vif[:-1] + bytes((vif[-1] + exponent - lowest,))
    return RecordSpec(coded_vif, raw, coding, **where)


def duration(
    kind: str, value: int, unit: str = "s", coding: Coding = Coding.INT32, **where: int
) -> RecordSpec:
    """
    On time, operating time, averaging or actuality duration in s/min/h/d.
    """
    return RecordSpec(
        bytes((DURATION_VIFS[kind] | DURATION_UNITS[unit],)), value, coding, **where
    )


def date_point(value: datetime.date, **where: int) -> RecordSpec:
    return RecordSpec(b"\x6c", value, Coding.INT16, **where)


def datetime_point(value: datetime.datetime, **where: int) -> RecordSpec:
    return RecordSpec(b"\x6d", value, Coding.INT32, **where)


def fabrication_number(value: int, coding: Coding = Coding.BCD8) -> RecordSpec:
    return RecordSpec(b"\x78", value, coding)


def error_flags(value: int, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x17", value, coding)


def firmware_version(value: int, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x0e", value, coding)


def model_version(value: int | str, coding: Coding = Coding.INT8) -> RecordSpec:
    return RecordSpec(b"\xfd\x0c", value, coding)


def plain_text_unit(unit: str, value: object, coding: Coding = Coding.INT32, **where: int) -> RecordSpec:
    """
    A record whose unit is given as text (VIF 0x7C).
    """
    raw = unit.encode("ascii")
    return RecordSpec(bytes((VIF_PLAIN_TEXT, len(raw))) + raw[::-1], value, coding, **where)


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


def encode_user_data(
    header: Header | None,
    records: Iterable[RecordSpec | bytes],
    more_follows: bool = False,
    manufacturer_data: bytes = b"",
) -> bytes:
    """
    User data after the CI field: header, records, then DIF 0x1F (more
    telegrams follow) or 0x0F (manufacturer data) and their bytes.
    """
    parts = [header.encode() if header else b""]
    for record in records:
        parts.append(record if isinstance(record, bytes) else record.encode())
    if more_follows:
        parts.append(bytes((DIF_MORE_RECORDS_FOLLOW,)) + manufacturer_data)
    elif manufacturer_data:
        parts.append(bytes((DIF_MANUFACTURER_DATA,)) + manufacturer_data)
    return b"".join(parts)


def rsp_ud(
    a: int,
    header: Header,
    records: Iterable[RecordSpec | bytes],
    more_follows: bool = False,
    manufacturer_data: bytes = b"",
    c: int = frames.RSP_UD,
) -> bytes:
    """
    A complete RSP_UD long frame (CI 0x72 or 0x7A from the header).
    """
    return frames.long_frame(
        c, a, header.ci, encode_user_data(header, records, more_follows, manufacturer_data)
    )


# Decoder ------------------------------------------------------------------


class DecodeError(ValueError):
    """
    The user data is not a telegram we can decode.
    """


class TruncatedData(DecodeError):
    """
    The data ends inside a header or a record.
    """


class TooManyExtensions(DecodeError):
    """
    More than 10 DIFEs or VIFEs in one record.
    """


class UnsupportedTelegram(DecodeError):
    """
    A CI field, data coding or encryption this decoder does not handle.
    """


class ApplicationError(DecodeError):
    """
    The slave answered with an application error (CI 0x70).
    """

    def __init__(self, code: int | None) -> None:
        self.code = code
        meaning = APPLICATION_ERRORS.get(code, "reserved error code") if code is not None else "unspecified error"
        number = "" if code is None else f" {code}"
        super().__init__(f"the meter reports application error{number}: {meaning}")


APPLICATION_ERRORS = {
    0: "unspecified error",
    1: "unimplemented CI field",
    2: "buffer too long, truncated",
    3: "too many records",
    4: "premature end of record",
    5: "more than 10 DIFEs",
    6: "more than 10 VIFEs",
    7: "reserved",
    8: "application too busy for handling readout request",
    9: "too many readouts (for slaves with limited readouts per time)",
}

MEDIUM_NAMES = {
    0x00: "Other",
    0x01: "Oil",
    0x02: "Electricity",
    0x03: "Gas",
    0x04: "Heat: Outlet",
    0x05: "Steam",
    0x06: "Warm water (30-90°C)",
    0x07: "Water",
    0x08: "Heat Cost Allocator",
    0x09: "Compressed Air",
    0x0A: "Cooling load meter: Outlet",
    0x0B: "Cooling load meter: Inlet",
    0x0C: "Heat: Inlet",
    0x0D: "Heat / Cooling load meter",
    0x0E: "Bus / System",
    0x0F: "Unknown Medium",
    0x14: "Calorific value",
    0x15: "Hot water (>=90°C)",
    0x16: "Cold water",
    0x17: "Dual water",
    0x18: "Pressure",
    0x19: "A/D Converter",
    0x1A: "Smoke detector",
    0x1B: "Room sensor",
    0x1C: "Gas detector",
    0x20: "Breaker (electricity)",
    0x21: "Valve (gas or water)",
    0x25: "Customer unit (display)",
    0x28: "Waste water",
    0x29: "Garbage",
    0x2A: "Carbon dioxide",
    0x31: "Communication controller",
    0x32: "Unidirectional repeater",
    0x33: "Bidirectional repeater",
    0x36: "Radio converter (system side)",
    0x37: "Radio converter (meter side)",
}


def medium_name(medium: int) -> str:
    return MEDIUM_NAMES.get(medium, f"Reserved (0x{medium:02X})")


@attrs.frozen
class Unit:
    """
    What a VIF (with its table) means.

    A raw value times C{10 ** exponent} times C{factor} is in C{unit}.
    """

    quantity: str
    unit: str = ""
    exponent: int = 0
    factor: float = 1.0


_SECONDS = {0: 1.0, 1: 60.0, 2: 3600.0, 3: 86400.0}
_MONTH = 2629743.83
_YEAR = 31556926.0


def _primary_units() -> dict[int, Unit]:
    table: dict[int, Unit] = {}

    def decimal(first: int, count: int, quantity: str, unit: str, lowest: int) -> None:
        for n in range(count):
            table[first + n] = Unit(quantity, unit, lowest + n)

    def durations(first: int, quantity: str) -> None:
        for n in range(4):
            table[first + n] = Unit(quantity, "s", 0, _SECONDS[n])

    decimal(0x00, 8, "Energy", "Wh", -3)
    decimal(0x08, 8, "Energy", "J", 0)
    decimal(0x10, 8, "Volume", "m^3", -6)
    decimal(0x18, 8, "Mass", "kg", -3)
    durations(0x20, "On time")
    durations(0x24, "Operating time")
    decimal(0x28, 8, "Power", "W", -3)
    decimal(0x30, 8, "Power", "J/h", 0)
    decimal(0x38, 8, "Volume flow", "m^3/h", -6)
    decimal(0x40, 8, "Volume flow", "m^3/min", -7)
    decimal(0x48, 8, "Volume flow", "m^3/s", -9)
    decimal(0x50, 8, "Mass flow", "kg/h", -3)
    decimal(0x58, 4, "Flow temperature", "°C", -3)
    decimal(0x5C, 4, "Return temperature", "°C", -3)
    decimal(0x60, 4, "Temperature difference", "K", -3)
    decimal(0x64, 4, "External temperature", "°C", -3)
    decimal(0x68, 4, "Pressure", "bar", -3)
    table[0x6C] = Unit("Time point (date)")
    table[0x6D] = Unit("Time point (date & time)")
    table[0x6E] = Unit("H.C.A.", "Units for H.C.A.")
    table[0x6F] = Unit("Reserved")
    durations(0x70, "Averaging duration")
    durations(0x74, "Actuality duration")
    table[0x78] = Unit("Fabrication No")
    table[0x79] = Unit("(Enhanced) Identification")
    table[0x7A] = Unit("Bus Address")
    table[0x7B] = Unit("Reserved")
    table[0x7C] = Unit("Plain text unit")
    table[0x7D] = Unit("Reserved")
    table[0x7E] = Unit("Any VIF")
    table[0x7F] = Unit("Manufacturer specific")
    return table


def _fd_units() -> dict[int, Unit]:
    table: dict[int, Unit] = {}
    for n in range(4):
        table[0x00 + n] = Unit("Credit", "Currency units", n - 3)
        table[0x04 + n] = Unit("Debit", "Currency units", n - 3)
    names = {
        0x08: "Access Number (transmission count)",
        0x09: "Medium",
        0x0A: "Manufacturer",
        0x0B: "Parameter set identification",
        0x0C: "Model / Version",
        0x0D: "Hardware version",
        0x0E: "Firmware version",
        0x0F: "Software version",
        0x10: "Customer location",
        0x11: "Customer",
        0x12: "Access Code User",
        0x13: "Access Code Operator",
        0x14: "Access Code System Operator",
        0x15: "Access Code Developer",
        0x16: "Password",
        0x17: "Error flags",
        0x18: "Error mask",
        0x1A: "Digital Output",
        0x1B: "Digital Input",
        0x1E: "Retry",
        0x1F: "Remote control",
        0x20: "First storage # for cyclic storage",
        0x21: "Last storage # for cyclic storage",
        0x22: "Size of storage block",
        0x30: "Start (date/time) of tariff",
        0x3A: "Dimensionless",
        0x60: "Reset counter",
        0x61: "Cumulation counter",
        0x62: "Control signal",
        0x63: "Day of week",
        0x64: "Week number",
        0x65: "Time point of day change",
        0x66: "State of parameter activation",
        0x67: "Special supplier information",
        0x70: "Date and time of battery change",
        0x71: "RF level",
        0x72: "Daylight saving",
        0x73: "Listening window management",
        0x74: "Remaining battery life",
        0x75: "Number of times the meter was stopped",
        0x76: "Manufacturer specific data container",
    }
    for code, name in names.items():
        table[code] = Unit(name)
    table[0x1C] = Unit("Baudrate", "Baud")
    table[0x1D] = Unit("Response delay time", "Bittimes")
    table[0x71] = Unit("RF level", "dBm")
    table[0x74] = Unit("Remaining battery life", "s", 0, _SECONDS[3])
    spans = {0: 1.0, 1: 60.0, 2: 3600.0, 3: 86400.0, 4: _MONTH, 5: _YEAR}
    for n, factor in spans.items():
        table[0x24 + n] = Unit("Storage interval", "s", 0, factor)
        table[0x34 + n] = Unit("Period of tariff", "s", 0, factor)
    for n in range(4):
        table[0x2C + n] = Unit("Duration since last readout", "s", 0, _SECONDS[n])
    for n in range(1, 4):
        table[0x30 + n] = Unit("Duration of tariff", "s", 0, _SECONDS[n])
    for n in range(16):
        table[0x40 + n] = Unit("Voltage", "V", n - 9)
        table[0x50 + n] = Unit("Current", "A", n - 12)
    for n, factor in enumerate((3600.0, 86400.0, _MONTH, _YEAR)):
        table[0x68 + n] = Unit("Duration since last cumulation", "s", 0, factor)
        table[0x6C + n] = Unit("Operating time battery", "s", 0, factor)
    return table


def _fb_units() -> dict[int, Unit]:
    table: dict[int, Unit] = {
        0x00: Unit("Energy", "Wh", 5),
        0x01: Unit("Energy", "Wh", 6),
        0x08: Unit("Energy", "J", 8),
        0x09: Unit("Energy", "J", 9),
        0x10: Unit("Volume", "m^3", 2),
        0x11: Unit("Volume", "m^3", 3),
        0x18: Unit("Mass", "kg", 5),
        0x19: Unit("Mass", "kg", 6),
        0x21: Unit("Volume", "feet^3", -1),
        0x22: Unit("Volume", "American gallon", -1),
        0x23: Unit("Volume", "American gallon", 0),
        0x24: Unit("Volume flow", "American gallon/min", -3),
        0x25: Unit("Volume flow", "American gallon/min", 0),
        0x26: Unit("Volume flow", "American gallon/h", 0),
        0x28: Unit("Power", "W", 5),
        0x29: Unit("Power", "W", 6),
        0x30: Unit("Power", "J/h", 8),
        0x31: Unit("Power", "J/h", 9),
    }
    for n in range(4):
        table[0x58 + n] = Unit("Flow temperature", "°F", n - 3)
        table[0x5C + n] = Unit("Return temperature", "°F", n - 3)
        table[0x60 + n] = Unit("Temperature difference", "°F", n - 3)
        table[0x64 + n] = Unit("External temperature", "°F", n - 3)
        table[0x70 + n] = Unit("Cold / Warm Temperature Limit", "°F", n - 3)
        table[0x74 + n] = Unit("Cold / Warm Temperature Limit", "°C", n - 3)
    for n in range(8):
        table[0x78 + n] = Unit("Cumul count max power", "W", n - 3)
    return table


PRIMARY_UNITS = _primary_units()
FD_UNITS = _fd_units()
FB_UNITS = _fb_units()
RESERVED_UNIT = Unit("Reserved")

# Orthogonal (combinable) VIFEs, EN 13757-3 table 15, without extension bit.
VIFE_DESCRIPTIONS: dict[int, str] = {
    0x20: "per second",
    0x21: "per minute",
    0x22: "per hour",
    0x23: "per day",
    0x24: "per week",
    0x25: "per month",
    0x26: "per year",
    0x27: "per revolution / measurement",
    0x28: "increment per input pulse on input channel 0",
    0x29: "increment per input pulse on input channel 1",
    0x2A: "increment per output pulse on output channel 0",
    0x2B: "increment per output pulse on output channel 1",
    0x2C: "per litre",
    0x2D: "per m^3",
    0x2E: "per kg",
    0x2F: "per K",
    0x30: "per kWh",
    0x31: "per GJ",
    0x32: "per kW",
    0x33: "per (K*l)",
    0x34: "per V",
    0x35: "per A",
    0x36: "multiplied by s",
    0x37: "multiplied by s/V",
    0x38: "multiplied by s/A",
    0x39: "start date(/time) of",
    0x3A: "uncorrected unit",
    0x3B: "accumulation only if positive contributions",
    0x3C: "accumulation of abs value only if negative contributions",
    0x40: "lower limit value",
    0x48: "upper limit value",
    0x41: "number of exceeds of lower limit",
    0x49: "number of exceeds of upper limit",
    0x7E: "future value",
}


def describe_vife(code: int) -> str:
    """
    A readable meaning of one orthogonal VIFE (extension bit removed).
    """
    if code in VIFE_DESCRIPTIONS:
        return VIFE_DESCRIPTIONS[code]
    if code < 0x20:
        return f"error/action code {code}"
    if 0x42 <= code <= 0x4F:
        limit = "upper" if code & 0x08 else "lower"
        which = "last" if code & 0x04 else "first"
        edge = "end" if code & 0x01 else "begin"
        return f"date/time of {edge} of {which} {limit} limit exceed"
    if 0x50 <= code <= 0x5F:
        limit = "upper" if code & 0x08 else "lower"
        which = "last" if code & 0x04 else "first"
        return f"duration of {which} {limit} limit exceed"
    if 0x60 <= code <= 0x67:
        which = "last" if code & 0x04 else "first"
        return f"duration of {which}"
    if code in (0x6A, 0x6B, 0x6E, 0x6F):
        which = "last" if code & 0x04 else "first"
        edge = "end" if code & 0x01 else "begin"
        return f"date/time of {edge} of {which}"
    if 0x70 <= code <= 0x77:
        return f"multiplicative correction factor 1e{(code & 0x07) - 6}"
    if 0x78 <= code <= 0x7B:
        return f"additive correction constant 1e{(code & 0x03) - 3} unit of VIF"
    if code == 0x7D:
        return "multiplicative correction factor 1e3"
    if code == 0x7F:
        return "manufacturer specific"
    return f"reserved VIFE 0x{code:02X}"


@attrs.frozen
class Record:
    """
    One decoded data record.

    C{raw} is the value as coded; C{value} is C{raw} scaled to C{unit}
    (C{raw * 10 ** exponent * factor}) for numbers, or the decoded text,
    date, time or bytes.  C{None} where the meter marks the value invalid
    (an invalid date, BCD with hex digits A-F used as an error display).
    C{vif} is None for the counters of a fixed data structure.
    """

    dif: int
    difes: tuple[int, ...]
    vif: int | None
    vifes: tuple[int, ...]
    data: bytes
    coding: Coding
    function: Function
    storage: int
    tariff: int
    subunit: int
    quantity: str
    unit: str
    exponent: int
    raw: object
    value: object
    factor: float = 1.0
    plain_text_unit: str | None = None
    vife_meanings: tuple[str, ...] = ()
    manufacturer_vife: bool = False

    @property
    def function_name(self) -> str:
        return FUNCTION_NAMES[self.function]


@attrs.frozen
class Telegram:
    """
    A decoded RSP_UD: header, records, and what follows the last record.

    C{manufacturer_data} holds the bytes after DIF 0x0F or 0x1F (maybe
    empty); it is C{None} when the telegram has neither.  C{more_follows}
    says the telegram ended with 0x1F: the master should ask again with FCB
    toggled.
    """

    ci: int
    header: Header
    records: tuple[Record, ...]
    more_follows: bool = False
    manufacturer_data: bytes | None = None
    fixed: bool = False

    @property
    def address(self) -> SecondaryAddress | None:
        return self.header.address


_VARIABLE_CIS = {
    frames.CI_VARIABLE: 12,
    frames.CI_VARIABLE_SHORT: 4,
    frames.CI_VARIABLE_NO_HEADER: 0,
}
MAX_RECORDS = 255
# Security modes of the configuration field (signature) that encrypt the
# records with AES; decrypted data starts with 2F 2F.  Other values in
# this field are common on wired meters and mean nothing.
ENCRYPTION_MODES = frozenset((5, 7, 13))


def decode_frame(frame: frames.Frame) -> Telegram:
    """
    Decode a parsed long or control frame from a slave.
    """
    if frame.kind not in ("long", "control") or frame.ci is None:
        raise DecodeError(f"a {frame.kind} frame carries no user data")
    if frame.function is not None and frame.function != frames.RSP_UD:
        raise DecodeError(f"C field 0x{frame.c:02X} is not a RSP_UD")
    return decode_user_data(frame.ci, frame.data)


def decode_user_data(ci: int, data: bytes) -> Telegram:
    """
    Decode the user data (after CI) of a slave's answer.

    @raise DecodeError: for anything that is not a complete, well-formed
        telegram (the specific subclass says why).
    """
    data = bytes(data)
    if ci == frames.CI_APPLICATION_ERROR:
        raise ApplicationError(data[0] if data else None)
    if ci == frames.CI_FIXED:
        return _decode_fixed(ci, data)
    if ci not in _VARIABLE_CIS:
        raise UnsupportedTelegram(f"CI 0x{ci:02X} is not a variable or fixed data answer we decode")
    size = _VARIABLE_CIS[ci]
    if len(data) < size:
        raise TruncatedData(
            f"CI 0x{ci:02X} needs a {size}-byte header, the telegram has {len(data)} bytes"
        )
    header = _decode_header(data[:size])
    mode = (header.signature >> 8) & 0x1F
    if mode in ENCRYPTION_MODES and data[size : size + 2] != b"\x2f\x2f":
        raise UnsupportedTelegram(f"the data is encrypted (security mode {mode})")
    records, more, tail = _decode_records(data, size)
    return Telegram(ci, header, tuple(records), more, tail)


def _decode_header(raw: bytes) -> Header:
    if not raw:
        return Header()
    address = SecondaryAddress.from_bytes(raw[:8]) if len(raw) == 12 else None
    tail = raw[-4:]
    return Header(address, tail[0], tail[1], int.from_bytes(tail[2:4], "little"))


def _decode_records(data: bytes, pos: int) -> tuple[list[Record], bool, bytes | None]:
    records: list[Record] = []
    end = len(data)
    while pos < end:
        dif = data[pos]
        if dif == DIF_IDLE_FILLER:
            pos += 1
            continue
        if dif in (DIF_MANUFACTURER_DATA, DIF_MORE_RECORDS_FOLLOW):
            return records, dif == DIF_MORE_RECORDS_FOLLOW, data[pos + 1 :]
        if dif & 0x0F == 0x0F:
            raise DecodeError(f"reserved special DIF 0x{dif:02X} at byte {pos}")
        if len(records) == MAX_RECORDS:
            raise DecodeError(f"more than {MAX_RECORDS} records")
        record, pos = _decode_record(data, pos)
        records.append(record)
    return records, False, None


def _read_difes(data: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """
    The DIFEs after the DIF at C{pos - 1}: read while bit 7 is set.
    """
    found: list[int] = []
    while data[pos - 1] & 0x80:
        if len(found) == MAX_DIFE:
            raise TooManyExtensions(f"more than {MAX_DIFE} DIFEs at byte {pos}")
        if pos >= len(data):
            raise TruncatedData(f"the data ends where a DIFE should follow (byte {pos})")
        found.append(data[pos])
        pos += 1
    return tuple(found), pos


def _decode_record(data: bytes, start: int) -> tuple[Record, int]:
    dif = data[start]
    difes, pos = _read_difes(data, start + 1)
    coding = Coding(dif & 0x0F)
    function = Function((dif >> 4) & 0x03)
    storage = (dif >> 6) & 0x01
    tariff = subunit = 0
    for index, dife in enumerate(difes):
        storage |= (dife & 0x0F) << (1 + 4 * index)
        tariff |= ((dife >> 4) & 0x03) << (2 * index)
        subunit |= ((dife >> 6) & 0x01) << index
    if pos >= len(data):
        raise TruncatedData(f"the data ends where the VIF of the record at byte {start} should be")
    vif = data[pos]
    pos += 1
    text_unit = None
    if vif & 0x7F == VIF_PLAIN_TEXT:
        if pos >= len(data):
            raise TruncatedData(f"the plain text unit length of the record at byte {start} is missing")
        length = data[pos]
        if pos + 1 + length > len(data):
            raise TruncatedData(
                f"the plain text unit of the record at byte {start} announces {length} "
                f"characters, {len(data) - pos - 1} bytes remain"
            )
        text_unit = data[pos + 1 : pos + 1 + length][::-1].decode("latin-1")
        pos += 1 + length
    vifes, pos = _read_vifes(data, pos, vif)
    unit, meanings, manufacturer_vife = _interpret_vif(vif, vifes, text_unit)
    payload, lvar, pos = _read_value(data, pos, coding, start)
    time_point = _is_time_point(vif, vifes)
    raw, value = _convert(coding, lvar, payload, time_point, unit)
    if isinstance(raw, (datetime.date, datetime.time)) or (
        raw is None and coding is not Coding.NONE and time_point
    ):
        unit = attrs.evolve(unit, unit="", exponent=0, factor=1.0)
    record = Record(
        dif=dif,
        difes=difes,
        vif=vif,
        vifes=vifes,
        data=payload,
        coding=coding,
        function=function,
        storage=storage,
        tariff=tariff,
        subunit=subunit,
        quantity=unit.quantity,
        unit=unit.unit,
        exponent=unit.exponent,
        raw=raw,
        value=value,
        factor=unit.factor,
        plain_text_unit=text_unit,
        vife_meanings=meanings,
        manufacturer_vife=manufacturer_vife,
    )
    return record, pos


def _read_vifes(data: bytes, pos: int, vif: int) -> tuple[tuple[int, ...], int]:
    found: list[int] = []
    more = bool(vif & 0x80)
    while more:
        if len(found) == MAX_VIFE:
            raise TooManyExtensions(f"more than {MAX_VIFE} VIFEs at byte {pos}")
        if pos >= len(data):
            raise TruncatedData(f"the data ends where a VIFE should follow (byte {pos})")
        found.append(data[pos])
        more = bool(data[pos] & 0x80)
        pos += 1
    return tuple(found), pos


def _interpret_vif(
    vif: int, vifes: tuple[int, ...], text_unit: str | None
) -> tuple[Unit, tuple[str, ...], bool]:
    """
    The unit of a VIF and its VIFEs, the meanings of the orthogonal VIFEs,
    and whether a VIFE 0x7F hands the rest to the manufacturer.
    """
    code = vif & 0x7F
    rest = vifes
    if vif == VIF_TABLE_FD or vif == VIF_TABLE_FB:
        table = FD_UNITS if vif == VIF_TABLE_FD else FB_UNITS
        unit = table.get(vifes[0] & 0x7F, RESERVED_UNIT)
        rest = vifes[1:]
    elif vif == 0xEF:
        unit = Unit("Reserved VIF extension")
        rest = vifes[1:]
    elif code == VIF_PLAIN_TEXT:
        unit = Unit(text_unit or "", text_unit or "")
    else:
        unit = PRIMARY_UNITS.get(code, RESERVED_UNIT)
    if code == 0x7F:
        # The VIFEs of a manufacturer specific VIF are the manufacturer's.
        return unit, (), True
    meanings: list[str] = []
    exponent = unit.exponent
    manufacturer = False
    for vife in rest:
        meaning = vife & 0x7F
        meanings.append(describe_vife(meaning))
        if meaning == 0x7F:
            manufacturer = True
            break
        if 0x70 <= meaning <= 0x77:
            exponent += (meaning & 0x07) - 6
        elif meaning == 0x7D:
            exponent += 3
    if exponent != unit.exponent:
        unit = attrs.evolve(unit, exponent=exponent)
    return unit, tuple(meanings), manufacturer


_LVAR_BINARY_LONG = {0xF5: 48, 0xF6: 64}


def _variable_length(lvar: int, where: int) -> int:
    if lvar <= 0xBF:
        return lvar
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    if lvar in _LVAR_BINARY_LONG:
        return _LVAR_BINARY_LONG[lvar]
    raise UnsupportedTelegram(f"reserved variable length byte 0x{lvar:02X} in the record at byte {where}")


def _read_value(data: bytes, pos: int, coding: Coding, start: int) -> tuple[bytes, int | None, int]:
    lvar = None
    if coding is Coding.VARIABLE:
        if pos >= len(data):
            raise TruncatedData(f"the variable length byte of the record at byte {start} is missing")
        lvar = data[pos]
        pos += 1
        size = _variable_length(lvar, start)
    else:
        size = DATA_SIZE[coding]
    if pos + size > len(data):
        raise TruncatedData(
            f"the record at byte {start} needs {size} data bytes, {len(data) - pos} remain"
        )
    return data[pos : pos + size], lvar, pos + size


def _decode_bcd(payload: bytes) -> int | None:
    """
    BCD digits, least significant byte first; a top nibble F means negative.
    None if a digit is not decimal.
    """
    digits = payload[::-1].hex().upper()
    sign = 1
    if digits and digits[0] == "F":
        sign = -1
        digits = "0" + digits[1:]
    if not digits.isdigit():
        return None
    return sign * int(digits or "0")


def decode_date(payload: bytes) -> datetime.date | None:
    """
    Type G (2 bytes); None for an invalid or unset date.
    """
    day = payload[0] & 0x1F
    month = payload[1] & 0x0F
    year = _year(((payload[0] & 0xE0) >> 5) | ((payload[1] & 0xF0) >> 1))
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def decode_datetime(payload: bytes) -> datetime.datetime | None:
    """
    Type F (4 bytes) or I (6 bytes); None when marked invalid or impossible.
    """
    if len(payload) == 6:
        second, payload = payload[0] & 0x3F, payload[1:]
    else:
        second = 0
    if payload[0] & 0x80:
        return None
    minute = payload[0] & 0x3F
    hour = payload[1] & 0x1F
    day = payload[2] & 0x1F
    month = payload[3] & 0x0F
    year = _year(((payload[2] & 0xE0) >> 5) | ((payload[3] & 0xF0) >> 1))
    try:
        return datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def decode_time(payload: bytes) -> datetime.time | None:
    """
    Type J (3 bytes): time of day.
    """
    try:
        return datetime.time(payload[2] & 0x1F, payload[1] & 0x3F, payload[0] & 0x3F)
    except ValueError:
        return None


def _year(short: int) -> int:
    return 2000 + short if short <= 80 else 1900 + short


_DATE_FD_CODES = (0x30, 0x70)
# Orthogonal VIFEs that turn the record into the time point of something.
_DATE_VIFES = frozenset((0x39, 0x42, 0x43, 0x46, 0x47, 0x4A, 0x4B, 0x4E, 0x4F, 0x6A, 0x6B, 0x6E, 0x6F))


def _is_time_point(vif: int, vifes: tuple[int, ...]) -> bool:
    code = vif & 0x7F
    if code == 0x7F:
        return False
    if vif == VIF_TABLE_FD:
        return bool(vifes) and vifes[0] & 0x7F in _DATE_FD_CODES or _date_vife(vifes[1:])
    if vif in (VIF_TABLE_FB, 0xEF):
        return _date_vife(vifes[1:])
    return code in (0x6C, 0x6D) or _date_vife(vifes)


def _date_vife(vifes: tuple[int, ...]) -> bool:
    for vife in vifes:
        if vife & 0x7F == 0x7F:
            return False
        if vife & 0x7F in _DATE_VIFES:
            return True
    return False


def _convert(
    coding: Coding, lvar: int | None, payload: bytes, time_point: bool, unit: Unit
) -> tuple[object, object]:
    """
    The raw value and the value in C{unit}.
    """
    if coding in (Coding.NONE, Coding.READOUT):
        return None, None
    if time_point:
        if coding is Coding.INT16:
            date = decode_date(payload)
            return date, date
        if coding in (Coding.INT32, Coding.INT48):
            moment = decode_datetime(payload)
            return moment, moment
        if coding is Coding.INT24:
            time = decode_time(payload)
            return time, time
    raw: object
    if coding in INTEGER_CODINGS:
        raw = int.from_bytes(payload, "little", signed=True)
    elif coding in BCD_CODINGS:
        raw = _decode_bcd(payload)
    elif coding is Coding.REAL32:
        raw = struct.unpack("<f", payload)[0]
    else:
        assert lvar is not None
        if lvar <= 0xBF:
            text = payload[::-1].decode("latin-1")
            return text, text
        if lvar >= 0xE0:
            return payload, payload
        number = _decode_bcd(payload)
        raw = None if number is None else (number if lvar < 0xD0 else -number)
    return raw, _scale(raw, unit)


def _scale(raw: object, unit: Unit) -> object:
    if raw is None or not isinstance(raw, (int, float)):
        return raw
    if unit.exponent >= 0 and unit.factor == 1.0 and isinstance(raw, int):
        return raw * 10**unit.exponent
    # Dividing by an exact power of ten keeps decimals exact where a float can:
    # 2731 * 10.0**-2 is 27.310000000000002, 2731 / 100 is 27.31.
    scaled = raw / 10**-unit.exponent if unit.exponent < 0 else raw * 10.0**unit.exponent
    return scaled * unit.factor if unit.factor != 1.0 else scaled


# Fixed data structure (CI 0x73) -------------------------------------------

FIXED_UNITS: dict[int, Unit] = {}
for _n in range(9):
    FIXED_UNITS[0x02 + _n] = Unit("Energy", "Wh", _n)
    FIXED_UNITS[0x0B + _n] = Unit("Energy", "J", 3 + _n)
    FIXED_UNITS[0x14 + _n] = Unit("Power", "W", _n)
    FIXED_UNITS[0x1D + _n] = Unit("Power", "J/h", 3 + _n)
    FIXED_UNITS[0x26 + _n] = Unit("Volume", "m^3", _n - 6)
    FIXED_UNITS[0x2F + _n] = Unit("Volume flow", "m^3/h", _n - 6)
FIXED_UNITS[0x00] = Unit("Time", "h,m,s")
FIXED_UNITS[0x01] = Unit("Date", "D,M,Y")
FIXED_UNITS[0x38] = Unit("Temperature", "°C", -3)
FIXED_UNITS[0x39] = Unit("H.C.A.", "Units for H.C.A.")
FIXED_UNITS[0x3E] = Unit("Historic", "")
FIXED_UNITS[0x3F] = Unit("No units", "")
del _n

FIXED_DATA_LENGTH = 16


def _decode_fixed(ci: int, data: bytes) -> Telegram:
    """
    The fixed data structure: identification, access number, status, two
    counters with their medium and units.  It has no manufacturer or
    version: the address shows manufacturer "@@@" (code 0) and version 0.
    """
    if len(data) != FIXED_DATA_LENGTH:
        raise TruncatedData(
            f"fixed data is {FIXED_DATA_LENGTH} bytes, the telegram has {len(data)}"
        )
    ident = frames.decode_bcd_ident(data[0:4])
    access, status, type1, type2 = data[4], data[5], data[6], data[7]
    medium = ((type1 & 0xC0) >> 6) | ((type2 & 0xC0) >> 4)
    header = Header(SecondaryAddress(ident, "@@@", 0, medium), access, status, 0)
    binary = bool(status & 0x80)
    function = Function.INSTANTANEOUS
    records = []
    for index, (unit_code, payload) in enumerate(((type1, data[8:12]), (type2, data[12:16]))):
        unit = FIXED_UNITS.get(unit_code & 0x3F, RESERVED_UNIT)
        raw = int.from_bytes(payload, "little") if binary else _decode_bcd(payload)
        coding = Coding.INT32 if binary else Coding.BCD8
        records.append(
            Record(
                dif=int(coding),
                difes=(),
                vif=None,
                vifes=(),
                data=payload,
                coding=coding,
                function=function,
                storage=1 if status & 0x40 and index == 1 else 0,
                tariff=0,
                subunit=0,
                quantity=unit.quantity,
                unit=unit.unit,
                exponent=unit.exponent,
                raw=raw,
                value=_scale(raw, unit),
            )
        )
    return Telegram(ci, header, tuple(records), fixed=True)
