"""Moved to cmegw.tls.store (and cmegw.tls.contexts); this name stays until the imports are updated."""

from cmegw.tls.certificates import CertificateError, CertificateInfo  # noqa: F401
from cmegw.tls.contexts import certificate_options  # noqa: F401
from cmegw.tls.store import (  # noqa: F401
    SELF_SIGNED_CERT,
    SELF_SIGNED_DAYS,
    SELF_SIGNED_KEY,
    UPLOADED_PREFIX,
    TlsManager,
    generate_self_signed,
    validate_pair,
    write_pair,
)
