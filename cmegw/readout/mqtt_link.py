# -*- test-case-name: tests.test_readout_mqtt -*-
"""
One connection to an MQTT broker: a fresh paho-mqtt 2 client driven by the
Twisted reactor (`Link`; `cmegw.readout.mqtt.MqttTarget` makes one per
connection and decides what to publish, when to retry).

paho resolves the name, connects and does the TLS handshake in blocking
calls, so that one step runs in a thread of the reactor's pool, bounded by
`CONNECT_TIMEOUT`.  Then the socket is handed to the reactor: ``addReader``
and ``addWriter`` call ``loop_read`` and ``loop_write``, a 1 s
``LoopingCall`` calls ``loop_misc`` (keep-alive), and no thread touches the
client again.  A fresh client per connection means paho re-sends nothing
after a reconnect: whoever waited for an acknowledgement was told of the loss.

paho's callbacks only note what happened; the effects (acknowledgements,
the loss, messages) run once paho's own call has returned, so no caller code
runs inside paho, and nothing raises into the reactor.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

import attrs
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from cmegw.readout.mqtt_settings import (CONNECT_TIMEOUT, MqttSettings, connect_error_words, reason_words,
                                         refusal_words, tls_context)

#: How often paho's keep-alive bookkeeping (``loop_misc``) runs, seconds.
MISC_INTERVAL = 1.0
#: paho's own limit of unacknowledged publishes (more wait in its queue).
INFLIGHT = 40


class MqttDeliveryError(Exception):
    """A message the broker did not acknowledge; the message says why."""


@attrs.frozen
class Broker:
    """Where and as whom every connection of a target connects."""

    settings: MqttSettings
    tls: bool
    host: str
    port: int
    client_id: str
    #: The will (``offline``, retained, QoS 1) goes there.
    will_topic: str
    will_payload: bytes = b"offline"

    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@implementer(IReadDescriptor, IWriteDescriptor)
class _Descriptor:
    """The connection's socket as the reactor sees it."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def fileno(self) -> int:
        return self._link.fd

    def doRead(self) -> None:
        self._link._drive(self._link._read)

    def doWrite(self) -> None:
        self._link._drive(self._link._write)

    def connectionLost(self, reason: Any) -> None:
        self._link.abort(f"the connection to the broker was lost: {reason.getErrorMessage()}")

    def logPrefix(self) -> str:
        return "mqtt"


class Link:
    """
    One connection, from `open` until `gone` fires with the words of its end.
    `connected` (once CONNACK said yes), `lost` (once, with the words) and
    `message` (topic, payload, retain) are called on the reactor, outside paho.
    """

    log = Logger()

    def __init__(self, reactor: Any, broker: Broker, connected: Callable[[Link], None],
                 lost: Callable[[Link, str], None], message: Callable[[Link, str, bytes, bool], None]) -> None:
        self.reactor = reactor
        self.broker = broker
        self._on_connected = connected
        self._on_lost = lost
        self._on_message_received = message
        #: The paho client (None until the pool thread made it; tests reach its socket).
        self.client: paho.Client | None = None
        self.fd = -1
        #: CONNACK said yes.
        self.connected = False
        #: The connection has ended (or never began); paho is not called again.
        self.closed = False
        #: Fires with the words of the end once the connection has ended.
        self.gone: defer.Deferred[str] = defer.Deferred()
        self._opening = False
        self._cancelled = ""
        self._attached = False
        self._refused = ""
        self._socket_error = ""
        #: mid -> told "" once the broker acknowledged it, else why not.
        self._tracked: dict[int, Callable[[str], None]] = {}
        #: Acknowledged mids nobody was waiting for (yet): paho driven by the reactor acknowledges only
        #: after publish() returned, but a paho that read the socket inside publish() would not.
        self._unclaimed: set[int] = set()
        self._effects: list[Callable[[], None]] = []
        self._driving = 0
        self._descriptor = _Descriptor(self)
        self._misc = LoopingCall(self._drive, self._misc_step)
        self._misc.clock = reactor
        self._connack_timer: Any = None

    # -- what the target calls ------------------------------------------------------------

    def open(self) -> None:
        """Connect in a pool thread, then hand the socket to the reactor."""
        self._opening = True
        opening = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._connect)
        opening.addCallbacks(self._opened, self._open_failed)

    def publish(self, topic: str, payload: bytes, retain: bool, done: Callable[[str], None]) -> None:
        """Publish with QoS 1; `done` is told "" once acknowledged, else why not.  `MqttDeliveryError`, `ValueError`."""
        if self.closed or not self.connected or self.client is None:
            raise MqttDeliveryError("not connected to the broker")
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttDeliveryError(f"the MQTT client did not send it: {paho.error_string(info.rc)}")
        early = info.mid in self._unclaimed  # acknowledged before publish() returned
        self._unclaimed.clear()  # any other is stale: its mid will come round again
        if early:
            done("")
        else:
            self._tracked[info.mid] = done

    def subscribe(self, topic: str) -> None:
        if not self.closed and self.client is not None:
            self.client.subscribe(topic, qos=1)

    def disconnect(self) -> None:
        """A clean DISCONNECT (no will); `gone` fires once it is out."""
        if not self.closed and self.client is not None:
            self.client.disconnect()

    def abort(self, words: str) -> None:
        """Close the socket now, without DISCONNECT (the broker publishes the will)."""
        if self.closed:
            return
        if self._opening:
            self._cancelled = words  # the pool thread is still connecting; `_opened` closes
            return
        self._detach()
        sock = self.client.socket() if self.client is not None else None
        if sock is not None:
            sock.close()
        self._lose(words)

    # -- in the pool thread ---------------------------------------------------------------

    def _connect(self) -> None:
        """Make the client and connect it (name lookup, TCP, TLS, CONNECT queued): blocking."""
        broker, settings = self.broker, self.broker.settings
        v5 = settings.protocol == "5"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                             clean_session=None if v5 else True, protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             reconnect_on_failure=False)
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_inflight_messages_set(INFLIGHT)
        client.max_queued_messages_set(0)
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if broker.tls:
            client.tls_set_context(tls_context(settings))
            client.tls_insecure_set(False)
        client.will_set(broker.will_topic, broker.will_payload, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.enable_logger(self._paho_errors())
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client
        client.connect(broker.host, broker.port, settings.keepalive)

    # -- on the reactor -------------------------------------------------------------------

    def _opened(self, _: None) -> None:
        self._opening = False
        if self._cancelled:
            self.abort(self._cancelled)
            return
        assert self.client is not None
        sock = self.client.socket()
        if sock is None:
            self._lose("the MQTT client has no socket after connecting")
            return
        self.fd = sock.fileno()
        self._attached = True
        self.reactor.addReader(self._descriptor)
        if self.client.want_write():
            self.reactor.addWriter(self._descriptor)
        self._misc.start(MISC_INTERVAL, now=False)
        self._connack_timer = self.reactor.callLater(
            CONNECT_TIMEOUT, self.abort, f"{self.broker.where()} did not answer the MQTT CONNECT within "
                                         f"{CONNECT_TIMEOUT:g} s")

    def _open_failed(self, failure: Any) -> None:
        self._opening = False
        if self.client is not None and self.client.socket() is not None:
            self.client.socket().close()  # connected, then something after failed
        settings = self.broker.settings
        self._lose(self._cancelled or connect_error_words(failure.value, self.broker.host, self.broker.port,
                                                          settings.ca))

    def _detach(self) -> None:
        """Take the socket off the reactor (before it is closed: its number may be reused)."""
        if self._attached:
            self._attached = False
            self.reactor.removeReader(self._descriptor)
            self.reactor.removeWriter(self._descriptor)
        if self._misc.running:
            self._misc.stop()
        if self._connack_timer is not None and self._connack_timer.active():
            self._connack_timer.cancel()

    def _drive(self, step: Callable[[], Any] | None = None) -> None:
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

    def _effect(self, function: Callable[..., Any], *args: Any) -> None:
        self._effects.append(lambda: function(*args))
        if not self._driving:
            self._drive()

    def _read(self) -> None:
        assert self.client is not None
        self.client.loop_read()
        for _ in range(64):  # TLS may hold decrypted bytes that the socket no longer signals
            pending = getattr(self.client.socket(), "pending", None)
            if self.closed or pending is None or not pending():
                break
            self.client.loop_read()

    def _write(self) -> None:
        assert self.client is not None
        self.client.loop_write()

    def _misc_step(self) -> None:
        assert self.client is not None
        self.client.loop_misc()

    def _acked(self, mid: int, reason: ReasonCode) -> None:
        done = self._tracked.pop(mid, None)
        if done is None:
            self._unclaimed.add(mid)
        else:
            done(f"the broker refused it: {reason_words(reason)}" if reason.is_failure else "")

    def _lose(self, words: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._detach()
        self._effect(self._ended, words)

    def _ended(self, words: str) -> None:
        tracked, self._tracked = self._tracked, {}
        for done in tracked.values():
            done(f"the connection was lost before the broker acknowledged it ({words})")
        try:
            self._on_lost(self, words)
        finally:
            self.gone.callback(words)

    def _loss_words(self, from_broker: bool, reason: ReasonCode) -> str:
        where = self.broker.where()
        if self._refused:
            return self._refused
        if from_broker:
            return f"the broker disconnected: {reason_words(reason)}"
        if reason.value == 0x8D:
            return f"{reason_words(reason)} ({self.broker.settings.keepalive} s)"
        if reason.value == 0:
            return "disconnected"
        if not self.connected:
            if "alert certificate required" in self._socket_error:
                return f"{where} wants a client certificate (the certificate and key settings)"
            if "alert" in self._socket_error:
                return f"{where} refused the TLS connection: {self._socket_error}"
            return (f"{where} closed the connection before accepting the MQTT connect "
                    "(is it an MQTT broker, and is mqtt:// or mqtts:// right?)")
        if self._socket_error:
            return f"lost the connection to {where}: {self._socket_error}"
        return f"the broker {where} closed the connection"

    # -- paho's callbacks (they only note what happened) ----------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if self._connack_timer is not None and self._connack_timer.active():
            self._connack_timer.cancel()
        if reason.is_failure:
            self._refused = refusal_words(reason)
            self._effect(self.disconnect)
        else:
            self.connected = True
            self._effect(self._on_connected, self)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        self._lose(self._loss_words(flags.is_disconnect_packet_from_server, reason))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        self._effect(self._acked, mid, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._effect(self._on_message_received, self, message.topic, bytes(message.payload), bool(message.retain))

    def _paho_errors(self) -> logging.Logger:
        """A logger of this link alone that notes paho's errors (cheaper than ``on_log``, which formats every line)."""
        link = self

        class Note(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                # "failed to receive on socket: [Errno 104] Connection reset by peer"
                link._socket_error = re.sub(r"^.*?: (\[Errno \d+\] )?", "", record.getMessage()).lower()

        logger = logging.Logger("cmegw.readout.mqtt_link.paho", logging.ERROR)
        logger.addHandler(Note(logging.ERROR))
        return logger

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._detach()

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._attached:
            self.reactor.addWriter(self._descriptor)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._attached:
            self.reactor.removeWriter(self._descriptor)
