"""
Tunnels: the TCP side of each line.

- `TunnelService` (`cmegw.tunnel.accept`): the device's transparent tunnel in
  accept mode, composed with the allow-list, TLS and RFC 2217 when those are on.
- `SharingTunnelService` (`cmegw.tunnel.sharing`): several head-ends on one
  bus through the line's arbiter.
- `ConnectTunnelService` (`cmegw.tunnel.connect`): connect mode (the tunnel
  dials), with `LineOwnership`; the state it shows is `cmegw.stats.ConnectStatistics`,
  published for every tunnel (the service builds connect mode only for a tunnel
  whose configuration turns it on, so its modules load only then).
- `cmegw.tunnel.base`: what they share (`TunnelProtocol`, keep-alive,
  `AccessStatistics`, `Section`); `allowlist`, `rfc2217`, `ownership`, `dialing`,
  `connectfactory`, `eventlog` and `tlsconfig` are their parts.

Imports point one way: base <- allowlist, rfc2217, connectfactory <- accept
<- sharing <- connect (some lazily, for start-up memory); dialing and
ownership import nothing of the package.  Each tunnel's section has one
running copy, held by its accept-mode factory (read through `TunnelService.config`);
connect mode reads it there.  The names here are imported from
their modules on first use.
"""

from __future__ import annotations

from cmegw.lazy import lazy_names

_HOMES = {
    "AccessStatistics": "base",
    "ConnectTunnelService": "connect",
    "LineOwnership": "ownership",
    "Section": "base",
    "SharingStatistics": "sharing",
    "SharingTunnelService": "sharing",
    "TunnelProtocol": "base",
    "TunnelService": "accept",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_names(__name__, _HOMES)
