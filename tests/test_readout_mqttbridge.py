"""HomeAssistantMqtt: the meters' retained Home Assistant state beside the readings (a recording MQTT target)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from cmegw.config.readout import MeterConfig
from cmegw.config.store import factory_defaults
from cmegw.readout.mqttbridge import HomeAssistantMqtt
from cmegw.readout.reading import StoredReading
from cmegw.readout.scheduler import MeterStatus

ENERGY = {"value": 48213000, "unit": "Wh", "scale": 3, "quantity": "Energy", "description": "Energy",
          "storage": 0, "tariff": 0, "subunit": 0, "function": "Instantaneous value"}
VOLUME = {"value": 1234.56, "unit": "m^3", "scale": -2, "quantity": "Volume", "description": "Volume",
          "storage": 0, "tariff": 0, "subunit": 0, "function": "Instantaneous value"}
METER = {"identification": "12345678", "manufacturer": "KAM", "version": 25, "medium": 4,
         "secondary": "12345678-KAM-19-04", "primary": 1}


def reading(rid: int, *records: dict) -> StoredReading:
    return StoredReading(rid, "heat-1", 1700000000.0 + rid, True, ("68",),
                         {"meter": METER, "records": list(records), "status": 0, "name": "Flat 3", "line": 1})


class Readout:
    def __init__(self) -> None:
        self.reactor = task.Clock()
        self.meters: dict[str, MeterStatus] = {"heat-1": MeterStatus("heat-1", MeterConfig(name="Flat 3"), 900)}


class RecordingTarget:
    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish_retained(self, messages: Any) -> None:
        self.published.append(list(messages))


class BridgeTests(TestCase):
    def setUp(self) -> None:
        self.readout = Readout()
        config = factory_defaults().evolve(identity={"serial_number": "GW1"}, mqtt={"url": "mqtt://127.0.0.1:1"})
        self.bridge = HomeAssistantMqtt(self.readout, config, "gw1")
        self.bridge.target = self.recorder = RecordingTarget()  # type: ignore[assignment]
        self.status = self.readout.meters["heat-1"]

    def topics(self, batch: int = -1) -> list[str]:
        return [m.topic for m in self.recorder.published[batch]]

    def test_first_reading_announces_the_meter(self) -> None:
        self.status.last_reading = reading(1, ENERGY)
        self.bridge.meter_read(self.status)
        topics = self.topics()
        self.assertIn("homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config", topics)
        self.assertIn("cmegw/gw1/heat-1/alarm", topics)
        self.bridge.meter_read(self.status)
        self.assertEqual(len(self.recorder.published), 1, "nothing new: nothing published")

    def test_a_new_register_is_announced_a_gone_one_removed(self) -> None:
        self.status.last_reading = reading(1, ENERGY)
        self.bridge.meter_read(self.status)
        self.status.last_reading = reading(2, VOLUME)
        self.bridge.meter_read(self.status)
        batch = {m.topic: m.payload for m in self.recorder.published[-1]}
        self.assertEqual(batch["homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config"], b"")
        self.assertIn(b"total_m3", batch["homeassistant/sensor/gw1_heat-1/total_m3/config"])

    def test_alarm_published_when_it_changes(self) -> None:
        self.status.last_reading = reading(1, ENERGY)
        self.bridge.meter_read(self.status)
        self.status.failures_in_row = 3
        self.bridge.meter_read(self.status)
        self.assertEqual([(m.topic, m.payload) for m in self.recorder.published[-1]],
                         [("cmegw/gw1/heat-1/alarm", b"ON")])

    def test_removed_meter_leaves_home_assistant(self) -> None:
        self.status.last_reading = reading(1, ENERGY)
        self.bridge.meter_removed(self.status)
        batch = self.recorder.published[-1]
        self.assertTrue(all(m.payload == b"" for m in batch))
        self.assertIn("homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config", [m.topic for m in batch])
        self.assertIn("cmegw/gw1/heat-1/alarm", [m.topic for m in batch])

    def test_retained_state_at_connect(self) -> None:
        self.status.last_reading = reading(1, ENERGY)
        topics = [m.topic for m in self.bridge.retained_state()]
        self.assertIn("homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config", topics)
        self.assertIn("cmegw/gw1/heat-1/alarm", topics)

    def test_payload_and_topic(self) -> None:
        body = json.loads(self.bridge.reading_body(reading(5, ENERGY)))
        self.assertEqual((body["total_energy_consumption_kwh"], body["reading_id"], body["alarm"]), (48213, 5, False))
        self.assertEqual(self.bridge.reading_topic(reading(5, ENERGY)), "cmegw/gw1/heat-1")

    def test_no_discovery_prefix_no_configs(self) -> None:
        config = factory_defaults().evolve(mqtt={"url": "mqtt://127.0.0.1:1", "discovery_prefix": ""})
        bridge = HomeAssistantMqtt(self.readout, config, "gw1")
        self.status.last_reading = reading(1, ENERGY)
        self.assertEqual([m.topic for m in bridge.retained_state()], ["cmegw/gw1/heat-1/alarm"])
