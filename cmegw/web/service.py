# -*- test-case-name: tests.test_web_service -*-
"""
The web part of the gateway: the HTTP and HTTPS listeners around the pages.

Public API:

``make_web(gateway) -> IService``
    The part registered in `cmegw.tap.part_factories`.  It serves
    ``cmegw.web.app.admin_resource(gateway)`` behind the authentication gate
    (`cmegw.web.auth.AuthGate`) in a `cmegw.web.http.GatewaySite`, on HTTP
    (``gateway.overrides.http`` or ``tcp:<http_port>:interface=<interface>``)
    and on HTTPS (``gateway.overrides.https`` or ``tcp:<https_port>...``; a
    plain stream endpoint such as ``tcp:8443:interface=127.0.0.1``: cmegw adds
    TLS itself, so that only TLS 1.2/1.3 are offered) when the server is on;
    HTTPS also needs at least one TLS version enabled.  A port that cannot be
    opened is logged and shown in ``listening``; the gateway keeps running.

``web_state(gateway) -> WebState``
    What the pages read and the one thing they change here.  Raises
    ``LookupError`` when the web part is not running.  Ask per request (a
    restart builds a new one).  Attributes:

    - ``stats``: `cmegw.web.http.HttpStatistics` (rx_bytes, tx_bytes,
      status_200 ... status_501, status_unknown, work_queue_full,
      socket_errors, memory_errors; ``as_dict()``);
    - ``access_log``: `cmegw.web.http.AccessLog` (``entries`` oldest first,
      ``bytes``, ``clear()``);
    - ``tls``: `cmegw.web.tls.CertificateInfo` of the certificate in use
      (subject, issuer, not_before, not_after, self_signed, fingerprint,
      problem: why a configured certificate is not used, or None);
    - ``listening``: ``{"http": "127.0.0.1:8080", "https": "..."}`` or a
      reason ("off", "cannot listen: ...");
    - ``https_port``: the HTTPS port listening, or None;
    - ``install_certificate(cert_pem: bytes, key_pem: bytes) -> CertificateInfo``:
      validates (PEM, the key matches, valid now), writes both files beside
      the configuration file (key mode 0600), sets ``http.certificate`` and
      ``http.private_key`` through ``gateway.store.change`` and serves the
      new certificate at once.  Raises `cmegw.web.tls.CertificateError`
      (a ``ValueError``) with a message for the page.
"""
