# -*- test-case-name: tests.test_mbus_records -*-
"""
The tables of meanings: media, the units of the VIF tables (primary, FD, FB
and the fixed data structure), and the orthogonal VIFEs.
"""

from __future__ import annotations

import attrs


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
