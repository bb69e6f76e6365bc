"""
Tests for `cmegw.tls.store`: the self-signed certificate, validation of an
upload, the manager that applies a change without a restart, and the TLS
versions offered (handshakes in memory, no sockets).
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from cmegw.tls.certificates import CertificateError, CertificateInfo
from cmegw.tls.store import (
    SELF_SIGNED_CERT,
    SELF_SIGNED_KEY,
    TlsManager,
    generate_self_signed,
    validate_pair,
)
from tests.web_helpers import Settings

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


class _TlsProtocol:
    """What ``CertificateOptions`` looks at on the TLS protocol (ALPN of the wrapped factory)."""

    factory = SimpleNamespace(wrappedFactory=None)


TLS_PROTOCOL: Any = _TlsProtocol()


def handshake(server: SSL.Connection, version: int, rounds: int = 50) -> tuple[str, x509.Certificate | None]:
    """Run a TLS handshake in memory with a client that offers only `version`; the version agreed."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # let the client offer old versions: the server must refuse
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(rounds):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        moved = False
        for source, sink in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            sink.bio_write(data)
            moved = True
        if not moved:
            break
    certificate = client.get_peer_certificate(as_cryptography=True)
    return client.get_protocol_version_name(), certificate


class GenerateAndValidateTests(SynchronousTestCase):
    def test_self_signed(self) -> None:
        cert_pem, key_pem = generate_self_signed("gw-1", now=NOW)
        certificate, key, chain = validate_pair(cert_pem, key_pem, NOW)
        info = CertificateInfo.of(certificate)
        self.assertTrue(info.self_signed)
        self.assertEqual(info.subject, "O=cmegw,CN=gw-1")
        self.assertGreater(info.not_after, NOW + datetime.timedelta(days=3000))
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["gw-1", "localhost"])
        self.assertEqual(len(info.fingerprint.split(":")), 32)
        self.assertEqual(chain, [])

    def test_chain(self) -> None:
        cert_pem, key_pem = generate_self_signed("leaf", now=NOW)
        other, _ = generate_self_signed("issuer", now=NOW)
        _, _, chain = validate_pair(cert_pem + other, key_pem, NOW)
        self.assertEqual(len(chain), 1)

    def assertRefused(self, cert_pem: bytes, key_pem: bytes, words: str, now: Any = NOW) -> None:
        with self.assertRaises(CertificateError) as caught:
            validate_pair(cert_pem, key_pem, now)
        self.assertIn(words, str(caught.exception))

    def test_refusals(self) -> None:
        cert_pem, key_pem = generate_self_signed("gw", now=NOW)
        other_cert, other_key = generate_self_signed("gw", now=NOW)
        self.assertRefused(b"hello", key_pem, "not PEM")
        self.assertRefused(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key_pem, "cannot be read")
        self.assertRefused(cert_pem, b"hello", "not PEM")
        self.assertRefused(cert_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                           "cannot be read")
        self.assertRefused(cert_pem, other_key, "does not belong")
        self.assertRefused(cert_pem, key_pem, "expired", now=NOW + datetime.timedelta(days=4000))
        self.assertRefused(cert_pem, key_pem, "not valid before", now=LONG_AGO)
        key = serialization.load_pem_private_key(key_pem, None)
        locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"pw"))
        self.assertRefused(cert_pem, locked, "passphrase")
        self.assertRefused(key_pem, cert_pem, "not PEM")


class ManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.settings = Settings()
        self.manager = TlsManager(self.dir, self.settings)

    def test_self_signed_made_once(self) -> None:
        info = self.manager.reload()
        self.assertTrue(info.self_signed)
        self.assertIsNone(info.problem)
        key = self.dir / SELF_SIGNED_KEY
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertEqual(info.path, str(self.dir / SELF_SIGNED_CERT))
        again = TlsManager(self.dir, self.settings).reload()
        self.assertEqual(again.fingerprint, info.fingerprint)

    def test_self_signed_replaced_when_broken(self) -> None:
        first = self.manager.reload()
        (self.dir / SELF_SIGNED_KEY).write_text("broken")
        second = self.manager.reload()
        self.assertNotEqual(first.fingerprint, second.fingerprint)
        self.flushLoggedErrors()

    def test_configured(self) -> None:
        cert_pem, key_pem = generate_self_signed("configured")
        (self.dir / "my.crt").write_bytes(cert_pem)
        (self.dir / "my.key").write_bytes(key_pem)
        self.settings.change(certificate="my.crt", private_key="my.key")
        info = self.manager.reload()
        self.assertEqual((info.subject, info.problem), ("O=cmegw,CN=configured", None))

    def test_configured_but_unusable(self) -> None:
        """A configured pair that does not load is reported, and the self-signed one serves."""
        self.settings.change(certificate="missing.crt", private_key="missing.key")
        info = self.manager.reload()
        self.assertTrue(info.self_signed)
        self.assertIn("missing.crt", info.problem or "")
        self.assertIn("cannot read", info.problem or "")

    def test_install(self) -> None:
        cert_pem, key_pem = generate_self_signed("uploaded")
        cert_name, key_name = self.manager.install(cert_pem, key_pem)
        self.assertTrue(cert_name.startswith("cmegw-https-") and key_name.endswith(".key"))
        self.assertEqual((self.dir / cert_name).read_bytes(), cert_pem)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir / key_name).st_mode), 0o600)
        self.settings.change(certificate=cert_name, private_key=key_name)
        self.assertEqual(self.manager.reload().subject, "O=cmegw,CN=uploaded")
        self.assertRaises(CertificateError, self.manager.install, cert_pem, generate_self_signed()[1])

    def test_remove_unused(self) -> None:
        first = self.manager.install(*generate_self_signed("one"))
        second = self.manager.install(*generate_self_signed("two"))
        self.settings.change(certificate=second[0], private_key=second[1])
        self.manager.remove_unused()
        self.assertFalse((self.dir / first[0]).exists() or (self.dir / first[1]).exists())
        self.assertTrue((self.dir / second[0]).exists() and (self.dir / second[1]).exists())


class VersionTests(SynchronousTestCase):
    """The versions offered, in a real handshake in memory."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.settings = Settings()
        self.manager = TlsManager(self.dir, self.settings)
        self.manager.reload()

    def agreed(self, version: int) -> str:
        try:
            return handshake(self.manager.serverConnectionForTLS(TLS_PROTOCOL), version)[0]
        except SSL.Error:
            return "refused"

    def test_default_12_and_13(self) -> None:
        self.assertEqual(self.agreed(SSL.TLS1_3_VERSION), "TLSv1.3")
        self.assertEqual(self.agreed(SSL.TLS1_2_VERSION), "TLSv1.2")
        self.assertEqual(self.agreed(SSL.TLS1_1_VERSION), "refused")
        self.assertEqual(self.agreed(SSL.TLS1_VERSION), "refused")

    def test_only_13(self) -> None:
        self.settings.change(tls_versions=("TLSv1.3",))
        self.manager.reload()
        self.assertEqual(self.agreed(SSL.TLS1_3_VERSION), "TLSv1.3")
        self.assertEqual(self.agreed(SSL.TLS1_2_VERSION), "refused")

    def test_only_12(self) -> None:
        self.settings.change(tls_versions=("TLSv1.2",))
        self.manager.reload()
        self.assertEqual(self.agreed(SSL.TLS1_3_VERSION), "refused")
        self.assertEqual(self.agreed(SSL.TLS1_2_VERSION), "TLSv1.2")
        self.assertEqual(self.agreed(SSL.TLS1_1_VERSION), "refused")

    def test_none_enabled(self) -> None:
        self.settings.change(tls_versions=())
        self.manager.reload()
        self.assertRaises(SSL.Error, self.manager.serverConnectionForTLS, None)

    def test_new_certificate_for_new_connections(self) -> None:
        """After a reload, the next handshake shows the new certificate: no restart."""
        before = handshake(self.manager.serverConnectionForTLS(TLS_PROTOCOL), SSL.TLS1_3_VERSION)[1]
        cert_name, key_name = self.manager.install(*generate_self_signed("fresh"))
        self.settings.change(certificate=cert_name, private_key=key_name)
        self.manager.reload()
        after = handshake(self.manager.serverConnectionForTLS(TLS_PROTOCOL), SSL.TLS1_3_VERSION)[1]
        assert before is not None and after is not None
        self.assertNotEqual(before.subject, after.subject)
        self.assertEqual(after.subject.rfc4514_string(), "O=cmegw,CN=fresh")

    def test_ec_and_rsa_keys(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        for key in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())):
            name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "k")])
            from cryptography.hazmat.primitives import hashes

            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
                    .not_valid_after(datetime.datetime(2090, 1, 1)).sign(key, hashes.SHA256()))
            cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
            validate_pair(cert_pem, key_pem)

    def test_the_handshake_can_see_a_refusal(self) -> None:
        """Control: the same client does agree on TLS 1.1 with a server that allows it."""
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.set_min_proto_version(SSL.TLS1_1_VERSION)
        cert_pem, key_pem = generate_self_signed("old")
        context.use_certificate(x509.load_pem_x509_certificate(cert_pem))
        context.use_privatekey(serialization.load_pem_private_key(key_pem, None))
        try:
            agreed = handshake(SSL.Connection(context, None), SSL.TLS1_1_VERSION)[0]
        except SSL.Error as e:
            raise SkipTest(f"this OpenSSL cannot speak TLS 1.1 at all: {e}")
        self.assertEqual(agreed, "TLSv1.1")
