# -*- test-case-name: tests.test_readout_mqttbridge -*-
"""
The MQTT target as the readout service uses it: readings as wmbusmeters-style
JSON on ``<base>/<gateway id>/<meter id>``, and the meters' Home Assistant
state kept on the broker (retained): each meter's discovery configs (from
its last reading, published again when its registers change and at every
connect), its alarm on ``<meter>/alarm`` (``ON``/``OFF``), and the removal of
a meter's entities when it leaves the list.
"""

from __future__ import annotations

from typing import Any, Sequence

from cmegw import __version__
from cmegw.config.model import Config
from cmegw.readout import discovery, payload
from cmegw.readout.discovery import Message
from cmegw.readout.mqtt import MqttTarget
from cmegw.readout.reading import StoredReading, gateway_id


class HomeAssistantMqtt:
    """The ``mqtt`` delivery target with the meters' retained Home Assistant state beside the readings."""

    window: int

    def __init__(self, readout: Any, config: Config, gateway_id: str) -> None:
        self.readout = readout
        self.settings = config.mqtt
        self.gateway_id = gateway_id
        self.target = MqttTarget(config.mqtt, readout.reactor, gateway_id, self.retained_state,
                                 self.reading_body, self.reading_topic)
        self.name = self.target.name
        self.window = self.target.window
        #: What was last published per meter: its register keys and its alarm.
        self._keys: dict[str, tuple[str, ...]] = {}
        self._alarms: dict[str, bool] = {}
        #: The config topics published per meter (to empty those a changed register set no longer has).
        self._topics: dict[str, list[str]] = {}

    # -- DeliveryTarget, by the MQTT target ----------------------------------------------------

    @property
    def status(self) -> Any:
        return self.target.status

    def start(self) -> None:
        self.target.start()

    def stop(self) -> Any:
        return self.target.stop()

    def ready(self) -> bool:
        return self.target.ready()

    def deliver(self, reading: StoredReading) -> Any:
        return self.target.deliver(reading)

    # -- what goes to the broker -------------------------------------------------------------

    def reading_body(self, reading: StoredReading) -> bytes:
        status = self.readout.meters.get(reading.meter)
        return payload.encode(payload.reading_payload(reading, self.gateway_id, alarm=bool(status and status.alarm)))

    def reading_topic(self, reading: StoredReading) -> str:
        return discovery.state_topic(self.settings.base_topic, self.gateway_id, reading.meter)

    def _info(self) -> dict[str, Any]:
        return {"sw_version": __version__, "name": f"cmegw {self.gateway_id}", "manufacturer": "cmegw",
                "model": "M-Bus gateway", "serial_number": self.gateway_id}

    def _meter_configs(self, status: Any) -> list[Message]:
        if not self.settings.discovery_prefix or status.last_reading is None:
            return []
        return discovery.discovery_messages(status.id, status.config.name or status.id, status.last_reading,
                                            self.gateway_id, self.settings.base_topic,
                                            self.settings.discovery_prefix, status.interval, self._info())

    def _alarm(self, status: Any) -> Message:
        return discovery.alarm_message(self.settings.base_topic, self.gateway_id, status.id, status.alarm)

    def retained_state(self) -> Sequence[Message]:
        """Everything retained, sent at each connect: the gateway's device, each meter's configs and alarm."""
        messages: list[Message] = []
        if self.settings.discovery_prefix:
            messages += discovery.gateway_messages(self.gateway_id, self.settings.base_topic,
                                                   self.settings.discovery_prefix, self._info())
        for status in self.readout.meters.values():
            messages += self._meter_configs(status)
            messages.append(self._alarm(status))
            self._alarms[status.id] = status.alarm
            if status.last_reading is not None:
                self._keys[status.id] = _keys(status.last_reading)
                if self.settings.discovery_prefix:
                    self._topics[status.id] = discovery.config_topics(
                        status.id, status.last_reading, self.gateway_id, self.settings.discovery_prefix)
        return messages

    # -- hooks of the readout service ------------------------------------------------------------

    def meter_read(self, status: Any) -> None:
        """After each read: new configs when the meter's registers changed, its alarm when that changed."""
        messages: list[Message] = []
        if status.last_reading is not None:
            keys = _keys(status.last_reading)
            old = self._keys.get(status.id)
            if keys != old:
                if old is not None and self.settings.discovery_prefix:
                    wanted = set(discovery.config_topics(status.id, status.last_reading, self.gateway_id,
                                                         self.settings.discovery_prefix))
                    messages += [Message(topic, b"") for topic in self._topics.get(status.id, ()) if topic not in wanted]
                messages += self._meter_configs(status)
                self._keys[status.id] = keys
                if self.settings.discovery_prefix:
                    self._topics[status.id] = discovery.config_topics(
                        status.id, status.last_reading, self.gateway_id, self.settings.discovery_prefix)
        if self._alarms.get(status.id) != status.alarm:
            messages.append(self._alarm(status))
            self._alarms[status.id] = status.alarm
        if messages:
            self.target.publish_retained(messages)

    def meter_removed(self, status: Any) -> None:
        """A meter left the list: its entities go from Home Assistant, its alarm topic is cleared."""
        messages = [Message(discovery.alarm_topic(self.settings.base_topic, self.gateway_id, status.id), b"")]
        if status.last_reading is not None and self.settings.discovery_prefix:
            messages += discovery.removal_messages(status.id, status.last_reading, self.gateway_id,
                                                   self.settings.discovery_prefix)
        self._keys.pop(status.id, None)
        self._alarms.pop(status.id, None)
        self._topics.pop(status.id, None)
        self.target.publish_retained(messages)


def _keys(reading: StoredReading) -> tuple[str, ...]:
    return tuple(register.key for register in payload.register_keys(reading))


def make_target(readout: Any, config: Config) -> HomeAssistantMqtt:
    return HomeAssistantMqtt(readout, config, gateway_id(config))
