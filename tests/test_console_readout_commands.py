"""
Tests for cmegw.console.readout_commands (and ``mbus adopt`` of
cmegw.console.mbus_commands): the meter list, one meter's last reading, the
kept readings, the delivery targets, ``readout now``, ``meter add`` and
``meter remove``, on `fake_state` with a `FakeReadout` and real readings
decoded from the simulated meters.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config
from cmegw.console import readout_commands as R
from cmegw.console.commands import Reply, Session, commands
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, StoredReading, TargetStatus
from cmegw.state import BusView
from cmegw.testing import FakeReadout, fake_state
from tests.readout_web_helpers import decoded_readings
from tests.support import local_time_in_utc

#: 2024-03-12 14:23:00 UTC
T0 = 1710253380.0


def config() -> Config:
    return Config(meters={
        "heat-1": {"line": 1, "address": "12345678-KAM-19-04", "name": "Flat 3 heat", "interval": "15m"},
        "water-2": {"line": 1, "address": "22110033-SEN-66-16"},
        "gas-10": {"line": 1, "address": "10", "enabled": False},
    })


class Gateway:
    """What the console commands see of the gateway: the published state, the store and the actions."""

    def __init__(self, clock: task.Clock, config: Config) -> None:
        self.reactor = clock
        self.readout = FakeReadout(config)
        self.state = fake_state(clock, config, readout=self.readout)
        self.store = self.state.store
        self.overrides = self.state.overrides
        #: read_meters_now's calls, each waiting for the test to fire it.
        self.reads: list[tuple[list[str], defer.Deferred]] = []
        self.adopted: list[tuple[int, str]] = []
        self.adopt_result: Any = []

    def read_meters_now(self, keys: Any = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.reads.append((keys, d))
        return d

    def adopt_meters(self, n: int, found: Any = None, interval: str = "") -> Any:
        self.adopted.append((n, interval))
        if isinstance(self.adopt_result, Exception):
            raise self.adopt_result
        return self.adopt_result


class ReadoutCommandCase(TestCase):
    def setUp(self) -> None:
        local_time_in_utc(self)
        self.clock = task.Clock()
        self.clock.advance(T0 + 120)
        self.gateway = Gateway(self.clock, config())
        self.readout = self.gateway.readout
        self.printed: list[str] = []
        self.session = Session(self.gateway, "admin", self.printed.append)
        self.table = commands()
        self.decoded = decoded_readings()

    def reply(self, line: str) -> Reply:
        result: Any = self.table.run(self.session, line)
        if isinstance(result, defer.Deferred):
            result = self.successResultOf(result)
        return Reply(result) if isinstance(result, str) else result

    def text(self, line: str) -> str:
        return self.reply(line).text

    def refused(self, line: str) -> str:
        reply = self.reply(line)
        self.assertTrue(reply.error, f"{line!r} should be refused (ssh exits 1): {reply.text}")
        return reply.text

    def reading(self, key: str, primary: int, when: float = T0, id: int = 1, **decoded: Any) -> StoredReading:
        return StoredReading(id, key, when, True, ("68...16",), {**self.decoded[primary], **decoded})

    def fill(self) -> None:
        meters = self.readout.meters
        heat = meters["heat-1"]
        heat.interval, heat.next_due, heat.last_attempt = 900, T0 + 420, T0
        heat.last_reading, heat.last_success, heat.reads = self.reading("heat-1", 1, id=17), T0, 12
        water = meters["water-2"]
        water.last_reading = self.reading("water-2", 2, when=T0 - 3600, id=9)
        water.failures_in_row, water.failures, water.reads = 3, 3, 8
        water.last_error = "the meter at address 2 did not answer (4 tries)"
        water.next_due = T0 + 3480


class ShowMeterTests(ReadoutCommandCase):
    def test_show_meters(self) -> None:
        self.fill()
        text = self.text("show meters")
        lines = text.splitlines()
        self.assertEqual(lines[0], "Meters (3, 1 in alarm)")
        self.assertRegex(lines[1], r"^  ID\s+Line\s+Address\s+Last reading\s+Alarm\s+Next read\s+Values$")
        self.assertRegex(text, r"heat-1\s+1\s+12345678-KAM-19-04\s+2024-03-12 14:23:00\s+-\s+2024-03-12 14:30:00"
                               r"\s+48 213 kWh, 1 234\.56 m³\n")
        self.assertRegex(text, r"water-2\s+1\s+22110033-SEN-66-16\s+2024-03-12 13:23:00\s+ALARM\s+"
                               r"2024-03-12 15:21:00\s+815\.327 m³\n")
        self.assertRegex(text, r"gas-10\s+1\s+10\s+-\s+-\s+not scheduled \(enabled off\)\s+-$")
        self.assertEqual(self.text("meter"), text, "'meter' alone lists them too")
        self.readout.meters["gas-10"].last_reading = self.reading("gas-10", 5)
        self.assertRegex(self.text("show meters"), r"gas-10 .*  5 432\.10 kWh$", "tariff 0 only")

    def test_show_meters_empty_and_not_running(self) -> None:
        self.readout.meters.clear()
        self.assertIn("'mbus adopt LINE' adds what the bus has", self.text("show meters"))
        self.gateway.state.readout = None
        self.assertEqual(self.refused("show meters"),
                         "show meters: cannot run; the readouts are not running (is the gateway stopped?)")

    def test_show_meter_reads_like_the_meter(self) -> None:
        self.fill()
        text = self.text("show meter heat-1")
        self.assertTrue(text.startswith("Meter heat-1\n"), text)
        for expected in (r"Name\s+Flat 3 heat", r"Address\s+12345678-KAM-19-04",
                         r"Meter\s+Kamstrup \(KAM\) 12345678, version 25 \(0x19\), Heat: Outlet", r"Read every\s+15m\n",
                         r"Next read\s+2024-03-12 14:30:00", r"Last good reading\s+2024-03-12 14:23:00 \(reading 17\)",
                         r"Alarm\s+no\n", r"Last error\s+-", r"Meter's status\s+ok",
                         r"Reads\s+12 \(0 failed, 0 missed"):
            self.assertRegex(text, expected)
        page = text.split("Last reading\n", 1)[1].splitlines()
        self.assertEqual(page[0], "Read 2024-03-12 14:23:00 (2 min ago), reading 17; "
                                  "meter's clock 2024-03-12 14:23:00 (in step with the gateway)")
        self.assertRegex(page[1], r"^  Energy\s+48 213 kWh$", "the counters first")
        self.assertRegex(page[2], r"^  Volume\s+1 234\.56 m³$")
        self.assertRegex(text, r"Flow temperature\s+68\.43 °C")
        self.assertRegex(text, r"Power\s+12\.30 kW")
        self.assertRegex(text, r"Volume flow\s+0\.387 m³/h")
        self.assertRegex(text, r"Power \(maximum\)\s+25\.40 kW")
        self.assertRegex(text, r"Energy \(stored 1, 2023-12-31\)\s+41 007 kWh")
        self.assertRegex(text, r"On time\s+759 days")
        self.assertRegex(text, r"Fabrication number\s+71234567\n", "numbers are not grouped")
        self.assertNotIn("Description", text, "the records only when asked")
        self.assertIn("(14 records as decoded: add 'records' to the command)", text)
        detail = self.text("show meter heat-1 records").split("Every record as decoded (14)\n", 1)[1].splitlines()
        self.assertRegex(detail[0], r"^  #\s+Description\s+Value\s+Unit\s+Function\s+Storage\s+Time$",
                         "the description first; no scale, tariff or subunit of zeros")
        self.assertRegex(detail[2], r"^  2\s+Energy\s+48 213 000\s+Wh\s+instantaneous\s+0\s+2024-03-12 14:23:00$")
        self.assertLess(text.index("Flow temperature"), text.index("Energy (stored 1"), "current values first")

    def test_electricity_tariffs_and_phases(self) -> None:
        self.readout.meters["gas-10"].last_reading = self.reading("gas-10", 5)
        text = self.text("show meter gas-10")
        self.assertRegex(text, r"Energy\s+5 432\.10 kWh")
        self.assertRegex(text, r"Energy \(tariff 1\)\s+4 000\.00 kWh")
        self.assertRegex(text, r"Voltage \(subunit 2\)\s+229\.8 V")
        self.assertRegex(text, r"Schedule\s+off \(read only by 'readout now'\)")

    def test_show_meter_in_alarm_with_status_flags(self) -> None:
        self.fill()
        water = self.readout.meters["water-2"]
        water.last_reading = self.reading("water-2", 2, status=0x14)
        text = self.text("show meter water-2")
        self.assertRegex(text, r"Alarm\s+ALARM: 3 failed reads in a row")
        self.assertRegex(text, r"Last error\s+the meter at address 2 did not answer \(4 tries\)")
        self.assertRegex(text, r"Meter's status\s+power low, temporary error")
        self.assertRegex(text, r"Read every\s+1h \(the readout default\)")
        self.assertRegex(text, r"Meter\s+Sensus \(SEN\) 22110033, version 102 \(0x66\), Cold water")

    def test_show_meter_never_read(self) -> None:
        text = self.text("show meter gas-10")
        self.assertRegex(text, r"Meter\s+not read yet")
        self.assertRegex(text, r"Last good reading\s+none yet")
        self.assertNotIn("Last reading (", text)

    def test_unknown_meter_names_the_meters(self) -> None:
        self.assertEqual(self.refused("show meter heat-9"),
                         "show meter: 'heat-9' is not a meter; meters: heat-1, water-2, gas-10")
        self.assertIn("'heat-9' is not a meter; meters: heat-1", self.refused("show readings heat-9"))
        self.assertIn("is missing an argument; use show meter ID", self.refused("show meter"))
        self.readout.meters.clear()
        self.assertIn("no meter in the list yet ('meter add' or 'mbus adopt' adds them)",
                      self.refused("show meter heat-1"))

    def test_show_readings(self) -> None:
        self.readout.kept = [self.reading("heat-1", 1, when=T0 - 900 * i, id=20 - i) for i in (3, 2, 1)]
        self.readout.kept.insert(2, StoredReading(30, "heat-1", T0 - 1200, False, error="no answer"))
        self.readout.kept.append(self.reading("water-2", 2))
        text = self.text("show readings heat-1")
        lines = text.splitlines()
        self.assertEqual(lines[0], "Readings of heat-1 (oldest first)")
        self.assertRegex(lines[2], r"2024-03-12 13:38:00\s+ok\s+48 213 kWh, 1 234\.56 m³$")
        self.assertRegex(lines[4], r"2024-03-12 14:03:00\s+FAILED\s+no answer")
        self.assertEqual(len(lines), 6)
        self.assertNotIn("815", text)
        self.assertEqual(len(self.text("show readings heat-1 2").splitlines()), 4)
        self.assertEqual(self.text("show readings gas-10"), "No reading of gas-10 kept yet.")
        self.assertEqual(self.refused("show readings heat-1 0"),
                         "show readings: '0' is not a count; use a whole number from 1 to 1000")


class TargetTests(ReadoutCommandCase):
    def test_show_targets(self) -> None:
        now = self.clock.seconds()
        self.readout.statuses = {
            "mqtt": TargetStatus("mqtt", TARGET_CONNECTED, last_delivery=T0, delivered=120),
            "push.1": TargetStatus("push.1", TARGET_DOWN, error="head-end.example: HTTP 503 Service Unavailable",
                                   delivered=10, failures=4),
        }
        self.readout.backlogs = {"mqtt": (0, None), "push.1": (5, now - 7260)}
        self.patch(self.readout, "store_summary", lambda: {"path": "/var/lib/cmegw/readings.sqlite",
                                                           "problem": "", "readings": 12345, "bytes": 2048000})
        text = self.text("show targets")
        self.assertRegex(text, r"Target\s+State\s+Delivered\s+Backlog\s+Oldest waiting\s+Last delivery\s+Error")
        self.assertRegex(text, r"mqtt\s+connected\s+120\s+0\s+-\s+2024-03-12 14:23:00\s+-\n")
        self.assertRegex(text, r"push\.1\s+down\s+10\s+5\s+2 h 1 min\s+-\s+head-end.example: HTTP 503")
        self.assertRegex(text, r"File\s+/var/lib/cmegw/readings.sqlite")
        self.assertRegex(text, r"Size\s+2 048 000 bytes")
        self.assertRegex(text, r"Readings kept\s+12 345")
        self.assertRegex(text, r"Problem\s+none")
        self.assertEqual(self.text("show delivery"), text)

    def test_no_target_and_a_store_problem(self) -> None:
        self.readout.problem = "the disk is full: 14 readings held in memory"
        text = self.text("show targets")
        self.assertIn("none: readings are kept in the store only", text)
        self.assertRegex(text, r"Problem\s+the disk is full: 14 readings held in memory")

    def test_readout_status(self) -> None:
        self.fill()
        self.readout.statuses = {"mqtt": TargetStatus("mqtt", TARGET_DOWN, error="not authorised")}
        self.readout.backlogs = {"mqtt": (7, T0)}
        text = self.text("readout")
        self.assertIn("Readouts: 3 meters, 2 read on schedule, in alarm: water-2", text)
        self.assertIn("next read 2024-03-12 14:30:00", text)
        self.assertIn("mqtt: down, 7 waiting: not authorised", text)


class ReadNowTests(ReadoutCommandCase):
    def test_each_result_printed_when_it_arrives(self) -> None:
        d = self.table.run(self.session, "readout now heat-1 water-2")
        self.assertEqual([keys for keys, _ in self.gateway.reads], [["heat-1"], ["water-2"]])
        self.assertEqual(self.printed, ["Reading 2 meter(s); Ctrl-C stops waiting."])
        water = self.readout.meters["water-2"]
        water.last_error = "the meter at address 2 did not answer (4 tries)"
        self.gateway.reads[1][1].callback({"water-2": None})
        self.assertEqual(self.printed[-1], "  water-2: FAILED: the meter at address 2 did not answer (4 tries)")
        self.assertNoResult(d)
        self.gateway.reads[0][1].callback({"heat-1": self.reading("heat-1", 1)})
        self.assertEqual(self.printed[-1], "  heat-1: 2024-03-12 14:23:00  48 213 kWh, 1 234.56 m³")
        reply = self.successResultOf(d)
        self.assertEqual(reply.text, "Read 2 meter(s): 1 good, 1 failed.")
        self.assertTrue(reply.error, "a failed meter makes 'ssh gw readout now' exit 1")

    def test_all_meters_by_default(self) -> None:
        d = self.table.run(self.session, "readout now")
        self.assertEqual([keys for keys, _ in self.gateway.reads], [["heat-1"], ["water-2"], ["gas-10"]])
        for keys, waiting in self.gateway.reads:
            waiting.callback({keys[0]: self.reading(keys[0], 1)})
        reply = self.successResultOf(d)
        self.assertEqual((reply.text, reply.error), ("Read 3 meter(s): 3 good.", False))

    def test_refused(self) -> None:
        self.assertEqual(self.refused("readout now heat-1 nope other"),
                         "readout now: 'nope other' are not meters; meters: heat-1, water-2, gas-10")
        self.assertEqual(self.gateway.reads, [], "nothing read when one id is wrong")
        d = self.table.run(self.session, "readout now heat-1")
        self.gateway.reads[0][1].errback(RuntimeError("the readouts are not running"))
        reply = self.successResultOf(d)
        self.assertEqual((reply.text, reply.error), ("readout now: the readouts are not running", True))


class MeterListTests(ReadoutCommandCase):
    def test_meter_add(self) -> None:
        text = self.text("meter add flat-4 1 30405060-ABB-20-02 Flat 4  electricity")
        self.assertEqual(text, "Meter flat-4 added: line 1, address 30405060-ABB-20-02, 'Flat 4  electricity', "
                               "read every 1h (readout.interval); saved.\n'readout now flat-4' reads it now.")
        meter = self.gateway.store.config.meters["flat-4"]
        self.assertEqual((meter.line, meter.address, meter.name, meter.interval), (1, "30405060-ABB-20-02",
                                                                                   "Flat 4  electricity", ""))
        self.assertEqual(self.gateway.store.saves, 1, "saved at once")
        self.assertFalse(self.gateway.store.unsaved)
        self.text('meter add flat-5 1 7 "Flat 5"')
        self.assertEqual(self.gateway.store.config.meters["flat-5"].name, "Flat 5")

    def test_meter_add_refused(self) -> None:
        self.assertEqual(self.refused("meter add heat-9 1 12345"),
                         "meter add: Address of meter heat-9: '12345' is not allowed; use a secondary address such as "
                         "12345678-KAM-19-04 (preferred) or a primary address from 0 to 250")
        self.assertIn("Line of meter heat-9: 3 is not allowed; use a configured line: 1",
                      self.refused("meter add heat-9 3 5"))
        self.assertIn("Line of meter heat-9: 'one' is not allowed; use a whole number from 1 to 32",
                      self.refused("meter add heat-9 one 5"))
        self.assertIn("Meter Heat-9: 'Heat-9' is not allowed; name a meter with 1 to 64 lower-case letters",
                      self.refused("meter add Heat-9 1 5"))
        self.assertEqual(self.refused("meter add heat-1 1 5"),
                         "meter add: 'heat-1' is in the list already; use another ID, or change it with "
                         "set meter.heat-1.FIELD VALUE")
        self.assertIn("is missing an argument; use meter add ID LINE ADDRESS [NAME...]",
                      self.refused("meter add heat-9 1"))
        self.assertNotIn("heat-9", self.gateway.store.config.meters)
        self.assertEqual(self.gateway.store.saves, 0)

    def test_meter_remove(self) -> None:
        self.assertEqual(self.text("meter remove water-2"), "Meter water-2 removed from the list; saved.")
        self.assertEqual(list(self.gateway.store.config.meters), ["heat-1", "gas-10"])
        self.assertEqual(self.gateway.store.saves, 1)
        self.assertEqual(self.refused("meter remove water-2"),
                         "meter remove: 'water-2' is not a meter; meters: heat-1, gas-10")

    def test_set_changes_a_meter(self) -> None:
        self.assertIn("set meter.ID.FIELD VALUE", self.text("help meter"))
        self.assertIn("meter.heat-1.interval = 30s", self.text("set meter.heat-1.interval 30s"))
        self.assertEqual(self.gateway.store.config.meters["heat-1"].interval, "30s")
        self.text("set meter.heat-1.enabled off")
        self.assertFalse(self.gateway.store.config.meters["heat-1"].enabled)
        self.assertRegex(self.text("show settings meter.heat-1"), r"meter\.heat-1\.enabled\s+\S+\s+off(\n|$)",
                         "after restart: the fake state's running configuration does not follow")
        self.assertEqual(self.refused("set meter.heat-1.interval 5s"),
                         "set: Read interval of meter heat-1: '5s' is not allowed; use an interval such as 30s, 15m, 1h "
                         "or 1d (from 10 s to 1 day); leave it empty for the readout default")
        self.assertIn("Address of meter heat-1: '999' is not allowed; use a secondary address",
                      self.refused("set meter.heat-1.address 999"))
        self.assertIn("there is no meter heat-9; meters: heat-1, water-2, gas-10",
                      self.refused("set meter.heat-9.name Flat 9"))

    def test_help_and_completion(self) -> None:
        help_show = self.text("help show")
        for page in ("show meters", "show meter ID", "show readings ID [COUNT]", "show targets"):
            self.assertIn(page, help_show)
        self.assertIn("Also: delivery", self.text("help show targets"))
        self.assertIn("secondary address", self.text("help meter add"))
        self.assertIn("Ctrl-C stops waiting", self.text("help readout now"))
        self.assertEqual(self.table.complete(self.session, "show meter "), ["gas-10", "heat-1", "water-2"])
        self.assertEqual(self.table.complete(self.session, "readout now heat-1 w"), ["water-2"])
        self.assertEqual(self.table.complete(self.session, "meter remove h"), ["heat-1"])
        self.assertEqual(self.table.complete(self.session, "meter add x "), ["1"])


class AdoptTests(ReadoutCommandCase):
    def setUp(self) -> None:
        super().setUp()
        self.master = SimpleNamespace(results={"secondary": [object(), object()]}, scan=None,
                                      arbiter=SimpleNamespace(stats=None))
        self.gateway.state.bus = {1: BusView(1, self.master)}

    def test_adopt_prints_the_ids(self) -> None:
        self.gateway.adopt_result = ["kam-12345678", "sen-22110033"]
        text = self.text("mbus adopt 1 15m")
        self.assertEqual(text, "Added 2 meter(s) to the list, saved: kam-12345678, sen-22110033.\n"
                               "Read every 15m; 'show meters' lists them, 'readout now' reads them now.")
        self.assertEqual(self.gateway.adopted, [(1, "15m")])
        self.assertIn("Read every 1h (readout.interval)", self.text("mbus adopt 1"))
        self.gateway.adopt_result = []
        self.assertEqual(self.text("mbus adopt 1"),
                         "No meter added: the meters the scans of line 1 found are in the list already.")

    def test_adopt_refused(self) -> None:
        self.assertEqual(self.refused("mbus adopt 1 5s"),
                         "mbus adopt: '5s' is not a read interval; use an interval such as 30s, 15m, 1h or 1d "
                         "(from 10 s to 1 day)")
        self.assertEqual(self.refused("mbus adopt 2"), "mbus adopt: '2' is not a line; lines: 1")
        self.assertIn("is missing an argument; use mbus adopt LINE [INTERVAL]", self.refused("mbus adopt"))
        self.gateway.adopt_result = ValueError("the meter list is full: at most 1000 meters")
        self.assertEqual(self.refused("mbus adopt 1"), "mbus adopt: the meter list is full: at most 1000 meters")
        self.master.results = {}
        self.assertEqual(self.refused("mbus adopt 1"),
                         "mbus adopt: line 1 has no scan result yet; run 'mbus scan secondary 1' first")
        self.assertEqual(len(self.gateway.adopted), 1, "adopted only once: when the line had results")


class FormatTests(TestCase):
    def test_values(self) -> None:
        self.assertEqual(R.value_text({"value": 48213000, "unit": "Wh", "scale": 3}), "48 213 kWh")
        self.assertEqual(R.value_text({"value": 5432100, "unit": "Wh", "scale": 1}), "5 432.10 kWh")
        self.assertEqual(R.value_text({"value": 123456789000, "unit": "J", "scale": 6}), "123.457 GJ")
        self.assertEqual(R.value_text({"value": 0.0, "unit": "m^3/h", "scale": -3}), "0.000 m³/h")
        self.assertEqual(R.value_text({"value": 20, "unit": "", "scale": 0}), "20")
        self.assertEqual(R.value_text({"value": "2023-12-31", "unit": "", "scale": 0}), "2023-12-31")
        self.assertEqual(R.value_text({"value": 45.0, "unit": "s", "scale": 0}), "45 s")

    def test_status_flags(self) -> None:
        self.assertEqual(R.status_flags(0), [])
        self.assertEqual(R.status_flags(None), [])
        self.assertEqual(R.status_flags(0x01), ["application busy"])
        self.assertEqual(R.status_flags(0x0B), ["abnormal situation", "permanent error"])
        self.assertEqual(R.status_flags(0x24), ["power low", "manufacturer flag 1"])

    def test_age(self) -> None:
        self.assertEqual([R.format_age(s) for s in (-1, 45, 720, 11100, 2 * 86400 + 4 * 3600 + 59)],
                         ["0 s", "45 s", "12 min", "3 h 5 min", "2 d 4 h"])

