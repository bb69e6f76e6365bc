# -*- test-case-name: tests.test_web_tls -*-
"""
Certificates for HTTPS, with `cryptography`.

Public API:

``CertificateError(ValueError)``: an uploaded or configured certificate/key
that cannot be used; the message says why, for the page.

``CertificateInfo``: frozen: ``subject``, ``issuer``, ``not_before``,
``not_after`` (aware datetimes), ``self_signed``, ``fingerprint`` (SHA-256, hex
with colons), ``path``, ``problem`` (why the configured certificate is not
used, or None).

``validate_pair(cert_pem, key_pem, now=None) -> (certificate, key, chain)``:
PEM, the key matches the first certificate, valid now; raises
``CertificateError``.

``generate_self_signed(hostname=None, now=None) -> (cert_pem, key_pem)``.

``TlsManager(config_dir, settings, clock=None)``: the certificate in use:
``info``, ``creator`` (the ``IOpenSSLServerConnectionCreator`` HTTPS listens
with: new connections get the current certificate and TLS versions, so a
change applies without a restart), ``reload()``, ``install(cert_pem,
key_pem) -> (cert_path, key_path)``.  When no certificate is configured, a
self-signed one is made on first start and kept beside the configuration
file (``cmegw-selfsigned.crt`` / ``cmegw-selfsigned.key``, key mode 0600).

Only TLS 1.2 and TLS 1.3 are ever offered, as ``http.tls_versions`` says.
"""
