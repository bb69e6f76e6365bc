"""The meter list's CSV import and export, adopting scan results, finding a meter by its secondary address."""

from __future__ import annotations

import re

from twisted.trial import unittest

from cmegw.config.model import Config, ConfigError, LineConfig
from cmegw.config.readout import MeterConfig
from cmegw.config.store import factory_defaults
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.results import MeterInfo
from cmegw.readout.meterlist import (
    MAX_REPORTED,
    MeterListError,
    adopt,
    export_csv,
    find_by_secondary,
    import_csv,
    meter_id_for,
    meter_name_for,
)

METER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

#: The four meters of `cmegw.mbus.meterbus`'s simulated building, as a scan reports them.
FOUND = [
    MeterInfo(1, SecondaryAddress("12345678", "KAM", 0x19, 0x04)),
    MeterInfo(2, SecondaryAddress("22110033", "SEN", 0x66, 0x16)),
    MeterInfo(5, SecondaryAddress("30405060", "ABB", 0x20, 0x02)),
    MeterInfo(10, SecondaryAddress("41520063", "ELS", 0x08, 0x03)),
]


def two_lines() -> Config:
    config = factory_defaults()
    return config.with_line(2, LineConfig(device="/dev/ttyUSB1"))


def listed() -> Config:
    """Two lines and three meters: secondary, primary, and one with every setting changed."""
    return two_lines().evolve(meters={
        "heat-1": MeterConfig(line=1, address="12345678-KAM-19-04", name="Heat, staircase \"A\"", interval="15m"),
        "water-2": MeterConfig(line=2, address="7", name="Cold water; basement"),
        "gas": MeterConfig(line=2, address=FOUND[3].secondary.libmbus, interval="1d", enabled=False),
    })


class ExportTests(unittest.TestCase):
    def test_header_and_rows(self) -> None:
        lines = export_csv(listed()).split("\r\n")
        self.assertEqual(lines[0], "id,line,address,name,interval,enabled")
        self.assertEqual(lines[1], 'heat-1,1,12345678-KAM-19-04,"Heat, staircase ""A""",15m,true')
        self.assertEqual(lines[3], "gas,2,4152006393150803,,1d,false")
        self.assertEqual(lines[4:], [""])

    def test_empty_list(self) -> None:
        self.assertEqual(export_csv(factory_defaults()), "id,line,address,name,interval,enabled\r\n")


class RoundTripTests(unittest.TestCase):
    def test_replace(self) -> None:
        config = listed()
        self.assertEqual(import_csv(two_lines(), export_csv(config), replace=True), config)

    def test_merge_into_itself(self) -> None:
        config = listed()
        self.assertEqual(import_csv(config, export_csv(config)), config)

    def test_order_kept(self) -> None:
        config = listed()
        self.assertEqual(list(import_csv(two_lines(), export_csv(config), replace=True).meters),
                         ["heat-1", "water-2", "gas"])


class SpreadsheetTests(unittest.TestCase):
    def test_semicolons_bom_case_and_blank_rows(self) -> None:
        text = ("\ufeffID;Line;Address;Name;Interval;Enabled\r\n"
                "heat-1;1;12345678-KAM-19-04;\"W\u00e4rme; Treppe A\";15m;yes\r\n"
                ";;;;;\r\n"
                "\r\n"
                "water-2; 2 ; 7 ;Kaltwasser;;0\r\n")
        config = import_csv(two_lines(), text)
        self.assertEqual(config.meters, {
            "heat-1": MeterConfig(line=1, address="12345678-KAM-19-04", name="W\u00e4rme; Treppe A", interval="15m"),
            "water-2": MeterConfig(line=2, address="7", name="Kaltwasser", enabled=False),
        })

    def test_excel_delimiter_hint(self) -> None:
        config = import_csv(factory_defaults(), "sep=;\r\nid;address;name\r\nheat-1;5;Heat, staircase A\r\n")
        self.assertEqual(config.meters["heat-1"].name, "Heat, staircase A")

    def test_bytes_with_bom(self) -> None:
        text = "id;address;name\nheat-1;12345678-KAM-19-04;W\u00e4rme\n".encode("utf-8-sig")
        self.assertEqual(import_csv(factory_defaults(), text).meters["heat-1"].name, "W\u00e4rme")

    def test_not_utf8(self) -> None:
        e = self.assertRaises(MeterListError, import_csv, factory_defaults(),
                              "id;address;name\nheat-1;5;W\u00e4rme\n".encode("latin-1"))
        self.assertIn("UTF-8", str(e))

    def test_columns_in_any_order_and_optional(self) -> None:
        config = import_csv(factory_defaults(), "Address,ID\n5,meter-5\n")
        self.assertEqual(config.meters, {"meter-5": MeterConfig(line=1, address="5")})


class RefusalTests(unittest.TestCase):
    def refused(self, text: str, config: Config | None = None, replace: bool = False) -> MeterListError:
        return self.assertRaises(MeterListError, import_csv, config or listed(), text, replace)

    def test_row_and_column_named_with_the_model_text(self) -> None:
        e = self.refused("id,line,address,interval\nheat-1,1,5,15m\nwater-9,1,6,5s\n")
        self.assertEqual(str(e), "row 3, interval: '5s' is not allowed; use an interval such as 30s, 15m, 1h or 1d "
                                 "(from 10 s to 1 day); leave it empty for the readout default")
        self.assertIsInstance(e, ValueError)

    def test_every_row_checked(self) -> None:
        e = self.refused("id;line;address;enabled\n"
                         "Heat-1;1;5;true\n"          # upper case id
                         "ok-1;x;6;true\n"            # line not a number
                         "ok-2;3;7;true\n"            # no line 3
                         "ok-3;1;12345;true\n"        # address
                         "ok-4;1;8;maybe\n")          # enabled
        self.assertEqual([error.split(":")[0] for error in e.errors],
                         ["row 2, id", "row 3, line", "row 4, line", "row 5, address", "row 6, enabled"])
        self.assertIn("use a configured line: 1, 2", e.errors[2])
        self.assertIn("lower-case letters", e.errors[0])

    def test_several_errors_in_one_row(self) -> None:
        e = self.refused("id,line,address,interval\nnew,40,999,1w\n")
        self.assertEqual([error.split(":")[0] for error in e.errors],
                         ["row 2, line", "row 2, address", "row 2, interval"])

    def test_nothing_applied(self) -> None:
        config = listed()
        text = "id,address,interval\nheat-1,5,1h\nnew-1,6,\nnew-2,7,nonsense\n"
        e = self.assertRaises(MeterListError, import_csv, config, text)
        self.assertEqual([error.split(":")[0] for error in e.errors], ["row 4, interval"])
        # the same file without its bad row is taken: the refusal was all or nothing
        self.assertEqual(import_csv(config, "id,address,interval\nheat-1,5,1h\nnew-1,6,\n").meters["heat-1"].address,
                         "5")

    def test_at_most_ten_reported(self) -> None:
        rows = "".join(f"m-{n},1,{300 + n}\n" for n in range(25))
        e = self.refused("id,line,address\n" + rows)
        self.assertEqual(len(e.errors), 25)
        self.assertEqual(str(e).count("\n"), MAX_REPORTED)
        self.assertTrue(str(e).endswith("... and 15 more"))

    def test_duplicate_ids(self) -> None:
        e = self.refused("id,address\nheat-1,5\nwater-3,6\nheat-1,7\n")
        self.assertEqual(e.errors, ["row 4, id: 'heat-1' is listed twice (also in row 2); use each id once"])

    def test_same_meter_twice_without_ids(self) -> None:
        e = self.refused(f"id,address\n,22110033-SEN-66-16\n,{FOUND[1].secondary.libmbus.lower()}\n",
                         factory_defaults())
        self.assertEqual(len(e.errors), 1)
        self.assertIn("row 3, address", e.errors[0])

    def test_new_meter_needs_an_address(self) -> None:
        e = self.refused("id,interval\nheat-1,1h\nnew-1,1h\n")
        self.assertEqual([error.split(":")[0] for error in e.errors], ["row 3, address"])

    def test_header(self) -> None:
        self.assertIn("row 1, intervall: unknown column", str(self.refused("id,address,intervall\nx,5,1h\n")))
        self.assertIn("twice", str(self.refused("id,address,Address\nx,5,5\n")))
        self.assertIn("no id and no address", str(self.refused("name,interval\nx,1h\n")))
        self.assertIn("empty", str(self.refused("\r\n \r\n")))

    def test_cell_without_column(self) -> None:
        e = self.refused("id,address\nx,5,surplus\n")
        self.assertEqual(e.errors[0].split(":")[0], "row 2, column 3")

    def test_limits(self) -> None:
        self.assertIn("1 MiB", str(self.refused("id,address,name\n" + "x" * (1024 * 1024))))
        rows = "".join(f"m-{n},{n % 250}\n" for n in range(1001))
        self.assertIn("more than 1000 meters", str(self.refused("id,address\n" + rows, replace=True)))

    def test_limit_of_the_merged_list(self) -> None:
        full = factory_defaults().evolve(meters={f"m-{n}": MeterConfig(address=str(n % 250)) for n in range(1000)})
        e = self.refused("id,address\nextra,5\n", full)
        self.assertIn("1001 meters", str(e))
        self.assertEqual(len(import_csv(full, "id,address\nextra,5\n", replace=True).meters), 1)

    def test_bad_quotes(self) -> None:
        e = self.refused('id,address,name\nx,5,ok\nx,5,"a"b"\n', factory_defaults())
        self.assertTrue(str(e).startswith("row 3: "), str(e))


class MergeAndReplaceTests(unittest.TestCase):
    def test_merge_updates_and_adds(self) -> None:
        config = import_csv(listed(), "id,address,interval\nheat-1,12345678-KAM-19-04,1h\nnew-1,9,\n")
        self.assertEqual(list(config.meters), ["heat-1", "water-2", "gas", "new-1"])
        heat = config.meters["heat-1"]
        self.assertEqual((heat.interval, heat.name, heat.line), ("1h", 'Heat, staircase "A"', 1))
        self.assertEqual(config.meters["water-2"], listed().meters["water-2"])

    def test_replace_makes_the_list_the_file(self) -> None:
        config = import_csv(listed(), "id,line,address\nwater-2,2,7\n", replace=True)
        self.assertEqual(config.meters, {"water-2": MeterConfig(line=2, address="7")})
        self.assertEqual(config.lines, listed().lines)

    def test_replace_with_nothing(self) -> None:
        self.assertEqual(import_csv(listed(), "id,address\n", replace=True).meters, {})

    def test_empty_id_derived(self) -> None:
        config = import_csv(two_lines(), "id,line,address\n,1,12345678-KAM-19-04\n,1,5\n,2,5\n,1,99887766\n")
        self.assertEqual(list(config.meters), ["heat-12345678", "meter-p5", "meter-p5-2", "meter-99887766"])
        self.assertEqual(config.meters["meter-p5-2"], MeterConfig(line=2, address="5"))

    def test_empty_id_finds_the_listed_meter(self) -> None:
        config = import_csv(listed(), f"address,interval\n{FOUND[0].secondary.libmbus},2h\n")
        self.assertEqual(list(config.meters), ["heat-1", "water-2", "gas"])
        self.assertEqual(config.meters["heat-1"].interval, "2h")
        self.assertEqual(config.meters["heat-1"].name, 'Heat, staircase "A"')

    def test_derived_id_avoids_the_file_ids(self) -> None:
        config = import_csv(factory_defaults(), "id,address\n,5\nmeter-p5,6\n")
        self.assertEqual(config.meters["meter-p5"].address, "6")
        self.assertEqual(config.meters["meter-p5-2"].address, "5")


class MeterIdTests(unittest.TestCase):
    def test_simulated_meters(self) -> None:
        self.assertEqual([meter_id_for(info, set()) for info in FOUND],
                         ["heat-12345678", "water-22110033", "electricity-30405060", "gas-41520063"])

    def test_primary_only_and_unknown_medium(self) -> None:
        self.assertEqual(meter_id_for(MeterInfo(5), set()), "meter-p5")
        self.assertEqual(meter_id_for(MeterInfo(None, SecondaryAddress("1234ABCD", "XYZ", 1, 0x3F)), set()),
                         "meter-1234abcd")

    def test_unique(self) -> None:
        taken = {"heat-12345678", "heat-12345678-2"}
        self.assertEqual(meter_id_for(FOUND[0], taken), "heat-12345678-3")
        ids: set[str] = set()
        for _ in range(5):
            ids.add(meter_id_for(MeterInfo(5), ids))
        self.assertEqual(len(ids), 5)
        self.assertTrue(all(METER_ID.match(key) for key in ids))

    def test_names(self) -> None:
        self.assertEqual([meter_name_for(info) for info in FOUND],
                         ["Heat meter 12345678", "Cold water meter 22110033", "Electricity meter 30405060",
                          "Gas meter 41520063"])
        self.assertEqual(meter_name_for(MeterInfo(5)), "Meter at primary address 5")
        self.assertEqual(meter_name_for(MeterInfo(None, SecondaryAddress("11111111", "XYZ", 1, 0x1A))),
                         "Smoke detector 11111111")


class AdoptTests(unittest.TestCase):
    def test_four_meters_once(self) -> None:
        config, added = adopt(factory_defaults(), 1, FOUND)
        self.assertEqual(added, ["heat-12345678", "water-22110033", "electricity-30405060", "gas-41520063"])
        self.assertEqual(config.meters["heat-12345678"],
                         MeterConfig(line=1, address="12345678-KAM-19-04", name="Heat meter 12345678"))
        again, added_again = adopt(config, 1, FOUND)
        self.assertEqual(added_again, [])
        self.assertEqual(again, config)
        self.assertTrue(all(METER_ID.match(key) for key in config.meters))
        self.assertEqual(Config.from_dict(config.to_dict()), config)

    def test_listed_meter_kept(self) -> None:
        config, added = adopt(listed(), 2, FOUND + [MeterInfo(7), MeterInfo(8)], interval="30m")
        # heat-1 (any line, secondary), gas (16 hex digits of the same address) and water-2 (line 2, primary 7)
        self.assertEqual(added, ["water-22110033", "electricity-30405060", "meter-p8"])
        self.assertEqual(config.meters["heat-1"], listed().meters["heat-1"])
        self.assertEqual(config.meters["meter-p8"], MeterConfig(line=2, address="8", interval="30m",
                                                                name="Meter at primary address 8"))

    def test_primary_on_another_line_is_another_meter(self) -> None:
        config, added = adopt(listed(), 1, [MeterInfo(7)])
        self.assertEqual(added, ["meter-p7"])

    def test_case_and_forms_equal(self) -> None:
        config = factory_defaults().evolve(meters={"a": MeterConfig(address="12345678-kam-19-04")})
        self.assertEqual(adopt(config, 1, FOUND[:1])[1], [])
        config = factory_defaults().evolve(meters={"a": MeterConfig(address="12345678")})
        self.assertEqual(adopt(config, 1, FOUND[:1])[1], [])

    def test_same_meter_twice_in_one_scan(self) -> None:
        config, added = adopt(factory_defaults(), 1, FOUND[:1] + [MeterInfo(None, FOUND[0].secondary),
                                                                  MeterInfo(None, None, "12345678")])
        self.assertEqual(added, ["heat-12345678"])
        self.assertEqual(len(config.meters), 1)

    def test_ids_unique_against_other_meters(self) -> None:
        config = factory_defaults().evolve(meters={"heat-12345678": MeterConfig(address="3")})
        config, added = adopt(config, 1, FOUND[:1])
        self.assertEqual(added, ["heat-12345678-2"])

    def test_identification_only_and_unaddressable(self) -> None:
        config, added = adopt(factory_defaults(), 1, [MeterInfo(None, None, "99887766"), MeterInfo(None), MeterInfo(253)])
        self.assertEqual(added, ["meter-99887766"])
        self.assertEqual(config.meters["meter-99887766"].address, "99887766")

    def test_bad_interval_or_line(self) -> None:
        self.assertRaises(ConfigError, adopt, factory_defaults(), 1, FOUND, "5s")
        self.assertRaises(ConfigError, adopt, factory_defaults(), 3, FOUND)


class FindTests(unittest.TestCase):
    def test_any_form(self) -> None:
        config = listed()
        self.assertEqual(find_by_secondary(config, SecondaryAddress("12345678", "KAM", 0x19, 0x04)), "heat-1")
        self.assertEqual(find_by_secondary(config, "41520063-els-08-03"), "gas")
        self.assertIsNone(find_by_secondary(config, "22110033-SEN-66-16"))

    def test_not_a_secondary_address(self) -> None:
        self.assertRaises(ValueError, find_by_secondary, listed(), "5")

    def test_identification_alone(self) -> None:
        config = factory_defaults().evolve(meters={"w": MeterConfig(address="22110033"),
                                                   "x": MeterConfig(address="22110033-SEN-66-16")})
        self.assertEqual(find_by_secondary(config, "22110033-SEN-66-16"), "x")
        self.assertEqual(find_by_secondary(config, "22110033-SEN-01-16"), "w")

    def test_primary_changed(self) -> None:
        config, _ = adopt(factory_defaults(), 1, FOUND)
        moved = MeterInfo(42, FOUND[1].secondary)
        self.assertEqual(find_by_secondary(config, moved.secondary), "water-22110033")
        self.assertEqual(adopt(config, 1, [moved])[1], [])
