"""ReadoutService: the schedule's readings kept and delivered from each target's queue, over a restart too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from cmegw.config.store import factory_defaults
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master, parse_meter_address
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.readout.reading import TargetStatus
from cmegw.readout.service import ReadoutService, gateway_id, state_directory
from cmegw.readout.store import ReadingStore
from cmegw.testing import BusLine, run_clock
from cmegw.readout.reading import TargetStatus as _Status


class FakeTarget:
    """Acknowledges when the test says so; can be down."""

    def __init__(self, window: int = 2) -> None:
        self.name = "mqtt"
        self.status = _Status("mqtt")
        self.window = window
        self.up = True
        self.sent: list[tuple[int, defer.Deferred]] = []

    def start(self) -> None:
        pass

    def stop(self) -> defer.Deferred:
        self.up = False
        return defer.succeed(None)

    def ready(self) -> bool:
        return self.up

    def deliver(self, reading: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.sent.append((reading.id, d))
        return d

    def ack(self, count: int = 1) -> None:
        for _ in range(count):
            self.sent.pop(0)[1].callback(None)

METERS = {"heat-1": {"address": "12345678-KAM-19-04", "name": "Flat 3 heat"},
          "gas-1": {"address": "10", "name": "Gas"}}


class ServiceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.line = BusLine(MeterBus(default_meters()), self.clock)
        self.arbiter = BusArbiter(1, self.line, self.clock)
        self.master = Master(1, self.arbiter, self.clock)
        for part in (self.arbiter, self.master):
            part.startService()
            self.addCleanup(part.stopService)
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.target = FakeTarget(window=4)
        self.config = factory_defaults().evolve(meters=METERS, readout={"interval": "1m", "alarm_after": 2})

    def read(self, line: int, address: str) -> defer.Deferred:
        return self.master.read(parse_meter_address(address))

    def service(self, config: Any = None) -> ReadoutService:
        store = ReadingStore(self.folder / "readings.sqlite", self.clock, inline=True)
        service = ReadoutService(config or self.config, self.clock, self.read, self.folder, store=store,
                                 targets=lambda readout, config: [self.target])
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def run_until_idle(self, seconds: float) -> None:
        end = self.clock.seconds() + seconds
        for _ in range(100000):
            calls = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= end]
            if not calls:
                break
            self.clock.advance(max(0.0, min(calls) - self.clock.seconds()))
        self.clock.advance(max(0.0, end - self.clock.seconds()))

    def test_schedule_stores_and_delivers(self) -> None:
        service = self.service()
        self.run_until_idle(61)
        heat = service.meters["heat-1"]
        self.assertIsNotNone(heat.last_reading)
        decoded = heat.last_reading.decoded
        self.assertEqual((decoded["name"], decoded["line"]), ("Flat 3 heat", 1))
        self.assertEqual(decoded["meter"]["identification"], "12345678")
        self.assertIn("Energy", [r["quantity"] for r in decoded["records"]])
        self.assertTrue(heat.last_reading.telegrams[0].startswith("68"))
        self.assertEqual(len(service.meters["gas-1"].last_reading.telegrams), 2, "the gas meter's two telegrams")
        delivered = []
        for _ in range(4):
            while self.target.sent:
                delivered.append(self.target.sent[0][0])
                self.target.ack()
        self.assertEqual(delivered, [1, 2])
        self.assertEqual(self.successResultOf(service.store.backlog("mqtt")), (0, None))

    def test_target_down_keeps_the_backlog_in_order(self) -> None:
        self.target.up = False
        service = self.service()
        self.run_until_idle(60 * 3 + 1)
        self.assertEqual(self.successResultOf(service.store.backlog("mqtt"))[0], 6)
        self.target.up = True
        delivered = []
        for _ in range(10):
            self.clock.advance(1)
            while self.target.sent:
                delivered.append(self.target.sent[0][0])
                self.target.ack()
        self.assertEqual(delivered, sorted(delivered))
        self.assertEqual(len(delivered), 6)

    def test_backlog_and_alarm_survive_a_restart(self) -> None:
        self.target.up = False
        service = self.service()
        self.run_until_idle(61)
        self.line.bus.meters = [m for m in self.line.bus.meters if m.primary != 10]
        self.run_until_idle(120)
        self.assertTrue(service.meters["gas-1"].alarm)
        self.assertIn("the meter at address 10 did not answer", service.meters["gas-1"].last_error)
        run_clock(self.clock, service.stopService())
        self.target = FakeTarget(window=4)
        again = self.service()
        self.assertTrue(again.meters["gas-1"].alarm, "the last reads' outcomes come from the store")
        self.assertEqual(again.meters["heat-1"].last_reading.meter, "heat-1")
        self.assertEqual(len(self.target.sent), 4, "the backlog from before the restart is sent")

    def test_read_now(self) -> None:
        service = self.service()
        results = run_clock(self.clock, service.read_now(["heat-1"]))
        self.assertEqual(results["heat-1"].meter, "heat-1")
        self.assertEqual(service.meters["gas-1"].reads, 0)

    def test_nothing_to_do_no_store(self) -> None:
        service = self.service(factory_defaults())
        self.assertFalse(service.started)
        self.assertFalse((self.folder / "readings.sqlite").exists())
        service.apply(self.config)
        self.assertTrue(service.started)
        self.assertEqual(sorted(service.meters), ["gas-1", "heat-1"])

    def test_apply_a_new_list(self) -> None:
        service = self.service()
        service.apply(self.config.evolve(meters={"heat-1": METERS["heat-1"]}))
        self.assertEqual(list(service.meters), ["heat-1"])

    def test_summary(self) -> None:
        service = self.service()
        self.run_until_idle(61)
        summary = service.store_summary()
        self.assertEqual(summary["written"], 2)
        self.assertGreater(summary["bytes"], 0)
        self.assertEqual(summary["problem"], "")
        self.assertIsInstance(service.target_statuses()["mqtt"], TargetStatus)


class DirectoryTests(unittest.TestCase):
    def test_state_directory(self) -> None:
        import os

        old = os.environ.pop("STATE_DIRECTORY", None)
        try:
            self.assertEqual(state_directory(Path("/etc/cmegw/cmegw.toml")), Path("/etc/cmegw"))
            os.environ["STATE_DIRECTORY"] = "/var/lib/cmegw"
            self.assertEqual(state_directory(Path("/etc/cmegw/cmegw.toml")), Path("/var/lib/cmegw"))
        finally:
            os.environ.pop("STATE_DIRECTORY", None)
            if old is not None:
                os.environ["STATE_DIRECTORY"] = old

    def test_gateway_id(self) -> None:
        config = factory_defaults()
        self.assertEqual(gateway_id(config.evolve(identity={"serial_number": "CMEGW-AB12"})), "cmegw-ab12")


class DefaultTargetsTests(unittest.TestCase):
    def test_targets_from_the_configuration(self) -> None:
        from cmegw.readout.service import default_targets
        from cmegw.readout.reading import StoredReading
        import json

        config = factory_defaults().evolve(
            identity={"serial_number": "GW1"}, meters=METERS, mqtt={"url": "mqtt://127.0.0.1:1"},
            push={"1": {"url": "http://127.0.0.1:9/in"}, "2": {"url": "http://127.0.0.1:9/csv", "format": "csv"},
                  "3": {"url": "http://127.0.0.1:9/off", "enabled": False}})

        class Readout:
            reactor = task.Clock()
            meters: dict = {}

        targets = default_targets(Readout(), config)
        self.assertEqual([t.name for t in targets], ["mqtt", "push.1", "push.2"])
        reading = StoredReading(3, "heat-1", 0.0, True, ("68",), {"meter": {"identification": "12345678"},
                                                                   "records": [], "status": 0})
        body = json.loads(targets[1].payload(reading))
        self.assertEqual((body["reading_id"], body["gateway"], body["meter"]), (3, "gw1", "heat-1"))
        self.assertEqual(targets[0].reading_topic(reading), "cmegw/gw1/heat-1")
