"""
The web administration: the device's pages over HTTP and HTTPS.

- `cmegw.web.service`: ``make_web(gateway)``, the part that listens; it publishes
  itself as ``gateway.state.web`` (HTTP statistics, access log, certificate);
- `cmegw.web.http`: the HTTP layer (Max Timeout 408, Max Bytes 413, malformed 400,
  statistics); `cmegw.web.accesslog`: the access log;
- `cmegw.web.auth`: authentication directives (None, Basic, Digest, SSL, SSL/Basic,
  SSL/Digest) on `twisted.web.guard` and `twisted.cred`, with our own RFC 7616 Digest
  (`cmegw.web.digest`);
- `cmegw.web.app`: the pages and the JSON API, ``admin_resource(gateway)``;
- `cmegw.web.pages`: the pages (layout, forms and CSRF, widgets, one module per page);
- `cmegw.web.api`: the JSON API under ``/api``.
"""
