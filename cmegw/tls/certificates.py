# -*- test-case-name: tests.test_tls_certificates -*-
"""
PEM certificates, private keys and CA bundles: read, parse, check, describe.

The configuration model (the tunnels' TLS file settings), the web (the HTTPS
certificate, tunnel TLS uploads) and the tunnels (their TLS files, read at
each connection) all handle these files the same way, here.  This module
belongs to no part and imports none.

Every refusal is a `CertificateError` (a ``ValueError``) whose message says
what is wrong in an installer's words, and names the file when there is one::

    cannot read the HTTPS certificate /etc/cmegw/my.crt: No such file or directory
    the CA bundle (connect_tls_ca) /etc/cmegw/ca.der is not PEM (a text file starting -----BEGIN CERTIFICATE-----)
    the client key /etc/cmegw/c.key does not belong to the client certificate /etc/cmegw/c.pem
    the certificate of Utility CA expired on 2026-01-01 00:00 UTC

Its subclasses tell the kinds apart for a caller that words its own advice
(the configuration model does): `UnreadableFileError` (with
`MissingFileError` and `FileTooLargeError`), `NotPemError`,
`MalformedPemError`, `KeyPassphraseError`, `KeyMismatchError`,
`NotValidNowError`.

``what`` arguments name the file's role ("HTTPS certificate", "CA bundle
(connect_tls_ca)"); ``path`` is left empty for data that is not in a file
(an upload).

`cryptography` is imported inside the functions that need it, so importing
this module is cheap.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import attrs

if TYPE_CHECKING:
    from cryptography import x509

#: Larger files are refused unread: a CA bundle of every public root is a few hundred kB.
MAX_PEM_BYTES = 1024 * 1024

_BEGIN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

PrivateKey = Any  # a cryptography private key (RSA, EC, Ed25519...)


class CertificateError(ValueError):
    """A certificate, private key or CA bundle that cannot be used; the message says why."""


class UnreadableFileError(CertificateError):
    """The file cannot be read; `reason` says why in the system's words (or its size)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MissingFileError(UnreadableFileError):
    """The file does not exist."""


class FileTooLargeError(UnreadableFileError):
    """The file is larger than `MAX_PEM_BYTES`: no certificate or key is that large."""


class NotPemError(CertificateError):
    """Not PEM text of the kind expected (a DER file, a key where certificates belong...)."""


class MalformedPemError(CertificateError):
    """PEM markers, but what they enclose cannot be decoded; `detail` is cryptography's reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class KeyPassphraseError(CertificateError):
    """The private key is encrypted; the gateway has no passphrase to open it."""


class KeyMismatchError(CertificateError):
    """The private key is not the one of the certificate."""


class NotValidNowError(CertificateError):
    """A certificate has expired or is not valid yet."""


def utcnow() -> datetime.datetime:
    """Now, as an aware UTC datetime: what the checks compare validity with unless given a time."""
    return datetime.datetime.now(datetime.timezone.utc)


def _named(what: str, path: str | Path = "") -> str:
    return f"the {what} {path}" if str(path) else f"the {what}"


# -- reading and parsing ------------------------------------------------------------------


def read_pem_file(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file, at most `MAX_PEM_BYTES`; `UnreadableFileError` (or a subclass) says why not."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError as e:
        raise MissingFileError(f"cannot read the {what} {path}: {e.strerror}", e.strerror) from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise UnreadableFileError(f"cannot read the {what} {path}: {reason}", reason) from None
    if len(data) > MAX_PEM_BYTES:
        reason = f"it is larger than {MAX_PEM_BYTES // (1024 * 1024)} MiB, far too large for certificates or a key"
        raise FileTooLargeError(f"cannot read the {what} {path}: {reason}", reason)
    return data


def parse_certificates(data: bytes, what: str = "certificate", path: str | Path = "") -> list[x509.Certificate]:
    """All the certificates of PEM `data`, in order (a leaf then its chain, or a CA bundle)."""
    from cryptography import x509

    if _BEGIN_CERTIFICATE not in data:
        raise NotPemError(f"{_named(what, path)} is not PEM (a text file starting -----BEGIN CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise MalformedPemError(f"{_named(what, path)} cannot be read: {e}", str(e)) from None


def parse_private_key(data: bytes, what: str = "private key", path: str | Path = "") -> PrivateKey:
    """The unencrypted private key of PEM `data`."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise NotPemError(f"{_named(what, path)} is not PEM (a text file starting -----BEGIN PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyPassphraseError(f"{_named(what, path)} is protected by a passphrase; "
                                 "the gateway needs it without one") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise MalformedPemError(f"{_named(what, path)} cannot be read: {e}", str(e)) from None


def read_certificates(path: str | Path, what: str) -> list[x509.Certificate]:
    """The certificates of a PEM file (`read_pem_file`, then `parse_certificates`)."""
    return parse_certificates(read_pem_file(path, what), what, path)


def read_private_key(path: str | Path, what: str) -> PrivateKey:
    """The private key of a PEM file (`read_pem_file`, then `parse_private_key`)."""
    return parse_private_key(read_pem_file(path, what), what, path)


# -- checking -----------------------------------------------------------------------------


def _public_key_info(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_key_matches(certificate: x509.Certificate, key: PrivateKey,
                      key_what: str = "private key", key_path: str | Path = "",
                      certificate_what: str = "certificate", certificate_path: str | Path = "") -> None:
    """`KeyMismatchError` unless `key` is the private key of `certificate`."""
    if _public_key_info(certificate.public_key()) != _public_key_info(key.public_key()):
        raise KeyMismatchError(f"{_named(key_what, key_path)} does not belong to "
                               f"{_named(certificate_what, certificate_path)}")


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def validity_problem(chain: Sequence[x509.Certificate], leaf: str, now: datetime.datetime) -> str | None:
    """
    An expired or not-yet-valid certificate in `chain`, in words (`leaf` names
    the first one, e.g. "the head-end's certificate"); None when all are in time.
    """
    for i, certificate in enumerate(chain):
        owner = leaf if i == 0 else f"the certificate of {common_name(certificate.subject)} in its chain"
        if certificate.not_valid_after_utc < now:
            return f"{owner} expired on {_when(certificate.not_valid_after_utc)}"
        if certificate.not_valid_before_utc > now:
            return f"{owner} is not valid before {_when(certificate.not_valid_before_utc)}"
    return None


def check_in_time(certificate: x509.Certificate, now: datetime.datetime,
                  what: str = "certificate", path: str | Path = "") -> None:
    """`NotValidNowError` when `certificate` has expired or is not valid yet at `now`."""
    problem = validity_problem([certificate], _named(what, path), now)
    if problem:
        raise NotValidNowError(problem)


def check_bundle_in_time(certificates: Sequence[x509.Certificate], now: datetime.datetime) -> None:
    """`NotValidNowError` naming the first certificate of a CA bundle (by its CN) that is out of time."""
    for certificate in certificates:
        problem = validity_problem([certificate], f"the certificate of {common_name(certificate.subject)}", now)
        if problem:
            raise NotValidNowError(problem)


# -- describing ---------------------------------------------------------------------------


def common_name(name: x509.Name) -> str:
    """A readable name: the CN, else the whole distinguished name."""
    from cryptography.x509.oid import NameOID

    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else (name.rfc4514_string() or "(no name)")


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is for (its subjectAltName; the CN when it has none)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    try:
        san = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return [common_name(certificate.subject)]
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return names or [common_name(certificate.subject)]


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint as browsers show it: upper-case hex pairs joined by colons."""
    from cryptography.hazmat.primitives import hashes

    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def validity_summary(certificates: Sequence[x509.Certificate]) -> str:
    """A short line for a page: "Utility CA (until 2031-05-01); Other CA (until ...)"."""
    return "; ".join(f"{common_name(c.subject)} (until {c.not_valid_after_utc:%Y-%m-%d})" for c in certificates)


@attrs.frozen
class CertificateInfo:
    """What a page shows of a certificate: the HTTPS one in use, for instance."""

    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    self_signed: bool
    #: SHA-256, upper-case hex pairs joined by colons.
    fingerprint: str
    path: str = ""
    #: Why the configured certificate is not the one in use, or None.
    problem: str | None = None

    @classmethod
    def of(cls, certificate: x509.Certificate, path: str = "", problem: str | None = None) -> CertificateInfo:
        return cls(subject=certificate.subject.rfc4514_string(), issuer=certificate.issuer.rfc4514_string(),
                   not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc,
                   self_signed=certificate.issuer == certificate.subject, fingerprint=fingerprint(certificate),
                   path=path, problem=problem)
