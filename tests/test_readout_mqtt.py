"""
Tests for cmegw.readout.mqtt: the MQTT target against a real Mosquitto on
127.0.0.1 (tests.mosquitto), driven by the real reactor with bounded waits;
the back-off and the refusals without a broker.
"""

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import attrs
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet import defer, reactor, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw.readout import mqtt_link
from cmegw.readout.mqtt import (RETRY_LONGEST, WINDOW, MqttDeliveryError, MqttSettings, MqttTarget,
                                retry_delay)
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, TARGET_OFF, StoredReading
from tests.mosquitto import Mosquitto, TestCA, publish, subscribe
from tests.support import free_port

GATEWAY = "gw1"
STATUS = f"cmegw/{GATEWAY}/status"
CONFIG_TOPIC = "homeassistant/sensor/gw1_m1/config"


@attrs.frozen
class Msg:
    topic: str
    payload: bytes
    retain: bool = True


def reading(number, meter="m1"):
    return StoredReading(id=number, meter=meter, time=1.0e9 + number, decoded={"records": []})


def payload(stored):
    return json.dumps({"id": stored.id}).encode()


def topic(stored):
    return f"cmegw/{GATEWAY}/{stored.meter}/state"


@defer.inlineCallbacks
def wait(condition, what="the condition", timeout=15.0):
    """Until `condition()` is true, looking every 20 ms, at most `timeout` s."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"{what}: not so after {timeout} s")


class RetryDelayTests(TestCase):
    def test_doubles_from_one_second_to_a_minute(self):
        self.assertEqual([retry_delay(n, lambda: 0.0) for n in range(8)], [1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(retry_delay(1000, lambda: 0.0), RETRY_LONGEST)

    def test_jitter_shortens_by_at_most_a_fifth(self):
        self.assertEqual(retry_delay(3, lambda: 1.0), 8 * 0.8)
        self.assertEqual(retry_delay(0, lambda: 0.5), 0.9)


class FakeClient:
    """Just enough of paho's client for `Link.publish`; `early` acknowledges inside publish()."""

    def __init__(self, link, early=False):
        self.link = link
        self.early = early
        self.mid = 0

    def publish(self, topic, payload, qos, retain):
        self.mid += 1
        if self.early:
            self.link._on_publish(self, None, self.mid, ReasonCode(PacketTypes.PUBACK), None)
        return SimpleNamespace(rc=0, mid=self.mid)


class LinkAcknowledgementTests(TestCase):
    def link(self, early=False):
        broker = mqtt_link.Broker(MqttSettings(), False, "127.0.0.1", 1883, "cmegw-gw1", STATUS)
        link = mqtt_link.Link(MemoryReactorClock(), broker, lambda link: None, lambda link, words: None,
                              lambda *message: None)
        link.client = FakeClient(link, early)
        link.connected = True
        return link

    def test_acknowledged_before_publish_returns(self):
        link = self.link(early=True)
        told = []
        link.publish("t", b"1", False, told.append)
        self.assertEqual(told, [""])

    def test_acknowledged_later_and_refused(self):
        link = self.link()
        told = []
        link.publish("t", b"1", False, lambda error: told.append((1, error)))
        link.publish("t", b"2", False, lambda error: told.append((2, error)))
        self.assertEqual(told, [])
        link._on_publish(link.client, None, 2, ReasonCode(PacketTypes.PUBACK, "Not authorized"), None)
        link._on_publish(link.client, None, 1, ReasonCode(PacketTypes.PUBACK), None)
        self.assertEqual(told, [(2, "the broker refused it: not authorised (the broker does not let this user do "
                                   "that)"), (1, "")])

    def test_a_stray_acknowledgement_is_not_taken_for_a_later_publish(self):
        link = self.link()
        link._on_publish(link.client, None, 1, ReasonCode(PacketTypes.PUBACK), None)  # mid 1: nobody's
        told = []
        link.client.mid = 1
        link.publish("t", b"1", False, told.append)  # mid 2
        link.client.mid = 0  # as if paho's mids came round
        link.publish("t", b"2", False, told.append)  # mid 1 again
        self.assertEqual(told, [])

    def test_loss_tells_whoever_waits(self):
        link = self.link()
        told = []
        link.publish("t", b"1", False, told.append)
        link._lose("the broker 127.0.0.1:1883 closed the connection")
        self.assertEqual(told, ["the connection was lost before the broker acknowledged it (the broker "
                                "127.0.0.1:1883 closed the connection)"])
        self.assertEqual(self.successResultOf(link.gone), "the broker 127.0.0.1:1883 closed the connection")
        self.assertRaises(mqtt_link.MqttDeliveryError, link.publish, "t", b"2", False, told.append)


class TargetWithoutBrokerTests(TestCase):
    timeout = 30

    def target(self, url, **settings):
        target = MqttTarget(MqttSettings(url=url, **settings), reactor, GATEWAY, lambda: [], payload, topic)
        self.addCleanup(target.stop)
        return target

    def test_names(self):
        target = self.target("mqtt://127.0.0.1:1883", base_topic="site/a")
        self.assertEqual((target.name, target.window, target.client_id, target.status_topic),
                         ("mqtt", WINDOW, "cmegw-gw1", "site/a/gw1/status"))
        self.assertEqual(self.target("mqtt://[::1]", client_id="me").client_id, "me")

    def test_bad_url_is_refused_by_the_settings(self):
        e = self.assertRaises(ValueError, MqttSettings, url="http://x")
        self.assertIn("mqtt://", str(e))

    def test_deliver_before_start_fails(self):
        target = self.target("mqtt://127.0.0.1:1883")
        self.assertEqual(target.status.state, TARGET_OFF)
        self.assertFalse(target.ready())
        failure = self.failureResultOf(target.deliver(reading(1)), MqttDeliveryError)
        self.assertIn("not connected", str(failure.value))

    @defer.inlineCallbacks
    def test_nobody_listens(self):
        port = free_port()
        target = self.target(f"mqtt://127.0.0.1:{port}")
        target.start()
        yield wait(lambda: target.status.state == TARGET_DOWN)
        self.assertEqual(target.status.error, f"cannot reach 127.0.0.1:{port}: connection refused")
        self.failureResultOf(target.deliver(reading(1)), MqttDeliveryError)

    @defer.inlineCallbacks
    def test_missing_ca_bundle(self):
        target = self.target("mqtts://localhost:8883", ca="/nonexistent/ca.pem")
        target.start()
        yield wait(lambda: target.status.state == TARGET_DOWN)
        self.assertEqual(target.status.error,
                         "cannot read the CA bundle (mqtt ca) /nonexistent/ca.pem: No such file or directory")

    @defer.inlineCallbacks
    def test_stop_while_connecting(self):
        target = self.target(f"mqtt://127.0.0.1:{free_port()}")
        target.start()
        yield target.stop()
        self.assertEqual(target.status.state, TARGET_OFF)
        self.assertFalse(target.ready())


class BrokerTestCase(TestCase):
    timeout = 60
    users = None
    tls = None

    @defer.inlineCallbacks
    def setUp(self):
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)
        self.broker = Mosquitto(self.folder / "broker", tls=self.tls_files(), users=self.users)
        yield self.broker.start()
        self.addCleanup(self.broker.stop)
        self.discovered = 0

    def tls_files(self):
        return None

    def discovery(self):
        self.discovered += 1
        return [Msg(CONFIG_TOPIC, b'{"name": "m1 energy"}')]

    def target(self, url=None, **settings):
        target = MqttTarget(MqttSettings(url=url or self.broker.url, **settings), reactor, GATEWAY,
                            self.discovery, payload, topic)
        self.addCleanup(target.stop)
        return target

    @defer.inlineCallbacks
    def connected(self, target=None, **settings):
        target = target or self.target(**settings)
        target.start()
        yield wait(lambda: target.status.state in (TARGET_CONNECTED, TARGET_DOWN), "connected")
        self.assertEqual((target.status.state, target.status.error), (TARGET_CONNECTED, ""))
        self.assertTrue(target.ready())
        return target

    @defer.inlineCallbacks
    def subscribe(self, topics, count, **kwargs):
        subscription = yield subscribe(self.broker, topics, count, **kwargs)
        self.addCleanup(subscription.stop)
        return subscription

    @defer.inlineCallbacks
    def down(self, target):
        yield wait(lambda: target.status.state == TARGET_DOWN, "down")
        return target.status.error


class PlainBrokerTests(BrokerTestCase):
    @defer.inlineCallbacks
    def test_online_is_retained(self):
        yield self.connected()
        subscription = yield self.subscribe([STATUS], 1)
        messages = yield subscription.done
        self.assertEqual([(m.payload, m.retain) for m in messages], [(b"online", True)])

    @defer.inlineCallbacks
    def test_will_says_offline_when_the_connection_dies_then_it_reconnects(self):
        target = yield self.connected()
        subscription = yield self.subscribe([STATUS], 3)
        yield wait(lambda: len(subscription.received()) == 1, "the retained status")
        target._link.client.socket().shutdown(socket.SHUT_RDWR)
        messages = yield subscription.done
        self.assertEqual([m.payload for m in messages], [b"online", b"offline", b"online"])
        yield wait(target.ready, "connected again")

    @defer.inlineCallbacks
    def test_readings_arrive_in_order(self):
        target = yield self.connected()
        count = 3 * WINDOW
        subscription = yield self.subscribe([f"cmegw/{GATEWAY}/+/state"], count)
        results = yield defer.gatherResults([target.deliver(reading(n)) for n in range(count)])
        self.assertEqual(results, [None] * count)
        messages = yield subscription.done
        self.assertEqual([json.loads(m.payload)["id"] for m in messages], list(range(count)))
        self.assertEqual({m.topic for m in messages}, {f"cmegw/{GATEWAY}/m1/state"})

    @defer.inlineCallbacks
    def test_deferred_fires_on_puback_and_fails_when_the_connection_drops_first(self):
        target = yield self.connected()
        self.broker.pause()
        acknowledged = target.deliver(reading(1))
        yield wait(lambda: not target._link.client.want_write(), "the publish sent")
        self.assertNoResult(acknowledged)  # the broker cannot have answered
        self.broker.resume()
        yield acknowledged
        self.broker.pause()
        lost = target.deliver(reading(2))
        yield wait(lambda: not target._link.client.want_write(), "the publish sent")
        target._link.client.socket().shutdown(socket.SHUT_RDWR)
        error = yield self.assertFailure(lost, MqttDeliveryError)
        self.assertIn("reading 2 of meter m1 was not delivered: the connection was lost before the broker "
                      "acknowledged it", str(error))

    @defer.inlineCallbacks
    def test_broker_stopped_then_restarted(self):
        target = yield self.connected()
        yield self.broker.stop()
        error = yield self.down(target)
        self.assertIn(f"127.0.0.1:{self.broker.port}", error)
        failure = yield self.assertFailure(target.deliver(reading(1)), MqttDeliveryError)
        self.assertIn("not connected to the broker", str(failure))
        yield wait(lambda: "connection refused" in target.status.error, "refused while the broker is away")
        self.assertEqual(target.status.error, f"cannot reach 127.0.0.1:{self.broker.port}: connection refused")
        yield self.broker.start()
        yield wait(target.ready, "reconnected by itself", timeout=20)
        yield target.deliver(reading(2))

    @defer.inlineCallbacks
    def test_clean_stop_says_offline(self):
        target = yield self.connected()
        subscription = yield self.subscribe([STATUS], 2)
        yield target.stop()
        self.assertEqual(target.status.state, TARGET_OFF)
        messages = yield subscription.done
        self.assertEqual([m.payload for m in messages], [b"online", b"offline"])
        yield wait(lambda: "disconnected" in self.broker.log, "the broker's log of a clean DISCONNECT (no will)")
        self.assertNotIn("closed its connection", self.broker.log)

    @defer.inlineCallbacks
    def test_discovery_on_connect_and_when_home_assistant_comes_online(self):
        yield self.connected()
        subscription = yield self.subscribe([CONFIG_TOPIC], 2)
        yield wait(lambda: len(subscription.received()) == 1, "the retained config")
        yield publish(self.broker, "homeassistant/status", b"online")
        messages = yield subscription.done
        self.assertEqual([(m.payload, m.retain) for m in messages],
                         [(b'{"name": "m1 energy"}', True), (b'{"name": "m1 energy"}', False)])
        self.assertEqual(self.discovered, 2)

    @defer.inlineCallbacks
    def test_no_discovery_without_a_prefix(self):
        target = yield self.connected(discovery_prefix="")
        yield target.deliver(reading(1))
        self.assertEqual(self.discovered, 0)

    @defer.inlineCallbacks
    def test_retained_messages_wait_for_the_connection(self):
        target = self.target()
        target.publish_retained([Msg("homeassistant/sensor/gw1_m2/config", b"m2")])
        yield self.connected(target)
        subscription = yield self.subscribe(["homeassistant/sensor/gw1_m2/config"], 2)
        yield wait(lambda: len(subscription.received()) == 1, "the retained config")
        target.publish_retained([Msg("homeassistant/sensor/gw1_m2/config", b"")])  # the meter left
        messages = yield subscription.done
        self.assertEqual([(m.payload, m.retain) for m in messages], [(b"m2", True), (b"", False)])
        yield wait(lambda: not target._retained, "the removal acknowledged")

    @defer.inlineCallbacks
    def test_mqtt_5(self):
        target = yield self.connected(protocol="5")
        subscription = yield self.subscribe([f"cmegw/{GATEWAY}/+/state"], 1)
        yield target.deliver(reading(7))
        messages = yield subscription.done
        self.assertEqual([m.payload for m in messages], [b'{"id": 7}'])

    @defer.inlineCallbacks
    def test_broker_that_does_not_answer_the_connect(self):
        self.patch(mqtt_link, "CONNECT_TIMEOUT", 0.5)
        self.broker.pause()  # the kernel still accepts the TCP connection
        target = self.target()
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, f"127.0.0.1:{self.broker.port} did not answer the MQTT CONNECT within 0.5 s")
        self.broker.resume()
        yield wait(target.ready, "connected once the broker answers")

    @defer.inlineCallbacks
    def test_plain_client_on_ipv6_literal_without_a_listener(self):
        target = self.target(f"mqtt://[::1]:{self.broker.port}")
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, f"cannot reach [::1]:{self.broker.port}: connection refused")


class PasswordTests(BrokerTestCase):
    users = {"gw": "right"}

    @defer.inlineCallbacks
    def test_right_password(self):
        target = yield self.connected(username="gw", password="right")
        yield target.deliver(reading(1))

    @defer.inlineCallbacks
    def test_wrong_password(self):
        target = self.target(username="gw", password="wrong")
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, "connection refused: not authorised (wrong user name or password)")
        self.assertFalse(target.ready())

    @defer.inlineCallbacks
    def test_wrong_password_mqtt_5(self):
        target = self.target(username="gw", password="wrong", protocol="5")
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, "connection refused: not authorised (wrong user name or password)")


class TlsTests(BrokerTestCase):
    def tls_files(self):
        self.ca = TestCA(self.folder / "ca")
        return self.ca.issue(["localhost", "127.0.0.1"])

    @defer.inlineCallbacks
    def test_verified_with_the_ca(self):
        target = yield self.connected(ca=self.ca.path)
        subscription = yield self.subscribe([f"cmegw/{GATEWAY}/+/state"], 1)
        yield target.deliver(reading(3))
        messages = yield subscription.done
        self.assertEqual([m.payload for m in messages], [b'{"id": 3}'])

    @defer.inlineCallbacks
    def test_another_ca(self):
        other = TestCA(self.folder / "other", "another CA")
        target = self.target(ca=other.path)
        target.start()
        error = yield self.down(target)
        self.assertTrue(error.startswith("certificate verify failed: "), error)
        self.assertTrue(error.endswith("(the broker's certificate does not match host localhost or is not "
                                       f"signed by the CA in {other.path})"), error)

    @defer.inlineCallbacks
    def test_system_trust_store_does_not_know_the_test_ca(self):
        target = self.target()
        target.start()
        error = yield self.down(target)
        self.assertIn("not signed by a CA of the system trust store", error)

    @defer.inlineCallbacks
    def test_plain_mqtt_on_the_tls_port(self):
        target = self.target(f"mqtt://127.0.0.1:{self.broker.port}")
        target.start()
        error = yield self.down(target)
        self.assertIn("closed the connection before accepting the MQTT connect", error)


class HostNameTests(BrokerTestCase):
    def tls_files(self):
        self.ca = TestCA(self.folder / "ca")
        return self.ca.issue(["broker.example"])

    @defer.inlineCallbacks
    def test_certificate_for_another_host(self):
        target = self.target(ca=self.ca.path)  # mqtts://localhost:port
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, "certificate verify failed: Hostname mismatch, certificate is not valid for "
                                "'localhost' (the broker's certificate is not for host localhost: connect by "
                                "a name the certificate is for)")


class ClientCertificateTests(BrokerTestCase):
    def setUp(self):
        self.folder = Path(self.mktemp()).resolve()
        self.ca = TestCA(self.folder / "ca")
        self.broker = Mosquitto(self.folder / "broker", tls=self.ca.issue(), require_certificate=True)
        self.discovered = 0
        return self.broker.start().addCallback(lambda _: self.addCleanup(self.broker.stop))

    @defer.inlineCallbacks
    def test_mutual_tls(self):
        files = self.ca.issue(["gateway"], "client", client=True)
        target = yield self.connected(ca=self.ca.path, certificate=files.certificate, key=files.key)
        yield target.deliver(reading(1))

    @defer.inlineCallbacks
    def test_without_a_client_certificate(self):
        target = self.target(ca=self.ca.path)
        target.start()
        error = yield self.down(target)
        self.assertEqual(error, f"localhost:{self.broker.port} wants a client certificate "
                                "(the certificate and key settings)")
