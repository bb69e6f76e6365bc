"""Tests for cmegw.mbus.master: scans and reads over the arbiter, on a simulated bus and task.Clock."""

from __future__ import annotations

import datetime
from typing import Any, Callable

from twisted.internet import task
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.mbus import frames
from cmegw.mbus import master as master_module
from cmegw.mbus.address import SecondaryAddress, decode_bcd_ident
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import (
    MAX_SECONDARY_PROBES,
    Master,
    MeterError,
    ScanRunning,
    parse_meter_address,
)
from cmegw.mbus.meterbus import MeterBus, SimulatedMeter, default_meters
from cmegw.mbus.records import Coding, RecordSpec, scaled
from cmegw.mbus.results import SCAN_CANCELLED, SCAN_DONE, SCAN_FAILED
from cmegw.mbus.timing import character_time, exchange_floor, first_byte_timeout, silent_floor, transaction_floor
from cmegw.serial.adapter import SCHEDULING_MARGIN
from cmegw.testing import BusLine, run_clock as run
from tests.mbus_wire import spread_meters, wire_line

def meter(primary: int, ident: str, manufacturer: str = "ELV", medium: int = 0x07,
          telegrams: list[list[RecordSpec]] | None = None) -> SimulatedMeter:
    records = telegrams or [[scaled("volume", primary * 1.5, -3), scaled("energy", 1000 * primary, 3)]]
    return SimulatedMeter(primary, SecondaryAddress(ident, manufacturer, 0x01, medium), records)


#: Meters whose identification numbers share leading digits with each other and the default meters'
#: (12345678, 22110033, 30405060, 41520063): the wildcard search collides at several levels.
def crowded_meters() -> list[SimulatedMeter]:
    return default_meters() + [
        meter(20, "12345679"),            # shares 7 digits with the heat meter
        meter(21, "12340000", "KAM", 0x04),
        meter(22, "12300001"),
        meter(23, "22110034", "SEN", 0x16),
        meter(24, "99999999"),
        meter(25, "00000001"),
        meter(26, "00000010"),
    ]


def same_records(test: TestCase, specs: list[RecordSpec], decoded: tuple[Any, ...]) -> None:
    test.assertEqual(len(decoded), len(specs))
    for spec, record in zip(specs, decoded):
        test.assertEqual(bytes([record.vif, *record.vifes]), spec.vif)
        test.assertEqual((record.coding, record.storage, record.tariff, record.subunit, record.function),
                         (spec.coding, spec.storage, spec.tariff, spec.subunit, spec.function))
        test.assertEqual(record.raw, spec.value, f"VIF {spec.vif.hex()}")


class MasterTestCase(TestCase):
    meters: Callable[[], list[SimulatedMeter]] = staticmethod(default_meters)

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.bus = MeterBus(self.meters())
        self.line = BusLine(self.bus, self.clock)
        self.arbiter = BusArbiter(1, self.line, self.clock)
        self.master = Master(1, self.arbiter, self.clock)

    def scan(self, scan: Any) -> Any:
        run(self.clock, scan.deferred)
        return scan


class PrimaryScanTests(MasterTestCase):
    def test_finds_exactly_the_meters(self) -> None:
        progress: list[float] = []
        scan = self.master.scan_primary()
        scan.observe(lambda s: progress.append(s.progress))
        self.scan(scan)
        self.assertEqual(scan.state, SCAN_DONE)
        self.assertEqual([m.primary for m in scan.found], [1, 2, 5, 10])
        self.assertEqual(scan.errors, [])
        self.assertEqual(scan.done, 251)
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 1.0)
        self.assertEqual(self.master.results["primary"], scan.found)
        # SND_NKE to every address; silent ones once more (libmbus' max_search_retry = 1).
        nke = [r for r in self.line.requests if r[1] == frames.SND_NKE]
        self.assertEqual(len(nke), 4 + 2 * 247)

    def test_duration_is_what_the_timeouts_make_necessary(self) -> None:
        scan = self.scan(self.master.scan_primary(retries=0))
        per_silent = 5 * 11 / 2400 + first_byte_timeout(2400, self.arbiter.slack())
        floor = 247 * per_silent
        took = scan.finished_at - scan.started_at
        self.assertGreater(took, floor)
        self.assertLess(took, floor + 4 * (33 / 2400 + 0.05 + 0.01), "no idle after silence, only after answers")

    def test_scan_time_near_its_floor(self) -> None:
        """With a pty's or a 1 ms FTDI's slack, a scan of 0..250 takes at most 1.1x its transactions' floor."""
        for slack in (SCHEDULING_MARGIN, 0.001 + SCHEDULING_MARGIN):
            clock = task.Clock()
            master = Master(1, BusArbiter(1, BusLine(MeterBus(default_meters()), clock), clock,
                                          slack=lambda: slack), clock)
            scan = master.scan_primary()
            run(clock, scan.deferred)
            self.assertEqual([m.primary for m in scan.found], [1, 2, 5, 10])
            self.assertAlmostEqual(scan.floor, 4 * transaction_floor(5, 1, 2400) + 2 * 247 * silent_floor(5, 2400))
            self.assertLessEqual(scan.elapsed, 1.1 * scan.floor, slack)
            self.assertEqual(scan.as_dict()["floor"], round(scan.floor, 3))

    def scan_on_the_wire(self, meters: list[SimulatedMeter], baud: int, **kw: Any) -> Any:
        """A primary scan of 0..250 on a line that keeps wire time (answers after 11 bit times, the floor's)."""
        clock = task.Clock()
        line = wire_line(meters, clock, baud)
        arbiter = BusArbiter(1, line, clock, slack=lambda: SCHEDULING_MARGIN)
        scan = Master(1, arbiter, clock).scan_primary(**kw)
        run(clock, scan.deferred)
        return scan, line

    def test_dense_and_sparse_scans_on_the_wire_near_their_floor(self) -> None:
        """100 or 250 meters, or 4: at most 1.1x the floor at 2400 and 300 baud (a clean E5 costs its floor)."""
        for baud in (2400, 300):
            for meters in (spread_meters(100), spread_meters(250), default_meters()):
                for silent_retries in (1, 0):
                    scan, _ = self.scan_on_the_wire(meters, baud, silent_retries=silent_retries)
                    self.assertEqual((len(scan.found), scan.errors), (len(meters), []))
                    acknowledged = len(meters) * transaction_floor(5, 1, baud)
                    self.assertAlmostEqual(
                        scan.floor, acknowledged + (251 - len(meters)) * (1 + silent_retries) * silent_floor(5, baud))
                    self.assertLessEqual(scan.elapsed, 1.1 * scan.floor, (baud, len(meters), silent_retries))

    def test_an_acknowledged_probe_takes_its_floor(self) -> None:
        """The settle after a clean E5 lies inside the line's idle: 250 meters, one silent address."""
        scan, _ = self.scan_on_the_wire(spread_meters(250), 2400, silent_retries=0)
        silent_wait = 5 * character_time(2400) + first_byte_timeout(2400, SCHEDULING_MARGIN)
        self.assertAlmostEqual(scan.elapsed - scan.floor, silent_wait - silent_floor(5, 2400), places=6)

    def test_collision_found_on_a_dense_bus(self) -> None:
        meters = spread_meters(100)
        taken = meters[40].primary
        scan, line = self.scan_on_the_wire(meters + [meter(taken, "55555555")], 2400)
        self.assertNotIn(taken, [m.primary for m in scan.found])
        self.assertEqual(len(scan.found), 99)
        [error] = scan.errors
        self.assertTrue(error.startswith(f"address {taken}: a garbled answer"), error)
        self.assertEqual(line.requests.count(frames.snd_nke(taken)), 2, "a garbled answer is tried again")

    def test_a_second_acknowledgement_just_after_the_first_is_a_collision(self) -> None:
        """A slower meter on the same address: its E5 a character and 3 ms after the first one's is heard."""
        clock = task.Clock()
        line = wire_line(spread_meters(100), clock)
        taken = line.bus.meters[10].primary
        late = character_time(2400) + 0.003

        def second(request: bytes, reply: bytes | None) -> bytes | None:
            if request == frames.snd_nke(taken):
                clock.callLater(5 * character_time(2400) + 2 * character_time(2400) + late, line.feed, frames.ACK)
            return reply

        line.tamper = second
        arbiter = BusArbiter(1, line, clock, slack=lambda: SCHEDULING_MARGIN)
        scan = Master(1, arbiter, clock).scan_primary(addresses=range(taken - 2, taken + 3))
        run(clock, scan.deferred)
        self.assertNotIn(taken, [m.primary for m in scan.found])
        self.assertIn(f"address {taken}: a garbled answer", scan.errors[0])

    def test_no_tries_again_on_silence(self) -> None:
        """The user's choice: each silent address once; a garbled answer is still tried again."""
        self.bus.meters.append(meter(5, "55555555"))
        scan = self.scan(self.master.scan_primary(addresses=range(0, 11), silent_retries=0))
        nke = [r for r in self.line.requests if r[1] == frames.SND_NKE]
        self.assertEqual(len(nke), 7 + 3 + 2, "silent ones once, the acknowledged once, the collision twice")
        self.assertEqual([m.primary for m in scan.found], [1, 2, 10])
        self.assertIn("garbled", scan.errors[0])
        self.assertEqual(scan.as_dict()["silent_retries"], 0)

    def test_garbled_tried_again_even_with_no_retries(self) -> None:
        self.bus.meters.append(meter(5, "55555555"))
        self.scan(self.master.scan_primary(addresses=[5], retries=0))
        self.assertEqual(len(self.line.requests), 2)

    def test_identify_reads_the_secondary_addresses(self) -> None:
        scan = self.scan(self.master.scan_primary(identify=True))
        by_primary = {m.primary: m.secondary for m in scan.found}
        self.assertEqual(by_primary, {m.primary: m.address for m in default_meters()})
        self.assertEqual(scan.found[0].as_dict()["secondary"], "12345678-KAM-19-04")
        self.assertEqual(scan.found[0].medium_name, "Heat: Outlet")

    def test_two_meters_on_one_address_reported(self) -> None:
        self.bus.meters.append(meter(5, "55555555"))
        scan = self.scan(self.master.scan_primary(addresses=range(0, 11)))
        self.assertEqual([m.primary for m in scan.found], [1, 2, 10])
        [error] = scan.errors
        self.assertTrue(error.startswith("address 5: a garbled answer"), error)
        self.assertIn("two meters on one address?", error)

    def test_cancel(self) -> None:
        scan = self.master.scan_primary()
        self.clock.pump([0.1] * 30)
        scan.cancel()
        self.assertEqual(scan.state, SCAN_CANCELLED)
        self.assertTrue(scan.deferred.called)
        sent = len(self.line.requests)
        self.clock.pump([0.1] * 100)
        self.assertLessEqual(len(self.line.requests), sent, "nothing goes out after the cancel")
        self.assertFalse(self.arbiter.busy)
        self.assertLess(scan.progress, 0.1)
        self.assertNotIn("primary", self.master.results)

    def test_one_scan_at_a_time(self) -> None:
        scan = self.master.scan_primary(range(3))
        self.assertRaises(ScanRunning, self.master.scan_secondary)
        self.scan(scan)
        self.scan(self.master.scan_secondary())

    def test_line_closed_fails_the_scan(self) -> None:
        self.line.open = False
        scan = self.scan(self.master.scan_primary())
        self.assertEqual(scan.state, SCAN_FAILED)
        self.assertEqual(scan.errors, ["line 1 is not open"])

    def test_bad_address(self) -> None:
        self.assertRaises(ValueError, self.master.scan_primary, [251])

    def test_stop_service_cancels(self) -> None:
        self.master.startService()
        scan = self.master.scan_primary()
        self.clock.advance(0.1)
        self.master.stopService()
        self.assertEqual(scan.state, SCAN_CANCELLED)

    def test_finished_scans_leave_only_the_last_behind(self) -> None:
        """A long-running master keeps the last scan and each kind's last result, never a history."""
        import gc
        import weakref

        gone = []
        for kind in ("primary", "secondary", "primary", "secondary", "primary"):
            scan = self.master.scan_primary(range(0, 12)) if kind == "primary" else self.master.scan_secondary()
            self.scan(scan)
            self.assertEqual(scan.state, SCAN_DONE)
            gone.append(weakref.ref(scan))
        del scan
        gc.collect()
        self.assertEqual([ref() is None for ref in gone], [True, True, True, True, False])
        self.assertIs(self.master.scan, gone[-1]())
        self.assertEqual(sorted(self.master.results), ["primary", "secondary"])
        self.assertEqual([m.primary for m in self.master.results["primary"]], [1, 2, 5, 10])
        self.assertEqual(len(self.master.results["secondary"]), 4)


class SecondaryScanTests(MasterTestCase):
    meters = staticmethod(crowded_meters)

    def found(self, scan: Any) -> list[str]:
        return [str(m.secondary) for m in scan.found]

    def test_finds_exactly_the_meters_through_collisions(self) -> None:
        scan = self.scan(self.master.scan_secondary())
        self.assertEqual(scan.state, SCAN_DONE, scan.errors)
        self.assertEqual(scan.errors, [])
        self.assertEqual(self.found(scan), sorted(str(m.address) for m in self.bus.meters))
        self.assertEqual({m.primary for m in scan.found}, {m.primary for m in self.bus.meters})
        self.assertAlmostEqual(scan.covered, 1.0)
        selections = [r for r in self.line.requests if len(r) > 9 and r[6] == frames.CI_SELECTION]
        patterns = [decode_bcd_ident(r[7:11]) for r in selections]
        self.assertIn("1234567F", patterns, "the search went down to the last digit")
        self.assertNotIn("9FFFFFFF" + "0", patterns)
        self.assertLess(len(selections), 2 * 10 * 8 * len(self.bus.meters))
        self.assertEqual(self.line.requests[-1], frames.snd_nke(frames.SELECTED), "deselected at the end")

    def test_progress_reaches_one(self) -> None:
        progress: list[float] = []
        scan = self.master.scan_secondary()
        scan.observe(lambda s: progress.append(s.progress))
        self.scan(scan)
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 1.0)

    def test_empty_bus(self) -> None:
        self.bus.meters.clear()
        scan = self.scan(self.master.scan_secondary(retries=0))
        self.assertEqual((scan.found, scan.errors, scan.done), ([], [], 10))

    def test_floor_of_its_transactions_kept(self) -> None:
        """An empty bus: the deselections, the reset broadcast and ten silent selections tried twice."""
        self.bus.meters.clear()
        scan = self.scan(self.master.scan_secondary())
        selection = len(frames.select_secondary("0FFFFFFF"))
        floor = (2 * silent_floor(5, 2400) + exchange_floor(5, 0, 2400, expect_reply=False)
                 + 2 * 10 * silent_floor(selection, 2400))
        self.assertAlmostEqual(scan.floor, floor)
        self.assertGreater(scan.elapsed, scan.floor)
        self.assertLessEqual(scan.elapsed, 1.15 * scan.floor)
        self.assertEqual(scan.as_dict()["elapsed"], scan.elapsed)

    def test_acknowledgements_in_step_still_narrowed(self) -> None:
        """Two E5s in step read as one clean E5; the RSP_UDs always collide, and the search goes deeper."""

        class InStep(MeterBus):
            def _answer(self, meters: Any, reply: Any) -> Any:
                if meters and len(meters) > 1 and reply(meters[0]) == frames.ACK:
                    return frames.ACK
                return super()._answer(meters, reply)

        self.line.bus = InStep(self.bus.meters)
        scan = self.scan(self.master.scan_secondary())
        self.assertEqual(scan.errors, [])
        self.assertGreater(self.arbiter.stats.garbled, 0, "the collisions were heard in the RSP_UDs")
        self.assertEqual(self.found(scan), sorted(str(m.address) for m in self.bus.meters))

    def test_limit(self) -> None:
        scan = self.scan(self.master.scan_secondary(limit=3))
        self.assertEqual(len(scan.found), 3)
        self.assertEqual(scan.errors, ["stopped at 3 meters"])

    def test_meter_without_long_header_narrowed_to_its_number(self) -> None:
        def short_header(request: bytes, reply: Any) -> Any:
            if reply and len(reply) > 20:
                frame = frames.parse_frame(reply)
                return frames.long_frame(frame.c, frame.a, frames.CI_VARIABLE_SHORT, frame.data[8:])
            return reply

        self.bus.meters[:] = [meter(3, "31415926")]
        self.line.tamper = short_header
        scan = self.scan(self.master.scan_secondary())
        [found] = scan.found
        self.assertEqual((found.primary, found.secondary, found.identification), (3, None, "31415926"))

    def test_bounded(self) -> None:
        self.assertEqual(MAX_SECONDARY_PROBES, 10 * 8 * 256)

    def test_stops_after_max_probes(self) -> None:
        """A bus that garbles every selection sends the search ever deeper; the probe limit ends it."""
        self.patch(master_module, "MAX_SECONDARY_PROBES", 30)
        self.line.tamper = lambda request, reply: b"\x00\x01" if len(request) > 9 else reply
        scan = self.scan(self.master.scan_secondary(retries=0))
        self.assertEqual(scan.state, SCAN_DONE)
        self.assertEqual(scan.done, 30)
        self.assertEqual(scan.errors[-1], "stopped after 30 selections")
        self.assertTrue(all(e.endswith("several meters share this identification number") for e in scan.errors[:-1]))
        self.assertEqual(scan.found, [])
        self.assertEqual(self.line.requests[-1], frames.snd_nke(frames.SELECTED), "deselected at the end")


class ReadTests(MasterTestCase):
    def read(self, address: Any, **kw: Any) -> Any:
        result = run(self.clock, self.master.read(address, **kw))
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def read_error(self, address: Any, **kw: Any) -> str:
        result = run(self.clock, self.master.read(address, **kw))
        self.assertIsInstance(result, Failure)
        result.trap(MeterError)
        return result.getErrorMessage()

    def test_each_meter_by_primary_address_gives_its_records(self) -> None:
        for simulated in default_meters():
            reading = self.read(simulated.primary)
            self.assertEqual(reading.secondary, simulated.address)
            self.assertEqual(reading.primary, simulated.primary)
            self.assertEqual(len(reading.telegrams), len(simulated.telegrams))
            same_records(self, simulated.records, reading.records)

    def test_each_meter_by_secondary_address_gives_its_records(self) -> None:
        for simulated in default_meters():
            reading = self.read(str(simulated.address))
            self.assertEqual(reading.secondary, simulated.address)
            same_records(self, simulated.records, reading.records)
        reading = self.read("41520063")  # the identification number alone
        self.assertEqual(len(reading.telegrams), 2)

    def test_multi_telegram_toggles_fcb(self) -> None:
        reading = self.read(10)
        requests = [r for r in self.line.requests if r[0] == frames.START_SHORT and r[1] & 0x4F == 0x4B]
        self.assertEqual([r[1] for r in requests], [0x7B, 0x5B])
        self.assertTrue(reading.telegrams[0].more_follows)
        self.assertFalse(reading.telegrams[1].more_follows)

    def test_lost_reply_repeated_with_the_same_fcb(self) -> None:
        dropped: list[bytes] = []

        def drop_first_second_telegram(request: bytes, reply: Any) -> Any:
            if request[1] == 0x5B and not dropped:
                dropped.append(request)
                return None
            return reply

        self.line.tamper = drop_first_second_telegram
        reading = self.read(10)
        same_records(self, default_meters()[3].records, reading.records)
        self.assertEqual(dropped, [frames.req_ud2(10)])

    def test_rows(self) -> None:
        reading = self.read(1)
        rows = reading.rows()
        energy = rows[1]
        self.assertEqual((energy["value"], energy["unit"], energy["scale"], energy["description"]),
                         (48213000, "Wh", 3, "Energy"))
        self.assertEqual(energy["timestamp"], "2024-03-12T14:23:00")
        self.assertEqual(rows[11]["storage"], 1)
        self.assertEqual(rows[11]["timestamp"], "2023-12-31")
        self.assertIsNone(rows[10]["timestamp"], "a time point has no timestamp of its own")
        data = reading.as_dict()
        self.assertEqual(data["meter"]["manufacturer"], "KAM")
        self.assertEqual(len(data["records"]), 14)
        self.assertEqual(data["address"], "primary address 1")

    def test_statistics(self) -> None:
        self.read(10)
        self.read_error(77)
        self.scan(self.master.scan_primary(range(3)))
        s = self.master.stats
        self.assertEqual((s.reads, s.read_failures, s.telegrams, s.scans, s.scans_cancelled), (2, 1, 2, 1, 0))

    def test_silent_meter_named_after_retries(self) -> None:
        start = self.clock.seconds()
        message = self.read_error(77)
        self.assertEqual(message, "the meter at address 77 did not answer (4 tries)")
        self.assertLess(self.clock.seconds() - start, 4 * 0.4)

    def test_silent_secondary_address(self) -> None:
        message = self.read_error("87654321-ABC-01-07")
        self.assertEqual(message, "the meter at secondary address 87654321-ABC-01-07 did not answer when selected "
                                  "(4 tries)")

    def test_checksum_error_named(self) -> None:
        def corrupt(request: bytes, reply: Any) -> Any:
            if reply and len(reply) > 20:
                return reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]
            return reply

        self.line.tamper = corrupt
        message = self.read_error(2)
        self.assertTrue(message.startswith("the meter at address 2 sent an invalid answer (checksum"), message)
        self.assertTrue(message.endswith("when asked for its data (4 tries)"), message)

    def test_truncated_answer_named(self) -> None:
        self.line.tamper = lambda request, reply: reply[:30] if reply and len(reply) > 20 else reply
        message = self.read_error(5, retries=1)
        self.assertIn("the meter at address 5 sent a truncated answer", message)
        self.assertTrue(message.endswith("(2 tries)"), message)

    def test_answer_of_another_address_refused(self) -> None:
        def wrong_sender(request: bytes, reply: Any) -> Any:
            if reply and len(reply) > 20:
                frame = frames.parse_frame(reply)
                return frames.long_frame(frame.c, 99, frame.ci, frame.data)
            return reply

        self.line.tamper = wrong_sender
        message = self.read_error(1, retries=0)
        self.assertIn("A 99", message)

    def test_undecodable_answer(self) -> None:
        def broken(request: bytes, reply: Any) -> Any:
            if reply and len(reply) > 20:
                frame = frames.parse_frame(reply)
                return frames.long_frame(frame.c, frame.a, frame.ci, frame.data[:14] + b"\x04")
            return reply

        self.line.tamper = broken
        message = self.read_error(1)
        self.assertIn("the meter at address 1 sent data that cannot be decoded", message)

    def test_line_closed(self) -> None:
        self.line.open = False
        self.assertIn("line 1 is not open", self.read_error(1))

    def test_read_while_scanning_interleaves(self) -> None:
        scan = self.master.scan_primary()
        self.clock.pump([0.1] * 10)
        reading = self.read(5)
        self.assertTrue(scan.running, "the read did not wait for the scan")
        self.assertEqual(reading.secondary, default_meters()[2].address)
        self.scan(scan)
        self.assertEqual([m.primary for m in scan.found], [1, 2, 5, 10])


class AddressTests(TestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_meter_address("5"), 5)
        self.assertEqual(parse_meter_address(254), 254)
        self.assertEqual(parse_meter_address("12345678"), "12345678")
        self.assertEqual(parse_meter_address("12345678-KAM-19-04"), SecondaryAddress("12345678", "KAM", 0x19, 4))
        self.assertRaises(ValueError, parse_meter_address, "251")
        self.assertRaises(ValueError, parse_meter_address, "12-x")


class RecordTimestampTests(TestCase):
    def test_time_point_of_the_same_storage(self) -> None:
        simulated = meter(1, "11111111", telegrams=[[
            scaled("volume", 2.0, -3, Coding.INT32, storage=2),
            RecordSpec(b"\x6c", datetime.date(2024, 1, 31), Coding.INT16, storage=2),
        ]])
        clock = task.Clock()
        master = Master(1, BusArbiter(1, BusLine(MeterBus([simulated]), clock), clock), clock)
        rows = run(clock, master.read(1)).rows()
        self.assertEqual(rows[0]["timestamp"], "2024-01-31")
