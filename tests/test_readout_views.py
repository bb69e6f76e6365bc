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
        self.assertEqual(views.value_text(ON_TIME), "759 days")
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


HEAT = {
    "meter": {"primary": 1, "secondary": "12345678-KAM-19-04", "identification": "12345678", "manufacturer": "KAM",
              "version": 25, "medium": 4, "medium_name": "Heat: Outlet"},
    "status": 0,
    "records": [
        {"value": 71234567, "unit": "", "scale": 0, "quantity": "Fabrication No", "description": "Fabrication No",
         "storage": 0, "tariff": 0, "subunit": 0, "function": "Instantaneous value", "timestamp": None},
        ENERGY, FLOW, ON_TIME, STORED,
        {"value": "2024-03-12T14:23:00", "unit": "", "scale": 0, "quantity": "Time point (date & time)",
         "description": "Time point (date & time)", "storage": 0, "tariff": 0, "subunit": 0,
         "function": "Instantaneous value", "timestamp": None},
    ],
}


class MeterTests(TestCase):
    def test_manufacturer_and_version(self) -> None:
        self.assertEqual(views.manufacturer_text("KAM"), "Kamstrup (KAM)")
        self.assertEqual(views.manufacturer_text("ABB"), "ABB", "a name that is its code is said once")
        self.assertEqual(views.manufacturer_text("XYZ"), "XYZ")
        self.assertEqual(views.manufacturer_text(""), "")
        self.assertEqual(views.version_text(25), "25 (0x19)")
        self.assertEqual(views.version_text(8), "8 (0x08)")
        self.assertEqual(views.version_text(None), "")

    def test_identity_rows(self) -> None:
        self.assertEqual(views.identity_rows(HEAT), [
            ("Manufacturer", "Kamstrup (KAM)"), ("Identification", "12345678"), ("Medium", "Heat: Outlet"),
            ("Version", "25 (0x19)"), ("Secondary address", "12345678-KAM-19-04"), ("Primary address", "1")])
        self.assertEqual(views.identity_rows({}), [])

    def test_durations(self) -> None:
        self.assertEqual(views.duration(30), (30, "s", 0))
        self.assertEqual(views.duration(900), (15, "min", 0))
        self.assertEqual(views.duration(5 * 3600)[1:], ("h", 1))
        self.assertEqual(views.duration(65556000)[1], "days")
        self.assertAlmostEqual(views.in_unit(48, "h", "days"), 2.0)
        self.assertIsNone(views.in_unit(1, "kWh", "days"))
        self.assertEqual(views.value_text({**ON_TIME, "value": 900.0}), "15 min")

    def test_units_as_printed(self) -> None:
        self.assertEqual(views.unit_text("m^3/h"), "m³/h")
        self.assertEqual(views.value_text({**FLOW, "unit": "feet^3", "value": 2.5, "scale": -1}), "2.5 feet³")
        self.assertEqual(views.value_text({**ENERGY, "unit": "J", "value": 1.5e9, "scale": 6}), "1.500 GJ")

    def test_labels_from_the_quantity_table(self) -> None:
        labels = [r.label for r in views.registers(HEAT)]
        self.assertIn("Fabrication number", labels)
        self.assertIn("Date and time", labels)
        self.assertEqual(views.quantity_label({"quantity": "Volume", "description": "Volume (future value)"}),
                         "Volume (future value)")

    def test_meter_clock_and_drift(self) -> None:
        self.assertEqual(views.meter_clock(HEAT), "2024-03-12 14:23:00")
        self.assertEqual(views.meter_clock({"records": [ENERGY]}), "")
        import time
        local = time.mktime((2024, 3, 12, 14, 23, 30, 0, 0, -1))
        self.assertEqual(views.clock_drift(HEAT, local), "in step with the gateway")
        self.assertEqual(views.clock_drift(HEAT, local + 600), "10 min behind the gateway")
        self.assertEqual(views.clock_drift(HEAT, local - 3 * 86400), "3.0 days ahead of the gateway")
        self.assertEqual(views.clock_drift(HEAT, None), "")

    def test_record_table_leaves_out_what_says_nothing(self) -> None:
        table = views.record_table(HEAT)
        self.assertEqual(table.header, ("#", "Description", "Value", "Unit", "Storage", "Time"))
        self.assertEqual(table.rows[1], ("2", "Energy", f"48{views.GROUP}213{views.GROUP}000", "Wh", "0", ""))
        self.assertEqual(table.rows[2][3], "m³/h")
        self.assertEqual(table.rows[0][2], "71234567", "a number without a unit is not grouped")
        self.assertEqual(table.rows[5][2], "2024-03-12 14:23:00", "times as the other times are written")
        both = views.record_table({"records": [ENERGY, TARIFF, {**FLOW, "function": "Maximum value"}]})
        self.assertEqual(both.header, ("#", "Description", "Value", "Unit", "Function", "Tariff"))

    def test_reading_view(self) -> None:
        view = views.reading_view(HEAT)
        self.assertEqual([r.label for r in view.main], ["Energy", "Volume flow"])
        self.assertEqual(view.main[0].text, f"48{views.GROUP}213 kWh")
        self.assertNotIn("Date and time", [r.label for r in view.others], "the clock is said once")
        self.assertIn("On time", [r.label for r in view.others])
        self.assertEqual(view.meter_clock, "2024-03-12 14:23:00")
        self.assertEqual(view.status, ())
        self.assertEqual(views.reading_view({**HEAT, "status": 0x04}).status, ("power low",))
        self.assertEqual(len(view.records.rows), 6)
