"""
Certificates, TLS contexts and the certificate store, for the web (HTTPS),
the tunnels (TLS accept mode, ``tls:`` head-ends) and the configuration model.

- `cmegw.tls.certificates`: read, parse, check and describe PEM certificates,
  keys and CA bundles (`CertificateError` says why one cannot be used).
- `cmegw.tls.contexts`: the TLS policy (TLS 1.2 and 1.3 only) and the
  connection creators: `certificate_options`, `client_creator`, `ServerTls`.
- `cmegw.tls.protocol`: the tunnel's TLS wrappers (`TunnelTlsFactory`,
  `TlsClientEndpoint`, `tls_protocol`): a tunnel starts only after a verified
  handshake.
- `cmegw.tls.store`: `TlsManager` (the HTTPS pair, or a self-signed one) and
  the tunnels' uploaded TLS files (`install_tunnel_files`).

The names below are loaded when first used, so importing this package (or
`cmegw.tls.certificates`, which the configuration model does) loads neither
`cryptography` nor OpenSSL.
"""

from __future__ import annotations

from cmegw.lazy import lazy_names

_HOMES = {
    "CertificateError": "certificates",
    "CertificateInfo": "certificates",
    "certificate_options": "contexts",
    "client_creator": "contexts",
    "ServerTls": "contexts",
    "TlsSetupError": "contexts",
    "TlsClientEndpoint": "protocol",
    "TunnelTlsFactory": "protocol",
    "tls_protocol": "protocol",
    "TlsManager": "store",
    "UploadError": "store",
    "files_view": "store",
    "generate_self_signed": "store",
    "install_tunnel_files": "store",
    "validate_pair": "store",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_names(__name__, _HOMES)
