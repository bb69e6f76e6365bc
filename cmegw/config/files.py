# -*- test-case-name: tests.test_tunnel_tls -*-
"""
What a setting that names a file must find in it: the PEM certificates and
keys of the tunnels' TLS settings.

The model checks only that such a path is absolute; this module reads the
file, once, when a setting changes (`apply_settings`) or the configuration
file is loaded.  A file that does not exist (yet) passes: the tunnel reports
it when it is used, so a missing file never keeps the gateway from starting.
"""

from __future__ import annotations

from typing import Iterator

from cmegw.config.checks import ConfigError
from cmegw.config.model import Config
from cmegw.tls import certificates

#: The tunnel settings that name a PEM file, and what the file holds.
PEM_SETTINGS = {
    "connect_tls_ca": "certificates",
    "connect_tls_certificate": "certificates",
    "connect_tls_key": "key",
    "tls_client_ca": "certificates",
}


def check_pem_file(setting: str, path: str, kind: str) -> None:
    """Raise `ConfigError` naming `setting` when the file at `path` is not what it should hold."""
    if path == "":
        return
    try:
        if kind == "certificates":
            certificates.read_certificates(path, "certificates")
        else:
            certificates.read_private_key(path, "private key")
    except certificates.MissingFileError:
        return
    except certificates.UnreadableFileError as e:
        raise ConfigError(setting, path, f"the file cannot be read ({e.reason})") from None
    except certificates.NotPemError:
        advice = ("use a PEM file of certificates (text starting -----BEGIN CERTIFICATE-----)" if kind == "certificates"
                  else "use a PEM private key (text starting -----BEGIN PRIVATE KEY-----)")
        raise ConfigError(setting, path, advice) from None
    except certificates.KeyPassphraseError:
        raise ConfigError(setting, path, "use a private key without a passphrase") from None
    except certificates.MalformedPemError as e:
        advice = "use a PEM file of certificates" if kind == "certificates" else "use a PEM private key"
        raise ConfigError(setting, path, f"{advice}; this one cannot be read ({e.detail})") from None


def _pem_settings(config: Config) -> Iterator[tuple[str, str, str]]:
    for n, tunnel in config.tunnels.items():
        for field, kind in PEM_SETTINGS.items():
            yield f"tunnel.{n}.{field}", getattr(tunnel, field), kind


def check_files(config: Config, old: Config | None = None) -> None:
    """
    Check the files the configuration names; with `old`, only those whose
    setting changed (an unchanged path was checked when it was set).
    """
    before = {name: value for name, value, _ in _pem_settings(old)} if old is not None else {}
    for name, value, kind in _pem_settings(config):
        if before.get(name) != value:
            check_pem_file(name, value, kind)

