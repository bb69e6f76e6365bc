# -*- test-case-name: tests.test_readout_payload -*-
"""
The names behind the three-letter manufacturer codes (the FLAG association's
list, as meters send them in the secondary address) that a building's M-Bus
commonly holds.  A code not in the table has no name: it is shown as sent.
"""

from __future__ import annotations

MANUFACTURER_NAMES: dict[str, str] = {
    "ABB": "ABB",
    "ACE": "Itron (Actaris electricity)",
    "ACG": "Itron (Actaris gas)",
    "ACW": "Itron (Actaris water and heat)",
    "AMT": "Aquametro",
    "APA": "Apator",
    "BEC": "Berg Energiekontrollsysteme",
    "BMT": "B Meters",
    "DME": "Diehl Metering",
    "DZG": "DZG Metering",
    "EFE": "Engelmann",
    "ELS": "Elster",
    "ELV": "Elvaco",
    "EMH": "EMH metering",
    "EMU": "EMU Elektronik",
    "FIN": "Finder",
    "GMC": "Gossen Metrawatt",
    "GWF": "GWF",
    "HYD": "Diehl Metering (Hydrometer)",
    "ISK": "Iskraemeco",
    "IST": "ista",
    "ITR": "Itron",
    "KAM": "Kamstrup",
    "LGB": "Landis+Gyr",
    "LGZ": "Landis+Gyr",
    "LSE": "Siemens (Landis & Staefa)",
    "LUG": "Landis+Gyr",
    "NZR": "NZR",
    "PAD": "PadMess",
    "QDS": "Qundis",
    "REL": "Relay",
    "SBC": "Saia-Burgess Controls",
    "SEN": "Sensus",
    "SIE": "Siemens",
    "SLB": "Schlumberger",
    "SON": "Sontex",
    "SPX": "Sensus (Spanner-Pollux)",
    "SVM": "Svensk Värmemätning",
    "TCH": "Techem",
    "ZRI": "Zenner",
    "ZRM": "Minol Zenner",
}


def manufacturer_name(code: str) -> str | None:
    """The manufacturer's name for a three-letter code, None where unknown."""
    return MANUFACTURER_NAMES.get(code.upper()) if code else None
