"""
cmegw.readout.discovery: Home Assistant's discovery configs of the four
simulated meters (topics, device and state classes, units, devices,
availability), their removal, safe topics, the gateway's device, and every
real frame of ../shared/mbus-frames announced.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.trial.unittest import TestCase

from cmegw.readout import discovery, payload
from cmegw.readout.discovery import Message
from tests.test_readout_payload import real_readings, simulated_readings

GATEWAY_INFO = {"sw_version": "1.4.0", "configuration_url": "http://127.0.0.1:8080/meters"}
INTERVAL = 900
SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")


def announce(meter_id: str, reading: Any, gateway: str = "gw1", base: str = "cmegw",
             prefix: str = "homeassistant", interval: float = INTERVAL) -> list[Message]:
    return discovery.discovery_messages(meter_id, f"{meter_id.title()} meter", reading, gateway, base, prefix,
                                        interval, GATEWAY_INFO)


def configs(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """The configs by topic."""
    return {message.topic: json.loads(message.payload) for message in messages}


def classes(messages: list[Message]) -> dict[str, tuple[Any, Any, Any, Any]]:
    """Per sensor key: (device_class, state_class, unit_of_measurement, entity_category)."""
    found = {}
    for topic, config in configs(messages).items():
        _, component, _, key, _ = topic.split("/")
        if component == "sensor" and key not in ("status", "timestamp"):
            found[key] = (config.get("device_class"), config.get("state_class"),
                          config.get("unit_of_measurement"), config.get("entity_category"))
    return found


TI, M, DIAG = "total_increasing", "measurement", "diagnostic"


class SimulatedMeterTests(TestCase):
    def setUp(self) -> None:
        self.readings = simulated_readings()

    def test_heat_meter_classes(self) -> None:
        self.assertEqual(classes(announce("heat", self.readings["heat"])), {
            "fabrication_no": (None, None, None, DIAG),
            "total_energy_consumption_kwh": ("energy", TI, "kWh", None),
            "total_m3": ("volume", TI, "m³", None),
            "on_time_h": ("duration", TI, "h", None),
            "flow_temperature_c": ("temperature", M, "°C", None),
            "return_temperature_c": ("temperature", M, "°C", None),
            "temperature_difference_k": (None, M, "K", None),
            "power_kw": ("power", M, "kW", None),
            "volume_flow_m3h": ("volume_flow_rate", M, "m³/h", None),
            "max_power_kw": ("power", M, "kW", None),
            "meter_datetime": (None, None, None, DIAG),
            "target_energy_kwh": ("energy", None, "kWh", None),
            "target_date": ("date", None, None, None),
            "error_flags": (None, None, None, DIAG),
        })

    def test_water_meter_classes(self) -> None:
        self.assertEqual(classes(announce("water", self.readings["water"])), {
            "total_m3": ("water", TI, "m³", None),
            "target_m3": ("water", None, "m³", None),
            "target_date": ("date", None, None, None),
            "meter_datetime": (None, None, None, DIAG),
            "volume_flow_m3h": ("volume_flow_rate", M, "m³/h", None),
            "max_volume_flow_m3h": ("volume_flow_rate", M, "m³/h", None),
            "flow_temperature_c": ("temperature", M, "°C", None),
            "operating_time_h": ("duration", TI, "h", None),
            "firmware_version": (None, None, None, DIAG),
            "error_flags": (None, None, None, DIAG),
        })

    def test_electricity_meter_classes(self) -> None:
        expected = {
            "total_energy_consumption_kwh": ("energy", TI, "kWh", None),
            "total_energy_consumption_tariff_1_kwh": ("energy", TI, "kWh", None),
            "total_energy_consumption_tariff_2_kwh": ("energy", TI, "kWh", None),
            "power_kw": ("power", M, "kW", None),
            "meter_datetime": (None, None, None, DIAG),
            "firmware_version": (None, None, None, DIAG),
        }
        for n in (1, 2, 3):
            expected[f"voltage_subunit_{n}_v"] = ("voltage", M, "V", None)
            expected[f"current_subunit_{n}_a"] = ("current", M, "A", None)
        self.assertEqual(classes(announce("electricity", self.readings["electricity"])), expected)

    def test_gas_meter_classes(self) -> None:
        self.assertEqual(classes(announce("gas", self.readings["gas"])), {
            "fabrication_no": (None, None, None, DIAG),
            "total_m3": ("gas", TI, "m³", None),
            "meter_datetime": (None, None, None, DIAG),
            "volume_flow_m3h": ("volume_flow_rate", M, "m³/h", None),
            "external_temperature_c": ("temperature", M, "°C", None),
            "pressure_bar": ("pressure", M, "bar", None),
            "operating_time_h": ("duration", TI, "h", None),
            "firmware_version": (None, None, None, DIAG),
            "error_flags": (None, None, None, DIAG),
            "target_m3": ("gas", None, "m³", None),
            "target_date": ("date", None, None, None),
            "storage_2_m3": ("gas", None, "m³", None),
            "storage_2_date": ("date", None, None, None),
            "max_volume_flow_m3h": ("volume_flow_rate", M, "m³/h", None),
            "max_datetime": (None, None, None, DIAG),
        })

    def test_one_entity_per_register_and_three_more(self) -> None:
        for meter_id, reading in self.readings.items():
            topics = [message.topic for message in announce(meter_id, reading)]
            keys = [register.key for register in payload.register_keys(reading)]
            node = f"homeassistant/sensor/gw1_{meter_id}"
            self.assertEqual(topics, [f"{node}/{key}/config" for key in keys] + [
                f"homeassistant/binary_sensor/gw1_{meter_id}/alarm/config",
                f"{node}/status/config",
                f"{node}/timestamp/config",
            ])

    def test_energy_sensor_config(self) -> None:
        found = configs(announce("heat", self.readings["heat"]))
        self.assertEqual(found["homeassistant/sensor/gw1_heat/total_energy_consumption_kwh/config"], {
            "name": "Energy",
            "device_class": "energy",
            "state_class": "total_increasing",
            "unit_of_measurement": "kWh",
            "suggested_display_precision": 0,
            "unique_id": "cmegw_gw1_heat_total_energy_consumption_kwh",
            "state_topic": "cmegw/gw1/heat",
            "availability": [{"topic": "cmegw/gw1/status", "payload_available": "online",
                              "payload_not_available": "offline"}],
            "expire_after": 3 * INTERVAL,
            "device": {
                "identifiers": ["cmegw_gw1_heat"],
                "name": "Heat meter",
                "manufacturer": "Kamstrup",
                "model": "Heat meter, version 25",
                "via_device": "cmegw_gw1",
                "serial_number": "12345678",
                "configuration_url": "http://127.0.0.1:8080/meters",
            },
            "origin": {"name": "cmegw", "sw_version": "1.4.0"},
            "value_template": "{{ value_json.total_energy_consumption_kwh }}",
        })

    def test_templates_read_the_payload(self) -> None:
        """Every value_template names a key of the meter's payload (the alarm's reads `alarm`)."""
        for meter_id, reading in self.readings.items():
            body = payload.reading_payload(reading, "gw1")
            for topic, config in configs(announce(meter_id, reading)).items():
                template = config["value_template"]
                match = re.fullmatch(r"\{\{ value_json\.([a-z0-9_]+) \}\}", template)
                if topic.startswith("homeassistant/binary_sensor/"):
                    self.assertEqual(template, "{{ value }}")  # its own topic: ON or OFF
                    continue
                self.assertIsNotNone(match, template)
                self.assertIn(match.group(1), body)
                self.assertTrue(topic.endswith(f"/{match.group(1)}/config"))

    def test_alarm_status_and_last_reading(self) -> None:
        found = configs(announce("water", self.readings["water"]))
        alarm = found["homeassistant/binary_sensor/gw1_water/alarm/config"]
        self.assertEqual((alarm["device_class"], alarm["unique_id"], alarm["state_topic"], alarm["name"]),
                         ("problem", "cmegw_gw1_water_alarm", "cmegw/gw1/water/alarm", "Alarm"))
        self.assertNotIn("expire_after", alarm, "an alarm stays while the meter is silent")
        status = found["homeassistant/sensor/gw1_water/status/config"]
        self.assertEqual((status["entity_category"], status["value_template"], status.get("device_class")),
                         ("diagnostic", "{{ value_json.status }}", None))
        last = found["homeassistant/sensor/gw1_water/timestamp/config"]
        self.assertEqual((last["device_class"], last["entity_category"]), ("timestamp", "diagnostic"))
        self.assertTrue(payload.reading_payload(self.readings["water"], "gw1")["timestamp"].endswith("Z"))

    def test_every_entity_shares_device_availability_and_expiry(self) -> None:
        for meter_id, reading in self.readings.items():
            for topic, config in configs(announce(meter_id, reading, interval=60)).items():
                if "/binary_sensor/" in topic:
                    self.assertEqual(config["state_topic"], f"cmegw/gw1/{meter_id}/alarm")
                else:
                    self.assertEqual(config["expire_after"], 180)
                    self.assertEqual(config["state_topic"], f"cmegw/gw1/{meter_id}")
                self.assertEqual(config["availability"][0]["topic"], "cmegw/gw1/status")
                self.assertEqual(config["device"]["identifiers"], [f"cmegw_gw1_{meter_id}"])
                self.assertEqual(config["device"]["via_device"], "cmegw_gw1")

    def test_unique_ids_unique(self) -> None:
        ids = [config["unique_id"] for meter_id, reading in self.readings.items()
               for config in configs(announce(meter_id, reading)).values()]
        gateway = discovery.gateway_messages("gw1", "cmegw", "homeassistant", {})
        ids += [json.loads(message.payload)["unique_id"] for message in gateway]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len(ids), 14 + 10 + 12 + 15 + 4 * 3 + 1)

    def test_removal_topics_equal_config_topics(self) -> None:
        for meter_id, reading in self.readings.items():
            messages = announce(meter_id, reading)
            topics = discovery.config_topics(meter_id, reading, "gw1", "homeassistant")
            removal = discovery.removal_messages(meter_id, reading, "gw1", "homeassistant")
            self.assertEqual(topics, [message.topic for message in messages])
            self.assertEqual([message.topic for message in removal], topics)
            self.assertEqual({(message.payload, message.retain) for message in removal}, {(b"", True)})
            self.assertTrue(all(message.retain for message in messages))

    def test_manufacturer_falls_back_to_the_code(self) -> None:
        reading = self.readings["heat"]
        decoded = dict(reading.decoded, meter=dict(reading.decoded["meter"], manufacturer="XYZ", version=None))
        unknown = type(reading)(reading.id, reading.meter, reading.time, True, reading.telegrams, decoded)
        device = json.loads(announce("heat", unknown)[0].payload)["device"]
        self.assertEqual((device["manufacturer"], device["model"]), ("XYZ", "Heat meter"))


class TopicTests(TestCase):
    def test_segments_are_safe(self) -> None:
        reading = simulated_readings()["heat"]
        messages = discovery.discovery_messages("a+b#c/d e", "Odd", reading, "gw/1+#", "top/+/#//x", "ha/#",
                                                60, {})
        for message in messages:
            self.assertNotIn("+", message.topic)
            self.assertNotIn("#", message.topic)
            self.assertNotIn("//", message.topic)
            levels = message.topic.split("/")
            self.assertEqual(levels[:3], ["ha", "_", "sensor" if "/sensor/" in message.topic else "binary_sensor"])
            self.assertEqual(levels[3], "gw_1___a_b_c_d_e")
            self.assertTrue(SEGMENT.match(levels[4]))
            config = json.loads(message.payload)
            self.assertTrue(config["state_topic"].startswith("top/_/_/x/gw_1__/a_b_c_d_e"))
            self.assertEqual(config["availability"][0]["topic"], "top/_/_/x/gw_1__/status")
            self.assertEqual(config["device"]["name"], "Odd")

    def test_topics_shared_with_the_mqtt_target(self) -> None:
        self.assertEqual(discovery.state_topic("cmegw/", "gw1", "heat"), "cmegw/gw1/heat")
        self.assertEqual(discovery.status_topic("/site/cmegw", "gw1"), "site/cmegw/gw1/status")
        self.assertRaises(ValueError, discovery.state_topic, "//", "gw1", "heat")

    def test_gateway_device(self) -> None:
        [message] = discovery.gateway_messages("gw1", "cmegw", "homeassistant",
                                               {"name": "Boiler room", "sw_version": "1.4.0",
                                                "serial_number": "0006123456"})
        self.assertEqual(message.topic, "homeassistant/binary_sensor/gw1/status/config")
        self.assertEqual(message.topic, discovery.gateway_config_topic("gw1", "homeassistant"))
        self.assertTrue(message.retain)
        config = json.loads(message.payload)
        self.assertEqual(config["device"], {
            "identifiers": ["cmegw_gw1"], "name": "Boiler room", "manufacturer": "cmegw",
            "model": "M-Bus gateway", "sw_version": "1.4.0", "serial_number": "0006123456",
        })
        self.assertEqual((config["state_topic"], config["payload_on"], config["payload_off"], config["device_class"]),
                         ("cmegw/gw1/status", "online", "offline", "connectivity"))
        meter = json.loads(announce("heat", simulated_readings()["heat"])[0].payload)
        self.assertIn(meter["device"]["via_device"], config["device"]["identifiers"])


class ClassTests(TestCase):
    """The rules beyond the simulated meters."""

    def register(self, **fields: Any) -> payload.Register:
        defaults = dict(key="k", value=1.0, unit_out="", quantity="", storage=0, function="Instantaneous value",
                        tariff=0, kind=payload.OTHER)
        return payload.Register(**{**defaults, **fields})

    def test_counters_outside_storage_0_have_no_state_class(self) -> None:
        energy = self.register(unit_out="kWh", kind=payload.TOTAL)
        self.assertEqual(discovery.state_class(energy), "total_increasing")
        self.assertIsNone(discovery.state_class(self.register(unit_out="kWh", kind=payload.TOTAL, storage=1)))
        self.assertIsNone(discovery.state_class(self.register(unit_out="kWh", kind=payload.TOTAL,
                                                              function="Maximum value")))
        self.assertIsNone(discovery.state_class(self.register(unit_out="kW", kind=payload.MEASUREMENT,
                                                              function="Value during error state")))
        self.assertEqual(discovery.state_class(self.register(unit_out="kW", kind=payload.MEASUREMENT,
                                                             function="Minimum value")), "measurement")

    def test_volume_by_medium(self) -> None:
        volume = self.register(unit_out="m³", kind=payload.TOTAL)
        self.assertEqual([discovery.device_class(volume, medium) for medium in (0x07, 0x06, 0x15, 0x03, 0x04, None)],
                         ["water", "water", "water", "gas", "volume", "volume"])

    def test_hca_and_unknown(self) -> None:
        hca = self.register(unit_out="", kind=payload.TOTAL, value=120)
        self.assertEqual((discovery.device_class(hca, 8), discovery.state_class(hca)), (None, "total_increasing"))
        reading = simulated_readings()["heat"]
        decoded = dict(reading.decoded, records=[{
            "value": 17, "unit": "", "scale": 0, "quantity": "Manufacturer specific",
            "description": "Manufacturer specific", "storage": 0, "tariff": 0, "subunit": 0,
            "function": "Instantaneous value", "timestamp": None}])
        odd = type(reading)(1, "heat", reading.time, True, (), decoded)
        config = json.loads(announce("heat", odd)[0].payload)
        self.assertEqual((config["entity_category"], config["enabled_by_default"]), ("diagnostic", False))
        self.assertNotIn("state_class", config)


    def test_error_state_values_are_diagnostic(self) -> None:
        reading = simulated_readings()["heat"]
        decoded = dict(reading.decoded, records=[{
            "value": 99999.9, "unit": "W", "scale": -1, "quantity": "Power", "description": "Power",
            "storage": 0, "tariff": 0, "subunit": 0, "function": "Value during error state", "timestamp": None}])
        odd = type(reading)(1, "heat", reading.time, True, (), decoded)
        message = announce("heat", odd)[0]
        config = json.loads(message.payload)
        self.assertEqual(message.topic, "homeassistant/sensor/gw1_heat/error_power_kw/config")
        self.assertEqual((config["device_class"], config["unit_of_measurement"], config["entity_category"]),
                         ("power", "kW", "diagnostic"))
        self.assertNotIn("state_class", config)


class RealFrameTests(TestCase):
    def test_real_frames_announced(self) -> None:
        readings = real_readings()
        ids: set[str] = set()
        for name, reading in readings:
            messages = announce(reading.meter, reading)
            self.assertEqual([m.topic for m in messages],
                             discovery.config_topics(reading.meter, reading, "gw1", "homeassistant"), name)
            for message in messages:
                levels = message.topic.split("/")
                self.assertEqual(len(levels), 5, message.topic)
                self.assertTrue(all(SEGMENT.match(level) for level in levels), message.topic)
                config = json.loads(message.payload)
                self.assertNotIn(config["unique_id"], ids, name)
                ids.add(config["unique_id"])
                if config.get("state_class") == "total_increasing":
                    self.assertIn(config.get("device_class"), ("energy", "water", "gas", "volume", "duration",
                                                               "weight", None), (name, config))
                if "unit_of_measurement" in config and config.get("device_class") == "energy":
                    self.assertEqual(config["unit_of_measurement"], "kWh")
        self.assertGreater(len(ids), 1000)
