"""
The TLS policy of `cmegw.tls.contexts` against real clients: a loopback HTTPS
listener built with `certificate_options` (as HTTPS and the tunnel's TLS
listener are), probed with Debian's ``openssl s_client`` (skipped when absent)
and with a pyOpenSSL client that asks to renegotiate.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import struct
import subprocess
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest
from twisted.web import server, static

from cmegw.tls.certificates import parse_certificates, parse_private_key
from cmegw.tls.contexts import CIPHERS, NO_RENEGOTIATION, certificate_options, client_options
from cmegw.tls.store import generate_self_signed

OPENSSL = shutil.which("openssl")
#: Seconds any client process or connection may take.
LIMIT = 10
#: TLS 1.2 suites a client must not get: no forward secrecy, or CBC with HMAC.
WEAK = ("ECDHE-ECDSA-AES256-SHA", "AES128-SHA", "AES256-SHA256", "AES128-SHA256", "ECDHE-RSA-AES128-SHA")


def _rsa_pair() -> tuple[x509.Certificate, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    return certificate, key


def _ec_pair() -> tuple[x509.Certificate, Any]:
    cert_pem, key_pem = generate_self_signed("localhost")
    return parse_certificates(cert_pem)[0], parse_private_key(key_pem)


class _Listener:
    """An HTTPS site on 127.0.0.1 with the project's server options."""

    def __init__(self, test: unittest.TestCase, pair: tuple[x509.Certificate, Any]) -> None:
        options = certificate_options(pair[0], pair[1], [])
        site = server.Site(static.Data(b"hello\n", "text/plain"))
        self.port = reactor.listenTCP(0, TLSMemoryBIOFactory(options, False, site), interface="127.0.0.1")
        test.addCleanup(self.port.stopListening)
        self.number = self.port.getHost().port


def _s_client(port: int, *args: str) -> tuple[int, str]:
    """Run s_client once (in a thread: the reactor serves meanwhile), bounded by LIMIT."""
    assert OPENSSL is not None
    try:
        done = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                               *args], input=b"", capture_output=True, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, (done.stdout + done.stderr).decode("latin-1")


def _renegotiate(port: int) -> str:
    """Handshake with TLS 1.2, then ask to renegotiate: what happened, in a word."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket; the kernel bounds each wait instead
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", LIMIT, 0))
    try:
        connection = SSL.Connection(context, sock)
        connection.set_connect_state()
        connection.do_handshake()
        if not connection.renegotiate():
            return "not started"
        try:
            for _ in range(20):  # bounded: the handshake needs a few round trips at most
                connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                connection.recv(4096)
                if not connection.renegotiate_pending():
                    return "renegotiated"
        except SSL.Error as e:
            return f"refused: {e}"
        return "still pending"
    finally:
        sock.close()


class CipherPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        if OPENSSL is None:
            raise unittest.SkipTest("openssl (the command) is not installed")

    @defer.inlineCallbacks
    def _accepts(self, pair: Any, strong: tuple[str, ...]) -> Any:
        listener = _Listener(self, pair)
        for cipher in WEAK:
            code, output = yield threads.deferToThread(_s_client, listener.number, "-tls1_2", "-cipher", cipher)
            self.assertNotEqual(code, 0, f"{cipher} was accepted:\n{output[-600:]}")
            self.assertNotIn(f"Cipher is {cipher}", output)
        for cipher in strong:
            code, output = yield threads.deferToThread(_s_client, listener.number, "-tls1_2", "-cipher", cipher)
            self.assertEqual(code, 0, f"{cipher} was refused:\n{output[-600:]}")
            self.assertIn(f"Cipher is {cipher}", output)

    def test_ecdsa_key(self) -> Any:
        return self._accepts(_ec_pair(), ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                          "ECDHE-ECDSA-CHACHA20-POLY1305"))

    def test_rsa_key(self) -> Any:
        return self._accepts(_rsa_pair(), ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"))

    @defer.inlineCallbacks
    def test_tls13_standard_suites(self) -> Any:
        listener = _Listener(self, _ec_pair())
        for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
            code, output = yield threads.deferToThread(_s_client, listener.number, "-tls1_3",
                                                       "-ciphersuites", suite)
            self.assertEqual(code, 0, f"{suite} was refused:\n{output[-600:]}")
            self.assertIn(f"Cipher is {suite}", output)

    def test_cipher_string_is_ecdhe_aead(self) -> None:
        context = certificate_options(*_ec_pair(), []).getContext()
        names = SSL.Connection(context).get_cipher_list()
        tls12 = [n for n in names if not n.startswith("TLS_")]
        self.assertTrue(tls12, CIPHERS)
        for name in tls12:
            self.assertTrue(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name)


class RenegotiationTests(unittest.TestCase):
    """
    OpenSSL 3 already refuses a client's renegotiation unless told otherwise
    (``OP_ALLOW_CLIENT_RENEGOTIATION``), so the handshake test passes there
    without the policy too; the option tests check the policy itself.
    """

    def test_server_context_refuses_renegotiation(self) -> None:
        context = certificate_options(*_ec_pair(), []).getContext()
        self.assertTrue(context.set_options(0) & NO_RENEGOTIATION)  # set_options(0) tells the options

    def test_client_context_refuses_renegotiation(self) -> None:
        creator = client_options("localhost", None, None)
        context = creator._createConnection.__self__.getContext()
        self.assertTrue(context.set_options(0) & NO_RENEGOTIATION)
        self.assertEqual([n for n in SSL.Connection(context).get_cipher_list() if not n.startswith("TLS_")],
                         [n for n in SSL.Connection(certificate_options(*_ec_pair(), []).getContext())
                          .get_cipher_list() if not n.startswith("TLS_")])

    @defer.inlineCallbacks
    def test_client_renegotiation_refused(self) -> Any:
        listener = _Listener(self, _ec_pair())
        outcome = yield threads.deferToThread(_renegotiate, listener.number)
        self.assertTrue(outcome.startswith("refused"), outcome)
        self.assertIn("renegotiation", outcome)
