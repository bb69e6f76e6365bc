"""
Tunnels: the TCP side of each line.

- `cmegw.tunnel.accept`: `TunnelService`, the device's transparent tunnel in
  accept mode, composed with the allow-list, TLS and RFC 2217 when those are on.
- `cmegw.tunnel.sharing`: `SharingTunnelService`, several head-ends on one
  bus through the line's arbiter.
- `cmegw.tunnel.connect`: `ConnectTunnelService`, connect mode (the tunnel dials).
- `cmegw.tunnel.base`: what they share (`TunnelProtocol`, keep-alive,
  `AccessStatistics`); `allowlist`, `rfc2217`, `ownership`, `dialing`,
  `connectfactory`, `eventlog` and `tlsconfig` are their parts.

Imports point one way: base <- allowlist, rfc2217, ownership, dialing,
connectfactory <- accept <- sharing <- connect (some lazily, for start-up
memory).  Nothing is imported here: each service is imported from its module.
"""

__all__: list[str] = []
