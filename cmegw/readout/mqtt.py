# -*- test-case-name: tests.test_readout_mqtt -*-
"""
The MQTT delivery target: paho-mqtt 2.x driven by the Twisted reactor.

Each connection is a fresh paho client.  paho resolves, connects and does the
TLS handshake in blocking calls, so that one step runs in a thread of the
reactor's pool, bounded by `CONNECT_TIMEOUT`; then the socket is handed to the
reactor (``addReader``/``addWriter`` call ``loop_read``/``loop_write``, a 1 s
``LoopingCall`` calls ``loop_misc`` for the keep-alive) and no thread touches
the client again.  A fresh client per connection means nothing unacknowledged
is re-sent by paho after a reconnect: the forwarder, whose Deferred failed,
sends the reading again.

paho's callbacks only note what happened; the effects (Deferreds fired,
status, discovery, retries) run once paho's own call has returned, so no
caller code ever runs inside paho.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Protocol, Sequence

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from cmegw.readout.mqtt_settings import (CONNECT_TIMEOUT, DEFAULT_PORTS, PROTOCOLS, MqttConnectError,
                                         MqttSettings, connect_error_words, parse_mqtt_url, reason_words,
                                         refusal_words, tls_context)
from cmegw.readout.reading import (TARGET_CONNECTED, TARGET_CONNECTING, TARGET_DOWN, TARGET_OFF,
                                   StoredReading, TargetStatus)

#: How many readings the forwarder may have in flight (unacknowledged QoS 1 publishes).
WINDOW = 32
#: Retry back-off: the first wait, doubling up to the longest (seconds), each shortened by up to JITTER.
RETRY_FIRST = 1.0
RETRY_LONGEST = 60.0
JITTER = 0.2
#: How often paho's keep-alive bookkeeping (``loop_misc``) runs, seconds.
MISC_INTERVAL = 1.0
#: How long a clean stop waits for the broker to take "offline" and then the DISCONNECT, seconds each.
STOP_TIMEOUT = 3.0

ONLINE = b"online"
OFFLINE = b"offline"

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_PORTS", "PROTOCOLS", "WINDOW", "Message", "MqttConnectError",
           "MqttDeliveryError", "MqttSettings", "MqttTarget", "parse_mqtt_url", "reason_words", "retry_delay"]


class MqttDeliveryError(Exception):
    """A reading the broker did not acknowledge; the message says why."""


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


@implementer(IReadDescriptor, IWriteDescriptor)
class _Descriptor:
    """The connection's socket as the reactor sees it."""

    def __init__(self, link: _Link) -> None:
        self._link = link

    def fileno(self) -> int:
        return self._link.fd

    def doRead(self) -> None:
        self._link.drive(self._link.read)

    def doWrite(self) -> None:
        self._link.drive(self._link.client.loop_write)

    def connectionLost(self, reason: Any) -> None:
        self._link.abort(f"the reactor dropped the connection: {reason.getErrorMessage()}")

    def logPrefix(self) -> str:
        return "mqtt"


class _Link:
    """One connection: a fresh paho client, connected in a pool thread, then driven by the reactor alone."""

    log = Logger()

    def __init__(self, target: MqttTarget) -> None:
        self.target = target
        self.reactor = target.reactor
        self.client: paho.Client | None = None
        self.fd = -1
        #: The socket is registered with the reactor.
        self.attached = False
        #: CONNACK said yes.
        self.connected = False
        #: The connection has ended (or never began); paho is not called again.
        self.closed = False
        #: The words of a refused CONNACK, and of the last socket error paho logged.
        self.refused = ""
        self.socket_error = ""
        #: mid -> what to do when the broker acknowledged it ("") or it was lost (the words).
        self.tracked: dict[int, Callable[[str], None]] = {}
        #: Acknowledged mids nobody was waiting for (yet).
        self.unclaimed: set[int] = set()
        #: Fires with the words of the loss once the connection has ended.
        self.gone: defer.Deferred[str] = defer.Deferred()
        self.opening: defer.Deferred[None] | None = None
        self.descriptor = _Descriptor(self)
        self._effects: list[Callable[[], None]] = []
        self._driving = 0
        self._misc = LoopingCall(self.drive, self._misc_step)
        self._misc.clock = self.reactor

    # -- in the pool thread -------------------------------------------------------------

    def open(self) -> None:
        """Make the client and connect it (name lookup, TCP, TLS, CONNECT queued): blocking, in a thread."""
        target, settings = self.target, self.target.settings
        v5 = settings.protocol == "5"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=target.client_id,
                             clean_session=None if v5 else True,
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             reconnect_on_failure=False)
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_inflight_messages_set(WINDOW + 8)
        client.max_queued_messages_set(0)
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if target.tls:
            client.tls_set_context(tls_context(settings))
            client.tls_insecure_set(False)
        client.will_set(target.status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client
        client.connect(target.host, target.port, settings.keepalive)

    # -- on the reactor -----------------------------------------------------------------

    def attach(self) -> None:
        """Hand the connected socket to the reactor."""
        assert self.client is not None
        sock = self.client.socket()
        if sock is None:
            self.lose("the MQTT client has no socket after connecting")
            return
        self.fd = sock.fileno()
        self.attached = True
        self.reactor.addReader(self.descriptor)
        if self.client.want_write():
            self.reactor.addWriter(self.descriptor)
        self._misc.start(MISC_INTERVAL, now=False)

    def detach(self) -> None:
        """Take the socket off the reactor (before it is closed: its number may be reused)."""
        if self.attached:
            self.attached = False
            self.reactor.removeReader(self.descriptor)
            self.reactor.removeWriter(self.descriptor)
        if self._misc.running:
            self._misc.stop()

    def drive(self, step: Callable[[], Any] | None = None) -> None:
        """Run one paho step, then what its callbacks noted; nothing raises into the reactor."""
        self._driving += 1
        try:
            if step is not None and not self.closed:
                step()
        except Exception:
            self.log.failure("the MQTT client failed")
            self.abort("internal error of the MQTT client (the log has it)")
        finally:
            self._driving -= 1
        while self._effects and not self._driving:
            effect = self._effects.pop(0)
            try:
                effect()
            except Exception:
                self.log.failure("handling an MQTT event failed")

    def effect(self, function: Callable[..., Any], *args: Any) -> None:
        self._effects.append(lambda: function(*args))
        if not self._driving:
            self.drive()

    def read(self) -> None:
        client = self.client
        assert client is not None
        client.loop_read()
        for _ in range(64):  # TLS may hold decrypted bytes that the socket no longer signals
            sock = client.socket()
            pending = getattr(sock, "pending", None)
            if self.closed or pending is None or not pending():
                break
            client.loop_read()

    def _misc_step(self) -> None:
        assert self.client is not None
        self.client.loop_misc()

    def publish(self, topic: str, payload: bytes, retain: bool, done: Callable[[str], None]) -> None:
        """Publish with QoS 1; `done` is called with "" once acknowledged, else with why not."""
        if self.closed or self.client is None:
            raise MqttDeliveryError("not connected to the broker")
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttDeliveryError(f"the MQTT client did not send it: {paho.error_string(info.rc)}")
        if info.mid in self.unclaimed:
            self.unclaimed.discard(info.mid)
            done("")
        else:
            self.tracked[info.mid] = done

    def acked(self, mid: int, reason: ReasonCode) -> None:
        done = self.tracked.pop(mid, None)
        if done is None:
            self.unclaimed.add(mid)
        else:
            done(f"the broker refused it: {reason_words(reason)}" if reason.is_failure else "")

    def abort(self, words: str) -> None:
        """Close the socket now, without DISCONNECT (the broker publishes the will)."""
        if self.closed:
            return
        self.detach()
        sock = self.client.socket() if self.client is not None else None
        if sock is not None:
            sock.close()
        self.lose(words)

    def lose(self, words: str) -> None:
        """The connection has ended: tell the target once."""
        if self.closed:
            return
        self.closed = True
        self.effect(self.target._lost, self, words)

    def where(self) -> str:
        host = self.target.host
        return f"[{host}]:{self.target.port}" if ":" in host else f"{host}:{self.target.port}"

    def loss_words(self, from_broker: bool, reason: ReasonCode) -> str:
        if self.refused:
            return self.refused
        if from_broker:
            return f"the broker disconnected: {reason_words(reason)}"
        if reason.value == 0x8D:
            return f"{reason_words(reason)} ({self.target.settings.keepalive} s)"
        if reason.value == 0:
            return "disconnected"
        if not self.connected:
            return (f"{self.where()} closed the connection before accepting the MQTT connect "
                    "(is it an MQTT broker, and is mqtt:// or mqtts:// right?)")
        if self.socket_error:
            return f"lost the connection to {self.where()}: {self.socket_error}"
        return f"the broker {self.where()} closed the connection"

    # -- paho's callbacks (they only note what happened) --------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            self.refused = refusal_words(reason)
            self.effect(client.disconnect)
        else:
            self.connected = True
            self.effect(self.target._connected, self)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        self.lose(self.loss_words(flags.is_disconnect_packet_from_server, reason))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        self.effect(self.acked, mid, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.effect(self.target._message, self, message.topic, bytes(message.payload), bool(message.retain))

    def _on_log(self, client: paho.Client, userdata: Any, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self.socket_error = re.sub(r"^.*?: (\[Errno \d+\] )?", "", text).lower()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.detach()

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self.attached:
            self.reactor.addWriter(self.descriptor)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self.attached:
            self.reactor.removeWriter(self.descriptor)


class MqttTarget:
    """
    The ``mqtt`` delivery target: readings published with QoS 1, each
    Deferred fired by its PUBACK; a retained ``<base>/<gateway>/status``
    (online, offline, and offline as the will); Home Assistant discovery
    configs after each connect and whenever ``<prefix>/status`` says online.
    """

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
        self.tls, self.host, self.port = parse_mqtt_url(settings.url)
        self.client_id = settings.client_id or f"cmegw-{gateway_id}"
        self.status_topic = "/".join(p for p in (settings.base_topic.strip("/"), gateway_id, "status") if p)
        self.status = TargetStatus(name=self.name)
        self._discovery = discovery
        self._payload = payload
        self._topic = topic
        self._rand = rand or random.Random().random
        self._running = False
        self._link: _Link | None = None
        self._retry: Any = None
        self._attempt = 0
        self._logged_error = ""
        #: Retained messages of `publish_retained` the broker has not acknowledged yet, by topic.
        self._retained: dict[str, Message] = {}

    # -- DeliveryTarget -------------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._connect()

    def stop(self) -> defer.Deferred[None]:
        """Publish "offline", disconnect (bounded by `STOP_TIMEOUT`); fires once the connection has ended."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        link = self._link
        if link is None or link.closed:
            self._link = None
            self._set_state(TARGET_OFF)
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        link.gone.addBoth(lambda _: done.callback(None))
        if link.opening is None:
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
                self.status.failures += 1
                acknowledged.errback(MqttDeliveryError(f"{what} was not delivered: {error}"))
            else:
                self.status.delivered += 1
                self.status.last_delivery = self.reactor.seconds()
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
        link = _Link(self)
        self._link = link
        self._set_state(TARGET_CONNECTING, self.status.error)
        opening = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), link.open)
        link.opening = opening
        opening.addCallbacks(lambda _: self._opened(link), lambda failure: self._open_failed(link, failure))

    def _opened(self, link: _Link) -> None:
        link.opening = None
        if not self._running or link is not self._link:
            link.abort("stopped")
            return
        try:
            link.attach()
        except Exception as e:
            self.log.failure("registering the MQTT socket failed")
            link.abort(f"cannot watch the connection: {e}")

    def _open_failed(self, link: _Link, failure: Any) -> None:
        link.opening = None
        link.lose(connect_error_words(failure.value, self.host, self.port, self.settings.ca))

    def _connected(self, link: _Link) -> None:
        if link is not self._link or link.closed:
            return
        self._attempt = 0
        self._logged_error = ""
        self._set_state(TARGET_CONNECTED)
        self.log.info("MQTT: connected to {url} as {client_id}", url=self.settings.url, client_id=self.client_id)
        self._publish(link, self.status_topic, ONLINE, True)
        for message in list(self._retained.values()):
            self._send_retained(link, message)
        self._publish_discovery(link)
        prefix = self.settings.discovery_prefix
        if prefix and link.client is not None:
            link.client.subscribe(f"{prefix}/status", qos=1)

    def _lost(self, link: _Link, words: str) -> None:
        tracked, link.tracked = link.tracked, {}
        for done in tracked.values():
            done(f"the connection was lost before the broker acknowledged it ({words})")
        if link is self._link:
            self._link = None
            if self._running:
                self._down(words)
        link.gone.callback(words)

    def _down(self, words: str) -> None:
        delay = retry_delay(self._attempt, self._rand)
        self._attempt += 1
        self._set_state(TARGET_DOWN, words)
        if words != self._logged_error:
            self._logged_error = words
            self.log.warn("MQTT: {error}; trying again in {delay:.0f} s (then less and less often)",
                          error=words, delay=delay)
        self._retry = self.reactor.callLater(delay, self._connect)

    def _close_cleanly(self, link: _Link) -> None:
        timer = self.reactor.callLater(STOP_TIMEOUT * 2, link.abort, "no answer from the broker while stopping")
        link.gone.addBoth(lambda words: timer.cancel() if timer.active() else None)

        def disconnect(error: str) -> None:
            if not link.closed and link.client is not None:
                link.client.disconnect()

        try:
            link.publish(self.status_topic, OFFLINE, True, disconnect)
        except (ValueError, MqttDeliveryError):
            link.abort("stopped")

    def _message(self, link: _Link, topic: str, payload: bytes, retain: bool) -> None:
        prefix = self.settings.discovery_prefix
        if (prefix and topic == f"{prefix}/status" and payload.strip().lower() == ONLINE and not retain
                and link is self._link and self.ready()):
            self.log.info("MQTT: {topic} says online: publishing the discovery configs again", topic=topic)
            self._publish_discovery(link)

    def _publish_discovery(self, link: _Link) -> None:
        if not self.settings.discovery_prefix:
            return
        try:
            messages = list(self._discovery())
        except Exception:
            self.log.failure("making the discovery configs failed")
            return
        for message in messages:
            self._publish(link, message.topic, message.payload, message.retain)

    def _send_retained(self, link: _Link, message: Message) -> None:
        def done(error: str) -> None:
            if not error and self._retained.get(message.topic) is message:
                del self._retained[message.topic]

        self._publish(link, message.topic, message.payload, message.retain, done)

    def _publish(self, link: _Link, topic: str, payload: bytes, retain: bool,
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
        self.status.failures += 1
        return defer.fail(MqttDeliveryError(words))
