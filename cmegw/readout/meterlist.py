# -*- test-case-name: tests.test_readout_meterlist -*-
"""
The meter list's operations on `Config` values: CSV export and import
(`export_csv`, `import_csv`), adopting a line's scan results (`adopt`,
`meter_id_for`) and finding a meter by its secondary address
(`find_by_secondary`).

Pure functions: no file, no reactor.  Every meter they make is checked by the
model (`MeterConfig`, `Config`), so its refusals are the ones the pages and
the console show for the same setting.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Collection, Mapping, Sequence

import attrs

from cmegw.config.checks import ConfigError
from cmegw.config.model import Config
from cmegw.config.readout import MAX_METERS, MeterConfig, meters_table
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus import records
from cmegw.mbus.results import MeterInfo

#: The columns of the CSV file, in the order `export_csv` writes them.
COLUMNS = ("id", "line", "address", "name", "interval", "enabled")
MAX_TEXT = 1024 * 1024
#: How many of the errors of a refused file its message lists.
MAX_REPORTED = 10

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_IDENT_ONLY = re.compile(r"\d{8}\Z")

#: Medium code -> (the word of a meter's id, the start of its name).
_MEDIA: dict[int, tuple[str, str]] = {
    0x01: ("oil", "Oil meter"),
    0x02: ("electricity", "Electricity meter"),
    0x03: ("gas", "Gas meter"),
    0x04: ("heat", "Heat meter"),
    0x05: ("steam", "Steam meter"),
    0x06: ("water", "Warm water meter"),
    0x07: ("water", "Water meter"),
    0x08: ("hca", "Heat cost allocator"),
    0x09: ("air", "Compressed air meter"),
    0x0A: ("cooling", "Cooling meter"),
    0x0B: ("cooling", "Cooling meter"),
    0x0C: ("heat", "Heat meter"),
    0x0D: ("heat-cooling", "Heat/cooling meter"),
    0x15: ("water", "Hot water meter"),
    0x16: ("water", "Cold water meter"),
    0x17: ("water", "Dual water meter"),
    0x28: ("water", "Waste water meter"),
}


class MeterListError(ValueError):
    """A meter list file was refused; `errors` holds every problem found, one line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        shown = self.errors[:MAX_REPORTED]
        more = len(self.errors) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more"] if more else [])))


def export_csv(config: Config) -> str:
    """The meter list as CSV (RFC 4180: comma, CRLF, quoted where needed), one row per meter."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for key, meter in config.meters.items():
        writer.writerow([key, meter.line, meter.address, meter.name, meter.interval,
                         "true" if meter.enabled else "false"])
    return out.getvalue()


def import_csv(config: Config, text: str | bytes, replace: bool = False) -> Config:
    """
    A new `Config` with the meters of a CSV file: rows update or add meters by
    id (``replace``: the list becomes the file's rows).

    The header names the columns (any order and case, ``,`` or ``;``);
    ``address`` is needed for every new meter, the others take the listed
    meter's value (new meters: the defaults) when their column is missing,
    and ``line`` and ``enabled`` also when their cell is empty.  A row with
    no id takes the id of the listed meter with the same address, or one
    derived from the address.  Every row is checked before anything is
    applied: raises `MeterListError` naming each bad row and column.
    """
    rows, header_errors = _read_rows(text)
    if header_errors:
        raise MeterListError(header_errors)
    base = {} if replace else dict(config.meters)
    explicit, errors = _explicit_ids(rows)
    taken = set(base) | set(explicit)
    in_base, in_file = _Listed.of(base), _Listed()
    meters: dict[str, MeterConfig] = {}
    seen: dict[str, int] = dict(explicit)
    for number, cells in rows:
        key = cells.get("id", "")
        if key and explicit.get(key) != number:  # refused by _explicit_ids; its cells are still checked
            errors += _row_meter(config, number, cells, base.get(key, MeterConfig()))[1]
            continue
        meter, row_errors = _row_meter(config, number, cells, base.get(key) if key else None)
        errors += row_errors
        if meter is None:
            continue
        if not key:
            info = _info_of(meter.address) or MeterInfo()
            key = in_file.find(meter.line, info) or in_base.find(meter.line, info) or ""
            if key in seen:
                errors.append(f"row {number}, address: {meter.address!r} is the meter {key!r} of row "
                              f"{seen[key]} again; list each meter once")
                continue
            if key:
                meter = _row_meter(config, number, cells, base[key])[0] or meter
            else:
                key = meter_id_for(info, taken)
            taken.add(key)
            seen[key] = number
        try:
            config.evolve(meters={key: meter})
        except ConfigError as e:
            errors.append(f"row {number}, {_column_of(e.setting, key)}: {_refusal(e)}")
            continue
        meters[key] = meter
        in_file.add(key, meter)
    if errors:
        raise MeterListError(errors)
    merged = {**base, **meters}
    try:
        return config.evolve(meters=merged)
    except ConfigError as e:
        raise MeterListError([f"the list would have {len(merged)} meters: {e}"]) from None


def _explicit_ids(rows: Sequence[tuple[int, Mapping[str, str]]]) -> tuple[dict[str, int], list[str]]:
    """The ids the rows name, each with its row, and the refusals of bad or repeated ones."""
    explicit: dict[str, int] = {}
    errors: list[str] = []
    for number, cells in rows:
        key = cells.get("id", "")
        if key in explicit:
            errors.append(f"row {number}, id: {key!r} is listed twice (also in row {explicit[key]}); "
                          "use each id once")
            continue
        if not key:
            continue
        try:
            meters_table({key: MeterConfig()})
        except ConfigError as e:
            errors.append(f"row {number}, id: {_refusal(e)}")
            continue
        explicit[key] = number
    return explicit, errors


def meter_id_for(info: MeterInfo, taken: Collection[str]) -> str:
    """
    A readable id for a found meter, not in `taken`: ``heat-12345678`` (medium
    and identification), ``meter-p5`` (primary address alone); ``-2``, ``-3``...
    when taken.
    """
    word = _MEDIA.get(info.medium, ("meter", ""))[0] if info.medium is not None else "meter"
    ident = re.sub(r"[^a-z0-9]", "", info.identification.lower())[:16]
    if ident:
        base = f"{word}-{ident}"
    elif info.primary is not None:
        base = f"{word}-p{info.primary}"
    else:
        base = word
    if base not in taken:
        return base
    for n in range(2, len(taken) + 3):
        candidate = f"{base}-{n}"
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: len(taken) + 1 candidates cannot all be taken")


def meter_name_for(info: MeterInfo) -> str:
    """A readable name for a found meter: ``Heat meter 12345678``, ``Meter at primary address 5``."""
    phrase = "Meter"
    if info.medium in _MEDIA:
        phrase = _MEDIA[info.medium][1]
    elif info.medium is not None and info.medium not in (0x00, 0x0F):
        known = records.medium_name(info.medium)
        phrase = phrase if known.startswith("Reserved") else known
    if info.identification:
        return f"{phrase} {info.identification}"
    if info.primary is not None:
        return f"{phrase} at primary address {info.primary}"
    return phrase


def adopt(config: Config, line: int, found: Sequence[MeterInfo], interval: str = "") -> tuple[Config, list[str]]:
    """
    Add the meters a scan of `line` found to the list; the new config and the ids added.

    A meter is listed by its secondary address (by its primary one when it
    has none).  One already listed is left as it is: the same secondary
    address on any line (or its identification number alone), or the same
    primary address on the same line.  A meter with no address the list can
    hold is skipped.  Raises `ConfigError` for a bad interval or line.
    """
    meters = dict(config.meters)
    listed = _Listed.of(meters)
    added: list[str] = []
    for info in found:
        address = _address_of(info)
        if address is None or listed.find(line, info) is not None:
            continue
        key = meter_id_for(info, meters.keys())
        meters[key] = MeterConfig(line=line, address=address, name=meter_name_for(info), interval=interval)
        listed.add(key, meters[key])
        added.append(key)
    if not added:
        MeterConfig(line=line, interval=interval)  # the same refusal whether or not something was new
        return config, added
    return config.evolve(meters=meters), added


def find_by_secondary(config: Config, secondary: SecondaryAddress | str) -> str | None:
    """
    The id of the meter listed with this secondary address (any of its
    written forms); failing that, of one listed by its identification
    number alone.  None when no meter lists it; ValueError for a text that
    is no secondary address.
    """
    if isinstance(secondary, str):
        secondary = SecondaryAddress.parse(secondary)
    return _Listed.of(config.meters).find(0, MeterInfo(secondary=secondary))


# -- CSV reading ---------------------------------------------------------------------------------


def _read_rows(text: str | bytes) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """
    The data rows as (row number, {column: cell}) and the errors of the file
    as a whole.  Rows are numbered as a spreadsheet shows them: the header
    (usually) is row 1, blank rows count but are skipped.
    """
    size = len(text) if isinstance(text, bytes) or len(text) > MAX_TEXT else len(text.encode("utf-8", "replace"))
    if size > MAX_TEXT:
        return [], [f"the file has more than {MAX_TEXT} bytes (1 MiB); split it or shorten it"]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return [], [f"the file is not UTF-8 text (byte {e.start}); save it as CSV UTF-8"]
    text = text.removeprefix("\ufeff")
    first = next((line for line in io.StringIO(text) if line.strip()), "")
    if not first:
        return [], ["the file is empty; it needs a header row such as " + ",".join(COLUMNS)]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    skip = 0
    hint = first.strip().lower()
    if hint.startswith("sep=") and len(hint) == 5 and hint[4] in ",;":  # Excel's delimiter hint line
        delimiter, skip = hint[4], 1
    records = enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True), 1)
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[str] = []
    columns: list[str] | None = None
    number = 0
    try:
        for number, cells in records:
            if not any(cell.strip() for cell in cells):
                continue
            if skip:
                skip = 0
                continue
            if columns is None:
                columns, errors = _header(number, cells)
                if errors:
                    return [], errors
            elif len(rows) >= MAX_METERS:
                return [], [f"row {number}: the file lists more than {MAX_METERS} meters; "
                            f"a meter list has at most {MAX_METERS}"]
            else:
                row, row_errors = _cells(number, columns, cells)
                errors += row_errors
                rows.append((number, row))
    except csv.Error as e:
        return [], errors + [f"row {number + 1}: {e}; check the quotes of this row"]
    return rows, errors


def _header(number: int, cells: list[str]) -> tuple[list[str], list[str]]:
    names = [cell.strip().lower() for cell in cells]
    known = ", ".join(COLUMNS)
    errors = [f"row {number}, {name}: unknown column; use {known}"
              for name in names if name and name not in COLUMNS]
    errors += [f"row {number}, {name}: the column is there twice; name each column once"
               for i, name in enumerate(names) if name and name in names[:i]]
    if not errors and "address" not in names and "id" not in names:
        errors.append(f"row {number}: the header names no id and no address column; use {known}")
    return names, errors


def _cells(number: int, columns: list[str], cells: list[str]) -> tuple[dict[str, str], list[str]]:
    row: dict[str, str] = {}
    errors: list[str] = []
    for i, cell in enumerate(cells):
        name = columns[i] if i < len(columns) else ""
        if name:
            row[name] = cell.strip()
        elif cell.strip():
            errors.append(f"row {number}, column {i + 1}: {cell.strip()!r} has no column in the header; "
                          f"name it in the header ({', '.join(COLUMNS)}) or remove it")
    return row, errors


def _row_meter(config: Config, number: int, cells: Mapping[str, str],
               listed: MeterConfig | None) -> tuple[MeterConfig | None, list[str]]:
    """The row's meter on top of the listed one (or the defaults), with one error per bad cell."""
    changes: dict[str, object] = {}
    errors: list[str] = []
    for column in ("line", "address", "name", "interval", "enabled"):
        if column not in cells:
            continue
        cell = cells[column]
        if column in ("line", "enabled") and cell == "":
            continue
        value: object = cell
        if column == "line" and cell.isdigit():
            value = int(cell)
        elif column == "enabled" and cell.lower() in _TRUE + _FALSE:
            value = cell.lower() in _TRUE
        try:
            probe = attrs.evolve(MeterConfig(), **{column: value})
            if column == "line":
                config.evolve(meters={"probe": probe})  # the line must be one of the config's
        except ConfigError as e:
            errors.append(f"row {number}, {column}: {_refusal(e)}")
            continue
        changes[column] = value
    if listed is None and "address" not in cells:
        errors.append(f"row {number}, address: a new meter needs its address; use a secondary address such as "
                      "12345678-KAM-19-04 (preferred) or a primary address from 0 to 250")
    if errors:
        return None, errors
    return attrs.evolve(listed or MeterConfig(), **changes), []


def _refusal(e: ConfigError) -> str:
    return f"{e.value!r} is not allowed; {e.allowed}"


def _column_of(setting: str, key: str) -> str:
    """The column a refusal of ``meter.<key>[.<field>]`` is about."""
    field = setting.removeprefix(f"meter.{key}").lstrip(".")
    return field if field in COLUMNS else "id"


# -- matching meters ------------------------------------------------------------------------------


def _address_key(address: str) -> tuple[str, SecondaryAddress | str | int]:
    """A listed address as ("primary", n), ("ident", "12345678") or ("secondary", SecondaryAddress)."""
    text = address.strip()
    if text.isdigit() and len(text) <= 3:
        return "primary", int(text)
    if _IDENT_ONLY.match(text):
        return "ident", text
    try:
        return "secondary", SecondaryAddress.parse(text)
    except ValueError:
        return "other", text.upper()


def _info_of(address: str) -> MeterInfo | None:
    """What a listed address says of its meter, as a scan would report it."""
    kind, value = _address_key(address)
    if kind == "secondary":
        assert isinstance(value, SecondaryAddress)
        return MeterInfo(secondary=value)
    if kind == "ident":
        return MeterInfo(ident=str(value))
    if kind == "primary":
        return MeterInfo(primary=int(str(value)))
    return None


def _address_of(info: MeterInfo) -> str | None:
    """The address the list keeps for a found meter: secondary, else identification alone, else primary."""
    if info.secondary is not None:
        return str(info.secondary)
    if info.ident and _IDENT_ONLY.match(info.ident):
        return info.ident
    if info.primary is not None and 0 <= info.primary <= 250:
        return str(info.primary)
    return None


@attrs.define
class _Listed:
    """
    The meters of a list by what they are addressed with, to find a meter in
    one look-up: by secondary address, by identification number (listed alone
    or as part of a secondary address), by line and primary address.
    """

    secondary: dict[SecondaryAddress, str] = attrs.field(factory=dict)
    ident: dict[str, str] = attrs.field(factory=dict)
    #: The identification numbers of the meters listed by secondary address.
    secondary_ident: dict[str, str] = attrs.field(factory=dict)
    primary: dict[tuple[int, int], str] = attrs.field(factory=dict)

    @classmethod
    def of(cls, meters: Mapping[str, MeterConfig]) -> "_Listed":
        listed = cls()
        for key, meter in meters.items():
            listed.add(key, meter)
        return listed

    def add(self, key: str, meter: MeterConfig) -> None:
        kind, value = _address_key(meter.address)
        if isinstance(value, SecondaryAddress):
            self.secondary.setdefault(value, key)
            self.secondary_ident.setdefault(value.ident, key)
        elif kind == "ident":
            self.ident.setdefault(str(value), key)
        elif kind == "primary":
            self.primary.setdefault((meter.line, int(str(value))), key)

    def find(self, line: int, info: MeterInfo) -> str | None:
        """
        The id of the listed meter that is `info` found on `line`: the same
        secondary address on any line (or its identification number alone),
        or the same primary address on the same line.
        """
        found = None
        if info.secondary is not None:
            found = self.secondary.get(info.secondary) or self.ident.get(info.secondary.ident)
        elif info.ident:
            found = self.ident.get(info.ident) or self.secondary_ident.get(info.ident)
        if found is None and info.primary is not None:
            found = self.primary.get((line, info.primary))
        return found
