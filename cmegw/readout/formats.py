# -*- test-case-name: tests.test_readout_views -*-
"""
How every face prints a number, a unit, a duration and a time: digits
grouped (``48 213``), ``m³`` for ``m^3``, a duration in the largest unit that
keeps two of it, the gateway's local time, an age in words, the version
byte.  Plain functions with no tables: the status page's graphs, the
delivery page and the console use them without loading the readings' views
(`cmegw.readout.views`, which names them too).
"""

from __future__ import annotations

import time
from typing import Any

#: Durations (the decoder gives seconds) in the largest unit that keeps two of it: unit -> seconds.
DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "days": 86400}
#: The digit group separator: a narrow no-break space (no locale reads it as a decimal mark).
GROUP = "\u202f"


def group_digits(value: float, decimals: int = 0, separator: str = GROUP) -> str:
    """``48213`` -> ``48 213``; ``1234.5, 2`` -> ``1 234.50`` (narrow no-break spaces unless told)."""
    return f"{value:,.{decimals}f}".replace(",", separator)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unit_text(unit: str) -> str:
    """The decoder's unit as it is printed: ``m^3/h`` -> ``m³/h``."""
    return unit.replace("^3", "³").replace("^2", "²")


def duration(seconds: float) -> tuple[float, str, int]:
    """(value, unit, decimals) of a duration in the largest unit that keeps at least two of it."""
    unit = next(u for u, size in reversed(DURATION_UNITS.items()) if seconds >= 2 * size or u == "s")
    value = seconds / DURATION_UNITS[unit]
    return value, unit, 1 if unit != "s" and value < 10 else 0


def in_unit(value: float, unit: str, wanted: str) -> float | None:
    """`value` in `unit` said in `wanted` (durations convert), None where they are not the same kind."""
    if unit == wanted:
        return value
    if unit in DURATION_UNITS and wanted in DURATION_UNITS:
        return value * DURATION_UNITS[unit] / DURATION_UNITS[wanted]
    return None


def version_text(version: int | None) -> str:
    """The version byte as every face shows it: decimal, and hex as the secondary address spells it."""
    return "" if version is None else f"{version} (0x{version:02X})"


def local_time(when: float | None, never: str = "—") -> str:
    """A time as the gateway's clock shows it (local time with the date, to the second); `never` for None."""
    if when is None:
        return never
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def span_text(seconds: float) -> str:
    """A time span in its two largest units: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age_text(seconds: float) -> str:
    """How long ago, in words: ``just now``, ``45 s ago``, ``12 min ago``, ``3 h 5 min ago``, ``2 d 4 h ago``."""
    return "just now" if seconds < 5 else f"{span_text(seconds)} ago"
