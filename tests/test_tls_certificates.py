"""
Tests for `cmegw.tls.certificates`: reading PEM files, parsing certificates, keys
and CA bundles, the checks, and what a page shows of a certificate.  Keys and
certificates are made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from cmegw.tls import certificates
from cmegw.tls.certificates import (
    MAX_PEM_BYTES,
    CertificateError,
    CertificateInfo,
    FileTooLargeError,
    KeyMismatchError,
    KeyPassphraseError,
    MalformedPemError,
    MissingFileError,
    NotPemError,
    NotValidNowError,
    UnreadableFileError,
)

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def make_certificate(common_name: str, key: Any = None, names: tuple[str, ...] = (),
                     not_before: datetime.datetime = NOW - DAY,
                     not_after: datetime.datetime = NOW + 30 * DAY) -> tuple[x509.Certificate, Any]:
    """A self-signed certificate for `common_name` (subjectAltName `names`, if any) and its key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    if names:
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any, passphrase: bytes | None = None) -> bytes:
    encryption: Any = serialization.BestAvailableEncryption(passphrase) if passphrase \
        else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


class FileTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def refused(self, kind: type[CertificateError], call: Any, *args: Any) -> str:
        """The message of the `kind` that `call(*args)` raises."""
        with self.assertRaises(kind) as caught:
            call(*args)
        self.assertIsInstance(caught.exception, ValueError)
        return str(caught.exception)

    def read_error(self, path: str) -> CertificateError:
        """What `read_pem_file` raises for `path`."""
        with self.assertRaises(CertificateError) as caught:
            certificates.read_pem_file(path, "file")
        return caught.exception


class ReadTests(FileTestCase):
    def test_good_pair(self) -> None:
        certificate, key = make_certificate("gw")
        cert_path = self.write("gw.crt", pem(certificate))
        key_path = self.write("gw.key", key_pem(key))
        [read] = certificates.read_certificates(cert_path, "HTTPS certificate")
        private = certificates.read_private_key(key_path, "HTTPS key")
        self.assertEqual(read, certificate)
        certificates.check_key_matches(read, private, "HTTPS key", key_path, "certificate", cert_path)
        certificates.check_in_time(read, NOW, "HTTPS certificate", cert_path)

    def test_mismatched_key(self) -> None:
        certificate, _ = make_certificate("gw")
        _, other = make_certificate("gw")
        cert_path = self.write("gw.crt", pem(certificate))
        key_path = self.write("other.key", key_pem(other))
        message = self.refused(KeyMismatchError, certificates.check_key_matches,
                               certificates.read_certificates(cert_path, "client certificate")[0],
                               certificates.read_private_key(key_path, "client key"),
                               "client key", key_path, "client certificate", cert_path)
        self.assertEqual(message, f"the client key {key_path} does not belong to the client certificate {cert_path}")

    def test_mismatch_in_memory(self) -> None:
        certificate, _ = make_certificate("gw")
        _, other = make_certificate("gw")
        message = self.refused(KeyMismatchError, certificates.check_key_matches, certificate, other)
        self.assertEqual(message, "the private key does not belong to the certificate")

    def test_not_pem(self) -> None:
        certificate, key = make_certificate("gw")
        der = self.write("gw.der", certificate.public_bytes(serialization.Encoding.DER))
        message = self.refused(NotPemError, certificates.read_certificates, der, "CA bundle (connect_tls_ca)")
        self.assertEqual(message, f"the CA bundle (connect_tls_ca) {der} is not PEM "
                                  "(a text file starting -----BEGIN CERTIFICATE-----)")
        cert_as_key = self.write("swapped.key", pem(certificate))
        message = self.refused(NotPemError, certificates.read_private_key, cert_as_key, "client key")
        self.assertIn(cert_as_key, message)
        self.assertIn("-----BEGIN PRIVATE KEY-----", message)
        key_as_cert = self.write("swapped.crt", key_pem(key))
        self.assertIn(key_as_cert, self.refused(NotPemError, certificates.read_certificates, key_as_cert, "cert"))

    def test_malformed(self) -> None:
        broken = self.write("broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        message = self.refused(MalformedPemError, certificates.read_certificates, broken, "CA bundle")
        self.assertTrue(message.startswith(f"the CA bundle {broken} cannot be read: "), message)
        broken_key = self.write("broken.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        message = self.refused(MalformedPemError, certificates.read_private_key, broken_key, "key")
        self.assertIn(broken_key, message)

    def test_passphrase(self) -> None:
        _, key = make_certificate("gw")
        locked = self.write("locked.key", key_pem(key, b"secret"))
        message = self.refused(KeyPassphraseError, certificates.read_private_key, locked, "client key")
        self.assertEqual(message, f"the client key {locked} is protected by a passphrase; "
                                  "the gateway needs it without one")

    def test_oversize(self) -> None:
        certificate, _ = make_certificate("gw")
        big = self.write("big.pem", pem(certificate) * (MAX_PEM_BYTES // len(pem(certificate)) + 1))
        self.assertGreater(os.path.getsize(big), MAX_PEM_BYTES)
        message = self.refused(FileTooLargeError, certificates.read_certificates, big, "CA bundle")
        self.assertTrue(message.startswith(f"cannot read the CA bundle {big}: it is larger than 1 MiB"), message)
        self.assertIsInstance(self.read_error(big), UnreadableFileError)
        at_limit = self.write("limit.pem", b"x" * MAX_PEM_BYTES)
        self.assertEqual(len(certificates.read_pem_file(at_limit, "file")), MAX_PEM_BYTES)

    def test_missing(self) -> None:
        missing = str(self.dir / "missing.crt")
        message = self.refused(MissingFileError, certificates.read_certificates, missing, "HTTPS certificate")
        self.assertEqual(message, f"cannot read the HTTPS certificate {missing}: No such file or directory")
        error = self.read_error(missing)
        assert isinstance(error, UnreadableFileError)
        self.assertEqual(error.reason, "No such file or directory")

    def test_unreadable(self) -> None:
        """A directory is not missing, but cannot be read either."""
        message = self.refused(UnreadableFileError, certificates.read_certificates, str(self.dir), "CA bundle")
        self.assertIn(str(self.dir), message)
        self.assertNotIsInstance(self.read_error(str(self.dir)), MissingFileError)

    def test_bundle_of_several(self) -> None:
        authorities = [make_certificate(f"CA {n}")[0] for n in range(3)]
        bundle = self.write("bundle.pem", b"".join(pem(c) for c in authorities))
        read = certificates.read_certificates(bundle, "CA bundle")
        self.assertEqual(read, authorities)
        certificates.check_bundle_in_time(read, NOW)
        self.assertEqual(certificates.validity_summary(read),
                         "CA 0 (until 2030-01-31); CA 1 (until 2030-01-31); CA 2 (until 2030-01-31)")

    def test_bundle_out_of_time(self) -> None:
        good, _ = make_certificate("Good CA")
        old, _ = make_certificate("Old CA", not_before=NOW - 10 * DAY, not_after=NOW - 2 * DAY)
        message = self.refused(NotValidNowError, certificates.check_bundle_in_time, [good, old], NOW)
        self.assertEqual(message, "the certificate of Old CA expired on 2029-12-30 00:00 UTC")

    def test_in_time(self) -> None:
        certificate, _ = make_certificate("gw")
        message = self.refused(NotValidNowError, certificates.check_in_time, certificate, NOW + 40 * DAY,
                               "HTTPS certificate", "/etc/cmegw/gw.crt")
        self.assertEqual(message, "the HTTPS certificate /etc/cmegw/gw.crt expired on 2030-01-31 00:00 UTC")
        message = self.refused(NotValidNowError, certificates.check_in_time, certificate, NOW - 2 * DAY)
        self.assertEqual(message, "the certificate is not valid before 2029-12-31 00:00 UTC")

    def test_validity_problem_names_the_chain(self) -> None:
        leaf, _ = make_certificate("leaf")
        old, _ = make_certificate("Intermediate", not_after=NOW - DAY, not_before=NOW - 2 * DAY)
        self.assertIsNone(certificates.validity_problem([leaf], "the head-end's certificate", NOW))
        self.assertEqual(certificates.validity_problem([leaf, old], "the head-end's certificate", NOW),
                         "the certificate of Intermediate in its chain expired on 2029-12-31 00:00 UTC")


class DescribeTests(SynchronousTestCase):
    def test_info(self) -> None:
        certificate, _ = make_certificate("gw-1")
        info = CertificateInfo.of(certificate, "/etc/cmegw/gw.crt")
        self.assertEqual((info.subject, info.issuer, info.self_signed), ("CN=gw-1", "CN=gw-1", True))
        self.assertEqual((info.not_before, info.not_after), (NOW - DAY, NOW + 30 * DAY))
        self.assertEqual(info.fingerprint, certificate.fingerprint(hashes.SHA256()).hex(":").upper())
        self.assertEqual((info.path, info.problem), ("/etc/cmegw/gw.crt", None))

    def test_names(self) -> None:
        named, _ = make_certificate("headend", names=("headend.example", "192.0.2.1"))
        self.assertEqual(certificates.certificate_names(named), ["headend.example", "192.0.2.1"])
        plain, _ = make_certificate("only-cn")
        self.assertEqual(certificates.certificate_names(plain), ["only-cn"])
        self.assertEqual(certificates.common_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "O")])),
                         "O=O")


class ImportTests(SynchronousTestCase):
    def test_import_is_cheap(self) -> None:
        """Importing the module (and the configuration model) loads neither cryptography nor OpenSSL."""
        code = ("import sys, cmegw.tls.certificates, cmegw.config.model; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'OpenSSL')))")
        root = str(Path(__file__).resolve().parent.parent)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": root})
        self.assertEqual(out.stdout.strip(), "[]")
