# -*- test-case-name: tests.test_readout_mqtt -*-
"""
The MQTT delivery target (`MqttTarget`): readings published with QoS 1, each
Deferred fired by its PUBACK; a retained ``<base>/<gateway>/status``
("online" after each connect, "offline" on a clean stop and as the will);
Home Assistant discovery configs after each connect and again whenever
``<prefix>/status`` says "online"; retries with back-off.

The connection itself (paho-mqtt 2 on the reactor) is `cmegw.readout.mqtt_link`;
the settings, the broker URL and the words for what goes wrong are
`cmegw.readout.mqtt_settings` (both re-exported here).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from cmegw.readout.mqtt_link import Broker, Link, MqttDeliveryError
from cmegw.readout.mqtt_settings import (CONNECT_TIMEOUT, DEFAULT_PORTS, PROTOCOLS, MqttConnectError,
                                         MqttSettings, parse_mqtt_url, reason_words)
from cmegw.readout.reading import (TARGET_CONNECTED, TARGET_CONNECTING, TARGET_DOWN, TARGET_OFF,
                                   StoredReading, TargetStatus)

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_PORTS", "PROTOCOLS", "WINDOW", "Message", "MqttConnectError",
           "MqttDeliveryError", "MqttSettings", "MqttTarget", "parse_mqtt_url", "reason_words", "retry_delay"]

#: How many readings the forwarder may have in flight (unacknowledged QoS 1 publishes).
WINDOW = 32
#: Retry back-off: the first wait, doubling up to the longest (seconds), each shortened by up to JITTER.
RETRY_FIRST = 1.0
RETRY_LONGEST = 60.0
JITTER = 0.2
#: How long a clean stop waits for the broker to take "offline" and the DISCONNECT, seconds.
STOP_TIMEOUT = 5.0

ONLINE = b"online"
OFFLINE = b"offline"


class Message(Protocol):
    """A message to publish: ``cmegw.readout.discovery.Message`` or anything with these attributes."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def retain(self) -> bool: ...


def retry_delay(attempt: int, rand: Callable[[], float]) -> float:
    """The wait before retry number `attempt` (0 first): 1 s doubling to 60 s, each up to 20 % shorter."""
    base = min(RETRY_LONGEST, RETRY_FIRST * 2 ** min(attempt, 16))
    return base * (1.0 - JITTER * rand())


class MqttTarget:
    """The ``mqtt`` delivery target (`cmegw.readout.reading.DeliveryTarget`)."""

    name = "mqtt"
    window = WINDOW
    log = Logger()

    def __init__(self, settings: MqttSettings, reactor: Any, gateway_id: str,
                 discovery: Callable[[], Sequence[Message]],
                 payload: Callable[[StoredReading], bytes],
                 topic: Callable[[StoredReading], str],
                 rand: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.reactor = reactor
        tls, host, port = parse_mqtt_url(settings.url)
        self.status_topic = "/".join(p for p in (settings.base_topic.strip("/"), gateway_id, "status") if p)
        self.broker = Broker(settings, tls, host, port, settings.client_id or f"cmegw-{gateway_id}",
                             self.status_topic, OFFLINE)
        self.status = TargetStatus(name=self.name)
        self._discovery = discovery
        self._payload = payload
        self._topic = topic
        self._rand = rand or random.Random().random
        self._running = False
        self._link: Link | None = None
        self._retry: Any = None
        self._attempt = 0
        self._logged_error = ""
        #: Retained messages of `publish_retained` the broker has not acknowledged yet, by topic.
        self._retained: dict[str, Message] = {}

    @property
    def client_id(self) -> str:
        return self.broker.client_id

    # -- DeliveryTarget -------------------------------------------------------------------

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._connect()

    def stop(self) -> defer.Deferred[None]:
        """Publish "offline" and disconnect (bounded by `STOP_TIMEOUT`); fires once the connection has ended."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        link, self._link = self._link, None
        if link is None or link.closed:
            self._set_state(TARGET_OFF)
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        link.gone.addBoth(lambda _: done.callback(None))
        if link.connected:
            self._close_cleanly(link)
        else:
            link.abort("stopped")
        return done.addCallback(lambda _: self._set_state(TARGET_OFF))

    def ready(self) -> bool:
        link = self._link
        return self._running and link is not None and link.connected and not link.closed

    def deliver(self, reading: StoredReading) -> defer.Deferred[None]:
        """Fires once the broker acknowledged (PUBACK) the reading; fails with `MqttDeliveryError`."""
        what = f"reading {reading.id} of meter {reading.meter}"
        link = self._link
        if not self.ready() or link is None:
            because = f": {self.status.error}" if self.status.error else ""
            return self._failed(f"{what} was not sent: not connected to the broker {self.settings.url}{because}")
        try:
            topic = self._topic(reading)
            payload = self._payload(reading)
        except Exception as e:
            return self._failed(f"{what} cannot be made into an MQTT message: {e}")
        acknowledged: defer.Deferred[None] = defer.Deferred()

        def done(error: str) -> None:
            if error:
                acknowledged.errback(MqttDeliveryError(f"{what} was not delivered: {error}"))
            else:
                acknowledged.callback(None)

        try:
            link.publish(topic, payload, False, done)
        except (ValueError, MqttDeliveryError) as e:
            return self._failed(f"{what} was not sent to {topic!r}: {e}")
        return acknowledged

    def publish_retained(self, messages: Sequence[Message]) -> None:
        """Publish retained messages (QoS 1): now if connected, else after the next connect."""
        for message in messages:
            self._retained[message.topic] = message
            if self.ready() and self._link is not None:
                self._send_retained(self._link, message)

    # -- the connection -------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        self._link = Link(self.reactor, self.broker, self._connected, self._lost, self._message)
        self._set_state(TARGET_CONNECTING, self.status.error)
        self._link.open()

    def _connected(self, link: Link) -> None:
        if link is not self._link:
            return
        self._attempt = 0
        self._logged_error = ""
        self._set_state(TARGET_CONNECTED)
        self.log.info("MQTT: connected to {url} as {client_id}", url=self.settings.url, client_id=self.client_id)
        self._publish(link, self.status_topic, ONLINE, True)
        for message in list(self._retained.values()):
            self._send_retained(link, message)
        self._publish_discovery(link)
        if self.settings.discovery_prefix:
            link.subscribe(f"{self.settings.discovery_prefix}/status")

    def _lost(self, link: Link, words: str) -> None:
        if link is not self._link:
            return
        self._link = None
        if self._running:
            delay = retry_delay(self._attempt, self._rand)
            self._attempt += 1
            self._set_state(TARGET_DOWN, words)
            if words != self._logged_error:
                self._logged_error = words
                self.log.warn("MQTT: {error}; trying again in {delay:.0f} s (then less and less often)",
                              error=words, delay=delay)
            self._retry = self.reactor.callLater(delay, self._connect)

    def _close_cleanly(self, link: Link) -> None:
        timer = self.reactor.callLater(STOP_TIMEOUT, link.abort, "no answer from the broker while stopping")
        link.gone.addBoth(lambda _: timer.cancel() if timer.active() else None)
        try:
            link.publish(self.status_topic, OFFLINE, True, lambda error: link.disconnect())
        except (ValueError, MqttDeliveryError):
            link.abort("stopped")

    def _message(self, link: Link, topic: str, payload: bytes, retain: bool) -> None:
        prefix = self.settings.discovery_prefix
        if (prefix and topic == f"{prefix}/status" and payload.strip().lower() == ONLINE and not retain
                and link is self._link and self.ready()):
            self.log.info("MQTT: {topic} says online: publishing the discovery configs again", topic=topic)
            self._publish_discovery(link)

    def _publish_discovery(self, link: Link) -> None:
        if not self.settings.discovery_prefix:
            return
        try:
            messages = list(self._discovery())
        except Exception:
            self.log.failure("making the discovery configs failed")
            return
        for message in messages:
            self._publish(link, message.topic, message.payload, message.retain)

    def _send_retained(self, link: Link, message: Message) -> None:
        def done(error: str) -> None:
            if not error and self._retained.get(message.topic) is message:
                del self._retained[message.topic]

        self._publish(link, message.topic, message.payload, message.retain, done)

    def _publish(self, link: Link, topic: str, payload: bytes, retain: bool,
                 done: Callable[[str], None] = lambda error: None) -> None:
        try:
            link.publish(topic, payload, retain, done)
        except (ValueError, MqttDeliveryError) as e:
            self.log.warn("MQTT: {topic} not published: {error}", topic=topic, error=e)

    # -- status ---------------------------------------------------------------------------

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.status.state:
            self.status.state = state
            self.status.since = self.reactor.seconds()
        self.status.error = error

    def _failed(self, words: str) -> defer.Deferred[None]:
        return defer.fail(MqttDeliveryError(words))
