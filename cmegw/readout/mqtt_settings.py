# -*- test-case-name: tests.test_readout_mqtt_settings -*-
"""
The MQTT target's settings (`MqttSettings`), its broker URL (`parse_mqtt_url`,
which the configuration model calls to validate), and what goes wrong in a
field engineer's words: refused connects and other reason codes
(`reason_words`, `refusal_words`) and failed connection attempts
(`connect_error_words`).  Imports neither paho nor the reactor.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from typing import Any

from cmegw.config.readout import MqttConfig

from cmegw.tls import certificates

#: The longest one connection attempt (name lookup aside: TCP and TLS handshake) may take, seconds.
CONNECT_TIMEOUT = 10.0
#: The MQTT versions the ``protocol`` setting accepts.
PROTOCOLS = ("3.1.1", "5")
DEFAULT_PORTS = {False: 1883, True: 8883}


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


class MqttConnectError(Exception):
    """A connection attempt that failed; the message says why in a field engineer's words."""


#: The MQTT target's settings are the configuration's ``[mqtt]`` section (checked there).
MqttSettings = MqttConfig


def parse_mqtt_url(text: str) -> tuple[bool, str, int]:
    """``(tls, host, port)`` of a broker URL; `ValueError` says what is wrong with it."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("mqtt", "mqtts"):
        raise ValueError(f"the broker URL {text!r} must start with mqtt:// (plain) or mqtts:// (TLS), "
                         "e.g. mqtt://192.168.1.10:1883")
    tls = scheme.lower() == "mqtts"
    netloc, slash, path = rest.partition("/")
    if path or "?" in netloc or "#" in netloc:
        raise ValueError(f"the broker URL {text!r} must be only mqtt(s)://host:port, without a path")
    if "@" in netloc:
        raise ValueError(f"the broker URL {text!r} must not hold a user name: use the user name "
                         "and password settings")
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"the broker URL {text!r} has {host!r} in brackets, which is not an "
                             "IPv6 address") from None
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"the broker URL {text!r} is not of the form mqtt(s)://[IPv6 address]:port")
        port_text = after[1:] if after else ""
    else:
        if netloc.count(":") > 1:
            raise ValueError(f"the broker URL {text!r}: an IPv6 address goes in brackets, "
                             "e.g. mqtt://[fd00::10]:1883")
        host, _, port_text = netloc.partition(":")
        if not host:
            raise ValueError(f"the broker URL {text!r} names no host")
        if not _HOST_NAME.match(host):
            raise ValueError(f"the broker URL {text!r}: {host!r} is not a host name or an IPv4 address")
    if not port_text and not netloc.endswith(":"):
        return tls, host, DEFAULT_PORTS[tls]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the broker URL {text!r}: the port must be a number from 1 to 65535 "
                         f"(MQTT uses {DEFAULT_PORTS[False]}, with TLS {DEFAULT_PORTS[True]})")
    return tls, host, int(port_text)


#: Reason codes (MQTT 5; paho maps the 3.1.1 CONNACK codes onto them) in words.
REASON_WORDS = {
    0x80: "unspecified error (the broker's log says more)",
    0x81: "malformed packet",
    0x82: "protocol error (does the broker speak this MQTT version? try protocol 3.1.1)",
    0x83: "implementation specific error (the broker's log says more)",
    0x84: "the broker does not speak this MQTT version (try protocol 3.1.1)",
    0x85: "the client id was rejected (set another client id)",
    0x86: "not authorised (wrong user name or password)",
    0x87: "not authorised (the broker does not let this user do that)",
    0x88: "the broker is unavailable",
    0x89: "the broker is busy",
    0x8A: "this client is banned by the broker",
    0x8B: "the broker is shutting down",
    0x8C: "bad authentication method",
    0x8D: "no answer from the broker within the keep-alive time",
    0x8E: "session taken over (another client connected with the same client id)",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x95: "packet too large for the broker",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "disconnected by the broker's administrator",
    0x99: "payload format invalid",
    0x9A: "the broker does not keep retained messages (the status and discovery topics need them)",
    0x9B: "the broker does not allow QoS 1",
    0x9C: "the broker says to use another server",
    0x9D: "the broker has moved",
    0x9F: "too many connections in a short time (the broker's connection rate limit)",
    0xA0: "maximum connect time reached",
}


def reason_words(code: Any) -> str:
    """A reason code (a number or paho's ReasonCode) in words; unknown ones by paho's name, or number."""
    value = code if isinstance(code, int) else code.value
    if value in REASON_WORDS:
        return REASON_WORDS[value]
    if hasattr(code, "getName"):
        return str(code.getName()).lower()
    return f"reason code {value:#04x}"


#: What a refused CONNACK says in words where it differs from `REASON_WORDS` (Mosquitto answers a
#: wrong password with 0x87, "not authorized", in MQTT 5 as in 3.1.1).
REFUSAL_WORDS = {0x87: REASON_WORDS[0x86]}


def refusal_words(code: Any) -> str:
    """A refused CONNACK in words: ``connection refused: not authorised (wrong user name or password)``."""
    value = code if isinstance(code, int) else code.value
    return f"connection refused: {REFUSAL_WORDS.get(value) or reason_words(code)}"


def connect_error_words(error: BaseException, host: str, port: int, ca: str = "") -> str:
    """Why a connection attempt (name lookup, TCP, TLS handshake) failed, in words."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    trust = f"the CA in {ca}" if ca else "a CA of the system trust store"
    if isinstance(error, MqttConnectError):
        return str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = (error.verify_message or str(error)).rstrip(".")
        if "mismatch" in detail:
            hint = f"the broker's certificate is not for host {host}: connect by a name the certificate is for"
        elif "expired" in detail or "not yet valid" in detail:
            hint = "the broker's certificate is out of date"
        else:
            hint = (f"the broker's certificate does not match host {host} or is not signed by {trust}")
        return f"certificate verify failed: {detail} ({hint})"
    if isinstance(error, ssl.SSLError):
        detail = error.reason or error.strerror or str(error)
        return (f"TLS handshake with {where} failed: {str(detail).lower().replace('_', ' ')} "
                "(is it a TLS port? mqtts:// needs one, mqtt:// a plain one)")
    if isinstance(error, socket.gaierror):
        return f"cannot find the broker's address {host}: {error.strerror}"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"cannot reach {where}: no answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(error, ConnectionResetError):
        return (f"{where} closed the connection during the TLS handshake (is it a TLS port? mqtts:// needs one)")
    if isinstance(error, OSError):
        reason = (error.strerror or str(error)).lower()
        return f"cannot reach {where}: {reason}"
    return f"cannot connect to {where}: {error}"


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """
    A client context that verifies the broker (chain and host name) on the
    gateway's TLS policy; the files are checked first, so `MqttConnectError`
    says what is wrong with which one.
    """
    from cmegw.tls.contexts import CIPHERS  # not at the top: the configuration model imports this module

    try:
        if settings.ca:
            certificates.read_certificates(settings.ca, "CA bundle (mqtt ca)")
        if settings.certificate or settings.key:
            if not (settings.certificate and settings.key):
                raise MqttConnectError("a client certificate needs both the certificate and the key setting")
            chain = certificates.read_certificates(settings.certificate, "client certificate")
            key = certificates.read_private_key(settings.key, "client key")
            certificates.check_key_matches(chain[0], key, "client key", settings.key,
                                           "client certificate", settings.certificate)
            certificates.check_in_time(chain[0], certificates.utcnow(), "gateway's client certificate")
    except certificates.CertificateError as e:
        raise MqttConnectError(str(e)) from None
    try:
        context = ssl.create_default_context(cafile=settings.ca or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(CIPHERS)
        if settings.certificate:
            context.load_cert_chain(settings.certificate, settings.key, password="")
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise MqttConnectError(f"OpenSSL cannot use the TLS files: {e}") from None
    return context
