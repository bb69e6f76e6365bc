"""Moved to cmegw.tls.contexts and cmegw.tls.protocol; this name stays until the imports are updated."""

from cmegw.tls.contexts import (  # noqa: F401
    MINIMUM_VERSION,
    ServerTls,
    TlsSetupError,
    VerifyingClientCreator,
    client_creator,
)
from cmegw.tls.protocol import (  # noqa: F401
    HANDSHAKE_TIMEOUT,
    StartAfterHandshake,
    TlsClientEndpoint,
    TunnelTlsFactory,
    tls_protocol,
)
