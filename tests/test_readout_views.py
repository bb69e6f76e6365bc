"""A reading as a person reads a meter: one set of rules for the pages, the API and the console."""

from twisted.trial.unittest import TestCase

from cmegw.readout import views

ENERGY = {"value": 48213000, "unit": "Wh", "scale": 3, "quantity": "Energy", "description": "Energy",
          "storage": 0, "tariff": 0, "subunit": 0, "function": "Instantaneous value"}
TARIFF = {**ENERGY, "value": 4000000, "tariff": 1}
FLOW = {"value": 0.387, "unit": "m^3/h", "scale": -3, "quantity": "Volume flow", "description": "Volume flow",
        "storage": 0, "function": "Instantaneous value"}
STORED = {**ENERGY, "storage": 1, "value": 41007000, "timestamp": "2023-12-31"}
ON_TIME = {"value": 65556000.0, "unit": "s", "scale": 0, "quantity": "On time", "description": "On time",
           "storage": 0, "function": "Instantaneous value"}


class ViewsTests(TestCase):
    def test_display_units_and_groups(self) -> None:
        self.assertEqual(views.value_text(ENERGY), f"48{views.GROUP}213 kWh")
        self.assertEqual(views.value_text(FLOW), "0.387 m³/h")
        self.assertEqual(views.value_text(ON_TIME), f"18{views.GROUP}210 h")
        self.assertEqual(views.group_digits(1234.5, 2, " "), "1 234.50")

    def test_counters_first_and_labels(self) -> None:
        found = views.registers({"records": [FLOW, STORED, ENERGY, TARIFF]})
        self.assertEqual([r.label for r in found],
                         ["Energy", "Energy (tariff 1)", "Volume flow", "Energy (stored 1, 2023-12-31)"])

    def test_main_values_are_the_totals(self) -> None:
        self.assertEqual([r.label for r in views.main_registers({"records": [FLOW, TARIFF, ENERGY]})], ["Energy"])
        self.assertEqual([r.label for r in views.main_registers({"records": [FLOW]})], ["Volume flow"])

    def test_status_byte_in_words(self) -> None:
        self.assertEqual(views.status_flags(0), [])
        self.assertEqual(views.status_flags(0x04 | 0x10 | 0x01), ["application busy", "power low", "temporary error"])
