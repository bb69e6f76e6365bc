"""The readout sections of the configuration: meter list, schedule, MQTT and HTTP targets."""

from __future__ import annotations

from twisted.trial import unittest

from cmegw.config.model import Config, ConfigError
from cmegw.config.readout import format_interval, mqtt_url_parts, parse_interval
from cmegw.config.settings import apply_setting, describe, get_setting, is_secret, setting_names
from cmegw.config.store import factory_defaults, parse_config


def with_meter(**meter: object) -> Config:
    return factory_defaults().evolve(meters={"heat-1": {"address": "12345678-KAM-19-04", **meter}})


class IntervalTests(unittest.TestCase):
    def test_parse(self) -> None:
        self.assertEqual([parse_interval(t) for t in ("30s", "15m", "1h", "1d", "1h30m", "90", " 2 h ")],
                         [30, 900, 3600, 86400, 5400, 90, 7200])

    def test_refused(self) -> None:
        for text in ("", "h", "1w", "1h x", "-5m", "1.5h"):
            self.assertRaises(ValueError, parse_interval, text)

    def test_format_round_trip(self) -> None:
        for seconds in (10, 59, 60, 900, 3600, 5400, 86400):
            self.assertEqual(parse_interval(format_interval(seconds)), seconds)
        self.assertEqual(format_interval(5400), "1h30m")


class MeterListTests(unittest.TestCase):
    def test_factory_defaults(self) -> None:
        config = factory_defaults()
        self.assertEqual(config.meters, {})
        self.assertEqual(config.readout.interval_seconds, 3600)
        self.assertFalse(config.mqtt.enabled)
        self.assertEqual((config.mqtt.base_topic, config.mqtt.discovery_prefix), ("cmegw", "homeassistant"))

    def test_meter(self) -> None:
        meter = with_meter(name="Flat 3 heat", interval="15m").meters["heat-1"]
        self.assertEqual((meter.line, meter.address, meter.name, meter.interval, meter.enabled),
                         (1, "12345678-KAM-19-04", "Flat 3 heat", "15m", True))

    def test_primary_address(self) -> None:
        self.assertEqual(with_meter(address="5").meters["heat-1"].address, "5")

    def test_bad_address_names_the_setting(self) -> None:
        e = self.assertRaises(ConfigError, with_meter, address="251")
        self.assertEqual(e.setting, "meter.heat-1.address")
        self.assertIn("12345678-KAM-19-04", e.allowed)

    def test_bad_id(self) -> None:
        e = self.assertRaises(ConfigError, factory_defaults().evolve, meters={"Heat 1": {"address": "5"}})
        self.assertEqual(e.setting, "meter.Heat 1")

    def test_line_must_exist(self) -> None:
        e = self.assertRaises(ConfigError, with_meter, line=2)
        self.assertEqual(e.setting, "meter.heat-1.line")

    def test_interval_too_short(self) -> None:
        e = self.assertRaises(ConfigError, with_meter, interval="5s")
        self.assertIn("10 s", e.allowed)

    def test_round_trip_through_the_file(self) -> None:
        import tomlkit

        config = with_meter(name="Flat 3").evolve(push={"1": {"url": "https://127.0.0.1:8443/r", "auth": "bearer",
                                                               "token": "t0k"}})
        text = tomlkit.dumps(config.to_dict())
        self.assertEqual(parse_config(text, "test"), config)

    def test_old_file_without_readout_sections_loads(self) -> None:
        import tomlkit

        data = factory_defaults().to_dict()
        for section in ("readout", "mqtt", "meter", "push"):
            del data[section]
        self.assertEqual(parse_config(tomlkit.dumps(data), "test"), factory_defaults())


class TargetSettingsTests(unittest.TestCase):
    def test_mqtt_urls(self) -> None:
        config = factory_defaults()
        for url, parts in (("mqtt://127.0.0.1", (False, "127.0.0.1", 1883)),
                           ("mqtts://broker.example:8884", (True, "broker.example", 8884)),
                           ("mqtt://[::1]:1884", (False, "::1", 1884))):
            self.assertEqual(mqtt_url_parts(apply_setting(config, "mqtt.url", url).mqtt.url), parts)

    def test_bad_mqtt_urls(self) -> None:
        config = factory_defaults()
        for url in ("http://x", "mqtt://", "mqtt://h:70000", "mqtt://u:p@h", "mqtt://h/topic", "mqtt://[zz]"):
            e = self.assertRaises(ConfigError, apply_setting, config, "mqtt.url", url)
            self.assertEqual(e.setting, "mqtt.url")

    def test_bad_topic(self) -> None:
        for topic in ("a/+/b", "a/#", "/a", "a/", "a b", ""):
            e = self.assertRaises(ConfigError, apply_setting, factory_defaults(), "mqtt.base_topic", topic)
            self.assertIn("without spaces, + or #", e.allowed)
        self.assertEqual(apply_setting(factory_defaults(), "mqtt.discovery_prefix", "").mqtt.discovery_prefix, "")

    def test_push_url(self) -> None:
        e = self.assertRaises(ConfigError, factory_defaults().evolve, push={"1": {"url": "ftp://x/y"}})
        self.assertEqual(e.setting, "push.1.url")


class SettingsByNameTests(unittest.TestCase):
    def test_meter_settings_by_name(self) -> None:
        config = apply_setting(with_meter(), "meter.heat-1.interval", "30s")
        self.assertEqual(get_setting(config, "meter.heat-1.interval"), "30s")
        self.assertEqual(apply_setting(config, "meter.heat-1.enabled", "off").meters["heat-1"].enabled, False)

    def test_unknown_meter(self) -> None:
        e = self.assertRaises(ConfigError, apply_setting, factory_defaults(), "meter.gas-9.interval", "1h")
        self.assertIn("there is no meter gas-9", e.allowed)

    def test_names_and_metadata(self) -> None:
        names = list(setting_names(with_meter()))
        self.assertIn("meter.heat-1.address", names)
        self.assertIn("mqtt.url", names)
        self.assertIn("readout.retention_days", names)
        self.assertEqual(describe("meter.heat-1.interval").label, "Read interval")
        self.assertEqual(describe("readout.retention_days").unit, "days")
        self.assertTrue(is_secret("mqtt.password"))
        self.assertTrue(is_secret("push.1.token"))
        self.assertFalse(is_secret("mqtt.username"))


class SecretTests(unittest.TestCase):
    def test_redacted(self) -> None:
        from cmegw.config.settings import redacted

        config = apply_setting(factory_defaults(), "mqtt.password", "s3cret")
        config = config.evolve(push={"1": {"url": "https://127.0.0.1/r", "token": "t0k"}})
        data = redacted(config)
        self.assertEqual((data["mqtt"]["password"], data["push"]["1"]["token"], data["push"]["1"]["password"]),
                         ("(set)", "(set)", ""))
        self.assertNotIn("s3cret", repr(data))
        self.assertEqual(config.mqtt.password, "s3cret")
