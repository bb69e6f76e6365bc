"""
Tests for cmegw.readout.mqtt_settings: the broker URL, the words for reason
codes and failed connects, the TLS files; no broker, no reactor.
"""

import errno
import socket
import ssl
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from twisted.trial.unittest import TestCase

from cmegw.readout.mqtt_settings import (MqttConnectError, MqttSettings, connect_error_words, parse_mqtt_url,
                                         reason_words, refusal_words, tls_context)
from tests.mosquitto import TestCA


class ParseUrlTests(TestCase):
    def test_plain_and_tls(self):
        self.assertEqual(parse_mqtt_url("mqtt://broker.example:1884"), (False, "broker.example", 1884))
        self.assertEqual(parse_mqtt_url(" mqtts://10.0.0.5:8884/ "), (True, "10.0.0.5", 8884))
        self.assertEqual(parse_mqtt_url("MQTT://Broker"), (False, "Broker", 1883))

    def test_default_ports(self):
        self.assertEqual(parse_mqtt_url("mqtt://host"), (False, "host", 1883))
        self.assertEqual(parse_mqtt_url("mqtts://host"), (True, "host", 8883))

    def test_ipv6_in_brackets(self):
        self.assertEqual(parse_mqtt_url("mqtt://[::1]:1883"), (False, "::1", 1883))
        self.assertEqual(parse_mqtt_url("mqtts://[fd00::10]"), (True, "fd00::10", 8883))

    def refused(self, url):
        return str(self.assertRaises(ValueError, parse_mqtt_url, url))

    def test_scheme(self):
        for url in ("http://host:1883", "host:1883", "tcp://host", ""):
            self.assertIn("must start with mqtt:// (plain) or mqtts:// (TLS)", self.refused(url))

    def test_port_range(self):
        for url in ("mqtt://host:0", "mqtt://host:65536", "mqtt://host:port", "mqtt://host:", "mqtt://[::1]:x"):
            self.assertIn("the port must be a number from 1 to 65535 (MQTT uses 1883, with TLS 8883)",
                          self.refused(url))
        self.assertEqual(parse_mqtt_url("mqtt://host:65535")[2], 65535)

    def test_host(self):
        self.assertIn("names no host", self.refused("mqtt://:1883"))
        self.assertIn("'bad host' is not a host name or an IPv4 address", self.refused("mqtt://bad host:1883"))
        self.assertIn("an IPv6 address goes in brackets, e.g. mqtt://[fd00::10]:1883", self.refused("mqtt://::1:1883"))
        self.assertIn("'nope' in brackets, which is not an IPv6 address", self.refused("mqtt://[nope]:1883"))
        self.assertIn("not of the form mqtt(s)://[IPv6 address]:port", self.refused("mqtt://[::1]1883"))

    def test_no_path_no_user(self):
        self.assertIn("without a path", self.refused("mqtt://host:1883/topic"))
        self.assertIn("must not hold a user name: use the user name and password settings",
                      self.refused("mqtt://user:pw@host:1883"))


class ReasonWordsTests(TestCase):
    def test_refused_connects(self):
        wrong = "connection refused: not authorised (wrong user name or password)"
        self.assertEqual(refusal_words(ReasonCode(PacketTypes.CONNACK, "Bad user name or password")), wrong)
        self.assertEqual(refusal_words(ReasonCode(PacketTypes.CONNACK, "Not authorized")), wrong)
        self.assertEqual(refusal_words(0x85), "connection refused: the client id was rejected (set another client id)")
        self.assertEqual(refusal_words(ReasonCode(PacketTypes.CONNACK, "Unsupported protocol version")),
                         "connection refused: the broker does not speak this MQTT version (try protocol 3.1.1)")

    def test_other_codes(self):
        self.assertEqual(reason_words(ReasonCode(PacketTypes.DISCONNECT, "Session taken over")),
                         "session taken over (another client connected with the same client id)")
        self.assertEqual(reason_words(0x87), "not authorised (the broker does not let this user do that)")
        self.assertEqual(reason_words(ReasonCode(PacketTypes.SUBACK, "Wildcard subscription not supported")),
                         "wildcard subscription not supported")
        self.assertEqual(reason_words(0xFE), "reason code 0xfe")


class ConnectErrorWordsTests(TestCase):
    def words(self, error, host="127.0.0.1", port=1883, ca=""):
        return connect_error_words(error, host, port, ca)

    def test_refused_and_unreachable(self):
        refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        self.assertEqual(self.words(refused), "cannot reach 127.0.0.1:1883: connection refused")
        self.assertEqual(self.words(refused, "::1"), "cannot reach [::1]:1883: connection refused")
        self.assertEqual(self.words(OSError(errno.EHOSTUNREACH, "No route to host")),
                         "cannot reach 127.0.0.1:1883: no route to host")
        self.assertEqual(self.words(TimeoutError("timed out")), "cannot reach 127.0.0.1:1883: no answer within 10 s")

    def test_name_lookup(self):
        error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.assertEqual(self.words(error, "broker.invalid"),
                         "cannot find the broker's address broker.invalid: Name or service not known")

    def test_certificate(self):
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_message = "unable to get local issuer certificate"
        self.assertEqual(self.words(error, "broker.example", ca="/etc/cmegw/ca.pem"),
                         "certificate verify failed: unable to get local issuer certificate (the broker's "
                         "certificate does not match host broker.example or is not signed by the CA in "
                         "/etc/cmegw/ca.pem)")
        error.verify_message = "certificate has expired"
        self.assertEqual(self.words(error), "certificate verify failed: certificate has expired (the broker's "
                                            "certificate is out of date)")

    def test_configuration(self):
        self.assertEqual(self.words(MqttConnectError("cannot read the CA bundle x")), "cannot read the CA bundle x")


class TlsContextTests(TestCase):
    def setUp(self):
        self.folder = Path(self.mktemp()).resolve()
        self.ca = TestCA(self.folder)

    def test_verifies_the_broker(self):
        context = tls_context(MqttSettings(ca=self.ca.path))
        self.assertEqual((context.verify_mode, context.check_hostname), (ssl.CERT_REQUIRED, True))
        self.assertEqual(context.minimum_version, ssl.TLSVersion.TLSv1_2)

    def test_system_trust_store(self):
        self.assertEqual(tls_context(MqttSettings()).verify_mode, ssl.CERT_REQUIRED)

    def test_client_certificate(self):
        files = self.ca.issue(["gateway"], "client", client=True)
        tls_context(MqttSettings(ca=self.ca.path, certificate=files.certificate, key=files.key))

    def refused(self, **settings):
        return str(self.assertRaises(MqttConnectError, tls_context, MqttSettings(**settings)))

    def test_bad_files_are_named(self):
        first = self.ca.issue(["gateway"], "first", client=True)
        second = self.ca.issue(["gateway"], "second", client=True)
        self.assertEqual(self.refused(certificate=first.certificate, key=second.key),
                         f"the client key {second.key} does not belong to the client certificate "
                         f"{first.certificate}")
        e = self.assertRaises(ValueError, MqttSettings, certificate=first.certificate)  # the model refuses it
        self.assertIn("together", str(e))
        self.assertIn(f"the CA bundle (mqtt ca) {first.key} is not PEM", self.refused(ca=first.key))
